package signaling

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// invitation is the engine's in-memory invitation. Guarded by Engine.mu.
type invitation struct {
	id         string
	inviter    string
	groupID    string
	data       string
	onlineOnly bool
	createdAt  time.Time
	deadline   time.Time // zero: no timeout
	invitees   []inviteeEntry
	timer      protocol.Timer
	push       *protocol.OfflinePushInfo // nil: none; never changed once created
	// ringing: created, and its ring not yet delivered (the commit is under
	// way). A connection that opens meanwhile gets the ring live with the
	// others, so its replay leaves the invitation out.
	ringing bool
}

type inviteeEntry struct {
	user   string
	state  InviteeState
	at     time.Time
	noRing bool // never rung (CreateInvitation's NoRing); in memory only
	pushed bool // a push request was sent for them (offline when created)
}

// pushed reports whether a push request was sent for user.
func (inv *invitation) pushed(user string) bool {
	for _, v := range inv.invitees {
		if v.user == user {
			return v.pushed
		}
	}
	return false
}

func (inv *invitation) stateOf(user string) InviteeState {
	for _, v := range inv.invitees {
		if v.user == user {
			return v.state
		}
	}
	return StateUnknown
}

func (inv *invitation) setState(user string, s InviteeState, at time.Time) {
	for i := range inv.invitees {
		if inv.invitees[i].user == user {
			inv.invitees[i].state, inv.invitees[i].at = s, at
			return
		}
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
	return append([]string{inv.inviter}, inv.inviteeList()...)
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

func (inv *invitation) record() InvitationRecord {
	r := InvitationRecord{ID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		CreatedAt: inv.createdAt, Deadline: inv.deadline}
	if inv.push != nil {
		b, _ := json.Marshal(inv.push) // strings only: cannot fail
		r.PushInfo = string(b)
	}
	for _, v := range inv.invitees {
		r.Invitees = append(r.Invitees, InviteeRecord{UserID: v.user, State: v.state, UpdatedAt: v.at, Pushed: v.pushed})
	}
	return r
}

func invitationFromRecord(r InvitationRecord) *invitation {
	inv := &invitation{id: r.ID, inviter: r.Inviter, groupID: r.GroupID, data: r.Data,
		createdAt: r.CreatedAt, deadline: r.Deadline}
	if r.PushInfo != "" {
		var p protocol.OfflinePushInfo
		if json.Unmarshal([]byte(r.PushInfo), &p) == nil {
			inv.push = &p
		}
	}
	for _, v := range r.Invitees {
		inv.invitees = append(inv.invitees, inviteeEntry{user: v.UserID, state: v.State, at: v.UpdatedAt, pushed: v.Pushed})
	}
	return inv
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
			m = make(map[string]*invitation)
			e.byInvitee[v.user] = m
		}
		m[inv.id] = inv
	}
}

func (e *Engine) indexInviterLocked(inv *invitation) {
	m := e.byInviter[inv.inviter]
	if m == nil {
		m = make(map[string]*invitation)
		e.byInviter[inv.inviter] = m
	}
	m[inv.id] = inv
}

func (e *Engine) unindexInviterLocked(inv *invitation) {
	if m := e.byInviter[inv.inviter]; m != nil {
		delete(m, inv.id)
		if len(m) == 0 {
			delete(e.byInviter, inv.inviter)
		}
	}
}

