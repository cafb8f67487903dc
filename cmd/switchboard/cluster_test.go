package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// The cluster harness (issue 12): one real redis-server and three real
// switchboard processes (the built binary, in cluster mode on that Redis),
// with clients (signaling/client) spread over the nodes. Every scenario
// runs with its parties placed on the nodes in several ways, the same
// node included, so that what holds on one server is checked across
// nodes. The group, group invitation and presence rows are in
// cluster_groups_test.go; call rows join the table once calls are
// cluster-capable (today calls keep their busy lines per node).

const (
	clusterNodes = 3
	// clusterWait bounds each wait of a scenario on an event.
	clusterWait = 15 * time.Second
	// clusterPrefix is the nodes' key prefix (cluster.redis.key_prefix's
	// default); the harness reads the `nodes` set under it.
	clusterPrefix = "switchboard:"
	// maxTimeoutLateness is how late an invitation's timeout may reach the
	// invitee when the inviter's node died: timer_poll (200 ms) plus
	// delivery, well within the ~1 s the issue allows.
	maxTimeoutLateness = time.Second
)

// testCluster is the running cluster of one test.
type testCluster struct {
	t     *testing.T
	redis *redistest.Server
	rdb   *redis.Client

	mu    sync.Mutex
	nodes [clusterNodes]*proc  // by slot; a killed node's slot gets a new node
	ids   [clusterNodes]string // their node IDs
	gen   [clusterNodes]int    // restarts of each slot
	users atomic.Int64         // for unique user names
}

// clusterArgs are the nodes' flags besides startProc's: cluster mode on
// srv, a short node_ttl so that a killed node is noticed within about a
// second, and request rates that the race's hundreds of rounds stay under.
func clusterArgs(srv *redistest.Server, id string) []string {
	return []string{
		"--cluster.redis.addr=" + srv.ConfigAddr(), "--cluster.node_id=" + id,
		"--cluster.node_ttl=900ms", "--cluster.op_timeout=300ms", "--cluster.cleanup_lease=2s",
		"--cluster.timer_lease=2s", "--limits.requests_per_second=5000", "--limits.request_burst=5000",
	}
}

// startCluster starts Redis and three nodes, stopped when t ends.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	srv := redistest.Start(t)
	c := &testCluster{t: t, redis: srv, rdb: srv.Client()}
	serverBinary(t) // build before timing anything
	for i := range clusterNodes {
		c.startNode(i)
	}
	return c
}

// startNode starts the node of slot i, with a new node ID.
func (c *testCluster) startNode(i int) {
	c.t.Helper()
	c.mu.Lock()
	c.gen[i]++
	id := fmt.Sprintf("n%d", i+1)
	if c.gen[i] > 1 {
		id = fmt.Sprintf("n%d-r%d", i+1, c.gen[i])
	}
	c.mu.Unlock()
	p := startProc(c.t, filepath.Join(c.t.TempDir(), "unused.db"), clusterArgs(c.redis, id)...)
	c.mu.Lock()
	c.nodes[i], c.ids[i] = p, id
	c.mu.Unlock()
}

