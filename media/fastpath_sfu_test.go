package media_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
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
	if st := s.Stats(); st.PacketsOutFast != 0 || st.PacketsInFast != 0 {
		t.Errorf("fast paths sent %d and received %d without batching", st.PacketsOutFast, st.PacketsInFast)
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

// A subscriber decrypts forwarded packets across a sequence number wrap:
// the fast path's rollover counter follows the stream (a wrong one fails
// the receiver's authentication check and the packets after the wrap
// would never arrive).
func TestFastPathRolloverAtSubscriber(t *testing.T) {
	s := newSFU(t, testConfig())
	pubCfg := peerConfig(true)
	pubCfg.Audio = false
	pubCfg.NoSyntheticMedia = true
	pub := join(t, s, "room1", "alice", true, pubCfg)

	var mu sync.Mutex
	var wrapped, afterWrap int
	var last uint16
	subCfg := peerConfig(false)
	subCfg.NoKeyframeRequests = true
	subCfg.OnReceiveRTP = func(_ peer.TrackKey, pkt *rtp.Packet, _ time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if pkt.SequenceNumber < last && last-pkt.SequenceNumber > 1<<15 {
			wrapped++
		}
		if wrapped > 0 && pkt.SequenceNumber < 1<<15 {
			afterWrap++
		}
		last = pkt.SequenceNumber
	}
	sub := join(t, s, "room1", "bob", false, subCfg)

	// A VP8 keyframe payload: descriptor (S=1, PID 0) and a key frame tag.
	payload := []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00}
	seq := uint16(65000)
	write := func() {
		t.Helper()
		seq++
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: uint32(seq) * 3000}, Payload: payload}
		if err := pub.peer.WriteRTP(peer.KindVideo, pkt); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "bob receiving alice's video", func() bool {
		write()
		return sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > 0
	})
	for seq != 200 {
		write()
		if seq%50 == 0 {
			time.Sleep(5 * time.Millisecond) // keep the socket buffers from overflowing
		}
	}
	eventually(t, 10*time.Second, "packets after the wrap decrypted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return wrapped == 1 && afterWrap >= 150
	})
	if st := s.Stats(); st.PacketsOutFast < st.PacketsOut*9/10 {
		t.Errorf("fast path sent %d of %d", st.PacketsOutFast, st.PacketsOut)
	}
	checkClean(t, pub, sub)
}

// After an ICE restart of the subscriber connection the fast path goes on
// sending (to the newly selected pair) and the subscriber keeps receiving.
func TestFastPathAfterICERestart(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	before := sub.peer.LocalUfrag(media.TargetSubscriber)
	if err := sub.peer.RestartICE(media.TargetSubscriber); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "bob's subscriber connection restarted", func() bool {
		return sub.peer.LocalUfrag(media.TargetSubscriber) != before && sub.peer.Connected()
	})
	fast := s.Stats().PacketsOutFast
	got := sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets
	eventually(t, 10*time.Second, "more video through the fast path", func() bool {
		return s.Stats().PacketsOutFast > fast+50 &&
			sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > got+50
	})
	if st := s.Stats(); st.PacketsDroppedFast != 0 {
		t.Errorf("fast path dropped %d", st.PacketsDroppedFast)
	}
	checkClean(t, pub, sub)
}
