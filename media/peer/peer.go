// Package peer is a Go WebRTC client for the media SFU, used by tests and
// benchmarks. A Peer publishes synthetic VP8 video and Opus audio on its
// publisher connection (it offers there) and receives other participants'
// tracks on its subscriber connection (it answers the SFU's offers there),
// counting what arrives per remote track.
package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/internal/pionlog"
)

// Defaults for zero Config fields.
const (
	DefaultListenIP         = "127.0.0.1"
	DefaultVideoBitrate     = 300_000
	DefaultVideoFPS         = 30
	DefaultKeyframeInterval = 2 * time.Second
	// DefaultKeyframeRequestInterval is how long a received video track may
	// go without a keyframe before the peer asks for one.
	DefaultKeyframeRequestInterval = 250 * time.Millisecond
	// DefaultICERestartAfter is how long a connection may stay disconnected
	// (or not connected again after a restart) before the peer restarts ICE.
	DefaultICERestartAfter = 2 * time.Second
	// audioFrameBytes is the Opus payload per 20 ms frame (about 26 kbit/s).
	audioFrameBytes = 64
	audioFrameTime  = 20 * time.Millisecond
	// MaxVideoPayload is the largest RTP payload of the synthetic video: a
	// frame is split into packets of at most this many bytes (the VP8
	// payload descriptor included).
	MaxVideoPayload = 1100
)

// Config configures a Peer.
type Config struct {
	// ListenIP is the address of the peer's one UDP socket; its only host
	// candidate. Default DefaultListenIP.
	ListenIP string
	// IncludeLoopback must be true when ListenIP is a loopback address.
	IncludeLoopback bool
	// ICEServers are used for the peer's own gathering.
	ICEServers []webrtc.ICEServer
	// ICETransportPolicy ICETransportPolicyRelay gathers and uses only relay
	// candidates (through ICEServers' TURN servers), as a browser's
	// iceTransportPolicy "relay"; zero: all.
	ICETransportPolicy webrtc.ICETransportPolicy

	// Audio and Video select the tracks published. With both false the peer
	// has no publisher connection (an audience member).
	Audio bool
	Video bool
	// NoSyntheticMedia publishes the tracks Audio and Video select but
	// writes nothing to them: the caller writes its own RTP with WriteRTP
	// (PLIsReceived counts the keyframe requests it should honour).
	NoSyntheticMedia bool
	// VideoBitrate in bit/s, VideoFPS frames per second.
	VideoBitrate int
	VideoFPS     int
	// KeyframeInterval is the period of unsolicited keyframes; a PLI or FIR
	// from the SFU makes the next frame a keyframe at once.
	KeyframeInterval time.Duration

	// KeyframeRequestInterval: like a browser, the peer sends a PLI for a
	// received video track that has delivered packets but no keyframe for
	// this long, and repeats it at this interval until a keyframe arrives.
	// Default DefaultKeyframeRequestInterval. NoKeyframeRequests turns this
	// off, so that only the SFU's own keyframe requests remain (tests of the
	// SFU's PLI on subscribe).
	KeyframeRequestInterval time.Duration
	NoKeyframeRequests      bool

	// ICERestartAfter: like the JS SDK, the peer restarts ICE on a
	// connection that failed at once, and on one that stays disconnected
	// this long; it tries again every ICERestartAfter until the connection
	// is back. Default DefaultICERestartAfter. NoICERestart turns this off
	// (RestartICE still works).
	ICERestartAfter time.Duration
	NoICERestart    bool
	// ICEDisconnectedTimeout, ICEFailedTimeout and ICEKeepaliveInterval are
	// Pion's ICE timers; 0 keeps Pion's defaults (5 s, 25 s, 2 s). Tests
	// shorten them to notice a cut network quickly.
	ICEDisconnectedTimeout time.Duration
	ICEFailedTimeout       time.Duration
	ICEKeepaliveInterval   time.Duration

	// OnSendRTP, when set, is called with every RTP packet of the synthetic
	// media just before the peer writes it, in the sending goroutine; kind
	// is "audio" or "video". It may change the packet: header fields and the
	// payload (in place, or a new one, e.g. with a trailer appended). The
	// SSRC and payload type are set when the packet is written.
	OnSendRTP func(kind string, pkt *rtp.Packet)
	// OnReceiveRTP, when set, is called with every RTP packet received on
	// the subscriber connection, in the track's reading goroutine, with the
	// time it was read. pkt is only valid during the call.
	OnReceiveRTP func(key TrackKey, pkt *rtp.Packet, at time.Time)
	// OnPublisherRTCP, when set, is called with the RTCP each published
	// track's sender reads (the SFU's NACKs, receiver reports, TWCC
	// feedback, keyframe requests), in the sender's reading goroutine;
	// kind is "audio" or "video".
	OnPublisherRTCP func(kind string, pkts []rtcp.Packet)

	Logger *slog.Logger
}

