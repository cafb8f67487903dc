package media_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
)

// TestICERestartCandidatesFollowTheirDescription: a description that
// restarts ICE goes out before every candidate gathered for it, in both
// directions and on both connections. Pion gathers anew inside CreateOffer
// (ICERestart) and inside SetRemoteDescription (an offer with new
// credentials); a candidate sent before its description reaches a side
// whose remote ufrag is still the old one, which drops it, and the restarted
// connection then has no pair to check (seen as a subscriber connection
// that never came back after a network cut).
func TestICERestartCandidatesFollowTheirDescription(t *testing.T) {
	s := newSFU(t, testConfig())
	alice := join(t, s, "room1", "alice", true, peerConfig(true))
	bob := join(t, s, "room1", "bob", true, peerConfig(true))
	eventually(t, 10*time.Second, "both connected", func() bool {
		return alice.peer.Connected() && bob.peer.Connected()
	})

	const rounds = 6
	for i := range rounds {
		for _, target := range []media.Target{media.TargetSubscriber, media.TargetPublisher} {
			before := bob.peer.LocalUfrag(target)
			if err := bob.peer.RestartICE(target); err != nil {
				t.Fatalf("round %d: RestartICE(%s): %v", i, target, err)
			}
			eventually(t, 10*time.Second, "bob's "+string(target)+" connection restarted and connected", func() bool {
				return bob.peer.LocalUfrag(target) != before && bob.peer.Connected()
			})
		}
	}

	toServer, toPeer := bob.signalsSent()
	checkCandidateOrder(t, "bob to the SFU", toServer)
	checkCandidateOrder(t, "the SFU to bob", toPeer)
	checkClean(t, alice, bob)
}

// checkCandidateOrder fails for a candidate whose ufrag is not the one of
// the last description sent before it on its connection.
func checkCandidateOrder(t *testing.T, dir string, signals []media.Signal) {
	t.Helper()
	ufrag := map[media.Target]string{}
	descriptions, candidates := 0, 0
	for i, s := range signals {
		switch s.Type {
		case media.SignalOffer, media.SignalAnswer:
			descriptions++
			ufrag[s.Target] = sdpUfrag(s.SDP)
		case media.SignalCandidate:
			got := candidateUfrag(s.Candidate)
			if got == "" {
				continue
			}
			candidates++
			if want := ufrag[s.Target]; got != want {
				t.Errorf("%s: signal %d, a %s candidate of ufrag %q, sent while the last %s description had %q",
					dir, i, s.Target, got, s.Target, want)
			}
		}
	}
	if descriptions < 2*6 || candidates < 2*6 {
		t.Errorf("%s: %d descriptions and %d candidates with a ufrag, want at least one of each per restart", dir, descriptions, candidates)
	}
}

// candidateUfrag is a candidate's ufrag: its usernameFragment, else the
// "ufrag" extension of its candidate line (Pion sends the latter).
func candidateUfrag(c *webrtc.ICECandidateInit) string {
	if c == nil {
		return ""
	}
	if c.UsernameFragment != nil {
		return *c.UsernameFragment
	}
	fields := strings.Fields(c.Candidate)
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == "ufrag" {
			return fields[i+1]
		}
	}
	return ""
}

func sdpUfrag(sdp string) string {
	for _, line := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}
