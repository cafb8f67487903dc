package media

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// recordWriter records what reaches the writer below the responder.
type recordWriter struct {
	mu   sync.Mutex
	pkts []rtp.Packet
	got  chan struct{}
}

func newRecordWriter() *recordWriter { return &recordWriter{got: make(chan struct{}, 64)} }

func (w *recordWriter) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	w.mu.Lock()
	w.pkts = append(w.pkts, rtp.Packet{Header: h.Clone(), Payload: append([]byte(nil), payload...)})
	w.mu.Unlock()
	w.got <- struct{}{}
	return len(payload), nil
}

func (w *recordWriter) all() []rtp.Packet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]rtp.Packet(nil), w.pkts...)
}

// nackReader delivers one marshalled RTCP packet per Read.
type nackReader chan []byte

func (r nackReader) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	return copy(b, <-r), a, nil
}

type nackFixture struct {
	w     *recordWriter
	write interceptor.RTPWriter
	rtcp  nackReader
	read  interceptor.RTCPReader
	now   time.Time
	mu    sync.Mutex
}

func newNackFixture(t *testing.T, rtx bool) *nackFixture {
	t.Helper()
	i, err := nackResponderFactory{}.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	r := i.(*nackResponder)
	f := &nackFixture{w: newRecordWriter(), rtcp: make(nackReader, 8), now: time.Unix(1000, 0)}
	r.now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	r.rtxSeq.Store(500)
	info := &interceptor.StreamInfo{SSRC: 1111, RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}
	if rtx {
		info.SSRCRetransmission, info.PayloadTypeRetransmission = 2222, 97
	}
	f.write = r.BindLocalStream(info, f.w)
	f.read = r.BindRTCPReader(f.rtcp)
	t.Cleanup(func() { _ = r.Close() })
	return f
}

func (f *nackFixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// send writes packets with sequence numbers seqs; payload byte 0 is the low
// byte of the sequence number.
func (f *nackFixture) send(t *testing.T, seqs ...uint16) {
	t.Helper()
	for _, seq := range seqs {
		h := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90, SSRC: 1111}
		if _, err := f.write.Write(h, []byte{byte(seq), 0xAB}, nil); err != nil {
			t.Fatal(err)
		}
		<-f.w.got
	}
}

// nack feeds a NACK for seqs and returns the packets resent for it.
func (f *nackFixture) nack(t *testing.T, want int, seqs ...uint16) []rtp.Packet {
	t.Helper()
	before := len(f.w.all())
	raw, err := rtcp.Marshal([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}})
	if err != nil {
		t.Fatal(err)
	}
	f.rtcp <- raw
	if _, _, err := f.read.Read(make([]byte, 1500), nil); err != nil {
		t.Fatal(err)
	}
	for range want {
		select {
		case <-f.w.got:
		case <-time.After(5 * time.Second):
			t.Fatalf("resend not written")
		}
	}
	select {
	case <-f.w.got:
		t.Fatalf("more than %d resends", want)
	case <-time.After(50 * time.Millisecond):
	}
	return f.w.all()[before:]
}

func TestNackResponderResendsOverRTX(t *testing.T) {
	f := newNackFixture(t, true)
	f.send(t, 10, 11, 12)
	got := f.nack(t, 1, 11)
	p := got[0]
	if p.SSRC != 2222 || p.PayloadType != 97 || p.SequenceNumber != 501 {
		t.Errorf("resend header SSRC %d PT %d seq %d, want 2222 97 501 (RTX seq drawn when stored)", p.SSRC, p.PayloadType, p.SequenceNumber)
	}
	if osn := binary.BigEndian.Uint16(p.Payload); osn != 11 || len(p.Payload) != 4 || p.Payload[2] != 11 {
		t.Errorf("resend payload %v, want original seq 11 then the payload", p.Payload)
	}
	// Within RTT+5 ms the same packet is not resent again.
	f.nack(t, 0, 11)
	f.advance(10 * time.Millisecond)
	f.nack(t, 1, 11)
	// Unknown and skipped-over packets are not resent.
	f.send(t, 15)
	f.nack(t, 0, 13, 14, 99)
}

func TestNackResponderResendsWithoutRTX(t *testing.T) {
	f := newNackFixture(t, false)
	f.send(t, 65534, 65535, 0, 1)
	got := f.nack(t, 2, 65535, 0)
	for i, want := range []uint16{65535, 0} {
		if p := got[i]; p.SSRC != 1111 || p.SequenceNumber != want || p.Payload[0] != byte(want) {
			t.Errorf("resend %d: SSRC %d seq %d payload %v, want 1111 %d as sent", i, p.SSRC, p.SequenceNumber, p.Payload, want)
		}
	}
}

func TestNackResponderForgetsOldPackets(t *testing.T) {
	f := newNackFixture(t, false)
	f.send(t, 1)
	f.send(t, 1+nackHistory)
	f.nack(t, 0, 1)
	f.nack(t, 1, 1+nackHistory)
}

func TestNackResponderIgnoresStreamsWithoutNack(t *testing.T) {
	i, err := nackResponderFactory{}.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	w := newRecordWriter()
	if got := i.BindLocalStream(&interceptor.StreamInfo{SSRC: 1}, w); got != interceptor.RTPWriter(w) {
		t.Error("a stream without nack feedback is wrapped")
	}
}
