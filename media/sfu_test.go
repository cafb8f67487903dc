package media_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
)

// keyframeBudget is how soon after subscribing a subscriber must get a
// keyframe.
const keyframeBudget = time.Second

// negotiationBudget is how soon after a track is published (or its
// subscriber connected) its first packet must arrive.
const negotiationBudget = 5 * time.Second

// checkClean fails on anything a healthy client should not see.
func checkClean(t *testing.T, cs ...*client) {
	t.Helper()
	for _, c := range cs {
		server, peerErrs := c.errors()
		for _, err := range server {
			t.Errorf("%s: SFU rejected a peer signal: %v", c.id, err)
		}
		for _, err := range peerErrs {
			t.Errorf("%s: peer rejected an SFU signal: %v", c.id, err)
		}
		c.mu.Lock()
		if c.overflow > 0 {
			t.Errorf("%s: %d signals dropped", c.id, c.overflow)
		}
		if c.connectedCount > 1 {
			t.Errorf("%s: OnConnected called %d times", c.id, c.connectedCount)
		}
		c.mu.Unlock()
	}
}

func TestThreePeersExchangeMedia(t *testing.T) {
	s := newSFU(t, testConfig())
	clients := []*client{
		join(t, s, "room1", "alice", true, peerConfig(true)),
		join(t, s, "room1", "bob", true, peerConfig(true)),
		join(t, s, "room1", "carol", true, peerConfig(true)),
	}
	others := func(c *client) []*client {
		var out []*client
		for _, o := range clients {
			if o != c {
				out = append(out, o)
			}
		}
		return out
	}
	eventually(t, 10*time.Second, "every peer receiving the other two", func() bool {
		for _, c := range clients {
			if !receiving(c, 20, others(c)...) {
				return false
			}
		}
		return true
	})

	for _, c := range clients {
		got := c.peer.Received()
		if _, ok := got[peer.TrackKey{StreamID: c.id, Kind: "video"}]; ok {
			t.Errorf("%s receives its own video", c.id)
		}
		if len(got) != 4 {
			t.Errorf("%s receives %d tracks, want 4: %v", c.id, len(got), got)
		}
		if c.connected().IsZero() {
			t.Errorf("%s: OnConnected not called", c.id)
		}
		for _, f := range others(c) {
			v := got[peer.TrackKey{StreamID: f.id, Kind: "video"}]
			// Subscribing means the renegotiation that adds the track
			// completes and media starts flowing; that takes a few signal
			// round trips, whose time depends on the machine's load, so it
			// gets a generous bound. The keyframe must follow within the
			// budget.
			subscribed := latest(c.connected(), f.trackStart("video"))
			live := v.FirstPacket.Sub(subscribed)
			wait := v.FirstKeyframe.Sub(v.FirstPacket)
			t.Logf("%s <- %s: video %d pkts %d keyframes, first packet %v after subscribing, keyframe %v after that; audio %d pkts",
				c.id, f.id, v.Packets, v.Keyframes, live.Round(time.Millisecond), wait.Round(time.Millisecond),
				got[peer.TrackKey{StreamID: f.id, Kind: "audio"}].Packets)
			if live > negotiationBudget {
				t.Errorf("%s <- %s: first packet %v after subscribing, want <= %v", c.id, f.id, live, negotiationBudget)
			}
			if wait > keyframeBudget {
				t.Errorf("%s <- %s: first keyframe %v after the first packet, want <= %v", c.id, f.id, wait, keyframeBudget)
			}
		}
	}
	st := s.Stats()
	t.Logf("stats: %+v", st)
	if st.Rooms != 1 || st.Participants != 3 || st.PublishedTracks != 6 {
		t.Errorf("stats = %+v, want 1 room, 3 participants, 6 tracks", st)
	}
	if st.PacketsIn == 0 || st.PacketsOut < st.PacketsIn || st.BytesOut == 0 {
		t.Errorf("forwarding counters look wrong: %+v", st)
	}
	// Each peer receives 4 tracks, each registered with its batch.
	if n := media.BatchStreams(s); n != 12 {
		t.Errorf("%d SSRCs registered with batches, want 12 (3 subscribers × 4 tracks)", n)
	}
	// The forwarded packets went through Pion's write path into batches
	// (read after the stats: the count only grows).
	if n := media.BatchedDatagrams(s); n < st.PacketsOut/2 {
		t.Errorf("%d datagrams sent in batches, want about the %d packets out", n, st.PacketsOut)
	}
	checkClean(t, clients...)
}

