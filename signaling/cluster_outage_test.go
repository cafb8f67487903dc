package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// A Redis outage under load (signaling/CLUSTER-DESIGN.md "Redis outage"):
// redis-server is killed (SIGKILL) while two nodes serve a steady load of
// invitations, and restarted, once without persistence (its data lost) and
// once with appendonly yes and appendfsync always (its data kept).

const (
	// outageOpBound is the deadline of each operation of the load.
	outageOpBound = 2 * time.Second
	// outageOpSlack is how much an operation may outlive its deadline.
	outageOpSlack = 500 * time.Millisecond
	// outageMin is the least time Redis stays down: past node_ttl (600 ms
	// in the harness), so that the nodes' keys expire meanwhile.
	outageMin = 1500 * time.Millisecond
	// recoveryBound is how long after the restart the cluster must be
	// back (ops succeed, events route both ways) at the latest.
	recoveryBound = 10 * time.Second
	// outageWorkers is the number of goroutines of the load.
	outageWorkers = 4
	// outagePace is each worker's pace (one operation per tick at most).
	outagePace = 25 * time.Millisecond
	// answeredTimeout and ringingTimeout are the load's invitation
	// timeouts (seconds): of those it answers, of those it lets time out.
	answeredTimeout = 5
	ringingTimeout  = 1
)

// phases of the outage, as the load sees them.
const (
	phaseUp = iota
	phaseDown
	phaseBack
)

func TestClusterRedisRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		persist bool
		opts    []redistest.Option
	}{
		{"without persistence", false, []redistest.Option{redistest.NoPersistence()}},
		{"with appendonly and fsync always", true, []redistest.Option{redistest.FsyncAlways()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runRedisRestart(t, tc.persist, tc.opts)
		})
	}
}

// countingHandler counts the log records with a message of interest, and
// passes every record on.
type countingHandler struct {
	slog.Handler
	counts *sync.Map // message → *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if v, ok := h.counts.Load(r.Message); ok {
		v.(*atomic.Int64).Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.counts}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.counts}
}

// outageInvite is an invitation the load sent successfully.
type outageInvite struct {
	inviter *session
	started time.Time
}

// outageLoad is the load: its workers' invitations and what their
// operations returned.
type outageLoad struct {
	t     *testing.T
	h     *clusterHarness
	phase atomic.Int32

	mu          sync.Mutex
	invites     map[string]outageInvite // sent successfully
	downFails   map[string]int          // node → operations failed with store_unavailable while Redis was down
	codes       map[string]int          // "op: outcome" → count
	slowest     time.Duration
	roundsAfter []int // per worker: rounds begun after the restart
}

// call runs op on node with a deadline of outageOpBound and checks what
// it returned against allowed (nil is always allowed): while Redis is down
// (the whole call), only store_unavailable.
func (l *outageLoad) call(node, op string, allowed []*protocol.Error, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), outageOpBound)
	defer cancel()
	before := l.phase.Load()
	start := time.Now()
	err := f(ctx)
	took := time.Since(start)
	after := l.phase.Load()
	outcome := "ok"
	var pe *protocol.Error
	if errors.As(err, &pe) {
		outcome = pe.Reason
	} else if err != nil {
		outcome = err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.codes[op+": "+outcome]++
	l.slowest = max(l.slowest, took)
	if took > outageOpBound+outageOpSlack {
		l.t.Errorf("%s on %s took %v (deadline %v): %v", op, node, took, outageOpBound, err)
	}
	if before == phaseDown && after == phaseDown {
		if !errors.Is(err, protocol.ErrStoreUnavailable) {
			l.t.Errorf("%s on %s while Redis was down: %v, want %s", op, node, err, protocol.ErrStoreUnavailable.Reason)
		} else {
			l.downFails[node]++
		}
		return err
	}
	if err != nil && !slices.ContainsFunc(allowed, func(want *protocol.Error) bool { return errors.Is(err, want) }) {
		l.t.Errorf("%s on %s: unexpected %v", op, node, err)
	}
	return err
}

