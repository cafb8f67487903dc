package calls

import (
	"context"
	"errors"
	"time"
)

// Result is how a call, or one participant's part in it, turned out.
type Result string

const (
	ResultCompleted Result = "completed" // the call began (two participants' media connected)
	ResultMissed    Result = "missed"    // an invitee who never answered a call that was cancelled or timed out (per participant)
	ResultRejected  Result = "rejected"  // the invitee(s) rejected
	ResultBusy      Result = "busy"      // the invitee was on another call (line busy)
	ResultCancelled Result = "cancelled" // the caller cancelled before anyone answered
	ResultNoAnswer  Result = "no_answer" // the invitation timed out
	ResultFailed    Result = "failed"    // accepted but the media never connected, or ended by a server restart before it began
)

// EndReason is why a call ended (a call record's EndReason, onCallEnd's
// reason and getCallHistory's endReason: the wire carries the string).
type EndReason string

const (
	EndHangup         EndReason = "hangup"          // a participant hung up (or left the room)
	EndConnectionLost EndReason = "connection_lost" // a participant's connection was lost
	EndKicked         EndReason = "kicked"          // a participant was removed from the room
	EndRejected       EndReason = "rejected"        // the invitee(s) rejected
	EndBusy           EndReason = "busy"            // the invitee(s) were busy
	EndNoAnswer       EndReason = "no_answer"       // the ring timed out
	EndCancelled      EndReason = "cancelled"       // the caller gave up before anyone answered
	EndAllLeft        EndReason = "all_left"        // fewer than two remained in a group call
	EndFailed         EndReason = "failed"          // accepted, but the media never connected (setup_timeout)
	EndServerRestart  EndReason = "server_restart"  // running when the server stopped
)

// Answer is an invitee's answer to the ring.
type Answer string

const (
	AnswerNone      Answer = ""
	AnswerAccepted  Answer = "accepted"
	AnswerRejected  Answer = "rejected"
	AnswerBusy      Answer = "busy"
	AnswerNoAnswer  Answer = "no_answer"
	AnswerCancelled Answer = "cancelled"
)

// Role of a participant in a call.
type Role string

const (
	RoleCaller  Role = "caller"
	RoleInvitee Role = "invitee"
	RoleJoiner  Role = "joiner" // a group member who joined a running call without being rung
)

// ParticipantRecord is one participant's row of a call record. Zero times
// mean "never".
type ParticipantRecord struct {
	UserID     string
	Role       Role
	InvitedAt  time.Time
	AnsweredAt time.Time
	Answer     Answer
	JoinedAt   time.Time // media connected in the call's room
	LeftAt     time.Time
	Result     Result // this participant's view: completed, missed, rejected, busy, cancelled, no_answer, failed
}

// CallRecord is the durable record of one call.
type CallRecord struct {
	CallID    string // the first invitation's inviteID
	Caller    string
	GroupID   string // "" for one-to-one
	RoomID    string
	MediaType string // "audio" or "video"
	CreatedAt time.Time
	BeganAt   time.Time // zero: never began
	EndedAt   time.Time // zero: still running
	Duration  time.Duration
	Result    Result    // empty while running
	EndReason EndReason // "" while running
	EndedBy   string    // the user whose action ended it, "" for the server
	// Participants lists the caller first, then invitees and joiners in the
	// order they came into the call.
	Participants []ParticipantRecord
}

// HistoryFilter selects a user's calls in getCallHistory.
type HistoryFilter string

const (
	FilterAll      HistoryFilter = "all"
	FilterMissed   HistoryFilter = "missed"   // calls to the user whose result for the user is missed, busy or no_answer
	FilterIncoming HistoryFilter = "incoming" // calls the user did not place
	FilterOutgoing HistoryFilter = "outgoing" // calls the user placed
)

// RecordStore keeps call records. SaveCall replaces the whole record of a
// call (call row and participant rows) atomically. History lists the calls
// a user took part in (as caller, invitee or joiner), newest CreatedAt first
// (ties by CallID descending), at most limit, continuing after cursor (""
// for the first page); it returns the next cursor, "" after the last page.
// OpenCalls lists records whose EndedAt is zero. Heartbeat records that the
// server was alive at at; LastHeartbeat returns the latest (zero if none).
// Implementations must pass recordtest.Run.
type RecordStore interface {
	SaveCall(ctx context.Context, rec CallRecord) error
	History(ctx context.Context, user string, filter HistoryFilter, limit int, cursor string) ([]CallRecord, string, error)
	OpenCalls(ctx context.Context) ([]CallRecord, error)
	Heartbeat(ctx context.Context, at time.Time) error
	LastHeartbeat(ctx context.Context) (time.Time, error)
}

// ErrBadCursor is returned by History for a cursor it did not make.
var ErrBadCursor = errors.New("calls: invalid history cursor")
