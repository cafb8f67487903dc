package rooms_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func roomEvent(room string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			RoomID string `json:"roomID"`
		}
		return ev.Decode(&v) == nil && v.RoomID == room
	}
}

// enterLive enters room with a Go peer; opts.RoomToken is filled in.
func enterLive(t *testing.T, s *server, c *client.Client, user, room string, opts roomclient.Options) *roomclient.Room {
	t.Helper()
	opts.RoomToken = s.roomToken(user, room)
	if opts.Peer.ListenIP == "" {
		opts.Peer = peerCfg()
	}
	r, err := roomclient.Enter(ctx(t), c, room, opts)
	if err != nil {
		t.Fatalf("%s enters %s: %v", user, room, err)
	}
	t.Cleanup(r.Close)
	return r
}

// endedFrom reports whether r's tracks from user (both kinds) were received
// and have ended.
func endedFrom(r *roomclient.Room, user string) bool {
	got := r.Received()
	for _, k := range []string{media.KindAudio, media.KindVideo} {
		st, ok := got[peer.TrackKey{StreamID: user, Kind: k}]
		if !ok || !st.Ended {
			return false
		}
	}
	return true
}

// TestSeatRaceLastSeat: two audience members ask for the last seat at the
// same instant, many rounds, through takeSeat and switchRole: exactly one
// gets it each time, the other gets no_seat, and the seat list names the
// winner.
func TestSeatRaceLastSeat(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	const room = "race"
	host := s.dial("host")
	if err := host.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, RoomToken: s.roomToken("host", room), Seats: 2}, nil); err != nil {
		t.Fatal(err)
	}
	// carol sits on seat 0 for the whole test: seat 1 is the last one.
	carol := s.dial("carol")
	var cres rooms.EnterResult
	if err := carol.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, RoomToken: s.roomToken("carol", room)}, &cres); err != nil {
		t.Fatal(err)
	}
	if cres.SeatIndex != 0 || cres.Role != rooms.RoleAnchor || len(cres.Room.Seats) != 2 || cres.Room.Host != "host" {
		t.Fatalf("carol's entry: seat %d role %s room %+v", cres.SeatIndex, cres.Role, cres.Room)
	}
	users := []string{"alice", "bob"}
	conns := map[string]*client.Client{}
	for _, u := range users {
		conns[u] = s.dial(u)
		if err := conns[u].Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, Role: "audience", RoomToken: s.roomToken(u, room)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Each round sends every member a few seat events: drain them (they
	// end with the connections).
	for _, cl := range []*client.Client{host, carol, conns["alice"], conns["bob"]} {
		go func() {
			for range cl.Events() {
			}
		}()
	}
	wins := map[string]int{}
	const rounds = 60
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, len(users))
		res := make([]rooms.SwitchRoleResult, len(users))
		start := make(chan struct{})
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if round%2 == 0 {
					errs[i] = conns[u].Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: room}, &res[i])
				} else {
					errs[i] = conns[u].Do(c, rooms.OpSwitchRole, rooms.SwitchRoleArgs{RoomID: room, Role: "anchor"}, &res[i])
				}
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both %s and %s got the last seat", round, users[winner], users[i])
				}
				winner = i
			case !errors.Is(err, rooms.ErrNoSeat):
				t.Fatalf("round %d: %s: %v, want no_seat or the seat", round, users[i], err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody got the free seat: %v", round, errs)
		}
		if res[winner].SeatIndex != 1 || res[winner].Role != rooms.RoleAnchor {
			t.Fatalf("round %d: winner's result %+v", round, res[winner])
		}
		var info rooms.RoomInfo
		if err := host.Do(c, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: room}, &info); err != nil {
			t.Fatal(err)
		}
		if info.Seats[0].UserID != "carol" || info.Seats[1].UserID != users[winner] {
			t.Fatalf("round %d: seats %+v, want carol and %s", round, info.Seats, users[winner])
		}
		wins[users[winner]]++
		var left rooms.SwitchRoleResult
		if err := conns[users[winner]].Do(c, rooms.OpLeaveSeat, rooms.RoomArgs{RoomID: room}, &left); err != nil {
			t.Fatal(err)
		}
		if left.Role != rooms.RoleAudience || left.SeatIndex != -1 {
			t.Fatalf("round %d: leaveSeat result %+v", round, left)
		}
	}
	t.Logf("wins over %d rounds: %v", rounds, wins)
}

