package calls

import (
	"context"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// What calls uses of the layers below it, declared here next to their
// consumer (as LiveKit's pkg/rtc/types/interfaces.go does): the server
// passes the real *signaling.Engine and *rooms.Manager, the unit tests
// fakes.

// Invitations is what calls uses of the signaling engine: the invitations
// of its calls, the call-end invitation, its events, group membership, and
// the engine's op table that calls wraps. *signaling.Engine implements it.
type Invitations interface {
	// NewID returns a fresh ID with prefix.
	NewID(prefix string) string
	CreateInvitation(ctx context.Context, a protocol.Actor, spec signaling.InvitationSpec) (string, error)
	Accept(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error
	Reject(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error
	Cancel(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error
	ModifyInvitation(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error
	// Notify sends a one-shot invitation (the call-end invitation).
	Notify(ctx context.Context, from protocol.Actor, to []string, groupID, data string) (string, error)
	// SendEvent delivers a call event to users (kept for offline users
	// with keep).
	SendEvent(ctx context.Context, users []string, name string, data any, keep bool) error
	IsGroupMember(groupID, user string) bool
	// AddObserver registers for invitation notes (calls learns timeouts).
	AddObserver(o signaling.Observer)
	// Ops returns the engine's op table.
	Ops() map[string]protocol.OpFunc
}

// Rooms is what calls uses of rooms: it claims a call's room ID, admits
// the call's participants and learns whose media connected and left, takes
// a user who hangs up out of the room, and releases the room at the end.
// *rooms.Manager implements it.
type Rooms interface {
	AddAdmitter(a rooms.Admitter)
	AddObserver(o rooms.Observer)
	Claim(roomID string) (*rooms.Claim, error)
	Release(c *rooms.Claim)
	LeaveClaim(c *rooms.Claim, userID string) bool
}

var (
	_ Invitations = (*signaling.Engine)(nil)
	_ Rooms       = (*rooms.Manager)(nil)
)
