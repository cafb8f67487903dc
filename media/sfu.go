package media

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/logging"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media/internal/pionlog"
)

// MaxIDLength bounds room and participant IDs.
const MaxIDLength = 64

// SFU forwards the audio and video published by each participant of a room
// to every other participant of that room. All peers share one UDP port.
//
// Locks: SFU.mu guards rooms and closed. It is never held while calling into
// Pion, a participant or a callback, and no other lock is taken while it is
// held. Participant.mu and publishedTrack.mu are never held together; the
// innermost lock is Participant.outMu (the outgoing event queue), which may
// be taken under Participant.mu.
type SFU struct {
	cfg Config
	log *slog.Logger
	// pubAPI makes publisher connections, sub subscriber connections:
	// each runs only the interceptors its direction needs.
	pubAPI publisherAPI
	sub    subscriberAPI
	mux    ice.UDPMux
	conn   net.PacketConn
	batch  *batchConn // nil when Config.WrapPacketConn is set
	cert   webrtc.Certificate

	counters counters

	mu     sync.Mutex
	rooms  map[string]*room
	closed bool

	// events counts the participants' event goroutines; Close waits for it.
	// Add is only called under mu while closed is false.
	events sync.WaitGroup
}

// room is the set of participants sharing media, and the tracks they
// publish. Guarded by SFU.mu.
type room struct {
	id           string
	participants map[string]*Participant
	tracks       map[*publishedTrack]struct{}
}

// New opens the shared UDP port and returns a running SFU. log receives the
// SFU's own messages and Pion's warnings and errors.
func New(cfg Config, log *slog.Logger) (*SFU, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "media")

	var ip net.IP
	if cfg.ListenIP != "" {
		ip = net.ParseIP(cfg.ListenIP)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: cfg.UDPPort})
	if err != nil {
		return nil, fmt.Errorf("media: listen udp: %w", err)
	}
	if err := conn.SetReadBuffer(cfg.UDPReadBuffer); err != nil {
		log.Warn("udp receive buffer not set", "bytes", cfg.UDPReadBuffer, "err", err)
	}

	// The fan-out's datagrams leave in batches through batchConn, unless a
	// wrapper must see every write (tests that cut the network).
	var pc net.PacketConn
	var batch *batchConn
	if cfg.WrapPacketConn != nil {
		pc = cfg.WrapPacketConn(conn)
	} else {
		batch = newBatchConn(conn)
		pc = batch
	}
	pionLogs := pionlog.Factory(log, slog.LevelWarn)
	mux := webrtc.NewICEUDPMux(pionLogs.NewLogger("udpmux"), pc)

	pubAPI, subAPI, err := newAPIs(cfg, mux, pionLogs)
	if err != nil {
		_ = mux.Close()
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		_ = mux.Close()
		return nil, fmt.Errorf("media: dtls key: %w", err)
	}
	cert, err := webrtc.GenerateCertificate(key)
	if err != nil {
		_ = mux.Close()
		return nil, fmt.Errorf("media: dtls certificate: %w", err)
	}

	subAPI.reports = newReportClock(senderReportInterval)
	s := &SFU{
		cfg:    cfg,
		log:    log,
		pubAPI: pubAPI,
		sub:    subAPI,
		mux:    mux,
		conn:   conn,
		batch:  batch,
		cert:   *cert,
		rooms:  make(map[string]*room),
	}
	log.Info("sfu started", "udp", conn.LocalAddr().String())
	return s, nil
}

