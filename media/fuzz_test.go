package media_test

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/pion/ice/v4"

	"github.com/switchboard-rtc/switchboard/media"
)

// FuzzSignal feeds client JSON to DecodeSignal and every signal it accepts
// to HandleSignal of a live publisher participant. Neither may panic;
// DecodeSignal errors must be ErrBadSignal; HandleSignal errors must be one
// of the documented sentinels.
func FuzzSignal(f *testing.F) {
	offer := offerWithTracks(f, 2)
	seed := func(s media.Signal) {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offer})
	seed(media.Signal{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: offer})
	seed(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: minimalSDP})
	seed(candidateSignal(media.TargetPublisher, loopbackCandidate))
	seed(candidateSignal(media.TargetSubscriber, ""))
	f.Add([]byte(`{"target":"subscriber","type":"offer","sdp":"v=0"}`))
	f.Add([]byte(`{"target":"publisher","type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}`))
	f.Add([]byte(`{}`))

	s, err := media.New(testConfig(), testLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	p, err := s.Join("fuzz", "fuzzer", media.JoinOptions{CanPublish: true, Send: func(media.Signal) {}})
	if err != nil {
		f.Fatal(err)
	}

	documented := []error{
		media.ErrBadSignal, media.ErrUnexpectedSignal, media.ErrNegotiation,
		media.ErrCannotPublish, media.ErrTooManyTracks, media.ErrClosed,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sig, err := media.DecodeSignal(data)
		if err != nil {
			if !errors.Is(err, media.ErrBadSignal) {
				t.Fatalf("DecodeSignal error %v is not ErrBadSignal", err)
			}
			return
		}
		if err := sig.Validate(); err != nil {
			t.Fatalf("DecodeSignal accepted a signal Validate rejects: %v", err)
		}
		if !loopbackOnly(sig) {
			return // tests never make the SFU contact other addresses
		}
		if err := p.HandleSignal(sig); err != nil {
			for _, want := range documented {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("HandleSignal error %v is not a documented sentinel", err)
		}
	})
}

// loopbackOnly reports whether every address sig could make the SFU send to
// is a loopback address.
func loopbackOnly(sig media.Signal) bool {
	if strings.Contains(sig.SDP, "candidate") {
		return false
	}
	if sig.Candidate == nil {
		return true
	}
	value := strings.TrimPrefix(sig.Candidate.Candidate, "candidate:")
	if value == "" {
		return true
	}
	c, err := ice.UnmarshalCandidate(value)
	if err != nil {
		return true // rejected before use
	}
	ip := net.ParseIP(c.Address())
	return ip != nil && ip.IsLoopback() && c.Type() == ice.CandidateTypeHost
}