func (e *Engine) unindexInviteeLocked(inv *invitation, user string) {
	if m := e.byInvitee[user]; m != nil {
		delete(m, inv.id)
		if len(m) == 0 {
			delete(e.byInvitee, user)
		}
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

// fireTimeout times out every invitee who has not answered. The inviter and
// those invitees get onInvitationTimeout listing them.
func (e *Engine) fireTimeout(inv *invitation) {
	e.mu.Lock()
	if e.closed || e.invitations[inv.id] != inv {
		e.mu.Unlock()
		return
	}
	inv.timer = nil
	now := e.clock.Now()
	var timedOut []string
	var muts []Mutation
	for _, v := range inv.invitees {
		if v.state != StatePending {
			continue
		}
		timedOut = append(timedOut, v.user)
		inv.setState(v.user, StateTimedOut, now)
	}
	e.removeLocked(inv)
	if !inv.onlineOnly { // the invitees' states go with it
		muts = append(muts, DeleteInvitation{InviteID: inv.id})
	}
	evs := []*outgoing{{
		name:  protocol.EvInvitationTimeout,
		data:  protocol.TimeoutEvent{InviteID: inv.id, InviteeList: timedOut},
		users: append([]string{inv.inviter}, timedOut...),
		keep:  !inv.onlineOnly,
	}}
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: inv.inviteeList(), Ended: true}
	for _, u := range timedOut {
		note.Changes = append(note.Changes, InviteeChange{UserID: u, State: StateTimedOut, Pushed: inv.pushed(u)})
	}
	if err := e.planLocked(evs, inv.inviter, true); err != nil {
		e.log.Error("timeout event not kept", "invite", inv.id, "err", err)
	}
	e.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.finishNote(ctx, muts, evs, func() {
		for _, u := range timedOut {
			inv.setState(u, StatePending, now)
		}
		e.restoreLocked(inv)
		if inv.timer != nil {
			inv.timer.Stop()
		}
		e.armTimerAfterLocked(inv, storeRetry)
	}, note)
	if err != nil {
		e.log.Warn("invitation timeout not stored, will retry", "invite", inv.id, "err", err)
	}
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
	groupID, invitees, data, onlineOnly, timeout := spec.GroupID, spec.Invitees, spec.Data, spec.OnlineUserOnly, spec.Timeout
	if len(invitees) == 0 {
		return "", protocol.ErrInvalidParameter.WithMessage("no invitee")
	}
	if lim := e.cfg.Limits.MaxInvitees; lim > 0 && len(invitees) > lim {
		return "", protocol.ErrListTooLarge.WithMessage("inviteeList has %d users; the limit is %d", len(invitees), lim)
	}
	seen := make(map[string]struct{}, len(invitees))
	for _, u := range invitees {
		if !protocol.ValidUserID(u) {
			return "", protocol.ErrInvalidParameter.WithMessage("invalid user ID %q", u)
		}
		if u == a.UserID {
			return "", protocol.ErrInvalidParameter.WithMessage("cannot invite yourself")
		}
		if _, dup := seen[u]; dup {
			return "", protocol.ErrInvalidParameter.WithMessage("user %q is listed twice", u)
		}
		seen[u] = struct{}{}
	}
	if err := e.checkData(data); err != nil {
		return "", err
	}
	if err := e.checkPushInfo(spec.PushInfo); err != nil {
		return "", err
	}
	d, err := e.resolveTimeout(timeout)
	if err != nil {
		return "", err
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return "", protocol.ErrShuttingDown
	}
	if groupID != "" {
		g := e.groups[groupID]
		if g == nil {
			e.mu.Unlock()
			return "", protocol.ErrGroupNotFound.WithMessage("group %q not found", groupID)
		}
		if !g.has(a.UserID) {
			e.mu.Unlock()
			return "", protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", groupID)
		}
		for _, u := range invitees {
			if !g.has(u) {
				e.mu.Unlock()
				return "", protocol.ErrNotGroupMember.WithMessage("%q is not a member of group %q", u, groupID)
			}
		}
	}
	if err := e.checkPendingLocked(a.UserID, invitees, onlineOnly, spec.NoRing); err != nil {
		e.mu.Unlock()
		return "", err
	}
	id := spec.ID
	if id == "" {
		id = e.newID("inv_")
	} else if e.invitations[id] != nil {
		e.mu.Unlock()
		return "", protocol.ErrAlreadyExists.WithMessage("invitation %q exists", id)
	}
	now := e.clock.Now()
	inv := &invitation{id: id, inviter: a.UserID, groupID: groupID, data: data,
		onlineOnly: onlineOnly, createdAt: now}
	if d > 0 {
		inv.deadline = now.Add(d)
	}
	if !onlineOnly && spec.PushInfo != nil {
		p := *spec.PushInfo
		inv.push = &p
	}
	var pushed []string
	for _, u := range invitees {
		ent := inviteeEntry{user: u, state: StatePending, at: now, noRing: slices.Contains(spec.NoRing, u)}
		// An invitee rung with no device connected now gets a push request.
		if ent.pushed = inv.push != nil && !ent.noRing && len(e.sessions[u]) == 0; ent.pushed {
			pushed = append(pushed, u)
		}
		inv.invitees = append(inv.invitees, ent)
	}
	e.invitations[inv.id] = inv
	e.indexInviteesLocked(inv)
	e.indexInviterLocked(inv)
	inv.ringing = true
	exceptSess, silent := except(a)
	evs := []*outgoing{{name: protocol.EvReceiveNewInvitation, data: inv.newInvitationEvent(now),
		users:  slices.DeleteFunc(inv.parties(), func(u string) bool { return slices.Contains(spec.NoRing, u) }),
		except: exceptSess, silent: silent, settled: func() { inv.ringing = false }}}
	// The record and the note are taken under mu: once the invitation is
	// indexed, an answer may change its invitees' states.
	var muts []Mutation
	if !onlineOnly {
		muts = []Mutation{PutInvitation{Invitation: inv.record()}}
	}
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: groupID, Data: data,
		Invitees: inv.inviteeList(), Created: true, PushInfo: inv.push, Pushed: pushed, Deadline: inv.deadline}
	e.mu.Unlock()
	err = e.finishNote(ctx, muts, evs, func() { e.removeLocked(inv) }, note)
	if err != nil {
		return "", err
	}
	if !inv.deadline.IsZero() {
		e.mu.Lock()
		if e.invitations[inv.id] == inv && inv.timer == nil {
			e.armTimerLocked(inv)
		}
		e.mu.Unlock()
	}
	return inv.id, nil
}

