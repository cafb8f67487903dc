package media

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// rxPath receives a publisher connection's RTP without Pion's ICE
// connection, SRTP session and read goroutines, and forwards it in the
// goroutine that read it from the socket.
//
// On Pion's path every incoming packet crosses five goroutines (the UDP
// mux's reader, the ICE candidate's read loop, the webrtc mux's dispatch,
// the SRTP session's read loop, the track's forwarder), each hand-off a
// wake-up. Once the connection is connected and its keys can be had, the
// SFU's socket wrapper (batchConn, whose read is the UDP mux's one reader
// goroutine) recognises an RTP datagram (RFC 7983, RFC 5761) whose SSRC
// is that of a track the connection publishes (or of its RTX stream),
// decrypts it with an SRTP context of its own (the remote keys of the RFC 5764 keying material, with
// its replay protection and rollover counter), runs it through the
// connection's receive interceptors (the NACK generator, receiver reports,
// TWCC feedback: the same chain Pion would run, captured when Pion bound the
// stream, with rxSource in the place of Pion's SRTP reader) and hands it
// to the track's forwarder goroutine through the track's bounded queue
// (one hand-off, where Pion's path has five): the fan-outs of different
// tracks run in parallel, each track's in order. When the queue is full
// the packet is dropped before it is decrypted (Stats.PacketsInQueueDropped):
// the socket's reader never waits. Everything else on the port (RTCP, STUN,
// DTLS, other SSRCs, packets before the switch) goes to Pion as before, and
// the track's forwarder forwards what Pion delivers through the same queue.
//
// The rollover counter continues Pion's: the forwarder follows the extended
// sequence number of what Pion delivered (seen), and the first packet of an
// SSRC decrypted here starts from it. The connection stays on Pion's path
// for good when its selected pair is relayed when it connects, when
// batching is off (Config.WrapPacketConn) or when the keys cannot be had.
//
// Packets are routed by SSRC, not by address: a browser may send on a
// valid pair other than the one Pion selected (Chromium with a loopback and
// a LAN address sends from the LAN one while Pion keeps the loopback pair
// it nominated first), and an ICE restart moves the pair. The SRTP
// authentication decides: a packet that fails it from an address the
// connection is known to use (the selected pairs' remote addresses, and
// those of packets that passed it) is dropped, as Pion would, and so is a
// replay; from any other address it goes to Pion (another connection
// using the same SSRC: the SSRC stays on Pion's path for the connection
// that registered it second).
//
// ICE liveness does not need the media: Pion's agent sends a binding
// request on the selected pair every ICEKeepaliveInterval (2 s) and counts
// the answer (and the peer's own checks) as received traffic, against a
// disconnected timeout of 5 s (TestRxFastKeepsICEConnected).
type rxPath struct {
	conn     *batchConn // nil: batching off, never on
	counters *counters
	pc       *webrtc.PeerConnection

	state atomic.Int32 // fastUndecided, fastOn, fastOff

	// streams maps an SSRC to the track it belongs to: replaced (never
	// modified) under mu, read without a lock by the socket's reader.
	streams atomic.Pointer[map[uint32]*rxStream]

	log *slog.Logger

	mu       sync.Mutex // guards the fields below
	ctx      *srtp.Context
	hdr      rtp.Header                       // scratch for DecryptRTP
	chains   map[uint32]interceptor.RTPReader // each SSRC's full receive chain, as Pion bound it
	trackers map[uint32]*seqTracker           // what Pion delivered, per SSRC
	addrs    []netip.AddrPort                 // where the peer is known to send from
	closed   bool
	slab     []byte // where decrypted packets are carved from
}

// rxStream is one SSRC received on the fast path: a published track's
// main stream, or its RTX stream. pkt and attrs are used under mu (by the
// socket's reader).
type rxStream struct {
	mu      sync.Mutex
	track   *publishedTrack
	chain   interceptor.RTPReader
	rtx     bool   // an RTX stream: its packets repair the track's
	pt      uint8  // the track's payload type and SSRC, for RTX
	ssrc    uint32 //
	started bool   // under rxPath.mu: the rollover counter was carried over

	pkt   rtp.Packet
	ext   [8]rtp.Extension // backing array of pkt's header extensions
	attrs interceptor.Attributes
	n     int // the packet rxSource returns
}

