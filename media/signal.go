package media

import (
	"bytes"
	"encoding/json"
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

// DecodeSignal decodes a client Signal from JSON and validates it like
// Validate. Unknown fields and trailing data are rejected. Errors wrap
// ErrBadSignal.
func DecodeSignal(data []byte) (Signal, error) {
	var s Signal
	if len(data) > MaxSignalSize {
		return s, fmt.Errorf("%w: %d bytes, limit %d", ErrBadSignal, len(data), MaxSignalSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Signal{}, fmt.Errorf("%w: %v", ErrBadSignal, err)
	}
	if dec.More() {
		return Signal{}, fmt.Errorf("%w: trailing data after signal", ErrBadSignal)
	}
	if err := s.Validate(); err != nil {
		return Signal{}, err
	}
	return s, nil
}

// Validate checks that s is a message a client may send: a known target,
// a type that target receives from clients (publisher: offer or candidate;
// subscriber: answer or candidate), SDP that parses for offers and answers,
// a candidate that parses for candidates, and no field of the other kind.
// Errors wrap ErrBadSignal. Validate does not look at negotiation state.
func (s Signal) Validate() error {
	switch s.Target {
	case TargetPublisher, TargetSubscriber:
	default:
		return fmt.Errorf("%w: unknown target %q", ErrBadSignal, truncate(string(s.Target)))
	}
	switch s.Type {
	case SignalOffer, SignalAnswer:
		if want := s.Target.clientDescriptionType(); s.Type != want {
			return fmt.Errorf("%w: %s connection takes %s from the client, got %s",
				ErrBadSignal, s.Target, want, s.Type)
		}
		if s.Candidate != nil {
			return fmt.Errorf("%w: %s carries a candidate", ErrBadSignal, s.Type)
		}
		_, err := parseSDP(s.SDP)
		return err
	case SignalCandidate:
		if s.SDP != "" {
			return fmt.Errorf("%w: candidate carries sdp", ErrBadSignal)
		}
		return validateCandidate(s.Candidate)
	default:
		return fmt.Errorf("%w: unknown type %q", ErrBadSignal, truncate(string(s.Type)))
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
		return nil, fmt.Errorf("%w: empty sdp", ErrBadSignal)
	}
	if len(raw) > MaxSDPSize {
		return nil, fmt.Errorf("%w: sdp of %d bytes, limit %d", ErrBadSignal, len(raw), MaxSDPSize)
	}
	var parsed sdp.SessionDescription
	if err := parsed.UnmarshalString(raw); err != nil {
		return nil, fmt.Errorf("%w: sdp: %v", ErrBadSignal, err)
	}
	if len(parsed.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: sdp has no media sections", ErrBadSignal)
	}
	return &parsed, nil
}

func validateCandidate(c *webrtc.ICECandidateInit) error {
	if c == nil {
		return fmt.Errorf("%w: candidate missing", ErrBadSignal)
	}
	if len(c.Candidate) > MaxCandidateSize {
		return fmt.Errorf("%w: candidate of %d bytes, limit %d", ErrBadSignal, len(c.Candidate), MaxCandidateSize)
	}
	if c.SDPMid != nil && len(*c.SDPMid) > maxCandidateFieldSize {
		return fmt.Errorf("%w: sdpMid too long", ErrBadSignal)
	}
	if c.UsernameFragment != nil && len(*c.UsernameFragment) > maxCandidateFieldSize {
		return fmt.Errorf("%w: usernameFragment too long", ErrBadSignal)
	}
	value := strings.TrimPrefix(c.Candidate, "candidate:")
	if value == "" {
		return nil // end of candidates
	}
	if _, err := ice.UnmarshalCandidate(value); err != nil {
		return fmt.Errorf("%w: candidate: %v", ErrBadSignal, err)
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
