package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// rxFixture is a publisher connection's fast receive path as the SFU
// builds it (rxSource, the publisher's receive interceptors, rxCapture),
// for one video track with n subscribers that discard what they get, and
// the publisher's SRTP context to make its packets with.
type rxFixture struct {
	r     *rxPath
	track *publishedTrack
	enc   *srtp.Context
	chain interceptor.Interceptor

	mu   sync.Mutex
	rtcp []rtcp.Packet // what the interceptors sent to the publisher
}

// drain fans out what the track's queue holds, in the calling goroutine,
// as the forwarder goroutine does.
func (x *rxFixture) drain() {
	for {
		select {
		case b := <-x.track.queue:
			x.track.forwardQueued(b)
		default:
			return
		}
	}
}

var rxTestAddr = netip.MustParseAddrPort("127.0.0.1:5004")

const (
	rxTestSSRC    = 1111
	rxTestRTXSSRC = 2222
	rxTestTWCC    = 5 // transport-wide sequence number extension ID
)

func newRxFixture(tb testing.TB, subscribers int, writes *int) *rxFixture {
	tb.Helper()
	x := &rxFixture{}
	x.r = newRxPath(nil, &counters{}, slog.New(slog.DiscardHandler))
	x.r.addrs = []netip.AddrPort{rxTestAddr}
	var err error
	x.r.ctx, err = newRxContext(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		tb.Fatal(err)
	}
	x.enc, err = srtp.CreateContext(testMasterKey, testMasterSalt, srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		tb.Fatal(err)
	}
	x.track = newBenchTrack(tb, subscribers, writes)
	x.track.counters = x.r.counters
	x.track.rx = x.r

	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		tb.Fatal(err)
	}
	factories, err := registerInterceptors(m, true)
	if err != nil {
		tb.Fatal(err)
	}
	ir := &interceptor.Registry{}
	ir.Add(&rxSource{})
	for _, f := range factories {
		ir.Add(f)
	}
	ir.Add(&rxCapture{r: x.r})
	if x.chain, err = ir.Build(""); err != nil {
		tb.Fatal(err)
	}
	x.chain.BindRTCPWriter(interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
		x.mu.Lock()
		x.rtcp = append(x.rtcp, pkts...)
		x.mu.Unlock()
		return 0, nil
	}))
	pion := interceptor.RTPReaderFunc(func([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
		return 0, nil, errors.New("nothing through Pion")
	})
	ext := []interceptor.RTPHeaderExtension{{URI: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", ID: rxTestTWCC}}
	x.chain.BindRemoteStream(&interceptor.StreamInfo{SSRC: rxTestSSRC, ClockRate: 90000, MimeType: webrtc.MimeTypeVP8,
		RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}, RTPHeaderExtensions: ext}, pion)
	x.chain.BindRemoteStream(&interceptor.StreamInfo{SSRC: rxTestRTXSSRC, ClockRate: 90000, MimeType: webrtc.MimeTypeRTX,
		RTPHeaderExtensions: ext}, pion)
	x.r.mu.Lock()
	x.r.setStreamLocked(rxTestSSRC, &rxStream{track: x.track})
	x.r.mu.Unlock()
	tb.Cleanup(func() { _ = x.chain.Close() })
	return x
}

// packet is the publisher's SRTP packet seq of ssrc (its rollover counter
// follows enc's own), with a transport-wide sequence number.
func (x *rxFixture) packet(tb testing.TB, ssrc uint32, seq uint16, payload []byte) []byte {
	tb.Helper()
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 3000 * uint32(seq), SSRC: ssrc}
	if err := h.SetExtension(rxTestTWCC, []byte{byte(seq >> 8), byte(seq)}); err != nil {
		tb.Fatal(err)
	}
	plain, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := x.enc.EncryptRTP(nil, plain, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// At the switch, the first packet decrypted by the fast path continues the
// rollover counter of what Pion delivered before: here the stream wrapped
// (65533 ... 1 through Pion), and packet 2 is only authenticated with
// rollover counter 1. Every packet after that is forwarded to every
// subscriber, once.
func TestRxFastContinuesRolloverCounter(t *testing.T) {
	writes := 0
	x := newRxFixture(t, 3, &writes)
	payload := []byte{0x10, 0x00, 0x9d, 0x01, 0x2a}
	for seq := uint16(65533); seq != 2; seq++ {
		x.packet(t, rxTestSSRC, seq, payload) // enc's counter goes on
		x.r.seen(rxTestSSRC, seq)             // as the forwarder does
	}
	for seq := uint16(2); seq < 10; seq++ {
		if !x.r.receive(x.packet(t, rxTestSSRC, seq, payload), rxTestSSRC, rxTestAddr) {
			t.Fatalf("packet %d not taken", seq)
		}
	}
	x.drain()
	if got := x.r.counters.fastInDropped.Load(); got != 0 {
		t.Fatalf("%d packets dropped: the rollover counter did not continue", got)
	}
	if got := x.r.counters.fastIn.Load(); got != 8 {
		t.Errorf("%d packets received, want 8", got)
	}
	if writes != 3*8 {
		t.Errorf("%d writes, want %d", writes, 3*8)
	}
	// A replayed packet is refused.
	replay := x.packet(t, rxTestSSRC, 10, payload)
	x.r.receive(replay, rxTestSSRC, rxTestAddr)
	x.r.receive(replay, rxTestSSRC, rxTestAddr)
	if got, other := x.r.counters.fastInReplayed.Load(), x.r.counters.fastInDropped.Load(); got != 1 || other != 0 {
		t.Errorf("replay: %d counted as replays, %d as other drops; want 1, 0", got, other)
	}
	// A packet that fails authentication from an address the connection
	// does not use is Pion's (another connection's SSRC); from one it uses
	// it is dropped. One that passes it teaches the address (a browser
	// sending on another valid pair).
	forged := x.packet(t, rxTestSSRC, 11, payload)
	forged[len(forged)-1] ^= 1
	elsewhere := netip.MustParseAddrPort("192.0.2.7:6000")
	if x.r.receive(forged, rxTestSSRC, elsewhere) {
		t.Error("a packet failing authentication from elsewhere was not handed to Pion")
	}
	if !x.r.receive(forged, rxTestSSRC, rxTestAddr) || x.r.counters.fastInDropped.Load() != 1 {
		t.Error("a packet failing authentication from the peer's address was not dropped")
	}
	if !x.r.receive(x.packet(t, rxTestSSRC, 12, payload), rxTestSSRC, elsewhere) || x.r.counters.fastIn.Load() != 10 {
		t.Error("an authentic packet from another address was not forwarded")
	}
	x.r.mu.Lock()
	learnt := x.r.knownAddrLocked(elsewhere)
	x.r.mu.Unlock()
	if !learnt {
		t.Error("the address of an authentic packet was not learnt")
	}
	// An unknown SSRC is Pion's.
	if x.r.receive(x.packet(t, 4444, 1, payload), 4444, rxTestAddr) {
		t.Error("a packet of an unknown SSRC was taken")
	}
}

// An RTX packet (RFC 4588) on the fast path runs through its own stream's
// chain and is forwarded as the packet it repairs; a padding-only probe is
// not forwarded.
func TestRxFastRepairsFromRTX(t *testing.T) {
	writes := 0
	x := newRxFixture(t, 2, &writes)
	var got []rtp.Packet
	d := (*x.track.downs.Load())[0]
	d.out.Store(&downBinding{stream: captureWriter(func(h *rtp.Header, p []byte) {
		got = append(got, rtp.Packet{Header: *h, Payload: append([]byte(nil), p...)})
	}), ssrc: 5555, pt: 96})
	x.r.mu.Lock()
	x.r.setStreamLocked(rxTestRTXSSRC, &rxStream{track: x.track, rtx: true, pt: 96, ssrc: rxTestSSRC})
	x.r.mu.Unlock()

	rtxPayload := []byte{0x01, 0x2c, 0x10, 0x00, 0x9d} // OSN 300, then the original payload
	if !x.r.receive(x.packet(t, rxTestRTXSSRC, 7, rtxPayload), rxTestRTXSSRC, rxTestAddr) {
		t.Fatal("RTX packet not taken")
	}
	probe := x.packet(t, rxTestRTXSSRC, 8, []byte{0x01})
	x.r.receive(probe, rxTestRTXSSRC, rxTestAddr)
	x.drain()
	if len(got) != 1 {
		t.Fatalf("%d packets forwarded, want 1", len(got))
	}
	p := got[0]
	if p.SequenceNumber != 300 || p.SSRC != 5555 || string(p.Payload) != string([]byte{0x10, 0x00, 0x9d}) {
		t.Errorf("forwarded %+v payload %x, want seq 300, payload 10009d", p.Header, p.Payload)
	}
}

type captureWriter func(*rtp.Header, []byte)

func (w captureWriter) WriteRTP(h *rtp.Header, p []byte) (int, error) { w(h, p); return len(p), nil }
func (w captureWriter) Write(b []byte) (int, error)                   { return len(b), nil }

// BenchmarkRxFast measures the fast receive path for one packet: decrypt,
// the publisher's receive interceptors (NACK generator, receiver reports,
// TWCC feedback), the hand-off through the track's queue and the fan-out
// to N subscribers that discard it (both halves in one goroutine here). It
// reports allocations per packet: the path makes none (a 64 KiB chunk per
// ~60 packets of 1,100 bytes is the only one, which rounds to 0).
func BenchmarkRxFast(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			writes := 0
			x := newRxFixture(b, n, &writes)
			payload := make([]byte, 1100)
			pkts := make([][]byte, 4096)
			for i := range pkts {
				pkts[i] = x.packet(b, rxTestSSRC, uint16(i), payload)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 && i%len(pkts) == 0 {
					b.StopTimer()
					for j := range pkts {
						pkts[j] = x.packet(b, rxTestSSRC, uint16(i+j), payload)
					}
					b.StartTimer()
				}
				x.r.receive(pkts[i%len(pkts)], rxTestSSRC, rxTestAddr)
				x.drain()
			}
			b.StopTimer()
			if d := x.r.counters.fastInDropped.Load(); d != 0 {
				b.Fatalf("%d dropped", d)
			}
		})
	}
}

