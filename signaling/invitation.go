package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// invitation is an invitation in the engine's view. The memory backend's
// are guarded by Engine.mu; a tx hands decisions copies (clone).
type invitation struct {
	id         string
	inviter    string
	groupID    string
	data       string
	onlineOnly bool
	createdAt  time.Time
	deadline   time.Time // zero: no timeout
	invitees   []inviteeEntry
	timer      protocol.Timer // memory backend only
	push       string         // offlinePushInfo as JSON; "": none; never changed once created
	// ringing: created, and its ring not yet delivered (the commit is under
	// way). A connection that opens meanwhile gets the ring live with the
	// others, so its replay leaves the invitation out. Memory backend only.
	ringing bool
}

type inviteeEntry struct {
	user   string
	state  InviteeState
	at     time.Time
	noRing bool // never rung (CreateInvitation's NoRing); not in the Store
	pushed bool // a push request was sent for them (offline when created)
}

// clone is a copy sharing nothing changeable with inv, without its timer.
func (inv *invitation) clone() *invitation {
	c := *inv
	c.timer = nil
	c.invitees = slices.Clone(inv.invitees)
	return &c
}

func (inv *invitation) indexOf(user string) int {
	for i, v := range inv.invitees {
		if v.user == user {
			return i
		}
	}
	return -1
}

// pushed reports whether a push request was sent for user.
func (inv *invitation) pushed(user string) bool {
	if i := inv.indexOf(user); i >= 0 {
		return inv.invitees[i].pushed
	}
	return false
}

func (inv *invitation) noRing(user string) bool {
	if i := inv.indexOf(user); i >= 0 {
		return inv.invitees[i].noRing
	}
	return false
}

func (inv *invitation) stateOf(user string) InviteeState {
	if i := inv.indexOf(user); i >= 0 {
		return inv.invitees[i].state
	}
	return StateUnknown
}

func (inv *invitation) setState(user string, s InviteeState, at time.Time) {
	if i := inv.indexOf(user); i >= 0 {
		inv.invitees[i].state, inv.invitees[i].at = s, at
	}
}

func (inv *invitation) inviteeList() []string {
	out := make([]string, len(inv.invitees))
	for i, v := range inv.invitees {
		out[i] = v.user
	}
	return out
}

func (inv *invitation) allFinal() bool {
	for _, v := range inv.invitees {
		if !v.state.Final() {
			return false
		}
	}
	return true
}

func (inv *invitation) anyAnswered() bool {
	for _, v := range inv.invitees {
		if v.state != StatePending {
			return true
		}
	}
	return false
}

// parties is the inviter followed by every invitee: who hears the
// invitation's events.
func (inv *invitation) parties() []string {
	out := make([]string, 1, 1+len(inv.invitees))
	out[0] = inv.inviter
	for _, v := range inv.invitees {
		out = append(out, v.user)
	}
	return out
}

func (inv *invitation) newInvitationEvent(now time.Time) protocol.NewInvitationEvent {
	ev := protocol.NewInvitationEvent{
		InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID,
		InviteeList: inv.inviteeList(), Data: inv.data, OnlineUserOnly: inv.onlineOnly,
	}
	if !inv.deadline.IsZero() {
		left := inv.deadline.Sub(now)
		if left < time.Millisecond {
			left = time.Millisecond
		}
		ev.TimeoutMs = left.Milliseconds()
		ev.Timeout = int((left + time.Second - 1) / time.Second)
	}
	return ev
}

// record is inv as a record of the engine's view (OnlineOnly and NoRing
// included: see storable).
func (inv *invitation) record() InvitationRecord {
	r := InvitationRecord{ID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		CreatedAt: inv.createdAt, Deadline: inv.deadline, PushInfo: inv.push, OnlineOnly: inv.onlineOnly}
	for _, v := range inv.invitees {
		r.Invitees = append(r.Invitees, InviteeRecord{UserID: v.user, State: v.state, UpdatedAt: v.at, Pushed: v.pushed, NoRing: v.noRing})
	}
	return r
}

