package media_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
)

const loopbackCandidate = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"

func candidateSignal(t media.Target, c string) media.Signal {
	return media.Signal{Target: t, Type: media.SignalCandidate, Candidate: &webrtc.ICECandidateInit{Candidate: c}}
}

// minimalSDP parses but lacks ICE credentials and fingerprint, so Pion
// rejects it.
const minimalSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"

// offerWithTracks returns a real Pion offer sending n video tracks.
func offerWithTracks(t testing.TB, n int) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.GracefulClose() }()
	for i := 0; i < n; i++ {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo,
			webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer.SDP
}

func TestSignalValidate(t *testing.T) {
	offer := offerWithTracks(t, 1)
	valid := []media.Signal{
		{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offer},
		{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: offer},
		candidateSignal(media.TargetPublisher, loopbackCandidate),
		candidateSignal(media.TargetSubscriber, strings.TrimPrefix(loopbackCandidate, "candidate:")),
		candidateSignal(media.TargetSubscriber, ""), // end of candidates
	}
	for i, s := range valid {
		if err := s.Validate(); err != nil {
			t.Errorf("valid[%d].Validate() = %v", i, err)
		}
	}
	for name, s := range badSignals(offer) {
		if err := s.Validate(); !errors.Is(err, media.ErrBadSignal) {
			t.Errorf("%s: Validate() = %v, want ErrBadSignal", name, err)
		}
	}
}

// badSignals are malformed whatever the participant's state.
func badSignals(offer string) map[string]media.Signal {
	pub, sub := media.TargetPublisher, media.TargetSubscriber
	return map[string]media.Signal{
		"empty":                 {},
		"unknown target":        {Target: "sideways", Type: media.SignalOffer, SDP: offer},
		"unknown type":          {Target: pub, Type: "pranswer", SDP: offer},
		"publisher answer":      {Target: pub, Type: media.SignalAnswer, SDP: offer},
		"subscriber offer":      {Target: sub, Type: media.SignalOffer, SDP: offer},
		"offer without sdp":     {Target: pub, Type: media.SignalOffer},
		"offer with junk sdp":   {Target: pub, Type: media.SignalOffer, SDP: "hello"},
		"offer without media":   {Target: pub, Type: media.SignalOffer, SDP: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"},
		"huge sdp":              {Target: pub, Type: media.SignalOffer, SDP: offer + strings.Repeat("a=x\r\n", media.MaxSDPSize/5)},
		"offer with candidate":  {Target: pub, Type: media.SignalOffer, SDP: offer, Candidate: &webrtc.ICECandidateInit{Candidate: loopbackCandidate}},
		"candidate missing":     {Target: pub, Type: media.SignalCandidate},
		"candidate junk":        candidateSignal(pub, "candidate:not a candidate"),
		"candidate huge":        candidateSignal(sub, loopbackCandidate+strings.Repeat(" x y", media.MaxCandidateSize)),
		"candidate with sdp":    {Target: sub, Type: media.SignalCandidate, SDP: offer, Candidate: &webrtc.ICECandidateInit{Candidate: loopbackCandidate}},
		"answer with junk sdp":  {Target: sub, Type: media.SignalAnswer, SDP: "v=0\r\nbanana"},
		"candidate bad network": candidateSignal(sub, "candidate:1 1 carrier-pigeon 1 127.0.0.1 1 typ host"),
		"publisher restartIce":  {Target: pub, Type: media.SignalRestartICE},
		"restartIce with sdp":   {Target: sub, Type: media.SignalRestartICE, SDP: offer},
		"restartIce with cand":  {Target: sub, Type: media.SignalRestartICE, Candidate: &webrtc.ICECandidateInit{Candidate: loopbackCandidate}},
	}
}

func TestDecodeSignal(t *testing.T) {
	good := `{"target":"publisher","type":"candidate","candidate":{"candidate":"` + loopbackCandidate + `","sdpMid":"0"}}`
	s, err := media.DecodeSignal([]byte(good))
	if err != nil {
		t.Fatalf("DecodeSignal(good) = %v", err)
	}
	if s.Target != media.TargetPublisher || s.Candidate == nil || *s.Candidate.SDPMid != "0" {
		t.Errorf("DecodeSignal(good) = %+v", s)
	}
	// Round trip of what the SFU sends.
	out, err := json.Marshal(media.Signal{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: minimalSDP})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"target":"subscriber","type":"answer","sdp":"v=0`) {
		t.Errorf("json = %s", out)
	}
	if _, err := media.DecodeSignal(out); err != nil {
		t.Errorf("DecodeSignal(round trip) = %v", err)
	}
	for _, bad := range []string{
		``, `null`, `[]`, `{"target":1}`, good + `{}`, `{"target":"publisher","type":"candidate","extra":1}`,
		`{"target":"publisher","type":"offer","sdp":"x"}`, strings.Repeat(" ", media.MaxSignalSize+1),
	} {
		if _, err := media.DecodeSignal([]byte(bad)); !errors.Is(err, media.ErrBadSignal) {
			t.Errorf("DecodeSignal(%.40q) = %v, want ErrBadSignal", bad, err)
		}
	}
}

