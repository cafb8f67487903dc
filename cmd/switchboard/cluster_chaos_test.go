package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestClusterChaosKillNode (issue 12, "Chaos"): one node is SIGKILLed in
// the middle of a load spread over the three nodes. The load is made of
// kinds (chaosLoad), each with its parties on the victim, on the
// survivors and offline; today invitations one-to-one, to offline users
// and in groups (calls add theirs as another chaosLoad). Each kind acts
// before the kill, while the node dies (requests on its connections fail:
// what they did is unknown and settled after), and once its parties are
// back. Checked: every invitation that got a successful reply reaches
// exactly the one final outcome its script gave each invitee (accepted,
// rejected, cancelled, timeout), seen once by each of its parties,
// survivors and reconnected alike; invitations still pending ring again on
// the new connections and can be answered there (nothing stored is lost),
// and an ended one is not left behind in Redis as live;
// the timeouts fire from the survivors at most maxTimeoutLateness after
// their deadline (measured and logged).
//
// The parties of the dead node reconnect once a survivor has cleaned it up
// (a party that reconnects sooner gets the events decided in between
// live at the cleanup: TestClusterDeadNodeEventsToLiveConnection in
// signaling covers that case). Delivery
// is at least once where the dead node's last batch of events had been
// written to a connection but not yet trimmed from its stream: such a copy
// may reach the reconnected party again; a duplicate is tolerated only
// then (the old copy arrived within chaosDupWindow of the kill), and
// logged.
func TestClusterChaosKillNode(t *testing.T) {
	t0 := time.Now()
	c := startCluster(t)
	ch := &chaos{c: c, victim: 2}
	phases := func(what string) { t.Logf("%v: %s", time.Since(t0).Round(time.Millisecond), what) }
	phases("cluster started")
	loads := []chaosLoad{
		&invitationLoad{name: "one-to-one", build: oneToOneInvitations},
		&invitationLoad{name: "offline invitees", build: offlineInvitations},
		&invitationLoad{name: "group", build: groupInvitations},
	}
	for _, l := range loads {
		l.setup(t, ch)
	}
	for _, l := range loads {
		l.before(t, ch)
	}
	phases("load set up and started")
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterWait)
	defer cancel()
	ch.start = time.Now()
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Go(func() { l.during(ctx, t, ch) })
	}
	time.Sleep(time.Until(ch.start.Add(chaosKillAt))) // pacing: the kill lands mid-load
	ch.killed = time.Now()
	c.kill(t, ch.victim)
	wg.Wait()
	c.cleanedUp(t, ch.victim)
	t.Logf("node %s killed %v into the load; cleaned up by a survivor %v later",
		c.nodeID(ch.victim), chaosKillAt, time.Since(ch.killed).Round(time.Millisecond))
	// The short timeouts fire while the victim's parties are away.
	time.Sleep(time.Until(ch.start.Add(chaosShort*time.Second + chaosAwayMargin))) // pacing
	ch.reconnect(t)
	phases("parties reconnected")
	for _, l := range loads {
		l.after(ctx, t, ch)
	}
	phases("after the kill: settled")
	for _, l := range loads {
		l.await(ctx, t, ch)
	}
	time.Sleep(chaosQuiet) // late duplicates or strays
	for _, l := range loads {
		l.check(t, ch)
	}
	phases("checked")
	ch.reportLateness(t)
}

const (
	// chaosKillAt is when, after the during phase begins, the victim is
	// killed; chaosDuring is how long that phase spreads its requests.
	chaosKillAt = 150 * time.Millisecond
	chaosDuring = 300 * time.Millisecond
	// The invitations' timeouts (seconds): short ones fire while the
	// victim's parties are away, long ones once they are back, and the
	// others are answered first.
	chaosShort, chaosLong, chaosAnswered = 1, 3, 60
	// chaosDupWindow: an event the dead node wrote to a connection this
	// close to the kill may be delivered again after the reconnection.
	chaosDupWindow = 250 * time.Millisecond
	// chaosQuiet is how long the check waits, after every expected event
	// arrived, for duplicates or strays.
	chaosQuiet = 500 * time.Millisecond
	// chaosAwayMargin: the parties of the dead node are away until this
	// long after the short timeouts' deadlines (and its cleanup).
	chaosAwayMargin = 300 * time.Millisecond
)