func invitationFromRecord(r InvitationRecord) *invitation {
	inv := &invitation{id: r.ID, inviter: r.Inviter, groupID: r.GroupID, data: r.Data,
		createdAt: r.CreatedAt, deadline: r.Deadline, push: r.PushInfo, onlineOnly: r.OnlineOnly}
	inv.invitees = make([]inviteeEntry, 0, len(r.Invitees))
	for _, v := range r.Invitees {
		inv.invitees = append(inv.invitees, inviteeEntry{user: v.UserID, state: v.State, at: v.UpdatedAt, pushed: v.Pushed, noRing: v.NoRing})
	}
	return inv
}

// storable is r as the memory backend writes it to the Store: without the
// invitees' NoRing, which was never stored.
func storable(r InvitationRecord) InvitationRecord {
	if !slices.ContainsFunc(r.Invitees, func(v InviteeRecord) bool { return v.NoRing }) {
		return r
	}
	r.Invitees = slices.Clone(r.Invitees)
	for i := range r.Invitees {
		r.Invitees[i].NoRing = false
	}
	return r
}

func sortedInvitations(m map[string]*invitation) []*invitation {
	out := make([]*invitation, 0, len(m))
	for _, inv := range m {
		out = append(out, inv)
	}
	slices.SortFunc(out, func(a, b *invitation) int { return a.createdAt.Compare(b.createdAt) })
	return out
}

// ---- indexes ----

func (e *Engine) indexInviteesLocked(inv *invitation) {
	if inv.onlineOnly {
		return
	}
	for _, v := range inv.invitees {
		if v.state != StatePending || v.noRing {
			continue
		}
		m := e.byInvitee[v.user]
		if m == nil {
			m = e.invMaps.get()
			e.byInvitee[v.user] = m
		}
		m[inv.id] = inv
	}
}

func (e *Engine) indexInviterLocked(inv *invitation) {
	m := e.byInviter[inv.inviter]
	if m == nil {
		m = e.invMaps.get()
		e.byInviter[inv.inviter] = m
	}
	m[inv.id] = inv
}

func (e *Engine) unindexInviterLocked(inv *invitation) {
	if m := e.byInviter[inv.inviter]; m != nil {
		delete(m, inv.id)
		if len(m) == 0 {
			delete(e.byInviter, inv.inviter)
			e.invMaps.put(m)
		}
	}
}

func (e *Engine) unindexInviteeLocked(inv *invitation, user string) {
	if m := e.byInvitee[user]; m != nil {
		delete(m, inv.id)
		if len(m) == 0 {
			delete(e.byInvitee, user)
			e.invMaps.put(m)
		}
	}
}

// setInviteeStateLocked sets user's state in inv and keeps the invitee
// index: a pending invitee of a live stored invitation who is rung is
// indexed, any other is not.
func (e *Engine) setInviteeStateLocked(inv *invitation, user string, s InviteeState, at time.Time) {
	inv.setState(user, s, at)
	if s != StatePending {
		e.unindexInviteeLocked(inv, user)
		return
	}
	if e.invitations[inv.id] != inv || inv.onlineOnly || inv.noRing(user) {
		return
	}
	m := e.byInvitee[user]
	if m == nil {
		m = e.invMaps.get()
		e.byInvitee[user] = m
	}
	m[inv.id] = inv
}

// invMapPool keeps the emptied per-user maps of byInvitee and byInviter
// for reuse: a user's map is made when their first invitation starts and
// dropped when their last ends, twice per call setup on a busy server.
// Guarded by the engine's mu.
type invMapPool struct{ free []map[string]*invitation }

// invMapPoolSize bounds the maps kept for reuse.
const invMapPoolSize = 256

func (p *invMapPool) get() map[string]*invitation {
	n := len(p.free)
	if n == 0 {
		return make(map[string]*invitation)
	}
	m := p.free[n-1]
	p.free[n-1] = nil
	p.free = p.free[:n-1]
	return m
}

