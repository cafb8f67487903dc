package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// Cluster mode (phase 2a): two engines, nodes A and B, on one Redis behave
// as one server for invitations. Each scenario runs with the parties
// spread over the nodes in every way.

const clusterWait = 5 * time.Second

// countedKey marks the ctx of an operation whose round trips a test
// counts.
type countedKey struct{}

// opRoundTrips counts the round trips (commands or pipelines) made with a
// ctx marked countedKey: one operation's, not the node's loops'.
// It also counts the scripts they call (EVAL, EVALSHA), and the commands
// (MULTI and EXEC included).
type opRoundTrips struct{ n, scripts, cmds atomic.Int64 }

func (r *opRoundTrips) countScripts(cmds ...redis.Cmder) {
	r.cmds.Add(int64(len(cmds)))
	for _, c := range cmds {
		if c.Name() == "eval" || c.Name() == "evalsha" {
			r.scripts.Add(1)
		}
	}
}

func (r *opRoundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (r *opRoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(countedKey{}) != nil && cmd.Name() != "hello" {
			r.n.Add(1)
			r.countScripts(cmd)
		}
		return next(ctx, cmd)
	}
}

func (r *opRoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		// Not a new connection's handshake (HELLO, CLIENT SETINFO).
		if ctx.Value(countedKey{}) != nil && len(cmds) > 0 && cmds[0].Name() != "client" && cmds[0].Name() != "hello" {
			r.n.Add(1)
			r.countScripts(cmds...)
		}
		return next(ctx, cmds)
	}
}

type clusterHarness struct {
	t      testing.TB
	log    *slog.Logger
	srv    *redistest.Server
	prefix string
	cfg    signaling.Config
	nodes  map[string]*signaling.Engine
	rts    map[string]*opRoundTrips
	rdbs   map[string]*redis.Client
}

func clusterConfig() cluster.Config {
	c := cluster.DefaultConfig()
	c.NodeTTL = 600 * time.Millisecond
	c.OpTimeout = 200 * time.Millisecond
	c.CleanupLease = 2 * time.Second
	c.TimerPoll = 50 * time.Millisecond
	c.TimerLease = time.Second
	c.MaxBackoff = 200 * time.Millisecond
	return c
}

func newClusterHarness(t *testing.T, srv *redistest.Server) *clusterHarness {
	t.Helper()
	return newClusterHarnessOf(t, srv, signaling.DefaultConfig(), testLogger())
}

// newClusterHarnessWith starts nodes A and B with the engine config cfg.
func newClusterHarnessWith(t *testing.T, srv *redistest.Server, cfg signaling.Config) *clusterHarness {
	t.Helper()
	return newClusterHarnessOf(t, srv, cfg, testLogger())
}

// newClusterHarnessLog is newClusterHarness with the engines logging to log.
func newClusterHarnessLog(t *testing.T, srv *redistest.Server, log *slog.Logger) *clusterHarness {
	t.Helper()
	return newClusterHarnessOf(t, srv, signaling.DefaultConfig(), log)
}

func newClusterHarnessOf(t testing.TB, srv *redistest.Server, cfg signaling.Config, log *slog.Logger) *clusterHarness {
	t.Helper()
	h := &clusterHarness{t: t, log: log, srv: srv, prefix: "c{" + t.Name() + "}:", cfg: cfg,
		nodes: map[string]*signaling.Engine{}, rts: map[string]*opRoundTrips{}, rdbs: map[string]*redis.Client{}}
	for _, n := range []string{"A", "B"} {
		h.start(n)
	}
	return h
}

func (h *clusterHarness) start(node string) {
	h.t.Helper()
	opts := h.srv.Options()
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	rt := &opRoundTrips{}
	c.AddHook(rt)
	eng, err := signaling.NewEngine(context.Background(), signaling.Params{Config: h.cfg,
		Logger:  h.log,
		Cluster: &signaling.ClusterParams{Client: c, Prefix: h.prefix, NodeID: node, Config: clusterConfig()}})
	if err != nil {
		h.t.Fatal(err)
	}
	h.nodes[node], h.rts[node], h.rdbs[node] = eng, rt, c
	h.t.Cleanup(func() {
		eng.Close()
		_ = c.Close()
	})
}