// chaosLoad is one kind of load of the chaos test. setup makes its
// parties (and groups); before starts it (every reply in) before the
// kill; during runs concurrently with the kill, spreading its requests
// over chaosDuring; after runs once the dead node was cleaned up and its
// parties reconnected (to survivors), and the offline parties connected:
// it settles what the kill interrupted and does what is left; await waits
// for the outcomes, and check, chaosQuiet later, checks them.
type chaosLoad interface {
	setup(t *testing.T, ch *chaos)
	before(t *testing.T, ch *chaos)
	during(ctx context.Context, t *testing.T, ch *chaos)
	after(ctx context.Context, t *testing.T, ch *chaos)
	await(ctx context.Context, t *testing.T, ch *chaos)
	check(t *testing.T, ch *chaos)
}

// chaos is the state of one chaos run.
type chaos struct {
	c      *testCluster
	victim int // the slot killed
	start  time.Time
	killed time.Time

	mu      sync.Mutex
	parties []*chaosParty
	late    []time.Duration // timeouts delivered live: how late after their deadline
}

// survivor is the k-th surviving slot (k any number: taken in turn).
func (ch *chaos) survivor(k int) int { return (ch.victim + 1 + k%(clusterNodes-1)) % clusterNodes }

// party is a new user connected to slot (attached), or, with slot -1, a
// known user with no connection (it connected once, then left) until it
// connects to a survivor in the after phase.
func (ch *chaos) party(t *testing.T, name string, slot int) *chaosParty {
	t.Helper()
	p := &chaosParty{user: ch.c.user(name), slot: slot, more: make(chan struct{})}
	ch.mu.Lock()
	ch.parties = append(ch.parties, p)
	ch.mu.Unlock()
	if slot < 0 {
		once := ch.c.dial(t, ch.survivor(len(ch.parties)), p.user)
		attached(t, once)
		_ = once.Close()
		return p
	}
	p.connect(t, ch.c, slot)
	return p
}

// reconnect connects the parties of the dead node and the offline ones to
// the survivors, in turn.
func (ch *chaos) reconnect(t *testing.T) {
	t.Helper()
	ch.mu.Lock()
	ps := slices.Clone(ch.parties)
	ch.mu.Unlock()
	for i, p := range ps {
		if ch.away(p) {
			p.connect(t, ch.c, ch.survivor(i))
		}
	}
}

// away reports whether p was away (on the dead node, or offline) until
// reconnect.
func (ch *chaos) away(p *chaosParty) bool { return p.slot == ch.victim || p.slot < 0 }

func (ch *chaos) reportLateness(t *testing.T) {
	ch.mu.Lock()
	late := slices.Clone(ch.late)
	ch.mu.Unlock()
	if len(late) == 0 {
		t.Fatal("no timeout was delivered live: lateness not measured")
	}
	slices.Sort(late)
	t.Logf("%d timeouts delivered live after the kill: lateness min %v, median %v, max %v (bound %v)", len(late),
		late[0].Round(time.Millisecond), late[len(late)/2].Round(time.Millisecond), late[len(late)-1].Round(time.Millisecond), maxTimeoutLateness)
	if late[len(late)-1] > maxTimeoutLateness {
		t.Errorf("a timeout fired %v late, want at most %v", late[len(late)-1], maxTimeoutLateness)
	}
}

// chaosParty is one user of the chaos test, with its connections in
// order (the last is the current one) and every event they got.
type chaosParty struct {
	user string
	slot int // the slot of its first connection; -1: offline at first

	mu     sync.Mutex
	conns  []*client.Client
	opened []time.Time
	evs    []chaosEvent
	more   chan struct{} // closed, and replaced, at each event
}

