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
// default options) and behaves like it on the wire but for the packing:
// every interval (1 s) one report per stream that has sent a packet, with
// the packet and payload octet counts of the packets written through it
// (not the NACK responder's resends, which are written below it) and the
// RTP time of the last in-order packet's frame carried forward to the
// report's NTP time. The reports of one connection's streams leave
// together, as one compound RTCP packet (one SRTCP encryption and one
// datagram per connection, where Pion writes one per stream), and the
// reports of every connection are sent by one goroutine per SFU
// (reportClock) instead of one ticker per connection.
//
// Unlike Pion's it registers each stream with the connection's fast path
// (sendStreams), so that a fan-out on the fast path accounts a packet with
// one call (srStream.count) instead of a write through the interceptor
// chain, and it takes the time only for a packet that starts a new frame.
type senderReports struct {
	interceptor.NoOp
	reg   *sendStreams // nil: streams are not registered (tests)
	clock *reportClock

	mu      sync.Mutex // guards streams, writer and closed
	streams map[uint32]*srStream
	writer  interceptor.RTCPWriter // nil until BindRTCPWriter
	closed  bool
	// sending counts the clock's sends in progress (taken under the
	// clock's lock while registered): Close waits for them, so that
	// nothing is written after it returns.
	sending sync.WaitGroup
	pkts    []rtcp.Packet // the clock goroutine's
}

// senderReportInterval is Pion's default.
const senderReportInterval = time.Second

// senderReportsFactory makes one senderReports per connection, sent by
// clock.
type senderReportsFactory struct {
	reg   *sendStreams
	clock *reportClock
}

func (f senderReportsFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return newSenderReports(f.reg, f.clock), nil
}

func newSenderReports(reg *sendStreams, clock *reportClock) *senderReports {
	return &senderReports{reg: reg, clock: clock, streams: make(map[uint32]*srStream)}
}

// reportClock sends the sender reports of every subscriber connection of
// an SFU from one goroutine, every interval. One timer for the SFU: a
// ticker per connection woke a thread for each connection every second,
// and each stream's report was an RTCP write of its own through Pion
// (SRTCP, ICE, a sendto).
type reportClock struct {
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex // guards set and the registrations' sending.Add
	set  map[*senderReports]struct{}
	done chan struct{}
	wg   sync.WaitGroup
	list []*senderReports // the goroutine's
}

// newReportClock starts the clock; close ends it.
func newReportClock(interval time.Duration) *reportClock {
	if interval <= 0 {
		interval = senderReportInterval
	}
	c := &reportClock{interval: interval, now: time.Now, set: make(map[*senderReports]struct{}), done: make(chan struct{})}
	c.wg.Add(1)
	go c.loop()
	return c
}

func (c *reportClock) loop() {
	defer c.wg.Done()
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
		case <-c.done:
			return
		}
		c.mu.Lock()
		c.list = c.list[:0]
		for r := range c.set {
			r.sending.Add(1)
			c.list = append(c.list, r)
		}
		c.mu.Unlock()
		now := c.now()
		for i, r := range c.list {
			r.send(now)
			r.sending.Done()
			c.list[i] = nil
		}
	}
}

// add and remove (un)register a connection's reports.
func (c *reportClock) add(r *senderReports) {
	c.mu.Lock()
	c.set[r] = struct{}{}
	c.mu.Unlock()
}

func (c *reportClock) remove(r *senderReports) {
	c.mu.Lock()
	delete(c.set, r)
	c.mu.Unlock()
}

// close stops the clock (after every connection closed).
func (c *reportClock) close() {
	close(c.done)
	c.wg.Wait()
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

// BindRTCPWriter registers the connection with the clock, which writes
// its reports through writer until Close.
func (r *senderReports) BindRTCPWriter(writer interceptor.RTCPWriter) interceptor.RTCPWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.writer != nil {
		return writer
	}
	r.writer = writer
	r.clock.add(r)
	return writer
}

// send writes the reports due at now of the streams that have sent a
// packet, as one compound RTCP packet. Called by the clock's goroutine
// only, with no lock held during the write.
func (r *senderReports) send(now time.Time) {
	r.mu.Lock()
	writer := r.writer
	pkts := r.pkts[:0]
	for _, s := range r.streams {
		if rep := s.report(now); rep != nil {
			pkts = append(pkts, rep)
		}
	}
	r.mu.Unlock()
	if writer != nil {
		for rest := pkts; len(rest) > 0; {
			n := min(len(rest), reportsPerPacket)
			_, _ = writer.Write(rest[:n], interceptor.Attributes{})
			rest = rest[n:]
		}
	}
	clear(pkts)
	r.pkts = pkts[:0]
}

// reportsPerPacket bounds a compound packet: 32 sender reports without
// report blocks are 896 bytes, under any path's MTU with SRTCP's overhead.
const reportsPerPacket = 32

// Close stops the connection's reports; nothing is written once it
// returns.
func (r *senderReports) Close() error {
	r.mu.Lock()
	closed, bound := r.closed, r.writer != nil
	r.closed = true
	r.mu.Unlock()
	if !closed && bound {
		r.clock.remove(r)
		r.sending.Wait()
	}
	return nil
}
