package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is the whole stack (webtest), with an extra admitter when a test
// gives one.
type server struct{ *webtest.Stack }

// admitList admits listed users through its claims on their rooms.
type admitList struct {
	mu     sync.Mutex
	ok     map[string]bool // "user/room"
	claims map[string]*rooms.Claim
}

func (a *admitList) Admit(user, room string) *rooms.Claim {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ok[user+"/"+room] {
		return nil
	}
	return a.claims[room]
}

// claim claims room for the list.
func (a *admitList) claim(t *testing.T, m *rooms.Manager, room string) *rooms.Claim {
	t.Helper()
	c, err := m.Claim(room)
	if err != nil {
		t.Fatalf("claim %s: %v", room, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.claims == nil {
		a.claims = map[string]*rooms.Claim{}
	}
	a.claims[room] = c
	return c
}

func newServer(t *testing.T, mcfg media.Config, rcfg rooms.Config, admit rooms.Admitter) *server {
	t.Helper()
	st := webtest.Start(t, webtest.Options{Media: mcfg, Rooms: rcfg})
	if admit != nil {
		st.Rooms.AddAdmitter(admit)
	}
	return &server{st}
}

func (s *server) dial(user string) *client.Client { return s.Dial(user) }

func (s *server) roomToken(user, room string) string { return s.RoomToken(user, room) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func peerCfg() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true,
		VideoBitrate: 200_000, VideoFPS: 20, KeyframeInterval: 10 * time.Second}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// participant returns user's entry in r's enterRoom reply, if any.
func participant(r *roomclient.Room, user string) (rooms.ParticipantInfo, bool) {
	for _, p := range r.Result().Participants {
		if p.UserID == user {
			return p, true
		}
	}
	return rooms.ParticipantInfo{}, false
}

func byUser(user string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			UserID string `json:"userID"`
		}
		return ev.Decode(&v) == nil && v.UserID == user
	}
}

// receives reports whether r got at least n packets of both kinds from each of users.
func receives(r *roomclient.Room, n uint64, users ...string) bool {
	got := r.Received()
	for _, u := range users {
		for _, k := range []string{media.KindAudio, media.KindVideo} {
			if got[peer.TrackKey{StreamID: u, Kind: k}].Packets < n {
				return false
			}
		}
	}
	return true
}

