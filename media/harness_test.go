package media_test

import (
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
)

func TestMain(m *testing.M) {
	// No goroutine may outlive a test: every SFU, participant and peer
	// closes its goroutines. Only pionSRTPAcceptLeak is ignored.
	goleak.VerifyTestMain(m, pionSRTPAcceptLeak)
}

// pionSRTPAcceptLeak is a goroutine that pion/srtp (v3.1.3) leaves behind,
// not ours: an SRTP session's read loop that decrypts the first packet of a
// new SSRC hands the new stream to AcceptStream with a channel send that
// has no way out (session_srtp.go, decrypt). When that packet arrives while
// the peer connection closes, after its accept loop has returned, the read
// loop stays blocked on that send for good. Seen now and then in
// TestLeaveAndVanish (sessions 6, 9 and 10; not reproduced on demand); it
// needs a fix upstream (a select on the session's close).
var pionSRTPAcceptLeak = goleak.IgnoreTopFunction("github.com/pion/srtp/v3.(*SessionSRTP).decrypt")

// testLogger logs to stderr when MEDIA_TEST_LOG is set, else discards.
func testLogger() *slog.Logger {
	if os.Getenv("MEDIA_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is an SFU on 127.0.0.1 with Pion's ICE timers: tests share
// two cores with other work, and short timers would take a starved peer for
// a vanished one.
func testConfig() media.Config {
	return media.Config{
		ListenIP:        "127.0.0.1",
		IncludeLoopback: true,
		PLIThrottle:     500 * time.Millisecond,
	}
}

// vanishConfig notices a silent peer within about 2.5 s.
func vanishConfig() media.Config {
	cfg := testConfig()
	cfg.ICEDisconnectedTimeout = 2 * time.Second
	cfg.ICEFailedTimeout = 3 * time.Second
	cfg.ICEKeepaliveInterval = 250 * time.Millisecond
	cfg.ICEDisconnectedGrace = 500 * time.Millisecond
	return cfg
}

func newSFU(t *testing.T, cfg media.Config) *media.SFU {
	t.Helper()
	s, err := media.New(cfg, testLogger())
	if err != nil {
		t.Fatalf("media.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("SFU.Close: %v", err)
		}
	})
	return s
}

// peerConfig publishes audio and video at a low rate. Unsolicited
// keyframes are 30 s apart, so a keyframe within a second of subscribing
// comes from a keyframe request.
func peerConfig(publish bool) peer.Config {
	return peer.Config{
		ListenIP:         "127.0.0.1",
		IncludeLoopback:  true,
		Audio:            publish,
		Video:            publish,
		VideoBitrate:     150_000,
		VideoFPS:         30,
		KeyframeInterval: 30 * time.Second,
		Logger:           testLogger(),
	}
}

type trackEvent struct {
	kind      string
	available bool
	at        time.Time
}

// client is a peer joined to an SFU participant, with asynchronous signal
// plumbing in both directions (a queue and a goroutine each), as a real
// transport would have.
type client struct {
	id       string
	peer     *peer.Peer
	part     *media.Participant
	joinedAt time.Time

	toServer chan media.Signal
	toPeer   chan media.Signal
	stop     chan struct{}
	stopOnce sync.Once
	pumps    sync.WaitGroup

	mu             sync.Mutex
	serverErrs     []error // HandleSignal errors for the peer's signals
	peerErrs       []error
	connectedAt    time.Time
	connectedCount int
	tracks         []trackEvent
	gone           chan media.LeaveReason
	goneCount      int
	overflow       int // signals dropped because a queue was full
	sentToServer   []media.Signal
	sentToPeer     []media.Signal
}

func join(t *testing.T, s *media.SFU, roomID, id string, canPublish bool, cfg peer.Config) *client {
	t.Helper()
	c := &client{
		id:       id,
		toServer: make(chan media.Signal, 1024),
		toPeer:   make(chan media.Signal, 1024),
		stop:     make(chan struct{}),
		gone:     make(chan media.LeaveReason, 4),
	}
	enqueue := func(q chan media.Signal, sent *[]media.Signal) func(media.Signal) {
		return func(sig media.Signal) {
			c.mu.Lock()
			*sent = append(*sent, sig)
			c.mu.Unlock()
			select {
			case q <- sig:
			default:
				c.mu.Lock()
				c.overflow++
				c.mu.Unlock()
			}
		}
	}
	p, err := peer.New(cfg, enqueue(c.toServer, &c.sentToServer))
	if err != nil {
		t.Fatalf("peer.New(%s): %v", id, err)
	}
	c.peer = p
	c.joinedAt = time.Now()
	part, err := s.Join(roomID, id, media.JoinOptions{
		CanPublish: canPublish,
		Send:       enqueue(c.toPeer, &c.sentToPeer),
		OnConnected: func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.connectedCount++
			if c.connectedAt.IsZero() {
				c.connectedAt = time.Now()
			}
		},
		OnTrack: func(kind string, available bool) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.tracks = append(c.tracks, trackEvent{kind: kind, available: available, at: time.Now()})
		},
		OnGone: func(r media.LeaveReason) {
			c.mu.Lock()
			c.goneCount++
			c.mu.Unlock()
			c.gone <- r
		},
	})
	if err != nil {
		_ = p.Close()
		t.Fatalf("Join(%s): %v", id, err)
	}
	c.part = part
	c.pumps.Add(2)
	go c.pump(c.toServer, func(sig media.Signal) {
		if err := part.HandleSignal(sig); err != nil {
			c.mu.Lock()
			c.serverErrs = append(c.serverErrs, err)
			c.mu.Unlock()
		}
	})
	go c.pump(c.toPeer, func(sig media.Signal) {
		if err := p.HandleSignal(sig); err != nil {
			c.mu.Lock()
			c.peerErrs = append(c.peerErrs, err)
			c.mu.Unlock()
		}
	})
	t.Cleanup(c.close)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		server, peerErrs := c.errors()
		pub, sub := c.peer.States()
		t.Logf("%s: server errors %v, peer errors %v, states pub=%v sub=%v, received %+v",
			c.id, server, peerErrs, pub, sub, c.peer.Received())
	})
	return c
}