// The socket's reader hands each packet to the track's forwarder through a
// bounded queue and never waits for it: with the forwarder held up inside a
// fan-out, the reader fills the queue and then drops (counted), and the
// forwarder, once free, forwards what was queued in arrival order. A
// dropped packet was not decrypted (nor seen by the interceptors), so its
// retransmission is accepted.
func TestRxFastQueueFullDropsWithoutBlockingAndKeepsOrder(t *testing.T) {
	writes := 0
	x := newRxFixture(t, 1, &writes)
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var seqs []uint16
	progress := make(chan struct{}, 1) // a packet was forwarded
	d := (*x.track.downs.Load())[0]
	d.out.Store(&downBinding{stream: captureWriter(func(h *rtp.Header, _ []byte) {
		mu.Lock()
		seqs = append(seqs, h.SequenceNumber)
		first := len(seqs) == 1
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		if first {
			close(entered)
			<-release // the forwarder is held up in its first fan-out
		}
	}), ssrc: 5555, pt: 96})
	forwarded := func() []uint16 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint16(nil), seqs...)
	}
	waitForwarded := func(n int) []uint16 {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			got := forwarded()
			if len(got) >= n {
				return got
			}
			select {
			case <-progress:
			case <-timeout:
				t.Fatalf("%d packets forwarded, want %d", len(got), n)
			}
		}
	}

	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		x.track.forwardQueue(stop)
	}()
	defer func() {
		close(stop)
		<-stopped
	}()

	payload := []byte{0x10, 0x00, 0x9d}
	const extra = 10
	total := uint16(1 + trackQueueLen + extra)
	pkts := make([][]byte, total+1)
	for seq := range pkts {
		pkts[seq] = x.packet(t, rxTestSSRC, uint16(seq), payload)
	}
	if !x.r.receive(pkts[0], rxTestSSRC, rxTestAddr) {
		t.Fatal("packet 0 not taken")
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the forwarder did not start the first fan-out")
	}

	read := make(chan struct{})
	go func() {
		defer close(read)
		for seq := uint16(1); seq < total; seq++ {
			if !x.r.receive(pkts[seq], rxTestSSRC, rxTestAddr) {
				t.Errorf("packet %d not taken", seq)
			}
		}
	}()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the reader blocked on a held-up forwarder")
	}
	if got := x.r.counters.fastInQueueDropped.Load(); got != extra {
		t.Errorf("%d packets dropped on a full queue, want %d", got, extra)
	}
	if got := x.r.counters.fastInDropped.Load(); got != 0 {
		t.Errorf("%d packets dropped by the SRTP checks, want 0", got)
	}
	if got := x.r.counters.fastIn.Load(); got != 1+trackQueueLen {
		t.Errorf("%d packets received, want %d", got, 1+trackQueueLen)
	}

	close(release)
	waitForwarded(1 + trackQueueLen)
	// A packet dropped on the full queue, sent again (a retransmission
	// without RTX), is not refused as a replay.
	if !x.r.receive(pkts[1+trackQueueLen], rxTestSSRC, rxTestAddr) {
		t.Fatal("retransmission not taken")
	}
	got := waitForwarded(2 + trackQueueLen)
	if len(got) != 2+trackQueueLen {
		t.Fatalf("%d packets forwarded, want %d", len(got), 2+trackQueueLen)
	}
	for i, seq := range got {
		if seq != uint16(i) {
			t.Fatalf("packet %d forwarded as %d-th: order not kept (%v)", seq, i, got[max(0, i-3):min(len(got), i+3)])
		}
	}
	if got := x.r.counters.fastInDropped.Load(); got != 0 {
		t.Errorf("the retransmission of a dropped packet was refused (%d dropped)", got)
	}
}

