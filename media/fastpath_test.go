package media

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// fastFixture is a subscriber connection's send side as the SFU builds it
// (sender reports, NACK responder, fast path tail), sending through a
// batchConn on loopback to a socket that decrypts what arrives with the
// receiver's SRTP context.
type fastFixture struct {
	f     *fastPath
	write interceptor.RTPWriter
	pion  *recordWriter // Pion's SRTP writer, below the tail
	nacks nackReader
	read  interceptor.RTCPReader

	recv *net.UDPConn
	dec  *srtp.Context
	reps chan *rtcp.SenderReport
}

var (
	testMasterKey  = bytes.Repeat([]byte{7}, 16)
	testMasterSalt = bytes.Repeat([]byte{9}, 12)
)

func newFastFixture(t testing.TB, rtx bool) *fastFixture {
	t.Helper()
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	x := &fastFixture{recv: recv, pion: newRecordWriter(), nacks: make(nackReader, 8), reps: make(chan *rtcp.SenderReport, 16)}
	x.f = newFastPath(newBatchConn(send), &counters{})
	x.f.ctx, x.f.gcm, err = sendKeys(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		t.Fatal(err)
	}
	x.dec, err = srtp.CreateContext(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		t.Fatal(err)
	}
	dst := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	x.f.dst.Store(&dst)

	// The chain of a subscriber connection: tail innermost.
	tail := &fastPathTail{f: x.f}
	nackI, _ := nackResponderFactory{reg: &x.f.streams}.NewInterceptor("")
	clock := newReportClock(20 * time.Millisecond)
	srI, _ := senderReportsFactory{reg: &x.f.streams, clock: clock}.NewInterceptor("")
	info := &interceptor.StreamInfo{SSRC: 1111, ClockRate: 90000, RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}
	if rtx {
		info.SSRCRetransmission, info.PayloadTypeRetransmission = 2222, 97
	}
	w := tail.BindLocalStream(info, x.pion)
	w = nackI.BindLocalStream(info, w)
	x.write = srI.BindLocalStream(info, w)
	x.read = nackI.BindRTCPReader(x.nacks)
	srI.BindRTCPWriter(interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
		for _, p := range pkts {
			if sr, ok := p.(*rtcp.SenderReport); ok {
				select {
				case x.reps <- sr:
				default:
				}
			}
		}
		return 0, nil
	}))
	t.Cleanup(func() {
		_ = srI.Close()
		clock.close()
		_ = nackI.Close()
		_ = x.f.conn.Close()
		_ = recv.Close()
	})
	return x
}

func (x *fastFixture) send(t *testing.T, seq uint16) {
	t.Helper()
	h := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90 * uint32(seq), SSRC: 1111}
	if _, err := x.write.Write(h, []byte{byte(seq >> 8), byte(seq), 0xAB, 0xCD}, nil); err != nil {
		t.Fatalf("write %d: %v", seq, err)
	}
}

// nack sends a NACK of seqs for SSRC 1111 and checks that each is resent.
func (x *fastFixture) nack(t *testing.T, seqs ...uint16) {
	t.Helper()
	raw, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}})
	x.nacks <- raw
	if _, _, err := x.read.Read(make([]byte, 1500), nil); err != nil {
		t.Fatal(err)
	}
	got := map[uint16]bool{}
	for range seqs {
		got[x.receive(t).SequenceNumber] = true
	}
	for _, s := range seqs {
		if !got[s] {
			t.Errorf("resent %v, want %v", got, seqs)
			return
		}
	}
}

// receive decrypts the next datagram; it fails the test when it does not
// arrive or does not decrypt.
func (x *fastFixture) receive(t *testing.T) rtp.Packet {
	t.Helper()
	buf := make([]byte, 1500)
	_ = x.recv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := x.recv.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	var h rtp.Header
	plain, err := x.dec.DecryptRTP(nil, buf[:n], &h)
	if err != nil {
		t.Fatalf("datagram does not decrypt: %v", err)
	}
	var p rtp.Packet
	if err := p.Unmarshal(plain); err != nil {
		t.Fatal(err)
	}
	return p
}