// put keeps m, which is empty, unless the pool is full.
func (p *invMapPool) put(m map[string]*invitation) {
	if len(p.free) < invMapPoolSize {
		p.free = append(p.free, m)
	}
}

// removeLocked forgets an ended invitation.
func (e *Engine) removeLocked(inv *invitation) {
	delete(e.invitations, inv.id)
	e.unindexInviterLocked(inv)
	for _, v := range inv.invitees {
		e.unindexInviteeLocked(inv, v.user)
	}
	if inv.timer != nil {
		inv.timer.Stop()
		inv.timer = nil
	}
}

// restoreLocked puts back an invitation removed by an operation whose commit failed.
func (e *Engine) restoreLocked(inv *invitation) {
	if e.closed {
		return
	}
	e.invitations[inv.id] = inv
	e.indexInviteesLocked(inv)
	e.indexInviterLocked(inv)
	if !inv.deadline.IsZero() && inv.timer == nil {
		e.armTimerLocked(inv)
	}
}

// ---- timers ----

// storeRetry is how long a timeout waits before it tries again after the
// store failed.
const storeRetry = time.Second

func (e *Engine) armTimerLocked(inv *invitation) {
	e.armTimerAfterLocked(inv, inv.deadline.Sub(e.clock.Now()))
}

func (e *Engine) armTimerAfterLocked(inv *invitation, d time.Duration) {
	if e.closed {
		return
	}
	if d < 0 {
		d = 0
	}
	inv.timer = e.afterLocked(d, func() { e.fireTimeout(inv) })
}

// errStaleTimer: a timer fired for an invitation that ended or was replaced
// since it was armed.
var errStaleTimer = errors.New("signaling: stale timer")

// fireTimeout is inv's timer: the timeout decision on the memory backend.
// If the store write fails, the invitation is put back (the undo) and its
// timer tries again after storeRetry.
func (e *Engine) fireTimeout(inv *invitation) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.doOr(ctx, func(t tx) error {
		if e.closed || e.invitations[inv.id] != inv {
			return errStaleTimer
		}
		inv.timer = nil
		return e.rules.timeout(t, inv.id)
	}, func() {
		if e.invitations[inv.id] != inv {
			return
		}
		if inv.timer != nil {
			inv.timer.Stop()
		}
		e.armTimerAfterLocked(inv, storeRetry)
	})
	if err != nil && !errors.Is(err, errStaleTimer) {
		e.log.Warn("invitation timeout not stored, will retry", "invite", inv.id, "err", err)
	}
}

// timeout times out every invitee of id who has not answered, which ends
// it. The inviter and those invitees get onInvitationTimeout listing them.
func (r rules) timeout(t tx, id string) error {
	inv, ok := t.invitation(id)
	if !ok {
		return nil
	}
	now := t.now()
	var timedOut []string
	for _, v := range inv.invitees {
		if v.state != StatePending {
			continue
		}
		timedOut = append(timedOut, v.user)
		t.apply(SetInviteeState{InviteID: inv.id, UserID: v.user, State: StateTimedOut, At: now, From: StatePending})
	}
	t.apply(DeleteInvitation{InviteID: inv.id})
	// The server decides it: kept past the inviter's quota, counted.
	t.keepAs(inv.inviter, true)
	t.emit(&outgoing{
		name:  protocol.EvInvitationTimeout,
		data:  protocol.TimeoutEvent{InviteID: inv.id, InviteeList: timedOut},
		users: append([]string{inv.inviter}, timedOut...),
		keep:  !inv.onlineOnly,
	})
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: inv.inviteeList(), Ended: true}
	for _, u := range timedOut {
		note.Changes = append(note.Changes, InviteeChange{UserID: u, State: StateTimedOut, Pushed: inv.pushed(u)})
	}
	t.note(note)
	return nil
}

// ---- operations ----