// TestSeatRules: the per-room seat count and mode given at creation, the
// errors of each refused switch, and what an entry is told.
func TestSeatRules(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{RoomSeats: 3, MaxRoomSeats: 5}, nil)
	c := ctx(t)
	host, alice, bob := s.dial("host"), s.dial("alice"), s.dial("bob")
	if err := host.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "big", RoomToken: s.roomToken("host", "big"), Seats: 6}, nil); err == nil {
		t.Fatal("6 seats over max_room_seats 5 accepted")
	}
	if err := host.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "big", RoomToken: s.roomToken("host", "big"), SeatMode: "lottery"}, nil); err == nil {
		t.Fatal("seatMode lottery accepted")
	}
	// The default seat count.
	var hres rooms.EnterResult
	if err := host.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "dflt", RoomToken: s.roomToken("host", "dflt")}, &hres); err != nil {
		t.Fatal(err)
	}
	if len(hres.Room.Seats) != 3 || hres.Room.Host != "host" || hres.SeatIndex != -1 || hres.Room.SeatMode != rooms.SeatFree {
		t.Fatalf("default room: %+v seat %d", hres.Room, hres.SeatIndex)
	}
	// An apply room: only the host puts people on seats.
	if err := host.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "live", RoomToken: s.roomToken("host", "live"), Seats: 1, SeatMode: "apply"}, &hres); err != nil {
		t.Fatal(err)
	}
	if len(hres.Room.Seats) != 1 || hres.Room.SeatMode != rooms.SeatApply {
		t.Fatalf("apply room: %+v", hres.Room)
	}
	if err := alice.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "live", RoomToken: s.roomToken("alice", "live")}, nil); !errors.Is(err, rooms.ErrNeedsApproval) {
		t.Fatalf("anchor entry into an apply room: %v, want needs_approval", err)
	}
	var ares rooms.EnterResult
	if err := alice.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "live", Role: "audience", RoomToken: s.roomToken("alice", "live"), Seats: 5}, &ares); err != nil {
		t.Fatal(err)
	}
	if len(ares.Room.Seats) != 1 || ares.Room.Host != "host" || fmt.Sprint(ares.Room.Audience) != "[alice]" || fmt.Sprint(ares.Room.Anchors) != "[host]" {
		t.Fatalf("alice's entry (seats is the creator's only): %+v", ares.Room)
	}
	if _, err := host.WaitEvent(c, rooms.EvAudienceListChange, roomEvent("live")); err != nil {
		t.Fatalf("host not told of the audience: %v", err)
	}
	if err := alice.Do(c, rooms.OpSwitchRole, rooms.SwitchRoleArgs{RoomID: "live", Role: "anchor"}, nil); !errors.Is(err, rooms.ErrNeedsApproval) {
		t.Fatalf("switchRole in an apply room: %v, want needs_approval", err)
	}
	if err := alice.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: "live"}, nil); !errors.Is(err, rooms.ErrNeedsApproval) {
		t.Fatalf("takeSeat in an apply room: %v, want needs_approval", err)
	}
	if err := alice.Do(c, rooms.OpSwitchRole, rooms.SwitchRoleArgs{RoomID: "live", Role: "boss"}, nil); err == nil {
		t.Fatal("role boss accepted")
	}
	if err := alice.Do(c, rooms.OpKickSeat, rooms.KickSeatArgs{RoomID: "live", UserID: "host"}, nil); !errors.Is(err, rooms.ErrNotHost) {
		t.Fatalf("kickSeat by a non-host: %v, want not_host", err)
	}
	if err := host.Do(c, rooms.OpKickSeat, rooms.KickSeatArgs{RoomID: "live", UserID: "alice"}, nil); !errors.Is(err, rooms.ErrNotOnSeat) {
		t.Fatalf("kickSeat of an audience member: %v, want not_on_seat", err)
	}
	if err := bob.Do(c, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: "live"}, nil); !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("getRoomInfo by a non-member: %v, want not_in_room", err)
	}
	// In a free room, a seat asked by index.
	if err := bob.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "dflt", Role: "audience", RoomToken: s.roomToken("bob", "dflt")}, nil); err != nil {
		t.Fatal(err)
	}
	two := 2
	var tres rooms.SwitchRoleResult
	if err := bob.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: "dflt", Index: &two}, &tres); err != nil || tres.SeatIndex != 2 {
		t.Fatalf("takeSeat 2: %+v %v", tres, err)
	}
	if _, err := host.WaitEvent(c, rooms.EvAnchorEnterSeat, func(ev client.Event) bool {
		var e rooms.SeatEvent
		return ev.Decode(&e) == nil && e.RoomID == "dflt" && e.UserID == "bob" && e.Index == 2
	}); err != nil {
		t.Fatalf("onAnchorEnterSeat: %v", err)
	}
	if _, err := bob.WaitEvent(c, rooms.EvSwitchRole, roomEvent("dflt")); err != nil { // (no roomclient here)
		t.Fatalf("onSwitchRole: %v", err)
	}
	if err := alice.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "dflt", Role: "audience", RoomToken: s.roomToken("alice", "dflt")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := alice.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: "dflt", Index: &two}, nil); !errors.Is(err, rooms.ErrNoSeat) {
		t.Fatalf("takeSeat of a taken seat: %v, want no_seat", err)
	}
	nine := 9
	if err := alice.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: "dflt", Index: &nine}, nil); err == nil {
		t.Fatal("takeSeat 9 of 3 accepted")
	}
}