// Across a sequence number wrap the rollover counter goes on (else the
// receiver's GCM check fails), a NACKed packet from before the wrap is
// resent through the fast path with its own rollover counter, and the
// sender reports count every packet and octet sent on the fast path.
func TestFastPathRolloverNackAndReports(t *testing.T) {
	x := newFastFixture(t, false)
	x.f.state.Store(fastOn)
	var seqs []uint16
	for i := range 12 {
		seqs = append(seqs, 65530+uint16(i)) // 65530..65535, 0..5
	}
	for _, seq := range seqs {
		x.send(t, seq)
		p := x.receive(t)
		if p.SequenceNumber != seq || p.Payload[0] != byte(seq>>8) || p.Payload[1] != byte(seq) {
			t.Fatalf("got seq %d payload %x, want seq %d", p.SequenceNumber, p.Payload, seq)
		}
	}
	if roc := x.f.rolloverCounter(1111); roc != 1 {
		t.Errorf("rollover counter %d after the wrap, want 1", roc)
	}
	if n := len(x.pion.all()); n != 0 {
		t.Errorf("%d packets went through Pion's writer", n)
	}
	if got := x.f.counters.fastOut.Load(); got != 12 {
		t.Errorf("fast path sent %d, want 12", got)
	}

	// NACK of a packet from before the wrap (ROC 0) and one after.
	x.nack(t, 65533, 2)

	// A sender report counts the 12 packets (not the resends) and their
	// payload octets, as Pion's path does.
	select {
	case sr := <-x.reps:
		for sr.PacketCount < 12 {
			sr = <-x.reps
		}
		if sr.PacketCount != 12 || sr.OctetCount != 12*4 || sr.SSRC != 1111 {
			t.Errorf("sender report %+v, want 12 packets, 48 octets", sr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no sender report")
	}
}

// Resends over RTX (their own SSRC) take the fast path too.
func TestFastPathNackOverRTX(t *testing.T) {
	x := newFastFixture(t, true)
	x.f.state.Store(fastOn)
	for seq := uint16(100); seq < 105; seq++ {
		x.send(t, seq)
		x.receive(t)
	}
	raw, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{102})}})
	x.nacks <- raw
	if _, _, err := x.read.Read(make([]byte, 1500), nil); err != nil {
		t.Fatal(err)
	}
	p := x.receive(t)
	if p.SSRC != 2222 || p.PayloadType != 97 || len(p.Payload) < 2 || uint16(p.Payload[0])<<8|uint16(p.Payload[1]) != 102 {
		t.Errorf("resend %+v %x, want RTX of 102", p.Header, p.Payload)
	}
	if n := len(x.pion.all()); n != 0 {
		t.Errorf("%d packets went through Pion's writer", n)
	}
}

// Before the decision packets go through Pion; the first fast-path packet
// of a stream Pion sent continues its rollover counter (here across a
// wrap at the switch). After a switch to Pion's path for good, nothing
// takes the fast path.
func TestFastPathHandoff(t *testing.T) {
	x := newFastFixture(t, false)
	x.send(t, 65534)
	x.send(t, 65535)
	if n := len(x.pion.all()); n != 2 {
		t.Fatalf("%d packets through Pion before the decision, want 2", n)
	}
	x.f.state.Store(fastOn)
	x.send(t, 0)
	if roc := x.f.rolloverCounter(1111); roc != 1 {
		t.Errorf("rollover counter %d after the handoff across a wrap, want 1", roc)
	}
	x.dec.SetROC(1111, 1) // the receiver saw Pion's packets of ROC 0
	if p := x.receive(t); p.SequenceNumber != 0 {
		t.Errorf("got seq %d", p.SequenceNumber)
	}

	y := newFastFixture(t, false)
	y.f.state.Store(fastOff)
	y.send(t, 1)
	if n, fast := len(y.pion.all()), y.f.counters.fastOut.Load(); n != 1 || fast != 0 {
		t.Errorf("off: %d through Pion, %d fast; want 1, 0", n, fast)
	}
}