// resolveTimeout turns the request's timeout (seconds; nil → default) into
// a duration, 0 meaning none.
func (e *Engine) resolveTimeout(t *int) (time.Duration, error) {
	if t == nil {
		return e.cfg.DefaultTimeout, nil
	}
	if *t < 0 {
		return 0, protocol.ErrInvalidParameter.WithMessage("timeout must be >= 0 seconds")
	}
	d := time.Duration(*t) * time.Second
	if e.cfg.MaxTimeout > 0 && d > e.cfg.MaxTimeout {
		return 0, protocol.ErrTimeoutTooLarge.WithMessage("timeout %ds is above the maximum of %ds", *t, int(e.cfg.MaxTimeout/time.Second))
	}
	return d, nil
}

func (e *Engine) checkData(data string) error {
	if lim := e.cfg.Limits.MaxDataBytes; lim > 0 && len(data) > lim {
		return protocol.ErrDataTooLarge.WithMessage("data is %d bytes; the limit is %d", len(data), lim)
	}
	return nil
}

// checkPushInfo checks an offlinePushInfo against limits.max_push_info_bytes.
func (e *Engine) checkPushInfo(p *protocol.OfflinePushInfo) error {
	if lim := e.cfg.Limits.MaxPushInfoBytes; lim > 0 && p.Size() > lim {
		return protocol.ErrDataTooLarge.WithMessage("offlinePushInfo is %d bytes; the limit is %d", p.Size(), lim)
	}
	return nil
}

// InvitationSpec describes a new invitation, for CreateInvitation.
type InvitationSpec struct {
	// ID is the invitation's ID; empty: the engine makes one. The calls
	// layer chooses it so that it can register the call first.
	ID             string
	GroupID        string // "" for one-to-one
	Invitees       []string
	Data           string
	OnlineUserOnly bool
	Timeout        *int // seconds; nil: the default; 0: none
	// NoRing lists invitees who are not rung (no onReceiveNewInvitation,
	// now or when they connect): the calls layer answers for a busy
	// invitee at once.
	NoRing []string
	// PushInfo is the offlinePushInfo: the invitees rung who have no open
	// connection when the invitation is created get a push request
	// (InvitationNote.Pushed); nil: none.
	PushInfo *protocol.OfflinePushInfo
}

// Invite sends a one-to-one invitation.
func (e *Engine) Invite(ctx context.Context, a protocol.Actor, args protocol.InviteArgs) (string, error) {
	if args.Invitee == "" {
		return "", protocol.ErrInvalidParameter.WithMessage("invitee is required")
	}
	return e.CreateInvitation(ctx, a, InvitationSpec{Invitees: []string{args.Invitee}, Data: args.Data,
		OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout, PushInfo: args.OfflinePushInfo})
}

// InviteInGroup sends an invitation to members of a group; the inviter and
// every invitee must be members.
func (e *Engine) InviteInGroup(ctx context.Context, a protocol.Actor, args protocol.InviteInGroupArgs) (string, error) {
	if args.GroupID == "" {
		return "", protocol.ErrInvalidParameter.WithMessage("groupID is required")
	}
	if len(args.InviteeList) == 0 {
		return "", protocol.ErrInvalidParameter.WithMessage("inviteeList is empty")
	}
	return e.CreateInvitation(ctx, a, InvitationSpec{GroupID: args.GroupID, Invitees: args.InviteeList, Data: args.Data,
		OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout, PushInfo: args.OfflinePushInfo})
}