// TestKickSeatEndsTracksForAll: an audience member cannot publish; right
// after it takes a seat it can, and the others receive it; when the host
// takes it off its seat, its tracks end at every other member, who see its
// audio and video become unavailable and it leave their view (reason 3).
func TestKickSeatEndsTracksForAll(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	const room = "stage"
	hc, ac, vc := s.dial("host"), s.dial("alice"), s.dial("viewer")
	rh := enterLive(t, s, hc, "host", room, roomclient.Options{Seats: 2})
	ra := enterLive(t, s, ac, "alice", room, roomclient.Options{Role: rooms.RoleAudience})
	rv := enterLive(t, s, vc, "viewer", room, roomclient.Options{Role: rooms.RoleAudience})
	eventually(t, 15*time.Second, "the audience receiving the host", func() bool { return receives(ra, 10, "host") && receives(rv, 10, "host") })

	// Before the switch: no publishing.
	err := ac.Do(c, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: room, Signal: media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: "v=0\r\n"}}, nil)
	if !errors.Is(err, rooms.ErrCannotPublish) {
		t.Fatalf("audience publisher offer: %v, want cannot_publish", err)
	}
	if ra.Peer().Publishes() {
		t.Fatal("the audience peer publishes")
	}
	// The switch: alice publishes at once, everyone receives her.
	res, err := ra.TakeSeat(c, nil)
	if err != nil || res.Role != rooms.RoleAnchor || res.SeatIndex != 0 {
		t.Fatalf("takeSeat: %+v %v", res, err)
	}
	for _, cl := range []*client.Client{hc, vc} {
		if _, err := cl.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
			t.Fatalf("alice's enter not seen: %v", err)
		}
		if _, err := cl.WaitEvent(c, rooms.EvUserAudioAvailable, byUser("alice")); err != nil {
			t.Fatalf("alice's audio not seen: %v", err)
		}
	}
	eventually(t, 15*time.Second, "host and viewer receiving alice", func() bool { return receives(rh, 10, "alice") && receives(rv, 10, "alice") })

	// The host takes her off.
	if err := hc.Do(c, rooms.OpKickSeat, rooms.KickSeatArgs{RoomID: room, UserID: "alice"}, nil); err != nil {
		t.Fatal(err)
	}
	unavailable := func(ev client.Event) bool {
		var e rooms.AvailableEvent
		return ev.Decode(&e) == nil && e.UserID == "alice" && !e.Available
	}
	for name, cl := range map[string]*client.Client{"host": hc, "viewer": vc} {
		for _, ev := range []string{rooms.EvUserAudioAvailable, rooms.EvUserVideoAvailable} {
			if _, err := cl.WaitEvent(c, ev, unavailable); err != nil {
				t.Fatalf("%s: %s false for alice: %v", name, ev, err)
			}
		}
		ev, err := cl.WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("alice"))
		if err != nil {
			t.Fatalf("%s: alice's leave: %v", name, err)
		}
		var le rooms.RemoteLeaveEvent
		if ev.Decode(&le) != nil || le.Reason != 3 {
			t.Fatalf("%s: leave %+v, want reason 3", name, le)
		}
		if _, err := cl.WaitEvent(c, rooms.EvAnchorLeaveSeat, func(ev client.Event) bool {
			var e rooms.SeatEvent
			return ev.Decode(&e) == nil && e.UserID == "alice" && e.Reason == rooms.SeatKicked
		}); err != nil {
			t.Fatalf("%s: onAnchorLeaveSeat: %v", name, err)
		}
	}
	eventually(t, 5*time.Second, "alice's onSwitchRole to audience", func() bool {
		sw := ra.Switches()
		return len(sw) > 0 && sw[len(sw)-1].Role == rooms.RoleAudience
	})
	if sw := ra.Switches(); len(sw) != 2 || sw[0].Role != rooms.RoleAnchor || sw[0].Reason != rooms.SwitchBySelf ||
		sw[1].Reason != rooms.SwitchByKick || sw[1].Code != 0 {
		t.Fatalf("alice's onSwitchRole events %+v", sw)
	}
	eventually(t, 15*time.Second, "alice's tracks ending at host and viewer", func() bool { return endedFrom(rh, "alice") && endedFrom(rv, "alice") })
	eventually(t, 5*time.Second, "alice's peer to stop publishing", func() bool { return !ra.Peer().Publishes() })
	err = ac.Do(c, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: room, Signal: media.Signal{Target: media.TargetPublisher, Type: media.SignalOffer, SDP: "v=0\r\n"}}, nil)
	if !errors.Is(err, rooms.ErrCannotPublish) {
		t.Fatalf("publisher offer after kickSeat: %v, want cannot_publish", err)
	}
	// Still in the room, receiving; and she may sit down again.
	if got := ra.Received()[peer.TrackKey{StreamID: "host", Kind: media.KindVideo}]; got.Ended {
		t.Fatal("alice stopped receiving the host")
	}
	before := rv.Received()[peer.TrackKey{StreamID: "alice", Kind: media.KindAudio}].Packets
	if _, err := ra.TakeSeat(c, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "viewer receiving alice again", func() bool {
		st := rv.Received()[peer.TrackKey{StreamID: "alice", Kind: media.KindAudio}]
		return !st.Ended && st.Packets > before+10
	})
	for _, r := range []*roomclient.Room{rh, ra, rv} {
		for _, err := range r.Errors() {
			t.Errorf("negotiation error: %v", err)
		}
	}
}

