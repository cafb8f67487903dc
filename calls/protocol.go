package calls

import "github.com/switchboard-rtc/switchboard/signaling/protocol"

// Ops of the calls protocol (signaling/CALLS.md).
const (
	OpCall                = "call"
	OpGroupCall           = "groupCall"
	OpHangup              = "hangup"
	OpInviteUser          = "inviteUser"
	OpJoinCall            = "joinCall"
	OpSwitchCallMediaType = "switchCallMediaType"
	OpGetCallHistory      = "getCallHistory"
	OpGetGroupCalls       = "getGroupCalls"
)

// Events of the calls protocol.
const (
	EvCallBegin            = "onCallBegin"
	EvCallEnd              = "onCallEnd"
	EvCallMissed           = "onCallMissed"
	EvCallMediaTypeChanged = "onCallMediaTypeChanged"
)

// CallArgs are the args of call.
type CallArgs struct {
	Invitee   string `json:"invitee"`
	MediaType string `json:"mediaType"`
	Timeout   *int   `json:"timeout" expect:"a whole number of seconds"`
	RoomID    string `json:"roomID"`
	UserData  string `json:"userData"`
	// OfflinePushInfo is invite's (PROTOCOL.md): a push request for a
	// callee with no open connection.
	OfflinePushInfo *protocol.OfflinePushInfo `json:"offlinePushInfo,omitempty"`
}

// GroupCallArgs are the args of groupCall.
type GroupCallArgs struct {
	GroupID     string   `json:"groupID"`
	InviteeList []string `json:"inviteeList"`
	MediaType   string   `json:"mediaType"`
	Timeout     *int     `json:"timeout" expect:"a whole number of seconds"`
	RoomID      string   `json:"roomID"`
	UserData    string   `json:"userData"`
	// OfflinePushInfo: as CallArgs'.
	OfflinePushInfo *protocol.OfflinePushInfo `json:"offlinePushInfo,omitempty"`
}

// CallResult is the result of call, groupCall, and of invite/inviteInGroup
// when their data is a call's.
type CallResult struct {
	InviteID string `json:"inviteID"`
	CallID   string `json:"callID"`
	RoomID   string `json:"roomID"`
	// Merged is set when the call merged with the callee's call to the
	// caller that was ringing (glare): CallID is that call.
	Merged bool `json:"merged,omitempty"`

	after func() // busy rejections, run once the reply is queued
}

// AppendJSON implements protocol.JSONAppender: json.Marshal's bytes
// (TestCallResultAppendJSON).
func (r CallResult) AppendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = protocol.AppendString(b, r.InviteID)
	b = append(b, `,"callID":`...)
	b = protocol.AppendString(b, r.CallID)
	b = append(b, `,"roomID":`...)
	b = protocol.AppendString(b, r.RoomID)
	if r.Merged {
		b = append(b, `,"merged":true`...)
	}
	return append(b, '}')
}

// AfterReply implements signaling.AfterReplier.
func (r CallResult) AfterReply() {
	if r.after != nil {
		r.after()
	}
}

// CallIDArgs are the args of hangup and joinCall.
type CallIDArgs struct {
	CallID string `json:"callID"`
}

// InviteUserArgs are the args of inviteUser.
type InviteUserArgs struct {
	CallID   string   `json:"callID"`
	UserList []string `json:"userList"`
	Timeout  *int     `json:"timeout" expect:"a whole number of seconds"`
}

// InviteUserResult is the result of inviteUser: the new invitation and the
// users rung (those already in the call or ringing are skipped).
type InviteUserResult struct {
	InviteID string   `json:"inviteID"`
	UserList []string `json:"userList"`
}

// JoinResult is the result of joinCall.
type JoinResult struct {
	CallID    string `json:"callID"`
	RoomID    string `json:"roomID"`
	MediaType string `json:"mediaType"`
	StartTime int64  `json:"startTime"` // unix ms when the call began; 0: not yet (onCallBegin follows)
}

