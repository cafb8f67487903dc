package media

import (
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pion/dtls/v3"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// fastPath sends a subscriber connection's RTP without Pion's SRTP session
// and ICE connection: once the connection's DTLS is up, it derives the SRTP
// keys (RFC 5764) from the DTLS connection, encrypts each packet with an
// SRTP context of its own and hands the datagram to the shared socket
// (batchConn, so a fan-out still leaves in one sendmmsg) addressed to the
// selected candidate pair's remote address.
//
// It sits in the connection's interceptor chain as the innermost
// interceptor (fastPathTail), just above Pion's SRTP writer: everything
// above it runs as before, for both paths, so the NACK responder keeps its
// history and resends through it (also the RTX stream), and the sender
// report interceptor counts every packet and octet it sends.
//
// The decision is made once per connection, when it first connects (state
// goes from undecided to fast or pion), and never undone: two SRTP contexts
// encrypting one SSRC must agree on its rollover counter, and Pion's is out
// of reach. Until then (before DTLS, without a selected pair) packets go
// through Pion, and the tail tracks each SSRC's extended sequence number so
// that the first packet sent on the fast path continues the rollover counter
// Pion's context used. A connection stays on Pion's path for good when
// its selected pair is relayed at that moment (a relay candidate on either
// side), when batching is off (Config.WrapPacketConn: tests that must see
// every write), or when the keys cannot be had.
//
// After the decision the destination follows the selected pair (ICE
// restarts). The SFU's local candidates are host candidates on the shared
// socket, so the only pair the socket cannot serve is one whose local
// candidate is a relay; packets are then dropped (and counted), not sent
// through Pion with a rollover counter its context does not know.
type fastPath struct {
	conn     *batchConn // nil: batching off, the fast path is never taken
	pc       *webrtc.PeerConnection
	counters *counters

	state atomic.Int32 // fastUndecided, fastOn, fastOff
	dst   atomic.Pointer[netip.AddrPort]

	// streams are the connection's local streams as its interceptors bound
	// them, for writeDirect.
	streams sendStreams

	// gcm, when not nil (an AEAD profile), encrypts the packets header
	// encryption does not change (see encrypt), without ctx; each SSRC's
	// rollover counter is then in rocs, for ctx too. Set before the state
	// becomes fastOn, never changed afterwards.
	gcm       *gcmSender
	cryptexOn atomic.Bool // cryptex is CryptexModeEnabled

	mu      sync.Mutex // guards the fields below
	ctx     *srtp.Context
	hdr     rtp.Header             // scratch for EncryptRTP
	handoff map[uint32]*seqTracker // SSRCs Pion sent before the switch
	cryptex srtp.CryptexMode       // as the last answer applied declared
	rocs    map[uint32]*sendROC    // with gcm: the rollover counter of each SSRC sent
}

const (
	fastUndecided int32 = iota
	fastOn
	fastOff
)

// errNoDirectRoute is a fast-path write while the selected pair cannot be
// reached through the shared socket.
var errNoDirectRoute = errors.New("media: no direct route to the subscriber")

func newFastPath(conn *batchConn, c *counters) *fastPath {
	return &fastPath{conn: conn, counters: c, handoff: make(map[uint32]*seqTracker), rocs: make(map[uint32]*sendROC), streams: sendStreams{m: make(map[uint32]*sendStream)}}
}

// attach watches pc's selected candidate pair. Called once, before pc
// negotiates.
func (f *fastPath) attach(pc *webrtc.PeerConnection) {
	f.pc = pc
	if f.conn == nil {
		f.state.Store(fastOff)
		return
	}
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(f.setPair)
}

// setPair routes fast-path datagrams to pair's remote address, or nowhere
// when the socket cannot reach it.
func (f *fastPath) setPair(pair *webrtc.ICECandidatePair) {
	if dst, ok := directRoute(pair); ok {
		f.dst.Store(&dst)
	} else {
		f.dst.Store(nil)
	}
}

// directRoute is pair's remote address when the shared socket sends on the
// pair (its local candidate is not a relay).
func directRoute(pair *webrtc.ICECandidatePair) (netip.AddrPort, bool) {
	if pair == nil || pair.Local == nil || pair.Remote == nil || pair.Local.Typ == webrtc.ICECandidateTypeRelay {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), pair.Remote.Port), true
}

