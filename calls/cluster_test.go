package calls_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// Cluster mode: two nodes, A and B, each a signaling engine and a calls
// manager in cluster mode (with node-local fake rooms), on one real
// redis-server. The clients are spread over the nodes; what a call does
// must not depend on which node decided it.

const clusterWait = 10 * time.Second

func callsClusterConfig() cluster.Config {
	c := cluster.DefaultConfig()
	c.NodeTTL = 600 * time.Millisecond
	c.OpTimeout = 200 * time.Millisecond
	c.CleanupLease = 2 * time.Second
	c.TimerPoll = 50 * time.Millisecond
	c.TimerLease = time.Second
	c.MaxBackoff = 200 * time.Millisecond
	return c
}

type callNode struct {
	rts    *roundTrips // of ops whose ctx carries roundTripsKey
	eng    *signaling.Engine
	m      *calls.Manager
	rooms  *fakeRooms
	ops    map[string]protocol.OpFunc
	close  func()
	closed bool
}

type callCluster struct {
	t      *testing.T
	srv    *redistest.Server
	prefix string
	cfg    calls.Config
	nodes  map[string]*callNode
	// wrap, if set for a node, wraps its engine as its manager sees it.
	wrap map[string]func(*signaling.Engine) calls.Invitations
}

func newCallCluster(t *testing.T, srv *redistest.Server, mod func(*calls.Config)) *callCluster {
	t.Helper()
	cfg := calls.DefaultConfig()
	cfg.Heartbeat = 0
	if mod != nil {
		mod(&cfg)
	}
	h := &callCluster{t: t, srv: srv, prefix: "cc{" + t.Name() + "}:", cfg: cfg, nodes: map[string]*callNode{}}
	for _, n := range []string{"A", "B"} {
		h.start(n)
	}
	return h
}

func (h *callCluster) start(name string) {
	h.t.Helper()
	opts := h.srv.Options()
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opts)
	rts := &roundTrips{}
	rdb.AddHook(rts) // before the engine: its connections take the client's hooks when made
	cc := callsClusterConfig()
	eng, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Logger: quiet(),
		Cluster: &signaling.ClusterParams{Client: rdb, Prefix: h.prefix, NodeID: name, Config: cc}})
	if err != nil {
		h.t.Fatal(err)
	}
	rec, err := calls.NewRedisRecords(rdb, h.prefix, name)
	if err != nil {
		h.t.Fatal(err)
	}
	rm := newFakeRooms()
	var inv calls.Invitations = eng
	if w := h.wrap[name]; w != nil {
		inv = w(eng)
	}
	m, err := calls.NewManager(context.Background(), calls.Params{Config: h.cfg, Engine: inv, Rooms: rm, Records: rec, Logger: quiet(),
		Cluster: &calls.ClusterParams{Client: rdb, Prefix: h.prefix, NodeID: name, Config: cc}})
	if err != nil {
		h.t.Fatal(err)
	}
	var once sync.Once
	var n *callNode
	n = &callNode{rts: rts, eng: eng, m: m, rooms: rm, ops: m.Ops(), close: func() {
		once.Do(func() {
			n.closed = true
			m.Close()
			eng.Close()
			_ = rdb.Close()
		})
	}}
	h.nodes[name] = n
	h.t.Cleanup(n.close)
}

// csession is a connection of user to a node's engine: it records the
// event frames it is sent.
type csession struct {
	user   string
	mu     sync.Mutex
	evs    []cframe
	held   []cframe
	replay *signaling.Replay
}

func (s *csession) UserID() string { return s.user }

// cframe is an event frame as received.
type cframe struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func frameOf(frame []byte) cframe {
	var f cframe
	_ = json.Unmarshal(frame, &f)
	return f
}

func (s *csession) Deliver(frame []byte) {
	f := frameOf(frame)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replay != nil {
		s.held = append(s.held, f)
		return
	}
	s.evs = append(s.evs, f)
}

func (s *csession) StartReplay(r *signaling.Replay) {
	s.mu.Lock()
	s.replay = r
	s.mu.Unlock()
}

// named returns the events named name that s received so far, matching
// match (nil: all).
func (s *csession) named(name string, match func(json.RawMessage) bool) []cframe {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []cframe
	for _, e := range s.evs {
		if e.Event == name && (match == nil || match(e.Data)) {
			out = append(out, e)
		}
	}
	return out
}