// TestThreeParticipantsExchangeMedia: each of three Go clients receives the
// other two's audio and video, with a keyframe within 1 s of subscribing,
// and sees the TRTC events for the others.
func TestThreeParticipantsExchangeMedia(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	users := []string{"alice", "bob", "carol"}
	conns := map[string]*client.Client{}
	rs := map[string]*roomclient.Room{}
	for _, u := range users {
		conns[u] = s.dial(u)
		r, err := roomclient.Enter(c, conns[u], "room-1", roomclient.Options{RoomToken: s.roomToken(u, "room-1"), Peer: peerCfg()})
		if err != nil {
			t.Fatalf("%s enter: %v", u, err)
		}
		defer r.Close()
		rs[u] = r
	}
	for _, u := range users {
		var others []string
		for _, o := range users {
			if o != u {
				others = append(others, o)
			}
		}
		eventually(t, 15*time.Second, u+" receiving audio and video from "+strings.Join(others, ","), func() bool { return receives(rs[u], 20, others...) })
		for _, o := range others {
			key := peer.TrackKey{StreamID: o, Kind: media.KindVideo}
			// Twenty packets may arrive before the keyframe: wait for it,
			// or for its second to pass.
			eventually(t, 5*time.Second, u+" keyframe from "+o, func() bool {
				st := rs[u].Received()[key]
				return st.Keyframes > 0 || time.Since(st.Started) > time.Second
			})
			st := rs[u].Received()[key]
			if st.Keyframes == 0 || st.FirstKeyframe.Sub(st.Started) > time.Second {
				t.Errorf("%s from %s: first keyframe %v after the track started (keyframes %d), want within 1 s",
					u, o, st.FirstKeyframe.Sub(st.Started), st.Keyframes)
			}
			t.Logf("%s <- %s: video %d packets, first keyframe %v after start", u, o, st.Packets, st.FirstKeyframe.Sub(st.Started))
			// An anchor whose media connected before u entered is in u's
			// enterRoom reply (ROOMS.md); one that connected later is
			// announced by events.
			if p, ok := participant(rs[u], o); ok {
				if !p.Video {
					if _, err := conns[u].WaitEvent(c, rooms.EvUserVideoAvailable, byUser(o)); err != nil {
						t.Fatalf("%s: video of %s: %v", u, o, err)
					}
				}
				continue
			}
			if _, err := conns[u].WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser(o)); err != nil {
				t.Fatalf("%s: enter of %s: %v", u, o, err)
			}
			if _, err := conns[u].WaitEvent(c, rooms.EvUserVideoAvailable, byUser(o)); err != nil {
				t.Fatalf("%s: video of %s: %v", u, o, err)
			}
		}
		if _, err := conns[u].WaitEvent(c, rooms.EvEnterRoom, nil); err != nil {
			t.Fatalf("%s: onEnterRoom: %v", u, err)
		}
		for _, err := range rs[u].Errors() {
			t.Errorf("%s negotiation error: %v", u, err)
		}
	}
	// A late joiner is told who is there and sees video at once (keyframe on subscribe).
	dave := s.dial("dave")
	rd, err := roomclient.Enter(c, dave, "room-1", roomclient.Options{RoomToken: s.roomToken("dave", "room-1"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if n := len(rd.Result().Participants); n != 3 {
		t.Fatalf("late joiner sees %d participants, want 3: %+v", n, rd.Result().Participants)
	}
	for _, p := range rd.Result().Participants {
		if !p.Audio || !p.Video {
			t.Errorf("participant %+v listed without audio or video", p)
		}
	}
	eventually(t, 15*time.Second, "late joiner receiving", func() bool { return receives(rd, 5, users...) })
	eventually(t, 3*time.Second, "late joiner's first keyframes", func() bool {
		for _, u := range users {
			if rd.Received()[peer.TrackKey{StreamID: u, Kind: media.KindVideo}].Keyframes == 0 {
				return false
			}
		}
		return true
	})
	for _, u := range users {
		st := rd.Received()[peer.TrackKey{StreamID: u, Kind: media.KindVideo}]
		if st.Keyframes == 0 || st.FirstKeyframe.Sub(st.Started) > time.Second {
			t.Errorf("late joiner from %s: first keyframe %v after start (keyframe interval is 10 s: only a PLI explains a fast one)", u, st.FirstKeyframe.Sub(st.Started))
		}
	}
}

// TestLeaveReasons: one leaves with exitRoom (reason 0), one vanishes
// without a word (reason 1); the rest are told, and the tracks end.
func TestLeaveReasons(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	conns := map[string]*client.Client{}
	rs := map[string]*roomclient.Room{}
	for _, u := range []string{"alice", "bob", "carol"} {
		conns[u] = s.dial(u)
		r, err := roomclient.Enter(c, conns[u], "r2", roomclient.Options{RoomToken: s.roomToken(u, "r2"), Peer: peerCfg()})
		if err != nil {
			t.Fatal(err)
		}
		rs[u] = r
	}
	defer rs["alice"].Close()
	eventually(t, 15*time.Second, "alice receiving", func() bool { return receives(rs["alice"], 10, "bob", "carol") })

	if err := rs["bob"].Exit(c); err != nil {
		t.Fatal(err)
	}
	ev, err := conns["alice"].WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("bob"))
	if err != nil {
		t.Fatal(err)
	}
	var leave rooms.RemoteLeaveEvent
	_ = ev.Decode(&leave)
	if leave.Reason != 0 {
		t.Fatalf("bob left with exitRoom: reason %d, want 0", leave.Reason)
	}
	if _, err := conns["bob"].WaitEvent(c, rooms.EvExitRoom, nil); err != nil {
		t.Fatalf("bob's onExitRoom: %v", err)
	}

	// carol vanishes: her media and WebSocket just stop.
	rs["carol"].Peer().Cut()
	rs["carol"].Close()
	_ = conns["carol"].Close()
	ev, err = conns["alice"].WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("carol"))
	if err != nil {
		t.Fatal(err)
	}
	_ = ev.Decode(&leave)
	if leave.Reason != 1 {
		t.Fatalf("carol vanished: reason %d, want 1", leave.Reason)
	}
	eventually(t, 10*time.Second, "the departed users' tracks to end at alice", func() bool {
		got := rs["alice"].Received()
		for _, u := range []string{"bob", "carol"} {
			for _, k := range []string{media.KindAudio, media.KindVideo} {
				if !got[peer.TrackKey{StreamID: u, Kind: k}].Ended {
					return false
				}
			}
		}
		return true
	})
	if err := rs["alice"].Exit(c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the empty room to disappear", func() bool { return s.Rooms.RoomCount() == 0 })
}

// TestMediaLossRemovesParticipant: media that stops (no WebSocket close)
// removes the participant after the grace period with reason 1.
func TestMediaLossRemovesParticipant(t *testing.T) {
	s := newServer(t, media.Config{ICEDisconnectedTimeout: time.Second, ICEFailedTimeout: time.Second,
		ICEKeepaliveInterval: 200 * time.Millisecond, ICEDisconnectedGrace: 500 * time.Millisecond}, rooms.Config{}, nil)
	c := ctx(t)
	a, b := s.dial("alice"), s.dial("bob")
	ra, err := roomclient.Enter(c, a, "r3", roomclient.Options{RoomToken: s.roomToken("alice", "r3"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := roomclient.Enter(c, b, "r3", roomclient.Options{RoomToken: s.roomToken("bob", "r3"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	eventually(t, 15*time.Second, "media flowing", func() bool { return receives(ra, 10, "bob") })
	start := time.Now()
	rb.Peer().Cut()
	ev, err := a.WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("bob"))
	if err != nil {
		t.Fatal(err)
	}
	var leave rooms.RemoteLeaveEvent
	_ = ev.Decode(&leave)
	if leave.Reason != 1 {
		t.Fatalf("reason %d, want 1", leave.Reason)
	}
	t.Logf("media loss detected and bob removed after %v", time.Since(start))
	// Bob's WebSocket lives on: he is told he is out of the room.
	ev, err = b.WaitEvent(c, rooms.EvExitRoom, nil)
	if err != nil {
		t.Fatalf("bob: no onExitRoom after his media was lost: %v", err)
	}
	var exit rooms.ExitRoomEvent
	if err := ev.Decode(&exit); err != nil || exit.Reason != int(rooms.ExitConnectionLost) || exit.RoomID != "r3" {
		t.Fatalf("bob: onExitRoom %+v (%v), want room r3 reason %d", exit, err, rooms.ExitConnectionLost)
	}
}

func TestAdmission(t *testing.T) {
	admit := &admitList{ok: map[string]bool{"carol/call-room": true}}
	s := newServer(t, media.Config{}, rooms.Config{MaxRoomsPerUser: 1}, admit)
	admit.claim(t, s.Rooms, "call-room")
	c := ctx(t)
	a := s.dial("alice")
	cases := []struct {
		name string
		args rooms.EnterArgs
		want *protocol.Error
	}{
		{"no token", rooms.EnterArgs{RoomID: "r"}, rooms.ErrNotAdmitted},
		{"token for another room", rooms.EnterArgs{RoomID: "r", RoomToken: s.roomToken("alice", "other")}, rooms.ErrNotAdmitted},
		{"token for another user", rooms.EnterArgs{RoomID: "r", RoomToken: s.roomToken("bob", "r")}, rooms.ErrNotAdmitted},
		{"session token as room token", rooms.EnterArgs{RoomID: "r", RoomToken: func() string { t, _, _ := s.Auth.Issue("alice", "", time.Hour); return t }()}, rooms.ErrNotAdmitted},
		{"garbage token", rooms.EnterArgs{RoomID: "r", RoomToken: "x.y.z"}, rooms.ErrNotAdmitted},
		{"bad room id", rooms.EnterArgs{RoomID: "a room"}, protocol.ErrInvalidParameter},
		{"bad role", rooms.EnterArgs{RoomID: "r", Role: "king", RoomToken: s.roomToken("alice", "r")}, protocol.ErrInvalidParameter},
		{"admitted by someone else's call", rooms.EnterArgs{RoomID: "call-room"}, rooms.ErrNotAdmitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Do(c, rooms.OpEnterRoom, tc.args, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want.Reason)
			}
		})
	}
	if n := s.Rooms.RoomCount(); n != 0 {
		t.Fatalf("refused entries created %d rooms", n)
	}
	// Not in the room: its ops are refused.
	if err := a.Do(c, rooms.OpExitRoom, rooms.RoomArgs{RoomID: "r"}, nil); !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("exitRoom outside: %v", err)
	}
	if err := a.Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "r", Mute: true}, nil); !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("mute outside: %v", err)
	}
	// The admitter lets carol in without a token.
	carol := s.dial("carol")
	rc, err := roomclient.Enter(c, carol, "call-room", roomclient.Options{Peer: peerCfg()})
	if err != nil {
		t.Fatalf("admitted user refused: %v", err)
	}
	defer rc.Close()
	// Rooms per user: carol is at her limit of 1.
	err = carol.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "second", RoomToken: s.roomToken("carol", "second")}, nil)
	if !errors.Is(err, rooms.ErrTooManyRooms) {
		t.Fatalf("second room: %v", err)
	}
}