// CreateInvitation creates an invitation: the common path of invite and
// inviteInGroup, open to the layers built on signaling.
func (e *Engine) CreateInvitation(ctx context.Context, a protocol.Actor, spec InvitationSpec) (string, error) {
	invitees := spec.Invitees
	if len(invitees) == 0 {
		return "", protocol.ErrInvalidParameter.WithMessage("no invitee")
	}
	if lim := e.cfg.Limits.MaxInvitees; lim > 0 && len(invitees) > lim {
		return "", protocol.ErrListTooLarge.WithMessage("inviteeList has %d users; the limit is %d", len(invitees), lim)
	}
	var seen map[string]struct{} // one invitee (a call): no list to check
	if len(invitees) > 1 {
		seen = make(map[string]struct{}, len(invitees))
	}
	for _, u := range invitees {
		if !protocol.ValidUserID(u) {
			return "", protocol.ErrInvalidParameter.WithMessage("invalid user ID %q", u)
		}
		if u == a.UserID {
			return "", protocol.ErrInvalidParameter.WithMessage("cannot invite yourself")
		}
		if seen == nil {
			continue
		}
		if _, dup := seen[u]; dup {
			return "", protocol.ErrInvalidParameter.WithMessage("user %q is listed twice", u)
		}
		seen[u] = struct{}{}
	}
	if err := e.checkData(spec.Data); err != nil {
		return "", err
	}
	if err := e.checkPushInfo(spec.PushInfo); err != nil {
		return "", err
	}
	d, err := e.resolveTimeout(spec.Timeout)
	if err != nil {
		return "", err
	}

	var id string
	var h txHint // what the Redis backend reads; standalone: nothing
	if e.cl != nil {
		h = txHint{users: append([]string{a.UserID}, invitees...), sentBy: []string{a.UserID}, ringing: invitees}
		if spec.ID != "" {
			h.invs = []string{spec.ID}
		}
		if spec.GroupID != "" {
			h.groups = []string{spec.GroupID}
		}
	}
	err = e.doHint(ctx, h, func(t tx) error {
		if e.closing(t) {
			return protocol.ErrShuttingDown
		}
		var err error
		id, err = e.rules.createInvitation(t, a, spec, d)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// createInvitation decides a new invitation of a (its arguments checked),
// with timeout d (0: none), and returns its ID. Its timer is armed once it
// is committed.
func (r rules) createInvitation(t tx, a protocol.Actor, spec InvitationSpec, d time.Duration) (string, error) {
	groupID, invitees := spec.GroupID, spec.Invitees
	if groupID != "" {
		found, member := t.groupMember(groupID, a.UserID)
		if !found {
			return "", protocol.ErrGroupNotFound.WithMessage("group %q not found", groupID)
		}
		if !member {
			return "", protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", groupID)
		}
		for _, u := range invitees {
			if _, member := t.groupMember(groupID, u); !member {
				return "", protocol.ErrNotGroupMember.WithMessage("%q is not a member of group %q", u, groupID)
			}
		}
	}
	if err := r.checkPending(t, a.UserID, invitees, spec.OnlineUserOnly, spec.NoRing); err != nil {
		return "", err
	}
	id := spec.ID
	if id == "" {
		id = t.newID("inv_")
	} else if _, exists := t.invitation(id); exists {
		return "", protocol.ErrAlreadyExists.WithMessage("invitation %q exists", id)
	}
	now := t.now()
	inv := &invitation{id: id, inviter: a.UserID, groupID: groupID, data: spec.Data,
		onlineOnly: spec.OnlineUserOnly, createdAt: now}
	if d > 0 {
		inv.deadline = now.Add(d)
	}
	var push *protocol.OfflinePushInfo
	if !inv.onlineOnly && spec.PushInfo != nil {
		p := *spec.PushInfo
		push = &p
		b, _ := json.Marshal(push) // strings only: cannot fail
		inv.push = string(b)
	}
	var pushed []string
	for _, u := range invitees {
		ent := inviteeEntry{user: u, state: StatePending, at: now, noRing: slices.Contains(spec.NoRing, u)}
		// An invitee rung with no device connected now gets a push request.
		if ent.pushed = push != nil && !ent.noRing && !t.online(u); ent.pushed {
			pushed = append(pushed, u)
		}
		inv.invitees = append(inv.invitees, ent)
	}
	t.apply(PutInvitation{Invitation: inv.record()})
	exceptSess, silent := except(a)
	t.emit(&outgoing{name: protocol.EvReceiveNewInvitation, data: inv.newInvitationEvent(now),
		users:  slices.DeleteFunc(inv.parties(), func(u string) bool { return slices.Contains(spec.NoRing, u) }),
		except: exceptSess, silent: silent})
	t.note(&InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: groupID, Data: inv.data,
		Invitees: inv.inviteeList(), Created: true, PushInfo: push, Pushed: pushed, Deadline: inv.deadline})
	return inv.id, nil
}

// checkPending checks that inviter may have one more invitation in
// progress and that each invitee it would ring (a stored invitation) may
// have one more ringing.
func (r rules) checkPending(t tx, inviter string, invitees []string, onlineOnly bool, noRing []string) error {
	if lim := r.cfg.Limits.MaxPendingPerInviter; lim > 0 {
		if n := t.liveSentBy(inviter); n >= lim {
			return protocol.ErrTooManyInvitations.WithMessage("you have %d invitations in progress; the limit is %d", n, lim)
		}
	}
	if lim := r.cfg.Limits.MaxPendingPerInvitee; lim > 0 && !onlineOnly {
		for _, u := range invitees {
			if n := t.ringingFor(u); n >= lim && !slices.Contains(noRing, u) {
				return protocol.ErrInviteePendingFull.WithMessage("%d invitations are already ringing for %q; the limit is %d", n, u, lim)
			}
		}
	}
	return nil
}

// invHint is the hint of an op on invitation id: that invitation, read by
// the Redis backend; standalone, nothing.
func (e *Engine) invHint(id string) txHint {
	if e.cl == nil {
		return txHint{}
	}
	return txHint{invs: []string{id}}
}

// Accept is an invitee's acceptance.
func (e *Engine) Accept(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	return e.answer(ctx, a, args, ActionAccept)
}

// Reject is an invitee's rejection.
func (e *Engine) Reject(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	return e.answer(ctx, a, args, ActionReject)
}

func (e *Engine) answer(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, action Action) error {
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	return e.doHint(ctx, e.invHint(args.InviteID), func(t tx) error { return e.rules.answer(t, a, args, action) })
}

// answer decides an invitee's accept or reject; the last answer ends the
// invitation.
func (r rules) answer(t tx, a protocol.Actor, args protocol.InviteIDArgs, action Action) error {
	inv, ok := t.invitation(args.InviteID)
	if !ok {
		return protocol.ErrInvalidInviteID.WithMessage("unknown or ended invitation %q", args.InviteID)
	}
	prev := inv.stateOf(a.UserID)
	if prev == StateUnknown {
		return protocol.ErrInvalidInviteID.WithMessage("you are not an invitee of %q", args.InviteID)
	}
	next, err := NextState(prev, action)
	if err != nil {
		return err
	}
	name := protocol.EvInviteeAccepted
	if action == ActionReject {
		name = protocol.EvInviteeRejected
	}
	exceptSess, silent := except(a)
	t.keepAs(a.UserID, false)
	t.emit(&outgoing{name: name, data: protocol.InviteeEvent{InviteID: inv.id, Invitee: a.UserID, Data: args.Data},
		lean:  protocol.InviteeEvent{InviteID: inv.id, Invitee: a.UserID},
		users: inv.parties(), except: exceptSess, silent: silent, keep: !inv.onlineOnly})
	now := t.now()
	inv.setState(a.UserID, next, now) // the copy: does it end?
	ended := inv.allFinal()
	t.apply(SetInviteeState{InviteID: inv.id, UserID: a.UserID, State: next, At: now, From: prev})
	if ended {
		t.apply(DeleteInvitation{InviteID: inv.id})
	}
	t.note(&InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: inv.inviteeList(), Changes: []InviteeChange{{UserID: a.UserID, State: next, Data: args.Data, Pushed: inv.pushed(a.UserID)}}, Ended: ended})
	return nil
}

// ownInvitation returns a copy of the live invitation id if a is its
// inviter; verb names the refused op in the error.
func ownInvitation(t tx, a protocol.Actor, id, verb string) (*invitation, error) {
	inv, ok := t.invitation(id)
	if !ok {
		return nil, protocol.ErrInvalidInviteID.WithMessage("unknown or ended invitation %q", id)
	}
	if inv.inviter != a.UserID {
		return nil, protocol.ErrNoPermission.WithMessage("only the inviter may %s %q", verb, id)
	}
	return inv, nil
}

// Cancel is the inviter's cancellation, allowed while no invitee has answered.
func (e *Engine) Cancel(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	return e.doHint(ctx, e.invHint(args.InviteID), func(t tx) error { return e.rules.cancel(t, a, args) })
}

func (r rules) cancel(t tx, a protocol.Actor, args protocol.InviteIDArgs) error {
	inv, err := ownInvitation(t, a, args.InviteID, "cancel")
	if err != nil {
		return err
	}
	if inv.anyAnswered() {
		return protocol.ErrInvalidInviteID.WithMessage("invitation %q was already answered; it can no longer be cancelled", args.InviteID)
	}
	exceptSess, silent := except(a)
	t.keepAs(a.UserID, false)
	t.emit(&outgoing{name: protocol.EvInvitationCancelled, data: protocol.CancelledEvent{InviteID: inv.id, Inviter: inv.inviter, Data: args.Data},
		lean:  protocol.CancelledEvent{InviteID: inv.id, Inviter: inv.inviter},
		users: inv.parties(), except: exceptSess, silent: silent, keep: !inv.onlineOnly})
	now := t.now()
	users := inv.inviteeList()
	for _, u := range users {
		t.apply(SetInviteeState{InviteID: inv.id, UserID: u, State: StateCancelled, At: now, From: StatePending})
	}
	t.apply(DeleteInvitation{InviteID: inv.id})
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: users, Ended: true}
	for _, u := range users {
		note.Changes = append(note.Changes, InviteeChange{UserID: u, State: StateCancelled, Data: args.Data, Pushed: inv.pushed(u)})
	}
	t.note(note)
	return nil
}

