package calls

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

// One set of rules, two backends (signaling/CLUSTER-DESIGN.md, "Calls").
//
// Every change of the calls' state is a decision: a function of a tx that
// finds calls only through it (by call, invitation, room or user) and
// changes them in place and through its index methods. What a decision
// returns is the work to do once it is committed (engine ops, events,
// rooms), which runs in the calling goroutine, outside every lock, as the
// funcs the *Locked methods return always did. A decision has no other
// side effect: a backend may run it again or not commit it, so what it
// finds through the tx may be a copy (Redis) or the live call (memory).
//
//   - The memory backend (memTx, standalone) runs the decision under
//     Manager.mu over the manager's maps: the calls it finds are the live
//     ones, its index methods change the maps at once. Records go to the
//     save queue once committed.
//   - The Redis backend (redisTx, cluster mode: Params.Cluster) reads each
//     key it is asked for, WATCHed, into copies; the decision changes the
//     copies; it then writes the calls whose state changed, the queued index
//     changes, the setup deadlines and the records to save in one
//     MULTI/EXEC, or runs the decision again from fresh reads when a
//     watched key changed (state_redis.go).
type tx interface {
	// now is the time of the decision.
	now() time.Time
	// closed reports whether the manager is closing.
	closed() bool

	// running is the running call callID (nil: none, or ended).
	running(callID string) *call
	// byInvite is the call of invitation inviteID while the invitation is
	// live, the call running or ended (nil: none).
	byInvite(inviteID string) *call
	// byRoom is the running call that holds roomID (nil: none).
	byRoom(roomID string) *call
	// roomHosted reports whether a room roomID exists on a live node of
	// the cluster (rooms/cluster's room:<id> lease), so that a new call
	// does not take its ID (issue 13); always false standalone, where
	// rooms.Claim refuses the ID of an existing room.
	roomHosted(roomID string) bool
	// userCalls are the running calls user takes part in or is rung for,
	// by call ID.
	userCalls(user string) []*call
	// allRunning are the running calls, by call ID.
	allRunning() []*call

	// add registers a new running call and its room ID.
	add(c *call)
	// index and unindex add and remove c from user's calls.
	index(c *call, user string)
	unindex(c *call, user string)
	// setInvite and dropInvite add and remove invitation inviteID of c.
	setInvite(inviteID string, c *call)
	dropInvite(inviteID string)
	// forget takes c out of the running calls, its room ID and every
	// user's calls; a call that has not ended (abandoned before it rang)
	// also loses its invitations.
	forget(c *call)
	// save saves c's record (as the decision leaves it) once committed.
	save(c *call)
	// armSetup and stopSetup start and stop c's setup timer (its
	// setupArmed was set or cleared by the decision).
	armSetup(c *call)
	stopSetup(c *call)
	// armLost (re)schedules c's lost deadline at at, replacing the one
	// scheduled; stopLost cancels it (lostChangedLocked keeps it at the
	// earliest of c.lost plus Config.SetupTimeout).
	armLost(c *call, at time.Time)
	stopLost(c *call)
	// creating says that invitation inviteID of c is registered, not yet
	// created (c.creating has it); settled that it is created or abandoned
	// (c.creating no longer has it): a glare merge waiting for it goes on.
	creating(c *call, inviteID string)
	settled(c *call, inviteID string)
	// hint names what the decision will read, so that a backend that
	// reads over a network reads it at once (Redis: one pipeline, then one
	// for the calls it points to). A read it did not name still works.
	hint(h hint)
	// once queues f (observers, metrics), run once committed, in decision
	// order on this node, before the decision's work.
	once(f func())
}

// hint names what a decision will read: users' calls, room IDs,
// invitations, calls, and the stored records of calls it will save.
type hint struct {
	users, rooms, invites, calls, records []string
}

// decision is one atomic step over the calls: it returns the work to run
// once committed (nil: none).
type decision func(t tx) (func(), error)

// do runs decide as one atomic step on the manager's backend, then the
// work it returned. An error of the decision (or of the backend:
// ErrStoreUnavailable) means nothing was committed and no work runs.
func (m *Manager) do(ctx context.Context, decide decision) error {
	return m.doAt(ctx, time.Time{}, decide, nil)
}

// doAt is do with the decision's time at (zero: now) and, in cluster
// mode, due's Done in its commit (a deadline that fired it).
func (m *Manager) doAt(ctx context.Context, at time.Time, decide decision, due *cluster.Due) error {
	if m.cl != nil {
		return m.cl.doAt(ctx, at, decide, due)
	}
	if at.IsZero() {
		at = m.clock.Now()
	}
	m.mu.Lock()
	t := &memTx{m: m, at: at}
	work, err := decide(t)
	for _, f := range t.onces {
		f()
	}
	snaps := make([]CallRecord, 0, len(t.saves))
	for _, c := range t.saves {
		snaps = append(snaps, copyRecord(c.rec))
	}
	m.mu.Unlock()
	for _, s := range snaps {
		m.saves.save(s)
	}
	if err != nil {
		return err
	}
	if work != nil {
		work()
	}
	return nil
}

