package media

import (
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// reportWrites records the RTCP writes of one connection's reports.
type reportWrites struct {
	mu     sync.Mutex
	writes [][]rtcp.Packet
}

func (w *reportWrites) Write(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, append([]rtcp.Packet(nil), pkts...))
	return 0, nil
}

func (w *reportWrites) get() [][]rtcp.Packet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]rtcp.Packet(nil), w.writes...)
}

// One clock sends the reports of every connection; a connection's streams
// leave in one compound packet (at most reportsPerPacket reports each), a
// stream that has sent nothing has no report, and nothing is written once
// Close returned.
func TestSenderReportsOneCompoundPacketPerConnection(t *testing.T) {
	clock := newReportClock(10 * time.Millisecond)
	defer clock.close()

	bind := func(streams, sending int) (*senderReports, *reportWrites) {
		i, _ := senderReportsFactory{clock: clock}.NewInterceptor("")
		r := i.(*senderReports)
		for k := range streams {
			ssrc := uint32(1000 + k)
			w := r.BindLocalStream(&interceptor.StreamInfo{SSRC: ssrc, ClockRate: 90000}, interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil }))
			if k < sending {
				_, _ = w.Write(&rtp.Header{SSRC: ssrc, SequenceNumber: 1, Timestamp: 3000}, make([]byte, 100), nil)
			}
		}
		out := &reportWrites{}
		r.BindRTCPWriter(out)
		return r, out
	}
	a, aw := bind(4, 3)
	b, bw := bind(reportsPerPacket+8, reportsPerPacket+8)

	deadline := time.Now().Add(5 * time.Second)
	for len(aw.get()) < 3 || len(bw.get()) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("writes: %d and %d", len(aw.get()), len(bw.get()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, w := range aw.get() {
		if len(w) != 3 {
			t.Fatalf("connection a: a write of %d reports, want 3 (one per stream that sent)", len(w))
		}
		seen := map[uint32]bool{}
		for _, p := range w {
			sr := p.(*rtcp.SenderReport)
			if sr.PacketCount != 1 || sr.OctetCount != 100 || sr.SSRC < 1000 || sr.SSRC > 1002 || seen[sr.SSRC] {
				t.Fatalf("report %+v", sr)
			}
			seen[sr.SSRC] = true
		}
	}
	writes := bw.get()
	for i, w := range writes {
		want := reportsPerPacket
		if i%2 == 1 {
			want = 8
		}
		if len(w) != want {
			t.Fatalf("connection b: write %d has %d reports, want %d", i, len(w), want)
		}
	}
	if len(writes)%2 != 0 {
		t.Fatalf("connection b: %d writes, a tick's second packet missing", len(writes))
	}
	na, nb := len(aw.get()), len(bw.get())
	time.Sleep(50 * time.Millisecond)
	if len(aw.get()) != na || len(bw.get()) != nb {
		t.Fatal("reports written after Close")
	}
}
