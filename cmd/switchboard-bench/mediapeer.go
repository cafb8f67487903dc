package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
)

// benchPeer is the media load's client: like media/peer it has a publisher
// connection (it offers) and a subscriber connection (it answers), but its
// publisher writes RTP itself (TrackLocalStaticRTP) so that every packet
// carries its send time, and its receiver measures one-way latency from it.
// media/peer writes samples through TrackLocalStaticSample and offers no
// hook into the payload, so it cannot carry the timestamp.
//
// Every RTP payload ends with a 12-byte trailer: trailerMagic, then the send
// time in Unix nanoseconds, both big endian. The synthetic VP8 frames start
// with a valid descriptor and frame tag (keyframes are recognisable, as the
// SFU and media/peer look for them); nothing decodes the rest.
const (
	trailerMagic = 0x53424e43 // "SBNC"
	trailerLen   = 12

	maxRTPPayload    = 1100
	keyframeInterval = 2 * time.Second
	audioFrameBytes  = 64
	audioFrameTime   = 20 * time.Millisecond
	gatherTimeout    = 10 * time.Second
)

// window is the measurement window, in Unix nanoseconds, shared by every
// peer of a run; zero until the load is flowing.
type window struct {
	start, end atomic.Int64
}

func (w *window) contains(ns int64) bool {
	s := w.start.Load()
	return s != 0 && ns >= s && ns < w.end.Load()
}

type peerConfig struct {
	publish bool
	bitrate int
	fps     int
	win     *window
}

// benchPeer is safe for concurrent use.
type benchPeer struct {
	cfg  peerConfig
	send func(media.Signal)

	muxes []io.Closer
	pub   *webrtc.PeerConnection // nil for the audience
	sub   *webrtc.PeerConnection
	vid   *webrtc.TrackLocalStaticRTP
	aud   *webrtc.TrackLocalStaticRTP
	done  chan struct{}
	wg    sync.WaitGroup

	forceKeyframe atomic.Bool
	sentInWindow  atomic.Int64 // packets whose send time is in the window

	negMu   sync.Mutex // serialises HandleSignal; guards pending
	pending map[media.Target][]webrtc.ICECandidateInit

	mu        sync.Mutex // guards the receive figures below and closed
	closed    bool
	recvWin   int64     // packets received whose send time is in the window
	latencies []float64 // ms, of those packets
	tracks    map[string]bool
}

// newBenchPeer creates the connections and, when publishing, sends the
// publisher offer (with every candidate in it: loopback gathering is
// immediate) through send, which must not block.
func newBenchPeer(cfg peerConfig, send func(media.Signal)) (*benchPeer, error) {
	p := &benchPeer{cfg: cfg, send: send, done: make(chan struct{}),
		pending: make(map[media.Target][]webrtc.ICECandidateInit), tracks: make(map[string]bool)}
	var err error
	if p.sub, err = p.newConnection(); err != nil {
		_ = p.Close()
		return nil, err
	}
	p.sub.OnTrack(p.receive)
	if !cfg.publish {
		return p, nil
	}
	if p.pub, err = p.newConnection(); err != nil {
		_ = p.Close()
		return nil, err
	}
	if err := p.setupPublisher(); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// newConnection makes a PeerConnection with a loopback UDP socket of its
// own, as a browser has one per connection.
func (p *benchPeer) newConnection() (*webrtc.PeerConnection, error) {
	api, mux, err := newLoopbackAPI()
	if err != nil {
		return nil, err
	}
	p.muxes = append(p.muxes, mux)
	return api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
}

// quietPion discards Pion's own log lines.
func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.Writer = io.Discard
	return f
}

// newLoopbackAPI is a Pion API on one loopback UDP socket (ICE UDP mux),
// with default codecs and interceptors, as the SFU and media/peer use.
func newLoopbackAPI() (*webrtc.API, ice.UDPMux, error) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, fmt.Errorf("listen udp: %w", err)
	}
	logs := quietPion()
	mux := webrtc.NewICEUDPMux(logs.NewLogger("udpmux"), udp)
	se := webrtc.SettingEngine{LoggerFactory: logs}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		_ = mux.Close()
		return nil, nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		_ = mux.Close()
		return nil, nil, err
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir)), mux, nil
}