// TrackKey names a received track: StreamID is the publisher's participant
// ID (the SFU sets the stream ID to it), Kind is "audio" or "video".
type TrackKey struct {
	StreamID string
	Kind     string
}

// TrackStats counts what arrived on one received track. Counters sum over
// every track received under the same key (a re-published track continues
// them).
type TrackStats struct {
	TrackID   string
	Packets   uint64
	Bytes     uint64 // RTP payload bytes
	Keyframes uint64 // VP8 keyframes started (video only)
	// Started is when the track appeared (Pion reports a track with its
	// first packet). FirstPacket and FirstKeyframe are zero until then.
	Started       time.Time
	FirstPacket   time.Time
	FirstKeyframe time.Time
	// Ended is true once the track ended (removed by the SFU or connection
	// closed) and no newer track under this key is running.
	Ended bool
}

// Peer is one client. Its methods are safe for concurrent use.
type Peer struct {
	cfg  Config
	send func(media.Signal)
	log  *slog.Logger

	// Each connection has its own UDP socket, as in a browser: the SFU's
	// shared port tells connections apart by the client's address.
	conns []*CuttableConn // appended under mu
	muxes []ice.UDPMux
	// pub is the publisher connection, nil while publishing nothing
	// (StartPublishing, StopPublishing change it, holding negMu and mu);
	// pubStop is closed when it is taken down; video and audio are its
	// tracks (nil: not published). All four are guarded by mu.
	pub     *webrtc.PeerConnection
	pubStop chan struct{}
	video   *webrtc.TrackLocalStaticRTP
	audio   *webrtc.TrackLocalStaticRTP
	sub     *webrtc.PeerConnection
	ip      net.IP
	logs    logging.LoggerFactory

	forceKeyframe atomic.Bool
	iceRestarts   atomic.Uint64
	plisReceived  atomic.Uint64
	keyframesSent atomic.Uint64
	plisSent      atomic.Uint64

	// negMu serialises HandleSignal's negotiation steps.
	negMu         sync.Mutex
	pendingRemote map[media.Target][]webrtc.ICECandidateInit

	// sigMu orders outgoing signals: candidates wait for their description.
	sigMu     sync.Mutex
	descSent  map[media.Target]bool
	heldLocal map[media.Target][]media.Signal

	statsMu  sync.Mutex
	received map[TrackKey]*TrackStats
	ssrcs    map[TrackKey]webrtc.SSRC // of the running track under each key

	mu     sync.Mutex // guards closed, restartBy, and wg.Add against Close's Wait
	closed bool
	// restartBy is each connection's pending automatic ICE restart.
	restartBy map[media.Target]*time.Timer
	wg        sync.WaitGroup
	done      chan struct{}
}

