package protocol

import "strings"

// The invitation and group ops of the wire protocol (PROTOCOL.md): their
// names, the names of their events, and the shapes of their args, results
// and event data.

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

// ---- op arguments and results ----

// InviteArgs are the args of invite.
type InviteArgs struct {
	Invitee        string `json:"invitee"`
	Data           string `json:"data"`
	OnlineUserOnly bool   `json:"onlineUserOnly"`
	// Timeout in seconds: absent → the server's default, 0 → no timeout.
	Timeout *int `json:"timeout" expect:"a whole number of seconds"`
	// OfflinePushInfo, when given, is handed to the app's backend (webhook
	// push.ring) for each invitee with no open connection.
	OfflinePushInfo *OfflinePushInfo `json:"offlinePushInfo,omitempty"`
}

// InviteInGroupArgs are the args of inviteInGroup.
type InviteInGroupArgs struct {
	GroupID        string   `json:"groupID"`
	InviteeList    []string `json:"inviteeList"`
	Data           string   `json:"data"`
	OnlineUserOnly bool     `json:"onlineUserOnly"`
	Timeout        *int     `json:"timeout" expect:"a whole number of seconds"`
	// OfflinePushInfo: as InviteArgs'.
	OfflinePushInfo *OfflinePushInfo `json:"offlinePushInfo,omitempty"`
}

// OfflinePushInfo is what a push notification to an invitee with no open
// connection shows (Tencent's offlinePushInfo): the server does not send it
// to APNs or FCM itself, it hands it to the app's backend in the push.ring
// webhook. Every field is optional; their total size is bounded by
// limits.max_push_info_bytes.
type OfflinePushInfo struct {
	Title        string `json:"title,omitempty"`
	Desc         string `json:"desc,omitempty"`
	Ext          string `json:"ext,omitempty"`          // application data for the app that is woken
	IOSSound     string `json:"iOSSound,omitempty"`     // a sound file name of the iOS app
	AndroidSound string `json:"androidSound,omitempty"` // a sound file name of the Android app
}

// Size is the number of bytes of its fields, which limits.max_push_info_bytes
// bounds.
func (p *OfflinePushInfo) Size() int {
	if p == nil {
		return 0
	}
	return len(p.Title) + len(p.Desc) + len(p.Ext) + len(p.IOSSound) + len(p.AndroidSound)
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