// waitKeyframeRequestsQuiet waits until no keyframe request has reached the
// SFU from a subscriber or left it for a publisher for longer than the PLI
// throttle: every request made so far has been served, and the throttle
// sends the next one at once.
func waitKeyframeRequestsQuiet(t *testing.T, s *media.SFU) {
	t.Helper()
	quiet := testConfig().PLIThrottle + 100*time.Millisecond
	count := func() uint64 { st := s.Stats(); return st.KeyframeRequestsIn + st.KeyframeRequestsOut }
	last, changed := count(), time.Now()
	eventually(t, 10*time.Second, "keyframe requests quiet for "+quiet.String(), func() bool {
		if n := count(); n != last {
			last, changed = n, time.Now()
		}
		return time.Since(changed) > quiet
	})
}

func TestLateJoinerGetsKeyframe(t *testing.T) {
	s := newSFU(t, testConfig())
	alice := join(t, s, "room1", "alice", true, peerConfig(true))
	bob := join(t, s, "room1", "bob", true, peerConfig(true))
	eventually(t, 10*time.Second, "alice and bob exchanging media", func() bool {
		return receiving(alice, 20, bob) && receiving(bob, 20, alice)
	})
	// The initial keyframe requests are over and aged past the throttle,
	// so the late joiner's keyframe must come from a request made for it.
	waitKeyframeRequestsQuiet(t, s)
	plisBefore := alice.peer.PLIsReceived() + bob.peer.PLIsReceived()
	requestsInBefore := s.Stats().KeyframeRequestsIn

	// The late joiner never asks for keyframes itself: any keyframe it gets
	// within the budget was requested by the SFU when it subscribed.
	lateCfg := peerConfig(false)
	lateCfg.NoKeyframeRequests = true
	late := join(t, s, "room1", "late", false, lateCfg)
	eventually(t, 5*time.Second, "late joiner receiving alice and bob", func() bool {
		return receiving(late, 5, alice, bob)
	})
	got := late.peer.Received()
	for _, f := range []*client{alice, bob} {
		v := got[peer.TrackKey{StreamID: f.id, Kind: "video"}]
		sinceJoin := v.FirstKeyframe.Sub(late.joinedAt)
		t.Logf("late <- %s: first packet %v, first keyframe %v after Join (connected after %v)", f.id,
			v.FirstPacket.Sub(late.joinedAt).Round(time.Millisecond), sinceJoin.Round(time.Millisecond),
			late.connected().Sub(late.joinedAt).Round(time.Millisecond))
		if sinceJoin > keyframeBudget {
			t.Errorf("late <- %s: first keyframe %v after Join, want <= %v", f.id, sinceJoin, keyframeBudget)
		}
	}
	if after := alice.peer.PLIsReceived() + bob.peer.PLIsReceived(); after < plisBefore+2 {
		t.Errorf("publishers got %d keyframe requests for the late joiner, want >= 2", after-plisBefore)
	}
	if n := late.peer.PLIsSent(); n != 0 {
		t.Errorf("late joiner sent %d PLIs, want 0", n)
	}
	if n := s.Stats().KeyframeRequestsIn - requestsInBefore; n != 0 {
		t.Errorf("SFU received %d subscriber keyframe requests meanwhile, want 0", n)
	}
	checkClean(t, alice, bob, late)
}