// connect attaches a connection of user on node and plays its replay.
func (h *clusterHarness) connect(node, user string) *session {
	h.t.Helper()
	s := &session{user: user}
	if err := h.nodes[node].Attach(ctx, s); err != nil {
		h.t.Fatal(err)
	}
	s.drain()
	return s
}

// sync waits until every session has handled what was committed before:
// a marker sent to their users after it reaches each of them (a node's
// stream is read in order). The markers are removed; each sync's marker
// is its own (a user's other sessions get it too, and keep it until their
// own sync).
func (h *clusterHarness) sync(ss ...*session) {
	h.t.Helper()
	var users []string
	for _, s := range ss {
		if !slices.Contains(users, s.user) {
			users = append(users, s.user)
		}
	}
	n := syncSeq.Add(1)
	for _, eng := range h.nodes {
		if err := eng.SendEvent(ctx, users, "sync", n, false); err != nil {
			h.t.Fatal(err)
		}
		break
	}
	deadline := time.Now().Add(clusterWait)
	for _, s := range ss {
		for !s.hasSync(n) {
			if time.Now().After(deadline) {
				h.t.Fatalf("%s: no sync marker after %v", s.user, clusterWait)
			}
			time.Sleep(2 * time.Millisecond)
		}
		s.mu.Lock()
		s.evs = slices.DeleteFunc(s.evs, func(f protocol.EventFrame) bool { return f.Event == "sync" })
		s.mu.Unlock()
	}
}

// syncSeq numbers the sync markers.
var syncSeq atomic.Int64

func (s *session) hasSync(n int64) bool {
	want := strconv.FormatInt(n, 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.evs, func(f protocol.EventFrame) bool {
		raw, _ := f.Data.(json.RawMessage)
		return f.Event == "sync" && string(raw) == want
	})
}

func (s *session) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.evs, func(f protocol.EventFrame) bool { return f.Event == name })
}

// expect waits (sync) and checks that s got exactly the events names.
func (h *clusterHarness) expect(s *session, names ...string) []protocol.EventFrame {
	h.t.Helper()
	h.sync(s)
	evs := s.take()
	var got []string
	for _, e := range evs {
		got = append(got, e.Event)
	}
	if !slices.Equal(got, names) {
		h.t.Fatalf("%s got %v, want %v", s.user, got, names)
	}
	return evs
}

// placements are the ways to spread two parties over the nodes.
var placements = [][2]string{{"A", "B"}, {"B", "A"}, {"A", "A"}}