// newAPIs builds the webrtc.APIs of the SFU's publisher and subscriber
// connections: default codecs, the interceptors each direction uses (see
// registerInterceptors), the shared UDP mux, and no mDNS.
func newAPIs(cfg Config, mux ice.UDPMux, logs logging.LoggerFactory) (publisher publisherAPI, subscriber subscriberAPI, err error) {
	se := webrtc.SettingEngine{LoggerFactory: logs}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	// The fan-out encrypts each packet once per subscriber. AES-128-GCM is
	// the cheapest profile with AES-NI (10 rounds against AES-256's 14, and
	// no HMAC): preferred where the SFU is the DTLS server, as on subscriber
	// connections (Pion's default order starts with AES-256-GCM).
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	// Pion waits 2 s before nominating a pair with a relay candidate (the
	// SFU nominates on the subscriber connection), in case a direct one
	// validates later: that delayed every relayed client's first frame by
	// 2 s. A relay pair validates first only when the direct ones cannot
	// (the TURN server is as far away as the SFU, and a relayed check takes
	// more round trips), and browsers, which nominate on the publisher
	// connection, do not wait either.
	se.SetRelayAcceptanceMinWait(0)
	if len(cfg.NAT1To1IPs) > 0 {
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.NAT1To1IPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		})
		if err != nil {
			return publisherAPI{}, subscriberAPI{}, fmt.Errorf("%w: NAT1To1IPs: %v", ErrInvalidConfig, err)
		}
	}
	if cfg.ICEDisconnectedTimeout > 0 || cfg.ICEFailedTimeout > 0 || cfg.ICEKeepaliveInterval > 0 {
		se.SetICETimeouts(
			orDefault(cfg.ICEDisconnectedTimeout, pionICEDisconnectedTimeout),
			orDefault(cfg.ICEFailedTimeout, pionICEFailedTimeout),
			orDefault(cfg.ICEKeepaliveInterval, pionICEKeepaliveInterval),
		)
	}

	// Pion gives a candidate pair up after 8 unanswered checks (1.6 s) and
	// never checks it again. After an ICE restart during an outage longer
	// than that, the client's own checks are answered once the network is
	// back (a browser's side then says "connected" and restarts no more)
	// while the SFU's side stays "connecting" until ICE fails. Checking
	// pairs for as long as ICE may take to fail avoids that.
	se.SetICEMaxBindingRequests(iceMaxBindingRequests(cfg))

	build := func(publisher bool) (*webrtc.MediaEngine, []interceptor.Factory, error) {
		m := &webrtc.MediaEngine{}
		if err := m.RegisterDefaultCodecs(); err != nil {
			return nil, nil, fmt.Errorf("media: codecs: %w", err)
		}
		factories, err := registerInterceptors(m, publisher)
		if err != nil {
			return nil, nil, fmt.Errorf("media: interceptors: %w", err)
		}
		return m, factories, nil
	}
	m, factories, err := build(true)
	if err != nil {
		return publisherAPI{}, subscriberAPI{}, err
	}
	publisher = publisherAPI{se: se, media: m, factories: factories}
	m, factories, err = build(false)
	if err != nil {
		return publisherAPI{}, subscriberAPI{}, err
	}
	return publisher, subscriberAPI{se: se, media: m, factories: factories}, nil
}

// publisherAPI makes publisher connections. Each gets an API of its own
// whose receive chain starts with rxSource (innermost, in the place of
// Pion's SRTP reader) and ends with rxCapture (outermost), so that the
// connection's fast receive path runs the same interceptors Pion would.
type publisherAPI struct {
	se        webrtc.SettingEngine
	media     *webrtc.MediaEngine
	factories []interceptor.Factory
}

// newPeerConnection makes a publisher connection that receives through r.
func (a publisherAPI) newPeerConnection(cfg webrtc.Configuration, r *rxPath) (*webrtc.PeerConnection, error) {
	ir := &interceptor.Registry{}
	ir.Add(&rxSource{})
	for _, fac := range a.factories {
		ir.Add(fac)
	}
	ir.Add(&rxCapture{r: r})
	api := webrtc.NewAPI(webrtc.WithSettingEngine(a.se), webrtc.WithMediaEngine(a.media), webrtc.WithInterceptorRegistry(ir))
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, err
	}
	r.attach(pc)
	return pc, nil
}

// subscriberAPI makes subscriber connections. Each gets an API of its own
// (a few words: the media engine is copied by every new connection
// anyway) whose innermost interceptor is the connection's fastPath.
type subscriberAPI struct {
	se        webrtc.SettingEngine
	media     *webrtc.MediaEngine
	factories []interceptor.Factory
	reports   *reportClock // sends every connection's sender reports
}