// decide switches the connection to the fast path when it can be taken, or
// to Pion's path for good; it leaves it undecided while DTLS or ICE is not
// up yet. Called when the connection connects.
func (f *fastPath) decide(log *slog.Logger) {
	if f.state.Load() != fastUndecided {
		return
	}
	ctx, gcm, relayed, err := f.prepare()
	if ctx == nil && err == nil && !relayed {
		log.Debug("subscriber send path undecided: DTLS or ICE not up")
		return // not ready yet: the next connect decides
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state.Load() != fastUndecided {
		return
	}
	if err != nil || relayed {
		f.state.Store(fastOff)
		f.handoff = nil
		log.Info("subscriber send path: Pion", "relayed", relayed, "err", err)
		return
	}
	if err := ctx.UpdateOptions(srtp.Cryptex(f.cryptex)); err != nil {
		f.state.Store(fastOff)
		f.handoff = nil
		log.Info("subscriber send path: Pion", "err", err)
		return
	}
	f.ctx, f.gcm = ctx, gcm
	f.state.Store(fastOn)
	log.Debug("subscriber send path: fast")
}

// prepare returns the connection's outgoing SRTP context, and its AEAD
// sender for an AEAD profile; nil and no error while not ready; relayed
// when the selected pair is a relayed one (the connection then stays on
// Pion's path).
func (f *fastPath) prepare() (ctx *srtp.Context, gcm *gcmSender, relayed bool, err error) {
	dt := f.pc.SCTP().Transport()
	if dt.State() != webrtc.DTLSTransportStateConnected {
		return nil, nil, false, nil
	}
	pair, err := dt.ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil, nil, false, nil
	}
	if pair.Local.Typ == webrtc.ICECandidateTypeRelay || pair.Remote.Typ == webrtc.ICECandidateTypeRelay {
		return nil, nil, true, nil
	}
	rd := f.pc.RemoteDescription()
	if rd == nil {
		return nil, nil, false, nil
	}
	conn := dtlsConn(dt)
	if conn == nil {
		return nil, nil, false, errors.New("media: DTLS connection not reachable")
	}
	ctx, gcm, err = srtpSendContext(conn, !strings.Contains(rd.SDP, "a=setup:passive"))
	if err != nil {
		return nil, nil, false, err
	}
	if dst, ok := directRoute(pair); ok {
		f.dst.CompareAndSwap(nil, &dst) // unless the handler has a newer one
	}
	return ctx, gcm, false, nil
}

// cryptexMode is the header encryption (RFC 9335) Pion's own context uses
// to send on a connection whose remote description is sdp, under the SFU's
// policy (Pion's default, negotiate): enabled when the client declared
// a=cryptex (Pion refuses a description that declares it for some RTP
// sections and not others).
func cryptexMode(sdp string) srtp.CryptexMode {
	if strings.Contains(sdp, "a=cryptex") {
		return srtp.CryptexModeEnabled
	}
	return srtp.CryptexModeDisabled
}

// remoteDescription follows a new remote description of the connection
// (called for every answer applied): the header encryption it declares
// applies to the packets sent from now on, as in Pion's context.
func (f *fastPath) remoteDescription(sdp string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cryptex = cryptexMode(sdp)
	f.cryptexOn.Store(f.cryptex == srtp.CryptexModeEnabled)
	if f.ctx != nil {
		_ = f.ctx.UpdateOptions(srtp.Cryptex(f.cryptex))
	}
}

// dtlsConn is the DTLS connection of t. Pion does not export it; its field
// is read once DTLS has connected (t.State took t's lock after the
// connection was stored under it). nil when this Pion version has no such
// field (TestFastPathDecryptsAtSubscriber then fails).
func dtlsConn(t *webrtc.DTLSTransport) *dtls.Conn {
	v := reflect.ValueOf(t).Elem().FieldByName("conn")
	if !v.IsValid() || v.Type() != reflect.TypeFor[*dtls.Conn]() {
		return nil
	}
	return *(**dtls.Conn)(unsafe.Pointer(v.UnsafeAddr()))
}

