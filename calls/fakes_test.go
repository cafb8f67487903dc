package calls_test

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Test doubles of the two small interfaces calls takes (calls.Invitations
// and calls.Rooms), for the unit tests of the call state machine in
// unit_test.go. They keep just enough state to refuse what the real engine
// and rooms refuse (answering an invitation one is not ringing on,
// cancelling another's invitation, entering a room one is not admitted to),
// record every call the manager makes, and tell the manager's observer
// hooks synchronously, after the operation and with no lock of theirs held
// (the real ones tell them later, on one goroutine, in the same order).

var (
	_ calls.Invitations = (*fakeEngine)(nil)
	_ calls.Rooms       = (*fakeRooms)(nil)
)

// fakeInvitation is one live invitation of the fake engine.
type fakeInvitation struct {
	spec    signaling.InvitationSpec
	inviter string
	state   map[string]signaling.InviteeState
}

func (inv *fakeInvitation) allFinal() bool {
	for _, s := range inv.state {
		if s == signaling.StatePending {
			return false
		}
	}
	return true
}

// answerRec is one Accept, Reject or Cancel the manager made.
type answerRec struct {
	Op       string // accept, reject, cancel
	User     string
	InviteID string
	Data     string
	Silent   bool
}

// notifyRec is one Notify (the call-end invitation).
type notifyRec struct {
	From, GroupID, Data string
	To                  []string
}

// eventRec is one SendEvent.
type eventRec struct {
	Users []string
	Name  string
	Data  any
	Keep  bool
}

// fakeEngine is an in-memory calls.Invitations.
type fakeEngine struct {
	mu        sync.Mutex
	ids       int
	groups    map[string][]string
	live      map[string]*fakeInvitation
	created   []signaling.InvitationSpec // every CreateInvitation, spec.ID set
	answers   []answerRec
	notifies  []notifyRec
	events    []eventRec
	observers []signaling.Observer
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{groups: map[string][]string{}, live: map[string]*fakeInvitation{}}
}

func (e *fakeEngine) NewID(prefix string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ids++
	return fmt.Sprintf("%s%d", prefix, e.ids)
}

func (e *fakeEngine) CreateInvitation(_ context.Context, a protocol.Actor, spec signaling.InvitationSpec) (string, error) {
	e.mu.Lock()
	if spec.ID == "" {
		e.ids++
		spec.ID = fmt.Sprintf("inv_%d", e.ids)
	}
	if e.live[spec.ID] != nil {
		e.mu.Unlock()
		return "", protocol.ErrInvalidParameter.WithMessage("duplicate invitation %q", spec.ID)
	}
	inv := &fakeInvitation{spec: spec, inviter: a.UserID, state: map[string]signaling.InviteeState{}}
	for _, u := range spec.Invitees {
		inv.state[u] = signaling.StatePending
	}
	e.live[spec.ID] = inv
	e.created = append(e.created, spec)
	note := signaling.InvitationNote{InviteID: spec.ID, Inviter: a.UserID, GroupID: spec.GroupID, Data: spec.Data,
		Invitees: slices.Clone(spec.Invitees), Created: true}
	obs := slices.Clone(e.observers)
	e.mu.Unlock()
	tell(obs, note)
	return spec.ID, nil
}

func (e *fakeEngine) Accept(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	return e.answer(a, args, "accept", signaling.StateAccepted)
}

func (e *fakeEngine) Reject(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	return e.answer(a, args, "reject", signaling.StateRejected)
}

func (e *fakeEngine) answer(a protocol.Actor, args protocol.InviteIDArgs, op string, state signaling.InviteeState) error {
	e.mu.Lock()
	inv := e.live[args.InviteID]
	if inv == nil || inv.state[a.UserID] != signaling.StatePending {
		e.mu.Unlock()
		return protocol.ErrInvalidInviteID.WithMessage("not ringing %q on %q", a.UserID, args.InviteID)
	}
	inv.state[a.UserID] = state
	e.answers = append(e.answers, answerRec{Op: op, User: a.UserID, InviteID: args.InviteID, Data: args.Data, Silent: a.Silent})
	note := e.noteLocked(inv, []signaling.InviteeChange{{UserID: a.UserID, State: state, Data: args.Data}})
	obs := slices.Clone(e.observers)
	e.mu.Unlock()
	tell(obs, note)
	return nil
}

func (e *fakeEngine) Cancel(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	e.mu.Lock()
	inv := e.live[args.InviteID]
	if inv == nil {
		e.mu.Unlock()
		return protocol.ErrInvalidInviteID.WithMessage("unknown or ended invitation %q", args.InviteID)
	}
	if inv.inviter != a.UserID {
		e.mu.Unlock()
		return protocol.ErrNoPermission.WithMessage("only the inviter may cancel %q", args.InviteID)
	}
	var changes []signaling.InviteeChange
	for _, u := range inv.spec.Invitees {
		if s := inv.state[u]; s == signaling.StateAccepted || s == signaling.StateRejected {
			e.mu.Unlock()
			return protocol.ErrInvalidInviteID.WithMessage("invitation %q was already answered", args.InviteID)
		}
	}
	for _, u := range inv.spec.Invitees {
		inv.state[u] = signaling.StateCancelled
		changes = append(changes, signaling.InviteeChange{UserID: u, State: signaling.StateCancelled, Data: args.Data})
	}
	e.answers = append(e.answers, answerRec{Op: "cancel", User: a.UserID, InviteID: args.InviteID, Data: args.Data, Silent: a.Silent})
	note := e.noteLocked(inv, changes)
	obs := slices.Clone(e.observers)
	e.mu.Unlock()
	tell(obs, note)
	return nil
}

// timeout times out every invitee still ringing on inviteID, as the
// engine's invitation timer does.
func (e *fakeEngine) timeout(inviteID string) {
	e.mu.Lock()
	inv := e.live[inviteID]
	if inv == nil {
		e.mu.Unlock()
		return
	}
	var changes []signaling.InviteeChange
	for _, u := range inv.spec.Invitees {
		if inv.state[u] == signaling.StatePending {
			inv.state[u] = signaling.StateTimedOut
			changes = append(changes, signaling.InviteeChange{UserID: u, State: signaling.StateTimedOut})
		}
	}
	note := e.noteLocked(inv, changes)
	obs := slices.Clone(e.observers)
	e.mu.Unlock()
	tell(obs, note)
}

// noteLocked builds the note of a change to inv and forgets inv once no
// invitee is pending.
func (e *fakeEngine) noteLocked(inv *fakeInvitation, changes []signaling.InviteeChange) signaling.InvitationNote {
	ended := inv.allFinal()
	if ended {
		delete(e.live, inv.spec.ID)
	}
	return signaling.InvitationNote{InviteID: inv.spec.ID, Inviter: inv.inviter, GroupID: inv.spec.GroupID, Data: inv.spec.Data,
		Invitees: slices.Clone(inv.spec.Invitees), Changes: changes, Ended: ended}
}

func tell(obs []signaling.Observer, n signaling.InvitationNote) {
	for _, o := range obs {
		o.InvitationNote(n)
	}
}

func (e *fakeEngine) ModifyInvitation(context.Context, protocol.Actor, protocol.InviteIDArgs) error {
	return nil
}

func (e *fakeEngine) Notify(_ context.Context, from protocol.Actor, to []string, groupID, data string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ids++
	e.notifies = append(e.notifies, notifyRec{From: from.UserID, To: slices.Clone(to), GroupID: groupID, Data: data})
	return fmt.Sprintf("inv_%d", e.ids), nil
}

func (e *fakeEngine) SendEvent(_ context.Context, users []string, name string, data any, keep bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, eventRec{Users: slices.Clone(users), Name: name, Data: data, Keep: keep})
	return nil
}