// chaosEvent is an event a party got, with its connection and arrival.
type chaosEvent struct {
	client.Event
	conn int
	at   time.Time
}

// connect dials p's user on slot and records its events from a goroutine
// that ends with the connection.
func (p *chaosParty) connect(t *testing.T, c *testCluster, slot int) {
	t.Helper()
	cl := c.dial(t, slot, p.user)
	attached(t, cl)
	p.mu.Lock()
	conn := len(p.conns)
	p.conns, p.opened = append(p.conns, cl), append(p.opened, time.Now())
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := cl.Next(context.Background())
			if err != nil {
				return
			}
			p.mu.Lock()
			p.evs = append(p.evs, chaosEvent{Event: ev, conn: conn, at: time.Now()})
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = cl.Close(); <-done })
}

// last is the index of p's current connection.
func (p *chaosParty) last() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) - 1
}

// openedAt is when p's connection i was opened.
func (p *chaosParty) openedAt(i int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opened[i]
}

// cur is p's current connection.
func (p *chaosParty) cur() *client.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[len(p.conns)-1]
}

// waitFor waits until cond holds for p's events.
func (p *chaosParty) waitFor(ctx context.Context, what string, cond func([]chaosEvent) bool) error {
	for {
		p.mu.Lock()
		ok, more := cond(p.evs), p.more
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-more:
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s: %w", p.user, what, ctx.Err())
		}
	}
}

// about returns p's events of invitation id.
func (p *chaosParty) about(id string) []chaosEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []chaosEvent
	for _, ev := range p.evs {
		if byID(id)(ev.Event) {
			out = append(out, ev)
		}
	}
	return out
}

// ---- invitations ----

// plan is what the script does with an invitation for one invitee.
type plan int

const (
	planTimeout plan = iota // nobody answers: it times out
	planAccept              // the invitee accepts
	planReject              // the invitee rejects
	planCancel              // the inviter cancels (for every invitee)
)

// phase is when an action of the script happens.
type phase int

const (
	phaseBefore phase = iota // before the kill
	phaseDuring              // while the node dies
	phaseAfter               // once the parties are back
)

// chaosInv is one invitation of the script.
type chaosInv struct {
	inviter  *chaosParty
	invitees []*chaosParty
	group    string // "" for one-to-one
	timeout  int    // seconds
	plans    []plan // per invitee; all planCancel for a cancel
	when     phase  // when the answers (or the cancel) happen
	sent     phase  // when the invitation is sent (before, or during)

	id     string
	sentAt time.Time // the deadline is at most sentAt + timeout
	unsure []bool    // per action: sent on the dead node, reply lost
}

func (inv *chaosInv) String() string {
	var us []string
	for i, p := range inv.invitees {
		us = append(us, fmt.Sprintf("%s(%d):%d", p.user, p.slot, inv.plans[i]))
	}
	return fmt.Sprintf("%s from %s(%d) to %v, group %q, sent %d, acts %d", inv.id, inv.inviter.user, inv.inviter.slot, us, inv.group, inv.sent, inv.when)
}

func (inv *chaosInv) cancelled() bool { return inv.plans[0] == planCancel }

// actions are the script's requests on inv: (actor, plan) pairs.
func (inv *chaosInv) actions() []int {
	if inv.cancelled() {
		return []int{-1}
	}
	var out []int
	for i, pl := range inv.plans {
		if pl == planAccept || pl == planReject {
			out = append(out, i)
		}
	}
	return out
}

// send sends inv from its inviter's current connection.
func (inv *chaosInv) send(ctx context.Context) error {
	inv.sentAt = time.Now()
	var us []string
	for _, p := range inv.invitees {
		us = append(us, p.user)
	}
	var err error
	if inv.group == "" {
		inv.id, err = inv.inviter.cur().Invite(ctx, protocol.InviteArgs{Invitee: us[0], Data: "chaos", Timeout: ptr(inv.timeout)})
	} else {
		inv.id, err = inv.inviter.cur().InviteInGroup(ctx, protocol.InviteInGroupArgs{GroupID: inv.group, InviteeList: us, Data: "chaos", Timeout: ptr(inv.timeout)})
	}
	return err
}