// checkPendingLocked checks that inviter may have one more invitation in
// progress and that each invitee it would ring (a stored invitation) may
// have one more ringing.
func (e *Engine) checkPendingLocked(inviter string, invitees []string, onlineOnly bool, noRing []string) error {
	if lim := e.cfg.Limits.MaxPendingPerInviter; lim > 0 && len(e.byInviter[inviter]) >= lim {
		return protocol.ErrTooManyInvitations.WithMessage("you have %d invitations in progress; the limit is %d", len(e.byInviter[inviter]), lim)
	}
	if lim := e.cfg.Limits.MaxPendingPerInvitee; lim > 0 && !onlineOnly {
		for _, u := range invitees {
			if len(e.byInvitee[u]) >= lim && !slices.Contains(noRing, u) {
				return protocol.ErrInviteePendingFull.WithMessage("%d invitations are already ringing for %q; the limit is %d", len(e.byInvitee[u]), u, lim)
			}
		}
	}
	return nil
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
	e.mu.Lock()
	inv := e.invitations[args.InviteID]
	if inv == nil {
		e.mu.Unlock()
		return protocol.ErrInvalidInviteID.WithMessage("unknown or ended invitation %q", args.InviteID)
	}
	prev := inv.stateOf(a.UserID)
	if prev == StateUnknown {
		e.mu.Unlock()
		return protocol.ErrInvalidInviteID.WithMessage("you are not an invitee of %q", args.InviteID)
	}
	next, err := NextState(prev, action)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	name := protocol.EvInviteeAccepted
	if action == ActionReject {
		name = protocol.EvInviteeRejected
	}
	exceptSess, silent := except(a)
	evs := []*outgoing{{name: name, data: protocol.InviteeEvent{InviteID: inv.id, Invitee: a.UserID, Data: args.Data},
		lean:  protocol.InviteeEvent{InviteID: inv.id, Invitee: a.UserID},
		users: inv.parties(), except: exceptSess, silent: silent, keep: !inv.onlineOnly}}
	if err := e.planLocked(evs, a.UserID, false); err != nil {
		e.mu.Unlock()
		return err
	}
	now := e.clock.Now()
	inv.setState(a.UserID, next, now)
	e.unindexInviteeLocked(inv, a.UserID)
	ended := inv.allFinal()
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: inv.inviteeList(), Changes: []InviteeChange{{UserID: a.UserID, State: next, Data: args.Data, Pushed: inv.pushed(a.UserID)}}, Ended: ended}
	if ended {
		e.removeLocked(inv)
	}
	e.mu.Unlock()

	var muts []Mutation
	switch {
	case inv.onlineOnly:
	case ended:
		// The deletion takes the invitees' states with it: writing the
		// answer first would be work for nothing.
		muts = append(muts, DeleteInvitation{InviteID: inv.id})
	default:
		muts = append(muts, SetInviteeState{InviteID: inv.id, UserID: a.UserID, State: next, At: now})
	}
	return e.finishNote(ctx, muts, evs, func() {
		inv.setState(a.UserID, StatePending, now)
		if ended {
			e.restoreLocked(inv)
		} else {
			e.indexInviteesLocked(inv)
		}
	}, note)
}