func TestClusterInvitations(t *testing.T) {
	srv := redistest.Start(t)
	scenarios := []struct {
		name string
		run  func(t *testing.T, h *clusterHarness, p [2]string)
	}{
		{"invite rings, accept reaches the inviter", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			carol := h.connect(p[1], "carol")
			id, err := h.nodes[p[0]].Invite(ctx, as(alice), protocol.InviteArgs{Invitee: "bob", Data: "d", Timeout: secs(30)})
			if err != nil {
				t.Fatal(err)
			}
			ev := decode[protocol.NewInvitationEvent](t, h.expect(bob, protocol.EvReceiveNewInvitation)[0])
			if ev.InviteID != id || ev.Inviter != "alice" || ev.Data != "d" || ev.Timeout != 30 {
				t.Fatalf("bad ring %+v", ev)
			}
			h.expect(alice) // the actor's connection: a reply only
			for _, n := range []string{"A", "B"} {
				info, ok := h.nodes[n].Invitation(id)
				if !ok || info.States["bob"] != signaling.StatePending {
					t.Fatalf("node %s sees %+v, %v", n, info, ok)
				}
			}
			if err := h.nodes[p[1]].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id, Data: "yes"}); err != nil {
				t.Fatal(err)
			}
			acc := decode[protocol.InviteeEvent](t, h.expect(alice, protocol.EvInviteeAccepted)[0])
			if acc.InviteID != id || acc.Invitee != "bob" || acc.Data != "yes" {
				t.Fatalf("bad accept %+v", acc)
			}
			h.expect(bob)
			h.expect(carol)
			for _, n := range []string{"A", "B"} {
				if _, ok := h.nodes[n].Invitation(id); ok {
					t.Fatalf("node %s still sees the ended invitation", n)
				}
			}
			mustCode(t, h.nodes[p[0]].Cancel(ctx, as(alice), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
			h.noDeadlines()
		}},
		{"cancel", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			id := h.invite(p[0], alice, "bob")
			h.expect(bob, protocol.EvReceiveNewInvitation)
			if err := h.nodes[p[0]].Cancel(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "bye"}); err != nil {
				t.Fatal(err)
			}
			c := decode[protocol.CancelledEvent](t, h.expect(bob, protocol.EvInvitationCancelled)[0])
			if c.InviteID != id || c.Data != "bye" {
				t.Fatalf("bad cancel %+v", c)
			}
			h.expect(alice)
			mustCode(t, h.nodes[p[1]].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
			h.noDeadlines()
		}},
		{"reject", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			id := h.invite(p[0], alice, "bob")
			h.expect(bob, protocol.EvReceiveNewInvitation)
			if err := h.nodes[p[1]].Reject(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
				t.Fatal(err)
			}
			h.expect(alice, protocol.EvInviteeRejected)
			h.expect(bob)
			h.noDeadlines()
		}},
		{"modify", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			id := h.invite(p[0], alice, "bob")
			h.expect(bob, protocol.EvReceiveNewInvitation)
			if err := h.nodes[p[0]].ModifyInvitation(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
				t.Fatal(err)
			}
			m := decode[protocol.ModifiedEvent](t, h.expect(bob, protocol.EvInvitationModified)[0])
			if m.InviteID != id || m.Data != "v2" {
				t.Fatalf("bad modify %+v", m)
			}
			if info, _ := h.nodes[p[1]].Invitation(id); info.Data != "v2" {
				t.Fatalf("data is %q", info.Data)
			}
			mustCode(t, h.nodes[p[1]].ModifyInvitation(ctx, as(bob), protocol.InviteIDArgs{InviteID: id, Data: "x"}), protocol.ErrNoPermission)
		}},
		{"multi-device: both ring, accept on one stops the other", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice := h.connect(p[0], "alice")
			bobA, bobB := h.connect("A", "bob"), h.connect("B", "bob")
			id := h.invite(p[0], alice, "bob")
			h.expect(bobA, protocol.EvReceiveNewInvitation)
			h.expect(bobB, protocol.EvReceiveNewInvitation)
			if err := h.nodes[p[1]].Accept(ctx, as(map[string]*session{"A": bobA, "B": bobB}[p[1]]), protocol.InviteIDArgs{InviteID: id}); err != nil {
				t.Fatal(err)
			}
			h.expect(alice, protocol.EvInviteeAccepted)
			answered, other := bobA, bobB
			if p[1] == "B" {
				answered, other = bobB, bobA
			}
			h.expect(other, protocol.EvInviteeAccepted)
			h.expect(answered)
		}},
		{"offline invitee gets the ring and the kept events on the other node", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice := h.connect(p[0], "alice")
			// bob is known (connected once, on the inviter's node), then offline.
			h.nodes[p[0]].Detach(h.connect(p[0], "bob"))
			id := h.invite(p[0], alice, "bob")
			if err := h.nodes[p[0]].ModifyInvitation(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
				t.Fatal(err)
			}
			if kept := h.kept(); kept <= 0 {
				t.Fatalf("kept bytes %d after keeping an event", kept)
			}
			bob := h.connect(p[1], "bob")
			evs := h.expect(bob, protocol.EvInvitationModified, protocol.EvReceiveNewInvitation)
			if ring := decode[protocol.NewInvitationEvent](t, evs[1]); ring.InviteID != id || ring.Data != "v2" || ring.Timeout < 29 {
				t.Fatalf("bad ring %+v", ring)
			}
			// The replayed entry is deleted and its bytes given back.
			h.eventually(func() string {
				if k := h.kept(); k != 0 {
					return fmt.Sprintf("kept bytes %d once replayed", k)
				}
				return ""
			})
			// Replayed once: a device that connects later gets the ring,
			// not the kept event.
			bob2 := h.connect(p[0], "bob")
			h.expect(bob2, protocol.EvReceiveNewInvitation)
			if err := h.nodes[p[1]].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
				t.Fatal(err)
			}
			h.expect(alice, protocol.EvInviteeAccepted)
			h.expect(bob2, protocol.EvInviteeAccepted)
		}},
	}
	for _, sc := range scenarios {
		for _, p := range placements {
			t.Run(fmt.Sprintf("%s/inviter on %s, invitee on %s", sc.name, p[0], p[1]), func(t *testing.T) {
				sc.run(t, newClusterHarness(t, srv), p)
			})
		}
	}
}

