package media

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Target names which of a participant's two PeerConnections a Signal is for.
type Target string

// The two PeerConnections of a participant. See the package documentation
// for who offers on which.
const (
	// TargetPublisher is the connection that carries the client's media to
	// the SFU. The client offers, the SFU answers.
	TargetPublisher Target = "publisher"
	// TargetSubscriber is the connection that carries other participants'
	// media to the client. The SFU offers, the client answers.
	TargetSubscriber Target = "subscriber"
)

// SignalType is the kind of negotiation message.
type SignalType string

// Signal types.
const (
	SignalOffer     SignalType = "offer"
	SignalAnswer    SignalType = "answer"
	SignalCandidate SignalType = "candidate"
	// SignalRestartICE is sent by a client for its subscriber connection
	// only, with no sdp and no candidate: the SFU answers it with a new
	// subscriber offer that restarts ICE (new credentials, new candidates).
	// On the publisher connection the client restarts ICE itself, with an
	// offer made with iceRestart.
	SignalRestartICE SignalType = "restartIce"
)

// Size limits on client input, checked before anything is parsed further.
const (
	// MaxSignalSize bounds the JSON accepted by DecodeSignal.
	MaxSignalSize = 128 << 10
	// MaxSDPSize bounds Signal.SDP.
	MaxSDPSize = 64 << 10
	// MaxCandidateSize bounds Signal.Candidate.Candidate.
	MaxCandidateSize = 1 << 10
	// maxCandidateFieldSize bounds sdpMid and usernameFragment.
	maxCandidateFieldSize = 256
)

// Signal is one negotiation message between a client and the SFU, in either
// direction. Offers and answers carry SDP; candidates carry Candidate (trickle
// ICE). A Candidate whose candidate string is empty marks the end of the
// remote candidates and is accepted and ignored.
type Signal struct {
	Target    Target                   `json:"target"`
	Type      SignalType               `json:"type"`
	SDP       string                   `json:"sdp,omitempty"`
	Candidate *webrtc.ICECandidateInit `json:"candidate,omitempty"`
}

// SignalError is a malformed Signal. Field is the JSON path of the field at
// fault as the client wrote it, relative to the signal ("candidate.sdpMid";
// "" for the signal as a whole), and Problem says in plain words what is
// wrong with it ("must be at most 256 bytes"). It wraps ErrBadSignal; the
// rooms layer prefixes Field with the request's "args.".
type SignalError struct {
	Field   string
	Problem string
}

func (e *SignalError) Error() string {
	if e.Field == "" {
		return ErrBadSignal.Error() + ": " + e.Problem
	}
	return ErrBadSignal.Error() + ": " + e.Field + " " + e.Problem
}

// Unwrap makes errors.Is(err, ErrBadSignal) hold.
func (e *SignalError) Unwrap() error { return ErrBadSignal }

func badSignal(field, format string, args ...any) error {
	return &SignalError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// signalFieldWords says what each field of a Signal holds, for errors.
var signalFieldWords = map[string]string{
	"target":                     `"publisher" or "subscriber"`,
	"type":                       `"offer", "answer", "candidate" or "restartIce"`,
	"sdp":                        "a string holding an SDP description",
	"candidate":                  "an object",
	"candidate.candidate":        "a string",
	"candidate.sdpMid":           "a string",
	"candidate.sdpMLineIndex":    "a whole number from 0 to 65535",
	"candidate.usernameFragment": "a string",
}

// DecodeSignal decodes a client Signal from JSON and validates it like
// Validate. Unknown fields and trailing data are rejected. Errors are
// *SignalError and wrap ErrBadSignal.
func DecodeSignal(data []byte) (Signal, error) {
	var s Signal
	if len(data) > MaxSignalSize {
		return s, badSignal("", "the signal is %d bytes; the limit is %d", len(data), MaxSignalSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Signal{}, decodeError(err)
	}
	if dec.More() {
		return Signal{}, badSignal("", "trailing data after the signal object")
	}
	if err := s.Validate(); err != nil {
		return Signal{}, err
	}
	return s, nil
}

// decodeError words a JSON decoding error of a Signal.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got := map[string]string{"string": "a string", "number": "a number", "bool": "true or false",
			"array": "an array", "object": "an object"}[te.Value]
		if n, ok := strings.CutPrefix(te.Value, "number "); ok {
			got = truncate(n)
		} else if got == "" {
			got = te.Value
		}
		if te.Field == "" {
			return badSignal("", "the signal must be an object, not %s", got)
		}
		want := signalFieldWords[te.Field]
		if want == "" {
			want = "another type"
		}
		return badSignal(te.Field, "must be %s, not %s", want, got)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badSignal("", "the signal is not valid JSON: %v (at byte %d)", se, se.Offset)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badSignal("", "unknown field %s: a signal takes target, type, sdp and candidate; a candidate takes candidate, sdpMid, sdpMLineIndex and usernameFragment", name)
	}
	return badSignal("", "the signal is not valid JSON: %v", strings.TrimPrefix(err.Error(), "json: "))
}