func (c *testCluster) node(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

func (c *testCluster) nodeID(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[i]
}

// kill kills the node of slot i with SIGKILL, as a crash would, and waits
// for it to end.
func (c *testCluster) kill(t *testing.T, i int) {
	t.Helper()
	p := c.node(i)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// replace waits until a survivor has cleaned the killed node of slot i up
// (cleanedUp), then starts a new node in its slot.
func (c *testCluster) replace(t *testing.T, i int) {
	t.Helper()
	c.cleanedUp(t, i)
	c.startNode(i)
}

// cleanedUp waits until a survivor has cleaned the killed node of slot i
// up: it left the `nodes` set, its users' registry entries are gone and
// its unread events are in their outboxes.
func (c *testCluster) cleanedUp(t *testing.T, i int) {
	t.Helper()
	id := c.nodeID(i)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	for {
		err := c.rdb.ZScore(ctx, clusterPrefix+"nodes", id).Err()
		if errors.Is(err, redis.Nil) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s killed: not cleaned up by a survivor within %v (%v)", id, clusterWait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// user returns a user name unique in the cluster's life (the state in
// Redis outlives each scenario).
func (c *testCluster) user(name string) string {
	return fmt.Sprintf("%s%d", name, c.users.Add(1))
}

// dial connects user to the node of slot i, closed when t ends. Its event
// buffer holds a race's events.
func (c *testCluster) dial(t *testing.T, i int, user string) *client.Client {
	t.Helper()
	p := c.node(i)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	res, err := oneShot.Get("http://" + p.addr + "/api/dev/token?user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(ctx, p.url(), tok.Token, client.WithPingInterval(0), client.WithEventBuffer(4096))
	if err != nil {
		t.Fatalf("dial %s on node %s: %v", user, c.nodeID(i), err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	// The user is online (and known) cluster-wide only once the server
	// has attached the connection: an invitation sent to them before that
	// is for an offline, maybe unknown, user (seen once in a CI dry run:
	// the race test's first round sent before bob was attached).
	attached(t, cl)
	return cl
}

// wait waits for the event name of invitation id on cl.
func wait(t *testing.T, cl *client.Client, name, id string) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	ev, err := cl.WaitEvent(ctx, name, byID(id))
	if err != nil {
		t.Fatalf("%s of %s: %v", name, id, err)
	}
	return ev
}

func decodeAs[T any](t *testing.T, ev client.Event) T {
	t.Helper()
	var v T
	if err := ev.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// barrier returns every event cl gets before the ring of an invitation
// from sender (on another client), which it then rejects: per-user order
// holds across nodes, so what was decided for cl's user before is in the
// list.
func barrier(t *testing.T, sender, cl *client.Client, invitee string) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	id, err := sender.Invite(ctx, protocol.InviteArgs{Invitee: invitee, Data: "barrier", Timeout: ptr(60)})
	if err != nil {
		t.Fatal(err)
	}
	var evs []client.Event
	for {
		ev, err := cl.Next(ctx)
		if err != nil {
			t.Fatalf("barrier %s: %v (after %d events)", id, err, len(evs))
		}
		if ev.Name == protocol.EvReceiveNewInvitation && byID(id)(ev) {
			break
		}
		evs = append(evs, ev)
	}
	if err := cl.Reject(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	return evs
}

// count returns how many of evs are named name and about invitation id.
func count(evs []client.Event, name, id string) int {
	n := 0
	for _, ev := range evs {
		if ev.Name == name && byID(id)(ev) {
			n++
		}
	}
	return n
}

// ringing connects alice to node at[0] and bob to node at[1], and returns
// once alice's invitation (timeout 30 s) rings bob.
func ringing(t *testing.T, c *testCluster, at []int) (a, b string, alice, bob *client.Client, id string) {
	t.Helper()
	a, b = c.user("alice"), c.user("bob")
	alice, bob = c.dial(t, at[0], a), c.dial(t, at[1], b)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: b, Timeout: ptr(30)})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, bob, protocol.EvReceiveNewInvitation, id)
	return a, b, alice, bob, id
}

// attached waits until the server has attached cl (a dial returns once
// the WebSocket is open, before that): it answers requests only then.
func attached(t *testing.T, cl *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := cl.Reject(ctx, "no-such-invitation", ""); invitationCode(err) != protocol.ErrInvalidInviteID.Code {
		t.Fatalf("probe request: %v, want 8010", err)
	}
}

// invitationCode is the protocol error code of err, 0 if none.
func invitationCode(err error) int {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 0
}

// clusterScenario is one row of the table: run with parties placed on the
// node slots at (one slot per party, in the order the scenario names
// them).
type clusterScenario struct {
	name    string
	parties int
	// placements overrides the default placements of parties.
	placements [][]int
	run        func(t *testing.T, c *testCluster, at []int)
}

// defaultPlacements: every party on one node, then spread over the nodes
// in two rotations (so that each party is, in turn, on each node).
func defaultPlacements(parties int) [][]int {
	out := [][]int{make([]int, parties)}
	for shift := range 2 {
		at := make([]int, parties)
		for i := range at {
			at[i] = (i + shift) % clusterNodes
		}
		out = append(out, at)
	}
	return out
}

// spreadPlacements puts the parties on the nodes in turn (with at most
// three parties, each on a node of its own), in three rotations.
func spreadPlacements(parties int) [][]int {
	var out [][]int
	for shift := range clusterNodes {
		at := make([]int, parties)
		for i := range at {
			at[i] = (i + shift) % clusterNodes
		}
		out = append(out, at)
	}
	return out
}

// TestClusterScenarios runs the signaling scenarios of PROTOCOL.md on a
// three-node cluster with their parties spread over the nodes.
func TestClusterScenarios(t *testing.T) {
	c := startCluster(t)
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		t.Cleanup(cancel)
		return ctx
	}
	scenarios := []clusterScenario{
		{name: "invite rings, accept reaches the inviter", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Data: "hello", Timeout: ptr(30)})
			if err != nil {
				t.Fatal(err)
			}
			ring := decodeAs[protocol.NewInvitationEvent](t, wait(t, bob, protocol.EvReceiveNewInvitation, id))
			if ring.Inviter != a || ring.Data != "hello" || ring.Timeout != 30 {
				t.Fatalf("ring %+v", ring)
			}
			if err := bob.Accept(ctx(t), id, "yes"); err != nil {
				t.Fatal(err)
			}
			acc := decodeAs[protocol.InviteeEvent](t, wait(t, alice, protocol.EvInviteeAccepted, id))
			if acc.Invitee != b || acc.Data != "yes" {
				t.Fatalf("accepted %+v", acc)
			}
			// Answered: a second answer is refused.
			if err := bob.Reject(ctx(t), id, ""); invitationCode(err) != protocol.ErrInvalidInviteID.Code {
				t.Fatalf("reject after accept: %v, want 8010", err)
			}
		}},
		{name: "reject reaches the inviter", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			_, b, alice, bob, id := ringing(t, c, at)
			if err := bob.Reject(ctx(t), id, "busy"); err != nil {
				t.Fatal(err)
			}
			rej := decodeAs[protocol.InviteeEvent](t, wait(t, alice, protocol.EvInviteeRejected, id))
			if rej.Invitee != b || rej.Data != "busy" {
				t.Fatalf("rejected %+v", rej)
			}
		}},
		{name: "cancel stops the ringing", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			a, _, alice, bob, id := ringing(t, c, at)
			if err := alice.Cancel(ctx(t), id, "oops"); err != nil {
				t.Fatal(err)
			}
			if ev := decodeAs[protocol.CancelledEvent](t, wait(t, bob, protocol.EvInvitationCancelled, id)); ev.Data != "oops" || ev.Inviter != a {
				t.Fatalf("cancelled %+v", ev)
			}
			if err := bob.Accept(ctx(t), id, ""); invitationCode(err) != protocol.ErrInvalidInviteID.Code {
				t.Fatalf("accept after cancel: %v, want 8010", err)
			}
		}},
		{name: "modify reaches the invitee, a later device rings with the new data", parties: 3, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Data: "v1", Timeout: ptr(30)})
			if err != nil {
				t.Fatal(err)
			}
			wait(t, bob, protocol.EvReceiveNewInvitation, id)
			if err := alice.ModifyInvitation(ctx(t), id, "v2"); err != nil {
				t.Fatal(err)
			}
			if ev := decodeAs[protocol.ModifiedEvent](t, wait(t, bob, protocol.EvInvitationModified, id)); ev.Data != "v2" {
				t.Fatalf("modified %+v", ev)
			}
			bob2 := c.dial(t, at[2], b)
			if ring := decodeAs[protocol.NewInvitationEvent](t, wait(t, bob2, protocol.EvReceiveNewInvitation, id)); ring.Data != "v2" {
				t.Fatalf("late device rings with %q, want v2", ring.Data)
			}
		}},
		{name: "events reach the invitee in commit order, once", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			attached(t, bob)
			id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Data: "v1", Timeout: ptr(30)})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"v2", "v3", "v4"} {
				if err := alice.ModifyInvitation(ctx(t), id, d); err != nil {
					t.Fatal(err)
				}
			}
			if err := alice.Cancel(ctx(t), id, "v5"); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range barrier(t, alice, bob, b) {
				var d struct {
					Data string `json:"data"`
				}
				_ = ev.Decode(&d)
				got = append(got, ev.Name+":"+d.Data)
			}
			want := []string{protocol.EvReceiveNewInvitation + ":v1", protocol.EvInvitationModified + ":v2",
				protocol.EvInvitationModified + ":v3", protocol.EvInvitationModified + ":v4", protocol.EvInvitationCancelled + ":v5"}
			if !slices.Equal(got, want) {
				t.Fatalf("bob got %v, want %v", got, want)
			}
		}},
		{name: "timeout reaches both parties", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Timeout: ptr(1)})
			if err != nil {
				t.Fatal(err)
			}
			wait(t, bob, protocol.EvReceiveNewInvitation, id)
			for _, cl := range []*client.Client{alice, bob} {
				if ev := decodeAs[protocol.TimeoutEvent](t, wait(t, cl, protocol.EvInvitationTimeout, id)); len(ev.InviteeList) != 1 || ev.InviteeList[0] != b {
					t.Fatalf("timeout %+v", ev)
				}
			}
		}},
		{name: "offline invitee connects to another node and gets what it missed", parties: 3, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			// bob is known (connected once, at[1]), then offline.
			first := c.dial(t, at[1], b)
			attached(t, first)
			_ = first.Close()
			alice := c.dial(t, at[0], a)
			ringing, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Data: "ring", Timeout: ptr(60)})
			if err != nil {
				t.Fatal(err)
			}
			gone, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Data: "gone", Timeout: ptr(60)})
			if err != nil {
				t.Fatal(err)
			}
			if err := alice.Cancel(ctx(t), gone, "never mind"); err != nil {
				t.Fatal(err)
			}
			bob := c.dial(t, at[2], b)
			if ev := decodeAs[protocol.CancelledEvent](t, wait(t, bob, protocol.EvInvitationCancelled, gone)); ev.Data != "never mind" {
				t.Fatalf("kept cancel %+v", ev)
			}
			if ring := decodeAs[protocol.NewInvitationEvent](t, wait(t, bob, protocol.EvReceiveNewInvitation, ringing)); ring.Data != "ring" {
				t.Fatalf("ring %+v", ring)
			}
			if err := bob.Accept(ctx(t), ringing, ""); err != nil {
				t.Fatal(err)
			}
			wait(t, alice, protocol.EvInviteeAccepted, ringing)
			evs := barrier(t, alice, bob, b)
			if n := count(evs, protocol.EvReceiveNewInvitation, gone); n != 0 {
				t.Fatalf("the cancelled invitation rang %d times", n)
			}
		}},
		{name: "multi-device: accept on one device stops the ringing on the other", parties: 3, placements: spreadPlacements(3),
			run: func(t *testing.T, c *testCluster, at []int) {
				a, b := c.user("alice"), c.user("bob")
				alice, bob1, bob2 := c.dial(t, at[0], a), c.dial(t, at[1], b), c.dial(t, at[2], b)
				id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: b, Timeout: ptr(30)})
				if err != nil {
					t.Fatal(err)
				}
				wait(t, bob1, protocol.EvReceiveNewInvitation, id)
				wait(t, bob2, protocol.EvReceiveNewInvitation, id)
				if err := bob1.Accept(ctx(t), id, ""); err != nil {
					t.Fatal(err)
				}
				wait(t, alice, protocol.EvInviteeAccepted, id)
				wait(t, bob2, protocol.EvInviteeAccepted, id) // stops ringing
				if err := bob2.Accept(ctx(t), id, ""); invitationCode(err) != protocol.ErrInvalidInviteID.Code {
					t.Fatalf("second device's accept: %v, want 8010", err)
				}
				// The device that accepted got a reply, not the event; each
				// device got each event once.
				evs1, evs2 := barrier(t, alice, bob1, b), barrier(t, alice, bob2, b)
				if n := count(evs1, protocol.EvInviteeAccepted, id); n != 0 {
					t.Fatalf("the accepting device got its own accept %d times", n)
				}
				if n := count(evs2, protocol.EvInviteeAccepted, id) + count(evs2, protocol.EvReceiveNewInvitation, id); n != 0 {
					t.Fatalf("the other device got %d duplicate events", n)
				}
			}},
		{name: "duplicate request ID is performed once", parties: 2, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			args, _ := json.Marshal(protocol.InviteArgs{Invitee: b, Timeout: ptr(30)})
			var ids []string
			for range 2 {
				res, err := alice.DoRaw(ctx(t), "dup-1", protocol.OpInvite, args)
				if err != nil {
					t.Fatal(err)
				}
				var r protocol.InviteResult
				if err := json.Unmarshal(res, &r); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, r.InviteID)
			}
			if ids[0] == "" || ids[0] != ids[1] {
				t.Fatalf("invite IDs %q, want one invitation twice", ids)
			}
			wait(t, bob, protocol.EvReceiveNewInvitation, ids[0])
			evs := barrier(t, alice, bob, b)
			if n := count(evs, protocol.EvReceiveNewInvitation, ""); n != 0 {
				t.Fatalf("bob rang for %d more invitations: %v", n, evs)
			}
		}},
	}
	scenarios = append(scenarios, clusterGroupScenarios()...)
	for _, sc := range scenarios {
		placements := sc.placements
		if placements == nil {
			placements = defaultPlacements(sc.parties)
		}
		for _, at := range placements {
			t.Run(fmt.Sprintf("%s/nodes%v", sc.name, at), func(t *testing.T) { sc.run(t, c, at) })
		}
	}
}

