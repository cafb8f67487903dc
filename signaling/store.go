package signaling

import (
	"context"
	"encoding/json"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Store keeps the engine's durable state: stored invitations, groups, the
// users who have connected at least once, their presence texts, and the
// per-user outbox of events that a user missed while offline.
//
// The engine keeps the authoritative copy of invitations and groups in memory
// and writes through to the store; it reads them once, at start (Load). Of the
// outbox it keeps in memory only an index (OutboxInfo: no event data); a
// user's kept events are read (LoadOutbox) when the user connects. Apply runs its
// mutations atomically: all of them are applied or none. Implementations must
// be safe for concurrent use and must pass storetest.Run, the contract test,
// which enforces the rules stated here. The SQLite implementation is
// SQLiteStore, the in-memory one MemoryStore; later ones (Redis, PostgreSQL)
// go in their own store_*.go files.
//
// Times come back in UTC, within storetest.TimePrecision of what was stored
// (a store may round); the zero time comes back as the zero time. Strings
// and OutboxEntry.Data come back byte-identical, and a Snapshot shares no
// memory with the store or with the records passed to Apply.
type Store interface {
	// Apply applies muts in order, atomically: if one fails, Apply returns
	// an error and applies none of them. A PutGroup whose ID exists fails
	// with ErrGroupExists; a PutInvitation whose ID exists fails with an
	// error. Applying to a missing invitation, invitee or group
	// (SetInviteeState, SetInvitationData, AddGroupMembers,
	// RemoveGroupMembers, DeleteInvitation, DeleteGroup) is a no-op, not an
	// error. Apply with no mutations succeeds and does nothing. Apply with a
	// ctx that has already ended returns an error and applies nothing;
	// Apply after Close returns an error. Concurrent calls do not affect
	// each other: one failing does not make another fail.
	Apply(ctx context.Context, muts ...Mutation) error
	// Load returns everything stored but the outbox's data: invitations and
	// groups in the order they were put, each invitation's invitees in the
	// order given to PutInvitation, each group's members owner first, then
	// by JoinedAt, then in the order they were added, the known users in any
	// order, and the outbox index by Seq.
	Load(ctx context.Context) (*Snapshot, error)
	// LoadOutbox returns user's kept events whose Seq is above afterSeq, by
	// Seq, at most limit of them (limit <= 0: all).
	LoadOutbox(ctx context.Context, user string, afterSeq int64, limit int) ([]OutboxEntry, error)
	// Close flushes and releases the store. It is idempotent: later calls
	// return nil. Opening the store at the same location again gives back
	// the same data.
	Close() error
}

// Snapshot is the stored state that the engine keeps in memory, in the
// order Store.Load states: invitations and groups in the order they were
// put, the outbox index by Seq.
type Snapshot struct {
	Invitations []InvitationRecord
	Groups      []GroupRecord
	Users       []string     // users who have connected at least once (PutUser), any order
	Outbox      []OutboxInfo // ordered by Seq; the data stays in the store (LoadOutbox)
	// CustomStatus is each user's presence text (SetCustomStatus); users
	// without one are absent. Nil when there is none.
	CustomStatus map[string]string
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
	// PushInfo is the invitation's offlinePushInfo encoded as JSON; "" when
	// it has none.
	PushInfo string
	// OnlineOnly marks an onlineUserOnly invitation. The engine keeps those
	// in its view only (its memory; Redis in a cluster) and never writes
	// them to a Store, so stores never see it set and need not keep it.
	OnlineOnly bool
}

// InviteeRecord is one invitee's state within a stored invitation.
type InviteeRecord struct {
	UserID    string
	State     InviteeState
	UpdatedAt time.Time
	// Pushed is set when a push request was sent for the invitee (they had
	// no open connection when the invitation was created): its end sends a
	// push.stop.
	Pushed bool
	// NoRing marks an invitee who is never rung (InvitationSpec.NoRing).
	// The engine's view keeps it; the memory backend clears it before its
	// Store write (it was never stored), so stores need not keep it.
	NoRing bool
}

// GroupRecord is a stored group.
type GroupRecord struct {
	ID         string
	Name       string
	Owner      string
	JoinOption protocol.JoinOption
	CreatedAt  time.Time
	Members    []MemberRecord
}

// MemberRecord is one member of a group.
type MemberRecord struct {
	UserID   string
	Role     protocol.GroupRole
	JoinedAt time.Time
	// AddedBy is the member who added this one (createGroup's memberList,
	// inviteUserToGroup); "" when the user is the owner or joined by
	// themselves (joinGroup).
	AddedBy string
}

// OutboxEntry is an event kept for a user who had no open connection when it
// happened; it is delivered, in Seq order, when the user connects, unless it
// expired first.
type OutboxEntry struct {
	UserID    string
	Seq       int64  // unique and increasing across the whole store
	Sender    string // whose operation caused the event (its kept bytes count against their quota); "" unknown
	Event     string
	Data      json.RawMessage
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Bytes is the size that an entry's quota accounting uses: its event name
// and data.
func (e OutboxEntry) Bytes() int { return len(e.Event) + len(e.Data) }

// OutboxInfo describes a kept event without its data: what the engine keeps
// in memory of the outbox, for quotas and expiry.
type OutboxInfo struct {
	UserID    string
	Seq       int64
	Sender    string
	Bytes     int // OutboxEntry.Bytes of the entry
	ExpiresAt time.Time
}

// Mutation is one change to the store. The concrete types below are the only
// implementations.
type Mutation interface{ mutation() }

type (
	// PutInvitation stores a new invitation with its invitees, keeping
	// their order. An ID already in use is an error (the batch applies
	// nothing).
	PutInvitation struct{ Invitation InvitationRecord }
	// SetInviteeState records an invitee's new state; a missing invitation
	// or invitee is a no-op. From is the state the engine's decision read
	// (StateUnknown: not stated): the engine's views apply the change only
	// from that state (compare-and-set: forward-only states never move
	// back). Stores may ignore it for now: the engine checked it before
	// writing, and storetest does not exercise it.
	SetInviteeState struct {
		InviteID, UserID string
		State            InviteeState
		At               time.Time
		From             InviteeState
	}
	// SetInvitationData replaces an invitation's data (modifyInvitation); a
	// missing invitation is a no-op.
	SetInvitationData struct{ InviteID, Data string }
	// DeleteInvitation removes an ended invitation and its invitees; a
	// missing invitation is a no-op.
	DeleteInvitation struct{ InviteID string }
	// PutGroup creates a group with its members; ErrGroupExists if the ID
	// is taken (the batch applies nothing).
	PutGroup struct{ Group GroupRecord }
	// AddGroupMembers adds members to a group (existing members are left as
	// they are); a missing group is a no-op and creates no group.
	AddGroupMembers struct {
		GroupID string
		Members []MemberRecord
	}
	// RemoveGroupMembers removes members from a group; missing members or
	// a missing group are a no-op.
	RemoveGroupMembers struct {
		GroupID string
		UserIDs []string
	}
	// DeleteGroup removes a group and its members; a missing group is a
	// no-op.
	DeleteGroup struct{ GroupID string }
	// AppendOutbox keeps an event for an offline user.
	AppendOutbox struct{ Entry OutboxEntry }
	// DeleteOutbox removes a user's entries with Seq <= UpTo.
	DeleteOutbox struct {
		UserID string
		UpTo   int64
	}
	// DeleteOutboxEntry removes one entry of a user, leaving the others;
	// a missing entry is a no-op.
	DeleteOutboxEntry struct {
		UserID string
		Seq    int64
	}
	// PutUser records that a user has connected at least once; a user
	// already recorded is a no-op.
	PutUser struct{ UserID string }
	// SetCustomStatus sets a user's presence text (setSelfStatus); an
	// empty Text removes it.
	SetCustomStatus struct{ UserID, Text string }
	// PurgeOutbox removes every entry that expired at or before Before;
	// entries with a zero ExpiresAt never expire.
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
func (DeleteOutboxEntry) mutation()  {}
func (PutUser) mutation()            {}
func (PurgeOutbox) mutation()        {}
func (SetCustomStatus) mutation()    {}