// Validate checks that s is a message a client may send: a known target,
// a type that target receives from clients (publisher: offer or candidate;
// subscriber: answer, candidate or restartIce), SDP that parses for offers and answers,
// a candidate that parses for candidates, and no field of the other kind.
// Errors are *SignalError and wrap ErrBadSignal. Validate does not look at
// negotiation state.
func (s Signal) Validate() error {
	switch s.Target {
	case TargetPublisher, TargetSubscriber:
	default:
		return badSignal("target", "must be %s, not %q", signalFieldWords["target"], truncate(string(s.Target)))
	}
	switch s.Type {
	case SignalOffer, SignalAnswer:
		if want := s.Target.clientDescriptionType(); s.Type != want {
			return badSignal("type", "must be %q or %q for target %q (the %s connection), not %q",
				want, SignalCandidate, s.Target, s.Target, s.Type)
		}
		if s.Candidate != nil {
			return badSignal("candidate", "must be absent on an %s", s.Type)
		}
		_, err := parseSDP(s.SDP)
		return err
	case SignalCandidate:
		if s.SDP != "" {
			return badSignal("sdp", "must be absent on a candidate")
		}
		return validateCandidate(s.Candidate)
	case SignalRestartICE:
		if s.Target != TargetSubscriber {
			return badSignal("type", "%q is for target %q only: on the publisher connection, send an offer made with iceRestart", SignalRestartICE, TargetSubscriber)
		}
		if s.SDP != "" {
			return badSignal("sdp", "must be absent on %s", SignalRestartICE)
		}
		if s.Candidate != nil {
			return badSignal("candidate", "must be absent on %s", SignalRestartICE)
		}
		return nil
	default:
		return badSignal("type", "must be %s, not %q", signalFieldWords["type"], truncate(string(s.Type)))
	}
}

// clientDescriptionType is the description type a client sends for t.
func (t Target) clientDescriptionType() SignalType {
	if t == TargetPublisher {
		return SignalOffer
	}
	return SignalAnswer
}

func parseSDP(raw string) (*sdp.SessionDescription, error) {
	if raw == "" {
		return nil, badSignal("sdp", "is required: an SDP description")
	}
	if len(raw) > MaxSDPSize {
		return nil, badSignal("sdp", "must be at most %d bytes, not %d", MaxSDPSize, len(raw))
	}
	var parsed sdp.SessionDescription
	if err := parsed.UnmarshalString(raw); err != nil {
		return nil, badSignal("sdp", "is not a valid SDP description: %v", err)
	}
	if len(parsed.MediaDescriptions) == 0 {
		return nil, badSignal("sdp", "has no media sections (m= lines)")
	}
	return &parsed, nil
}

func validateCandidate(c *webrtc.ICECandidateInit) error {
	if c == nil {
		return badSignal("candidate", "is required on a candidate: an object with candidate, sdpMid, sdpMLineIndex")
	}
	if len(c.Candidate) > MaxCandidateSize {
		return badSignal("candidate.candidate", "must be at most %d bytes, not %d", MaxCandidateSize, len(c.Candidate))
	}
	if c.SDPMid != nil && len(*c.SDPMid) > maxCandidateFieldSize {
		return badSignal("candidate.sdpMid", "must be at most %d bytes, not %d", maxCandidateFieldSize, len(*c.SDPMid))
	}
	if c.UsernameFragment != nil && len(*c.UsernameFragment) > maxCandidateFieldSize {
		return badSignal("candidate.usernameFragment", "must be at most %d bytes, not %d", maxCandidateFieldSize, len(*c.UsernameFragment))
	}
	value := strings.TrimPrefix(c.Candidate, "candidate:")
	if value == "" {
		return nil // end of candidates
	}
	if _, err := ice.UnmarshalCandidate(value); err != nil {
		return badSignal("candidate.candidate", "is not a valid ICE candidate: %v", err)
	}
	return nil
}

// sendingTracks counts the audio and video sections of a client offer that
// send media to the SFU (sendrecv, sendonly or no direction attribute, and
// not rejected with port 0 unless bundle-only).
func sendingTracks(d *sdp.SessionDescription) int {
	n := 0
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" && m.MediaName.Media != "video" {
			continue
		}
		if _, bundleOnly := m.Attribute("bundle-only"); m.MediaName.Port.Value == 0 && !bundleOnly {
			continue // rejected section
		}
		dir := "sendrecv"
		for _, a := range m.Attributes {
			switch a.Key {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				dir = a.Key
			}
		}
		if dir == "sendrecv" || dir == "sendonly" {
			n++
		}
	}
	return n
}

// truncate shortens client-supplied strings quoted in errors and logs.
func truncate(s string) string {
	const limit = 32
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