// New creates the peer's connections and, when it publishes, sends the
// publisher offer through send at once. send must not block and must deliver
// signals in order; HandleSignal takes the SFU's replies.
func New(cfg Config, send func(media.Signal)) (*Peer, error) {
	if send == nil {
		return nil, errors.New("peer: send is required")
	}
	if cfg.ListenIP == "" {
		cfg.ListenIP = DefaultListenIP
	}
	if cfg.VideoBitrate <= 0 {
		cfg.VideoBitrate = DefaultVideoBitrate
	}
	if cfg.VideoFPS <= 0 {
		cfg.VideoFPS = DefaultVideoFPS
	}
	if cfg.KeyframeInterval <= 0 {
		cfg.KeyframeInterval = DefaultKeyframeInterval
	}
	if cfg.KeyframeRequestInterval <= 0 {
		cfg.KeyframeRequestInterval = DefaultKeyframeRequestInterval
	}
	if cfg.ICERestartAfter <= 0 {
		cfg.ICERestartAfter = DefaultICERestartAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ip := net.ParseIP(cfg.ListenIP)
	if ip == nil {
		return nil, fmt.Errorf("peer: ListenIP %q is not an IP address", cfg.ListenIP)
	}

	p := &Peer{
		cfg:           cfg,
		send:          send,
		log:           cfg.Logger,
		pendingRemote: make(map[media.Target][]webrtc.ICECandidateInit),
		descSent:      make(map[media.Target]bool),
		heldLocal:     make(map[media.Target][]media.Signal),
		received:      make(map[TrackKey]*TrackStats),
		ssrcs:         make(map[TrackKey]webrtc.SSRC),
		restartBy:     make(map[media.Target]*time.Timer),
		done:          make(chan struct{}),
	}
	p.ip, p.logs = ip, pionlog.Factory(p.log, slog.LevelWarn)
	if err := p.setup(ip, p.logs); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// newConnection creates a PeerConnection with a UDP socket of its own.
func (p *Peer) newConnection(ip net.IP, logs logging.LoggerFactory) (*webrtc.PeerConnection, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, fmt.Errorf("peer: listen udp: %w", err)
	}
	conn := NewCuttableConn(udp)
	mux := webrtc.NewICEUDPMux(logs.NewLogger("udpmux"), conn)
	p.mu.Lock()
	p.conns = append(p.conns, conn)
	p.muxes = append(p.muxes, mux)
	p.mu.Unlock()

	se := webrtc.SettingEngine{LoggerFactory: logs}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(p.cfg.IncludeLoopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	if p.cfg.ICETransportPolicy == webrtc.ICETransportPolicyRelay {
		// Pion waits 2 s before nominating a relay pair, in case a better
		// one turns up; relay-only, none will.
		se.SetRelayAcceptanceMinWait(0)
	}
	if c := p.cfg; c.ICEDisconnectedTimeout > 0 || c.ICEFailedTimeout > 0 || c.ICEKeepaliveInterval > 0 {
		se.SetICETimeouts(c.ICEDisconnectedTimeout, c.ICEFailedTimeout, c.ICEKeepaliveInterval)
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("peer: codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, fmt.Errorf("peer: interceptors: %w", err)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir))
	return api.NewPeerConnection(webrtc.Configuration{
		ICEServers:         p.cfg.ICEServers,
		ICETransportPolicy: p.cfg.ICETransportPolicy,
		BundlePolicy:       webrtc.BundlePolicyMaxBundle,
	})
}

func (p *Peer) setup(ip net.IP, logs logging.LoggerFactory) error {
	var err error
	p.sub, err = p.newConnection(ip, logs)
	if err != nil {
		return fmt.Errorf("peer: subscriber connection: %w", err)
	}
	p.onCandidates(p.sub, media.TargetSubscriber)
	p.watchICE(p.sub, media.TargetSubscriber)
	p.sub.OnTrack(p.receive)

	if !p.cfg.Audio && !p.cfg.Video {
		return nil
	}
	return p.publish(p.cfg.Audio, p.cfg.Video)
}

// publish creates the publisher connection with the tracks asked for and
// sends its offer. negMu held, or New.
func (p *Peer) publish(audio, video bool) error {
	pc, err := p.newConnection(p.ip, p.logs)
	if err != nil {
		return fmt.Errorf("peer: publisher connection: %w", err)
	}
	p.sigMu.Lock() // a new connection: its candidates wait for its offer
	p.descSent[media.TargetPublisher] = false
	delete(p.heldLocal, media.TargetPublisher)
	p.sigMu.Unlock()
	delete(p.pendingRemote, media.TargetPublisher)
	stop := make(chan struct{})
	p.mu.Lock()
	p.pub, p.pubStop = pc, stop
	p.mu.Unlock()
	p.onCandidates(pc, media.TargetPublisher)
	p.watchICE(pc, media.TargetPublisher)
	var vt, at *webrtc.TrackLocalStaticRTP
	if video {
		vt, err = webrtc.NewTrackLocalStaticRTP(
			webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "peer")
		if err != nil {
			return fmt.Errorf("peer: video track: %w", err)
		}
		if err := p.addSender(pc, vt); err != nil {
			return err
		}
	}
	if audio {
		at, err = webrtc.NewTrackLocalStaticRTP(
			webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "peer")
		if err != nil {
			return fmt.Errorf("peer: audio track: %w", err)
		}
		if err := p.addSender(pc, at); err != nil {
			return err
		}
	}

	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		return fmt.Errorf("peer: publisher offer: %w", err)
	}
	p.sendDescription(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offer.SDP})

	p.mu.Lock()
	p.video, p.audio = vt, at
	p.mu.Unlock()
	if p.cfg.NoSyntheticMedia {
		return nil
	}
	if vt != nil {
		p.goTracked(func() { p.sendVideo(vt, stop) })
	}
	if at != nil {
		p.goTracked(func() { p.sendAudio(at, stop) })
	}
	return nil
}

// StartPublishing creates the publisher connection and publishes the
// tracks asked for (a member switched to anchor), unless it publishes
// already.
func (p *Peer) StartPublishing(audio, video bool) error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if err := p.checkOpen(); err != nil {
		return err
	}
	if p.publisher() != nil || (!audio && !video) {
		return nil
	}
	return p.publish(audio, video)
}

// StopPublishing closes the publisher connection (a member switched to
// audience): its tracks end.
func (p *Peer) StopPublishing() error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	p.mu.Lock()
	pc, stop := p.pub, p.pubStop
	if p.closed || pc == nil {
		p.mu.Unlock()
		return nil
	}
	p.pub, p.pubStop, p.video, p.audio = nil, nil, nil, nil
	if t := p.restartBy[media.TargetPublisher]; t != nil {
		t.Stop()
		delete(p.restartBy, media.TargetPublisher)
	}
	p.mu.Unlock()
	close(stop)
	delete(p.pendingRemote, media.TargetPublisher)
	return pc.GracefulClose()
}