// The socket's reader hands a packet to its track's forwarder when another
// datagram was waiting behind it, and fans it out itself only when it
// found the socket empty and nothing of the track is pending: three
// datagrams waiting are all queued, in order (the last one too: the
// forwarder has two pending), and a lone one is fanned out by the reader
// (no forwarder goroutine runs here, so a queued packet would stay
// queued).
func TestReaderFansOutInlineOnlyWhenSocketEmpty(t *testing.T) {
	writes := 0
	x := newRxFixture(t, 1, &writes)
	fanned := make(chan uint16, 16)
	d := (*x.track.downs.Load())[0]
	d.out.Store(&downBinding{stream: captureWriter(func(h *rtp.Header, _ []byte) { fanned <- h.SequenceNumber }), ssrc: 5555, pt: 96})

	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn := newBatchConn(server)
	conn.registerRx(rxTestSSRC, x.r)
	client, err := net.DialUDP("udp4", nil, server.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	payload := []byte{0x10, 0x00, 0x9d}
	for seq := uint16(1); seq <= 3; seq++ {
		if _, err := client.Write(x.packet(t, rxTestSSRC, seq, payload)); err != nil {
			t.Fatal(err)
		}
	}

	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		_, _, err := conn.ReadFromAddrPort(buf) // returns when the socket closes
		done <- err
	}()
	deadline := time.After(5 * time.Second)
	for len(x.track.queue) < 3 {
		select {
		case seq := <-fanned:
			t.Fatalf("packet %d fanned out by the reader with datagrams waiting", seq)
		case <-deadline:
			t.Fatalf("%d packets queued, want 3", len(x.track.queue))
		case <-time.After(time.Millisecond):
		}
	}
	for want := uint16(1); want <= 3; want++ {
		x.track.forwardQueued(<-x.track.queue)
		if got := <-fanned; got != want {
			t.Fatalf("queued packet %d forwarded as %d", got, want)
		}
	}

	if _, err := client.Write(x.packet(t, rxTestSSRC, 4, payload)); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-fanned:
		if seq != 4 {
			t.Fatalf("reader fanned out packet %d, want 4", seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the lone packet was not fanned out by the reader (%d queued)", len(x.track.queue))
	}
	if n := len(x.track.queue); n != 0 || x.track.pending.Load() != 0 {
		t.Errorf("%d queued, %d pending after the inline fan-out; want 0, 0", n, x.track.pending.Load())
	}
	if got := x.r.counters.fastIn.Load(); got != 4 {
		t.Errorf("PacketsInFast %d, want 4", got)
	}
	_ = conn.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not end with the socket")
	}
}