func newRxPath(conn *batchConn, c *counters, log *slog.Logger) *rxPath {
	r := &rxPath{conn: conn, counters: c, log: log, chains: make(map[uint32]interceptor.RTPReader), trackers: make(map[uint32]*seqTracker)}
	r.streams.Store(&map[uint32]*rxStream{})
	if conn == nil {
		r.state.Store(fastOff)
	}
	return r
}

// attach follows pc's selected candidate pair. Called once, before pc
// negotiates.
func (r *rxPath) attach(pc *webrtc.PeerConnection) {
	r.pc = pc
	if r.conn == nil {
		return
	}
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		if addr, ok := directRoute(pair); ok {
			r.mu.Lock()
			r.addAddrLocked(addr)
			r.mu.Unlock()
		}
		r.decide()
	})
}

// maxRxAddrs bounds the addresses one connection keeps.
const maxRxAddrs = 8

// addAddrLocked records that the peer sends from addr. r.mu held.
func (r *rxPath) addAddrLocked(addr netip.AddrPort) {
	for _, a := range r.addrs {
		if a == addr {
			return
		}
	}
	if len(r.addrs) == maxRxAddrs {
		r.addrs = append(r.addrs[:0], r.addrs[1:]...)
	}
	r.addrs = append(r.addrs, addr)
}

// knownAddrLocked reports whether the peer is known to send from addr.
// r.mu held.
func (r *rxPath) knownAddrLocked(addr netip.AddrPort) bool {
	for _, a := range r.addrs {
		if a == addr {
			return true
		}
	}
	return false
}

// decide switches the connection to the fast receive path, or to Pion's
// for good; it leaves it undecided while DTLS or ICE is not up yet. Called
// when the publisher connection connects, when its selected pair changes
// and when a track starts (whichever finds it ready first).
func (r *rxPath) decide() {
	if r == nil || r.state.Load() != fastUndecided {
		return
	}
	ctx, addr, relayed, err := r.prepare()
	if ctx == nil && err == nil && !relayed {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state.Load() != fastUndecided || r.closed {
		return
	}
	if err != nil || relayed {
		r.state.Store(fastOff)
		r.log.Info("publisher receive path: Pion", "relayed", relayed, "err", err)
		return
	}
	r.ctx = ctx
	r.addAddrLocked(addr)
	r.state.Store(fastOn)
	for ssrc := range *r.streams.Load() {
		r.conn.registerRx(ssrc, r)
	}
	r.log.Debug("publisher receive path: fast")
}

// prepare returns the connection's incoming SRTP context and the selected
// pair's remote address; nil and no error while not ready.
func (r *rxPath) prepare() (ctx *srtp.Context, addr netip.AddrPort, relayed bool, err error) {
	dt := r.pc.SCTP().Transport()
	if dt.State() != webrtc.DTLSTransportStateConnected {
		return nil, addr, false, nil
	}
	pair, err := dt.ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil, addr, false, nil
	}
	if pair.Local.Typ == webrtc.ICECandidateTypeRelay || pair.Remote.Typ == webrtc.ICECandidateTypeRelay {
		return nil, addr, true, nil
	}
	addr, ok := directRoute(pair)
	if !ok {
		return nil, addr, true, nil
	}
	ld, rd := r.pc.LocalDescription(), r.pc.RemoteDescription()
	if ld == nil || rd == nil {
		return nil, addr, false, nil
	}
	conn := dtlsConn(dt)
	if conn == nil {
		return nil, addr, false, errors.New("media: DTLS connection not reachable")
	}
	ctx, err = srtpReceiveContext(conn, dtlsClient(ld.SDP, rd.SDP))
	return ctx, addr, false, err
}