// worker sends invitations from inviter (on node from) until stop: in
// turn one that invitee (on node to) accepts, one it rejects, one that
// rings it, is modified, and times out, one to an offline user that times
// out, one that the inviter cancels. An answer or a cancel that fails with
// store_unavailable is tried again.
func (l *outageLoad) worker(i int, from string, inviter *session, to string, invitee *session, offline string, stop <-chan struct{}) {
	h := l.h
	tick := time.NewTicker(outagePace)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-stop:
			return false
		case <-tick.C:
			return true
		}
	}
	gone := []*protocol.Error{protocol.ErrStoreUnavailable, protocol.ErrInvalidInviteID}
	for round := 0; wait(); round++ {
		if l.phase.Load() == phaseBack {
			l.mu.Lock()
			l.roundsAfter[i]++
			l.mu.Unlock()
		}
		kind := round % 5
		args := protocol.InviteArgs{Invitee: invitee.user, Timeout: secs(answeredTimeout)}
		switch kind {
		case 2:
			args.Timeout = secs(ringingTimeout)
		case 3:
			args.Invitee, args.Timeout = offline, secs(ringingTimeout)
		}
		var id string
		started := time.Now()
		if l.call(from, "invite", []*protocol.Error{protocol.ErrStoreUnavailable}, func(ctx context.Context) error {
			var err error
			id, err = h.nodes[from].Invite(ctx, as(inviter), args)
			return err
		}) != nil {
			continue
		}
		l.mu.Lock()
		l.invites[id] = outageInvite{inviter: inviter, started: started}
		l.mu.Unlock()
		op, node := "", to
		var end func(context.Context) error
		switch kind {
		case 0:
			op = "accept"
			end = func(ctx context.Context) error {
				return h.nodes[to].Accept(ctx, as(invitee), protocol.InviteIDArgs{InviteID: id})
			}
		case 1:
			op = "reject"
			end = func(ctx context.Context) error {
				return h.nodes[to].Reject(ctx, as(invitee), protocol.InviteIDArgs{InviteID: id})
			}
		case 2:
			l.call(from, "modify", gone, func(ctx context.Context) error {
				return h.nodes[from].ModifyInvitation(ctx, as(inviter), protocol.InviteIDArgs{InviteID: id, Data: "v2"})
			})
			continue
		case 3:
			continue
		case 4:
			op, node = "cancel", from
			end = func(ctx context.Context) error {
				return h.nodes[from].Cancel(ctx, as(inviter), protocol.InviteIDArgs{InviteID: id})
			}
		}
		for {
			err := l.call(node, op, gone, end)
			if !errors.Is(err, protocol.ErrStoreUnavailable) || !wait() {
				break
			}
		}
	}
}

// ends reports whether f, received by a party of a one-to-one invitation,
// tells that the invitation ended: the inviter hears of an answer or the
// timeout, the invitee of the cancel (the inviter, as the actor, gets a
// reply only).
func ends(inviter bool, f protocol.EventFrame) bool {
	if !inviter {
		return f.Event == protocol.EvInvitationCancelled
	}
	return f.Event == protocol.EvInviteeAccepted || f.Event == protocol.EvInviteeRejected || f.Event == protocol.EvInvitationTimeout
}

func inviteIDOf(f protocol.EventFrame) string {
	var d struct {
		InviteID string `json:"inviteID"`
	}
	raw, _ := f.Data.(json.RawMessage)
	_ = json.Unmarshal(raw, &d)
	return d.InviteID
}

// events returns a copy of what s received.
func (s *session) events() []protocol.EventFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.evs)
}