// An inline fan-out that takes longer than inlineSlow (the reader was
// short of CPU) turns inline fan-outs off for inlineBackoff: the next lone
// packet goes to the forwarder's queue.
func TestReaderStopsInlineAfterSlowFanOut(t *testing.T) {
	writes := 0
	x := newRxFixture(t, 1, &writes)
	fanned := make(chan uint16, 16)
	d := (*x.track.downs.Load())[0]
	d.out.Store(&downBinding{stream: captureWriter(func(h *rtp.Header, _ []byte) {
		if h.SequenceNumber == 1 {
			time.Sleep(inlineSlow + time.Millisecond) // the slow fan-out itself
		}
		fanned <- h.SequenceNumber
	}), ssrc: 5555, pt: 96})

	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn := newBatchConn(server)
	conn.registerRx(rxTestSSRC, x.r)
	client, err := net.DialUDP("udp4", nil, server.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		_, _, _ = conn.ReadFromAddrPort(buf) // returns when the socket closes
	}()
	payload := []byte{0x10, 0x00, 0x9d}
	if _, err := client.Write(x.packet(t, rxTestSSRC, 1, payload)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fanned:
	case <-time.After(5 * time.Second):
		t.Fatal("packet 1 not fanned out by the reader")
	}
	if _, err := client.Write(x.packet(t, rxTestSSRC, 2, payload)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for len(x.track.queue) == 0 {
		select {
		case seq := <-fanned:
			t.Fatalf("packet %d fanned out by the reader after a slow inline fan-out", seq)
		case <-deadline:
			t.Fatal("packet 2 not queued")
		case <-time.After(time.Millisecond):
		}
	}
	_ = conn.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not end with the socket")
	}
}