// dtlsClient reports whether the side whose description is local is the
// DTLS client (RFC 5763 section 5): an answer's a=setup:active, or an
// offer's actpass answered by a=setup:passive.
func dtlsClient(local, remote string) bool {
	switch {
	case strings.Contains(local, "a=setup:active"):
		return true
	case strings.Contains(local, "a=setup:passive"):
		return false
	}
	return strings.Contains(remote, "a=setup:passive")
}

// srtpReceiveContext derives the remote SRTP keys of conn (the side that
// is the DTLS client when client) as Pion does. Header encryption (RFC
// 9335) is accepted, not required: a packet Pion's context accepts is
// accepted, and either form is authenticated.
func srtpReceiveContext(conn *dtls.Conn, client bool) (*srtp.Context, error) {
	profile, err := srtpProfile(conn)
	if err != nil {
		return nil, err
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, errors.New("media: no DTLS state")
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, client); err != nil {
		return nil, err
	}
	return newRxContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, profile)
}

// rxReplayWindow is the SRTP replay protection window, as Pion's SRTP
// session's default (a bare srtp.Context has none).
const rxReplayWindow = 64

// newRxContext is an incoming SRTP context as Pion's session makes one.
func newRxContext(key, salt []byte, profile srtp.ProtectionProfile) (*srtp.Context, error) {
	return srtp.CreateContext(key, salt, profile, srtp.SRTPReplayProtection(rxReplayWindow), srtp.Cryptex(srtp.CryptexModeEnabled))
}

// srtpProfile is the SRTP profile negotiated on conn.
func srtpProfile(conn *dtls.Conn) (srtp.ProtectionProfile, error) {
	dp, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return 0, errors.New("media: no SRTP profile negotiated")
	}
	switch dp {
	case dtls.SRTP_AEAD_AES_128_GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	case dtls.SRTP_AEAD_AES_256_GCM:
		return srtp.ProtectionProfileAeadAes256Gcm, nil
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	}
	return 0, errors.New("media: unsupported SRTP profile")
}

// bindChain records the receive chain Pion bound for ssrc (rxCapture).
func (r *rxPath) bindChain(ssrc uint32, chain interceptor.RTPReader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chains[ssrc] = chain
	if s := (*r.streams.Load())[ssrc]; s != nil {
		r.setStreamLocked(ssrc, &rxStream{track: s.track, rtx: s.rtx, pt: s.pt, ssrc: s.ssrc})
	}
}

// unbindChain forgets ssrc's chain: its packets go to Pion.
func (r *rxPath) unbindChain(ssrc uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.chains, ssrc)
	r.setStreamLocked(ssrc, nil)
}

// register takes t's packets (and its RTX stream's) on the fast path.
// Called by t's forwarder after Pion delivered its first packet.
func (r *rxPath) register(t *publishedTrack) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	ssrc := uint32(t.remote.SSRC())
	r.setStreamLocked(ssrc, &rxStream{track: t})
	if rtx := uint32(t.remote.RtxSSRC()); rtx != 0 {
		r.setStreamLocked(rtx, &rxStream{track: t, rtx: true, pt: uint8(t.remote.PayloadType()), ssrc: ssrc})
	}
}

// unregister gives t's packets back to Pion (the track ended).
func (r *rxPath) unregister(t *publishedTrack) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ssrc, s := range *r.streams.Load() {
		if s.track == t {
			r.setStreamLocked(ssrc, nil)
		}
	}
}

// setStreamLocked replaces ssrc's stream (nil removes it); a stream is
// only listed with its chain. r.mu held.
func (r *rxPath) setStreamLocked(ssrc uint32, s *rxStream) {
	old := *r.streams.Load()
	next := make(map[uint32]*rxStream, len(old)+1)
	for k, v := range old {
		if k != ssrc {
			next[k] = v
		}
	}
	if s != nil {
		if s.chain = r.chains[ssrc]; s.chain != nil {
			if prev := old[ssrc]; prev != nil {
				s.started = prev.started
			}
			s.attrs = make(interceptor.Attributes, 4)
			next[ssrc] = s
		}
	}
	r.streams.Store(&next)
	if r.conn == nil {
		return
	}
	if next[ssrc] != nil && r.state.Load() == fastOn && !r.closed {
		r.conn.registerRx(ssrc, r)
	} else if next[ssrc] == nil {
		r.conn.unregisterRx(ssrc, r)
	}
}