func (h *clusterHarness) invite(node string, from *session, to string) string {
	h.t.Helper()
	id, err := h.nodes[node].Invite(ctx, as(from), protocol.InviteArgs{Invitee: to, Timeout: secs(30)})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *clusterHarness) kept() int64 {
	h.t.Helper()
	n, err := h.srv.Client().HGet(ctx, h.prefix+"sig:kept", "*").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		h.t.Fatal(err)
	}
	return n
}

func (h *clusterHarness) noDeadlines() {
	h.t.Helper()
	if n, err := h.srv.Client().ZCard(ctx, h.prefix+"deadlines").Result(); err != nil || n != 0 {
		h.t.Fatalf("deadlines left: %d, %v", n, err)
	}
}

func (h *clusterHarness) eventually(cond func() string) {
	h.t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterTimeoutWithInviterNodeGone: the inviter's node closes; the
// invitation times out from the other node, once.
func TestClusterTimeoutWithInviterNodeGone(t *testing.T) {
	srv := redistest.Start(t)
	for _, p := range [][2]string{{"A", "B"}, {"B", "A"}} {
		t.Run(fmt.Sprintf("inviter on %s", p[0]), func(t *testing.T) {
			h := newClusterHarness(t, srv)
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			sent := time.Now()
			id, err := h.nodes[p[0]].Invite(ctx, as(alice), protocol.InviteArgs{Invitee: "bob", Timeout: secs(1)})
			if err != nil {
				t.Fatal(err)
			}
			h.expect(bob, protocol.EvReceiveNewInvitation)
			h.nodes[p[0]].Detach(alice)
			h.nodes[p[0]].Close()
			delete(h.nodes, p[0])
			h.eventually(func() string {
				if !bob.has(protocol.EvInvitationTimeout) {
					return "no timeout"
				}
				return ""
			})
			late := time.Since(sent) - time.Second
			evs := h.expect(bob, protocol.EvInvitationTimeout)
			if to := decode[protocol.TimeoutEvent](t, evs[0]); to.InviteID != id || !slices.Equal(to.InviteeList, []string{"bob"}) {
				t.Fatalf("bad timeout %+v", to)
			}
			t.Logf("timeout fired %v after its deadline", late)
			if _, ok := h.nodes[p[1]].Invitation(id); ok {
				t.Fatal("timed out invitation still live")
			}
			h.noDeadlines()
			// alice, offline now, gets it kept: once, when she comes back.
			alice2 := h.connect(p[1], "alice")
			h.expect(alice2, protocol.EvInvitationTimeout)
			h.expect(bob)
		})
	}
}

// TestClusterAcceptCancelRace: the inviter cancels on one node while the
// invitee accepts on the other: exactly one wins, every round, and each
// party hears the one outcome.
func TestClusterAcceptCancelRace(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	const rounds = 200
	accepted, cancelled := 0, 0
	for round := range rounds {
		id := h.invite("A", alice, "bob")
		var wg sync.WaitGroup
		var errAcc, errCan error
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			errAcc = h.nodes["B"].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id})
		})
		wg.Go(func() {
			<-start
			errCan = h.nodes["A"].Cancel(ctx, as(alice), protocol.InviteIDArgs{InviteID: id})
		})
		close(start)
		wg.Wait()
		switch {
		case errAcc == nil && errCan == nil:
			t.Fatalf("round %d: both the accept and the cancel succeeded", round)
		case errAcc == nil:
			accepted++
			mustCode(t, errCan, protocol.ErrInvalidInviteID)
		case errCan == nil:
			cancelled++
			mustCode(t, errAcc, protocol.ErrInvalidInviteID)
		default:
			t.Fatalf("round %d: neither won: accept %v, cancel %v", round, errAcc, errCan)
		}
		if _, ok := h.nodes["B"].Invitation(id); ok {
			t.Fatalf("round %d: the invitation outlived its outcome", round)
		}
	}
	h.sync(alice, bob)
	count := func(s *session, name string) int {
		n := 0
		for _, e := range s.take() {
			if e.Event == name {
				n++
			} else if e.Event != protocol.EvReceiveNewInvitation {
				t.Errorf("%s got %s", s.user, e.Event)
			}
		}
		return n
	}
	if n := count(alice, protocol.EvInviteeAccepted); n != accepted {
		t.Errorf("alice heard %d accepts; %d won", n, accepted)
	}
	if n := count(bob, protocol.EvInvitationCancelled); n != cancelled {
		t.Errorf("bob heard %d cancels; %d won", n, cancelled)
	}
	t.Logf("%d rounds: %d accepted, %d cancelled", rounds, accepted, cancelled)
	h.noDeadlines()
}