// TestClusterTimeoutInviterNodeKilled: the inviter's node dies (SIGKILL)
// while the invitation rings on another node: the invitee still gets the
// timeout, from a survivor, at most maxTimeoutLateness after its deadline
// (measured and logged), and the inviter, reconnecting to another node,
// gets it too.
func TestClusterTimeoutInviterNodeKilled(t *testing.T) {
	c := startCluster(t)
	for _, at := range spreadPlacements(3) {
		t.Run(fmt.Sprintf("nodes%v", at), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*clusterWait)
			defer cancel()
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			// The deadline is at most 2 s after the request was sent (the
			// server sets it when it creates the invitation): lateness is
			// measured from this bound, so it is never underestimated.
			sent := time.Now()
			id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: b, Timeout: ptr(2)})
			if err != nil {
				t.Fatal(err)
			}
			deadline := sent.Add(2 * time.Second)
			wait(t, bob, protocol.EvReceiveNewInvitation, id)
			dead := c.nodeID(at[0])
			c.kill(t, at[0])
			ev := wait(t, bob, protocol.EvInvitationTimeout, id)
			late := time.Since(deadline)
			t.Logf("inviter's node %s killed: the invitee's timeout arrived %v after the deadline", dead, late.Round(time.Millisecond))
			if late > maxTimeoutLateness {
				t.Errorf("timeout %v late, want at most %v", late, maxTimeoutLateness)
			}
			if to := decodeAs[protocol.TimeoutEvent](t, ev); len(to.InviteeList) != 1 || to.InviteeList[0] != b {
				t.Fatalf("timeout %+v", to)
			}
			_ = alice.Close()
			// Once a survivor has cleaned the dead node up, its slot gets a
			// new node, and the inviter reconnects to the third node.
			c.replace(t, at[0])
			alice2 := c.dial(t, at[2], a)
			wait(t, alice2, protocol.EvInvitationTimeout, id)
		})
	}
}