// srtpSendContext derives the local SRTP keys of conn as Pion does (RFC
// 5764 section 4.2 keying material, with the negotiated profile), and for
// an AEAD profile also the fast path's own sender (gcmSender). The SFU is
// the subscriber connection's DTLS server unless the client's answer took
// the passive role.
func srtpSendContext(conn *dtls.Conn, server bool) (*srtp.Context, *gcmSender, error) {
	dp, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, nil, errors.New("media: no SRTP profile negotiated")
	}
	var profile srtp.ProtectionProfile
	switch dp {
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		profile = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, nil, errors.New("media: unsupported SRTP profile")
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, nil, errors.New("media: no DTLS state")
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, !server); err != nil {
		return nil, nil, err
	}
	return sendKeys(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile)
}

// sendKeys is the SRTP context of a master key and salt, and the AEAD
// sender for an AEAD profile (nil for the others).
func sendKeys(key, salt []byte, profile srtp.ProtectionProfile) (*srtp.Context, *gcmSender, error) {
	ctx, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		return nil, nil, err
	}
	if profile != srtp.ProtectionProfileAeadAes128Gcm && profile != srtp.ProtectionProfileAeadAes256Gcm {
		return ctx, nil, nil
	}
	gcm, err := newGCMSender(key, salt)
	if err != nil {
		return nil, nil, err
	}
	return ctx, gcm, nil
}

// seqTracker follows one SSRC's extended sequence number on Pion's path
// (RFC 3550 A.1, as SRTP's rollover counter).
type seqTracker struct {
	index uint64
}

func newSeqTracker(seq uint16) *seqTracker { return &seqTracker{index: uint64(seq)} }

// ext is seq's extended sequence number, taken as the closest one to the
// highest seen.
func (t *seqTracker) ext(seq uint16) uint64 {
	diff := int64(int16(seq - uint16(t.index)))
	if ext := int64(t.index) + diff; ext >= 0 {
		return uint64(ext)
	}
	return uint64(seq)
}

func (t *seqTracker) update(seq uint16) {
	if ext := t.ext(seq); ext > t.index {
		t.index = ext
	}
}

// datagramPool holds the buffers fast-path datagrams are encrypted into: a
// buffer is owned by one write from encryption until the socket (or the
// batch, which copies it) has it.
var datagramPool = sync.Pool{New: func() any {
	b := make([]byte, 1500)
	return &b
}}

// write sends one RTP packet on the fast path; handled is false when the
// connection is not on it (the caller writes through Pion). batch, when
// not nil, is the batch h.SSRC is registered with (the caller knows it):
// no look-up by SSRC.
func (f *fastPath) write(h *rtp.Header, payload []byte, batch *sendBatch) (handled bool, n int, err error) {
	return f.writeROC(h, payload, batch, nil)
}

