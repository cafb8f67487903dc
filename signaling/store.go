package signaling

import (
	"context"
	"encoding/json"
	"time"
)

// Store keeps the engine's durable state: stored invitations, groups and the
// per-user outbox of events that a user missed while offline.
//
// The engine keeps the authoritative copy in memory and writes through to the
// store; it reads the store only once, at start (Load). Apply runs its
// mutations atomically: all of them are applied or none. Implementations must
// be safe for concurrent use and must pass storetest.Run, the contract test.
// The SQLite implementation is SQLiteStore; later ones (Redis, PostgreSQL)
// go in their own store_*.go files.
type Store interface {
	// Apply applies muts in order, atomically. A PutGroup whose ID exists
	// fails with ErrGroupExists and applies nothing.
	Apply(ctx context.Context, muts ...Mutation) error
	// Load returns everything stored.
	Load(ctx context.Context) (*Snapshot, error)
	// Close flushes and releases the store.
	Close() error
}

// Snapshot is the whole stored state.
type Snapshot struct {
	Invitations []InvitationRecord
	Groups      []GroupRecord
	Outbox      []OutboxEntry // ordered by Seq
}

// InvitationRecord is a stored invitation. Only invitations sent with
// onlineUserOnly=false are stored; an invitation is deleted when it ends.
type InvitationRecord struct {
	ID        string
	Inviter   string
	GroupID   string
	Data      string
	CreatedAt time.Time
	Deadline  time.Time // zero: no timeout
	Invitees  []InviteeRecord
}

// InviteeRecord is one invitee's state within a stored invitation.
type InviteeRecord struct {
	UserID    string
	State     InviteeState
	UpdatedAt time.Time
}

// GroupRole is a member's role in a group.
type GroupRole string

const (
	RoleOwner  GroupRole = "owner"
	RoleMember GroupRole = "member"
)

// JoinOption says who may add themselves to a group with joinGroup.
type JoinOption string

const (
	JoinAny    JoinOption = "any"    // anyone may joinGroup
	JoinInvite JoinOption = "invite" // only inviteUserToGroup adds members
)

// GroupRecord is a stored group.
type GroupRecord struct {
	ID         string
	Name       string
	Owner      string
	JoinOption JoinOption
	CreatedAt  time.Time
	Members    []MemberRecord
}

// MemberRecord is one member of a group.
type MemberRecord struct {
	UserID   string
	Role     GroupRole
	JoinedAt time.Time
}

// OutboxEntry is an event kept for a user who had no open connection when it
// happened; it is delivered, in Seq order, when the user connects, unless it
// expired first.
type OutboxEntry struct {
	UserID    string
	Seq       int64 // unique and increasing across the whole store
	Event     string
	Data      json.RawMessage
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Mutation is one change to the store. The concrete types below are the only
// implementations.
type Mutation interface{ mutation() }

type (
	// PutInvitation stores a new invitation with its invitees.
	PutInvitation struct{ Invitation InvitationRecord }
	// SetInviteeState records an invitee's new state.
	SetInviteeState struct {
		InviteID, UserID string
		State            InviteeState
		At               time.Time
	}
	// SetInvitationData replaces an invitation's data (modifyInvitation).
	SetInvitationData struct{ InviteID, Data string }
	// DeleteInvitation removes an ended invitation and its invitees.
	DeleteInvitation struct{ InviteID string }
	// PutGroup creates a group with its members; ErrGroupExists if the ID is taken.
	PutGroup struct{ Group GroupRecord }
	// AddGroupMembers adds members to a group (existing members are left as they are).
	AddGroupMembers struct {
		GroupID string
		Members []MemberRecord
	}
	// RemoveGroupMembers removes members from a group.
	RemoveGroupMembers struct {
		GroupID string
		UserIDs []string
	}
	// DeleteGroup removes a group and its members.
	DeleteGroup struct{ GroupID string }
	// AppendOutbox keeps an event for an offline user.
	AppendOutbox struct{ Entry OutboxEntry }
	// DeleteOutbox removes a user's entries with Seq <= UpTo.
	DeleteOutbox struct {
		UserID string
		UpTo   int64
	}
	// PurgeOutbox removes every entry that expired at or before Before.
	PurgeOutbox struct{ Before time.Time }
)

func (PutInvitation) mutation()      {}
func (SetInviteeState) mutation()    {}
func (SetInvitationData) mutation()  {}
func (DeleteInvitation) mutation()   {}
func (PutGroup) mutation()           {}
func (AddGroupMembers) mutation()    {}
func (RemoveGroupMembers) mutation() {}
func (DeleteGroup) mutation()        {}
func (AppendOutbox) mutation()       {}
func (DeleteOutbox) mutation()       {}
func (PurgeOutbox) mutation()        {}
