package media_test

import (
	"net"
	"testing"
	"time"
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
