package media

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// publishedTrack is one track a participant publishes. Its forwarder reads
// RTP from the client and writes each packet to one downTrack per
// subscriber.
type publishedTrack struct {
	owner    *Participant
	pc       *webrtc.PeerConnection // the publisher connection it came on
	remote   *webrtc.TrackRemote
	receiver *webrtc.RTPReceiver
	kind     webrtc.RTPCodecType
	codec    webrtc.RTPCodecCapability
	id       string // track ID at subscribers: <participant>-<kind>-<n>
	streamID string // stream ID at subscribers: the publisher's participant ID
	room     *room  // set by SFU.addTrack; guarded by SFU.mu

	// downs is the forwarder's lock-free view of the subscribers: a slice
	// replaced (never modified) under mu.
	downs atomic.Pointer[[]*downTrack]

	mu     sync.Mutex // guards closed and writes of downs
	closed bool

	keyframeWanted chan struct{} // capacity 1: a keyframe request is pending
	done           chan struct{} // closed by close
	counters       *counters
	pliThrottle    time.Duration
	// batch holds the datagrams of one fan-out until they are sent
	// together; nil without batching. Used by the forwarder goroutine only.
	batch *sendBatch
	// rx is the publisher connection's fast receive path (rxfast.go).
	rx *rxPath
	// queue carries the track's packets to its forwarder goroutine, which
	// fans them out one at a time, in order: from the fast receive path
	// (the socket's reader, which never waits: it drops a packet when the
	// queue is full) and from the goroutine reading Pion's track.
	queue chan []byte
	// pending counts the packets handed to the forwarder (queued, or being
	// fanned out) and not fanned out yet. The socket's reader fans a packet
	// out itself (forwardInline) only when it is 0, so the track's packets
	// keep their order.
	pending atomic.Int32
	// fanMu is held by whoever fans out a packet of the track (the
	// forwarder, or the socket's reader inline): one fan-out at a time, so
	// the batch and the downTracks' scratch headers have one user. The
	// reader never waits for it (TryLock).
	fanMu sync.Mutex
	pkt   rtp.Packet       // the packet being fanned out; under fanMu
	ext   [8]rtp.Extension // backing array of pkt's header extensions
	// hist is the NACK history of the packets fanned out, shared by the
	// subscriber streams written directly (trackHistory); video only (the
	// SFU negotiates NACK for video), nil for audio.
	hist *trackHistory
}

// trackQueueLen is the capacity of a track's queue: about half a second
// of a 10 Mbit/s video track, or a large keyframe.
const trackQueueLen = 512

func newPublishedTrack(owner *Participant, pc *webrtc.PeerConnection, rx *rxPath, remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver, seq int) *publishedTrack {
	t := &publishedTrack{
		rx:             rx,
		owner:          owner,
		pc:             pc,
		remote:         remote,
		receiver:       receiver,
		kind:           remote.Kind(),
		codec:          remote.Codec().RTPCodecCapability,
		id:             fmt.Sprintf("%s-%s-%d", owner.id, remote.Kind(), seq),
		streamID:       owner.id,
		keyframeWanted: make(chan struct{}, 1),
		done:           make(chan struct{}),
		queue:          make(chan []byte, trackQueueLen),
		counters:       &owner.sfu.counters,
		pliThrottle:    owner.sfu.cfg.PLIThrottle,
	}
	if owner.sfu.batch != nil {
		t.batch = owner.sfu.batch.newBatch()
	}
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.hist = &trackHistory{}
	}
	t.downs.Store(&[]*downTrack{})
	return t
}