// publisher is the publisher connection now, nil while publishing nothing.
func (p *Peer) publisher() *webrtc.PeerConnection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pub
}

// goTracked runs f in a goroutine Close waits for; false after Close.
func (p *Peer) goTracked(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// addSender publishes track and reads its RTCP: a PLI or FIR makes the next
// video frame a keyframe.
func (p *Peer) addSender(pc *webrtc.PeerConnection, track *webrtc.TrackLocalStaticRTP) error {
	sender, err := pc.AddTrack(track)
	if err != nil {
		return fmt.Errorf("peer: add %s track: %w", track.Kind(), err)
	}
	kind := track.Kind().String()
	p.goTracked(func() {
		readSenderRTCP(sender, func() {
			p.plisReceived.Add(1)
			p.forceKeyframe.Store(true)
		}, func(pkts []rtcp.Packet) {
			if p.cfg.OnPublisherRTCP != nil {
				p.cfg.OnPublisherRTCP(kind, pkts)
			}
		})
	})
	return nil
}

// sendVideo writes one frame per 1/VideoFPS until Close or stop, split
// into RTP packets of at most MaxVideoPayload bytes (RFC 7741: a one-byte
// payload descriptor, S set on a frame's first packet; the marker on its
// last).
func (p *Peer) sendVideo(track *webrtc.TrackLocalStaticRTP, stop <-chan struct{}) {
	interval := time.Second / time.Duration(p.cfg.VideoFPS)
	frameBytes := p.cfg.VideoBitrate / 8 / p.cfg.VideoFPS
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var lastKeyframe time.Time
	var frames uint32
	seq, ts := uint16(rand.Uint32()), rand.Uint32()
	for {
		select {
		case <-p.done:
			return
		case <-stop:
			return
		case <-ticker.C:
		}
		now := time.Now()
		key := p.forceKeyframe.Swap(false) || now.Sub(lastKeyframe) >= p.cfg.KeyframeInterval
		size := frameBytes
		if key {
			lastKeyframe = now
			size *= 3
			p.keyframesSent.Add(1)
		}
		frames++
		frame := makeVP8Frame(size, key, frames)
		for off := 0; off < len(frame); {
			n := min(len(frame)-off, MaxVideoPayload-1)
			payload := make([]byte, 1+n)
			if off == 0 {
				payload[0] = 0x10 // S=1, partition 0
			}
			copy(payload[1:], frame[off:off+n])
			off += n
			pkt := &rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: off == len(frame)},
				Payload: payload,
			}
			p.sendSynthetic(track, KindVideo, pkt)
			seq++
		}
		ts += uint32(90000 / p.cfg.VideoFPS)
	}
}