// ModifyInvitation replaces an invitation's data; the inviter only, and not
// for onlineUserOnly invitations.
func (e *Engine) ModifyInvitation(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	return e.doHint(ctx, e.invHint(args.InviteID), func(t tx) error { return e.rules.modify(t, a, args) })
}

func (r rules) modify(t tx, a protocol.Actor, args protocol.InviteIDArgs) error {
	inv, err := ownInvitation(t, a, args.InviteID, "modify")
	if err != nil {
		return err
	}
	if inv.onlineOnly {
		return protocol.ErrInvalidParameter.WithMessage("onlineUserOnly invitations cannot be modified")
	}
	exceptSess, silent := except(a)
	t.keepAs(a.UserID, false)
	t.emit(&outgoing{name: protocol.EvInvitationModified, data: protocol.ModifiedEvent{InviteID: inv.id, Data: args.Data},
		users: inv.parties(), except: exceptSess, silent: silent, keep: true})
	t.apply(SetInvitationData{InviteID: inv.id, Data: args.Data})
	t.note(&InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: args.Data, Invitees: inv.inviteeList()})
	return nil
}

// InvitationInfo is a read-only view of a live invitation, for the layers
// built on signaling (calls) and for tests.
type InvitationInfo struct {
	ID             string
	Inviter        string
	GroupID        string
	Data           string
	OnlineUserOnly bool
	CreatedAt      time.Time
	Deadline       time.Time
	States         map[string]InviteeState
	Invitees       []string
}

// Invitation returns a live invitation's state, or false when it is unknown or ended.
func (e *Engine) Invitation(id string) (InvitationInfo, bool) {
	var inv *invitation
	if e.cl != nil {
		var err error
		if inv, err = e.cl.invitation(id); err != nil {
			e.log.Warn("invitation not read", "invite", id, "err", err)
		}
	} else {
		e.mu.Lock()
		defer e.mu.Unlock()
		inv = e.invitations[id]
	}
	if inv == nil {
		return InvitationInfo{}, false
	}
	info := InvitationInfo{ID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		OnlineUserOnly: inv.onlineOnly, CreatedAt: inv.createdAt, Deadline: inv.deadline,
		States: make(map[string]InviteeState, len(inv.invitees)), Invitees: inv.inviteeList()}
	for _, v := range inv.invitees {
		info.States[v.user] = v.state
	}
	return info, true
}