// TestClusterRoundTrips counts the Redis round trips of the operations on
// the ring path (target: an invite in at most 4).
func TestClusterRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	counted := context.WithValue(ctx, countedKey{}, true)
	// measureCmds checks op's round trips against max, unless scripts
	// < 0 the scripts it calls against scripts, and unless cmds < 0 its
	// commands against cmds.
	measureCmds := func(node, what string, max, scripts, cmds int64, op func(context.Context) error) {
		t.Helper()
		rt := h.rts[node]
		before, beforeS, beforeC := rt.n.Load(), rt.scripts.Load(), rt.cmds.Load()
		if err := op(counted); err != nil {
			t.Fatal(err)
		}
		n, s, c := rt.n.Load()-before, rt.scripts.Load()-beforeS, rt.cmds.Load()-beforeC
		t.Logf("%s: %d round trips, %d scripts, %d commands", what, n, s, c)
		if cmds >= 0 && c > cmds {
			t.Errorf("%s sent %d commands; the target is %d", what, c, cmds)
		}
		if n > max {
			t.Errorf("%s took %d round trips; the target is %d", what, n, max)
		}
		if scripts >= 0 && s != scripts {
			t.Errorf("%s called %d scripts, want %d", what, s, scripts)
		}
	}
	measureScripts := func(node, what string, max, scripts int64, op func(context.Context) error) {
		t.Helper()
		measureCmds(node, what, max, scripts, -1, op)
	}
	measure := func(node, what string, max int64, op func(context.Context) error) {
		t.Helper()
		measureScripts(node, what, max, -1, op)
	}
	var id string
	// The ring path calls no script: the invite's EXEC appends the ring to
	// bob's node's stream (an XADD that numbers the entry in its ID) and
	// nothing to alice's,
	// where alice has no other connection; the accept likewise. The
	// accept reads the parties' connections with the invitation: bob's
	// node learnt them from the ring (the parties hint).
	// Commands (MULTI and EXEC included): the invite's reads are WATCH,
	// ZCARD (ringing), SCARD (sent), HKEYS of both conn: hashes, ZRANGE
	// nodes, SMISMEMBER (known); its EXEC the invitation (HSET, ZADD),
	// the indexes (SADD, ZADD ringing, ZADD deadline) and the append. The
	// accept's reads are WATCH, HGETALL and the parties' as above; its
	// EXEC deletes the invitation (DEL, ZREM), its indexes (SREM, ZREM
	// ringing, ZREM deadline) and appends: the invitee's state is not
	// written (HSET) nor unrung (ZREM) before the deletion.
	measureCmds("A", "invite", 2, 0, 15, func(c context.Context) error {
		var err error
		id, err = h.nodes["A"].Invite(c, as(alice), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
		return err
	})
	h.expect(bob, protocol.EvReceiveNewInvitation)
	measureCmds("B", "accept", 2, 0, 14, func(c context.Context) error {
		return h.nodes["B"].Accept(c, as(bob), protocol.InviteIDArgs{InviteID: id})
	})
	h.expect(alice, protocol.EvInviteeAccepted)
	// A user's first connection: their presence announcement reads, its
	// subscribers (a script), EXEC; the user is known through the
	// registry's write (the loops' client, not counted here).
	measure("B", "attach", 4, func(c context.Context) error {
		return h.nodes["B"].Attach(c, &session{user: "carol"})
	})
	// The inviter's node learnt them when it created the invitation.
	id = h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation)
	measure("A", "cancel", 2, func(c context.Context) error {
		return h.nodes["A"].Cancel(c, as(alice), protocol.InviteIDArgs{InviteID: id})
	})
	h.expect(bob, protocol.EvInvitationCancelled)

	// Groups: a change is its reads, its recipients' connections, EXEC;
	// a view is one round trip.
	if _, err := h.nodes["A"].CreateGroup(ctx, as(alice), protocol.CreateGroupArgs{GroupID: "g1", Name: "g"}); err != nil {
		t.Fatal(err)
	}
	measure("B", "joinGroup", 3, func(c context.Context) error {
		return h.nodes["B"].JoinGroup(c, as(bob), protocol.GroupIDArgs{GroupID: "g1"})
	})
	measure("B", "getGroupMemberList", 1, func(c context.Context) error {
		_, err := h.nodes["B"].GetGroupMemberList(c, as(bob), protocol.GroupIDArgs{GroupID: "g1"})
		return err
	})
	// Its script is loaded by the first call (EVALSHA, then EVAL).
	if _, err := h.nodes["B"].GetJoinedGroupList(ctx, as(bob)); err != nil {
		t.Fatal(err)
	}
	measure("B", "getJoinedGroupList", 1, func(c context.Context) error {
		_, err := h.nodes["B"].GetJoinedGroupList(c, as(bob))
		return err
	})
	measure("B", "getUserStatus", 1, func(c context.Context) error {
		_, err := h.nodes["B"].GetUserStatus(c, as(bob), protocol.UserIDListArgs{UserIDList: []string{"alice", "bob"}})
		return err
	})
	measure("A", "inviteInGroup", 4, func(c context.Context) error {
		_, err := h.nodes["A"].InviteInGroup(c, as(alice), protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"bob"}, Timeout: secs(30)})
		return err
	})
}