// newPeerConnection makes a subscriber connection that sends through f.
func (a subscriberAPI) newPeerConnection(cfg webrtc.Configuration, f *fastPath) (*webrtc.PeerConnection, error) {
	ir := &interceptor.Registry{}
	ir.Add(&fastPathTail{f: f}) // first: innermost, just above SRTP
	for _, fac := range a.factories {
		ir.Add(fac)
	}
	// The NACK responder, then the sender reports (outermost): both add
	// their streams to the connection's registry (fastPath.writeDirect).
	ir.Add(nackResponderFactory{reg: &f.streams})
	ir.Add(senderReportsFactory{reg: &f.streams, clock: a.reports})
	api := webrtc.NewAPI(webrtc.WithSettingEngine(a.se), webrtc.WithMediaEngine(a.media), webrtc.WithInterceptorRegistry(ir))
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, err
	}
	f.attach(pc)
	return pc, nil
}

// registerInterceptors registers, in the order of
// webrtc.RegisterDefaultInterceptors, the part of Pion's defaults that one
// direction of the SFU uses. Both directions negotiate the same: NACK and
// PLI feedback for video, the simulcast header extensions, TWCC (header
// extension and feedback).
//
// A publisher connection only receives media: NACK generator, RTCP receiver
// reports, TWCC feedback. A subscriber connection only sends media: the NACK
// responder and RTCP sender reports, the SFU's own in the place of Pion's
// (nackResponder, senderReports; subscriberAPI adds them per connection); it runs no NACK generator, whose 100 ms timer would tick for nothing on
// every subscriber connection. Neither runs the stats interceptor: it only
// feeds PeerConnection.GetStats's RTP stream figures, which the SFU never
// reads, at a locked update per packet in each direction (7 % of the
// server's CPU in the fan-out's profile).
func registerInterceptors(m *webrtc.MediaEngine, publisher bool) ([]interceptor.Factory, error) {
	var factories []interceptor.Factory
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	if publisher {
		generator, err := nack.NewGeneratorInterceptor()
		if err != nil {
			return nil, err
		}
		factories = append(factories, generator)
		receiverReports, err := report.NewReceiverInterceptor()
		if err != nil {
			return nil, err
		}
		factories = append(factories, receiverReports)
	}
	// A subscriber connection's NACK responder and sender reports are the
	// SFU's own (nackResponder, senderReports), added per connection by
	// subscriberAPI.newPeerConnection.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
		return nil, err
	}
	// TWCC's negotiation, as webrtc.ConfigureTWCCSender; only publisher
	// connections, which receive media, run its feedback interceptor.
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, kind)
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return nil, err
		}
	}
	if publisher {
		feedback, err := twcc.NewSenderInterceptor()
		if err != nil {
			return nil, err
		}
		factories = append(factories, feedback)
	}
	return factories, nil
}

// Pion's ICE timer defaults, used when only some timers are configured.
const (
	pionICEDisconnectedTimeout = 5 * time.Second
	pionICEFailedTimeout       = 25 * time.Second
	pionICEKeepaliveInterval   = 2 * time.Second
)

// pionICECheckInterval is how often Pion checks a pair while ICE is
// checking.
const pionICECheckInterval = 200 * time.Millisecond