// forward copies RTP from the publisher to every subscriber until the track
// ends (the client stopped sending it or the connection closed).
//
// Each packet has a buffer of its own that is never modified after the
// read: every subscriber's nackResponder keeps a reference to its payload
// for retransmissions instead of a copy.
//
// The forwarder goroutine (this one) fans out, one at a time and in order,
// the packets of the track's queue. They come from two sources: readPion
// (a goroutine reading what Pion delivers, ended with the track) and, once
// Pion has delivered the track's first packet and the connection's fast
// receive path is on (rxfast.go), the socket's reader, which decrypts the
// track's packets and runs them through the receive interceptors itself.
func (t *publishedTrack) forward() {
	defer t.rx.unregister(t)
	pion := make(chan struct{})
	go t.readPion(pion)
	t.forwardQueue(pion)
}

// forwardQueue fans out the packets of the track's queue until stop is
// closed.
func (t *publishedTrack) forwardQueue(stop <-chan struct{}) {
	for {
		select {
		case b := <-t.queue:
			t.forwardQueued(b)
		case <-stop:
			return
		}
	}
}

// forwardQueued fans out b, a packet taken from the queue.
func (t *publishedTrack) forwardQueued(b []byte) {
	t.fanMu.Lock()
	defer t.fanMu.Unlock()
	t.forwardPacket(b)
	t.pending.Add(-1)
}

// enqueue hands b to the forwarder, waiting for room when wait is set;
// false when it was not queued (the queue is full).
func (t *publishedTrack) enqueue(b []byte, wait bool) bool {
	t.pending.Add(1)
	if wait {
		t.queue <- b
		return true
	}
	select {
	case t.queue <- b:
		return true
	default:
		t.pending.Add(-1)
		return false
	}
}

// forwardInline fans out b in the calling goroutine (the socket's reader,
// which found the socket empty after b: see batchConn.ReadFromAddrPort)
// when nothing of the track is queued or being fanned out, so that b keeps
// its place; false when the caller must queue it instead. It never waits
// for the forwarder.
func (t *publishedTrack) forwardInline(b []byte) bool {
	if t.pending.Load() != 0 || !t.fanMu.TryLock() {
		return false
	}
	defer t.fanMu.Unlock()
	if t.pending.Load() != 0 {
		return false // queued in between: b comes after it
	}
	t.forwardPacket(b)
	return true
}

// forwardPacket fans out b, parsed into t.pkt. t.fanMu held.
func (t *publishedTrack) forwardPacket(b []byte) {
	t.pkt.Header.Extensions = t.ext[:0]
	if err := t.pkt.Unmarshal(b); err != nil {
		return // checked by the sender: not reached
	}
	t.fanOut(&t.pkt)
}

// readPion reads what Pion delivers of the track into its queue until the
// track ends, then closes done. It tells the fast path where each SSRC's
// sequence numbers stand (the rollover counter), and registers the track
// with it after the first packet.
func (t *publishedTrack) readPion(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	registered := false
	for {
		n, attr, err := t.remote.Read(buf)
		if err != nil {
			return
		}
		data := make([]byte, n)
		copy(data, buf[:n])
		if err := pkt.Unmarshal(data); err != nil {
			continue
		}
		t.rx.seenPion(&pkt.Header, attr)
		t.counters.packetsIn.Add(1)
		t.counters.bytesIn.Add(uint64(n))
		// The forwarder drains the queue until this goroutine ends: the
		// send waits at worst for its fan-outs.
		t.enqueue(data, true)
		if !registered {
			registered = true
			t.rx.decide()
			t.rx.register(t)
		}
	}
}

// receiveFast forwards a packet of s decrypted by the fast receive path,
// after running it through the connection's receive interceptors: into
// hold when hold is not nil (the socket's reader, which delivers it once
// it knows whether another datagram is waiting), else through the
// forwarder's queue. b is the packet, in a buffer of its own. Called by
// the socket's reader: it never waits.
func (t *publishedTrack) receiveFast(s *rxStream, b []byte, hold *heldPacket) {
	b, ok := s.receive(b, t.counters)
	if !ok {
		return
	}
	if hold != nil {
		*hold = heldPacket{track: t, pkt: b}
		return
	}
	t.deliver(b, false)
}

