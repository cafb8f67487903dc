package media

import (
	"fmt"
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// discardContext binds a track to nothing: writes are counted and dropped.
type discardContext struct {
	id     string
	ssrc   webrtc.SSRC
	writes *int
}

func (c discardContext) CodecParameters() []webrtc.RTPCodecParameters {
	return []webrtc.RTPCodecParameters{{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		PayloadType:        96,
	}}
}
func (c discardContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter { return nil }
func (c discardContext) SSRC() webrtc.SSRC                                      { return c.ssrc }
func (c discardContext) SSRCRetransmission() webrtc.SSRC                        { return 0 }
func (c discardContext) SSRCForwardErrorCorrection() webrtc.SSRC                { return 0 }
func (c discardContext) WriteStream() webrtc.TrackLocalWriter                   { return c }
func (c discardContext) ID() string                                             { return c.id }
func (c discardContext) RTCPReader() interceptor.RTCPReader                     { return nil }
func (c discardContext) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	*c.writes++
	return len(payload), nil
}
func (c discardContext) Write(b []byte) (int, error) { *c.writes++; return len(b), nil }

// newBenchTrack returns a video publishedTrack with n bound downTracks.
func newBenchTrack(tb testing.TB, n int, writes *int) *publishedTrack {
	tb.Helper()
	t := &publishedTrack{
		kind:           webrtc.RTPCodecTypeVideo,
		codec:          webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		id:             "pub-video-1",
		streamID:       "pub",
		keyframeWanted: make(chan struct{}, 1),
		done:           make(chan struct{}),
		queue:          make(chan []byte, trackQueueLen),
		counters:       &counters{},
	}
	t.downs.Store(&[]*downTrack{})
	for i := 0; i < n; i++ {
		d, err := newDownTrack(t, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx := discardContext{id: fmt.Sprint(i), ssrc: webrtc.SSRC(1000 + i), writes: writes}
		if _, err := d.Bind(ctx); err != nil {
			tb.Fatal(err)
		}
		if !t.addDown(d) {
			tb.Fatal("track closed")
		}
	}
	return t
}

func TestFanOutReachesEveryBoundSubscriber(t *testing.T) {
	writes := 0
	track := newBenchTrack(t, 5, &writes)
	downs := *track.downs.Load()
	downs[2].bound.Store(false) // not negotiated yet
	pkt := &rtp.Packet{
		Header:  rtp.Header{Version: 2, SequenceNumber: 7, Timestamp: 9, SSRC: 1, Extension: true, ExtensionProfile: 0xBEDE},
		Payload: []byte{0x10, 0x00, 0x9d},
	}
	if err := pkt.Header.SetExtension(1, []byte{1}); err != nil {
		t.Fatal(err)
	}
	track.fanOut(pkt)
	if writes != 4 {
		t.Errorf("writes = %d, want 4 (one subscriber unbound)", writes)
	}
	if got := track.counters.packetsOut.Load(); got != 4 {
		t.Errorf("packetsOut = %d, want 4", got)
	}
	if pkt.Header.Extension || len(pkt.Header.Extensions) != 0 {
		t.Error("header extensions were forwarded")
	}
	track.removeDown(downs[0])
	if n := len(*track.downs.Load()); n != 4 {
		t.Errorf("after removeDown: %d downs, want 4", n)
	}
	if got := track.close(); len(got) != 4 {
		t.Errorf("close returned %d downs, want 4", len(got))
	}
	if track.addDown(downs[0]) {
		t.Error("addDown succeeded on a closed track")
	}
}

// BenchmarkFanOut measures forwarding one RTP packet to N subscriber
// tracks: the per-packet cost of the forwarder, minus encryption and the
// socket write (the bound writer discards).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			writes := 0
			track := newBenchTrack(b, n, &writes)
			payload := make([]byte, 1100)
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}, Payload: payload}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload) * n))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pkt.SequenceNumber++
				pkt.Timestamp += 3000
				track.fanOut(pkt)
			}
			b.StopTimer()
			if writes != b.N*n {
				b.Fatalf("writes = %d, want %d", writes, b.N*n)
			}
		})
	}
}