// act performs action a (an invitee's index, or -1 for the inviter's
// cancel) from the actor's current connection.
func (inv *chaosInv) act(ctx context.Context, a int) error {
	if a < 0 {
		return inv.inviter.cur().Cancel(ctx, inv.id, "chaos")
	}
	cl := inv.invitees[a].cur()
	if inv.plans[a] == planAccept {
		return cl.Accept(ctx, inv.id, "chaos")
	}
	return cl.Reject(ctx, inv.id, "chaos")
}

// actor is who performs action a.
func (inv *chaosInv) actor(a int) *chaosParty {
	if a < 0 {
		return inv.inviter
	}
	return inv.invitees[a]
}

// expected is what each party must get about inv, once each: keys of
// outcomeKey.
func (inv *chaosInv) expected() map[*chaosParty][]string {
	exp := map[*chaosParty][]string{}
	if inv.cancelled() {
		for _, p := range inv.invitees {
			exp[p] = append(exp[p], protocol.EvInvitationCancelled)
		}
		return exp
	}
	var timedOut []string
	var waiting []*chaosParty
	for i, p := range inv.invitees {
		switch inv.plans[i] {
		case planTimeout:
			timedOut = append(timedOut, p.user)
			waiting = append(waiting, p)
		case planAccept, planReject:
			name := protocol.EvInviteeAccepted
			if inv.plans[i] == planReject {
				name = protocol.EvInviteeRejected
			}
			key := name + ":" + p.user
			exp[inv.inviter] = append(exp[inv.inviter], key)
			for _, q := range inv.invitees {
				if q != p {
					exp[q] = append(exp[q], key)
				}
			}
		}
	}
	if len(timedOut) > 0 {
		slices.Sort(timedOut)
		key := protocol.EvInvitationTimeout + ":" + strings.Join(timedOut, ",")
		exp[inv.inviter] = append(exp[inv.inviter], key)
		for _, p := range waiting {
			exp[p] = append(exp[p], key)
		}
	}
	return exp
}

// outcomeKey is the key of an outcome event ("" for others: rings,
// modifications).
func outcomeKey(ev client.Event) string {
	switch ev.Name {
	case protocol.EvInviteeAccepted, protocol.EvInviteeRejected:
		var v protocol.InviteeEvent
		_ = ev.Decode(&v)
		return ev.Name + ":" + v.Invitee
	case protocol.EvInvitationTimeout:
		var v protocol.TimeoutEvent
		_ = ev.Decode(&v)
		return ev.Name + ":" + strings.Join(slices.Sorted(slices.Values(v.InviteeList)), ",")
	case protocol.EvInvitationCancelled:
		return ev.Name
	}
	return ""
}

// invitationLoad is a chaosLoad of invitations: build, called in before,
// makes its parties and script.
type invitationLoad struct {
	name  string
	build func(t *testing.T, ch *chaos) []*chaosInv
	invs  []*chaosInv
}

func (l *invitationLoad) setup(t *testing.T, ch *chaos) {
	t.Helper()
	l.invs = l.build(t, ch)
}

func (l *invitationLoad) before(t *testing.T, ch *chaos) {
	t.Helper()
	ctx := scenarioCtx(t)
	for _, inv := range l.invs {
		inv.unsure = make([]bool, len(inv.actions()))
		if inv.sent != phaseBefore {
			continue
		}
		if err := inv.send(ctx); err != nil {
			t.Fatalf("%s: %v: %v", l.name, inv, err)
		}
	}
	for _, inv := range l.invs {
		if inv.sent == phaseBefore && inv.when == phaseBefore {
			for i, a := range inv.actions() {
				l.do(ctx, t, ch, inv, i, a, false)
			}
		}
	}
}

