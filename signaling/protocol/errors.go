package protocol

import (
	"errors"
	"fmt"
)

// Error is the one error type of the wire protocol: a numeric code, a stable
// snake_case reason and a human-readable message. Codes are documented in
// signaling/PROTOCOL.md ("Error codes"); the ranges are:
//
//	6000-6999  TRTC's generic codes (6014, 6017)
//	8000-8999  TRTC's signaling codes (8010, 8011, 8012)
//	9000-9099  protocol and transport (malformed request, unknown op, rates)
//	9100-9199  limits (data size, list sizes, connections)
//	9500-9599  server-side failures (store unavailable)
//	10000-10999 groups
//	11000-11999 rooms and media (later issues)
//	12000-12999 calls (later issues)
//	13000-13999 presence
type Error struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Reason, e.Code, e.Message) }

// Is makes errors.Is match two *Error values by code, so that a sentinel
// matches a copy carrying another message.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// WithMessage returns a copy of e carrying a more specific message.
func (e *Error) WithMessage(format string, args ...any) *Error {
	return &Error{Code: e.Code, Reason: e.Reason, Message: fmt.Sprintf(format, args...)}
}

// Sentinels. Compare with errors.Is; reply with AsError.
var (
	ErrNotLoggedIn      = &Error{6014, "not_logged_in", "not logged in"}
	ErrInvalidParameter = &Error{6017, "invalid_parameter", "invalid parameter"}

	ErrInvalidInviteID = &Error{8010, "invalid_invite_id", "invite ID invalid or already processed"}
	ErrNoPermission    = &Error{8011, "no_permission", "no permission"}
	ErrAlreadyExists   = &Error{8012, "already_exists", "already exists"}

	ErrMalformedRequest = &Error{9001, "malformed_request", "malformed request"}
	ErrUnknownOp        = &Error{9002, "unknown_op", "unknown op"}
	ErrRateLimited      = &Error{9003, "rate_limited", "too many requests"}
	ErrDuplicateID      = &Error{9004, "duplicate_request_id", "request id is still being processed"}

	ErrDataTooLarge       = &Error{9101, "data_too_large", "data too large"}
	ErrListTooLarge       = &Error{9102, "list_too_large", "list too large"}
	ErrTimeoutTooLarge    = &Error{9103, "timeout_too_large", "timeout above the server's maximum"}
	ErrTooManyConnections = &Error{9104, "too_many_connections", "too many connections for this user"}
	ErrTooManyGroups      = &Error{9105, "too_many_groups", "too many groups for this user"}
	ErrGroupFull          = &Error{9106, "group_full", "group member limit reached"}

	ErrInviteePendingFull = &Error{9111, "invitee_pending_full", "too many invitations are ringing for this invitee"}
	ErrTooManyInvitations = &Error{9112, "too_many_invitations", "you have too many invitations in progress"}
	ErrOfflineQuota       = &Error{9113, "offline_quota_exceeded", "too many bytes kept for offline users on your behalf"}
	ErrOfflineStoreFull   = &Error{9114, "offline_store_full", "the server keeps no more events for offline users"}
	ErrTooManyGroupsAdded = &Error{9115, "too_many_groups_added", "the user was added to too many groups by others"}
	ErrTooManyStatusSubs  = &Error{9116, "too_many_status_subscriptions", "too many user status subscriptions"}

	ErrStoreUnavailable = &Error{9500, "store_unavailable", "storage unavailable, try again"}
	ErrShuttingDown     = &Error{9501, "shutting_down", "server is shutting down"}

	ErrGroupNotFound   = &Error{10010, "group_not_found", "group not found"}
	ErrNotGroupMember  = &Error{10007, "not_group_member", "not a member of the group"}
	ErrNotGroupOwner   = &Error{10008, "not_group_owner", "only the group owner may do this"}
	ErrOwnerCannotQuit = &Error{10009, "owner_cannot_quit", "the owner cannot quit; dismiss the group instead"}
	ErrGroupExists     = &Error{10021, "group_exists", "group ID already in use"}
	ErrAlreadyMember   = &Error{10013, "already_member", "already a member of the group"}
	ErrJoinForbidden   = &Error{10014, "join_forbidden", "this group can only be joined by invitation"}

	ErrStatusNotVisible = &Error{13001, "status_not_visible", "you may not see this user's status: you share no group"}
)

// AllErrors lists every sentinel, for documentation tests.
var AllErrors = []*Error{
	ErrNotLoggedIn, ErrInvalidParameter,
	ErrInvalidInviteID, ErrNoPermission, ErrAlreadyExists,
	ErrMalformedRequest, ErrUnknownOp, ErrRateLimited, ErrDuplicateID,
	ErrDataTooLarge, ErrListTooLarge, ErrTimeoutTooLarge, ErrTooManyConnections, ErrTooManyGroups, ErrGroupFull,
	ErrInviteePendingFull, ErrTooManyInvitations, ErrOfflineQuota, ErrOfflineStoreFull, ErrTooManyGroupsAdded, ErrTooManyStatusSubs,
	ErrStoreUnavailable, ErrShuttingDown,
	ErrGroupNotFound, ErrNotGroupMember, ErrNotGroupOwner, ErrOwnerCannotQuit, ErrGroupExists, ErrAlreadyMember, ErrJoinForbidden,
	ErrStatusNotVisible,
}

// AsError converts any error into a wire error. Errors that are not *Error
// become store_unavailable when they wrap a store failure, and an internal
// error otherwise.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: 9599, Reason: "internal_error", Message: "internal error"}
}
