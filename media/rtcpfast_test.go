package media

import (
	"net/netip"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// The socket's reader takes a subscriber's SRTCP from the connection's
// address on the fast path: a NACK is resent, a replay is dropped, a
// datagram that fails authentication and one from another address go to
// Pion, and nothing is taken once the connection closed.
func TestFastPathTakesClientRTCP(t *testing.T) {
	x := newFastFixture(t, false)
	x.f.state.Store(fastOn)
	rx, err := srtp.CreateContext(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm, srtp.SRTCPReplayProtection(rxReplayWindow))
	if err != nil {
		t.Fatal(err)
	}
	x.f.rtcpCtx = rx
	client, err := srtp.CreateContext(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		t.Fatal(err)
	}
	addr := *x.f.dst.Load() // the client's socket
	x.f.routeRTCP()
	if got := (*x.f.conn.rtcp.Load())[addr]; got != x.f {
		t.Fatal("the connection's address is not routed to it")
	}

	for seq := uint16(10); seq < 15; seq++ {
		x.send(t, seq)
		x.receive(t)
	}
	raw, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 5, Reports: []rtcp.ReceptionReport{{SSRC: 1111}}},
		&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{12})},
	})
	enc, err := client.EncryptRTCP(nil, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := netip.AddrPortFrom(addr.Addr(), addr.Port()+1)
	if x.f.conn.receive(append([]byte(nil), enc...), other, nil) {
		t.Fatal("RTCP from another address was taken")
	}
	if !x.f.conn.receive(append([]byte(nil), enc...), addr, nil) {
		t.Fatal("the client's RTCP went to Pion")
	}
	if p := x.receive(t); p.SequenceNumber != 12 {
		t.Fatalf("resent %d, want 12", p.SequenceNumber)
	}
	if got := x.f.counters.fastRTCPIn.Load(); got != 1 {
		t.Errorf("fastRTCPIn %d, want 1", got)
	}
	if !x.f.conn.receive(append([]byte(nil), enc...), addr, nil) || x.f.counters.fastRTCPReplayed.Load() != 1 {
		t.Error("a replay was not dropped")
	}
	bad, err := client.EncryptRTCP(nil, raw, nil) // a new SRTCP index
	if err != nil {
		t.Fatal(err)
	}
	bad[len(bad)-5] ^= 1 // in the tag
	if x.f.conn.receive(bad, addr, nil) {
		t.Error("a datagram that fails authentication was taken")
	}

	x.f.closeRTCP()
	if n := len(*x.f.conn.rtcp.Load()); n != 0 {
		t.Errorf("%d routes after close", n)
	}
}
