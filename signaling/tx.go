package signaling

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// One state machine, several backends (signaling/CLUSTER-DESIGN.md, issue 12).
//
// Every operation that changes state is split in two:
//
//   - its decision, a method of rules: a function of (tx, args) that reads
//     the state only through the tx and changes it only by queuing, on the
//     tx, Mutations (the Store's vocabulary), events (outgoing) and an
//     observer note. What a read returns (an invitation, a group) is a copy
//     the decision may change for its own reckoning, never the shared
//     state; rules holds nothing but the configuration, so a decision cannot
//     reach the engine's maps. A decision has no other side effect: a
//     backend may run it again (Redis, on a conflict) or not commit it.
//   - a backend, which runs the decision atomically against its state and
//     commits what it queued, or nothing.
//
// The rules (who may do what, which events follow) are thus written once.
// The memory backend (Engine.do, over the engine's maps with write-through
// to the Store) runs standalone; the Redis backend (tx_redis.go, cluster
// mode: Params.Cluster) implements the same tx with WATCHed reads and
// commits the queued mutations with the events' stream and outbox appends
// in one MULTI/EXEC, running the decision again from fresh reads when a
// watched key changed. It runs every op: invitations (inviteInGroup
// included), groups, custom status; in cluster mode the status changes
// (statusChanged) go to the subscribers' nodes with the op's other events
// (redisTx.statusEvents).
//
// Forward-only states are compared and set: a SetInviteeState carries the
// state the decision read (From), and a backend applies it only from that
// state, so a stale view cannot move an answered invitee back or answer
// twice.
//
// Read-only operations (Invitation, GetGroupMemberList, GetJoinedGroupList,
// IsGroupMember, Online, GetUserStatus) read the memory backend's maps
// standalone and Redis in cluster mode (cluster_views.go), as do the
// presence subscriptions; connection bookkeeping (Attach, Detach, Replay)
// is the backend's own.
type tx interface {
	// now is the time of the decision.
	now() time.Time
	// newID returns a fresh invitation or group ID (Params.NewID).
	newID(prefix string) string

	// invitation returns a copy of the live invitation id.
	invitation(id string) (*invitation, bool)
	// ringingFor counts the stored invitations ringing for user: pending
	// for them, rung, not onlineUserOnly (limits.max_pending_per_invitee).
	ringingFor(user string) int
	// liveSentBy counts the live invitations user sent
	// (limits.max_pending_per_inviter).
	liveSentBy(user string) int

	// group returns a copy of group id with its members.
	group(id string) (*group, bool)
	// groupMember reports whether group id exists and has user as a member.
	groupMember(id, user string) (found, member bool)
	// groupCounts counts user's groups: those they created or joined by
	// themselves (own) and those others added them to (added).
	groupCounts(user string) (own, added int)

	// online reports whether user has a connection open now.
	online(user string) bool
	// known reports whether user has ever connected (only known users get
	// events kept for them).
	known(user string) bool
	// keptBytes is what the events kept for offline users cost: those
	// sender caused (reservations included), and in all.
	keptBytes(sender string) (mine, total int64)
	// customStatus is user's custom status text ("" none).
	customStatus(user string) string

	// apply queues mutations, applied in order, all or none, at commit.
	apply(muts ...Mutation)
	// emit queues events, delivered in order once committed; recipients with
	// no open connection get the kept ones when they connect.
	emit(evs ...*outgoing)
	// keepAs says whose quota (sender) the copies of the events kept for
	// offline recipients count against; force keeps them past the quota
	// (events the server decides). See Engine.planLocked.
	keepAs(sender string, force bool)
	// note queues the note for the observers, sent once committed.
	note(n *InvitationNote)
	// statusChanged queues, once committed, an onUserStatusChanged of user
	// to their subscribers and to their connections but skip.
	statusChanged(user string, skip protocol.Session)
}

// rules are the decisions of the state-changing operations: methods of
// (tx, args) that read and write through the tx only (see tx). They hold
// the configuration, nothing else.
type rules struct {
	cfg Config
}

// memTx is the memory backend's tx: reads go to the engine's maps (its
// methods run with Engine.mu held), writes are queued for Engine.do.
type memTx struct {
	e      *Engine
	at     time.Time
	muts   []Mutation
	evs    []*outgoing
	sender string
	force  bool
	n      *InvitationNote
	status []statusChange
}