// TestBadSignalsKeepParticipant throws every kind of bad signal at a
// connected participant, then checks that its media and negotiation still
// work.
func TestBadSignalsKeepParticipant(t *testing.T) {
	s := newSFU(t, testConfig())
	alice := join(t, s, "room1", "alice", true, peerConfig(true))
	bob := join(t, s, "room1", "bob", true, peerConfig(true))
	eventually(t, 10*time.Second, "alice and bob exchanging media", func() bool {
		return receiving(alice, 10, bob) && receiving(bob, 10, alice)
	})

	offer := offerWithTracks(t, 1)
	cases := map[string]struct {
		sig  media.Signal
		want error
	}{}
	for name, sig := range badSignals(offer) {
		cases[name] = struct {
			sig  media.Signal
			want error
		}{sig, media.ErrBadSignal}
	}
	add := func(name string, sig media.Signal, want error) {
		cases[name] = struct {
			sig  media.Signal
			want error
		}{sig, want}
	}
	add("answer with no offer outstanding", media.Signal{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: offer}, media.ErrUnexpectedSignal)
	add("offer pion rejects", media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: minimalSDP}, media.ErrNegotiation)
	add("too many tracks", media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offerWithTracks(t, 5)}, media.ErrTooManyTracks)

	for name, tc := range cases {
		if err := alice.part.HandleSignal(tc.sig); !errors.Is(err, tc.want) {
			t.Errorf("%s: HandleSignal = %v, want %v", name, err, tc.want)
		}
	}

	// Still forwarding both ways...
	before := alice.peer.Received()[peer.TrackKey{StreamID: "bob", Kind: "video"}].Packets
	beforeBob := bob.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets
	eventually(t, 3*time.Second, "media still flowing", func() bool {
		return alice.peer.Received()[peer.TrackKey{StreamID: "bob", Kind: "video"}].Packets > before+10 &&
			bob.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > beforeBob+10
	})
	// ...and still negotiating: a newcomer's tracks reach alice and hers
	// reach it.
	carol := join(t, s, "room1", "carol", true, peerConfig(true))
	eventually(t, 10*time.Second, "carol exchanging media with alice", func() bool {
		return receiving(alice, 10, carol) && receiving(carol, 10, alice, bob)
	})
	checkClean(t, alice, bob, carol)
}

