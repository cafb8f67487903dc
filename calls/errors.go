package calls

import (
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Wire errors of the call ops (code range 12000-12999, CALLS.md).
var (
	ErrCallNotFound  = &protocol.Error{Code: 12001, Reason: "call_not_found", Message: "no such call, or it has ended"}
	ErrCallEnded     = &protocol.Error{Code: 12002, Reason: "call_ended", Message: "the call has ended"}
	ErrNotInCall     = &protocol.Error{Code: 12003, Reason: "not_in_call", Message: "not a participant of this call"}
	ErrBadCallData   = &protocol.Error{Code: 12004, Reason: "bad_call_data", Message: "malformed call data"}
	ErrNotGroupCall  = &protocol.Error{Code: 12005, Reason: "not_group_call", Message: "only group calls can do this"}
	ErrAlreadyInCall = &protocol.Error{Code: 12006, Reason: "already_in_call", Message: "already in this call"}
	// ErrRoomUnavailable refuses a call whose room ID is taken; it never
	// says by whom.
	ErrRoomUnavailable = &protocol.Error{Code: 12007, Reason: "room_unavailable", Message: "this room ID is in use; a call needs a free one"}
)

// AllErrors lists the package's wire errors, for documentation tests.
var AllErrors = []*protocol.Error{ErrCallNotFound, ErrCallEnded, ErrNotInCall, ErrBadCallData, ErrNotGroupCall, ErrAlreadyInCall,
	ErrRoomUnavailable}
