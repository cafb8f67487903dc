package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// batchConn is the SFU's UDP socket as the ICE UDP mux sees it. It sends
// the datagrams of one packet's fan-out with one sendmmsg instead of one
// sendto per subscriber.
//
// Every write to a subscriber goes through Pion (interceptors, SRTP, ICE)
// and ends here, in the goroutine that called it. A datagram that is an RTP
// packet (not RTCP, STUN or DTLS: RFC 7983, RFC 5761) whose SSRC belongs to
// a downTrack is the forwarder's: when that forwarder is inside a fan-out
// (its sendBatch is open) the datagram is copied into the batch, and the
// forwarder sends the whole batch when the fan-out ends. Everything else,
// and a stream's datagrams between fan-outs (a NACK resend, when RTX was not
// negotiated), is written at once, as before.
//
// Batching only changes when datagrams leave within one fan-out (a few
// microseconds), never their content or destination. A send error of a
// batched datagram is not reported to Pion (UDP send errors on an
// unconnected socket are local ones, such as a full buffer, which the
// batched send waits out as a single write does).
type batchConn struct {
	*net.UDPConn
	raw syscall.RawConn // the same socket, for sendmmsg

	// side is a second socket on the same port that only sends the
	// batches (batch_linux.go, openSideSocket); nil when it could not be
	// had (then the batches go through raw). sideClose closes it.
	side      syscall.RawConn
	sideClose func() error
	sideSent  atomic.Uint64 // datagrams sent through side, for tests

	// streams maps a downTrack's SSRC to its forwarder's batch. Replaced
	// (never modified) under mu, read without a lock on every write.
	streams atomic.Pointer[map[uint32]*sendBatch]
	mu      sync.Mutex

	batched    atomic.Uint64 // datagrams sent through a batch, for tests
	rawWritten atomic.Uint64 // datagrams written at once by writeRaw, for tests

	// rx maps the SSRC of a published track (or its RTX stream) to its
	// connection's fast receive path (rxfast.go). Replaced (never
	// modified) under mu, read without a lock on every read.
	rx atomic.Pointer[map[uint32]*rxPath]

	// rd is the state of a raw read (batch_linux.go), used by one
	// ReadFromAddrPort at a time: reading is its owner's flag (a second,
	// concurrent reader reads through net.UDPConn).
	rd      rawReader
	reading atomic.Bool
	held    heldPacket // the packet the reader holds; the reading flag's owner's
	// inlineOff is when the reader may fan out inline again after an
	// inline fan-out that took longer than inlineSlow; the reading flag's
	// owner's.
	inlineOff time.Time
}

// inlineSlow is how long an inline fan-out may take (a few hundred
// microseconds of CPU for tens of subscribers) before the reader takes it
// for a sign that the machine is short of CPU: the reader was descheduled
// during it for several scheduler slices, and every datagram behind it
// waited. The reader then hands every packet off for inlineBackoff: on a
// machine short of CPU the kernel shares it per thread, and the reader
// alone doing fan-outs gets less of it than the reader and the forwarders
// together. (At 2 ms it turned inline fan-outs off most of the time on a
// loaded 2-core machine, where the receivers woken by a fan-out's
// sendmmsg preempt it: session 9 in cmd/switchboard-bench/README.)
const (
	inlineSlow    = 10 * time.Millisecond
	inlineBackoff = 2 * time.Second
)

func newBatchConn(conn *net.UDPConn) *batchConn {
	c := &batchConn{UDPConn: conn}
	if raw, err := conn.SyscallConn(); err == nil {
		c.raw = raw
		c.side, c.sideClose = openSideSocket(raw)
	}
	c.streams.Store(&map[uint32]*sendBatch{})
	c.rx.Store(&map[uint32]*rxPath{})
	return c
}

// registerRx routes the RTP datagrams of ssrc to r, unless another
// connection's fast receive path has it (an SSRC two publishers chose:
// the second stays on Pion's path).
func (c *batchConn) registerRx(ssrc uint32, r *rxPath) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.rx.Load()
	if old[ssrc] != nil {
		return
	}
	next := make(map[uint32]*rxPath, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[ssrc] = r
	c.rx.Store(&next)
}