// sendAudio writes one Opus-sized frame per 20 ms until Close.
func (p *Peer) sendAudio(track *webrtc.TrackLocalStaticRTP, stop <-chan struct{}) {
	ticker := time.NewTicker(audioFrameTime)
	defer ticker.Stop()
	seq, ts := uint16(rand.Uint32()), rand.Uint32()
	for {
		select {
		case <-p.done:
			return
		case <-stop:
			return
		case <-ticker.C:
		}
		frame := make([]byte, audioFrameBytes)
		for i := range frame {
			frame[i] = byte(i)
		}
		p.sendSynthetic(track, KindAudio, &rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts},
			Payload: frame,
		})
		seq++
		ts += 48000 / uint32(time.Second/audioFrameTime)
	}
}

// Track kinds, as in TrackKey and the hooks.
const (
	KindAudio = "audio"
	KindVideo = "video"
)

// sendSynthetic passes pkt through OnSendRTP and writes it.
func (p *Peer) sendSynthetic(track *webrtc.TrackLocalStaticRTP, kind string, pkt *rtp.Packet) {
	if p.cfg.OnSendRTP != nil {
		p.cfg.OnSendRTP(kind, pkt)
	}
	if err := track.WriteRTP(pkt); err != nil {
		p.log.Debug("write "+kind, "err", err)
	}
}

// WriteRTP writes a raw RTP packet to the published track of kind ("audio"
// or "video"); the peer sets its SSRC and payload type. Meant for a peer
// with NoSyntheticMedia, whose tracks carry only what the caller writes.
func (p *Peer) WriteRTP(kind string, pkt *rtp.Packet) error {
	p.mu.Lock()
	track := p.audio
	if kind == KindVideo {
		track = p.video
	}
	p.mu.Unlock()
	if track == nil {
		return fmt.Errorf("peer: no published %s track", kind)
	}
	return track.WriteRTP(pkt)
}

// receive counts one remote track until it ends. Runs in Pion's goroutine.
func (p *Peer) receive(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()

	key := TrackKey{StreamID: track.StreamID(), Kind: track.Kind().String()}
	isVP8 := track.Codec().MimeType == webrtc.MimeTypeVP8
	p.statsMu.Lock()
	st := p.received[key]
	if st == nil {
		st = &TrackStats{}
		p.received[key] = st
	}
	st.TrackID = track.ID()
	st.Started = time.Now()
	st.Ended = false
	p.ssrcs[key] = track.SSRC()
	p.statsMu.Unlock()

	buf := make([]byte, 1500)
	var pkt rtp.Packet
	var gotKeyframe bool
	var lastAsk time.Time // first packet time, then time of the last PLI
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			break
		}
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		now := time.Now()
		keyframe := isVP8 && isVP8KeyframeStart(pkt.Payload)
		gotKeyframe = gotKeyframe || keyframe
		if isVP8 && !gotKeyframe && !p.cfg.NoKeyframeRequests {
			if lastAsk.IsZero() {
				lastAsk = now
			} else if now.Sub(lastAsk) >= p.cfg.KeyframeRequestInterval {
				lastAsk = now
				p.sendPLI(track.SSRC())
			}
		}
		if p.cfg.OnReceiveRTP != nil {
			p.cfg.OnReceiveRTP(key, &pkt, now)
		}
		p.statsMu.Lock()
		st.Packets++
		st.Bytes += uint64(len(pkt.Payload))
		if st.FirstPacket.IsZero() {
			st.FirstPacket = now
		}
		if keyframe {
			st.Keyframes++
			if st.FirstKeyframe.IsZero() {
				st.FirstKeyframe = now
			}
		}
		p.statsMu.Unlock()
	}
	p.statsMu.Lock()
	if st.TrackID == track.ID() {
		st.Ended = true
		delete(p.ssrcs, key)
	}
	p.statsMu.Unlock()
}

// Received returns a copy of the counters of every track received so far.
func (p *Peer) Received() map[TrackKey]TrackStats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	out := make(map[TrackKey]TrackStats, len(p.received))
	for k, v := range p.received {
		out[k] = *v
	}
	return out
}

func (p *Peer) sendPLI(ssrc webrtc.SSRC) {
	if err := p.sub.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}}); err != nil {
		p.log.Debug("send pli", "err", err)
		return
	}
	p.plisSent.Add(1)
}