type statusChange struct {
	user string
	skip protocol.Session
}

var _ tx = (*memTx)(nil)

func (t *memTx) now() time.Time             { return t.at }
func (t *memTx) newID(prefix string) string { return t.e.newID(prefix) }

func (t *memTx) invitation(id string) (*invitation, bool) {
	inv := t.e.invitations[id]
	if inv == nil {
		return nil, false
	}
	return inv.clone(), true
}

func (t *memTx) ringingFor(user string) int { return len(t.e.byInvitee[user]) }
func (t *memTx) liveSentBy(user string) int { return len(t.e.byInviter[user]) }

func (t *memTx) group(id string) (*group, bool) {
	g := t.e.groups[id]
	if g == nil {
		return nil, false
	}
	return g.clone(), true
}

func (t *memTx) groupMember(id, user string) (found, member bool) {
	g := t.e.groups[id]
	if g == nil {
		return false, false
	}
	return true, g.has(user)
}

func (t *memTx) groupCounts(user string) (own, added int) { return t.e.groupCountsLocked(user) }
func (t *memTx) online(user string) bool                  { return len(t.e.sessions[user]) > 0 }
func (t *memTx) customStatus(user string) string          { return t.e.presence.custom[user] }
func (t *memTx) known(user string) bool                   { return t.e.isKnownLocked(user) }
func (t *memTx) keptBytes(sender string) (mine, total int64) {
	return t.e.kept.bySender[sender], t.e.kept.total
}

func (t *memTx) apply(muts ...Mutation)           { t.muts = append(t.muts, muts...) }
func (t *memTx) emit(evs ...*outgoing)            { t.evs = append(t.evs, evs...) }
func (t *memTx) keepAs(sender string, force bool) { t.sender, t.force = sender, force }
func (t *memTx) note(n *InvitationNote)           { t.n = n }
func (t *memTx) statusChanged(user string, skip protocol.Session) {
	t.status = append(t.status, statusChange{user, skip})
}

// do runs an operation's decision on the memory backend: under mu it runs
// decide, plans the events (outbox Seqs, quota reservations) and applies
// the queued mutations to the maps (applyLocked); without mu it writes the
// mutations (but those of onlineUserOnly invitations) with the events'
// outbox entries to the Store; under mu again it delivers the events and
// queues the note, or, if the write failed, undoes the applied mutations
// and releases the reservations (ErrStoreUnavailable; nobody saw an event
// of it). Each user's events are delivered in decision order: a later
// decision's delivery cannot overtake, since it too delivers under mu
// after its own commit (see Engine).
func (e *Engine) do(ctx context.Context, decide func(tx) error) error {
	return e.doHint(ctx, txHint{}, decide)
}

// doHint is do, with what the decision will read named for the Redis
// backend (cluster mode), which then reads it in one pipeline.
func (e *Engine) doHint(ctx context.Context, h txHint, decide func(tx) error) error {
	if e.cl != nil {
		t, err := e.cl.do(ctx, h, decide, nil)
		if err == nil {
			e.cl.after(t)
		}
		return err
	}
	return e.doOr(ctx, decide, nil)
}