// TestAudienceCannotPublish: an audience member receives but never
// publishes, and is invisible to the others.
func TestAudienceCannotPublish(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	a, v := s.dial("anchor"), s.dial("viewer")
	ra, err := roomclient.Enter(c, a, "show", roomclient.Options{RoomToken: s.roomToken("anchor", "show"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rv, err := roomclient.Enter(c, v, "show", roomclient.Options{Role: rooms.RoleAudience, RoomToken: s.roomToken("viewer", "show"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rv.Close()
	eventually(t, 15*time.Second, "the audience receiving the anchor", func() bool { return receives(rv, 10, "anchor") })
	err = v.Do(c, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: "show", Signal: media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: "v=0\r\n"}}, nil)
	if !errors.Is(err, rooms.ErrCannotPublish) && !errors.Is(err, rooms.ErrBadSignal) {
		t.Fatalf("audience publisher offer: %v", err)
	}
	if err := v.Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "show", Mute: false}, nil); !errors.Is(err, rooms.ErrCannotPublish) {
		t.Fatalf("audience mute: %v", err)
	}
	if err := a.ExpectNoEvent(c, 300*time.Millisecond, rooms.EvRemoteUserEnterRoom); err != nil {
		t.Fatalf("the audience member was announced: %v", err)
	}
	if got := ra.Received(); len(got) != 0 {
		t.Fatalf("the anchor received tracks from the audience: %v", got)
	}
}

func TestMuteEvents(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	a, b := s.dial("alice"), s.dial("bob")
	ra, err := roomclient.Enter(c, a, "m", roomclient.Options{RoomToken: s.roomToken("alice", "m"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := roomclient.Enter(c, b, "m", roomclient.Options{RoomToken: s.roomToken("bob", "m"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	// Alice's audio and video are available (bob hears of it by an event,
	// or in his enterRoom reply if her tracks came first): only then can a
	// mute make them unavailable.
	eventually(t, 15*time.Second, "alice's audio and video available", func() bool {
		for _, p := range s.Rooms.Members("m") {
			if p.UserID == "alice" {
				return p.Audio && p.Video
			}
		}
		return false
	})
	if err := a.Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "m", Mute: true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(c, rooms.EvUserVideoAvailable, func(ev client.Event) bool {
		var v rooms.AvailableEvent
		return ev.Decode(&v) == nil && v.UserID == "alice" && !v.Available
	}); err != nil {
		t.Fatalf("video still available after mute: %v", err)
	}
	if err := a.Do(c, rooms.OpMuteLocalAudio, rooms.MuteArgs{RoomID: "m", Mute: true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(c, rooms.EvUserAudioAvailable, func(ev client.Event) bool {
		var v rooms.AvailableEvent
		return ev.Decode(&v) == nil && v.UserID == "alice" && !v.Available
	}); err != nil {
		t.Fatal(err)
	}
}

// TestClaimIsOneAdmissionPath: a room ID is entered through one path. A
// room with members cannot be claimed; a claimed ID refuses room tokens and
// admits only through its claim; releasing a claim removes the members who
// entered through it (onExitRoom reason 2) and nothing else, and an
// outdated claim no longer touches the room ID.
func TestClaimIsOneAdmissionPath(t *testing.T) {
	admit := &admitList{ok: map[string]bool{"carol/claimed": true, "alice/claimed": true}}
	s := newServer(t, media.Config{}, rooms.Config{}, admit)
	c := ctx(t)
	alice, carol := s.dial("alice"), s.dial("carol")
	enter := func(cl *client.Client, room, token string) error {
		return cl.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, RoomToken: token}, nil)
	}
	inRoom := func(cl *client.Client, room string) bool {
		return cl.Do(c, rooms.OpMuteLocalAudio, rooms.MuteArgs{RoomID: room, Mute: true}, nil) == nil
	}
	// A token room with a member cannot be claimed.
	if err := enter(alice, "token-room", s.roomToken("alice", "token-room")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rooms.Claim("token-room"); !errors.Is(err, rooms.ErrRoomTaken) {
		t.Fatalf("claimed a room with a member: %v", err)
	}
	// A claimed ID: a second claim and room tokens are refused, the
	// claim's admitted users get in.
	old := admit.claim(t, s.Rooms, "claimed")
	s.Rooms.Release(old) // released before anyone entered: the ID is free again
	claim := admit.claim(t, s.Rooms, "claimed")
	if _, err := s.Rooms.Claim("claimed"); !errors.Is(err, rooms.ErrRoomTaken) {
		t.Fatalf("claimed twice: %v", err)
	}
	if err := enter(carol, "claimed", s.roomToken("carol", "claimed")); err != nil {
		t.Fatalf("carol is admitted by the claim (and holds a token): %v", err)
	}
	admit.mu.Lock()
	delete(admit.ok, "alice/claimed")
	admit.mu.Unlock()
	if err := enter(alice, "claimed", s.roomToken("alice", "claimed")); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("a token holder entered a claimed room: %v", err)
	}
	// An outdated claim neither removes nor lets anyone out.
	s.Rooms.Release(old)
	if s.Rooms.LeaveClaim(old, "carol") || !inRoom(carol, "claimed") {
		t.Fatal("an outdated claim removed carol")
	}
	// Releasing the claim removes its members, and only them.
	s.Rooms.Release(claim)
	ev, err := carol.WaitEvent(c, rooms.EvExitRoom, func(ev client.Event) bool {
		var e rooms.ExitRoomEvent
		return ev.Decode(&e) == nil && e.RoomID == "claimed"
	})
	if err != nil {
		t.Fatal(err)
	}
	var exit rooms.ExitRoomEvent
	if err := ev.Decode(&exit); err != nil || exit.Reason != int(rooms.ExitDismissed) {
		t.Fatalf("onExitRoom %+v %v, want reason 2", exit, err)
	}
	if inRoom(carol, "claimed") || !inRoom(alice, "token-room") {
		t.Fatal("release removed the wrong members")
	}
	// The ID is free: a token opens it again.
	if err := enter(alice, "claimed", s.roomToken("alice", "claimed")); err != nil {
		t.Fatalf("token entry after the release: %v", err)
	}
}

// TestMediaNeverConnectedIsRemoved: a member that enters but never
// completes ICE (a bare client that ignores the server's offer) is removed
// after Config.ConnectTimeout with onExitRoom reason 3; the others never
// saw it enter and hear nothing; a member whose media connected stays.
func TestMediaNeverConnectedIsRemoved(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	const timeout = 20 * time.Second
	s := &server{webtest.Start(t, webtest.Options{Rooms: rooms.Config{ConnectTimeout: timeout}, RoomsClock: clock})}
	c := ctx(t)
	a, b := s.dial("alice"), s.dial("bob")
	ra, err := roomclient.Enter(c, a, "r9", roomclient.Options{RoomToken: s.roomToken("alice", "r9"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if _, err := a.WaitEvent(c, rooms.EvEnterRoom, nil); err != nil {
		t.Fatalf("alice's media: %v", err)
	}
	// bob enters and then does nothing: no answer, no candidates.
	if err := b.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "r9", RoomToken: s.roomToken("bob", "r9")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, n := s.Rooms.Counts(); n != 2 {
		t.Fatalf("%d members after bob entered, want 2", n)
	}
	clock.Advance(timeout - time.Millisecond)
	if _, n := s.Rooms.Counts(); n != 2 {
		t.Fatalf("bob removed before the connect timeout (%d members)", n)
	}
	clock.Advance(time.Millisecond)
	ev, err := b.WaitEvent(c, rooms.EvExitRoom, nil)
	if err != nil {
		t.Fatalf("bob's onExitRoom: %v", err)
	}
	var exit rooms.ExitRoomEvent
	if err := ev.Decode(&exit); err != nil || exit.RoomID != "r9" || exit.Reason != int(rooms.ExitConnectionLost) {
		t.Fatalf("bob's onExitRoom %+v %v, want room r9 reason 3", exit, err)
	}
	if _, n := s.Rooms.Counts(); n != 1 {
		t.Fatalf("%d members after bob's timeout, want alice alone", n)
	}
	if m := s.Rooms.Members("r9"); len(m) != 1 || m[0].UserID != "alice" {
		t.Fatalf("connected members %+v, want alice", m)
	}
	// bob is out: his signals are refused; alice never heard of him.
	err = b.Do(c, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: "r9", Signal: media.Signal{Target: media.TargetSubscriber, Type: media.SignalCandidate,
		Candidate: &webrtc.ICECandidateInit{}}}, nil)
	if !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("bob's signal after removal: %v, want not_in_room", err)
	}
	if err := a.ExpectNoEvent(c, 200*time.Millisecond, rooms.EvRemoteUserLeaveRoom); err != nil {
		t.Fatalf("alice heard of bob, who never connected: %v", err)
	}
	// Much later, alice (connected) is still in, and bob may enter again.
	clock.Advance(10 * timeout)
	if m := s.Rooms.Members("r9"); len(m) != 1 {
		t.Fatalf("connected members %+v after the timeout passed again", m)
	}
	if err := b.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "r9", RoomToken: s.roomToken("bob", "r9")}, nil); err != nil {
		t.Fatalf("bob enters again: %v", err)
	}
}

// TestRtcSignalErrorsNameTheField: a malformed rtcSignal is refused with a
// message naming the field by its path in the request (args.…) and saying
// what was expected; the codes are those of PROTOCOL.md and ROOMS.md.
func TestRtcSignalErrorsNameTheField(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	b := s.dial("bob")
	if err := b.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "r10", RoomToken: s.roomToken("bob", "r10")}, nil); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("m", 300)
	cases := []struct {
		args string
		code int
		msg  string
	}{
		{`{"roomID":"r10","target":"publisher","type":"candidate","candidate":{"candidate":"","sdpMLineIndex":-1}}`, 6017,
			`args.candidate.sdpMLineIndex must be a whole number from 0 to 65535, not -1`},
		{`{"roomID":"r10","target":"publisher","type":"candidate","candidate":{"candidate":"","sdpMLineIndex":"0"}}`, 6017,
			`args.candidate.sdpMLineIndex must be a whole number from 0 to 65535, not a string`},
		{`{"roomID":"r10","target":"publisher","type":"candidate","candidate":{"candidat":""}}`, 6017,
			`unknown field args.candidate.candidat: args.candidate takes candidate, sdpMid, sdpMLineIndex, usernameFragment`},
		{`{"roomID":"r10","target":7}`, 6017, `args.target must be a string, not a number`},
		{`{"roomID":"r10","target":"sideways","type":"candidate"}`, 11005, `args.target must be "publisher" or "subscriber", not "sideways"`},
		{`{"roomID":"r10","target":"subscriber","type":"candidate"}`, 11005,
			`args.candidate is required on a candidate: an object with candidate, sdpMid, sdpMLineIndex`},
		{`{"roomID":"r10","target":"subscriber","type":"candidate","candidate":{"candidate":"","sdpMid":"` + long + `"}}`, 11005,
			`args.candidate.sdpMid must be at most 256 bytes, not 300`},
		{`{"roomID":"r10","target":"subscriber","type":"offer","sdp":"v=0"}`, 11005,
			`args.type must be "answer" or "candidate" for target "subscriber" (the subscriber connection), not "offer"`},
	}
	for i, tc := range cases {
		_, err := b.DoRaw(c, fmt.Sprintf("s%d", i), rooms.OpRtcSignal, json.RawMessage(tc.args))
		var se *protocol.Error
		if !errors.As(err, &se) || se.Code != tc.code || se.Message != tc.msg {
			t.Errorf("%s:\n got %v\nwant %d %s", tc.args, err, tc.code, tc.msg)
		}
	}
}

// leaves records the observers' MemberLeft calls.
type leaves struct {
	mu  sync.Mutex
	got map[string]rooms.LeaveReason // user → reason
}

func (l *leaves) MemberConnected(string, string, rooms.Role, time.Time) {}

func (l *leaves) MemberLeft(_, user string, reason rooms.LeaveReason, _ time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got[user] = reason
}

func (l *leaves) reasons() map[string]rooms.LeaveReason {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]rooms.LeaveReason{}
	for u, r := range l.got {
		out[u] = r
	}
	return out
}

// TestDismissLostIsNotAKick: a room dismissed because its media node lets
// its members go (cluster mode: shutdown, ownership lost) is not a kick:
// every member gets onExitRoom reason 4, the one still in the room
// onRemoteUserLeaveRoom reason 4 for the other, and the observers (calls)
// MemberLeft with LeaveMediaNodeLost, so that a call waits for them to
// enter again instead of ending as kicked.
func TestDismissLostIsNotAKick(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	obs := &leaves{got: map[string]rooms.LeaveReason{}}
	s.Rooms.AddObserver(obs)
	c := ctx(t)
	conns := map[string]*client.Client{}
	for _, u := range []string{"alice", "bob"} {
		conns[u] = s.dial(u)
		r, err := roomclient.Enter(c, conns[u], "lost1", roomclient.Options{RoomToken: s.roomToken(u, "lost1"), Peer: peerCfg()})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := conns[u].WaitEvent(c, rooms.EvEnterRoom, nil); err != nil {
			t.Fatalf("%s's media: %v", u, err)
		}
	}
	s.Rooms.DismissLost("lost1")
	for _, u := range []string{"alice", "bob"} {
		ev, err := conns[u].WaitEvent(c, rooms.EvExitRoom, nil)
		if err != nil {
			t.Fatalf("%s's onExitRoom: %v", u, err)
		}
		var e rooms.ExitRoomEvent
		_ = ev.Decode(&e)
		if e.Reason != int(rooms.ExitMediaNodeLost) {
			t.Fatalf("%s's onExitRoom reason %d, want 4", u, e.Reason)
		}
	}
	ev, err := conns["bob"].WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("alice"))
	if err != nil {
		t.Fatal(err)
	}
	var leave rooms.RemoteLeaveEvent
	_ = ev.Decode(&leave)
	if leave.Reason != int(rooms.LeaveMediaNodeLost) {
		t.Fatalf("bob told alice left with reason %d, want 4", leave.Reason)
	}
	eventually(t, 5*time.Second, "both MemberLeft", func() bool { return len(obs.reasons()) == 2 })
	for u, r := range obs.reasons() {
		if r != rooms.LeaveMediaNodeLost {
			t.Fatalf("MemberLeft(%s) reason %d, want LeaveMediaNodeLost (4)", u, r)
		}
	}
}

// TestNoSignalAfterExit: a media signal that the participant's Pion
// callbacks produce after its membership ended (a late candidate, an
// answer in flight) is not delivered: the exitRoom reply is the member's
// last word, so a new entry of the same user on the same connection never
// takes a previous entry's answer for its own (seen in TestMediaNodeLost:
// the new publisher connection applied the old participant's answer and
// checked the wrong ICE credentials until the test gave up).
func TestNoSignalAfterExit(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	a := s.dial("alice")
	if err := a.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "late", RoomToken: s.roomToken("alice", "late")}, nil); err != nil {
		t.Fatal(err)
	}
	send := s.Rooms.SignalSenderForTest("late", "alice")
	if send == nil {
		t.Fatal("no membership")
	}
	marker := func(tag string) media.Signal {
		init := webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host " + tag}
		return media.Signal{Target: media.TargetSubscriber, Type: media.SignalCandidate, Candidate: &init}
	}
	carries := func(tag string) func(client.Event) bool {
		return func(e client.Event) bool { return strings.Contains(string(e.Data), tag) }
	}
	send(marker("before-exit"))
	if _, err := a.WaitEvent(c, rooms.EvRtcSignal, carries("before-exit")); err != nil {
		t.Fatalf("a signal of the member: %v", err)
	}
	if err := a.Do(c, rooms.OpExitRoom, rooms.RoomArgs{RoomID: "late"}, nil); err != nil {
		t.Fatal(err)
	}
	send(marker("after-exit"))
	// A request answered after the late signal: anything it sent is read.
	if err := a.Do(c, rooms.OpExitRoom, rooms.RoomArgs{RoomID: "late"}, nil); !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("second exitRoom: %v", err)
	}
	wc, cancel := context.WithTimeout(c, 300*time.Millisecond)
	defer cancel()
	if ev, err := a.WaitEvent(wc, rooms.EvRtcSignal, carries("after-exit")); err == nil {
		t.Fatalf("signal delivered after exitRoom: %s", ev.Data)
	}
}