// RequestKeyframe sends a PLI for the running track under key, as a
// browser does when it cannot decode.
func (p *Peer) RequestKeyframe(key TrackKey) error {
	p.statsMu.Lock()
	ssrc, ok := p.ssrcs[key]
	p.statsMu.Unlock()
	if !ok {
		return fmt.Errorf("peer: no track %v", key)
	}
	if err := p.sub.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}}); err != nil {
		return fmt.Errorf("peer: send pli: %w", err)
	}
	p.plisSent.Add(1)
	return nil
}

// PLIsSent counts the keyframe requests this peer sent for received tracks.
func (p *Peer) PLIsSent() uint64 { return p.plisSent.Load() }

// PLIsReceived counts keyframe requests (PLI, FIR) the SFU sent this peer.
func (p *Peer) PLIsReceived() uint64 { return p.plisReceived.Load() }

// KeyframesSent counts the keyframes this peer published.
func (p *Peer) KeyframesSent() uint64 { return p.keyframesSent.Load() }

// States returns the publisher and subscriber connection states; the
// publisher state is Unknown when the peer publishes nothing.
func (p *Peer) States() (publisher, subscriber webrtc.PeerConnectionState) {
	if pub := p.publisher(); pub != nil {
		publisher = pub.ConnectionState()
	}
	return publisher, p.sub.ConnectionState()
}

// SelectedPairs returns the candidate pair ICE selected on the publisher
// and the subscriber connection; nil while there is none (or no publisher).
func (p *Peer) SelectedPairs() (publisher, subscriber *webrtc.ICECandidatePair) {
	return selectedPair(p.publisher()), selectedPair(p.sub)
}

func selectedPair(pc *webrtc.PeerConnection) *webrtc.ICECandidatePair {
	if pc == nil {
		return nil
	}
	for _, tr := range pc.GetTransceivers() {
		var dtls *webrtc.DTLSTransport
		if s := tr.Sender(); s != nil {
			dtls = s.Transport()
		}
		if r := tr.Receiver(); dtls == nil && r != nil {
			dtls = r.Transport()
		}
		if dtls == nil {
			continue
		}
		if pair, err := dtls.ICETransport().GetSelectedCandidatePair(); err == nil && pair != nil {
			return pair
		}
	}
	return nil
}

// Cut makes the peer vanish from the network without a word: from now on
// every datagram in and out is dropped, and nothing is closed. Close still
// has to be called to release the peer; Restore brings the network back.
func (p *Peer) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.SetCut(true)
	}
}

// Restore ends a Cut: datagrams flow again on the same sockets.
func (p *Peer) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.SetCut(false)
	}
}

// checkOpen returns an error once the peer is closed.
func (p *Peer) checkOpen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("peer: closed")
	}
	return nil
}

// HandleSignal applies a Signal from the SFU: a subscriber offer (answered
// through send), a publisher answer, or a candidate of either connection.
func (p *Peer) HandleSignal(s media.Signal) error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if err := p.checkOpen(); err != nil {
		return err
	}
	pc := p.sub
	if s.Target == media.TargetPublisher {
		pc = p.pub
	}
	if pc == nil {
		return fmt.Errorf("peer: signal for %s connection, which this peer does not have", s.Target)
	}
	switch {
	case s.Target == media.TargetSubscriber && s.Type == media.SignalOffer:
		// An offer that restarts ICE makes Pion gather anew inside
		// SetRemoteDescription: those candidates follow the answer, as
		// the SFU drops a candidate whose ufrag it does not know yet.
		p.holdCandidates(media.TargetSubscriber)
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP}); err != nil {
			p.releaseCandidates(media.TargetSubscriber)
			return fmt.Errorf("peer: subscriber offer: %w", err)
		}
		answer, err := pc.CreateAnswer(nil)
		if err == nil {
			err = pc.SetLocalDescription(answer)
		}
		if err != nil {
			p.releaseCandidates(media.TargetSubscriber)
			return fmt.Errorf("peer: subscriber answer: %w", err)
		}
		p.sendDescription(media.Signal{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: answer.SDP})
		p.flushRemote(s.Target, pc)
	case s.Target == media.TargetPublisher && s.Type == media.SignalAnswer:
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP}); err != nil {
			return fmt.Errorf("peer: publisher answer: %w", err)
		}
		p.flushRemote(s.Target, pc)
	case s.Type == media.SignalCandidate && s.Candidate != nil:
		if pc.RemoteDescription() == nil {
			p.pendingRemote[s.Target] = append(p.pendingRemote[s.Target], *s.Candidate)
			return nil
		}
		if err := pc.AddICECandidate(*s.Candidate); err != nil {
			return fmt.Errorf("peer: %s candidate: %w", s.Target, err)
		}
	default:
		return fmt.Errorf("peer: unexpected %s signal for %s connection", s.Type, s.Target)
	}
	return nil
}