// writeROC is write with h.SSRC's rollover counter when the caller has it
// (roc, with gcm), else nil.
func (f *fastPath) writeROC(h *rtp.Header, payload []byte, batch *sendBatch, roc *sendROC) (handled bool, n int, err error) {
	switch f.state.Load() {
	case fastOff:
		return false, 0, nil
	case fastUndecided:
		f.mu.Lock()
		state := f.state.Load()
		if state == fastUndecided {
			if t := f.handoff[h.SSRC]; t != nil {
				t.update(h.SequenceNumber)
			} else {
				f.handoff[h.SSRC] = newSeqTracker(h.SequenceNumber)
			}
		}
		f.mu.Unlock()
		if state != fastOn {
			return false, 0, nil
		}
	}
	dst := f.dst.Load()
	if dst == nil {
		f.counters.fastDropped.Add(1)
		return true, 0, errNoDirectRoute
	}
	//lint:ignore SA1019 the writer's (header, payload) form, as srtp.SessionSRTP marshals it
	hdrLen, size := rtp.HeaderAndPacketMarshalSize(h, payload)
	// Inside a fan-out the datagram is encrypted straight into its slot
	// of the open batch (no copy); otherwise into a pooled buffer, written
	// at once.
	if b := f.conn.lockBatch(h.SSRC, batch); b != nil {
		defer b.mu.Unlock()
		out, err := f.encrypt(b.slotLocked(size+srtpOverhead), h, payload, hdrLen, size, roc)
		if err != nil {
			return true, 0, err
		}
		b.commitLocked(out, *dst, &f.counters.fastOut)
		return true, len(payload), nil
	}
	bp := datagramPool.Get().(*[]byte)
	defer datagramPool.Put(bp)
	buf := *bp
	if cap(buf) < size+srtpOverhead {
		buf = make([]byte, size+srtpOverhead)
		*bp = buf
	}
	out, err := f.encrypt(buf[:cap(buf)], h, payload, hdrLen, size, roc)
	if err != nil {
		return true, 0, err
	}
	if _, err := f.conn.WriteToAddrPort(out, *dst); err != nil {
		return true, 0, err
	}
	f.counters.fastOut.Add(1)
	return true, len(payload), nil
}

// srtpOverhead is room enough for what SRTP appends to a packet (the
// authentication tag: 16 bytes with AEAD, 10 with HMAC-SHA1-80).
const srtpOverhead = 32

// encrypt marshals (h, payload), size bytes of which hdrLen of header,
// into buf and encrypts it in place; buf has room for the authentication
// tag. roc is h.SSRC's rollover counter when the caller has it (with gcm).
func (f *fastPath) encrypt(buf []byte, h *rtp.Header, payload []byte, hdrLen, size int, roc *sendROC) ([]byte, error) {
	// With header encryption (RFC 9335) a packet with neither header
	// extension nor CSRC (every forwarded one: fanOut strips the
	// extensions) is encrypted as without it.
	if f.gcm != nil && h.PaddingSize == 0 && (!f.cryptexOn.Load() || (!h.Extension && len(h.CSRC) == 0)) {
		// Only the header is marshalled: AES-GCM reads the payload where
		// it is and writes the ciphertext after the header (no copy of
		// the payload into buf first).
		if _, err := h.MarshalTo(buf); err != nil {
			return nil, err
		}
		if roc == nil {
			roc = f.roc(h.SSRC, h.SequenceNumber)
		}
		return f.gcm.sealFrom(roc, buf, hdrLen, payload, h.SSRC, h.SequenceNumber), nil
	}
	//lint:ignore SA1019 as in write
	if _, err := rtp.MarshalPacketTo(buf, h, payload); err != nil {
		return nil, err
	}
	if f.gcm != nil {
		if roc == nil {
			roc = f.roc(h.SSRC, h.SequenceNumber)
		}
		if !f.cryptexOn.Load() || (!h.Extension && len(h.CSRC) == 0) {
			return f.gcm.seal(roc, buf, hdrLen, size, h.SSRC, h.SequenceNumber), nil
		}
		// Header encryption that changes the packet: Pion's context, at
		// this SSRC's counter.
		roc.mu.Lock()
		defer roc.mu.Unlock()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.ctx.SetROC(h.SSRC, uint32(roc.t.ext(h.SequenceNumber)>>16))
		roc.t.update(h.SequenceNumber)
		return f.ctx.EncryptRTP(buf, buf[:size], &f.hdr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.handoff) > 0 {
		if t := f.handoff[h.SSRC]; t != nil {
			// Continue the rollover counter of Pion's context.
			f.ctx.SetROC(h.SSRC, uint32(t.ext(h.SequenceNumber)>>16))
			delete(f.handoff, h.SSRC)
		}
	}
	return f.ctx.EncryptRTP(buf, buf[:size], &f.hdr)
}

// roc is the rollover counter of ssrc (with gcm), made at its first packet
// on the fast path, seq: it continues Pion's context's when Pion sent
// the SSRC before the switch.
func (f *fastPath) roc(ssrc uint32, seq uint16) *sendROC {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rocs[ssrc]
	if r == nil {
		r = &sendROC{t: seqTracker{index: uint64(seq)}}
		if t := f.handoff[ssrc]; t != nil {
			r.t = *t
			delete(f.handoff, ssrc)
		}
		f.rocs[ssrc] = r
	}
	return r
}

// rolloverCounter is the rollover counter ssrc's last packet sent on the
// fast path had (for tests).
func (f *fastPath) rolloverCounter(ssrc uint32) uint32 {
	if f.gcm == nil {
		roc, _ := f.ctx.ROC(ssrc)
		return roc
	}
	f.mu.Lock()
	r := f.rocs[ssrc]
	f.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint32(r.t.index >> 16)
}

// fastPathTail is the innermost interceptor of a subscriber connection:
// each of its local streams writes through the fast path when the
// connection is on it, else on to Pion's SRTP writer.
type fastPathTail struct {
	interceptor.NoOp
	f *fastPath
}

func (t *fastPathTail) NewInterceptor(string) (interceptor.Interceptor, error) { return t, nil }

func (t *fastPathTail) BindLocalStream(_ *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if handled, n, err := t.f.write(h, payload, nil); handled {
			return n, err
		}
		return writer.Write(h, payload, a)
	})
}