// TestHostReconnectKeepsRoom: the host's WebSocket breaks and it resumes:
// it is still the host, and the seats, anchors and audience are as before,
// in its new enterRoom reply and in getRoomInfo.
func TestHostReconnectKeepsRoom(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{RejoinGrace: 10 * time.Second}, nil)
	c := ctx(t)
	const room = "keep"
	hd := &webtest.CutDialer{Stack: s.Stack, User: "host"}
	hc, err := hd.Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	rh, err := roomclient.Enter(c, hc, room, roomclient.Options{RoomToken: s.roomToken("host", room), Peer: peerCfg(), Seats: 3, SeatMode: rooms.SeatApply, Redial: hd.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	ac, vc := s.dial("alice"), s.dial("viewer")
	ra := enterLive(t, s, ac, "alice", room, roomclient.Options{Role: rooms.RoleAudience})
	enterLive(t, s, vc, "viewer", room, roomclient.Options{Role: rooms.RoleAudience})
	if err := s.Rooms.GrantSeat(room, "host", "alice", rooms.SwitchByRequest); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "alice publishing to the host", func() bool { return receives(rh, 10, "alice") })
	before, err := ra.Info(c)
	if err != nil {
		t.Fatal(err)
	}
	if before.Host != "host" || before.Seats[0].UserID != "alice" || fmt.Sprint(before.Audience) != "[viewer]" {
		t.Fatalf("room before: %+v", before)
	}
	hd.Cut()
	eventually(t, 15*time.Second, "the host resuming", func() bool { resumed, _ := rh.Rejoins(); return resumed == 1 })
	got := rh.Result()
	if !got.Resumed || got.Role != rooms.RoleAnchor || fmt.Sprint(got.Room) != fmt.Sprint(before) {
		t.Fatalf("host's resumed entry: resumed %v role %s room %+v, want %+v", got.Resumed, got.Role, got.Room, before)
	}
	after, err := rh.Info(c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("room after the host's reconnect: %+v, want %+v", after, before)
	}
	// Still the host: it may take alice off.
	if err := rh.KickSeat(c, "alice"); err != nil {
		t.Fatalf("kickSeat after reconnecting: %v", err)
	}
}

