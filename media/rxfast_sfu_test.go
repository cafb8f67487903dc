package media_test

import (
	"errors"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
)

// pionIn is the RTP the SFU received through Pion (not the fast path).
func pionIn(s *media.SFU) uint64 {
	st := s.Stats()
	return st.PacketsIn - st.PacketsInFast
}

// A publisher's media reaches a real Pion subscriber (audio, video and a
// keyframe, decrypted) through the fast receive path: past the first
// packets of each track, nothing comes through Pion.
func TestRxFastCarriesPublishedMedia(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	eventually(t, 10*time.Second, "packets on the fast receive path", func() bool { return s.Stats().PacketsInFast > 50 })
	viaPion := pionIn(s)
	got := sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets
	eventually(t, 10*time.Second, "200 more video packets at bob", func() bool {
		return sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > got+200
	})
	st := s.Stats()
	if st.PacketsInFastDropped != 0 || st.PacketsInQueueDropped != 0 {
		t.Errorf("fast receive path dropped %d, %d on a full forwarder queue", st.PacketsInFastDropped, st.PacketsInQueueDropped)
	}
	// A few packets may still have been on their way through Pion.
	if more := pionIn(s) - viaPion; more > 20 {
		t.Errorf("%d more packets came through Pion after the switch (fast %d)", more, st.PacketsInFast)
	}
	checkClean(t, pub, sub)
}

// rtcpLog collects the RTCP a publisher's senders read.
type rtcpLog struct {
	mu    sync.Mutex
	nacks map[uint16]bool
	rrs   int
	twcc  int
	// highest is the highest sequence number a receiver report's block
	// said was received (the low 16 bits).
	highest uint16
}

func (l *rtcpLog) add(_ string, pkts []rtcp.Packet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.TransportLayerNack:
			for _, pair := range p.Nacks {
				for _, seq := range pair.PacketList() {
					l.nacks[seq] = true
				}
			}
		case *rtcp.ReceiverReport:
			l.rrs++
			for _, b := range p.Reports {
				l.highest = uint16(b.LastSequenceNumber)
			}
		case *rtcp.TransportLayerCC:
			l.twcc++
		}
	}
}

func (l *rtcpLog) counts() (rrs, twcc int, highest uint16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rrs, l.twcc, l.highest
}

// twccID is the transport-wide sequence number extension's ID in c's
// publisher offer; 0 if none.
func twccID(c *client) uint8 {
	toServer, _ := c.signalsSent()
	re := regexp.MustCompile(`a=extmap:(\d+) http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`)
	for _, sig := range toServer {
		if sig.Target == media.TargetPublisher && sig.Type == media.SignalOffer {
			if m := re.FindStringSubmatch(sig.SDP); m != nil {
				id, _ := strconv.Atoi(m[1])
				return uint8(id)
			}
		}
	}
	return 0
}

func (l *rtcpLog) nacked(seq uint16) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nacks[seq]
}

