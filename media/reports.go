package media

import (
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// senderReports sends the RTCP sender reports of a subscriber connection's
// streams. It replaces Pion's report.SenderInterceptor (interceptor v0.1.51,
// default options) and behaves like it on the wire: every interval (1 s)
// one report per stream that has sent a packet, with the packet and
// payload octet counts of the packets written through it (not the NACK
// responder's resends, which are written below it) and the RTP time of the
// last in-order packet's frame carried forward to the report's NTP time.
//
// Unlike Pion's it registers each stream with the connection's fast path
// (sendStreams), so that a fan-out on the fast path accounts a packet with
// one call (srStream.count) instead of a write through the interceptor
// chain, and it takes the time only for a packet that starts a new frame.
type senderReports struct {
	interceptor.NoOp
	reg      *sendStreams // nil: streams are not registered (tests)
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex // guards streams and closed
	streams map[uint32]*srStream
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// senderReportInterval is Pion's default.
const senderReportInterval = time.Second

// senderReportsFactory makes one senderReports per connection.
type senderReportsFactory struct {
	reg      *sendStreams
	interval time.Duration // 0: senderReportInterval
}

func (f senderReportsFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return newSenderReports(f.reg, f.interval), nil
}

func newSenderReports(reg *sendStreams, interval time.Duration) *senderReports {
	if interval <= 0 {
		interval = senderReportInterval
	}
	return &senderReports{reg: reg, interval: interval, now: time.Now, streams: make(map[uint32]*srStream), done: make(chan struct{})}
}

// srStream is the sender report state of one local stream.
type srStream struct {
	ssrc      uint32
	clockRate float64

	mu          sync.Mutex // guards the fields below
	lastRTPTime uint32     // RTP timestamp of the last in-order packet's frame
	lastTime    time.Time  // when that frame's first packet was sent
	lastSeq     uint16
	packets     uint32
	octets      uint32
}

// count accounts one packet sent, as Pion's senderStream.processRTP;
// now is taken only for a packet that starts a new frame (a zero now is
// taken then).
func (s *srStream) count(h *rtp.Header, payloadLen int, now time.Time) {
	s.mu.Lock()
	diff := h.SequenceNumber - s.lastSeq
	if s.packets == 0 || (diff > 0 && diff < 1<<15) {
		s.lastSeq = h.SequenceNumber
		if h.Timestamp != s.lastRTPTime {
			if now.IsZero() {
				now = time.Now()
			}
			s.lastRTPTime, s.lastTime = h.Timestamp, now
		}
	}
	s.packets++
	s.octets += uint32(payloadLen) //nolint:gosec // wraps, as RFC 3550 allows
	s.mu.Unlock()
}

// report is the stream's sender report at now; nil before its first
// packet (RFC 3550 6.4: such a source sends no SR).
func (s *srStream) report(now time.Time) *rtcp.SenderReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.packets == 0 {
		return nil
	}
	return &rtcp.SenderReport{
		SSRC:        s.ssrc,
		NTPTime:     ntp64(now),
		RTPTime:     s.lastRTPTime + uint32(now.Sub(s.lastTime).Seconds()*s.clockRate),
		PacketCount: s.packets,
		OctetCount:  s.octets,
	}
}

// ntp64 is t's NTP timestamp, computed as Pion does.
func ntp64(t time.Time) uint64 {
	sec := float64(t.UnixNano())/1e9 + 2208988800
	integer := uint32(sec)
	fraction := uint32((sec - float64(integer)) * 0xFFFFFFFF)
	return uint64(integer)<<32 | uint64(fraction)
}

// BindLocalStream counts the stream's packets.
func (r *senderReports) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	s := &srStream{ssrc: info.SSRC, clockRate: float64(info.ClockRate)}
	r.mu.Lock()
	r.streams[info.SSRC] = s
	r.mu.Unlock()
	if r.reg != nil {
		r.reg.setReports(info.SSRC, s)
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		s.count(h, len(payload), time.Time{})
		return writer.Write(h, payload, a)
	})
}

// UnbindLocalStream forgets the stream.
func (r *senderReports) UnbindLocalStream(info *interceptor.StreamInfo) {
	r.mu.Lock()
	delete(r.streams, info.SSRC)
	r.mu.Unlock()
	if r.reg != nil {
		r.reg.remove(info.SSRC)
	}
}

// BindRTCPWriter starts the reports' loop, which ends with Close.
func (r *senderReports) BindRTCPWriter(writer interceptor.RTCPWriter) interceptor.RTCPWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return writer
	}
	r.wg.Add(1)
	go r.loop(writer)
	return writer
}

func (r *senderReports) loop(writer interceptor.RTCPWriter) {
	defer r.wg.Done()
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	var streams []*srStream
	for {
		select {
		case <-ticker.C:
		case <-r.done:
			return
		}
		streams = streams[:0]
		r.mu.Lock()
		for _, s := range r.streams {
			streams = append(streams, s)
		}
		r.mu.Unlock()
		now := r.now()
		for _, s := range streams {
			if rep := s.report(now); rep != nil {
				_, _ = writer.Write([]rtcp.Packet{rep}, interceptor.Attributes{})
			}
		}
	}
}

// Close ends the reports' loop.
func (r *senderReports) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.done)
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}
