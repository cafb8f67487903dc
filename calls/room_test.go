package calls_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
)

func enterRaw(c *client.Client, t *testing.T, roomID, token string) error {
	return c.Do(ctx(t), rooms.OpEnterRoom, rooms.EnterArgs{RoomID: roomID, RoomToken: token}, nil)
}

// TestCallCannotClaimATakenRoom: a call may only use a room ID that is
// free (no room, no member, no other call); otherwise its call is refused
// with room_unavailable, whose message tells nothing about the others. A
// raw invite with call data goes the same way. A room ID held by a call is
// entered only by its participants: a room token for it is refused until
// the call ends.
func TestCallCannotClaimATakenRoom(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob, eve := s.dial("alice"), s.dial("bob"), s.dial("eve")
	// alice and bob in the backend's room, with room tokens.
	for _, u := range []struct {
		c    *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		if err := enterRaw(u.c, t, "board-meeting-7", s.RoomToken(u.name, "board-meeting-7")); err != nil {
			t.Fatalf("%s enters with a token: %v", u.name, err)
		}
	}
	// A running call's room.
	running := call(t, alice, "carol", calls.MediaAudio)
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, calls.ErrRoomUnavailable) {
			t.Fatalf("%s: %v, want %s", what, err, calls.ErrRoomUnavailable.Reason)
		}
		for _, secret := range []string{running.CallID, "alice", "bob"} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("%s: the error %q reveals %q", what, err, secret)
			}
		}
	}
	zero := 0
	refused("call into a token room", eve.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: "board-meeting-7", Timeout: &zero}, nil))
	refused("call into a call's room", eve.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: running.RoomID, Timeout: &zero}, nil))
	data := calls.NewCallData(calls.MediaVideo, "board-meeting-7", []string{"nobody"}, "")
	_, err := eve.Invite(ctx(t), protocol.InviteArgs{Invitee: "nobody", Data: data, Timeout: &zero})
	refused("raw invite into a token room", err)
	if err := eve.Do(ctx(t), rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "board-meeting-7", Role: string(rooms.RoleAudience)}, nil); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("eve enters the token room: %v", err)
	}
	if n := s.Calls.Active(); n != 1 {
		t.Fatalf("%d calls running, want alice's only", n)
	}

	// eve reserves a free room ID with a call: it is hers while the call
	// runs. A later call with it is refused without naming hers, and a
	// token holder who is not in her call cannot enter it.
	var squat calls.CallResult
	if err := eve.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: "standup-9", Timeout: &zero}, &squat); err != nil {
		t.Fatal(err)
	}
	err = alice.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "bob", RoomID: "standup-9"}, nil)
	refused("call into a reserved room", err)
	if strings.Contains(err.Error(), squat.CallID) || strings.Contains(err.Error(), "eve") {
		t.Fatalf("the refusal %q reveals eve's call", err)
	}
	if err := enterRaw(alice, t, "standup-9", s.RoomToken("alice", "standup-9")); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("a token holder entered a call's room: %v", err)
	}
	if err := enterRaw(eve, t, "standup-9", ""); err != nil {
		t.Fatalf("the caller enters her call's room: %v", err)
	}
	// eve's hangup ends her call and her membership only.
	if err := eve.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: squat.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	wait[calls.EndEvent](t, eve, calls.EvCallEnd, byCall(squat.CallID))
	eventually(t, "eve's room to close", func() bool { return len(s.Rooms.Members("standup-9")) == 0 && s.Calls.Active() == 1 })
	if err := enterRaw(alice, t, "standup-9", s.RoomToken("alice", "standup-9")); err != nil {
		t.Fatalf("the room ID is free again, but: %v", err)
	}
	// alice and bob are still in their room (an op only a member may do).
	for _, c := range []*client.Client{alice, bob} {
		if err := c.Do(ctx(t), rooms.OpMuteLocalAudio, rooms.MuteArgs{RoomID: "board-meeting-7", Mute: true}, nil); err != nil {
			t.Fatalf("no longer in board-meeting-7: %v", err)
		}
	}
}

// TestRoomClaimRace: a call naming a room ID and a room-token enterRoom
// into the same ID, sent at the same instant: exactly one of them gets the
// room ID, every time.
func TestRoomClaimRace(t *testing.T) {
	wcfg := web.DefaultConfig()
	wcfg.RequestsPerSec, wcfg.RequestBurst = 1_000_000, 1_000_000
	s := newServer(t, opts{web: &wcfg})
	alice, eve := s.dial("alice"), s.dial("eve")
	zero := 0
	wins := map[string]int{}
	for round := range 100 {
		roomID := fmt.Sprintf("race-%d", round)
		token := s.RoomToken("alice", roomID)
		var callErr, enterErr error
		var res calls.CallResult
		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		ready.Add(2)
		wg.Add(2)
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			callErr = eve.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: roomID, Timeout: &zero}, &res)
		}()
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			enterErr = enterRaw(alice, t, roomID, token)
		}()
		ready.Wait()
		close(start)
		wg.Wait()
		switch {
		case callErr == nil && enterErr == nil:
			t.Fatalf("round %d: both the call and the token holder got %s", round, roomID)
		case callErr == nil && errors.Is(enterErr, rooms.ErrNotAdmitted):
			wins["call"]++
			if err := eve.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
				t.Fatal(err)
			}
		case enterErr == nil && errors.Is(callErr, calls.ErrRoomUnavailable):
			wins["token"]++
			if err := alice.Do(ctx(t), rooms.OpExitRoom, rooms.RoomArgs{RoomID: roomID}, nil); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("round %d: call %v, enterRoom %v", round, callErr, enterErr)
		}
	}
	t.Logf("wins: %v", wins)
}