// deliver forwards b, a packet of the fast receive path: in the calling
// goroutine when inline is set and the track's forwarder has nothing
// pending (forwardInline), else through the forwarder's queue. It never
// waits.
func (t *publishedTrack) deliver(b []byte, inline bool) {
	if !inline || !t.forwardInline(b) {
		if !t.enqueue(b, false) {
			// The forwarder is behind (readPion filled the queue after
			// rxPath.receive found room).
			t.counters.fastInQueueDropped.Add(1)
			return
		}
	}
	t.counters.packetsIn.Add(1)
	t.counters.bytesIn.Add(uint64(len(b)))
	t.counters.fastIn.Add(1)
}

// heldPacket is a packet of the fast receive path that the socket's
// reader holds while it reads the next datagram.
type heldPacket struct {
	track *publishedTrack
	pkt   []byte
}

// release delivers the held packet, if any: inline when the reader found
// the socket empty.
func (h *heldPacket) release(inline bool) {
	if h.track == nil {
		return
	}
	t, b := h.track, h.pkt
	*h = heldPacket{}
	t.deliver(b, inline)
}

// receive runs b through the stream's receive interceptors and returns
// the packet to forward (an RTX packet turned into the one it repairs);
// false when there is none.
func (s *rxStream) receive(b []byte, c *counters) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkt.Header.Extensions = s.ext[:0]
	if err := s.pkt.Unmarshal(b); err != nil {
		c.fastInDropped.Add(1)
		return nil, false
	}
	if err := s.read(b); err != nil {
		return nil, false
	}
	if s.rtx {
		orig, ok := rtxToOriginal(b, s.pt, s.ssrc)
		if !ok {
			return nil, false // a probe: nothing to forward
		}
		s.pkt.Header.Extensions = s.ext[:0]
		if err := s.pkt.Unmarshal(orig); err != nil {
			return nil, false
		}
		b = orig
	}
	return b, true
}

// queueFull reports whether the forwarder's queue has no room left.
func (t *publishedTrack) queueFull() bool { return len(t.queue) == cap(t.queue) }

// fanOut writes pkt to every subscriber. Called by the forwarder goroutine
// only. It holds no lock: it reads a snapshot of the subscriber list. Each
// write encrypts and hands one datagram to the shared UDP socket without
// waiting for the subscriber, so a slow or vanished subscriber costs the
// same as a live one. fanOut strips pkt's header extensions; the writes
// copy the header before rewriting SSRC and payload type per subscriber.
func (t *publishedTrack) fanOut(pkt *rtp.Packet) {
	// Header extension IDs were negotiated with the publisher, not with the
	// subscribers: drop them (the subscriber's interceptors add their own).
	pkt.Header.Extension = false
	pkt.Header.ExtensionProfile = 0
	pkt.Header.Extensions = nil
	var sent uint64
	// The sender reports take the time of a packet that starts a frame:
	// the same for every subscriber.
	now := time.Now()
	if t.hist != nil {
		h := pkt.Header
		if pkt.PaddingSize != 0 && h.PaddingSize == 0 { //nolint:staticcheck // as downTrack.write
			h.PaddingSize = pkt.PaddingSize //nolint:staticcheck
		}
		t.hist.add(&h, pkt.Payload)
	}
	t.batch.begin()
	for _, d := range *t.downs.Load() {
		if d.write(pkt, now) {
			sent++
		}
	}
	t.batch.flush()
	if sent > 0 {
		// One update per packet, not per subscriber: the counters are
		// shared by every forwarder.
		t.counters.packetsOut.Add(sent)
		t.counters.bytesOut.Add(sent * uint64(pkt.MarshalSize()))
	}
}

// addDown adds d to the forwarding list; false if the track ended.
func (t *publishedTrack) addDown(d *downTrack) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	old := *t.downs.Load()
	next := make([]*downTrack, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	t.downs.Store(&next)
	return true
}