// With every packet on the fast receive path, the publisher's receive
// interceptors still see them: a gap in the video's sequence numbers is
// NACKed to the publisher, and receiver reports and TWCC feedback keep
// reaching it.
func TestRxFastNackReportsAndTWCC(t *testing.T) {
	s := newSFU(t, testConfig())
	log := &rtcpLog{nacks: make(map[uint16]bool)}
	cfg := peerConfig(true)
	cfg.Audio, cfg.NoSyntheticMedia = false, true
	cfg.OnPublisherRTCP = log.add
	pub := join(t, s, "room1", "alice", true, cfg)

	// The test writes the video: a packet every 5 ms, skipping the ones
	// in skip, with a transport-wide sequence number (as browsers send).
	eventually(t, 10*time.Second, "alice's offer", func() bool { return twccID(pub) != 0 })
	twccExt := twccID(pub)
	var skipMu sync.Mutex
	skip := map[uint16]bool{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(1000); ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			skipMu.Lock()
			skipped := skip[seq]
			skipMu.Unlock()
			if skipped {
				continue
			}
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 450, Marker: true},
				Payload: []byte{0x10, 0x00, 0x9d, 0x01, 0x2a}}
			if err := pkt.Header.SetExtension(twccExt, []byte{byte(seq >> 8), byte(seq)}); err != nil {
				panic(err)
			}
			_ = pub.peer.WriteRTP(peer.KindVideo, pkt)
		}
	}()
	defer func() { close(stop); <-done }()

	eventually(t, 10*time.Second, "video on the fast receive path", func() bool { return s.Stats().PacketsInFast > 100 })
	viaPion := pionIn(s)
	rrs, twcc, _ := log.counts()
	// Skip three packets a little ahead of the writer.
	ahead := uint16(s.Stats().PacketsIn) + 1000 + 40
	skipMu.Lock()
	for i := uint16(0); i < 3; i++ {
		skip[ahead+i] = true
	}
	skipMu.Unlock()
	eventually(t, 10*time.Second, "NACKs for the skipped packets", func() bool {
		return log.nacked(ahead) && log.nacked(ahead+1) && log.nacked(ahead+2)
	})
	eventually(t, 10*time.Second, "receiver reports past the gap and more TWCC feedback", func() bool {
		r, c, highest := log.counts()
		return r > rrs && c > twcc+5 && highest-ahead < 1<<15
	})
	if more := pionIn(s) - viaPion; more > 20 {
		t.Errorf("%d packets came through Pion after the switch", more)
	}
	if st := s.Stats(); st.PacketsInFastDropped != 0 {
		t.Errorf("fast receive path dropped %d", st.PacketsInFastDropped)
	}
}

// With all its RTP on the fast receive path (none of it through Pion's
// ICE connection), a publisher connection stays connected past Pion's
// disconnected timeout (5 s) twice over: ICE's own checks keep it alive.
func TestRxFastKeepsICEConnected(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 11 s")
	}
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	eventually(t, 10*time.Second, "packets on the fast receive path", func() bool { return s.Stats().PacketsInFast > 50 })
	viaPion, fast := pionIn(s), s.Stats().PacketsInFast
	end := time.Now().Add(11 * time.Second)
	for time.Now().Before(end) {
		if st := media.PublisherState(pub.part); st != "connected" {
			t.Fatalf("publisher connection %s at the SFU", st)
		}
		if p, _ := pub.peer.States(); p.String() != "connected" {
			t.Fatalf("publisher connection %s at the client", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if more := pionIn(s) - viaPion; more > 20 {
		t.Errorf("%d packets came through Pion after the switch", more)
	}
	if got := s.Stats().PacketsInFast - fast; got < 500 {
		t.Errorf("only %d packets on the fast receive path in 11 s", got)
	}
	checkClean(t, pub, sub)
}

// A publisher's ICE restart keeps its media on the fast receive path.
func TestRxFastAfterPublisherICERestart(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	eventually(t, 10*time.Second, "packets on the fast receive path", func() bool { return s.Stats().PacketsInFast > 50 })
	before := pub.peer.LocalUfrag(media.TargetPublisher)
	if err := pub.peer.RestartICE(media.TargetPublisher); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "alice's publisher connection restarted", func() bool {
		return pub.peer.LocalUfrag(media.TargetPublisher) != before && pub.peer.Connected()
	})
	fast := s.Stats().PacketsInFast
	got := sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets
	eventually(t, 10*time.Second, "more video through the fast receive path", func() bool {
		return s.Stats().PacketsInFast > fast+100 &&
			sub.peer.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > got+100
	})
	if st := s.Stats(); st.PacketsInFastDropped != 0 {
		t.Errorf("fast receive path dropped %d", st.PacketsInFastDropped)
	}
	checkClean(t, pub, sub)
}

// When the publisher leaves, its tracks end at the subscriber and its
// SSRCs leave the fast receive path; a new publisher is taken on it.
func TestRxFastPublisherLeaves(t *testing.T) {
	s := newSFU(t, testConfig())
	pub := join(t, s, "room1", "alice", true, peerConfig(true))
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 10*time.Second, "bob receiving alice", func() bool { return receiving(sub, 50, pub) })
	eventually(t, 10*time.Second, "packets on the fast receive path", func() bool { return s.Stats().PacketsInFast > 50 })
	if n := media.RxStreams(s); n < 2 {
		t.Errorf("%d SSRCs on the fast receive path, want audio and video at least", n)
	}
	pub.part.Close()
	if r := pub.waitGone(t, 10*time.Second); r != media.Left {
		t.Errorf("alice gone with %v", r)
	}
	eventually(t, 10*time.Second, "alice's tracks ended at bob", func() bool {
		got := sub.peer.Received()
		return got[peer.TrackKey{StreamID: "alice", Kind: "video"}].Ended && got[peer.TrackKey{StreamID: "alice", Kind: "audio"}].Ended
	})
	if n := media.RxStreams(s); n != 0 {
		t.Errorf("%d SSRCs still on the fast receive path", n)
	}
	carol := join(t, s, "room1", "carol", true, peerConfig(true))
	fast := s.Stats().PacketsInFast
	eventually(t, 10*time.Second, "bob receiving carol", func() bool { return receiving(sub, 50, carol) })
	eventually(t, 10*time.Second, "carol on the fast receive path", func() bool { return s.Stats().PacketsInFast > fast+50 })
}