// unregisterRx undoes registerRx(ssrc, r).
func (c *batchConn) unregisterRx(ssrc uint32, r *rxPath) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.rx.Load()
	if old[ssrc] != r {
		return
	}
	next := make(map[uint32]*rxPath, len(old))
	for k, v := range old {
		if k != ssrc {
			next[k] = v
		}
	}
	c.rx.Store(&next)
}

// receive hands an RTP datagram from a publisher connection on the fast
// receive path to it; false when it is Pion's. A packet to forward is put
// into hold when hold is not nil (see ReadFromAddrPort).
func (c *batchConn) receive(p []byte, addr netip.AddrPort, hold *heldPacket) bool {
	m := *c.rx.Load()
	if len(m) == 0 {
		return false
	}
	ssrc, ok := rtpSSRC(p)
	if !ok {
		return false
	}
	r := m[ssrc]
	return r != nil && r.receiveHold(p, ssrc, netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), hold)
}

// maxBatch bounds the datagrams of one batch; a fan-out to more
// subscribers sends the rest one by one. A room holds at most 50
// participants.
const maxBatch = 64

// sendBatch collects the datagrams of one forwarder's fan-out. Only the
// forwarder's goroutine calls begin and flush; add may be called from any
// goroutine (Pion writes in the caller's goroutine, and another goroutine
// may write an RTP packet of a registered SSRC, e.g. a NACK resend).
type sendBatch struct {
	conn *batchConn

	mu   sync.Mutex // guards open and n while open
	open bool
	n    int
	buf  [maxBatch][]byte // datagrams; each buffer is reused
	dst  [maxBatch]netip.AddrPort
	sys  mmsgState // the system's view of the batch (batch_linux.go)

	// fast counts the datagrams the fast path put in the batch since the
	// last flush, which adds them to fastOut (one update of the shared
	// counter per fan-out, not per subscriber).
	fast    uint64
	fastOut *atomic.Uint64
}

func (c *batchConn) newBatch() *sendBatch {
	b := &sendBatch{conn: c}
	b.sys.init(b)
	return b
}

// register routes the RTP datagrams of ssrc into b while b is open.
func (c *batchConn) register(ssrc uint32, b *sendBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.streams.Load()
	next := make(map[uint32]*sendBatch, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[ssrc] = b
	c.streams.Store(&next)
}

// unregister undoes register(ssrc, b); it keeps a later registration of
// the same SSRC by another batch.
func (c *batchConn) unregister(ssrc uint32, b *sendBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.streams.Load()
	if old[ssrc] != b {
		return
	}
	next := make(map[uint32]*sendBatch, len(old))
	for k, v := range old {
		if k != ssrc {
			next[k] = v
		}
	}
	c.streams.Store(&next)
}

// rtpSSRC returns the SSRC of an RTP datagram; ok is false for anything
// else on the port: RTCP, STUN, DTLS, TURN channel data.
func rtpSSRC(b []byte) (ssrc uint32, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return 0, false
	}
	if pt := b[1] & 0x7f; pt >= 64 && pt <= 95 {
		return 0, false // RTCP (RFC 5761)
	}
	return uint32(b[8])<<24 | uint32(b[9])<<16 | uint32(b[10])<<8 | uint32(b[11]), true
}

// WriteToAddrPort is the write of the ICE UDP mux.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if ssrc, ok := rtpSSRC(b); ok {
		if batch := (*c.streams.Load())[ssrc]; batch != nil && batch.add(b, addr) {
			return len(b), nil
		}
	}
	if c.raw != nil {
		if n, ok, err := writeRaw(c.raw, b, addr); ok {
			c.rawWritten.Add(1)
			return n, err
		}
	}
	return c.UDPConn.WriteToUDPAddrPort(b, addr)
}