// iceMaxBindingRequests is how many unanswered checks of a pair the SFU
// sends before it gives the pair up: as many as fit in the time ICE may
// check before it fails (the disconnected and failed timeouts).
func iceMaxBindingRequests(cfg Config) uint16 {
	checking := orDefault(cfg.ICEDisconnectedTimeout, pionICEDisconnectedTimeout) + orDefault(cfg.ICEFailedTimeout, pionICEFailedTimeout)
	return uint16(min(checking/pionICECheckInterval, math.MaxUint16))
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// UDPAddr is the address of the shared media port.
func (s *SFU) UDPAddr() *net.UDPAddr {
	addr, _ := s.conn.LocalAddr().(*net.UDPAddr)
	return addr
}

// ICEServers returns the STUN/TURN servers to hand to clients.
func (s *SFU) ICEServers() []ICEServer {
	out := make([]ICEServer, len(s.cfg.ICEServers))
	for i, srv := range s.cfg.ICEServers {
		out[i] = ICEServer{URLs: append([]string(nil), srv.URLs...), Username: srv.Username, Credential: srv.Credential}
	}
	return out
}

// Close removes every participant (each gets OnGone(Left)), waits for their
// goroutines and callbacks to finish, and closes the UDP port. It must not be
// called from a participant callback. Calling it again returns nil.
func (s *SFU) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var all []*Participant
	for _, r := range s.rooms {
		for _, p := range r.participants {
			all = append(all, p)
		}
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.shutdown(Left)
		}()
	}
	wg.Wait()
	s.events.Wait()
	s.sub.reports.close()
	err := s.mux.Close()
	s.log.Info("sfu closed")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("media: close udp mux: %w", err)
	}
	return nil
}

// Join adds a participant to a room, creating the room if needed, and starts
// negotiating its subscriber connection: the first Signal sent through
// opts.Send is the SFU's offer for it. The participant subscribes to every
// track already published in the room. If opts.CanPublish is true the client
// may then offer its publisher connection.
func (s *SFU) Join(roomID, participantID string, opts JoinOptions) (*Participant, error) {
	if err := validateID(roomID); err != nil {
		return nil, fmt.Errorf("room: %w", err)
	}
	if err := validateID(participantID); err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	if opts.Send == nil {
		return nil, fmt.Errorf("%w: JoinOptions.Send is required", ErrInvalidConfig)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}

	p, err := newParticipant(s, roomID, participantID, opts)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.abandon()
		return nil, ErrClosed
	}
	r := s.rooms[roomID]
	if r == nil {
		r = &room{id: roomID, participants: make(map[string]*Participant), tracks: make(map[*publishedTrack]struct{})}
		s.rooms[roomID] = r
	}
	if _, dup := r.participants[participantID]; dup {
		s.mu.Unlock()
		p.abandon()
		return nil, fmt.Errorf("%w: %q in room %q", ErrDuplicateParticipant, participantID, roomID)
	}
	r.participants[participantID] = p
	existing := make([]*publishedTrack, 0, len(r.tracks))
	for t := range r.tracks {
		existing = append(existing, t)
	}
	s.events.Add(1)
	s.mu.Unlock()

	go p.runEvents()
	for _, t := range existing {
		p.addDownTrack(t)
	}
	p.offer()
	p.log.Info("joined", "can_publish", opts.CanPublish, "existing_tracks", len(existing))
	return p, nil
}

// removeParticipant takes p out of its room and deletes the room when it
// becomes empty. Tracks p published stay listed until their forwarders end.
func (s *SFU) removeParticipant(p *Participant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[p.roomID]
	if r == nil || r.participants[p.id] != p {
		return
	}
	delete(r.participants, p.id)
	if len(r.participants) == 0 {
		delete(s.rooms, r.id)
	}
}

// addTrack lists t in its publisher's room and returns the participants who
// must subscribe to it. ok is false when the publisher already left.
func (s *SFU) addTrack(t *publishedTrack) (subscribers []*Participant, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[t.owner.roomID]
	if r == nil || r.participants[t.owner.id] != t.owner {
		return nil, false
	}
	r.tracks[t] = struct{}{}
	t.room = r
	for _, p := range r.participants {
		if p != t.owner {
			subscribers = append(subscribers, p)
		}
	}
	return subscribers, true
}

// removeTrack unlists t from its room.
func (s *SFU) removeTrack(t *publishedTrack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.room != nil {
		delete(t.room.tracks, t)
	}
}

