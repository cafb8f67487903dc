package media

import "errors"

// Errors returned by this package. Compare with errors.Is: most are wrapped
// with detail about the offending input.
var (
	// ErrInvalidConfig is returned by New when Config fails validation.
	ErrInvalidConfig = errors.New("media: invalid config")

	// ErrInvalidID is returned by Join when the room or participant ID is
	// empty, longer than MaxIDLength, or holds characters other than the SDP
	// token characters (RFC 4566) allowed in a stream ID.
	ErrInvalidID = errors.New("media: invalid room or participant id")

	// ErrDuplicateParticipant is returned by Join when the participant ID is
	// already in the room.
	ErrDuplicateParticipant = errors.New("media: participant already in room")

	// ErrBadSignal is returned by HandleSignal and DecodeSignal when a Signal
	// is malformed: unknown target or type, a type the target never receives
	// (an answer for the publisher connection, an offer for the subscriber
	// one), missing or extra fields, an SDP or candidate that does not parse,
	// or a field over its size limit. The participant is unaffected.
	ErrBadSignal = errors.New("media: bad signal")

	// ErrUnexpectedSignal is returned by HandleSignal for a well-formed Signal
	// that arrives in the wrong negotiation state, such as a subscriber answer
	// when no offer is outstanding, or too many candidates before the
	// description they belong to. The participant is unaffected.
	ErrUnexpectedSignal = errors.New("media: signal not expected in this state")

	// ErrNegotiation is returned by HandleSignal when Pion rejects a
	// description that parsed (for example an offer with no codec in common).
	// The connection keeps its previous description.
	ErrNegotiation = errors.New("media: negotiation failed")

	// ErrCannotPublish is returned by HandleSignal for any publisher Signal
	// from a participant that joined with CanPublish false.
	ErrCannotPublish = errors.New("media: participant may not publish")

	// ErrTooManyTracks is returned by HandleSignal for a publisher offer that
	// sends more audio and video tracks than Config.MaxTracksPerParticipant.
	ErrTooManyTracks = errors.New("media: too many tracks")

	// ErrClosed is returned when the SFU or the participant has been closed.
	ErrClosed = errors.New("media: closed")
)