// GroupCallsResult is the result of getGroupCalls: the group's running
// calls, oldest first.
type GroupCallsResult struct {
	Calls []GroupCallInfo `json:"calls"`
}

// GroupCallInfo is one running call of a group, as getGroupCalls shows it.
type GroupCallInfo struct {
	CallID    string `json:"callID"`
	RoomID    string `json:"roomID"`
	Caller    string `json:"caller"`
	MediaType string `json:"mediaType"`
	CreatedAt int64  `json:"createdAt"` // unix ms
	StartTime int64  `json:"startTime"` // unix ms when the call began; 0: not yet
	// Participants are the users in the call now (admitted and not hung
	// up), in the order they came.
	Participants []string `json:"participants"`
}

// SwitchArgs are the args of switchCallMediaType.
type SwitchArgs struct {
	CallID    string `json:"callID"`
	MediaType string `json:"mediaType"`
}

// HistoryArgs are the args of getCallHistory.
type HistoryArgs struct {
	Limit  int    `json:"limit" expect:"a whole number from 0 to 100"`
	Cursor string `json:"cursor"`
	Filter string `json:"filter"`
}

// HistoryResult is the result of getCallHistory.
type HistoryResult struct {
	Calls      []CallInfo `json:"calls"`
	NextCursor string     `json:"nextCursor"`
}

// CallInfo is one call of a user's history. Times are unix milliseconds,
// 0 for never.
type CallInfo struct {
	CallID     string            `json:"callID"`
	Caller     string            `json:"caller"`
	GroupID    string            `json:"groupID"`
	RoomID     string            `json:"roomID"`
	MediaType  string            `json:"mediaType"`
	Direction  string            `json:"direction"` // incoming or outgoing, for the asking user
	Result     Result            `json:"result"`    // for the asking user
	CallResult Result            `json:"callResult"`
	EndReason  EndReason         `json:"endReason"`
	EndedBy    string            `json:"endedBy"`
	CreatedAt  int64             `json:"createdAt"`
	BeganAt    int64             `json:"beganAt"`
	EndedAt    int64             `json:"endedAt"`
	Duration   int64             `json:"duration"` // seconds
	DurationMs int64             `json:"durationMs"`
	Members    []ParticipantInfo `json:"participants"`
}

// ParticipantInfo is one participant of a CallInfo.
type ParticipantInfo struct {
	UserID   string `json:"userID"`
	Role     Role   `json:"role"`
	Answer   Answer `json:"answer"`
	Result   Result `json:"result"`
	JoinedAt int64  `json:"joinedAt"`
	LeftAt   int64  `json:"leftAt"`
}

// BeginEvent is onCallBegin's data.
type BeginEvent struct {
	CallID    string `json:"callID"`
	RoomID    string `json:"roomID"`
	MediaType string `json:"mediaType"`
	StartTime int64  `json:"startTime"` // unix ms
}

// EndEvent is onCallEnd's data.
type EndEvent struct {
	CallID     string    `json:"callID"`
	RoomID     string    `json:"roomID"`
	Duration   int64     `json:"duration"` // seconds
	DurationMs int64     `json:"durationMs"`
	Reason     EndReason `json:"reason"`
	EndedBy    string    `json:"endedBy"`
	Result     Result    `json:"result"`
}

// MissedEvent is onCallMissed's data: a call that reached the user's line
// while it was busy and was rejected by the server on their behalf.
type MissedEvent struct {
	CallID    string `json:"callID"`
	Caller    string `json:"caller"`
	GroupID   string `json:"groupID"`
	MediaType string `json:"mediaType"`
	Reason    string `json:"reason"` // line_busy
	Time      int64  `json:"time"`
}

// MediaTypeEvent is onCallMediaTypeChanged's data.
type MediaTypeEvent struct {
	CallID    string `json:"callID"`
	MediaType string `json:"mediaType"`
	UserID    string `json:"userID"`
}