// The destination follows the selected pair; a pair whose local candidate
// is a relay cannot be served by the shared socket: its packets are
// dropped and counted, never sent to the socket.
func TestFastPathFollowsSelectedPair(t *testing.T) {
	x := newFastFixture(t, false)
	x.f.state.Store(fastOn)
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ap := other.LocalAddr().(*net.UDPAddr).AddrPort()
	host := webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeHost, Address: "127.0.0.1", Port: 9}
	x.f.setPair(webrtc.NewICECandidatePair(&host, &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypePrflx, Address: ap.Addr().String(), Port: ap.Port()}))
	x.send(t, 10)
	_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := other.Read(buf)
	if err != nil {
		t.Fatalf("nothing at the new address: %v", err)
	}
	var h rtp.Header
	if _, err := x.dec.DecryptRTP(nil, buf[:n], &h); err != nil || h.SequenceNumber != 10 {
		t.Fatalf("new address got seq %d, err %v", h.SequenceNumber, err)
	}

	relay := webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeRelay, Address: "127.0.0.1", Port: 3478}
	x.f.setPair(webrtc.NewICECandidatePair(&relay, &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeHost, Address: "127.0.0.1", Port: ap.Port()}))
	h2 := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 11, SSRC: 1111}
	if _, err := x.write.Write(h2, []byte{1}, nil); err == nil {
		t.Error("write over a local relay candidate succeeded")
	}
	if d := x.f.counters.fastDropped.Load(); d != 1 {
		t.Errorf("dropped %d, want 1", d)
	}
	if _, ok := directRoute(webrtc.NewICECandidatePair(&relay, &host)); ok {
		t.Error("directRoute accepts a local relay candidate")
	}
	if ap2, ok := directRoute(webrtc.NewICECandidatePair(&host, &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeSrflx, Address: "::ffff:10.0.0.1", Port: 5})); !ok || ap2 != netip.MustParseAddrPort("10.0.0.1:5") {
		t.Errorf("directRoute = %v, %v", ap2, ok)
	}
}