// waitEvent waits until s has an event name of invitation id, or d passes.
func waitEvent(s *session, name, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if slices.ContainsFunc(s.events(), func(f protocol.EventFrame) bool { return f.Event == name && inviteIDOf(f) == id }) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func runRedisRestart(t *testing.T, persist bool, opts []redistest.Option) {
	srv := redistest.Start(t, opts...)
	counts := &sync.Map{}
	const deadMsg = "node dead; cleaning up"
	counts.Store(deadMsg, &atomic.Int64{})
	h := newClusterHarnessLog(t, srv, slog.New(countingHandler{testLogger().Handler(), counts}))
	nodes := []string{"A", "B"}

	// The parties, connected before the outage.
	l := &outageLoad{t: t, h: h, invites: map[string]outageInvite{}, downFails: map[string]int{}, codes: map[string]int{},
		roundsAfter: make([]int, outageWorkers)}
	type party struct {
		node string
		s    *session
	}
	var parties []party
	connect := func(node, user string) *session {
		s := h.connect(node, user)
		parties = append(parties, party{node, s})
		return s
	}
	inviters, invitees := make([]*session, outageWorkers), make([]*session, outageWorkers)
	for i := range outageWorkers {
		from, to := nodes[i%2], nodes[(i+1)%2]
		inviters[i] = connect(from, fmt.Sprintf("inviter%d", i))
		invitees[i] = connect(to, fmt.Sprintf("invitee%d", i))
		h.nodes[from].Detach(h.connect(from, fmt.Sprintf("offline%d", i))) // known, offline
	}
	probe := map[string]*session{"A": connect("A", "probeA"), "B": connect("B", "probeB")}
	leaver := h.connect("A", "leaver") // leaves while Redis is down

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range outageWorkers {
		from, to := nodes[i%2], nodes[(i+1)%2]
		wg.Go(func() { l.worker(i, from, inviters[i], to, invitees[i], fmt.Sprintf("offline%d", i), stop) })
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopLoad()

	// Let the load run, with invitations pending, then kill Redis.
	h.eventually(func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.invites) < 4*outageWorkers {
			return fmt.Sprintf("only %d invitations sent before the outage", len(l.invites))
		}
		return ""
	})
	srv.Kill()
	killed := time.Now()
	l.phase.Store(phaseDown)

	// While it is down: a new connection is refused with store_unavailable,
	// a connection that closes is let go; both within a bound.
	late := &session{user: "latecomer"}
	start := time.Now()
	if err := h.nodes["B"].Attach(context.Background(), late); !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Errorf("attach while Redis is down: %v, want %s", err, protocol.ErrStoreUnavailable.Reason)
	}
	if took := time.Since(start); took > outageOpBound+outageOpSlack {
		t.Errorf("attach while Redis is down took %v", took)
	}
	start = time.Now()
	h.nodes["A"].Detach(leaver)
	if took := time.Since(start); took > outageOpBound+outageOpSlack {
		t.Errorf("detach while Redis is down took %v", took)
	}
	// Down for at least outageMin, and until the load failed on each node.
	h.eventually(func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		if time.Since(killed) < outageMin {
			return "outage too short"
		}
		for _, n := range nodes {
			if l.downFails[n] < 3 {
				return fmt.Sprintf("only %d operations failed on %s while Redis was down", l.downFails[n], n)
			}
		}
		return ""
	})
	l.phase.Store(phaseBack)
	srv.Restart()
	restarted := time.Now()
	t.Logf("redis-server down for %v", restarted.Sub(killed).Round(time.Millisecond))

	// Recovery: an invitation from each node rings the party on the other
	// one, which has not reconnected.
	type probeResult struct {
		firstOK, routed time.Duration
		err             string
	}
	results := map[string]*probeResult{}
	var pwg sync.WaitGroup
	var pmu sync.Mutex
	for _, from := range nodes {
		to := map[string]string{"A": "B", "B": "A"}[from]
		r := &probeResult{}
		results[from] = r
		pwg.Go(func() {
			a := probe[from]
			deadline := restarted.Add(recoveryBound)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), outageOpBound)
				id, err := h.nodes[from].Invite(ctx, as(a), protocol.InviteArgs{Invitee: probe[to].user, Timeout: secs(30)})
				cancel()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				pmu.Lock()
				if r.firstOK == 0 {
					r.firstOK = time.Since(restarted)
				}
				pmu.Unlock()
				rang := waitEvent(probe[to], protocol.EvReceiveNewInvitation, id, 300*time.Millisecond)
				if rang {
					pmu.Lock()
					r.routed = time.Since(restarted)
					pmu.Unlock()
				}
				for time.Now().Before(deadline) {
					ctx, cancel := context.WithTimeout(context.Background(), outageOpBound)
					err := h.nodes[from].Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id})
					cancel()
					if err == nil || errors.Is(err, protocol.ErrInvalidInviteID) {
						break
					}
				}
				if rang {
					return
				}
			}
			pmu.Lock()
			r.err = fmt.Sprintf("no invitation from %s rang %s within %v of the restart", from, to, recoveryBound)
			pmu.Unlock()
		})
	}
	pwg.Wait()
	var recovery time.Duration
	for _, from := range nodes {
		r := results[from]
		if r.err != "" {
			t.Fatal(r.err)
		}
		t.Logf("after the restart: ops succeed on %s after %v; its events ring the other node after %v",
			from, r.firstOK.Round(time.Millisecond), r.routed.Round(time.Millisecond))
		recovery = max(recovery, r.routed)
	}
	recovered := time.Now()
	t.Logf("recovery time (restart to events routed both ways): %v", recovery.Round(time.Millisecond))

	// Timers: a new invitation times out from the poller, on time.
	sent := time.Now()
	ctx2, cancel := context.WithTimeout(context.Background(), outageOpBound)
	id, err := h.nodes["A"].Invite(ctx2, as(probe["A"]), protocol.InviteArgs{Invitee: "probeB", Timeout: secs(1)})
	cancel()
	if err != nil {
		t.Fatalf("invite after recovery: %v", err)
	}
	if !waitEvent(probe["A"], protocol.EvInvitationTimeout, id, time.Second+clusterWait) {
		t.Fatal("an invitation sent after recovery did not time out")
	}
	t.Logf("an invitation sent after recovery timed out %v after its deadline", (time.Since(sent) - time.Second).Round(time.Millisecond))

	// The load goes on for a while after recovery, then stops.
	h.eventually(func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, n := range l.roundsAfter {
			if n < 8 {
				return fmt.Sprintf("worker %d: only %d rounds after the restart", i, n)
			}
		}
		return ""
	})
	stopLoad()

	// The connections stayed attached, and the registry has them again
	// (and not the one that left during the outage); they are known.
	rc := srv.Client()
	for _, p := range parties {
		if n := h.nodes[p.node].Online(p.s.user); n != 1 {
			t.Errorf("%s has %d connections on %s, want 1", p.s.user, n, p.node)
		}
	}
	h.eventually(func() string {
		for _, p := range parties {
			if n, err := rc.HGet(ctx, h.prefix+"conn:"+p.s.user, p.node).Int(); err != nil || n != 1 {
				return fmt.Sprintf("registry: %s on %s: %d, %v", p.s.user, p.node, n, err)
			}
			if ok, err := rc.SIsMember(ctx, h.prefix+"sig:users", p.s.user).Result(); err != nil || !ok {
				return fmt.Sprintf("%s, connected, is not known: %v", p.s.user, err)
			}
		}
		if n, err := rc.HLen(ctx, h.prefix+"conn:leaver").Result(); err != nil || n != 0 {
			return fmt.Sprintf("registry: leaver, gone during the outage, still has %d entries (%v)", n, err)
		}
		return ""
	})
	if n := h.nodes["A"].Online("leaver") + h.nodes["B"].Online("latecomer"); n != 0 {
		t.Errorf("%d connections left over from the outage", n)
	}

	// Events from each node reach every party on both nodes.
	for _, from := range nodes {
		var users []string
		for _, p := range parties {
			users = append(users, p.s.user)
		}
		marker := "after-" + from
		if err := h.nodes[from].SendEvent(ctx, users, marker, struct{}{}, false); err != nil {
			t.Fatalf("event from %s after recovery: %v", from, err)
		}
		h.eventually(func() string {
			for _, p := range parties {
				if !p.s.has(marker) {
					return fmt.Sprintf("%s on %s: no event from %s after recovery", p.s.user, p.node, from)
				}
			}
			return ""
		})
	}

	// Every invitation that must end ends once at its inviter: with
	// persistence, all those sent; without, those sent after recovery.
	l.mu.Lock()
	invites := l.invites
	l.mu.Unlock()
	must := map[string]outageInvite{}
	for id, inv := range invites {
		if persist || inv.started.After(recovered) {
			must[id] = inv
		}
	}
	// The parties' connections, inviters first, and each one's next
	// connection once the load is over.
	ps := slices.Concat(inviters, invitees)
	count := func(out map[string]int, ss []*session) {
		for i, s := range ss {
			for _, f := range s.events() {
				if ends(i < outageWorkers, f) {
					out[inviteIDOf(f)]++
				}
			}
		}
	}
	outcomes := func() map[string]int {
		out := map[string]int{}
		count(out, ps)
		return out
	}
	settle := time.Now().Add(answeredTimeout*time.Second + 2*clusterWait)
	var missing []string
	for {
		got := outcomes()
		missing = missing[:0]
		for id := range must {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(settle) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// What a connection did not get live was kept: each party's next
	// connection gets it (counted, to tell which).
	var next []*session
	for i, s := range ps {
		node := nodes[(i%outageWorkers)%2]
		if i >= outageWorkers {
			node = nodes[(i%outageWorkers+1)%2]
		}
		h.nodes[node].Detach(s)
		next = append(next, h.connect(node, s.user))
	}
	kept := map[string]int{}
	count(kept, next)
	if len(missing) > 0 {
		slices.Sort(missing)
		gotKept := 0
		for _, id := range missing {
			gotKept += kept[id]
		}
		t.Errorf("%d of %d invitations never ended live for their parties (%d of them were kept for their next connection): %s",
			len(missing), len(must), gotKept, strings.Join(missing[:min(len(missing), 10)], " "))
	}
	for id, n := range outcomes() {
		if n+kept[id] > 1 {
			t.Errorf("invitation %s ended %d times (%d live)", id, n+kept[id], n)
		}
	}
	// No device got an event of an invitation twice.
	for _, p := range parties {
		seen := map[string]int{}
		for _, f := range p.s.events() {
			if id := inviteIDOf(f); id != "" {
				seen[f.Event+" "+id]++
			}
		}
		for k, n := range seen {
			if n > 1 {
				t.Errorf("%s got %s %d times", p.s.user, k, n)
			}
		}
	}
	// Nobody declared a node dead: both were alive all along.
	if v, _ := counts.Load(deadMsg); v.(*atomic.Int64).Load() != 0 {
		t.Errorf("a node was declared dead %d times during a Redis outage", v.(*atomic.Int64).Load())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var summary []string
	for k, n := range l.codes {
		summary = append(summary, fmt.Sprintf("%s=%d", k, n))
	}
	slices.Sort(summary)
	t.Logf("load: %d invitations sent, %d must end; outcomes %s; slowest op %v",
		len(invites), len(must), strings.Join(summary, ", "), l.slowest.Round(time.Millisecond))
}