// ReadFromAddrPort is the read of the ICE UDP mux (its one reader
// goroutine). See readRaw. A datagram the fast receive path takes is
// forwarded here, and the next one read.
//
// The reader holds a packet of the fast receive path (after decryption and
// the receive interceptors) while it reads the next datagram without
// waiting: when one was waiting, the held packet goes to its track's
// forwarder goroutine (the hand-off: fan-outs of different tracks run in
// parallel, and the reader reads on); when the socket is empty, the reader
// fans the held packet out itself if nothing of its track is pending
// (publishedTrack.forwardInline), which saves waking the forwarder
// goroutine and a thread for it. So an inline fan-out never delays a
// datagram that was already waiting, and a reader with a backlog hands
// every packet off.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	if c.raw == nil || !c.reading.CompareAndSwap(false, true) {
		for {
			n, addr, err := c.UDPConn.ReadFromUDPAddrPort(b)
			if err != nil || !c.receive(b[:n], addr, nil) {
				return n, addr, err
			}
		}
	}
	defer c.reading.Store(false)
	for {
		nowait := c.held.track != nil
		n, addr, ok, err := c.rd.read(c.raw, b, nowait)
		if nowait {
			if ok && errors.Is(err, errWouldBlock) {
				c.releaseEmpty()
				continue
			}
			c.held.release(false)
		}
		if !ok {
			n, addr, err = c.UDPConn.ReadFromUDPAddrPort(b)
		}
		if err != nil || !c.receive(b[:n], addr, &c.held) {
			return n, addr, err
		}
	}
}

// releaseEmpty delivers the held packet after the reader found the socket
// empty: inline, unless inline fan-outs are off for now (inlineOff).
func (c *batchConn) releaseEmpty() {
	start := time.Now()
	if start.Before(c.inlineOff) {
		c.held.release(false)
		return
	}
	c.held.release(true)
	if time.Since(start) > inlineSlow {
		c.inlineOff = time.Now().Add(inlineBackoff)
	}
}

// errWouldBlock is a read without waiting that found the socket empty.
var errWouldBlock = errors.New("media: no datagram waiting")

// Close closes the socket and the side socket.
func (c *batchConn) Close() error {
	err := c.UDPConn.Close()
	if c.sideClose != nil {
		_ = c.sideClose()
	}
	return err
}

// WriteTo writes through WriteToAddrPort when addr is a UDP address.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return c.WriteToAddrPort(b, ua.AddrPort())
	}
	return c.UDPConn.WriteTo(b, addr)
}

// begin opens the batch: the forwarder's datagrams are held until flush.
// A nil batch (batching off) does nothing.
func (b *sendBatch) begin() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = true
	b.mu.Unlock()
}

// add copies a datagram into the open batch; false when the batch is
// closed or full (the caller writes it itself).
func (b *sendBatch) add(p []byte, addr netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open || b.n == maxBatch {
		return false
	}
	b.buf[b.n] = append(b.buf[b.n][:0], p...)
	b.dst[b.n] = addr
	b.n++
	return true
}

// lockBatch returns the batch the datagrams of ssrc go into (known, when
// not nil: the caller's fan-out), locked, when it is open and has room;
// else nil (the datagram is written at once). The caller fills
// slotLocked, commits it and unlocks.
func (c *batchConn) lockBatch(ssrc uint32, known *sendBatch) *sendBatch {
	if c == nil {
		return nil
	}
	b := known
	if b == nil {
		b = (*c.streams.Load())[ssrc]
	}
	if b == nil {
		return nil
	}
	b.mu.Lock()
	if !b.open || b.n == maxBatch {
		b.mu.Unlock()
		return nil
	}
	return b
}

// slotLocked is the buffer of the batch's next datagram, at least size
// bytes. b.mu held.
func (b *sendBatch) slotLocked(size int) []byte {
	buf := b.buf[b.n]
	if cap(buf) < size {
		buf = make([]byte, max(size, 1500))
		b.buf[b.n] = buf
	}
	return buf[:cap(buf)]
}

// commitLocked adds p (slotLocked's buffer, or one that replaces it) to
// the batch, sent to addr; fastOut counts it when the batch is sent. b.mu
// held.
func (b *sendBatch) commitLocked(p []byte, addr netip.AddrPort, fastOut *atomic.Uint64) {
	b.buf[b.n] = p
	b.dst[b.n] = addr
	b.n++
	b.fast++
	b.fastOut = fastOut
}

// flush closes the batch and sends what it holds. No lock is held while
// sending: once closed, nothing but the forwarder touches the batch.
func (b *sendBatch) flush() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = false
	n := b.n
	b.mu.Unlock()
	if n == 0 {
		return
	}
	// What sendmmsg did not take (not on this system) is written one by one.
	for i := b.sys.send(n); i < n; i++ {
		_, _ = b.conn.UDPConn.WriteToUDPAddrPort(b.buf[i], b.dst[i])
	}
	b.conn.batched.Add(uint64(n))
	b.n = 0
	if b.fast > 0 {
		b.fastOut.Add(b.fast)
		b.fast = 0
	}
}