// BenchmarkFastPathWrite is one packet through a subscriber stream's chain
// (sender reports, NACK history, fast path: SRTP and the socket).
func BenchmarkFastPathWrite(b *testing.B) {
	x := newFastFixture(b, false)
	x.f.state.Store(fastOn)
	go func() { // drain the receiver
		buf := make([]byte, 1500)
		for {
			if _, err := x.recv.Read(buf); err != nil {
				return
			}
		}
	}()
	payload := make([]byte, 760)
	h := &rtp.Header{Version: 2, PayloadType: 96, SSRC: 1111}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h.SequenceNumber = uint16(i)
		if _, err := x.write.Write(h, payload, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// With header encryption declared by the client's answer, a packet whose
// header cryptex changes (CSRCs, no extension) is sent as Pion's context
// would send it: the receiver's cryptex context decrypts it; without the
// answer's a=cryptex it is sent in the clear header form.
func TestFastPathFollowsCryptex(t *testing.T) {
	x := newFastFixture(t, false)
	x.f.state.Store(fastOn)
	x.f.remoteDescription("v=0\r\na=cryptex\r\n")
	if err := x.dec.UpdateOptions(srtp.Cryptex(srtp.CryptexModeRequired)); err != nil {
		t.Fatal(err)
	}
	h := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 7, SSRC: 1111, CSRC: []uint32{42}}
	if _, err := x.write.Write(h, []byte{1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	if p := x.receive(t); p.SequenceNumber != 7 || len(p.CSRC) != 1 || p.CSRC[0] != 42 {
		t.Errorf("got %+v", p.Header)
	}
	// Neither CSRC nor extension (every forwarded packet): header
	// encryption changes nothing, the fast path's own AEAD sender takes it.
	plain := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 8, SSRC: 1111}
	if _, err := x.write.Write(plain, []byte{4, 5, 6}, nil); err != nil {
		t.Fatal(err)
	}
	if p := x.receive(t); p.SequenceNumber != 8 || p.Payload[0] != 4 {
		t.Errorf("got %+v", p.Header)
	}

	x.f.remoteDescription("v=0\r\n")
	if err := x.dec.UpdateOptions(srtp.Cryptex(srtp.CryptexModeDisabled)); err != nil {
		t.Fatal(err)
	}
	h.SequenceNumber = 9
	if _, err := x.write.Write(h, []byte{1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	if p := x.receive(t); p.SequenceNumber != 9 || p.CSRC[0] != 42 {
		t.Errorf("got %+v", p.Header)
	}
}

// Inside a fan-out (the SSRC's batch open) a fast-path datagram is
// encrypted straight into the batch and leaves with it, counted in
// PacketsOutFast when the batch is sent; outside one it is written at
// once and counted then.
func TestFastPathEncryptsIntoOpenBatch(t *testing.T) {
	x := newFastFixture(t, false)
	x.f.state.Store(fastOn)
	b := x.f.conn.newBatch()
	x.f.conn.register(1111, b)
	b.begin()
	x.send(t, 1)
	x.send(t, 2)
	b.mu.Lock()
	held := b.n
	b.mu.Unlock()
	if held != 2 || x.f.counters.fastOut.Load() != 0 {
		t.Fatalf("open batch holds %d datagrams, %d counted before the flush; want 2, 0", held, x.f.counters.fastOut.Load())
	}
	b.flush()
	for _, want := range []uint16{1, 2} {
		if p := x.receive(t); p.SequenceNumber != want {
			t.Fatalf("got packet %d, want %d", p.SequenceNumber, want)
		}
	}
	if got := x.f.counters.fastOut.Load(); got != 2 {
		t.Errorf("PacketsOutFast %d after the flush, want 2", got)
	}
	x.send(t, 3) // batch closed: at once
	if p := x.receive(t); p.SequenceNumber != 3 {
		t.Fatalf("got packet %d, want 3", p.SequenceNumber)
	}
	if got := x.f.counters.fastOut.Load(); got != 3 {
		t.Errorf("PacketsOutFast %d, want 3", got)
	}
}

// chainStream is a downTrack binding's stream that writes through the
// fixture's interceptor chain and counts the writes.
type chainStream struct {
	w      interceptor.RTPWriter
	writes int
}

func (c *chainStream) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	c.writes++
	return c.w.Write(h, payload, nil)
}
func (c *chainStream) Write([]byte) (int, error) { return 0, nil }

// On the fast path a fan-out writes each packet without the interceptor
// chain (writeDirect), and does what the chain does for it: the datagram
// leaves in the fan-out's batch and decrypts at the subscriber, the NACK
// responder resends it, and the sender reports count it with the packets
// written through the chain before the switch.
func TestFastPathFanOutWritesDirect(t *testing.T) {
	x := newFastFixture(t, false)
	track := &publishedTrack{kind: webrtc.RTPCodecTypeVideo, counters: x.f.counters, batch: x.f.conn.newBatch()}
	track.downs.Store(&[]*downTrack{})
	d := &downTrack{track: track, sub: &Participant{fast: x.f}}
	chain := &chainStream{w: x.write}
	d.out.Store(&downBinding{stream: chain, ssrc: 1111, pt: 96})
	d.bound.Store(true)
	d.registerBatch(1111)
	if !track.addDown(d) {
		t.Fatal("track closed")
	}
	fan := func(seq uint16) {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 100, SequenceNumber: seq, Timestamp: 90 * uint32(seq), SSRC: 5}, Payload: []byte{byte(seq >> 8), byte(seq), 0xAB, 0xCD}}
		track.fanOut(pkt)
	}

	// Undecided: through the chain (to Pion's writer, below the tail).
	fan(1)
	fan(2)
	if chain.writes != 2 || len(x.pion.all()) != 2 {
		t.Fatalf("before the switch: %d chain writes, %d at Pion; want 2, 2", chain.writes, len(x.pion.all()))
	}
	x.f.state.Store(fastOn)
	for seq := uint16(3); seq <= 10; seq++ {
		fan(seq)
		p := x.receive(t)
		if p.SequenceNumber != seq || p.SSRC != 1111 || p.PayloadType != 96 || p.Payload[1] != byte(seq) {
			t.Fatalf("got %+v payload %x, want seq %d on SSRC 1111, PT 96", p.Header, p.Payload, seq)
		}
	}
	if chain.writes != 2 {
		t.Errorf("%d writes through the chain on the fast path, want none", chain.writes-2)
	}
	if got := x.f.conn.batched.Load(); got != 8 {
		t.Errorf("%d datagrams sent in batches, want 8", got)
	}

	// The NACK responder holds the directly written packets.
	x.nack(t, 4, 9)

	// Sender reports: the 10 packets (2 through the chain, 8 direct, not
	// the resends), 40 octets, RTP time from the last frame.
	deadline := time.After(5 * time.Second)
reports:
	for {
		select {
		case sr := <-x.reps:
			if sr.PacketCount < 10 {
				continue
			}
			if sr.PacketCount != 10 || sr.OctetCount != 40 || sr.SSRC != 1111 {
				t.Errorf("sender report %+v, want 10 packets, 40 octets", sr)
			}
			if sr.RTPTime < 900 || sr.RTPTime > 900+90000*5 {
				t.Errorf("sender report RTP time %d, want 900 and on", sr.RTPTime)
			}
			break reports
		case <-deadline:
			t.Fatal("no sender report")
		}
	}

	// Zero allocations per forwarded packet on this path (the packet's
	// buffer is the receive path's).
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 100, SequenceNumber: 10, SSRC: 5}, Payload: []byte{0, 0, 0xAB, 0xCD}}
	if n := testing.AllocsPerRun(50, func() { pkt.SequenceNumber++; pkt.Timestamp += 90; track.fanOut(pkt) }); n != 0 {
		t.Errorf("%v allocations per fan-out on the fast path, want 0", n)
	}
}

