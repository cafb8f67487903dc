package main

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
)

// benchPeer is the media load's client: a media/peer Peer (publisher
// connection offered by the peer, subscriber connection answered; synthetic
// VP8 and Opus) whose RTP hooks stamp every packet it sends with its send
// time and measure one-way latency on every packet it receives.
//
// Every RTP payload ends with a 12-byte trailer: trailerMagic, then the send
// time in Unix nanoseconds, both big endian. The synthetic VP8 frames start
// with a valid descriptor and frame tag (keyframes are recognisable, as the
// SFU and media/peer look for them); nothing decodes the rest.
const (
	trailerMagic = 0x53424e43 // "SBNC"
	trailerLen   = 12

	keyframeInterval = 2 * time.Second
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
	*peer.Peer
	win *window

	sentInWindow atomic.Int64 // packets whose send time is in the window

	mu        sync.Mutex // guards the receive figures below
	recvWin   int64      // packets received whose send time is in the window
	latencies []float64  // ms, of those packets
}

// newBenchPeer creates the connections and, when publishing, sends the
// publisher offer through send, which must not block. Like a browser tab,
// it sends no keyframe requests of its own (the SFU asks for keyframes on
// subscribe) and does not restart ICE by itself.
func newBenchPeer(cfg peerConfig, send func(media.Signal)) (*benchPeer, error) {
	b := &benchPeer{win: cfg.win}
	p, err := peer.New(peer.Config{
		ListenIP:           "127.0.0.1",
		IncludeLoopback:    true,
		Audio:              cfg.publish,
		Video:              cfg.publish,
		VideoBitrate:       cfg.bitrate,
		VideoFPS:           cfg.fps,
		KeyframeInterval:   keyframeInterval,
		NoKeyframeRequests: true,
		NoICERestart:       true,
		OnSendRTP:          b.stamp,
		OnReceiveRTP:       b.measure,
	}, send)
	if err != nil {
		return nil, err
	}
	b.Peer = p
	return b, nil
}

// stamp appends the trailer with the send time to an outgoing packet.
func (b *benchPeer) stamp(_ string, pkt *rtp.Packet) {
	now := time.Now().UnixNano()
	var tr [trailerLen]byte
	binary.BigEndian.PutUint32(tr[:], trailerMagic)
	binary.BigEndian.PutUint64(tr[4:], uint64(now))
	pkt.Payload = append(pkt.Payload, tr[:]...)
	if b.win.contains(now) {
		b.sentInWindow.Add(1)
	}
}

// measure counts a received packet sent inside the window and its one-way
// latency.
func (b *benchPeer) measure(_ peer.TrackKey, pkt *rtp.Packet, at time.Time) {
	if len(pkt.Payload) < trailerLen {
		return
	}
	tr := pkt.Payload[len(pkt.Payload)-trailerLen:]
	if binary.BigEndian.Uint32(tr) != trailerMagic {
		return
	}
	sent := int64(binary.BigEndian.Uint64(tr[4:]))
	if !b.win.contains(sent) {
		return
	}
	b.mu.Lock()
	b.recvWin++
	b.latencies = append(b.latencies, float64(at.UnixNano()-sent)/1e6)
	b.mu.Unlock()
}

// receiving reports how many distinct remote tracks have started.
func (b *benchPeer) receiving() int {
	return len(b.Received())
}

// figures returns the packets received in the window and their latencies.
func (b *benchPeer) figures() (int64, []float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recvWin, append([]float64(nil), b.latencies...)
}

// quietPion discards Pion's own log lines.
func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.Writer = io.Discard
	return f
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