// TestHostLeavesHandsRoomOn: a host who leaves hands the room to the anchor
// on the lowest seat (onRoomHostChanged to all, its seat freed); a host who
// leaves with no anchor on a seat closes the room (onExitRoom reason 2 to
// everyone left).
func TestHostLeavesHandsRoomOn(t *testing.T) {
	s := newServer(t, media.Config{}, rooms.Config{}, nil)
	c := ctx(t)
	const room = "hand"
	enter := func(cl *client.Client, user, role string) rooms.EnterResult {
		t.Helper()
		var res rooms.EnterResult
		if err := cl.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, Role: role, RoomToken: s.roomToken(user, room)}, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	hc, bc, cc, vc := s.dial("host"), s.dial("bob"), s.dial("carol"), s.dial("viewer")
	enter(hc, "host", "")
	one := 1
	enter(bc, "bob", "audience")
	if err := bc.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: room, Index: &one}, nil); err != nil {
		t.Fatal(err)
	}
	if res := enter(cc, "carol", ""); res.SeatIndex != 0 {
		t.Fatalf("carol on seat %d, want 0", res.SeatIndex)
	}
	enter(vc, "viewer", "audience")
	if err := hc.Do(c, rooms.OpExitRoom, rooms.RoomArgs{RoomID: room}, nil); err != nil {
		t.Fatal(err)
	}
	for name, cl := range map[string]*client.Client{"bob": bc, "carol": cc, "viewer": vc} {
		ev, err := cl.WaitEvent(c, rooms.EvRoomHostChanged, roomEvent(room))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var he rooms.HostEvent
		if ev.Decode(&he) != nil || he.Host != "carol" {
			t.Fatalf("%s: new host %+v, want carol (seat 0)", name, he)
		}
	}
	var info rooms.RoomInfo
	if err := vc.Do(c, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: room}, &info); err != nil {
		t.Fatal(err)
	}
	if info.Host != "carol" || info.Seats[0].UserID != "" || info.Seats[1].UserID != "bob" || fmt.Sprint(info.Anchors) != "[carol bob]" {
		t.Fatalf("after the hand-over: %+v", info)
	}
	// The new host takes bob off; then leaves: no anchor on a seat, the room closes.
	if err := cc.Do(c, rooms.OpKickSeat, rooms.KickSeatArgs{RoomID: room, UserID: "bob"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := cc.Do(c, rooms.OpExitRoom, rooms.RoomArgs{RoomID: room}, nil); err != nil {
		t.Fatal(err)
	}
	for name, cl := range map[string]*client.Client{"bob": bc, "viewer": vc} {
		ev, err := cl.WaitEvent(c, rooms.EvExitRoom, roomEvent(room))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var ee rooms.ExitRoomEvent
		if ev.Decode(&ee) != nil || ee.Reason != int(rooms.ExitDismissed) {
			t.Fatalf("%s: onExitRoom %+v, want reason 2", name, ee)
		}
	}
	eventually(t, 5*time.Second, "the room to be gone", func() bool { return s.Rooms.RoomCount() == 0 })
}