// A video track's fan-out stores each packet once in the track's shared
// history (trackHistory); the subscriber streams it writes directly keep
// none of their own, and resend from it with their own SSRC and payload
// type (or over RTX, with RTX sequence numbers drawn at the first resend);
// packets written through the chain before the switch are resent from
// the stream's own history. A packet resent twice over RTX is the same
// RTX packet.
func TestFastPathSharesTrackNackHistory(t *testing.T) {
	for _, rtx := range []bool{false, true} {
		x := newFastFixture(t, rtx)
		track := &publishedTrack{kind: webrtc.RTPCodecTypeVideo, counters: x.f.counters, batch: x.f.conn.newBatch(), hist: &trackHistory{}}
		track.downs.Store(&[]*downTrack{})
		d := &downTrack{track: track, sub: &Participant{fast: x.f}}
		d.out.Store(&downBinding{stream: &chainStream{w: x.write}, ssrc: 1111, pt: 96})
		d.bound.Store(true)
		d.registerBatch(1111)
		if !track.addDown(d) {
			t.Fatal("track closed")
		}
		fan := func(seq uint16) {
			track.fanOut(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 100, SequenceNumber: seq, Timestamp: 90 * uint32(seq), SSRC: 5}, Payload: []byte{byte(seq >> 8), byte(seq), 0xAB}})
		}
		fan(1) // undecided: through the chain
		x.f.state.Store(fastOn)
		for seq := uint16(2); seq <= 6; seq++ {
			fan(seq)
			x.receive(t)
		}
		s := x.f.streams.lookup(1111)
		if s == nil || s.nack.shared.Load() != track.hist {
			t.Fatal("the stream does not use the track's history")
		}
		for seq := uint16(2); seq <= 6; seq++ {
			if s.nack.slots[seq%nackHistory].stored {
				t.Errorf("packet %d stored in the stream's own history", seq)
			}
		}
		raw, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{1, 3, 5})}})
		x.nacks <- raw
		if _, _, err := x.read.Read(make([]byte, 1500), nil); err != nil {
			t.Fatal(err)
		}
		got := map[uint16]bool{}
		rtxSeqs := map[uint16]bool{}
		for range 3 {
			p := x.receive(t)
			seq := p.SequenceNumber
			if rtx {
				if p.SSRC != 2222 || p.PayloadType != 97 || len(p.Payload) < 3 {
					t.Fatalf("resend %+v, want RTX on 2222, PT 97", p.Header)
				}
				rtxSeqs[seq] = true
				seq = uint16(p.Payload[0])<<8 | uint16(p.Payload[1])
				p.Payload = p.Payload[2:]
			} else if p.SSRC != 1111 || p.PayloadType != 96 {
				t.Fatalf("resend %+v, want SSRC 1111, PT 96", p.Header)
			}
			if p.Payload[1] != byte(seq) || p.Payload[2] != 0xAB {
				t.Errorf("resend of %d carries %x", seq, p.Payload)
			}
			got[seq] = true
		}
		if !got[1] || !got[3] || !got[5] {
			t.Errorf("resent %v, want 1, 3, 5", got)
		}
		if rtx && len(rtxSeqs) != 3 {
			t.Errorf("RTX sequence numbers %v, want 3 different", rtxSeqs)
		}
		// A second NACK within RTT+5 ms resends nothing.
		x.nacks <- raw
		if _, _, err := x.read.Read(make([]byte, 1500), nil); err != nil {
			t.Fatal(err)
		}
		if b, ok := pending(t, x.recv, 100*time.Millisecond); ok {
			t.Errorf("resent again at once: % x", b[:12])
		}
		// After RTT+5 ms (no RTT measured: 5 ms, long past) a packet is
		// resent again, over RTX with the RTX sequence number of its
		// first resend.
		if rtx {
			x.nacks <- raw
			if _, _, err := x.read.Read(make([]byte, 1500), nil); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if p := x.receive(t); !rtxSeqs[p.SequenceNumber] {
					t.Errorf("second resend with RTX sequence number %d, not one of the first %v", p.SequenceNumber, rtxSeqs)
				}
			}
		}

		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 100, SequenceNumber: 6, SSRC: 5}, Payload: []byte{0, 0, 0xAB}}
		if n := testing.AllocsPerRun(50, func() { pkt.SequenceNumber++; pkt.Timestamp += 90; track.fanOut(pkt) }); n != 0 {
			t.Errorf("%v allocations per fan-out, want 0", n)
		}
	}
}