// view runs a read-only look at the calls (a decision that changes
// nothing): on Redis its reads are not WATCHed and nothing is committed, so
// what it sees may change right after; a step that acts on it reads again.
func (m *Manager) view(ctx context.Context, look func(t tx)) error {
	if m.cl != nil {
		return m.cl.view(ctx, look)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	look(&memTx{m: m, at: m.clock.Now()})
	return nil
}

// memTx is the memory backend's tx: its methods run with Manager.mu held.
type memTx struct {
	m     *Manager
	at    time.Time
	saves []*call
	onces []func()
}

var _ tx = (*memTx)(nil)

func (t *memTx) now() time.Time                 { return t.at }
func (t *memTx) closed() bool                   { return t.m.closed }
func (t *memTx) running(callID string) *call    { return t.m.calls[callID] }
func (t *memTx) byInvite(inviteID string) *call { return t.m.byInvite[inviteID] }
func (t *memTx) byRoom(roomID string) *call     { return t.m.byRoom[roomID] }
func (t *memTx) roomHosted(string) bool         { return false }

func (t *memTx) userCalls(user string) []*call {
	out := make([]*call, 0, len(t.m.byUser[user]))
	for c := range t.m.byUser[user] {
		out = append(out, c)
	}
	return byCallID(out)
}

func (t *memTx) allRunning() []*call {
	out := make([]*call, 0, len(t.m.calls))
	for _, c := range t.m.calls {
		out = append(out, c)
	}
	return byCallID(out)
}

func byCallID(cs []*call) []*call {
	slices.SortFunc(cs, func(x, y *call) int { return cmp.Compare(x.rec.CallID, y.rec.CallID) })
	return cs
}

func (t *memTx) add(c *call) {
	t.m.calls[c.rec.CallID] = c
	t.m.byRoom[c.rec.RoomID] = c
}

func (t *memTx) index(c *call, user string) {
	s := t.m.byUser[user]
	if s == nil {
		s = map[*call]bool{}
		t.m.byUser[user] = s
	}
	s[c] = true
}

func (t *memTx) unindex(c *call, user string) {
	if s := t.m.byUser[user]; s != nil {
		delete(s, c)
		if len(s) == 0 {
			delete(t.m.byUser, user)
		}
	}
}

func (t *memTx) setInvite(inviteID string, c *call) { t.m.byInvite[inviteID] = c }
func (t *memTx) dropInvite(inviteID string)         { delete(t.m.byInvite, inviteID) }

func (t *memTx) forget(c *call) {
	m := t.m
	delete(m.calls, c.rec.CallID)
	if m.byRoom[c.rec.RoomID] == c {
		delete(m.byRoom, c.rec.RoomID)
	}
	for _, p := range c.rec.Participants {
		t.unindex(c, p.UserID)
	}
	for _, pend := range c.pending {
		for u := range pend {
			t.unindex(c, u)
		}
	}
	if !c.ended {
		for id := range c.pending {
			delete(m.byInvite, id)
		}
	}
}

func (t *memTx) save(c *call) {
	if !slices.Contains(t.saves, c) {
		t.saves = append(t.saves, c)
	}
}

func (t *memTx) once(f func()) { t.onces = append(t.onces, f) }
func (t *memTx) hint(hint)     {}

func (t *memTx) armSetup(c *call) {
	m, id := t.m, c.rec.CallID
	m.wg.Add(1)
	m.setups[id] = m.clock.AfterFunc(m.cfg.SetupTimeout, func() {
		defer m.wg.Done()
		m.setupFired(context.Background(), id, nil)
	})
}

func (t *memTx) stopSetup(c *call) {
	m, id := t.m, c.rec.CallID
	if tm := m.setups[id]; tm != nil {
		delete(m.setups, id)
		if tm.Stop() {
			m.wg.Done()
		}
	}
}

func (t *memTx) armLost(c *call, at time.Time) {
	m, id := t.m, c.rec.CallID
	t.stopLost(c)
	if m.closed {
		return // Close has stopped the timers: no new one
	}
	m.wg.Add(1)
	m.losts[id] = m.clock.AfterFunc(max(at.Sub(m.clock.Now()), 0), func() {
		defer m.wg.Done()
		m.lostFired(context.Background(), id, nil)
	})
}

func (t *memTx) stopLost(c *call) {
	m, id := t.m, c.rec.CallID
	if tm := m.losts[id]; tm != nil {
		delete(m.losts, id)
		if tm.Stop() {
			m.wg.Done()
		}
	}
}

func (t *memTx) creating(*call, string) {} // a waiter makes its channel (waitCreated)

func (t *memTx) settled(_ *call, inviteID string) {
	if ch := t.m.waiters[inviteID]; ch != nil {
		close(ch)
		delete(t.m.waiters, inviteID)
	}
}

// waitCreated waits until invitation inviteID of call callID is created
// or abandoned (a glare merge into a call whose invitation is still being
// created), at most until ctx ends.
func (m *Manager) waitCreated(ctx context.Context, callID, inviteID string) error {
	if m.cl != nil {
		return m.cl.waitCreated(ctx, callID, inviteID)
	}
	m.mu.Lock()
	c := m.byInvite[inviteID]
	if c == nil || !c.creating[inviteID] {
		m.mu.Unlock()
		return nil
	}
	ch := m.waiters[inviteID]
	if ch == nil {
		ch = make(chan struct{})
		m.waiters[inviteID] = ch
	}
	m.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return errStillPlaced
	}
}