// TestClusterPrefixOnly: everything the nodes write is under the prefix.
func TestClusterKeysUnderPrefix(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation)
	keys, err := redistest.Keys(ctx, srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, h.prefix) {
			t.Errorf("key %q is not under the prefix", k)
		}
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestClusterReplayOnce: two devices of a user attach at the same moment
// on different nodes; each kept event is replayed to exactly one of them.
func TestClusterReplayOnce(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	const kept = 5
	for round := range 10 {
		user := fmt.Sprintf("bob%d", round)
		h.nodes["A"].Detach(h.connect("A", user)) // known, then offline
		for i := range kept {
			if err := h.nodes["A"].SendEvent(ctx, []string{user}, "note", i, true); err != nil {
				t.Fatal(err)
			}
		}
		devs := []*session{{user: user}, {user: user}}
		var wg sync.WaitGroup
		for i, n := range []string{"A", "B"} {
			wg.Go(func() {
				if err := h.nodes[n].Attach(ctx, devs[i]); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for _, s := range devs {
			wg.Go(func() { s.drain() })
		}
		wg.Wait()
		h.sync(devs...)
		n := 0
		for _, s := range devs {
			for _, f := range s.take() {
				if f.Event == "note" {
					n++
				}
			}
		}
		if n != kept {
			t.Fatalf("round %d: %d kept events replayed over the two devices; %d were kept", round, n, kept)
		}
		for i, n := range []string{"A", "B"} {
			h.nodes[n].Detach(devs[i])
		}
	}
}

// kill cuts node off Redis as SIGKILL would: its loops stop reaching
// Redis (its client is closed), its keys expire, the survivors clean up.
func (h *clusterHarness) kill(node string) {
	h.t.Helper()
	if err := h.rdbs[node].Close(); err != nil {
		h.t.Fatal(err)
	}
	signaling.KillClusterLoops(h.nodes[node])
	delete(h.nodes, node)
}

// TestClusterKeptWhenGoneBeforeDelivery: an event routed to a node for a
// user whose connection there closed before the node's reader handled it
// is kept in the user's outbox (once), as on one node, and replayed on
// their next connection, to any node.
func TestClusterKeptWhenGoneBeforeDelivery(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	id := h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation)
	h.nodes["B"].Detach(bob)
	// The registry's removal is still on its way when the event is
	// decided: bob looks connected on B.
	if err := srv.Client().HSet(ctx, h.prefix+"conn:bob", "B", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.nodes["A"].ModifyInvitation(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
		t.Fatal(err)
	}
	h.eventually(func() string {
		if k := h.kept(); k <= 0 {
			return fmt.Sprintf("kept bytes %d: the event was not kept", k)
		}
		return ""
	})
	if err := srv.Client().HDel(ctx, h.prefix+"conn:bob", "B").Err(); err != nil {
		t.Fatal(err)
	}
	bob2 := h.connect("A", "bob")
	evs := h.expect(bob2, protocol.EvInvitationModified, protocol.EvReceiveNewInvitation)
	if m := decode[protocol.ModifiedEvent](t, evs[0]); m.InviteID != id || m.Data != "v2" {
		t.Fatalf("bad modify %+v", m)
	}
}

// TestClusterDeadNodeEventsKept: the events a node had not read when it
// died go to their users' outboxes, and reach them when they reconnect to
// another node.
func TestClusterDeadNodeEventsKept(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	id := h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation)
	h.kill("B")
	if err := h.nodes["A"].ModifyInvitation(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
		t.Fatal(err)
	}
	// Routed to the dead node (its key had not expired yet), not kept.
	unread, err := srv.Client().XRange(ctx, h.prefix+"ev:B", "-", "+").Result()
	if err != nil || len(unread) == 0 {
		t.Fatalf("the event did not go to B's stream: %d entries, %v", len(unread), err)
	}
	h.eventually(func() string {
		if n, _ := srv.Client().Exists(ctx, h.prefix+"ev:B").Result(); n != 0 {
			return "B's stream is still there: not cleaned up"
		}
		return ""
	})
	bob2 := h.connect("A", "bob")
	evs := h.expect(bob2, protocol.EvInvitationModified, protocol.EvReceiveNewInvitation)
	if m := decode[protocol.ModifiedEvent](t, evs[0]); m.InviteID != id || m.Data != "v2" {
		t.Fatalf("bad modify %+v", m)
	}
	h.nodes["A"].Detach(bob2)
	h.eventually(func() string {
		if k := h.kept(); k != 0 {
			return fmt.Sprintf("kept bytes %d once replayed", k)
		}
		return ""
	})
	// A handover is at least once (its claimer may die mid-way): the same
	// entries handed over again, here as those of a dead node Z, are not
	// kept twice.
	rc := srv.Client()
	for _, m := range unread {
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: h.prefix + "ev:Z", Values: m.Values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.ZAdd(ctx, h.prefix+"nodes", redis.Z{Score: 1, Member: "Z"}).Err(); err != nil {
		t.Fatal(err)
	}
	h.eventually(func() string {
		if n, _ := rc.Exists(ctx, h.prefix+"ev:Z").Result(); n != 0 {
			return "Z's stream is still there: not cleaned up"
		}
		return ""
	})
	if k := h.kept(); k != 0 {
		t.Fatalf("kept bytes %d: a handed-over event was kept again", k)
	}
	h.expect(h.connect("A", "bob"), protocol.EvReceiveNewInvitation)
}

// TestClusterNoSelfEntry: an op's event goes to the acting node's stream
// only when a connection there other than the acting one is to get it;
// the actor's other device on the acting node still gets it, once, in
// order.
func TestClusterNoSelfEntry(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	h.sync(alice, bob)
	appends := func(node string) int64 {
		t.Helper()
		info, err := srv.Client().XInfoStream(ctx, h.prefix+"ev:"+node).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				return 0
			}
			t.Fatal(err)
		}
		ms, n, _ := strings.Cut(info.LastGeneratedID, "-")
		seq, err := strconv.ParseInt(n, 10, 64)
		if err != nil || ms != cluster.StreamIDMs {
			t.Fatalf("last ID %q: not an Append's", info.LastGeneratedID)
		}
		return seq + 1
	}
	a0, b0 := appends("A"), appends("B")
	id := h.invite("A", alice, "bob")
	if err := h.nodes["B"].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	// The ring went to B only, the accept to A only.
	if a, b := appends("A")-a0, appends("B")-b0; a != 1 || b != 1 {
		t.Fatalf("appends to A %d, to B %d; want 1 and 1 (none to the actor's own node)", a, b)
	}
	h.expect(bob, protocol.EvReceiveNewInvitation)
	h.expect(alice, protocol.EvInviteeAccepted)

	// A second device of alice on A: the events go there too.
	alice2 := h.connect("A", "alice")
	id = h.invite("A", alice, "bob")
	if err := h.nodes["A"].ModifyInvitation(ctx, as(alice), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
		t.Fatal(err)
	}
	if err := h.nodes["A"].Cancel(ctx, as(alice), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	h.expect(alice2, protocol.EvReceiveNewInvitation, protocol.EvInvitationModified, protocol.EvInvitationCancelled)
	h.expect(alice)
	h.expect(bob, protocol.EvReceiveNewInvitation, protocol.EvInvitationModified, protocol.EvInvitationCancelled)
}

// TestClusterOpAfterConnectionsKilled: the ops' connections, held by the
// node between ops, all dropped by Redis while idle (as a restart of Redis
// does): the next op on each node still succeeds (its first read fails on
// the dead connection, and the attempt runs again on a new one, as
// go-redis's check of a pooled connection did for Watch).
func TestClusterOpAfterConnectionsKilled(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	id := h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation)
	admin := redis.NewClient(srv.Options())
	defer admin.Close()
	if n, err := admin.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Result(); err != nil || n == 0 {
		t.Fatalf("CLIENT KILL: %d, %v", n, err)
	}
	if err := h.nodes["B"].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatalf("accept after the connections were killed: %v", err)
	}
	h.expect(alice, protocol.EvInviteeAccepted)
	if _, err := admin.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Result(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.nodes["A"].Invite(ctx, as(alice), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)}); err != nil {
		t.Fatalf("invite after the connections were killed: %v", err)
	}
	h.expect(bob, protocol.EvReceiveNewInvitation)
}

