package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Op names of the wire protocol (PROTOCOL.md).
const (
	OpInvite             = "invite"
	OpInviteInGroup      = "inviteInGroup"
	OpCancel             = "cancel"
	OpAccept             = "accept"
	OpReject             = "reject"
	OpModifyInvitation   = "modifyInvitation"
	OpCreateGroup        = "createGroup"
	OpJoinGroup          = "joinGroup"
	OpQuitGroup          = "quitGroup"
	OpInviteUserToGroup  = "inviteUserToGroup"
	OpKickGroupMember    = "kickGroupMember"
	OpDismissGroup       = "dismissGroup"
	OpGetGroupMemberList = "getGroupMemberList"
	OpGetJoinedGroupList = "getJoinedGroupList"
)

// Event names of the wire protocol, TRTC's names.
const (
	EvReceiveNewInvitation = "onReceiveNewInvitation"
	EvInviteeAccepted      = "onInviteeAccepted"
	EvInviteeRejected      = "onInviteeRejected"
	EvInvitationCancelled  = "onInvitationCancelled"
	EvInvitationTimeout    = "onInvitationTimeout"
	EvInvitationModified   = "onInvitationModified"
	EvMemberEnter          = "onMemberEnter"
	EvMemberLeave          = "onMemberLeave"
	EvMemberKicked         = "onMemberKicked"
	EvGroupDismissed       = "onGroupDismissed"
)

// MaxRequestIDLen bounds the client's request id.
const MaxRequestIDLen = 128