func (e *fakeEngine) IsGroupMember(groupID, user string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.groups[groupID], user)
}

func (e *fakeEngine) AddObserver(o signaling.Observer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.observers = append(e.observers, o)
}

func (e *fakeEngine) Ops() map[string]protocol.OpFunc { return map[string]protocol.OpFunc{} }

// eventsNamed returns the events sent with name.
func (e *fakeEngine) eventsNamed(name string) []eventRec {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []eventRec
	for _, ev := range e.events {
		if ev.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

func (e *fakeEngine) createdSpecs() []signaling.InvitationSpec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.created)
}

func (e *fakeEngine) answerRecs() []answerRec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.answers)
}

func (e *fakeEngine) notifyRecs() []notifyRec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.notifies)
}

// fakeRooms is an in-memory calls.Rooms: claims, and who is connected in
// each claimed room.
type fakeRooms struct {
	mu        sync.Mutex
	claims    map[string]*rooms.Claim
	members   map[string]map[string]bool // room → connected users
	released  []string                   // room IDs, in order
	admitters []rooms.Admitter
	observers []rooms.Observer
}

func newFakeRooms() *fakeRooms {
	return &fakeRooms{claims: map[string]*rooms.Claim{}, members: map[string]map[string]bool{}}
}

func (r *fakeRooms) AddAdmitter(a rooms.Admitter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.admitters = append(r.admitters, a)
}