func (p *benchPeer) setupPublisher() error {
	var err error
	p.vid, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "bench")
	if err != nil {
		return err
	}
	p.aud, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "bench")
	if err != nil {
		return err
	}
	for _, t := range []*webrtc.TrackLocalStaticRTP{p.vid, p.aud} {
		sender, err := p.pub.AddTrack(t)
		if err != nil {
			return err
		}
		p.wg.Go(func() { p.readSenderRTCP(sender) })
	}
	offer, err := p.pub.CreateOffer(nil)
	if err == nil {
		err = p.pub.SetLocalDescription(offer)
	}
	if err != nil {
		return fmt.Errorf("publisher offer: %w", err)
	}
	sdp, err := gatheredSDP(p.pub)
	if err != nil {
		return err
	}
	p.send(media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: sdp})
	p.wg.Go(p.sendVideo)
	p.wg.Go(p.sendAudio)
	return nil
}

// gatheredSDP waits for ICE gathering and returns the local description
// with its candidates.
func gatheredSDP(pc *webrtc.PeerConnection) (string, error) {
	select {
	case <-webrtc.GatheringCompletePromise(pc):
	case <-time.After(gatherTimeout):
		return "", errors.New("ICE gathering did not complete")
	}
	return pc.LocalDescription().SDP, nil
}

// readSenderRTCP reads the RTCP of a sender (interceptors need it read); a
// PLI or FIR makes the next video frame a keyframe.
func (p *benchPeer) readSenderRTCP(s *webrtc.RTPSender) {
	peer.ReadKeyframeRequests(s, func() { p.forceKeyframe.Store(true) })
}

// write stamps payload's trailer with the send time and writes it.
func (p *benchPeer) write(t *webrtc.TrackLocalStaticRTP, h rtp.Header, payload []byte) {
	now := time.Now().UnixNano()
	tr := payload[len(payload)-trailerLen:]
	binary.BigEndian.PutUint32(tr, trailerMagic)
	binary.BigEndian.PutUint64(tr[4:], uint64(now))
	if p.cfg.win.contains(now) {
		p.sentInWindow.Add(1)
	}
	_ = t.WriteRTP(&rtp.Packet{Header: h, Payload: payload})
}

// sendVideo writes one synthetic VP8 frame per 1/fps, bitrate/8/fps bytes
// (keyframes three times that, every keyframeInterval or on PLI), split in
// packets of at most maxRTPPayload bytes.
func (p *benchPeer) sendVideo() {
	interval := time.Second / time.Duration(p.cfg.fps)
	frameBytes := p.cfg.bitrate / 8 / p.cfg.fps
	tick := time.NewTicker(interval)
	defer tick.Stop()
	seq := uint16(rand.Uint32())
	ts := rand.Uint32()
	var lastKey time.Time
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		now := time.Now()
		key := p.forceKeyframe.Swap(false) || now.Sub(lastKey) >= keyframeInterval
		size := frameBytes
		if key {
			size *= 3
			lastKey = now
		}
		frame := vp8Frame(size, key)
		for off := 0; off < len(frame); {
			n := min(len(frame)-off, maxRTPPayload-1-trailerLen)
			payload := make([]byte, 1+n+trailerLen)
			if off == 0 {
				payload[0] = 0x10 // VP8 descriptor: S=1, partition 0
			}
			copy(payload[1:], frame[off:off+n])
			off += n
			p.write(p.vid, rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, Marker: off == len(frame)}, payload)
			seq++
		}
		ts += uint32(90000 / p.cfg.fps)
	}
}