// TestClusterSharedTransactions: operations in flight together on a node
// share its lanes' transactions (cluster.op_lanes), and each outcome is
// the one they would have alone: 30 invitations to 30 users all ring
// once; 20 invitations to one user whose ring limit is 1 store exactly
// one (the others read the ring count that one writes: refused in the
// lane, they run again and find the limit reached).
func TestClusterSharedTransactions(t *testing.T) {
	srv := redistest.Start(t)
	cfg := signaling.DefaultConfig()
	cfg.Limits.MaxPendingPerInvitee = 1
	h := newClusterHarnessWith(t, srv, cfg)
	race := func(n int, from func(i int) *session, to func(i int) string) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = h.nodes["A"].Invite(ctx, as(from(i)), protocol.InviteArgs{Invitee: to(i), Timeout: secs(30)})
			})
		}
		close(start)
		wg.Wait()
		return errs
	}
	var callers, callees []*session
	for i := range 30 {
		callers = append(callers, h.connect("A", fmt.Sprintf("caller%d", i)))
		callees = append(callees, h.connect("B", fmt.Sprintf("callee%d", i)))
	}
	for i, err := range race(30, func(i int) *session { return callers[i] }, func(i int) string { return callees[i].user }) {
		if err != nil {
			t.Fatalf("invite %d: %v", i, err)
		}
	}
	for _, s := range callees {
		h.expect(s, protocol.EvReceiveNewInvitation)
	}
	h.sync(callees...)
	for _, s := range callees {
		if evs := s.take(); len(evs) != 0 {
			t.Fatalf("%s got %d more events after its ring", s.user, len(evs))
		}
	}
	st, on := h.nodes["A"].SharedTxStats()
	if !on || st.Members == 0 {
		t.Fatalf("no invite ran in a shared transaction (stats %+v, on %v)", st, on)
	}
	t.Logf("30 invites: %+v", st)

	target := h.connect("B", "target")
	stored := 0
	for i, err := range race(20, func(i int) *session { return callers[i] }, func(int) string { return "target" }) {
		switch {
		case err == nil:
			stored++
		default:
			if !isCode(err, protocol.ErrInviteePendingFull) {
				t.Fatalf("invite %d: %v, want %v", i, err, protocol.ErrInviteePendingFull)
			}
		}
	}
	if stored != 1 {
		t.Fatalf("%d invitations stored for a user whose limit is 1", stored)
	}
	h.expect(target, protocol.EvReceiveNewInvitation)
	h.sync(target)
	if evs := target.take(); len(evs) != 0 {
		t.Fatalf("the target got %d more events: %v", len(evs), evs)
	}
	after, _ := h.nodes["A"].SharedTxStats()
	t.Logf("20 invites to one user: %d attempts in lanes, %d EXECs, %d refused", after.Members-st.Members, after.Execs-st.Execs, after.Refused-st.Refused)
}