// Stats is a snapshot of the SFU's counters. Packet and byte counters only
// grow; the others are current values.
type Stats struct {
	Rooms           int
	Participants    int
	PublishedTracks int

	// PacketsIn and BytesIn count RTP read from publishers.
	PacketsIn uint64
	BytesIn   uint64
	// PacketsOut and BytesOut count RTP written to subscriber tracks.
	PacketsOut uint64
	BytesOut   uint64
	// KeyframeRequestsIn counts PLI and FIR received from subscribers;
	// KeyframeRequestsOut counts PLIs sent to publishers after throttling
	// (including the one sent when a subscriber is added).
	KeyframeRequestsIn  uint64
	KeyframeRequestsOut uint64
	// PacketsOutFast counts RTP datagrams (forwarded, and resent on NACK)
	// sent by the fast path, outside Pion's SRTP session (fastpath.go);
	// PacketsDroppedFast those it dropped because the selected pair could
	// not be reached through the shared socket.
	PacketsOutFast     uint64
	PacketsDroppedFast uint64
	// PacketsInFast counts RTP packets from publishers received by the
	// fast receive path (rxfast.go, RTX included), outside Pion's ICE
	// connection and SRTP session; PacketsInFastDropped those it dropped
	// (authentication failed, malformed); PacketsInFastReplayed the replays
	// it dropped (a packet already received: Pion's session drops them the
	// same way). A publisher's NACK responder resends the same stored RTX
	// packet on every NACK for a packet, and the NACK generator, which sees
	// the main stream only, goes on asking for a packet RTX repaired, so
	// replays are expected whenever packets are lost and repaired.
	PacketsInFast         uint64
	PacketsInFastDropped  uint64
	PacketsInFastReplayed uint64
	// PacketsInQueueDropped counts packets of the fast receive path
	// dropped because the track's forwarder queue was full (the socket's
	// reader never waits for a forwarder).
	PacketsInQueueDropped uint64
}

type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut atomic.Uint64
	keyframeRequestsIn, keyframeRequestsOut  atomic.Uint64
	fastOut, fastDropped                     atomic.Uint64
	fastIn, fastInDropped, fastInReplayed    atomic.Uint64
	fastInQueueDropped                       atomic.Uint64
}

// Stats returns the SFU's counters.
func (s *SFU) Stats() Stats {
	st := Stats{
		PacketsIn:             s.counters.packetsIn.Load(),
		BytesIn:               s.counters.bytesIn.Load(),
		PacketsOut:            s.counters.packetsOut.Load(),
		BytesOut:              s.counters.bytesOut.Load(),
		KeyframeRequestsIn:    s.counters.keyframeRequestsIn.Load(),
		KeyframeRequestsOut:   s.counters.keyframeRequestsOut.Load(),
		PacketsOutFast:        s.counters.fastOut.Load(),
		PacketsDroppedFast:    s.counters.fastDropped.Load(),
		PacketsInFast:         s.counters.fastIn.Load(),
		PacketsInFastDropped:  s.counters.fastInDropped.Load(),
		PacketsInFastReplayed: s.counters.fastInReplayed.Load(),
		PacketsInQueueDropped: s.counters.fastInQueueDropped.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Rooms = len(s.rooms)
	for _, r := range s.rooms {
		st.Participants += len(r.participants)
		st.PublishedTracks += len(r.tracks)
	}
	return st
}

// validateID accepts 1 to MaxIDLength SDP token characters (RFC 4566), so
// that a participant ID can be used as a stream ID in SDP as is.
func validateID(id string) error {
	if id == "" || len(id) > MaxIDLength {
		return fmt.Errorf("%w: length %d", ErrInvalidID, len(id))
	}
	for i := 0; i < len(id); i++ {
		if !isTokenChar(id[i]) {
			return fmt.Errorf("%w: character %q", ErrInvalidID, id[i])
		}
	}
	return nil
}

// isTokenChar reports whether c is an RFC 4566 token-char.
func isTokenChar(c byte) bool {
	switch {
	case c == 0x21, c >= 0x23 && c <= 0x27, c == 0x2A, c == 0x2B, c == 0x2D, c == 0x2E:
		return true
	case c >= 0x30 && c <= 0x39, c >= 0x41 && c <= 0x5A, c >= 0x5E && c <= 0x7E:
		return true
	}
	return false
}
