package media_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
)

// The subscriber receives (so decrypts) forwarded audio and video, a
// keyframe included, and the forwarded packets left through the fast path:
// only the few sent before the subscriber connection was decided went
// through Pion.
func TestFastPathCarriesForwardedMedia(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 100, pub) })
	st := s.Stats()
	if st.PacketsOutFast == 0 || st.PacketsOutFast < st.PacketsOut*9/10 {
		t.Errorf("fast path sent %d of %d forwarded packets", st.PacketsOutFast, st.PacketsOut)
	}
	if st.PacketsDroppedFast != 0 {
		t.Errorf("fast path dropped %d", st.PacketsDroppedFast)
	}
	checkClean(t, pub, sub)
}

// A subscriber joining a room whose tracks are already published connects
// with an answer that declares header encryption (Pion's clients declare
// a=cryptex): the fast path takes it too, with the same encryption, and the
// subscriber decrypts what it sends.
func TestFastPathLateSubscriberWithCryptex(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	eventually(t, 10*time.Second, "alice publishing", func() bool { return s.Stats().PublishedTracks == 2 })
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 100, pub) })
	if !answeredWithCryptex(sub) {
		t.Log("the client's answers did not declare a=cryptex")
	}
	if st := s.Stats(); st.PacketsOutFast == 0 || st.PacketsOutFast < st.PacketsOut*9/10 {
		t.Errorf("fast path sent %d of %d forwarded packets", st.PacketsOutFast, st.PacketsOut)
	}
	checkClean(t, pub, sub)
}

// With Config.WrapPacketConn (no batching) the fast path is never taken:
// media still flows, through Pion.
func TestFastPathOffWithoutBatching(t *testing.T) {
	cfg := testConfig()
	cfg.WrapPacketConn = func(c net.PacketConn) net.PacketConn { return c }
	s := newSFU(t, cfg)
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	if st := s.Stats(); st.PacketsOutFast != 0 {
		t.Errorf("fast path sent %d without batching", st.PacketsOutFast)
	}
	checkClean(t, pub, sub)
}

// A subscriber that reaches the SFU only through TURN (its selected pair's
// remote candidate is a relay) stays on Pion's path: media flows, and
// nothing was sent by the fast path.
func TestFastPathRelayedPairStaysOnPion(t *testing.T) {
	cfg := turnserver.DefaultConfig()
	cfg.Enabled = true
	cfg.UDPPort, cfg.TCPPort, cfg.TLSPort, cfg.ListenIP, cfg.RelayIP = 0, 0, 0, "127.0.0.1", "127.0.0.1"
	cfg.Secret = "fastpath-test-secret-0123456789"
	ts, err := turnserver.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })

	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	subCfg := peerConfig(false)
	for _, srv := range ts.ICEServers("bob") {
		subCfg.ICEServers = append(subCfg.ICEServers, webrtc.ICEServer{URLs: srv.URLs, Username: srv.Username, Credential: srv.Credential})
	}
	subCfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	sub := join(t, s, "room1", "bob", false, subCfg)
	eventually(t, 15*time.Second, "bob receiving alice through TURN", func() bool { return receiving(sub, 50, pub) })
	if _, pair := sub.peer.SelectedPairs(); pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
		t.Fatalf("bob's subscriber pair %v, want a relayed one", pair)
	}
	if st := s.Stats(); st.PacketsOutFast != 0 {
		t.Errorf("fast path sent %d packets to a relayed subscriber", st.PacketsOutFast)
	}
	checkClean(t, pub, sub)
}

// answeredWithCryptex reports whether one of c's subscriber answers
// declared header encryption.
func answeredWithCryptex(c *client) bool {
	toServer, _ := c.signalsSent()
	for _, sig := range toServer {
		if sig.Type == media.SignalAnswer && strings.Contains(sig.SDP, "a=cryptex") {
			return true
		}
	}
	return false
}