func (r *fakeRooms) AddObserver(o rooms.Observer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observers = append(r.observers, o)
}

func (r *fakeRooms) Claim(roomID string) (*rooms.Claim, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claims[roomID] != nil {
		return nil, rooms.ErrRoomTaken
	}
	c := new(rooms.Claim)
	r.claims[roomID] = c
	return c, nil
}

func (r *fakeRooms) roomOf(c *rooms.Claim) string {
	for id, x := range r.claims {
		if x == c {
			return id
		}
	}
	return ""
}

// Release ends a claim: its members are removed (kicked), as rooms does.
func (r *fakeRooms) Release(c *rooms.Claim) {
	r.mu.Lock()
	roomID := r.roomOf(c)
	if roomID == "" {
		r.mu.Unlock()
		return
	}
	delete(r.claims, roomID)
	r.released = append(r.released, roomID)
	var users []string
	for u := range r.members[roomID] {
		users = append(users, u)
	}
	delete(r.members, roomID)
	obs := slices.Clone(r.observers)
	r.mu.Unlock()
	slices.Sort(users)
	for _, u := range users {
		for _, o := range obs {
			o.MemberLeft(roomID, u, rooms.LeaveKicked, t0)
		}
	}
}

func (r *fakeRooms) LeaveClaim(c *rooms.Claim, userID string) bool {
	r.mu.Lock()
	roomID := r.roomOf(c)
	r.mu.Unlock()
	return roomID != "" && r.leave(roomID, userID, rooms.LeaveLeft)
}

// connect is userID's media connecting in roomID: refused (false) unless
// an admitter admits them through the room's claim.
func (r *fakeRooms) connect(roomID, userID string) bool {
	// As rooms does: the admitters first (outside the lock; in cluster
	// mode the manager claims the room ID on this node then), then the
	// claim they admit through must be the room's.
	r.mu.Lock()
	adm := slices.Clone(r.admitters)
	r.mu.Unlock()
	var through []*rooms.Claim
	for _, a := range adm {
		if c := a.Admit(userID, roomID); c != nil {
			through = append(through, c)
		}
	}
	r.mu.Lock()
	c := r.claims[roomID]
	if c == nil || !slices.Contains(through, c) {
		r.mu.Unlock()
		return false
	}
	if r.members[roomID] == nil {
		r.members[roomID] = map[string]bool{}
	}
	r.members[roomID][userID] = true
	obs := slices.Clone(r.observers)
	r.mu.Unlock()
	for _, o := range obs {
		o.MemberConnected(roomID, userID, rooms.RoleAnchor, t0)
	}
	return true
}

// leave takes a connected userID out of roomID for reason.
func (r *fakeRooms) leave(roomID, userID string, reason rooms.LeaveReason) bool {
	r.mu.Lock()
	if !r.members[roomID][userID] {
		r.mu.Unlock()
		return false
	}
	delete(r.members[roomID], userID)
	obs := slices.Clone(r.observers)
	r.mu.Unlock()
	for _, o := range obs {
		o.MemberLeft(roomID, userID, reason, t0)
	}
	return true
}

func (r *fakeRooms) releasedRooms() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.released)
}