// do performs action i (a) of inv; if dying (the during phase), a request
// on the victim that fails without a reply is unsure, settled in after.
func (l *invitationLoad) do(ctx context.Context, t *testing.T, ch *chaos, inv *chaosInv, i, a int, dying bool) {
	err := inv.act(ctx, a)
	switch {
	case err == nil:
	case dying && invitationCode(err) == 0 && inv.actor(a).slot == ch.victim:
		inv.unsure[i] = true
	default:
		t.Errorf("%s: %v: action %d: %v", l.name, inv, a, err)
	}
}

func (l *invitationLoad) during(ctx context.Context, t *testing.T, ch *chaos) {
	type step struct {
		inv  *chaosInv
		i, a int // action; i < 0: send the invitation
	}
	var steps []step
	for _, inv := range l.invs {
		if inv.sent == phaseDuring {
			steps = append(steps, step{inv: inv, i: -1})
		} else if inv.when == phaseDuring {
			for i, a := range inv.actions() {
				steps = append(steps, step{inv: inv, i: i, a: a})
			}
		}
	}
	for n, s := range steps {
		time.Sleep(time.Until(ch.start.Add(chaosDuring * time.Duration(n) / time.Duration(len(steps))))) // pacing
		if s.i >= 0 {
			l.do(ctx, t, ch, s.inv, s.i, s.a, true)
			continue
		}
		if err := s.inv.send(ctx); err != nil {
			if invitationCode(err) != 0 || s.inv.inviter.slot != ch.victim {
				t.Errorf("%s: %v: %v", l.name, s.inv, err)
			}
			s.inv.id = "" // no reply: not part of the check
		}
	}
}

func (l *invitationLoad) after(ctx context.Context, t *testing.T, ch *chaos) {
	t.Helper()
	for _, inv := range l.invs {
		if inv.id == "" {
			continue
		}
		for i, a := range inv.actions() {
			if inv.when != phaseAfter && !inv.unsure[i] {
				continue
			}
			actor := inv.actor(a)
			if a >= 0 && !inv.unsure[i] && ch.away(actor) {
				// Still pending for the actor: it rings on the new connection.
				p := inv.invitees[a]
				last := p.last()
				err := p.waitFor(ctx, "the ring of "+inv.id, func(evs []chaosEvent) bool {
					return slices.ContainsFunc(evs, func(ev chaosEvent) bool {
						return ev.conn == last && ev.Name == protocol.EvReceiveNewInvitation && byID(inv.id)(ev.Event)
					})
				})
				if err != nil {
					t.Fatalf("%s: %v: a pending invitation did not ring on the reconnected device: %v", l.name, inv, err)
				}
			}
			err := inv.act(ctx, a)
			// A retried action that had committed before the kill gets 8010.
			if err != nil && !(inv.unsure[i] && invitationCode(err) == protocol.ErrInvalidInviteID.Code) {
				t.Errorf("%s: %v: action %d after the kill: %v", l.name, inv, a, err)
			}
		}
	}
}

func (l *invitationLoad) await(ctx context.Context, t *testing.T, ch *chaos) {
	t.Helper()
	for _, inv := range l.invs {
		if inv.id == "" {
			continue
		}
		exp := inv.expected()
		parties := append([]*chaosParty{inv.inviter}, inv.invitees...)
		for _, p := range parties {
			want := exp[p]
			err := p.waitFor(ctx, fmt.Sprintf("the outcome %v of %s", want, inv.id), func(evs []chaosEvent) bool {
				var got []string
				for _, ev := range evs {
					if k := outcomeKey(ev.Event); k != "" && byID(inv.id)(ev.Event) {
						got = append(got, k)
					}
				}
				return !slices.ContainsFunc(want, func(k string) bool { return !slices.Contains(got, k) })
			})
			if err != nil {
				t.Errorf("%s: %v: %v (got %v)", l.name, inv, err, p.about(inv.id))
			}
		}
	}
}