// A publisher that reaches the SFU only through TURN (its selected pair's
// remote candidate is a relay) stays on Pion's receive path: its media
// flows, and nothing came through the fast one.
func TestRxFastRelayedPublisherStaysOnPion(t *testing.T) {
	cfg := turnserver.DefaultConfig()
	cfg.Enabled = true
	cfg.UDPPort, cfg.TCPPort, cfg.TLSPort, cfg.ListenIP, cfg.RelayIP = 0, 0, 0, "127.0.0.1", "127.0.0.1"
	cfg.Secret = "rxfast-test-secret-0123456789"
	ts, err := turnserver.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })

	s := newSFU(t, testConfig())
	pubCfg := peerConfig(true)
	for _, srv := range ts.ICEServers("alice") {
		pubCfg.ICEServers = append(pubCfg.ICEServers, webrtc.ICEServer{URLs: srv.URLs, Username: srv.Username, Credential: srv.Credential})
	}
	pubCfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	pub := join(t, s, "room1", "alice", true, pubCfg)
	sub := join(t, s, "room1", "bob", false, peerConfig(false))
	eventually(t, 15*time.Second, "bob receiving alice through TURN", func() bool { return receiving(sub, 100, pub) })
	if pair, _ := pub.peer.SelectedPairs(); pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
		t.Fatalf("alice's publisher pair %v, want a relayed one", pair)
	}
	if st := s.Stats(); st.PacketsInFast != 0 {
		t.Errorf("fast receive path took %d packets of a relayed publisher", st.PacketsInFast)
	}
	checkClean(t, pub, sub)
}

// The SFU's UDP port gets the receive buffer Config.UDPReadBuffer asks for
// (up to the kernel's cap): the fast receive path forwards in the port's
// reader goroutine, and this is what absorbs a moment without CPU.
func TestUDPReadBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads SO_RCVBUF")
	}
	cfg := testConfig()
	cfg.UDPReadBuffer = 1 << 20
	s := newSFU(t, cfg)
	got, err := media.ReadBuffer(s)
	if err != nil {
		t.Fatal(err)
	}
	want := 1 << 20
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
		if limit, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && limit < want {
			want = limit
		}
	}
	if got < want { // Linux reports twice what was set
		t.Errorf("SO_RCVBUF %d, want at least %d", got, want)
	}
	cfg.UDPReadBuffer = -1
	if _, err := media.New(cfg, nil); !errors.Is(err, media.ErrInvalidConfig) {
		t.Errorf("negative UDPReadBuffer: %v, want ErrInvalidConfig", err)
	}
}
