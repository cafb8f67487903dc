package protocol

// The presence ops of the wire protocol (PROTOCOL.md, "Presence"), Tencent
// IM's names: who is online, subscriptions to changes, and the custom
// status text a user sets.

// Presence op and event names.
const (
	OpGetUserStatus         = "getUserStatus"
	OpSubscribeUserStatus   = "subscribeUserStatus"
	OpUnsubscribeUserStatus = "unsubscribeUserStatus"
	OpSetSelfStatus         = "setSelfStatus"

	EvUserStatusChanged = "onUserStatusChanged"
)

// StatusType is a user's presence as another user sees it.
type StatusType string

// The status types. StatusUnknown is what a user gets for a user they may
// not see (they share no group, PROTOCOL.md's rule): the same answer
// whether that user exists or not.
const (
	StatusUnknown StatusType = "unknown"
	StatusOnline  StatusType = "online"
	StatusOffline StatusType = "offline"
)

// UserIDListArgs are the args of getUserStatus, subscribeUserStatus and
// unsubscribeUserStatus (an empty list unsubscribes from everyone).
type UserIDListArgs struct {
	UserIDList []string `json:"userIDList"`
}

// SetSelfStatusArgs are the args of setSelfStatus; "" clears the text.
type SetSelfStatusArgs struct {
	CustomStatus string `json:"customStatus"`
}

// UserStatus is one user's presence: Tencent IM's V2TIMUserStatus.
type UserStatus struct {
	UserID       string     `json:"userID"`
	StatusType   StatusType `json:"statusType"`
	CustomStatus string     `json:"customStatus"`
}

// UserStatusResult is the result of getUserStatus and subscribeUserStatus
// (the statuses of the listed users, in the order listed), and the data of
// onUserStatusChanged.
type UserStatusResult struct {
	StatusList []UserStatus `json:"userStatusList"`
}