// removeDown removes d from the forwarding list.
func (t *publishedTrack) removeDown(d *downTrack) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.downs.Load()
	next := make([]*downTrack, 0, len(old))
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	t.downs.Store(&next)
}

// close marks the track ended and returns the downTracks it had.
func (t *publishedTrack) close() []*downTrack {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	close(t.done)
	old := *t.downs.Load()
	t.downs.Store(&[]*downTrack{})
	return old
}

// requestKeyframe asks the publisher for a keyframe. It never blocks: the
// request is merged with any pending one and sent by requestKeyframes.
func (t *publishedTrack) requestKeyframe() {
	if t.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	select {
	case t.keyframeWanted <- struct{}{}:
	default:
	}
}

// requestKeyframes sends PLIs to the publisher, at most one per
// pliThrottle. A request inside the interval is sent when it ends, so a
// subscriber added just after another still gets its keyframe promptly.
func (t *publishedTrack) requestKeyframes() {
	defer t.owner.wg.Done()
	var last time.Time
	for {
		select {
		case <-t.done:
			return
		case <-t.keyframeWanted:
		}
		if wait := time.Until(last.Add(t.pliThrottle)); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-t.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			// Requests that arrived while waiting are served by this PLI.
			select {
			case <-t.keyframeWanted:
			default:
			}
		}
		last = time.Now()
		pli := &rtcp.PictureLossIndication{MediaSSRC: uint32(t.remote.SSRC())}
		if err := t.pc.WriteRTCP([]rtcp.Packet{pli}); err != nil {
			if errors.Is(err, io.ErrClosedPipe) {
				return
			}
			continue
		}
		t.counters.keyframeRequestsOut.Add(1)
		t.owner.log.Debug("keyframe requested", "track", t.id)
	}
}

// readRTCP drains the publisher's RTCP (sender reports) for this track.
// Reading is what runs the receiving interceptors (reports, NACK state).
func (t *publishedTrack) readRTCP() {
	defer t.owner.wg.Done()
	buf := make([]byte, 1500)
	for {
		if _, _, err := t.receiver.Read(buf); err != nil {
			return
		}
	}
}

// downTrack is one publishedTrack as sent to one subscriber: a
// TrackLocalStaticRTP of its own on the subscriber connection, so adding or
// removing a subscriber touches no other subscriber.
type downTrack struct {
	*webrtc.TrackLocalStaticRTP
	track  *publishedTrack
	sub    *Participant
	sender *webrtc.RTPSender // set before the downTrack is shared
	bound  atomic.Bool       // negotiated: writes reach the subscriber

	ssrcMu sync.Mutex // guards ssrc
	ssrc   uint32     // registered with the track's batch while bound; 0 when not

	// out is where write sends: the binding's stream (the top of the
	// subscriber connection's interceptor chain), SSRC and payload type;
	// nil while unbound. hdr is the fan-out's copy of the header it
	// rewrites (written by the track's forwarder goroutine).
	out atomic.Pointer[downBinding]
	hdr rtp.Header
}

// downBinding is a downTrack's negotiated stream.
type downBinding struct {
	stream webrtc.TrackLocalWriter
	ssrc   uint32
	pt     uint8
	// direct is the stream's interceptor state on the subscriber
	// connection (fastPath.streams), found at the first write after the
	// chain was bound (Pion binds the track before the chain).
	direct atomic.Pointer[sendStream]
}

func newDownTrack(t *publishedTrack, sub *Participant) (*downTrack, error) {
	local, err := webrtc.NewTrackLocalStaticRTP(t.codec, t.id, t.streamID)
	if err != nil {
		return nil, err
	}
	return &downTrack{TrackLocalStaticRTP: local, track: t, sub: sub}, nil
}