func (l *invitationLoad) check(t *testing.T, ch *chaos) {
	t.Helper()
	checked, unsure, replayed := 0, 0, 0
	for _, inv := range l.invs {
		if inv.id == "" {
			continue
		}
		checked++
		for _, u := range inv.unsure {
			if u {
				unsure++
			}
		}
		ch.leftBehind(t, l.name, inv)
		exp := inv.expected()
		for _, p := range append([]*chaosParty{inv.inviter}, inv.invitees...) {
			got := map[string][]chaosEvent{}
			for _, ev := range p.about(inv.id) {
				if k := outcomeKey(ev.Event); k != "" {
					got[k] = append(got[k], ev)
				}
			}
			for k, evs := range got {
				if !slices.Contains(exp[p], k) {
					t.Errorf("%s: %v: %s got %s, not in its outcome %v", l.name, inv, p.user, k, exp[p])
					continue
				}
				ch.noteLateness(inv, p, evs[0], k)
				if ch.away(p) && evs[len(evs)-1].conn == p.last() && evs[len(evs)-1].at.Before(p.openedAt(p.last()).Add(chaosAwayMargin)) {
					replayed++ // got as it connected: kept while away
				}
				if len(evs) == 1 {
					continue
				}
				if len(evs) == 2 && evs[0].conn != evs[1].conn && p.slot == ch.victim && evs[0].conn == 0 &&
					evs[0].at.After(ch.killed.Add(-chaosDupWindow)) {
					t.Logf("%s: %s got %s of %s again after reconnecting (the dead node's last batch, at least once)", l.name, p.user, k, inv.id)
					continue
				}
				t.Errorf("%s: %v: %s got %s %d times", l.name, inv, p.user, k, len(evs))
			}
		}
	}
	t.Logf("%s: %d invitations checked (%d answers or cancels interrupted by the kill, retried; %d outcomes got by a reconnected party as it connected)",
		l.name, checked, unsure, replayed)
}

// leftBehind fails t if Redis still holds an ended invitation as live:
// its deadline, its place in the inviter's sent set (the per-inviter cap)
// or in an invitee's ringing set (what rings on connect). The key names
// are signaling's (store_redis.go, tx_redis.go, signaling/cluster's doc).
func (ch *chaos) leftBehind(t *testing.T, load string, inv *chaosInv) {
	t.Helper()
	ctx := scenarioCtx(t)
	rdb := ch.c.rdb
	if err := rdb.ZScore(ctx, clusterPrefix+"deadlines", inv.id).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("%s: %v: its deadline is still scheduled (%v)", load, inv, err)
	}
	if in, err := rdb.SIsMember(ctx, clusterPrefix+"sig:sent:"+inv.inviter.user, inv.id).Result(); err != nil || in {
		t.Errorf("%s: %v: still counted as sent by its inviter (%v, %v)", load, inv, in, err)
	}
	for _, p := range inv.invitees {
		if err := rdb.ZScore(ctx, clusterPrefix+"sig:ring:"+p.user, inv.id).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("%s: %v: still ringing for %s (%v)", load, inv, p.user, err)
		}
	}
}

// noteLateness records how late a timeout reached p, if it was delivered
// live: p's connection was open before the deadline.
func (ch *chaos) noteLateness(inv *chaosInv, p *chaosParty, ev chaosEvent, key string) {
	if !strings.HasPrefix(key, protocol.EvInvitationTimeout) {
		return
	}
	deadline := inv.sentAt.Add(time.Duration(inv.timeout) * time.Second)
	if p.openedAt(ev.conn).After(deadline) || deadline.Before(ch.killed) {
		return
	}
	ch.mu.Lock()
	ch.late = append(ch.late, ev.at.Sub(deadline))
	ch.mu.Unlock()
}

// ---- the kinds of invitation load ----

// chaosPairs are the placements of an inviter and an invitee: v is the
// victim, s(k) a survivor.
func chaosPairs(ch *chaos) [][2]int {
	v, s := ch.victim, ch.survivor
	return [][2]int{{s(0), s(1)}, {s(0), v}, {v, s(1)}, {v, v}, {s(1), s(1)}}
}

