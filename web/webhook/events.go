package webhook

import (
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Event types (Event.Type).
const (
	TypeInvitationCreated   = "invitation.created"
	TypeInvitationAccepted  = "invitation.accepted"
	TypeInvitationRejected  = "invitation.rejected"
	TypeInvitationCancelled = "invitation.cancelled"
	TypeInvitationTimedOut  = "invitation.timed_out"
	TypeCallBegan           = "call.began"
	TypeCallEnded           = "call.ended"
	TypeRoomStarted         = "room.started"
	TypeRoomFinished        = "room.finished"
	TypeParticipantJoined   = "participant.joined"
	TypeParticipantLeft     = "participant.left"
	TypeUserOnline          = "user.online"
	TypeUserOffline         = "user.offline"
	TypePushRing            = "push.ring"
	TypePushStop            = "push.stop"
)

// InvitationData is the data of the invitation.* events. Invitees are all
// of them (created) or those whose state the event is about; Data is the
// invitation's data (created) or that of the answer or cancel.
type InvitationData struct {
	InviteID string   `json:"inviteID"`
	Inviter  string   `json:"inviter"`
	GroupID  string   `json:"groupID,omitempty"`
	Invitees []string `json:"invitees"`
	Data     string   `json:"data,omitempty"`
	Deadline int64    `json:"deadline,omitempty"` // created: unix ms; absent: no timeout
	Ended    bool     `json:"ended"`              // no invitee is pending any more
}

// PushRingData is push.ring's data: ring UserID's phone, which has no open
// connection. TimeoutMs is the time left when the invitation was created;
// Deadline, when it ends (an app forwarding a retried delivery late should
// use it).
type PushRingData struct {
	UserID          string                    `json:"userID"`
	InviteID        string                    `json:"inviteID"`
	Inviter         string                    `json:"inviter"`
	GroupID         string                    `json:"groupID,omitempty"`
	OfflinePushInfo *protocol.OfflinePushInfo `json:"offlinePushInfo"`
	TimeoutMs       int64                     `json:"timeoutMs,omitempty"`
	Deadline        int64                     `json:"deadline,omitempty"`
}

// PushStopData is push.stop's data: the ring of push.ring for UserID and
// InviteID is over. Reason is the invitee's final state: accepted or
// rejected (on any device), cancelled, timed_out.
type PushStopData struct {
	UserID   string `json:"userID"`
	InviteID string `json:"inviteID"`
	Inviter  string `json:"inviter"`
	Reason   string `json:"reason"`
}

// CallData is the data of call.began and call.ended: the call record.
// Times are unix milliseconds, 0 for never.
type CallData struct {
	CallID       string            `json:"callID"`
	Caller       string            `json:"caller"`
	GroupID      string            `json:"groupID,omitempty"`
	RoomID       string            `json:"roomID"`
	MediaType    string            `json:"mediaType"`
	CreatedAt    int64             `json:"createdAt"`
	BeganAt      int64             `json:"beganAt"`
	EndedAt      int64             `json:"endedAt"`
	DurationMs   int64             `json:"durationMs"`
	Result       string            `json:"result,omitempty"`
	EndReason    string            `json:"endReason,omitempty"`
	EndedBy      string            `json:"endedBy,omitempty"`
	Participants []ParticipantInfo `json:"participants"`
}

// ParticipantInfo is one participant of CallData.
type ParticipantInfo struct {
	UserID     string `json:"userID"`
	Role       string `json:"role"`
	InvitedAt  int64  `json:"invitedAt"`
	AnsweredAt int64  `json:"answeredAt"`
	Answer     string `json:"answer,omitempty"`
	JoinedAt   int64  `json:"joinedAt"`
	LeftAt     int64  `json:"leftAt"`
	Result     string `json:"result,omitempty"`
}

// RoomData is the data of room.* and participant.* events. UserID and Role
// are set for participant.joined (media connected), UserID and Reason
// (onRemoteUserLeaveRoom's) for participant.left.
type RoomData struct {
	RoomID string `json:"roomID"`
	UserID string `json:"userID,omitempty"`
	Role   string `json:"role,omitempty"`
	Reason *int   `json:"reason,omitempty"`
}

// UserData is the data of user.online and user.offline.
type UserData struct {
	UserID string `json:"userID"`
}

// Publisher takes events; Sender is one.
type Publisher interface {
	Publish(typ, key string, data any)
}

// Notifier turns the notes of the signaling engine, calls and rooms into
// events for a Publisher. Its methods never block.
type Notifier struct {
	pub Publisher

	mu    sync.Mutex     // guards rooms
	rooms map[string]int // members whose media is connected, by room
}

var (
	_ signaling.PresenceObserver = (*Notifier)(nil)
	_ calls.Observer             = (*Notifier)(nil)
	_ rooms.Observer             = (*Notifier)(nil)
)

// NewNotifier returns a Notifier publishing to pub.
func NewNotifier(pub Publisher) *Notifier {
	return &Notifier{pub: pub, rooms: map[string]int{}}
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Ordering keys: the events about one invitation, call, room or user reach
// each URL in order.
func inviteKey(id string) string { return "inv:" + id }
func callKey(id string) string   { return "call:" + id }
func roomKey(id string) string   { return "room:" + id }
func userKey(id string) string   { return "user:" + id }

var changeTypes = map[signaling.InviteeState]string{
	signaling.StateAccepted:  TypeInvitationAccepted,
	signaling.StateRejected:  TypeInvitationRejected,
	signaling.StateCancelled: TypeInvitationCancelled,
	signaling.StateTimedOut:  TypeInvitationTimedOut,
}

// InvitationNote implements signaling.Observer: invitation.* events, then
// push.ring for each invitee pushed at creation, and push.stop when such an
// invitee's part ends.
func (n *Notifier) InvitationNote(note signaling.InvitationNote) {
	key := inviteKey(note.InviteID)
	base := InvitationData{InviteID: note.InviteID, Inviter: note.Inviter, GroupID: note.GroupID, Ended: note.Ended}
	if note.Created {
		d := base
		d.Invitees, d.Data, d.Deadline = note.Invitees, note.Data, unixMS(note.Deadline)
		n.pub.Publish(TypeInvitationCreated, key, d)
		for _, u := range note.Pushed {
			ring := PushRingData{UserID: u, InviteID: note.InviteID, Inviter: note.Inviter, GroupID: note.GroupID,
				OfflinePushInfo: note.PushInfo, Deadline: unixMS(note.Deadline)}
			if !note.Deadline.IsZero() {
				ring.TimeoutMs = max(note.Deadline.Sub(note.At).Milliseconds(), 1)
			}
			n.pub.Publish(TypePushRing, key, ring)
		}
	}
	// One event per state, in the order the changes came.
	var order []signaling.InviteeState
	by := map[signaling.InviteeState]*InvitationData{}
	for _, c := range note.Changes {
		if changeTypes[c.State] == "" {
			continue
		}
		d := by[c.State]
		if d == nil {
			cp := base
			d = &cp
			d.Data = c.Data
			by[c.State] = d
			order = append(order, c.State)
		}
		d.Invitees = append(d.Invitees, c.UserID)
	}
	for _, st := range order {
		n.pub.Publish(changeTypes[st], key, *by[st])
	}
	for _, c := range note.Changes {
		if c.Pushed && c.State.Final() {
			n.pub.Publish(TypePushStop, key, PushStopData{UserID: c.UserID, InviteID: note.InviteID, Inviter: note.Inviter, Reason: c.State.String()})
		}
	}
}

// UserPresence implements signaling.PresenceObserver.
func (n *Notifier) UserPresence(user string, online bool, _ time.Time) {
	typ := TypeUserOffline
	if online {
		typ = TypeUserOnline
	}
	n.pub.Publish(typ, userKey(user), UserData{UserID: user})
}

func callData(r calls.CallRecord) CallData {
	d := CallData{CallID: r.CallID, Caller: r.Caller, GroupID: r.GroupID, RoomID: r.RoomID, MediaType: r.MediaType,
		CreatedAt: unixMS(r.CreatedAt), BeganAt: unixMS(r.BeganAt), EndedAt: unixMS(r.EndedAt), DurationMs: r.Duration.Milliseconds(),
		Result: string(r.Result), EndReason: string(r.EndReason), EndedBy: r.EndedBy, Participants: []ParticipantInfo{}}
	for _, p := range r.Participants {
		d.Participants = append(d.Participants, ParticipantInfo{UserID: p.UserID, Role: string(p.Role),
			InvitedAt: unixMS(p.InvitedAt), AnsweredAt: unixMS(p.AnsweredAt), Answer: string(p.Answer),
			JoinedAt: unixMS(p.JoinedAt), LeftAt: unixMS(p.LeftAt), Result: string(p.Result)})
	}
	return d
}

// CallBegan implements calls.Observer.
func (n *Notifier) CallBegan(r calls.CallRecord) {
	n.pub.Publish(TypeCallBegan, callKey(r.CallID), callData(r))
}

// CallEnded implements calls.Observer.
func (n *Notifier) CallEnded(r calls.CallRecord) {
	n.pub.Publish(TypeCallEnded, callKey(r.CallID), callData(r))
}

// MemberConnected implements rooms.Observer: participant.joined, preceded
// by room.started for the room's first connected member.
func (n *Notifier) MemberConnected(roomID, user string, role rooms.Role, _ time.Time) {
	n.mu.Lock()
	n.rooms[roomID]++
	first := n.rooms[roomID] == 1
	n.mu.Unlock()
	if first {
		n.pub.Publish(TypeRoomStarted, roomKey(roomID), RoomData{RoomID: roomID})
	}
	n.pub.Publish(TypeParticipantJoined, roomKey(roomID), RoomData{RoomID: roomID, UserID: user, Role: string(role)})
}

// MemberLeft implements rooms.Observer: participant.left, followed by
// room.finished when no connected member is left.
func (n *Notifier) MemberLeft(roomID, user string, reason rooms.LeaveReason, _ time.Time) {
	n.mu.Lock()
	n.rooms[roomID]--
	last := n.rooms[roomID] <= 0
	if last {
		delete(n.rooms, roomID)
	}
	n.mu.Unlock()
	why := int(reason)
	n.pub.Publish(TypeParticipantLeft, roomKey(roomID), RoomData{RoomID: roomID, UserID: user, Reason: &why})
	if last {
		n.pub.Publish(TypeRoomFinished, roomKey(roomID), RoomData{RoomID: roomID})
	}
}