// sendStreams is a subscriber connection's local streams, by SSRC, as the
// SFU's interceptors bound them: the NACK responder's history and the
// sender reports' counts. With them a fan-out on the fast path does for a
// packet what the interceptor chain above fastPathTail does (writeDirect)
// without writing through it.
type sendStreams struct {
	mu sync.Mutex // guards m
	m  map[uint32]*sendStream
}

// sendStream is one local stream's interceptor state; not modified once
// reports is set (the sender reports are bound last: outermost).
type sendStream struct {
	nack    *nackStream // nil: the stream negotiated no NACK
	reports *srStream
	// roc is the stream's rollover counter (with gcm), found at its first
	// direct write.
	roc atomic.Pointer[sendROC]
}

// setNack records the NACK history of a stream being bound.
func (r *sendStreams) setNack(ssrc uint32, n *nackStream) {
	r.mu.Lock()
	r.m[ssrc] = &sendStream{nack: n}
	r.mu.Unlock()
}

// setReports records the sender report state of a stream being bound,
// which completes it.
func (r *sendStreams) setReports(ssrc uint32, rep *srStream) {
	r.mu.Lock()
	s := &sendStream{reports: rep}
	if old := r.m[ssrc]; old != nil && old.reports == nil {
		s.nack = old.nack
	}
	r.m[ssrc] = s
	r.mu.Unlock()
}

// remove forgets a stream being unbound.
func (r *sendStreams) remove(ssrc uint32) {
	r.mu.Lock()
	delete(r.m, ssrc)
	r.mu.Unlock()
}

// lookup is ssrc's stream once its whole chain is bound; else nil.
func (r *sendStreams) lookup(ssrc uint32) *sendStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.m[ssrc]; s != nil && s.reports != nil {
		return s
	}
	return nil
}

// writeDirect sends one forwarded packet of s on the fast path, doing
// first what the chain above fastPathTail does for it: the sender reports
// count it (now is the fan-out's time), the NACK responder keeps it (in
// hist, the track's shared history that the fan-out wrote it to, when not
// nil). handled is false when the connection is not on the fast path (the
// caller writes through the chain). batch is the fan-out's batch, which
// h.SSRC is registered with.
func (f *fastPath) writeDirect(s *sendStream, batch *sendBatch, hist *trackHistory, h *rtp.Header, payload []byte, now time.Time) (handled bool, err error) {
	if f.state.Load() != fastOn {
		return false, nil
	}
	s.reports.count(h, len(payload), now)
	if s.nack != nil {
		if hist != nil {
			s.nack.share(hist, h)
		} else {
			s.nack.record(h, payload)
		}
	}
	var roc *sendROC
	if f.gcm != nil {
		if roc = s.roc.Load(); roc == nil {
			roc = f.roc(h.SSRC, h.SequenceNumber)
			s.roc.Store(roc)
		}
	}
	_, _, err = f.writeROC(h, payload, batch, roc)
	return true, err
}