// oneToOneInvitations: for each placement of the two parties, an
// invitation of each outcome and phase.
func oneToOneInvitations(t *testing.T, ch *chaos) []*chaosInv {
	var out []*chaosInv
	for _, at := range chaosPairs(ch) {
		a, b := ch.party(t, "alice", at[0]), ch.party(t, "bob", at[1])
		add := func(pl plan, when, sent phase, timeout int) {
			out = append(out, &chaosInv{inviter: a, invitees: []*chaosParty{b}, timeout: timeout, plans: []plan{pl}, when: when, sent: sent})
		}
		add(planTimeout, phaseAfter, phaseBefore, chaosShort)
		add(planTimeout, phaseAfter, phaseBefore, chaosLong)
		for _, when := range []phase{phaseBefore, phaseDuring, phaseAfter} {
			for _, pl := range []plan{planAccept, planReject, planCancel} {
				add(pl, when, phaseBefore, chaosAnswered)
			}
		}
		add(planAccept, phaseAfter, phaseDuring, chaosAnswered)
		add(planTimeout, phaseAfter, phaseDuring, chaosLong)
	}
	return out
}

// offlineInvitations: invitations to known users with no connection, who
// connect (to a survivor) after the kill.
func offlineInvitations(t *testing.T, ch *chaos) []*chaosInv {
	var out []*chaosInv
	for _, slot := range []int{ch.victim, ch.survivor(0), ch.survivor(1)} {
		a, b := ch.party(t, "carol", slot), ch.party(t, "dave", -1)
		add := func(pl plan, when phase, timeout int) {
			out = append(out, &chaosInv{inviter: a, invitees: []*chaosParty{b}, timeout: timeout, plans: []plan{pl}, when: when})
		}
		add(planTimeout, phaseAfter, chaosShort)
		add(planCancel, phaseBefore, chaosAnswered)
		add(planCancel, phaseDuring, chaosAnswered)
		add(planAccept, phaseAfter, chaosAnswered)
		add(planReject, phaseAfter, chaosAnswered)
	}
	return out
}

// groupInvitations: a group with members on every node and one offline;
// group invitations from each node to members on the others.
func groupInvitations(t *testing.T, ch *chaos) []*chaosInv {
	v, s := ch.victim, ch.survivor
	members := []*chaosParty{ch.party(t, "gina", s(0)), ch.party(t, "hugo", s(1)), ch.party(t, "ivy", v),
		ch.party(t, "jack", v), ch.party(t, "kate", s(0)), ch.party(t, "liam", -1)}
	owner := members[0]
	g := ch.c.user("crew")
	var users []string
	for _, m := range members[1:] {
		users = append(users, m.user)
	}
	if _, err := owner.cur().CreateGroup(scenarioCtx(t), protocol.CreateGroupArgs{GroupID: g, Name: "Crew", MemberList: users}); err != nil {
		t.Fatal(err)
	}
	var out []*chaosInv
	add := func(from int, to []int, plans []plan, when phase, timeout int) {
		inv := &chaosInv{inviter: members[from], group: g, timeout: timeout, plans: plans, when: when}
		for _, i := range to {
			inv.invitees = append(inv.invitees, members[i])
		}
		out = append(out, inv)
	}
	A, R, T, C := planAccept, planReject, planTimeout, planCancel
	for _, from := range []int{0, 2} { // a survivor's member, the victim's
		others := []int{1, 3}
		if from == 2 {
			others = []int{1, 4}
		}
		add(from, others, []plan{A, R}, phaseBefore, chaosAnswered)
		add(from, others, []plan{A, R}, phaseDuring, chaosAnswered)
		add(from, others, []plan{R, A}, phaseAfter, chaosAnswered)
		add(from, others, []plan{T, T}, phaseAfter, chaosLong)
		add(from, others, []plan{C, C}, phaseDuring, chaosAnswered)
		add(from, []int{others[0], 5}, []plan{R, A}, phaseAfter, chaosAnswered)
	}
	add(1, []int{2, 4}, []plan{A, T}, phaseBefore, chaosLong)
	return out
}