// TestClusterAcceptCancelRace: hundreds of rounds of an accept and a
// cancel of one invitation sent at once from two nodes: exactly one
// succeeds, the other gets 8010, and the parties get exactly the events
// of the winner, once.
func TestClusterAcceptCancelRace(t *testing.T) {
	const rounds = 200
	c := startCluster(t)
	for _, at := range [][]int{{0, 1}, {2, 0}} {
		t.Run(fmt.Sprintf("nodes%v", at), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			type outcome struct {
				id               string
				accepted, cancel bool
			}
			outcomes := make([]outcome, rounds)
			for r := range rounds {
				id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: b, Timeout: ptr(60)})
				if err != nil {
					t.Fatalf("round %d: %v", r, err)
				}
				var accErr, canErr error
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); accErr = bob.Accept(ctx, id, "") }()
				go func() { defer wg.Done(); canErr = alice.Cancel(ctx, id, "") }()
				wg.Wait()
				for _, err := range []error{accErr, canErr} {
					if err != nil && invitationCode(err) != protocol.ErrInvalidInviteID.Code {
						t.Fatalf("round %d: %v, want success or 8010", r, err)
					}
				}
				if (accErr == nil) == (canErr == nil) {
					t.Fatalf("round %d: accept %v, cancel %v: want exactly one to succeed", r, accErr, canErr)
				}
				outcomes[r] = outcome{id: id, accepted: accErr == nil, cancel: canErr == nil}
			}
			aliceEvs, bobEvs := barrier(t, bob, alice, a), barrier(t, alice, bob, b)
			accepts := 0
			for r, o := range outcomes {
				wantAcc, wantCan := 0, 0
				if o.accepted {
					wantAcc, accepts = 1, accepts+1
				} else {
					wantCan = 1
				}
				if n := count(aliceEvs, protocol.EvInviteeAccepted, o.id); n != wantAcc {
					t.Errorf("round %d (accepted %v): the inviter got onInviteeAccepted %d times", r, o.accepted, n)
				}
				if n := count(bobEvs, protocol.EvInvitationCancelled, o.id); n != wantCan {
					t.Errorf("round %d (accepted %v): the invitee got onInvitationCancelled %d times", r, o.accepted, n)
				}
				if n := count(bobEvs, protocol.EvReceiveNewInvitation, o.id); n > 1 {
					t.Errorf("round %d: the invitee rang %d times", r, n)
				}
			}
			t.Logf("%d rounds: %d accepted, %d cancelled", rounds, accepts, rounds-accepts)
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestClusterRedisDownAtStart: a node whose Redis does not answer exits
// with code 1 and an error naming the address.
func TestClusterRedisDownAtStart(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.ConfigAddr()
	srv.Kill()
	var out, errs lockedBuffer
	code := run(context.Background(), append([]string{"--server.addr=127.0.0.1:0", "--media.udp_port=0", "--media.listen_ip=127.0.0.1",
		"--metrics.addr=127.0.0.1:0", "--auth.secret=" + procSecret}, clusterArgs(srv, "n1")...), &out, &errs, nil)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errs.String())
	}
	for _, want := range []string{addr, "cluster.redis.addr"} {
		if !strings.Contains(errs.String(), want) {
			t.Errorf("stderr does not name %q:\n%s", want, errs.String())
		}
	}
}