// vp8Frame is a frame of size bytes with a valid VP8 frame tag (and start
// code and size for a keyframe), as media/peer makes them.
func vp8Frame(size int, key bool) []byte {
	size = max(size, 16)
	f := make([]byte, size)
	header := 3
	if key {
		header = 10
	}
	tag := uint32(size-header)<<5 | 1<<4
	if !key {
		tag |= 1
	}
	f[0], f[1], f[2] = byte(tag), byte(tag>>8), byte(tag>>16)
	if key {
		f[3], f[4], f[5] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(f[6:], 640)
		binary.LittleEndian.PutUint16(f[8:], 480)
	}
	for i := header; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

// sendAudio writes one Opus-sized packet per 20 ms.
func (p *benchPeer) sendAudio() {
	tick := time.NewTicker(audioFrameTime)
	defer tick.Stop()
	seq := uint16(rand.Uint32())
	ts := rand.Uint32()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		payload := make([]byte, audioFrameBytes+trailerLen)
		p.write(p.aud, rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts}, payload)
		seq++
		ts += 960
	}
}

// receive reads one remote track until it ends, counting the packets sent
// inside the window and their one-way latency.
func (p *benchPeer) receive(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.tracks[track.StreamID()+"/"+track.Kind().String()] = true
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	var lat []float64
	var count int64
	flush := func() {
		p.mu.Lock()
		p.recvWin += count
		p.latencies = append(p.latencies, lat...)
		p.mu.Unlock()
		lat, count = lat[:0], 0
	}
	defer flush()
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		if pkt.Unmarshal(buf[:n]) != nil || len(pkt.Payload) < trailerLen {
			continue
		}
		tr := pkt.Payload[len(pkt.Payload)-trailerLen:]
		if binary.BigEndian.Uint32(tr) != trailerMagic {
			continue
		}
		sent := int64(binary.BigEndian.Uint64(tr[4:]))
		if !p.cfg.win.contains(sent) {
			if count > 0 && sent >= p.cfg.win.end.Load() {
				flush()
			}
			continue
		}
		count++
		lat = append(lat, float64(now-sent)/1e6)
		if len(lat) >= 256 {
			flush()
		}
	}
}

// receiving reports how many distinct remote tracks have started.
func (p *benchPeer) receiving() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tracks)
}

// figures returns the packets received in the window and their latencies.
func (p *benchPeer) figures() (int64, []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recvWin, append([]float64(nil), p.latencies...)
}

// HandleSignal applies a signal from the server: the publisher answer, a
// subscriber offer (answered through send) or a candidate.
func (p *benchPeer) HandleSignal(s media.Signal) error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	pc := p.sub
	if s.Target == media.TargetPublisher {
		pc = p.pub
	}
	if pc == nil {
		return fmt.Errorf("signal for a %s connection this peer does not have", s.Target)
	}
	switch s.Type {
	case media.SignalOffer:
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP}); err != nil {
			return fmt.Errorf("subscriber offer: %w", err)
		}
		answer, err := pc.CreateAnswer(nil)
		if err == nil {
			err = pc.SetLocalDescription(answer)
		}
		if err != nil {
			return fmt.Errorf("subscriber answer: %w", err)
		}
		sdp, err := gatheredSDP(pc)
		if err != nil {
			return err
		}
		p.send(media.Signal{Target: s.Target, Type: media.SignalAnswer, SDP: sdp})
		p.flushPending(s.Target, pc)
	case media.SignalAnswer:
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP}); err != nil {
			return fmt.Errorf("publisher answer: %w", err)
		}
		p.flushPending(s.Target, pc)
	case media.SignalCandidate:
		if s.Candidate == nil || s.Candidate.Candidate == "" {
			return nil
		}
		if pc.RemoteDescription() == nil {
			p.pending[s.Target] = append(p.pending[s.Target], *s.Candidate)
			return nil
		}
		return pc.AddICECandidate(*s.Candidate)
	}
	return nil
}

func (p *benchPeer) flushPending(t media.Target, pc *webrtc.PeerConnection) {
	for _, c := range p.pending[t] {
		_ = pc.AddICECandidate(c)
	}
	delete(p.pending, t)
}

// Close stops the senders, closes both connections and waits for every
// goroutine of the peer.
func (p *benchPeer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	var errs []error
	for _, pc := range []*webrtc.PeerConnection{p.pub, p.sub} {
		if pc != nil {
			errs = append(errs, pc.Close())
		}
	}
	p.wg.Wait()
	for _, c := range p.muxes {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