func (c *client) pump(q chan media.Signal, handle func(media.Signal)) {
	defer c.pumps.Done()
	for {
		select {
		case <-c.stop:
			return
		case sig := <-q:
			start := time.Now()
			handle(sig)
			if d := time.Since(start); d > 100*time.Millisecond {
				testLogger().Warn("slow signal", "client", c.id, "target", sig.Target, "type", sig.Type, "took", d)
			}
		}
	}
}

// vanish cuts the peer off the network and stops all signalling: the SFU
// hears nothing more from it.
func (c *client) vanish() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.pumps.Wait()
	c.peer.Cut()
}

func (c *client) close() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.pumps.Wait()
	c.part.Close()
	_ = c.peer.Close()
}

// signalsSent returns the signals each side sent so far, in order.
func (c *client) signalsSent() (toServer, toPeer []media.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]media.Signal(nil), c.sentToServer...), append([]media.Signal(nil), c.sentToPeer...)
}

func (c *client) trackEvents() []trackEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]trackEvent(nil), c.tracks...)
}

func (c *client) errors() (server, peer []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.serverErrs...), append([]error(nil), c.peerErrs...)
}

func (c *client) connected() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connectedAt
}

// trackStart is when the SFU reported c's track of kind available.
func (c *client) trackStart(kind string) time.Time {
	for _, e := range c.trackEvents() {
		if e.kind == kind && e.available {
			return e.at
		}
	}
	return time.Time{}
}

func (c *client) waitGone(t *testing.T, timeout time.Duration) media.LeaveReason {
	t.Helper()
	select {
	case r := <-c.gone:
		return r
	case <-time.After(timeout):
		t.Fatalf("%s: no OnGone within %v", c.id, timeout)
		return 0
	}
}

// eventually polls cond every 10 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiving reports whether c gets audio and video from every publisher in
// from, with at least minPackets each and a video keyframe.
func receiving(c *client, minPackets uint64, from ...*client) bool {
	got := c.peer.Received()
	for _, f := range from {
		a := got[peer.TrackKey{StreamID: f.id, Kind: "audio"}]
		v := got[peer.TrackKey{StreamID: f.id, Kind: "video"}]
		if a.Ended || v.Ended || a.Packets < minPackets || v.Packets < minPackets || v.Keyframes == 0 {
			return false
		}
	}
	return true
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}