// connect attaches a connection of user on node and plays its replay.
func (h *callCluster) connect(node, user string) *csession {
	h.t.Helper()
	s := &csession{user: user}
	if err := h.nodes[node].eng.Attach(context.Background(), s); err != nil {
		h.t.Fatal(err)
	}
	s.mu.Lock()
	r := s.replay
	s.mu.Unlock()
	for r != nil {
		frames := r.Next(context.Background())
		if frames == nil {
			break
		}
		s.mu.Lock()
		for _, f := range frames {
			s.evs = append(s.evs, frameOf(f))
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.evs = append(s.evs, s.held...)
	s.held, s.replay = nil, nil
	s.mu.Unlock()
	return s
}

// op runs op name on node as s's user (on connection s; nil: the server
// acting for user), then its after-reply work.
func (h *callCluster) op(node string, s *csession, user, name string, args any) (any, error) {
	h.t.Helper()
	return h.opIn(context.Background(), node, s, user, name, args)
}

// opIn is op with ctx.
func (h *callCluster) opIn(ctx context.Context, node string, s *csession, user, name string, args any) (any, error) {
	h.t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		h.t.Fatal(err)
	}
	a := protocol.Actor{UserID: user}
	if s != nil {
		a.Session = s
	}
	res, err := h.nodes[node].ops[name](ctx, a, raw)
	if ar, ok := res.(signaling.AfterReplier); ok && err == nil {
		ar.AfterReply()
	}
	return res, err
}

func (h *callCluster) mustOp(node string, s *csession, user, name string, args any) any {
	h.t.Helper()
	res, err := h.op(node, s, user, name, args)
	if err != nil {
		h.t.Fatalf("%s on %s: %s: %v", user, node, name, err)
	}
	return res
}

func (h *callCluster) call(node string, s *csession, caller, callee string, timeout *int) calls.CallResult {
	h.t.Helper()
	res, ok := h.mustOp(node, s, caller, calls.OpCall, calls.CallArgs{Invitee: callee, MediaType: calls.MediaAudio, Timeout: timeout}).(calls.CallResult)
	if !ok || res.CallID == "" {
		h.t.Fatalf("call %s → %s: %#v", caller, callee, res)
	}
	return res
}

// wait waits until s has n events named name matching match.
func (h *callCluster) wait(s *csession, name string, n int, match func(json.RawMessage) bool) []cframe {
	h.t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		evs := s.named(name, match)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %d %s events after %v, want %d", s.user, len(evs), name, clusterWait, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sync waits until every session got what was sent to it before: a marker
// sent after it reaches each of them (each node's stream is read in order).
func (h *callCluster) sync(ss ...*csession) {
	h.t.Helper()
	var users []string
	for _, s := range ss {
		users = append(users, s.user)
	}
	marker := fmt.Sprintf("sync-%d", time.Now().UnixNano())
	for _, name := range []string{"A", "B"} {
		if n := h.nodes[name]; !n.closed {
			if err := n.eng.SendEvent(context.Background(), users, marker, struct{}{}, false); err != nil {
				h.t.Fatal(err)
			}
			break
		}
	}
	for _, s := range ss {
		h.wait(s, marker, 1, nil)
	}
}

func (h *callCluster) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(clusterWait)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// history returns user's call history, read on node.
func (h *callCluster) history(node, user string) []calls.CallInfo {
	h.t.Helper()
	res := h.mustOp(node, nil, user, calls.OpGetCallHistory, calls.HistoryArgs{}).(calls.HistoryResult)
	return res.Calls
}

// record checks, from every node, user's history entry of callID.
func (h *callCluster) record(user, callID string, result calls.Result, reason calls.EndReason, endedBy string) calls.CallInfo {
	h.t.Helper()
	var got calls.CallInfo
	for _, n := range []string{"A", "B"} {
		hist := h.history(n, user)
		i := slices.IndexFunc(hist, func(ci calls.CallInfo) bool { return ci.CallID == callID })
		if i < 0 {
			h.t.Fatalf("no record of %s in %s's history read on %s: %+v", callID, user, n, hist)
		}
		ci := hist[i]
		if ci.CallResult != result || ci.EndReason != reason || ci.EndedBy != endedBy || ci.EndedAt == 0 {
			h.t.Fatalf("record of %s read on %s: result %q reason %q by %q ended %d, want %q %q %q",
				callID, n, ci.CallResult, ci.EndReason, ci.EndedBy, ci.EndedAt, result, reason, endedBy)
		}
		got = ci
	}
	return got
}

func byCallID(id string) func(json.RawMessage) bool {
	return func(d json.RawMessage) bool {
		var v struct {
			CallID   string `json:"callID"`
			InviteID string `json:"inviteID"`
		}
		return json.Unmarshal(d, &v) == nil && (v.CallID == id || v.InviteID == id)
	}
}

// callEndInvitation matches the server's call-end invitation of callID.
func callEndInvitation(id string) func(json.RawMessage) bool {
	return func(d json.RawMessage) bool {
		var v protocol.NewInvitationEvent
		if json.Unmarshal(d, &v) != nil {
			return false
		}
		cd, ok, err := calls.ParseCallData(v.Data)
		return ok && err == nil && cd.IsCallEnd() && cd.FromServer() && strings.Contains(v.Data, id)
	}
}

// noActiveCalls checks that the cluster runs no call.
func (h *callCluster) noActiveCalls() {
	h.t.Helper()
	for n, node := range h.nodes {
		if node.closed {
			continue
		}
		// Active is -1 when Redis did not answer within op_timeout (200
		// ms here; a loaded machine): that read is made again, until
		// clusterWait. A count is checked at once.
		a := node.m.Active()
		for deadline := time.Now().Add(clusterWait); a < 0 && time.Now().Before(deadline); a = node.m.Active() {
			time.Sleep(10 * time.Millisecond)
		}
		if a != 0 {
			h.t.Fatalf("node %s: %d calls still running (-1: Redis did not answer)", n, a)
		}
	}
}

// TestClusterCallAcrossNodes: alice on A calls bob, who accepts on B; both
// enter the call's room (each on their node); bob hangs up on B. The call
// begins and ends once, with its duration; bob gets one call-end
// invitation; both nodes show the same record; A's room is closed.
func TestClusterCallAcrossNodes(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	c := h.call("A", alice, "alice", "bob", nil)
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	h.mustOp("B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	h.wait(alice, protocol.EvInviteeAccepted, 1, byCallID(c.InviteID))
	for _, n := range []string{"A", "B"} {
		if !h.nodes[n].m.Busy("alice") || !h.nodes[n].m.Busy("bob") {
			t.Fatalf("node %s does not see alice and bob busy", n)
		}
	}
	if !h.nodes["A"].rooms.connect(c.RoomID, "alice") {
		t.Fatal("alice not admitted to the call's room on A")
	}
	if h.nodes["B"].rooms.connect(c.RoomID, "carol") {
		t.Fatal("carol admitted to the call's room on B")
	}
	if !h.nodes["B"].rooms.connect(c.RoomID, "bob") {
		t.Fatal("bob, who accepted on B, not admitted to the call's room on B")
	}
	h.wait(alice, calls.EvCallBegin, 1, byCallID(c.CallID))
	h.wait(bob, calls.EvCallBegin, 1, byCallID(c.CallID))
	time.Sleep(20 * time.Millisecond) // a duration above zero
	h.mustOp("B", bob, "bob", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	h.wait(alice, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.wait(bob, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, callEndInvitation(c.CallID))
	// A's claim on the room goes once A sees the call ended.
	h.eventually("the call's room released on A", func() bool {
		return slices.Contains(h.nodes["A"].rooms.releasedRooms(), c.RoomID)
	})
	h.sync(alice, bob)
	if n := len(bob.named(protocol.EvReceiveNewInvitation, callEndInvitation(c.CallID))); n != 1 {
		t.Fatalf("bob got %d call-end invitations, want 1", n)
	}
	for _, s := range []*csession{alice, bob} {
		if n := len(s.named(calls.EvCallEnd, byCallID(c.CallID))); n != 1 {
			t.Fatalf("%s got %d onCallEnd, want 1", s.user, n)
		}
		if n := len(s.named(calls.EvCallBegin, byCallID(c.CallID))); n != 1 {
			t.Fatalf("%s got %d onCallBegin, want 1", s.user, n)
		}
	}
	var end calls.EndEvent
	_ = json.Unmarshal(alice.named(calls.EvCallEnd, byCallID(c.CallID))[0].Data, &end)
	if end.Reason != calls.EndHangup || end.EndedBy != "bob" || end.DurationMs <= 0 || end.Result != calls.ResultCompleted {
		t.Fatalf("onCallEnd %+v", end)
	}
	for _, u := range []string{"alice", "bob"} {
		ci := h.record(u, c.CallID, calls.ResultCompleted, calls.EndHangup, "bob")
		if ci.BeganAt == 0 || ci.DurationMs != end.DurationMs || ci.Result != calls.ResultCompleted {
			t.Fatalf("%s's record %+v, want began, %d ms, completed", u, ci, end.DurationMs)
		}
	}
	h.noActiveCalls()
	for _, n := range []string{"A", "B"} {
		if h.nodes[n].m.Busy("alice") || h.nodes[n].m.Busy("bob") {
			t.Fatalf("node %s still sees a busy line", n)
		}
	}
}

// TestClusterCallEndsAcrossNodes: a call placed on A is rejected on B,
// cancelled from the caller's other device on B, or times out (its
// deadline fired by either node): the call ends once, with the record
// every node reads and A's room closed.
func TestClusterCallEndsAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	for _, tc := range []struct {
		name    string
		timeout *int
		end     func(h *callCluster, c calls.CallResult, alice2, bob *csession)
		result  calls.Result
		reason  calls.EndReason
		by      string
	}{
		{"rejected on B", nil, func(h *callCluster, c calls.CallResult, _, bob *csession) {
			h.mustOp("B", bob, "bob", protocol.OpReject, protocol.InviteIDArgs{InviteID: c.InviteID})
		}, calls.ResultRejected, calls.EndRejected, "bob"},
		{"cancelled on B", nil, func(h *callCluster, c calls.CallResult, alice2, _ *csession) {
			h.mustOp("B", alice2, "alice", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
		}, calls.ResultCancelled, calls.EndCancelled, "alice"},
		{"timed out", ptr(1), func(*callCluster, calls.CallResult, *csession, *csession) {},
			calls.ResultNoAnswer, calls.EndNoAnswer, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCallCluster(t, srv, nil)
			alice, alice2, bob := h.connect("A", "alice"), h.connect("B", "alice"), h.connect("B", "bob")
			c := h.call("A", alice, "alice", "bob", tc.timeout)
			h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
			tc.end(h, c, alice2, bob)
			for _, s := range []*csession{alice, alice2} {
				h.wait(s, calls.EvCallEnd, 1, byCallID(c.CallID))
			}
			h.eventually("the call's room released on A", func() bool {
				return slices.Contains(h.nodes["A"].rooms.releasedRooms(), c.RoomID)
			})
			h.sync(alice, alice2, bob)
			var end calls.EndEvent
			evs := alice.named(calls.EvCallEnd, byCallID(c.CallID))
			_ = json.Unmarshal(evs[0].Data, &end)
			if len(evs) != 1 || end.Reason != tc.reason || end.Result != tc.result || end.EndedBy != tc.by {
				t.Fatalf("alice got %d onCallEnd, the first %+v; want one, %s %s by %q", len(evs), end, tc.result, tc.reason, tc.by)
			}
			h.record("alice", c.CallID, tc.result, tc.reason, tc.by)
			h.record("bob", c.CallID, tc.result, tc.reason, tc.by)
			h.noActiveCalls()
			if tc.name == "cancelled on B" {
				h.wait(bob, protocol.EvInvitationCancelled, 1, byCallID(c.InviteID))
			}
		})
	}
}

// TestClusterBusyLine: bob, in a call with carol decided on B, is busy for
// alice calling from A: the server rejects alice's call with line_busy,
// bob's devices never ring for it and get onCallMissed.
func TestClusterBusyLine(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, bob, carol := h.connect("A", "alice"), h.connect("B", "bob"), h.connect("B", "carol")
	first := h.call("B", carol, "carol", "bob", nil)
	h.mustOp("B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: first.InviteID})
	c := h.call("A", alice, "alice", "bob", nil)
	rej := h.wait(alice, protocol.EvInviteeRejected, 1, byCallID(c.InviteID))
	if !strings.Contains(string(rej[0].Data), "line_busy") {
		t.Fatalf("rejection without line_busy: %s", rej[0].Data)
	}
	h.wait(bob, calls.EvCallMissed, 1, byCallID(c.CallID))
	h.wait(alice, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.sync(alice, bob)
	if n := len(bob.named(protocol.EvReceiveNewInvitation, byCallID(c.InviteID))); n != 0 {
		t.Fatalf("busy bob rang %d times for alice's call", n)
	}
	h.record("alice", c.CallID, calls.ResultBusy, calls.EndBusy, "bob")
	if r, ok := h.nodes["A"].m.Call(first.CallID); !ok || !r.EndedAt.IsZero() {
		t.Fatalf("node A sees carol's call as %+v, %v; want running", r, ok)
	}
}

// glareClusterRounds is how many times TestClusterGlare makes alice (on A)
// and bob (on B) call each other at the same instant.
const glareClusterRounds = 100

// TestClusterGlare: alice on A and bob on B call each other at the same
// instant: every round makes exactly one call, the other request merged
// into it, wherever each was decided.
func TestClusterGlare(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	side := [2]struct {
		node, user, peer string
		s                *csession
	}{{"A", "alice", "bob", alice}, {"B", "bob", "alice", bob}}
	for round := range glareClusterRounds {
		var res [2]calls.CallResult
		var errs [2]error
		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		ready.Add(2)
		wg.Add(2)
		for i := range 2 {
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				var r any
				r, errs[i] = h.op(side[i].node, side[i].s, side[i].user, calls.OpCall, calls.CallArgs{Invitee: side[i].peer, MediaType: calls.MediaAudio})
				if errs[i] == nil {
					res[i], _ = r.(calls.CallResult)
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s's call: %v", round, side[i].user, err)
			}
		}
		if res[0].CallID == "" || res[0].CallID != res[1].CallID || res[0].Merged == res[1].Merged {
			t.Fatalf("round %d: not one call: alice got %+v, bob got %+v", round, res[0], res[1])
		}
		win := 0
		if res[0].Merged {
			win = 1
		}
		h.mustOp(side[win].node, side[win].s, side[win].user, calls.OpHangup, calls.CallIDArgs{CallID: res[win].CallID})
		h.noActiveCalls()
	}
}

// TestClusterSetupTimeoutFiresOnce: bob accepts alice's call on A, which
// arms the setup timer; A then closes before it fires. B fires it: the call
// fails once (one onCallEnd, the record failed).
func TestClusterSetupTimeoutFiresOnce(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), func(c *calls.Config) { c.SetupTimeout = 500 * time.Millisecond })
	alice, bob := h.connect("B", "alice"), h.connect("B", "bob")
	c := h.call("A", nil, "alice", "bob", nil)
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	h.mustOp("A", nil, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	h.nodes["A"].close()
	h.wait(alice, calls.EvCallEnd, 1, byCallID(c.CallID))
	time.Sleep(300 * time.Millisecond) // a few polls: a second fire would end it again
	h.sync(alice, bob)
	evs := alice.named(calls.EvCallEnd, byCallID(c.CallID))
	var end calls.EndEvent
	_ = json.Unmarshal(evs[0].Data, &end)
	if len(evs) != 1 || end.Reason != calls.EndFailed || end.Result != calls.ResultFailed {
		t.Fatalf("alice got %d onCallEnd, the first %+v; want one, failed", len(evs), end)
	}
	hist := h.history("B", "bob")
	if len(hist) != 1 || hist[0].CallID != c.CallID || hist[0].EndReason != calls.EndFailed {
		t.Fatalf("bob's history on B: %+v", hist)
	}
	if a := h.nodes["B"].m.Active(); a != 0 {
		t.Fatalf("%d calls running", a)
	}
}

// connectedCall places a call from alice (on A) to bob, accepted on B, with
// alice's media in the room on A and bob's on B: it has begun.
func (h *callCluster) connectedCall(alice, bob *csession) calls.CallResult {
	h.t.Helper()
	c := h.call("A", alice, "alice", "bob", nil)
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	h.mustOp("B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	if !h.nodes["A"].rooms.connect(c.RoomID, "alice") || !h.nodes["B"].rooms.connect(c.RoomID, "bob") {
		h.t.Fatal("a participant not admitted to the call's room")
	}
	h.wait(alice, calls.EvCallBegin, 1, byCallID(c.CallID))
	return c
}

// TestClusterHangupFromOtherNode: alice's media is in the call's room on A;
// she hangs up from her device on B. A takes her out of its room, which
// ends the call (hangup by alice), and bob gets the call-end invitation
// once.
func TestClusterHangupFromOtherNode(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, alice2, bob := h.connect("A", "alice"), h.connect("B", "alice"), h.connect("B", "bob")
	c := h.connectedCall(alice, bob)
	h.mustOp("B", alice2, "alice", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	h.wait(bob, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.wait(alice, protocol.EvReceiveNewInvitation, 1, callEndInvitation(c.CallID))
	h.eventually("both nodes' rooms released", func() bool {
		return slices.Contains(h.nodes["A"].rooms.releasedRooms(), c.RoomID) && slices.Contains(h.nodes["B"].rooms.releasedRooms(), c.RoomID)
	})
	h.sync(alice, alice2, bob)
	if n := len(alice.named(protocol.EvReceiveNewInvitation, callEndInvitation(c.CallID))); n != 1 {
		t.Fatalf("alice got %d call-end invitations, want 1", n)
	}
	h.record("bob", c.CallID, calls.ResultCompleted, calls.EndHangup, "alice")
	h.noActiveCalls()
}

// TestClusterRestartEndsOnlyOrphanedCalls: a call A and B took part in
// goes on when A restarts (B still runs it); it ends with server_restart
// when A restarts again after B is gone too.
func TestClusterRestartEndsOnlyOrphanedCalls(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	c := h.connectedCall(alice, bob)
	h.nodes["A"].close()
	h.start("A")
	for _, n := range []string{"A", "B"} {
		if r, ok := h.nodes[n].m.Call(c.CallID); !ok || !r.EndedAt.IsZero() {
			t.Fatalf("node %s after A's restart: the call is %+v (found %v); want running", n, r, ok)
		}
		if hist := h.history(n, "bob"); len(hist) != 1 || hist[0].EndedAt != 0 {
			t.Fatalf("bob's history on %s after A's restart: %+v; want the call running", n, hist)
		}
	}
	h.nodes["B"].close()
	h.nodes["A"].close()
	h.start("A")
	if r, ok := h.nodes["A"].m.Call(c.CallID); ok && r.EndedAt.IsZero() {
		t.Fatal("the call still runs after every node that had it restarted or left")
	}
	ci := h.history("A", "alice")
	if len(ci) != 1 || ci[0].CallID != c.CallID || ci[0].EndReason != calls.EndServerRestart || ci[0].CallResult != calls.ResultCompleted {
		t.Fatalf("alice's history after the restart: %+v", ci)
	}
	if a := h.nodes["A"].m.Active(); a != 0 {
		t.Fatalf("%d calls running", a)
	}
}

// stuckEngine is an engine whose CreateInvitation waits for release: its
// node "dies" between registering a call and creating its invitation.
type stuckEngine struct {
	*signaling.Engine
	entered chan string // the invite ID being created
	release chan struct{}
}

func (e *stuckEngine) CreateInvitation(ctx context.Context, a protocol.Actor, spec signaling.InvitationSpec) (string, error) {
	e.entered <- spec.ID
	<-e.release
	return "", protocol.ErrStoreUnavailable
}

// TestClusterCallOfDeadNodeNeverCreated: A registers alice's call to bob,
// then dies before creating its invitation. The registration does not
// hold the two forever: B abandons it after the creation lease, and bob's
// call to alice is then a call of its own (not a glare merge that waits for
// a ring that never comes).
func TestClusterCallOfDeadNodeNeverCreated(t *testing.T) {
	srv := redistest.Start(t)
	stuck := &stuckEngine{entered: make(chan string, 1), release: make(chan struct{})}
	h := &callCluster{t: t, srv: srv, prefix: "cc{" + t.Name() + "}:", cfg: calls.DefaultConfig(), nodes: map[string]*callNode{},
		wrap: map[string]func(*signaling.Engine) calls.Invitations{"A": func(e *signaling.Engine) calls.Invitations {
			stuck.Engine = e
			return stuck
		}}}
	h.cfg.Heartbeat = 0
	h.start("A")
	h.start("B")
	alice := h.connect("B", "alice")
	placed := make(chan error, 1)
	go func() {
		_, err := h.op("A", nil, "alice", calls.OpCall, calls.CallArgs{Invitee: "bob", MediaType: calls.MediaAudio})
		placed <- err
	}()
	callID := <-stuck.entered
	if r, ok := h.nodes["B"].m.Call(callID); !ok || !r.EndedAt.IsZero() {
		t.Fatalf("B does not see the registered call: %+v, %v", r, ok)
	}
	h.nodes["A"].close() // A dies: nothing of it will create nor abandon the call
	close(stuck.release)
	if err := <-placed; err == nil {
		t.Fatal("the call of a dead node was placed")
	}
	h.eventually("the registration abandoned", func() bool {
		_, ok := h.nodes["B"].m.Call(callID)
		return !ok
	})
	c := h.call("B", nil, "bob", "alice", nil)
	if c.Merged || c.CallID == callID {
		t.Fatalf("bob's call merged into the dead registration: %+v", c)
	}
	h.wait(alice, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
}

// TestClusterCallEndsWhenItsNodeDies: alice's connection and media are on
// A, bob's on B; A goes away and alice does not come back. Once
// setup_timeout has passed since A's last heartbeat, B ends the call:
// connection_lost, ended by alice, its duration up to that heartbeat; the
// call-end invitation is kept for alice, who gets it when she reconnects
// (to B).
func TestClusterCallEndsWhenItsNodeDies(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), func(c *calls.Config) {
		c.Heartbeat = 100 * time.Millisecond
		c.SetupTimeout = 300 * time.Millisecond
	})
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	c := h.connectedCall(alice, bob)
	h.wait(bob, calls.EvCallBegin, 1, byCallID(c.CallID))
	time.Sleep(150 * time.Millisecond) // a heartbeat of A after the begin
	h.nodes["A"].close()
	closed := time.Now()
	ends := h.wait(bob, calls.EvCallEnd, 1, byCallID(c.CallID))
	var end calls.EndEvent
	_ = json.Unmarshal(ends[0].Data, &end)
	if end.Reason != calls.EndConnectionLost || end.EndedBy != "alice" || end.Result != calls.ResultCompleted || end.DurationMs <= 0 {
		t.Fatalf("onCallEnd %+v", end)
	}
	hist := h.history("B", "bob")
	if len(hist) != 1 || hist[0].EndReason != calls.EndConnectionLost || hist[0].EndedAt > closed.UnixMilli() ||
		abs(hist[0].DurationMs-(hist[0].EndedAt-hist[0].BeganAt)) > 1 {
		t.Fatalf("bob's history: %+v (A closed at %d)", hist, closed.UnixMilli())
	}
	alice2 := h.connect("B", "alice")
	h.wait(alice2, protocol.EvReceiveNewInvitation, 1, callEndInvitation(c.CallID))
	h.wait(alice2, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.noActiveCalls()
}

func abs(n int64) int64 { return max(n, -n) }

// TestClusterGroupCall: ann on A rings bob and carol in a group call; bob
// accepts on B; dan, not rung, finds the call on B with getGroupCalls and
// joins it there; inviteUser on B skips those already in it; the call
// begins with media on both nodes and ends when fewer than two remain.
func TestClusterGroupCall(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	ann, bob, carol, dan := h.connect("A", "ann"), h.connect("B", "bob"), h.connect("A", "carol"), h.connect("B", "dan")
	gid := h.mustOp("A", ann, "ann", protocol.OpCreateGroup, protocol.CreateGroupArgs{Name: "team", MemberList: []string{"bob", "carol", "dan"}}).(protocol.GroupResult).GroupID
	c := h.mustOp("A", ann, "ann", calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"bob", "carol"}, MediaType: calls.MediaAudio}).(calls.CallResult)
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	h.wait(carol, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	h.mustOp("B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	list := h.mustOp("B", dan, "dan", calls.OpGetGroupCalls, protocol.GroupIDArgs{GroupID: gid}).(calls.GroupCallsResult)
	if len(list.Calls) != 1 || list.Calls[0].CallID != c.CallID || !slices.Equal(list.Calls[0].Participants, []string{"ann", "bob"}) {
		t.Fatalf("getGroupCalls on B: %+v", list)
	}
	h.mustOp("B", dan, "dan", calls.OpJoinCall, calls.CallIDArgs{CallID: c.CallID})
	iu := h.mustOp("B", bob, "bob", calls.OpInviteUser, calls.InviteUserArgs{CallID: c.CallID, UserList: []string{"carol", "dan"}}).(calls.InviteUserResult)
	if len(iu.UserList) != 0 {
		t.Fatalf("inviteUser rang %v, who are ringing or in the call", iu.UserList)
	}
	if !h.nodes["A"].rooms.connect(c.RoomID, "ann") || !h.nodes["B"].rooms.connect(c.RoomID, "bob") || !h.nodes["B"].rooms.connect(c.RoomID, "dan") {
		t.Fatal("a participant not admitted to the call's room")
	}
	h.wait(dan, calls.EvCallBegin, 1, byCallID(c.CallID))
	h.mustOp("A", carol, "carol", protocol.OpReject, protocol.InviteIDArgs{InviteID: c.InviteID})
	h.mustOp("B", bob, "bob", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	if r, ok := h.nodes["A"].m.Call(c.CallID); !ok || !r.EndedAt.IsZero() {
		t.Fatalf("the call ended with two left: %+v", r)
	}
	h.mustOp("A", ann, "ann", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	h.wait(dan, calls.EvCallEnd, 1, byCallID(c.CallID))
	h.record("dan", c.CallID, calls.ResultCompleted, calls.EndAllLeft, "ann")
	h.noActiveCalls()
}

// TestClusterMediaNodeLostCallWaits: the media node of a running call lets
// its participants go (it shuts down, or loses the room: MemberLeft with
// rooms.LeaveMediaNodeLost on the node of their room). The call is not
// ended: alice enters again on the other node (admitted) and it goes on
// past setup_timeout. Then bob's media node lets him go and he does not
// come back: once setup_timeout has passed, the lost deadline (fired by one
// node) ends the call once: connection_lost, ended by bob at the time he
// was lost, with its duration, the record the same from both nodes.
func TestClusterMediaNodeLostCallWaits(t *testing.T) {
	const setup = 500 * time.Millisecond
	h := newCallCluster(t, redistest.Start(t), func(c *calls.Config) { c.SetupTimeout = setup })
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	c := h.connectedCall(alice, bob)
	if !h.nodes["A"].rooms.leave(c.RoomID, "alice", rooms.LeaveMediaNodeLost) {
		t.Fatal("alice not in the room on A")
	}
	time.Sleep(setup / 2)
	if !h.nodes["B"].rooms.connect(c.RoomID, "alice") {
		t.Fatal("alice, let go by her media node, not admitted again (on B)")
	}
	time.Sleep(2 * setup) // past the lost deadline, had it stayed armed
	if r, ok := h.nodes["A"].m.Call(c.CallID); !ok || !r.EndedAt.IsZero() {
		t.Fatalf("the call ended although alice came back: %+v", r)
	}

	before := time.Now()
	if !h.nodes["B"].rooms.leave(c.RoomID, "bob", rooms.LeaveMediaNodeLost) {
		t.Fatal("bob not in the room on B")
	}
	after := time.Now()
	if r, _ := h.nodes["A"].m.Call(c.CallID); !r.EndedAt.IsZero() {
		t.Fatal("the call ended at once when bob's media node let him go")
	}
	ends := h.wait(alice, calls.EvCallEnd, 1, byCallID(c.CallID))
	// The lost deadline is armed at the loss, between before and after
	// (leave may take long on a loaded machine), in whole ms: measured
	// from before (its ms), the end cannot come earlier than setup.
	if waited := time.Since(before.Truncate(time.Millisecond)); waited < setup {
		t.Fatalf("the call ended %v after bob was lost, before setup_timeout %v", waited, setup)
	}
	var end calls.EndEvent
	_ = json.Unmarshal(ends[0].Data, &end)
	if end.Reason != calls.EndConnectionLost || end.EndedBy != "bob" || end.Result != calls.ResultCompleted || end.DurationMs <= 0 {
		t.Fatalf("onCallEnd %+v", end)
	}
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, callEndInvitation(c.CallID))
	time.Sleep(300 * time.Millisecond) // a few polls: a second fire would end it again
	h.sync(alice, bob)
	for _, s := range []*csession{alice, bob} {
		if n := len(s.named(calls.EvCallEnd, byCallID(c.CallID))); n != 1 {
			t.Fatalf("%s got %d onCallEnd, want 1", s.user, n)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		ci := h.record(u, c.CallID, calls.ResultCompleted, calls.EndConnectionLost, "bob")
		if ci.EndedAt < before.UnixMilli() || ci.EndedAt > after.UnixMilli() || ci.DurationMs != end.DurationMs ||
			abs(ci.DurationMs-(ci.EndedAt-ci.BeganAt)) > 1 {
			t.Fatalf("%s's record %+v: want the end when bob was lost (%d-%d), duration %d ms", u, ci, before.UnixMilli(), after.UnixMilli(), end.DurationMs)
		}
	}
	h.noActiveCalls()
}

// roundTrips counts the round trips (a command, or a pipeline) of calls
// whose ctx carries roundTripsKey.
// It also counts, whatever their ctx, the commands naming key (when set).
type roundTrips struct {
	n     atomic.Int64
	key   atomic.Pointer[string]
	keyed atomic.Int64
}

type roundTripsKey struct{}

func (r *roundTrips) countKeyed(cmds ...redis.Cmder) {
	k := r.key.Load()
	if k == nil {
		return
	}
	for _, c := range cmds {
		if slices.ContainsFunc(c.Args(), func(a any) bool { s, ok := a.(string); return ok && strings.HasSuffix(s, *k) }) {
			r.keyed.Add(1)
		}
	}
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(roundTripsKey{}) != nil && cmd.Name() != "hello" {
			r.n.Add(1)
		}
		r.countKeyed(cmd)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(roundTripsKey{}) != nil && len(cmds) > 0 && cmds[0].Name() != "client" && cmds[0].Name() != "hello" {
			r.n.Add(1)
		}
		r.countKeyed(cmds...)
		return next(ctx, cmds)
	}
}

// TestClusterAnswerRoundTrips: the calls manager's look at an
// invitation's call goes with the engine's first read (ClusterGate): an
// accept of a plain invitation through calls' op is the engine's 2 round
// trips (it was 3: a GET of calls:inv first), a cancel likewise, and a
// call's accept reads the call on the engine's connection (5 round trips
// with the call's own step after it, was 6). The note of a plain
// invitation's end then reads nothing (it was a WATCH, GET and UNWATCH).
func TestClusterAnswerRoundTrips(t *testing.T) {
	h := newCallCluster(t, redistest.Start(t), nil)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	rtA, rtB := h.nodes["A"].rts, h.nodes["B"].rts
	counted := context.WithValue(context.Background(), roundTripsKey{}, true)
	measure := func(rt *roundTrips, what string, max int64, op func() error) {
		t.Helper()
		before := rt.n.Load()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		n := rt.n.Load() - before
		t.Logf("%s: %d round trips", what, n)
		if n > max {
			t.Errorf("%s took %d round trips; the target is %d", what, n, max)
		}
	}
	invite := func() string {
		res := h.mustOp("A", alice, "alice", protocol.OpInvite, protocol.InviteArgs{Invitee: "bob", Timeout: ptr(30)})
		r, ok := res.(protocol.InviteResult)
		if !ok {
			t.Fatalf("invite: %#v", res)
		}
		id := r.InviteID
		h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(id))
		return id
	}
	id := invite()
	key := "calls:inv:" + id
	rtB.key.Store(&key)
	measure(rtB, "plain accept", 2, func() error {
		_, err := h.opIn(counted, "B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: id})
		return err
	})
	h.wait(alice, protocol.EvInviteeAccepted, 1, byCallID(id))
	// The note of the invitation's end (B's calls manager learns it on
	// its notes goroutine; here also at once) reads nothing: the accept's
	// look found no call. Only the accept's own GET named the key.
	h.nodes["B"].m.InvitationNote(signaling.InvitationNote{InviteID: id, Inviter: "alice", Invitees: []string{"bob"}, Ended: true,
		Changes: []signaling.InviteeChange{{UserID: "bob", State: signaling.StateAccepted}}})
	if n := rtB.keyed.Load(); n != 1 {
		t.Errorf("%d commands named %s on B, want 1 (the accept's look)", n, key)
	}
	rtB.key.Store(nil)
	id = invite()
	measure(rtA, "plain cancel", 2, func() error {
		_, err := h.opIn(counted, "A", alice, "alice", protocol.OpCancel, protocol.InviteIDArgs{InviteID: id})
		return err
	})
	h.wait(bob, protocol.EvInvitationCancelled, 1, byCallID(id))

	c := h.call("A", alice, "alice", "bob", nil)
	h.wait(bob, protocol.EvReceiveNewInvitation, 1, byCallID(c.InviteID))
	measure(rtB, "call accept", 5, func() error {
		_, err := h.opIn(counted, "B", bob, "bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
		return err
	})
	h.wait(alice, protocol.EvInviteeAccepted, 1, byCallID(c.InviteID))
	h.mustOp("A", alice, "alice", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	h.wait(bob, calls.EvCallEnd, 1, byCallID(c.CallID))
}