// TestSubscriberPLIForwardedWithThrottle: a burst of PLIs from a subscriber
// reaches the publisher as at most two PLIs (one at once, one merged at the
// end of the throttle interval), and a fresh keyframe reaches the subscriber.
func TestSubscriberPLIForwardedWithThrottle(t *testing.T) {
	s := newSFU(t, testConfig())
	alice := join(t, s, "room1", "alice", true, peerConfig(true))
	bob := join(t, s, "room1", "bob", true, peerConfig(true))
	eventually(t, 10*time.Second, "alice and bob exchanging media", func() bool {
		return receiving(alice, 20, bob) && receiving(bob, 20, alice)
	})
	waitKeyframeRequestsQuiet(t, s) // the throttle is open, as above

	aliceVideo := peer.TrackKey{StreamID: "alice", Kind: media.KindVideo}
	plisBefore := alice.peer.PLIsReceived()
	keyframesBefore := bob.peer.Received()[aliceVideo].Keyframes
	inBefore := s.Stats().KeyframeRequestsIn
	const burst = 10
	start := time.Now()
	for i := 0; i < burst; i++ {
		if err := bob.peer.RequestKeyframe(aliceVideo); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	eventually(t, time.Second, "a fresh keyframe at bob", func() bool {
		return bob.peer.Received()[aliceVideo].Keyframes > keyframesBefore
	})
	t.Logf("fresh keyframe %v after the first PLI", time.Since(start).Round(time.Millisecond))
	eventually(t, 2*time.Second, "the SFU counting the burst", func() bool {
		return s.Stats().KeyframeRequestsIn-inBefore >= burst
	})
	// Wait out one throttle interval and a bit for the merged PLI.
	eventually(t, 2*time.Second, "two PLIs at alice", func() bool {
		return alice.peer.PLIsReceived()-plisBefore >= 2
	})
	// Nothing more may come: a third PLI would be sent within a throttle
	// interval of the second, and end the quiet.
	waitKeyframeRequestsQuiet(t, s)
	if n := alice.peer.PLIsReceived() - plisBefore; n != 2 {
		t.Errorf("alice got %d PLIs for a burst of %d, want 2", n, burst)
	}
	checkClean(t, alice, bob)
}

func TestLeaveAndVanish(t *testing.T) {
	s, err := media.New(vanishConfig(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	alice := join(t, s, "room1", "alice", true, peerConfig(true))
	bob := join(t, s, "room1", "bob", true, peerConfig(true))
	carol := join(t, s, "room1", "carol", true, peerConfig(true))
	eventually(t, 10*time.Second, "media flowing between all three", func() bool {
		return receiving(alice, 10, bob, carol) && receiving(bob, 10, alice, carol) && receiving(carol, 10, alice, bob)
	})

	// Bob leaves politely.
	bob.part.Close()
	if r := bob.waitGone(t, 5*time.Second); r != media.Left {
		t.Errorf("bob OnGone(%v), want Left", r)
	}
	checkEnded(t, bob)
	eventually(t, 5*time.Second, "bob's tracks ended at alice and carol", func() bool {
		return tracksEnded(alice, bob) && tracksEnded(carol, bob)
	})

	// Carol vanishes: no signal, no packet, nothing closed.
	lostAt := time.Now()
	carol.vanish()
	if r := carol.waitGone(t, 10*time.Second); r != media.ConnectionLost {
		t.Errorf("carol OnGone(%v), want ConnectionLost", r)
	}
	t.Logf("carol removed %v after vanishing", time.Since(lostAt).Round(time.Millisecond))
	checkEnded(t, carol)
	eventually(t, 5*time.Second, "carol's tracks ended at alice", func() bool {
		return tracksEnded(alice, carol)
	})
	if st := s.Stats(); st.Rooms != 1 || st.Participants != 1 || st.PublishedTracks != 2 {
		t.Errorf("stats after two left = %+v, want 1 room, 1 participant, 2 tracks", st)
	}

	alice.part.Close()
	if r := alice.waitGone(t, 5*time.Second); r != media.Left {
		t.Errorf("alice OnGone(%v), want Left", r)
	}
	if st := s.Stats(); st.Rooms != 0 || st.Participants != 0 || st.PublishedTracks != 0 {
		t.Errorf("stats after everyone left = %+v, want empty", st)
	}
	// Every subscriber track was unbound: no SSRC is left routed to a batch.
	if n := media.BatchStreams(s); n != 0 {
		t.Errorf("%d SSRCs still registered with batches after everyone left", n)
	}
	for _, c := range []*client{alice, bob, carol} {
		c.close()
		if c.goneCount != 1 {
			t.Errorf("%s: OnGone called %d times", c.id, c.goneCount)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("SFU.Close: %v", err)
	}
	goleak.VerifyNone(t, pionSRTPAcceptLeak)
}

// checkEnded checks that c's published tracks were reported ended, before
// OnGone, as often as they were reported started.
func checkEnded(t *testing.T, c *client) {
	t.Helper()
	balance := map[string]int{}
	for _, e := range c.trackEvents() {
		if e.available {
			balance[e.kind]++
		} else {
			balance[e.kind]--
		}
	}
	for _, kind := range []string{media.KindAudio, media.KindVideo} {
		if n := balance[kind]; n != 0 {
			t.Errorf("%s: %s OnTrack start/end balance %d, want 0 (events %v)", c.id, kind, n, c.trackEvents())
		}
	}
	if len(c.trackEvents()) != 4 {
		t.Errorf("%s: %d OnTrack events, want 4", c.id, len(c.trackEvents()))
	}
}

// tracksEnded reports whether both tracks of from ended at c.
func tracksEnded(c, from *client) bool {
	got := c.peer.Received()
	return got[peer.TrackKey{StreamID: from.id, Kind: "audio"}].Ended &&
		got[peer.TrackKey{StreamID: from.id, Kind: "video"}].Ended
}

func TestAudienceCannotPublish(t *testing.T) {
	s := newSFU(t, testConfig())
	speaker := join(t, s, "room1", "speaker", true, peerConfig(true))
	// The audience peer tries to publish anyway.
	viewer := join(t, s, "room1", "viewer", false, peerConfig(true))
	eventually(t, 10*time.Second, "viewer receiving the speaker", func() bool {
		return receiving(viewer, 10, speaker)
	})
	serverErrs, _ := viewer.errors()
	if len(serverErrs) == 0 || !errors.Is(serverErrs[0], media.ErrCannotPublish) {
		t.Errorf("viewer's publisher offer: errors %v, want ErrCannotPublish", serverErrs)
	}
	for _, err := range serverErrs {
		if !errors.Is(err, media.ErrCannotPublish) {
			t.Errorf("viewer: unexpected error %v", err)
		}
	}
	if got := speaker.peer.Received(); len(got) != 0 {
		t.Errorf("speaker receives %v from an audience member", got)
	}
	if st := s.Stats(); st.PublishedTracks != 2 {
		t.Errorf("published tracks = %d, want 2 (the speaker's)", st.PublishedTracks)
	}
	if viewer.connected().IsZero() {
		t.Error("viewer: OnConnected not called")
	}
	if evs := viewer.trackEvents(); len(evs) != 0 {
		t.Errorf("viewer: OnTrack events %v, want none", evs)
	}
	checkClean(t, speaker)
}

func TestJoinErrors(t *testing.T) {
	if _, err := media.New(media.Config{UDPPort: -1}, nil); !errors.Is(err, media.ErrInvalidConfig) {
		t.Errorf("New(UDPPort -1) = %v, want ErrInvalidConfig", err)
	}
	if _, err := media.New(media.Config{ListenIP: "nope"}, nil); !errors.Is(err, media.ErrInvalidConfig) {
		t.Errorf("New(ListenIP nope) = %v, want ErrInvalidConfig", err)
	}
	s, err := media.New(testConfig(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	send := func(media.Signal) {}
	for _, tc := range []struct {
		room, id string
		opts     media.JoinOptions
		want     error
	}{
		{"", "a", media.JoinOptions{Send: send}, media.ErrInvalidID},
		{"r", "", media.JoinOptions{Send: send}, media.ErrInvalidID},
		{"r", "a b", media.JoinOptions{Send: send}, media.ErrInvalidID},
		{"r", "a:b", media.JoinOptions{Send: send}, media.ErrInvalidID},
		{"r", string(make([]byte, 65)), media.JoinOptions{Send: send}, media.ErrInvalidID},
		{"r", "a", media.JoinOptions{}, media.ErrInvalidConfig},
	} {
		if _, err := s.Join(tc.room, tc.id, tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("Join(%q, %q) = %v, want %v", tc.room, tc.id, err, tc.want)
		}
	}
	var gone []media.LeaveReason
	p, err := s.Join("r", "a", media.JoinOptions{Send: send, OnGone: func(r media.LeaveReason) { gone = append(gone, r) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join("r", "a", media.JoinOptions{Send: send}); !errors.Is(err, media.ErrDuplicateParticipant) {
		t.Errorf("second Join(r, a) = %v, want ErrDuplicateParticipant", err)
	}
	if _, err := s.Join("other", "a", media.JoinOptions{Send: send}); err != nil {
		t.Errorf("Join(other, a) = %v, want nil (another room)", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0] != media.Left {
		t.Errorf("OnGone after SFU.Close: %v, want [Left]", gone)
	}
	if err := p.HandleSignal(candidateSignal(media.TargetSubscriber, loopbackCandidate)); !errors.Is(err, media.ErrClosed) {
		t.Errorf("HandleSignal after close = %v, want ErrClosed", err)
	}
	if _, err := s.Join("r", "b", media.JoinOptions{Send: send}); !errors.Is(err, media.ErrClosed) {
		t.Errorf("Join after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// The fan-out encrypts every packet once per subscriber: the subscriber
// connection uses AES-128-GCM, the cheapest profile with AES-NI, when the
// client offers it (Pion offers AES-256-GCM first).
func TestSubscriberConnectionUsesAES128GCM(t *testing.T) {
	s := newSFU(t, testConfig())
	c := join(t, s, "room1", "alice", false, peerConfig(false))
	eventually(t, 10*time.Second, "subscriber connection up", func() bool {
		return c.peer.SRTPCipher(media.TargetSubscriber) != ""
	})
	if got := c.peer.SRTPCipher(media.TargetSubscriber); got != "SRTP_AEAD_AES_128_GCM" {
		t.Errorf("subscriber SRTP profile %q, want SRTP_AEAD_AES_128_GCM", got)
	}
	checkClean(t, c)
}
