package rooms

import (
	"errors"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// ErrRoomTaken is Claim's error: the room ID has a room or a claim. It is
// not a wire error: the claimant's layer answers with its own.
var ErrRoomTaken = errors.New("rooms: room ID in use")

// Wire errors of the rooms ops (code range 11000-11999, PROTOCOL.md).
var (
	ErrNotAdmitted      = &protocol.Error{Code: 11001, Reason: "not_admitted", Message: "not admitted to this room"}
	ErrNotInRoom        = &protocol.Error{Code: 11002, Reason: "not_in_room", Message: "not in this room"}
	ErrTooManyRooms     = &protocol.Error{Code: 11003, Reason: "too_many_rooms", Message: "in too many rooms at once"}
	ErrCannotPublish    = &protocol.Error{Code: 11004, Reason: "cannot_publish", Message: "an audience member cannot publish"}
	ErrBadSignal        = &protocol.Error{Code: 11005, Reason: "bad_signal", Message: "bad WebRTC signal"}
	ErrUnexpected       = &protocol.Error{Code: 11006, Reason: "unexpected_signal", Message: "signal not expected in this state"}
	ErrNegotiation      = &protocol.Error{Code: 11007, Reason: "negotiation_failed", Message: "WebRTC negotiation failed"}
	ErrTooManyTracks    = &protocol.Error{Code: 11008, Reason: "too_many_tracks", Message: "too many published tracks"}
	ErrMediaUnavailable = &protocol.Error{Code: 11009, Reason: "media_unavailable", Message: "the media server could not take the participant"}
	ErrRoomFull         = &protocol.Error{Code: 11010, Reason: "room_full", Message: "the room is full"}
	ErrNoSeat           = &protocol.Error{Code: 11011, Reason: "no_seat", Message: "no free seat"}
	ErrNeedsApproval    = &protocol.Error{Code: 11012, Reason: "needs_approval", Message: "the host puts audience members on a seat in this room"}
	ErrNotHost          = &protocol.Error{Code: 11013, Reason: "not_host", Message: "only the room's host may do this"}
	ErrNotOnSeat        = &protocol.Error{Code: 11014, Reason: "not_on_seat", Message: "the user is not on a seat"}
	// ErrRoomNodeUnavailable: cluster mode, the room's media node did not
	// answer within the request's deadline.
	ErrRoomNodeUnavailable = &protocol.Error{Code: 11015, Reason: "room_node_unavailable", Message: "the room's media node did not answer; retry"}
)

// AllErrors lists the package's wire errors, for documentation tests.
var AllErrors = []*protocol.Error{ErrNotAdmitted, ErrNotInRoom, ErrTooManyRooms, ErrCannotPublish, ErrBadSignal,
	ErrUnexpected, ErrNegotiation, ErrTooManyTracks, ErrMediaUnavailable, ErrRoomFull,
	ErrNoSeat, ErrNeedsApproval, ErrNotHost, ErrNotOnSeat, ErrRoomNodeUnavailable}