// seenPion follows a packet Pion delivered to the forwarder: h is its
// header, attr its attributes (an RTX packet's carry its own SSRC and
// sequence number).
func (r *rxPath) seenPion(h *rtp.Header, attr interceptor.Attributes) {
	if r == nil || r.state.Load() == fastOff {
		return
	}
	if attr != nil {
		if ssrc, ok := attr[webrtc.AttributeRtxSsrc].(uint32); ok {
			if seq, ok := attr[webrtc.AttributeRtxSequenceNumber].(uint16); ok {
				r.seen(ssrc, seq)
			}
			return
		}
	}
	r.seen(h.SSRC, h.SequenceNumber)
}

// seen follows the extended sequence number of a packet of ssrc Pion
// delivered, for the rollover counter of the first packet decrypted here.
func (r *rxPath) seen(ssrc uint32, seq uint16) {
	r.mu.Lock()
	if t := r.trackers[ssrc]; t != nil {
		t.update(seq)
	} else if len(r.trackers) < 2*maxTracksBound {
		r.trackers[ssrc] = newSeqTracker(seq)
	}
	r.mu.Unlock()
}

// maxTracksBound bounds the SSRCs followed per connection.
const maxTracksBound = 64

// close gives everything back to Pion; the connection is closing.
func (r *rxPath) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.state.Store(fastOff)
	if r.conn != nil {
		for ssrc := range *r.streams.Load() {
			r.conn.unregisterRx(ssrc, r)
		}
	}
	r.streams.Store(&map[uint32]*rxStream{})
}

// rxSlabSize is the size of the chunks decrypted packets are carved from.
// A forwarded packet's buffer is never modified after it was read (the
// NACK responders keep a reference to it), so a chunk is not reused: it
// is garbage once no history holds a packet of it (one allocation per
// ~50 video packets instead of one per packet).
const rxSlabSize = 64 << 10

// receive handles an RTP datagram with SSRC ssrc from addr: false when it
// is not the fast path's (the caller hands it to Pion); true when it was
// forwarded or dropped.
func (r *rxPath) receive(p []byte, ssrc uint32, addr netip.AddrPort) bool {
	return r.receiveHold(p, ssrc, addr, nil)
}

// receiveHold is receive; a packet to forward is put into hold when hold
// is not nil (publishedTrack.receiveFast).
func (r *rxPath) receiveHold(p []byte, ssrc uint32, addr netip.AddrPort, hold *heldPacket) bool {
	s := (*r.streams.Load())[ssrc]
	if s == nil {
		return false
	}
	full := s.track.queueFull()
	r.mu.Lock()
	if r.ctx == nil || r.closed {
		r.mu.Unlock()
		return false
	}
	if full && r.knownAddrLocked(addr) {
		// The forwarder is behind: drop the packet before the SRTP context
		// and the interceptors see it, so that the NACK generator asks for
		// it again (and the congestion feedback reports it lost).
		r.mu.Unlock()
		r.counters.fastInQueueDropped.Add(1)
		return true
	}
	if !s.started {
		// Continue the rollover counter of Pion's context.
		if t := r.trackers[ssrc]; t != nil && len(p) >= 4 {
			r.ctx.SetROC(ssrc, uint32(t.ext(binary.BigEndian.Uint16(p[2:4]))>>16))
		}
		s.started = true
	}
	if cap(r.slab)-len(r.slab) < len(p) {
		r.slab = make([]byte, 0, max(rxSlabSize, len(p)))
	}
	free := r.slab[len(r.slab):cap(r.slab)]
	out, err := r.ctx.DecryptRTP(free[:0:len(p)], p, &r.hdr)
	known := r.knownAddrLocked(addr)
	if err == nil {
		r.slab = r.slab[:len(r.slab)+len(out)]
		if !known {
			r.addAddrLocked(addr)
		}
	}
	r.mu.Unlock()
	if err != nil {
		if !known {
			// Not this connection's (or a forgery, or a replay from
			// elsewhere: Pion drops those).
			return false
		}
		if isReplay(err) {
			r.counters.fastInReplayed.Add(1)
		} else {
			r.counters.fastInDropped.Add(1)
		}
		return true
	}
	s.track.receiveFast(s, out[:len(out):len(out)], hold)
	return true
}