// Request is a decoded request frame: {"id":"…","op":"…","args":{…}}.
type Request struct {
	ID   string          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Reply is a reply frame: exactly one of Result and Error is set.
type Reply struct {
	ID     string `json:"id"`
	Result any    `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// EventFrame is an event frame: {"event":"…","data":{…}}.
type EventFrame struct {
	Event string `json:"event"`
	Data  any    `json:"data"`
}

// requestForm is the shape of a request, quoted in envelope errors.
const requestForm = `a request is {"id":string,"op":string,"args":object}`

// DecodeRequest parses one request frame. On error the returned Request
// still carries the id when it could be read, so the reply can name it.
// Error messages name the field as the client wrote it (PROTOCOL.md).
func DecodeRequest(frame []byte) (Request, *Error) {
	var req Request
	if !utf8.Valid(frame) {
		return req, ErrMalformedRequest.WithMessage("the frame is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// Recover the id for the reply if the envelope is at least an object with an id.
		var probe struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(frame, &probe) == nil {
			if s, ok := probe.ID.(string); ok && len(s) <= MaxRequestIDLen {
				req.ID = s
			}
		}
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return req, ErrMalformedRequest.WithMessage("the request is %s; %s", wireError(err, reflect.TypeOf(req), frame, ""), requestForm)
		}
		if errors.As(err, &te) && te.Field == "" {
			return req, ErrMalformedRequest.WithMessage("the request must be a JSON object, not %s; %s", valueWords(te.Value), requestForm)
		}
		return req, ErrMalformedRequest.WithMessage("%s; %s", wireError(err, reflect.TypeOf(req), frame, ""), requestForm)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, ErrMalformedRequest.WithMessage("trailing data after the request object")
	}
	if req.ID == "" || len(req.ID) > MaxRequestIDLen {
		id := req.ID
		req.ID = ""
		if len(id) > MaxRequestIDLen {
			return req, ErrMalformedRequest.WithMessage("id must be at most %d bytes, not %d", MaxRequestIDLen, len(id))
		}
		return req, ErrMalformedRequest.WithMessage("id is missing: every request needs a non-empty string id")
	}
	if req.Op == "" {
		return req, ErrMalformedRequest.WithMessage("op is missing: every request names its op")
	}
	if len(req.Args) > 0 && req.Args[0] != '{' && string(req.Args) != "null" {
		return req, ErrMalformedRequest.WithMessage("args must be an object, not %s", DescribeJSON(req.Args))
	}
	return req, nil
}

// DecodeArgs decodes a request's args strictly into T: unknown fields and
// wrong types are invalid_parameter errors naming the field by its wire
// path (args.candidate.sdpMLineIndex) and saying what was expected. Absent
// args decode as the zero T.
func DecodeArgs[T any](raw json.RawMessage) (T, *Error) {
	var v T
	if len(raw) == 0 || string(raw) == "null" {
		return v, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, ErrInvalidParameter.WithMessage("%s", wireError(err, reflect.TypeOf(v), raw, "args"))
	}
	return v, nil
}

// EncodeEvent renders an event frame once, so that it can be queued to many
// connections.
func EncodeEvent(name string, data any) ([]byte, error) {
	return json.Marshal(EventFrame{Event: name, Data: data})
}

// EncodeReply renders a reply frame.
func EncodeReply(id string, result any, e *Error) ([]byte, error) {
	if e != nil {
		return json.Marshal(Reply{ID: id, Error: e})
	}
	if result == nil {
		result = struct{}{}
	}
	return json.Marshal(Reply{ID: id, Result: result})
}

// ---- op arguments and results ----

// InviteArgs are the args of invite.
type InviteArgs struct {
	Invitee        string `json:"invitee"`
	Data           string `json:"data"`
	OnlineUserOnly bool   `json:"onlineUserOnly"`
	// Timeout in seconds: absent → the server's default, 0 → no timeout.
	Timeout *int `json:"timeout" expect:"a whole number of seconds"`
}

// InviteInGroupArgs are the args of inviteInGroup.
type InviteInGroupArgs struct {
	GroupID        string   `json:"groupID"`
	InviteeList    []string `json:"inviteeList"`
	Data           string   `json:"data"`
	OnlineUserOnly bool     `json:"onlineUserOnly"`
	Timeout        *int     `json:"timeout" expect:"a whole number of seconds"`
}

// InviteResult is the result of invite and inviteInGroup.
type InviteResult struct {
	InviteID string `json:"inviteID"`
}

// InviteIDArgs are the args of cancel, accept, reject and modifyInvitation.
type InviteIDArgs struct {
	InviteID string `json:"inviteID"`
	Data     string `json:"data"`
}

// CreateGroupArgs are the args of createGroup.
type CreateGroupArgs struct {
	GroupID    string   `json:"groupID"`
	Name       string   `json:"name"`
	MemberList []string `json:"memberList"`
	// JoinOption is "any" (default: anyone may joinGroup) or "invite".
	JoinOption string `json:"joinOption"`
}

// GroupIDArgs are the args of joinGroup, quitGroup, dismissGroup and getGroupMemberList.
type GroupIDArgs struct {
	GroupID string `json:"groupID"`
}

// GroupUsersArgs are the args of inviteUserToGroup.
type GroupUsersArgs struct {
	GroupID  string   `json:"groupID"`
	UserList []string `json:"userList"`
}

// KickArgs are the args of kickGroupMember.
type KickArgs struct {
	GroupID    string   `json:"groupID"`
	MemberList []string `json:"memberList"`
	Reason     string   `json:"reason"`
}

// GroupResult is the result of createGroup.
type GroupResult struct {
	GroupID string `json:"groupID"`
}

// MemberInfo describes a group member.
type MemberInfo struct {
	UserID   string    `json:"userID"`
	Role     GroupRole `json:"role"`
	JoinTime int64     `json:"joinTime"` // unix milliseconds
}

// MemberListResult is the result of getGroupMemberList.
type MemberListResult struct {
	MemberList []MemberInfo `json:"memberList"`
}

// GroupInfo describes a group in getJoinedGroupList.
type GroupInfo struct {
	GroupID     string     `json:"groupID"`
	Name        string     `json:"name"`
	Owner       string     `json:"owner"`
	JoinOption  JoinOption `json:"joinOption"`
	MemberCount int        `json:"memberCount"`
	Role        GroupRole  `json:"role"`
}

// GroupListResult is the result of getJoinedGroupList.
type GroupListResult struct {
	GroupList []GroupInfo `json:"groupList"`
}

// ---- event data ----

// NewInvitationEvent is onReceiveNewInvitation's data.
type NewInvitationEvent struct {
	InviteID    string   `json:"inviteID"`
	Inviter     string   `json:"inviter"`
	GroupID     string   `json:"groupID"`
	InviteeList []string `json:"inviteeList"`
	Data        string   `json:"data"`
	// Timeout is the time left in whole seconds, rounded up, from the
	// server's clock; 0 means the invitation has no timeout.
	Timeout int `json:"timeout"`
	// TimeoutMs is the time left in milliseconds (0: no timeout).
	TimeoutMs      int64 `json:"timeoutMs"`
	OnlineUserOnly bool  `json:"onlineUserOnly"`
}

// InviteeEvent is onInviteeAccepted's and onInviteeRejected's data.
type InviteeEvent struct {
	InviteID string `json:"inviteID"`
	Invitee  string `json:"invitee"`
	Data     string `json:"data"`
}

// CancelledEvent is onInvitationCancelled's data.
type CancelledEvent struct {
	InviteID string `json:"inviteID"`
	Inviter  string `json:"inviter"`
	Data     string `json:"data"`
}

// TimeoutEvent is onInvitationTimeout's data.
type TimeoutEvent struct {
	InviteID    string   `json:"inviteID"`
	InviteeList []string `json:"inviteeList"`
}

// ModifiedEvent is onInvitationModified's data.
type ModifiedEvent struct {
	InviteID string `json:"inviteID"`
	Data     string `json:"data"`
}

// MemberEnterEvent is onMemberEnter's data.
type MemberEnterEvent struct {
	GroupID    string   `json:"groupID"`
	MemberList []string `json:"memberList"`
}

// MemberLeaveEvent is onMemberLeave's data.
type MemberLeaveEvent struct {
	GroupID string `json:"groupID"`
	Member  string `json:"member"`
}

// MemberKickedEvent is onMemberKicked's data.
type MemberKickedEvent struct {
	GroupID    string   `json:"groupID"`
	OpUser     string   `json:"opUser"`
	MemberList []string `json:"memberList"`
	Reason     string   `json:"reason"`
}

// GroupDismissedEvent is onGroupDismissed's data.
type GroupDismissedEvent struct {
	GroupID string `json:"groupID"`
	OpUser  string `json:"opUser"`
}

// ---- identifiers ----

// ValidUserID reports whether s is 1-64 characters of [A-Za-z0-9_.@-].
func ValidUserID(s string) bool { return validID(s, "_.@-") }

// ValidGroupID uses the same rule as user IDs.
func ValidGroupID(s string) bool { return validID(s, "_.@-") }

func validID(s, extra string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}