func (p *Peer) flushRemote(t media.Target, pc *webrtc.PeerConnection) {
	for _, c := range p.pendingRemote[t] {
		if err := pc.AddICECandidate(c); err != nil {
			p.log.Debug("buffered candidate", "err", err)
		}
	}
	delete(p.pendingRemote, t)
}

func (p *Peer) onCandidates(pc *webrtc.PeerConnection, t media.Target) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		init := c.ToJSON()
		s := media.Signal{Target: t, Type: media.SignalCandidate, Candidate: &init}
		p.sigMu.Lock()
		defer p.sigMu.Unlock()
		if !p.descSent[t] {
			p.heldLocal[t] = append(p.heldLocal[t], s)
			return
		}
		p.send(s)
	})
}

// sendDescription sends a local description, then the candidates gathered
// before it.
func (p *Peer) sendDescription(s media.Signal) {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	p.send(s)
	p.descSent[s.Target] = true
	for _, c := range p.heldLocal[s.Target] {
		p.send(c)
	}
	delete(p.heldLocal, s.Target)
}

// Close closes both connections and the socket and waits for every
// goroutine of the peer. Safe to call more than once.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	for t, timer := range p.restartBy {
		timer.Stop()
		delete(p.restartBy, t)
	}
	pub := p.pub
	p.mu.Unlock()

	var errs []error
	if pub != nil {
		errs = append(errs, pub.GracefulClose())
	}
	if p.sub != nil {
		errs = append(errs, p.sub.GracefulClose())
	}
	p.wg.Wait()
	for _, mux := range p.muxes {
		if err := mux.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReadKeyframeRequests reads a sender's RTCP until the sender closes (the
// interceptors need it read) and calls onRequest for every PLI or FIR.
func ReadKeyframeRequests(s *webrtc.RTPSender, onRequest func()) {
	readSenderRTCP(s, onRequest, nil)
}

// readSenderRTCP is ReadKeyframeRequests that also hands every RTCP
// compound packet read to onRTCP (when not nil).
func readSenderRTCP(s *webrtc.RTPSender, onRequest func(), onRTCP func([]rtcp.Packet)) {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		if onRTCP != nil {
			onRTCP(pkts)
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				onRequest()
			}
		}
	}
}

// ICERestarts counts the ICE restarts this peer began (both connections).
func (p *Peer) ICERestarts() uint64 { return p.iceRestarts.Load() }

// RestartICE restarts ICE on one connection, keeping the PeerConnection and
// its tracks: on the publisher connection the peer sends a new offer made
// with ICERestart; on the subscriber connection it asks the SFU with a
// restartIce signal, and the SFU's new offer is answered as usual.
func (p *Peer) RestartICE(t media.Target) error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if err := p.checkOpen(); err != nil {
		return err
	}
	if t == media.TargetSubscriber {
		p.iceRestarts.Add(1)
		p.log.Info("ICE restart asked for the subscriber connection")
		p.send(media.Signal{Target: media.TargetSubscriber, Type: media.SignalRestartICE})
		p.retryUnlessConnected(p.sub, t)
		return nil
	}
	if p.pub == nil {
		return errors.New("peer: no publisher connection")
	}
	// CreateOffer with ICERestart gathers anew at once: the new
	// candidates follow the new offer.
	p.holdCandidates(media.TargetPublisher)
	offer, err := p.pub.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err == nil {
		err = p.pub.SetLocalDescription(offer)
	}
	if err != nil {
		p.releaseCandidates(media.TargetPublisher)
		return fmt.Errorf("peer: publisher ICE restart offer: %w", err)
	}
	p.iceRestarts.Add(1)
	p.log.Info("ICE restart of the publisher connection")
	p.sendDescription(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: offer.SDP})
	p.retryUnlessConnected(p.pub, t)
	return nil
}