// isReplay reports whether err is the SRTP context's replay refusal (a
// packet already received). pion/srtp does not export that error's type or
// sentinel; its text is stable ("... duplicated packet"). Only the error
// path calls this.
func isReplay(err error) bool { return strings.HasSuffix(err.Error(), "duplicated packet") }

// rxAttrKey marks a packet the fast path passes down the receive chain.
type rxAttrKey struct{}

// rtpHeaderAttr is the key under which interceptor.Attributes caches a
// packet's parsed header (unexported in pion/interceptor; learnt once by
// asking it). The fast path stores its own parsed header there, so that the
// interceptors do not parse and allocate one per packet. nil if unknown.
var rtpHeaderAttr = func() any {
	a := interceptor.Attributes{}
	if _, err := a.GetRTPHeader([]byte{0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}); err != nil || len(a) != 1 {
		return nil
	}
	for k := range a {
		return k
	}
	return nil
}()

// read runs s's packet (s.pkt, n bytes in b) through its receive chain.
// Called under s.mu.
func (s *rxStream) read(b []byte) error {
	clear(s.attrs)
	s.attrs[rxAttrKey{}] = s
	if rtpHeaderAttr != nil {
		s.attrs[rtpHeaderAttr] = &s.pkt.Header
	}
	s.n = len(b)
	n, _, err := s.chain.Read(b, s.attrs)
	if err == nil && n != len(b) {
		err = errors.New("media: receive chain changed the packet")
	}
	return err
}

// rxSource is the innermost receive interceptor of a publisher connection:
// for a packet the fast path passes down the chain it returns that packet,
// otherwise it reads from Pion's SRTP stream.
type rxSource struct{ interceptor.NoOp }

func (*rxSource) NewInterceptor(string) (interceptor.Interceptor, error) { return &rxSource{}, nil }

func (*rxSource) BindRemoteStream(_ *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if a != nil {
			if s, ok := a[rxAttrKey{}].(*rxStream); ok {
				return s.n, a, nil
			}
		}
		return reader.Read(b, a)
	})
}

// rxCapture is the outermost receive interceptor of a publisher
// connection: it records each stream's full chain for the fast path.
type rxCapture struct {
	interceptor.NoOp
	r *rxPath
}

func (c *rxCapture) NewInterceptor(string) (interceptor.Interceptor, error) { return c, nil }

func (c *rxCapture) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	c.r.bindChain(info.SSRC, reader)
	return reader
}

func (c *rxCapture) UnbindRemoteStream(info *interceptor.StreamInfo) { c.r.unbindChain(info.SSRC) }

// rtxToOriginal turns an RTX packet (RFC 4588) in b into the packet it
// repairs, in place, as Pion's RTPReceiver does: the original sequence
// number moves from the payload to the header, the track's payload type and
// SSRC replace the RTX ones. ok is false for a packet that repairs nothing
// (a bandwidth probe of padding only) or is malformed.
func rtxToOriginal(b []byte, pt uint8, ssrc uint32) (out []byte, ok bool) {
	if len(b) < 12 {
		return nil, false
	}
	headerLength := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < headerLength+4 {
			return nil, false
		}
		headerLength += 4 * (1 + int(binary.BigEndian.Uint16(b[headerLength+2:headerLength+4])))
	}
	padding := 0
	if b[0]&0x20 != 0 {
		padding = int(b[len(b)-1])
	}
	if len(b)-headerLength-padding < 2 {
		return nil, false
	}
	b[1] = b[1]&0x80 | pt&0x7f
	b[2], b[3] = b[headerLength], b[headerLength+1]
	binary.BigEndian.PutUint32(b[8:12], ssrc)
	copy(b[headerLength:], b[headerLength+2:])
	return b[:len(b)-2], true
}