// TestTrackLimitAtEdge: an offer with exactly Config.MaxTracksPerParticipant
// tracks is accepted; one more is refused (TestBadSignalsKeepParticipant).
func TestTrackLimitAtEdge(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracksPerParticipant = 4
	s := newSFU(t, cfg)
	p, err := s.Join("edge", "pub", media.JoinOptions{CanPublish: true, Send: func(media.Signal) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.HandleSignal(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offerWithTracks(t, 4)}); err != nil {
		t.Fatalf("an offer at the track limit: %v", err)
	}
}

// TestSignalErrorMessages: every malformed signal names the field at fault
// by its JSON path in the signal and says what was expected, in plain words.
func TestSignalErrorMessages(t *testing.T) {
	offer := offerWithTracks(t, 1)
	bad := badSignals(offer)
	cases := []struct {
		name, field, problem string // problem: the message's start
	}{
		{"empty", "target", `must be "publisher" or "subscriber", not ""`},
		{"unknown target", "target", `must be "publisher" or "subscriber", not "sideways"`},
		{"unknown type", "type", `must be "offer", "answer", "candidate" or "restartIce", not "pranswer"`},
		{"publisher answer", "type", `must be "offer" or "candidate" for target "publisher" (the publisher connection), not "answer"`},
		{"subscriber offer", "type", `must be "answer" or "candidate" for target "subscriber" (the subscriber connection), not "offer"`},
		{"offer without sdp", "sdp", "is required: an SDP description"},
		{"offer with junk sdp", "sdp", "is not a valid SDP description: "},
		{"offer without media", "sdp", "has no media sections (m= lines)"},
		{"huge sdp", "sdp", fmt.Sprintf("must be at most %d bytes, not ", media.MaxSDPSize)},
		{"offer with candidate", "candidate", "must be absent on an offer"},
		{"candidate missing", "candidate", "is required on a candidate: an object with candidate, sdpMid, sdpMLineIndex"},
		{"candidate junk", "candidate.candidate", "is not a valid ICE candidate: "},
		{"candidate huge", "candidate.candidate", fmt.Sprintf("must be at most %d bytes, not ", media.MaxCandidateSize)},
		{"candidate with sdp", "sdp", "must be absent on a candidate"},
		{"candidate bad network", "candidate.candidate", "is not a valid ICE candidate: "},
		{"answer with junk sdp", "sdp", "is not a valid SDP description: "},
		{"publisher restartIce", "type", `"restartIce" is for target "subscriber" only`},
		{"restartIce with sdp", "sdp", "must be absent on restartIce"},
		{"restartIce with cand", "candidate", "must be absent on restartIce"},
	}
	if len(cases) != len(bad) {
		t.Fatalf("%d cases for %d bad signals", len(cases), len(bad))
	}
	for _, c := range cases {
		err := bad[c.name].Validate()
		var se *media.SignalError
		if !errors.As(err, &se) || se.Field != c.field || !strings.HasPrefix(se.Problem, c.problem) || !errors.Is(err, media.ErrBadSignal) {
			t.Errorf("%s: %v (%#v), want %s %s…", c.name, err, se, c.field, c.problem)
		}
	}

	decoded := []struct{ json, field, problem string }{
		{`{"target":1}`, "target", `must be "publisher" or "subscriber", not a number`},
		{`{"target":"publisher","type":"candidate","candidate":{"sdpMLineIndex":-1}}`, "candidate.sdpMLineIndex", "must be a whole number from 0 to 65535, not -1"},
		{`{"target":"publisher","type":"candidate","candidate":{"sdpMLineIndex":1e2}}`, "candidate.sdpMLineIndex", "must be a whole number from 0 to 65535, not 1e2"},
		{`{"target":"publisher","type":"candidate","candidate":"x"}`, "candidate", `must be an object, not a string`},
		{`{"target":"publisher","type":"candidate","candidate":{"sdpMid":5}}`, "candidate.sdpMid", `must be a string, not a number`},
		{`[]`, "", "the signal must be an object, not an array"},
		{`{"target":"publisher","type":"candidate","extra":1}`, "", `unknown field "extra": a signal takes target, type, sdp and candidate`},
		{`{"target":`, "", "the signal is not valid JSON: "},
	}
	for _, c := range decoded {
		_, err := media.DecodeSignal([]byte(c.json))
		var se *media.SignalError
		if !errors.As(err, &se) || se.Field != c.field || !strings.HasPrefix(se.Problem, c.problem) {
			t.Errorf("%s: %v, want %q %s…", c.json, err, c.field, c.problem)
		}
		if err != nil && (strings.Contains(err.Error(), "uint16") || strings.Contains(err.Error(), "Go ")) {
			t.Errorf("%s: Go names in %v", c.json, err)
		}
	}
}