// closing reports whether the engine is closing, from a decision of t.
func (e *Engine) closing(t tx) bool {
	if _, mem := t.(*memTx); mem {
		return e.closed // mu is held
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// doOr is do, with failed run under mu when the decision was taken but not
// committed (the timer's retry).
func (e *Engine) doOr(ctx context.Context, decide func(tx) error, failed func()) error {
	e.mu.Lock()
	t := &memTx{e: e, at: e.clock.Now()}
	if err := decide(t); err != nil {
		e.mu.Unlock()
		return err
	}
	if len(t.muts) == 0 && len(t.evs) == 0 && t.n == nil && len(t.status) == 0 {
		e.mu.Unlock()
		return nil
	}
	err := e.planLocked(t, t.evs, t.sender, t.force)
	var changes []change
	if err == nil {
		changes, err = e.applyAllLocked(t.muts)
		if err != nil {
			e.unplanLocked(t.evs)
		}
	}
	if err != nil {
		if failed != nil {
			failed()
		}
		e.mu.Unlock()
		return err
	}
	e.mu.Unlock()

	now := e.clock.Now()
	outMuts, err := e.encode(t.evs, now)
	if err == nil {
		err = e.commit(ctx, append(storeBatch(changes, len(outMuts)), outMuts...))
	}
	var kicks []KickConn
	e.mu.Lock()
	defer func() {
		e.mu.Unlock()
		for _, k := range kicks {
			k.Kick()
		}
	}()
	if err != nil {
		e.unplanLocked(t.evs)
		undoLocked(changes)
		if failed != nil {
			failed()
		}
		return err
	}
	for _, c := range changes {
		if c.committed != nil {
			c.committed()
		}
	}
	kicks = e.deliverLocked(t.evs, now, kicks)
	for _, s := range t.status {
		e.statusChangedLocked(s.user, true, s.skip)
	}
	if t.n != nil {
		t.n.At = now
		e.notifyLocked(*t.n)
	}
	return nil
}

// storeBatch is what the memory backend writes of changes: those to store,
// but the state changes of an invitation that the batch then deletes (an
// answer, cancel or timeout that ends it): the deletion takes the invitees'
// states with it, so writing them first would be work for nothing. The
// decision still states them (SetInviteeState with From): they are applied,
// compared and set, in the engine's view.
func storeBatch(changes []change, extra int) []Mutation {
	// The deleted invitations, in a small list (an op deletes one or none).
	var buf [2]string
	deleted := buf[:0]
	for _, c := range changes {
		if d, ok := c.m.(DeleteInvitation); ok && c.store {
			deleted = append(deleted, d.InviteID)
		}
	}
	muts := make([]Mutation, 0, len(changes)+extra)
	for _, c := range changes {
		if !c.store {
			continue
		}
		switch m := c.m.(type) {
		case SetInviteeState:
			if slices.Contains(deleted, m.InviteID) {
				continue
			}
		case SetInvitationData:
			if slices.Contains(deleted, m.InviteID) {
				continue
			}
		}
		muts = append(muts, c.m)
	}
	return muts
}

// change is a mutation applied to the maps: whether it goes to the Store,
// how to undo it, and what follows its commit.
type change struct {
	m         Mutation
	store     bool   // written to the Store (not for onlineUserOnly invitations)
	undo      func() // puts back what it touched, if nobody changed it since; nil: nothing
	committed func() // run under mu once committed; nil: nothing
}

// errConflict is a mutation whose expected state (SetInviteeState.From) is
// not the current one: the decision read a stale view. The memory backend
// reads under the lock it applies under, so it is a bug there.
var errConflict = fmt.Errorf("signaling: state changed under the decision")

func (e *Engine) applyAllLocked(muts []Mutation) ([]change, error) {
	changes := make([]change, 0, len(muts))
	for _, m := range muts {
		c, err := e.applyLocked(m)
		if err != nil {
			undoLocked(changes)
			e.log.Error("mutation not applied", "mutation", fmt.Sprintf("%T", m), "err", err)
			return nil, protocol.ErrStoreUnavailable
		}
		changes = append(changes, c)
	}
	return changes, nil
}

// undoLocked undoes changes, the last first.
func undoLocked(changes []change) {
	for i := len(changes) - 1; i >= 0; i-- {
		if u := changes[i].undo; u != nil {
			u()
		}
	}
}

// applyLocked applies m to the engine's maps and indexes: the in-memory
// mirror of Store.Apply (a missing invitation, invitee or group is a no-op),
// with the consequences the maps own: the invitee and inviter indexes, the
// group index, the invitation timers (stopped when an invitation goes, armed
// once a new one is committed).
//
// Its undo restores what m touched as it was, at the grain of the mutation
// (one invitee's state, an invitation's data, the members m added or
// removed, a whole invitation or group m put or deleted) and only if it is
// still as m left it: between the apply and the undo the lock is released
// for the store write, and other operations may have changed other parts of
// the same record (another invitee's answer), which the undo must keep.
func (e *Engine) applyLocked(m Mutation) (change, error) {
	c := change{m: m, store: true}
	switch m := m.(type) {
	case PutInvitation:
		r := m.Invitation
		if e.invitations[r.ID] != nil {
			return c, fmt.Errorf("invitation %q exists", r.ID)
		}
		inv := invitationFromRecord(r)
		c.m = PutInvitation{Invitation: storable(r)}
		e.invitations[inv.id] = inv
		e.indexInviteesLocked(inv)
		e.indexInviterLocked(inv)
		// Until its ring is delivered (committed runs with the delivery,
		// under the same lock), a connection that opens gets the ring
		// live, not by its replay: rung once (commit e5c9b66).
		inv.ringing = true
		c.store = !inv.onlineOnly
		c.undo = func() {
			inv.ringing = false
			if e.invitations[inv.id] == inv {
				e.removeLocked(inv)
			}
		}
		c.committed = func() {
			inv.ringing = false
			if e.invitations[inv.id] == inv && !inv.deadline.IsZero() && inv.timer == nil {
				e.armTimerLocked(inv)
			}
		}
	case SetInviteeState:
		inv := e.invitations[m.InviteID]
		if inv == nil {
			return c, nil
		}
		c.store = !inv.onlineOnly
		i := inv.indexOf(m.UserID)
		if i < 0 {
			return c, nil
		}
		v := &inv.invitees[i]
		if m.From != StateUnknown && v.state != m.From {
			return c, fmt.Errorf("%w: invitee %q of %q is %s, not %s", errConflict, m.UserID, m.InviteID, v.state, m.From)
		}
		prev, prevAt := v.state, v.at
		e.setInviteeStateLocked(inv, m.UserID, m.State, m.At)
		c.undo = func() {
			if inv.stateOf(m.UserID) == m.State {
				e.setInviteeStateLocked(inv, m.UserID, prev, prevAt)
			}
		}
	case SetInvitationData:
		inv := e.invitations[m.InviteID]
		if inv == nil {
			return c, nil
		}
		c.store = !inv.onlineOnly
		prev := inv.data
		inv.data = m.Data
		c.undo = func() {
			if inv.data == m.Data {
				inv.data = prev
			}
		}
	case DeleteInvitation:
		inv := e.invitations[m.InviteID]
		if inv == nil {
			return c, nil
		}
		c.store = !inv.onlineOnly
		e.removeLocked(inv)
		c.undo = func() {
			if e.invitations[inv.id] == nil {
				e.restoreLocked(inv)
			}
		}
	case PutGroup:
		if e.groups[m.Group.ID] != nil {
			return c, protocol.ErrGroupExists
		}
		g := groupFromRecord(m.Group)
		e.putGroupLocked(g)
		c.undo = func() {
			if e.groups[g.id] == g {
				e.deleteGroupLocked(g)
			}
		}
	case AddGroupMembers:
		g := e.groups[m.GroupID]
		if g == nil {
			return c, nil
		}
		var added []MemberRecord
		for _, mem := range m.Members {
			if !g.has(mem.UserID) {
				added = append(added, mem)
			}
		}
		e.addMembersLocked(g, added)
		c.undo = func() {
			if e.groups[g.id] != g {
				return
			}
			for _, mem := range added {
				if g.members[mem.UserID] == mem {
					e.removeMembersLocked(g, []string{mem.UserID})
				}
			}
		}
	case RemoveGroupMembers:
		g := e.groups[m.GroupID]
		if g == nil {
			return c, nil
		}
		var removed []MemberRecord
		for _, u := range m.UserIDs {
			if mem, ok := g.members[u]; ok {
				removed = append(removed, mem)
			}
		}
		e.removeMembersLocked(g, m.UserIDs)
		c.undo = func() {
			if e.groups[g.id] != g {
				return
			}
			for _, mem := range removed {
				if !g.has(mem.UserID) {
					e.addMembersLocked(g, []MemberRecord{mem})
				}
			}
		}
	case DeleteGroup:
		g := e.groups[m.GroupID]
		if g == nil {
			return c, nil
		}
		e.deleteGroupLocked(g)
		c.undo = func() {
			if e.groups[g.id] == nil {
				e.putGroupLocked(g)
			}
		}
	case SetCustomStatus:
		// Applied once stored, not before: nobody reads a text that may
		// not be stored (setSelfStatus is serialized by statusWrite).
		c.committed = func() { e.setCustomLocked(m.UserID, m.Text) }
	default:
		return c, fmt.Errorf("%T is not an operation's mutation", m)
	}
	return c, nil
}