// retryUnlessConnected restarts ICE on pc again if it is not connected
// ICERestartAfter after a restart, and so on until it is: a restart whose
// checks never succeed (seen now and then under load: the connection stays
// "connecting") is not left hanging until ICE's failed timeout.
func (p *Peer) retryUnlessConnected(pc *webrtc.PeerConnection, t media.Target) {
	if !p.cfg.NoICERestart {
		p.scheduleRestart(pc, t, p.cfg.ICERestartAfter)
	}
}

// Resync sends again the publisher offer still waiting for its answer, if
// any: after a resume on a new signaling connection, an offer or its answer
// may have been lost with the old one.
func (p *Peer) Resync() {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.pub == nil || p.pub.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return
	}
	if ld := p.pub.LocalDescription(); ld != nil {
		p.sendDescription(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: ld.SDP})
	}
}

// Publishes reports whether the peer has a publisher connection.
func (p *Peer) Publishes() bool { return p.publisher() != nil }

// Connected reports whether both connections (the subscriber alone for an
// audience member) are connected.
func (p *Peer) Connected() bool {
	pub, sub := p.States()
	return sub == webrtc.PeerConnectionStateConnected && (!p.Publishes() || pub == webrtc.PeerConnectionStateConnected)
}

// holdCandidates makes the local candidates of t wait for the next
// description sent for t.
func (p *Peer) holdCandidates(t media.Target) {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	p.descSent[t] = false
}

// releaseCandidates undoes holdCandidates when no description follows.
func (p *Peer) releaseCandidates(t media.Target) {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if p.descSent[t] {
		return
	}
	p.descSent[t] = true
	for _, c := range p.heldLocal[t] {
		p.send(c)
	}
	delete(p.heldLocal, t)
}

// watchICE restarts ICE on pc by itself: at once when it fails, after
// ICERestartAfter when it stays disconnected, and again every
// ICERestartAfter until it is connected.
func (p *Peer) watchICE(pc *webrtc.PeerConnection, t media.Target) {
	if p.cfg.NoICERestart {
		return
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			p.mu.Lock()
			if timer := p.restartBy[t]; timer != nil {
				timer.Stop()
				delete(p.restartBy, t)
			}
			p.mu.Unlock()
		case webrtc.PeerConnectionStateFailed:
			p.scheduleRestart(pc, t, 0)
		case webrtc.PeerConnectionStateDisconnected:
			p.scheduleRestart(pc, t, p.cfg.ICERestartAfter)
		}
	})
}

// scheduleRestart arms t's restart timer to fire after d, unless one is
// pending already (a failure after a disconnection restarts at once).
func (p *Peer) scheduleRestart(pc *webrtc.PeerConnection, t media.Target, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if timer := p.restartBy[t]; timer != nil {
		if d > 0 || !timer.Stop() {
			return
		}
	}
	var timer *time.Timer
	timer = time.AfterFunc(d, func() {
		p.mu.Lock()
		if p.closed || p.restartBy[t] != timer {
			p.mu.Unlock()
			return
		}
		delete(p.restartBy, t)
		p.mu.Unlock()
		if pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
			return
		}
		if err := p.RestartICE(t); err != nil {
			p.log.Debug("ICE restart", "target", t, "err", err)
			return
		}
		p.scheduleRestart(pc, t, p.cfg.ICERestartAfter) // again, until connected
	})
	p.restartBy[t] = timer
}

// LocalUfrag is the ICE username fragment of connection t's current local
// description ("" without one): an ICE restart changes it.
func (p *Peer) LocalUfrag(t media.Target) string {
	pc := p.sub
	if t == media.TargetPublisher {
		pc = p.publisher()
	}
	if pc == nil {
		return ""
	}
	ld := pc.LocalDescription()
	if ld == nil {
		return ""
	}
	for _, line := range strings.Split(ld.SDP, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}

// SRTPCipher is the SRTP protection profile negotiated on connection t
// (e.g. "SRTP_AEAD_AES_128_GCM"), "" before DTLS is up or without that
// connection.
func (p *Peer) SRTPCipher(t media.Target) string {
	pc := p.sub
	if t == media.TargetPublisher {
		pc = p.pub
	}
	if pc == nil {
		return ""
	}
	for _, s := range pc.GetStats() {
		if ts, ok := s.(webrtc.TransportStats); ok && ts.SRTPCipher != "" {
			return ts.SRTPCipher
		}
	}
	return ""
}