// Bind is called by Pion when the subscriber's answer is applied. The
// subscriber needs a keyframe to start decoding: ask for one now if its
// connection is up, otherwise the subscriber's connect will ask.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, err := d.TrackLocalStaticRTP.Bind(ctx)
	if err != nil {
		return codec, err
	}
	d.out.Store(&downBinding{stream: ctx.WriteStream(), ssrc: uint32(ctx.SSRC()), pt: uint8(codec.PayloadType)})
	d.registerBatch(uint32(ctx.SSRC()))
	d.bound.Store(true)
	if d.sub != nil {
		d.sub.log.Debug("subscriber track bound", "track", d.track.id, "connected", d.sub.subConnected.Load())
	}
	if d.sub == nil || d.sub.subConnected.Load() {
		d.track.requestKeyframe()
	}
	return codec, nil
}

// Unbind is called by Pion when the track is removed or the connection
// closes.
func (d *downTrack) Unbind(ctx webrtc.TrackLocalContext) error {
	d.bound.Store(false)
	d.out.Store(nil)
	d.registerBatch(0)
	return d.TrackLocalStaticRTP.Unbind(ctx)
}

// registerBatch routes the datagrams of ssrc (the SSRC this downTrack
// writes with) through its track's batch, replacing the previous one; 0
// unregisters.
func (d *downTrack) registerBatch(ssrc uint32) {
	b := d.track.batch
	if b == nil {
		return
	}
	d.ssrcMu.Lock()
	defer d.ssrcMu.Unlock()
	if d.ssrc != 0 {
		b.conn.unregister(d.ssrc, b)
	}
	d.ssrc = ssrc
	if ssrc != 0 {
		b.conn.register(ssrc, b)
	}
}

// write sends pkt to the subscriber; false if it was not sent. It does
// what TrackLocalStaticRTP.WriteRTP does for its one binding (SSRC and
// payload type rewritten on a copy of the header) without its packet pool
// and lock. On the fast path it does what the subscriber connection's
// interceptors do for the packet itself (fastPath.writeDirect), else it
// writes through them. now is the fan-out's time.
func (d *downTrack) write(pkt *rtp.Packet, now time.Time) bool {
	b := d.out.Load()
	if b == nil || !d.bound.Load() {
		return false
	}
	d.hdr = pkt.Header
	d.hdr.SSRC, d.hdr.PayloadType = b.ssrc, b.pt
	if pkt.PaddingSize != 0 && d.hdr.PaddingSize == 0 { //nolint:staticcheck // as TrackLocalStaticRTP
		d.hdr.PaddingSize = pkt.PaddingSize //nolint:staticcheck
	}
	if s := d.directStream(b); s != nil {
		if handled, err := d.sub.fast.writeDirect(s, d.track.batch, d.track.hist, &d.hdr, pkt.Payload, now); handled {
			return err == nil
		}
	}
	_, err := b.stream.WriteRTP(&d.hdr, pkt.Payload)
	return err == nil
}

// directStream is b's interceptor state when the subscriber connection
// is on the fast path and the stream's chain is bound; else nil.
func (d *downTrack) directStream(b *downBinding) *sendStream {
	if d.sub == nil || d.sub.fast == nil || d.sub.fast.state.Load() != fastOn {
		return nil
	}
	if s := b.direct.Load(); s != nil {
		return s
	}
	s := d.sub.fast.streams.lookup(b.ssrc)
	if s != nil {
		b.direct.Store(s)
	}
	return s
}

// readRTCP reads the subscriber's RTCP for this track, which runs the NACK
// responder (retransmissions), and forwards its keyframe requests to the
// publisher through the throttle. It ends when the track is removed from the
// subscriber connection or the connection closes.
func (d *downTrack) readRTCP() {
	defer d.sub.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, attr, err := d.sender.Read(buf)
		if err != nil {
			return
		}
		// The interceptors have already parsed the packet; attr caches it.
		if attr == nil {
			attr = make(interceptor.Attributes)
		}
		pkts, err := attr.GetRTCPPackets(buf[:n])
		if err != nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.track.counters.keyframeRequestsIn.Add(1)
				d.track.requestKeyframe()
			}
		}
	}
}