// ownInvitationLocked returns the live invitation id if a is its inviter;
// verb names the refused op in the error.
func (e *Engine) ownInvitationLocked(a protocol.Actor, id, verb string) (*invitation, error) {
	inv := e.invitations[id]
	if inv == nil {
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
	e.mu.Lock()
	inv, err := e.ownInvitationLocked(a, args.InviteID, "cancel")
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if inv.anyAnswered() {
		e.mu.Unlock()
		return protocol.ErrInvalidInviteID.WithMessage("invitation %q was already answered; it can no longer be cancelled", args.InviteID)
	}
	exceptSess, silent := except(a)
	evs := []*outgoing{{name: protocol.EvInvitationCancelled, data: protocol.CancelledEvent{InviteID: inv.id, Inviter: inv.inviter, Data: args.Data},
		lean:  protocol.CancelledEvent{InviteID: inv.id, Inviter: inv.inviter},
		users: inv.parties(), except: exceptSess, silent: silent, keep: !inv.onlineOnly}}
	if err := e.planLocked(evs, a.UserID, false); err != nil {
		e.mu.Unlock()
		return err
	}
	now := e.clock.Now()
	users := inv.inviteeList()
	var muts []Mutation
	for _, u := range users {
		inv.setState(u, StateCancelled, now)
	}
	e.removeLocked(inv)
	if !inv.onlineOnly { // the invitees' states go with it
		muts = append(muts, DeleteInvitation{InviteID: inv.id})
	}
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: inv.data,
		Invitees: users, Ended: true}
	for _, u := range users {
		note.Changes = append(note.Changes, InviteeChange{UserID: u, State: StateCancelled, Data: args.Data, Pushed: inv.pushed(u)})
	}
	e.mu.Unlock()
	return e.finishNote(ctx, muts, evs, func() {
		for _, u := range users {
			inv.setState(u, StatePending, now)
		}
		e.restoreLocked(inv)
	}, note)
}

// ModifyInvitation replaces an invitation's data; the inviter only, and not
// for onlineUserOnly invitations.
func (e *Engine) ModifyInvitation(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	e.mu.Lock()
	inv, err := e.ownInvitationLocked(a, args.InviteID, "modify")
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if inv.onlineOnly {
		e.mu.Unlock()
		return protocol.ErrInvalidParameter.WithMessage("onlineUserOnly invitations cannot be modified")
	}
	exceptSess, silent := except(a)
	evs := []*outgoing{{name: protocol.EvInvitationModified, data: protocol.ModifiedEvent{InviteID: inv.id, Data: args.Data},
		users: inv.parties(), except: exceptSess, silent: silent, keep: true}}
	if err := e.planLocked(evs, a.UserID, false); err != nil {
		e.mu.Unlock()
		return err
	}
	prev := inv.data
	inv.data = args.Data
	note := &InvitationNote{InviteID: inv.id, Inviter: inv.inviter, GroupID: inv.groupID, Data: args.Data, Invitees: inv.inviteeList()}
	e.mu.Unlock()
	return e.finishNote(ctx, []Mutation{SetInvitationData{InviteID: inv.id, Data: args.Data}}, evs, func() {
		if inv.data == args.Data {
			inv.data = prev
		}
	}, note)
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
	e.mu.Lock()
	defer e.mu.Unlock()
	inv := e.invitations[id]
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
