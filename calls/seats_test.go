package calls_test

import (
	"errors"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func TestParseSeatData(t *testing.T) {
	for _, tc := range []struct {
		data string
		ok   bool
		want calls.SeatData
	}{
		{`{"businessID":"live_seat","cmd":"takeSeat","roomID":"r1"}`, true, calls.SeatData{Cmd: "takeSeat", RoomID: "r1"}},
		{`{"businessID":"live_seat","cmd":"pickSeat","roomID":"r1","userID":"s2","speaker":"s2"}`, true, calls.SeatData{Cmd: "pickSeat", RoomID: "r1", UserID: "s2"}},
		{`{"businessID":"live_seat","cmd":"muteSeat","roomID":"r1"}`, false, calls.SeatData{}},
		{`{"businessID":"live_seat","cmd":"takeSeat","roomID":"bad room"}`, false, calls.SeatData{}},
		{`{"businessID":"live_seat","cmd":"takeSeat"}`, false, calls.SeatData{}},
		{`{"businessID":"av_call","cmd":"takeSeat","roomID":"r1"}`, false, calls.SeatData{}},
		{`{"cmd":"raise_hand"}`, false, calls.SeatData{}},
		{`live_seat`, false, calls.SeatData{}},
	} {
		got, ok := calls.ParseSeatData(tc.data)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseSeatData(%s) = %+v, %v; want %+v, %v", tc.data, got, ok, tc.want, tc.ok)
		}
	}
}

// receivesFrom reports whether r got n packets of user's audio.
func receivesFrom(r *roomclient.Room, user string, n uint64) bool {
	return r.Received()[peer.TrackKey{StreamID: user, Kind: media.KindAudio}].Packets >= n
}

// lastSwitch waits for r's latest onSwitchRole to match.
func lastSwitch(t *testing.T, r *roomclient.Room, what string, ok func(rooms.SwitchRoleEvent) bool) rooms.SwitchRoleEvent {
	t.Helper()
	var last rooms.SwitchRoleEvent
	eventually(t, what, func() bool {
		sw := r.Switches()
		if len(sw) == 0 {
			return false
		}
		last = sw[len(sw)-1]
		return ok(last)
	})
	return last
}

// TestMicByRequestAndByInvitation: in a room whose host approves seats, an
// audience member asks for the mic with a takeSeat invitation to the host;
// the host's accept puts it on a seat and it is heard by everyone. The host
// invites another one with a pickSeat invitation; its accept does the same.
// An accept by someone who is not the host, or with no seat left, switches
// nothing and tells the member why (onSwitchRole with the error's code).
func TestMicByRequestAndByInvitation(t *testing.T) {
	s := newServer(t, opts{})
	c := ctx(t)
	const room = "live-1"
	enterAs := func(user string, o roomclient.Options) (*client.Client, *roomclient.Room) {
		cl := s.dial(user)
		o.RoomToken, o.Peer = s.RoomToken(user, room), peerCfg()
		r, err := roomclient.Enter(c, cl, room, o)
		if err != nil {
			t.Fatalf("%s enters: %v", user, err)
		}
		t.Cleanup(r.Close)
		return cl, r
	}
	hc, rh := enterAs("host", roomclient.Options{Seats: 2, SeatMode: rooms.SeatApply})
	ac, ra := enterAs("alice", roomclient.Options{Role: rooms.RoleAudience})
	bc, rb := enterAs("bob", roomclient.Options{Role: rooms.RoleAudience})
	vc, rv := enterAs("vic", roomclient.Options{Role: rooms.RoleAudience})
	eventually(t, "the audience receiving the host", func() bool {
		return receivesFrom(ra, "host", 10) && receivesFrom(rb, "host", 10) && receivesFrom(rv, "host", 10)
	})
	// The host decides here: alice cannot take a seat by herself.
	if err := ac.Do(c, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: room}, nil); !errors.Is(err, rooms.ErrNeedsApproval) {
		t.Fatalf("takeSeat without the host: %v, want needs_approval", err)
	}

	// Mic by request: alice → host, the host accepts.
	req := `{"businessID":"live_seat","cmd":"takeSeat","roomID":"` + room + `"}`
	id, err := ac.Invite(c, protocol.InviteArgs{Invitee: "host", Data: req})
	if err != nil {
		t.Fatal(err)
	}
	wait[protocol.NewInvitationEvent](t, hc, protocol.EvReceiveNewInvitation, byInvite(id))
	if err := hc.Accept(c, id, ""); err != nil {
		t.Fatal(err)
	}
	sw := lastSwitch(t, ra, "alice on mic", func(e rooms.SwitchRoleEvent) bool { return e.Role == rooms.RoleAnchor })
	if sw.Reason != rooms.SwitchByRequest || sw.Code != 0 || sw.SeatIndex != 0 {
		t.Fatalf("alice's onSwitchRole %+v", sw)
	}
	eventually(t, "host, bob and vic hearing alice", func() bool {
		return receivesFrom(rh, "alice", 20) && receivesFrom(rb, "alice", 20) && receivesFrom(rv, "alice", 20)
	})

	// Mic by invitation: host → bob (named), bob accepts.
	inv := `{"businessID":"live_seat","cmd":"pickSeat","roomID":"` + room + `","userID":"bob"}`
	id, err = hc.Invite(c, protocol.InviteArgs{Invitee: "bob", Data: inv})
	if err != nil {
		t.Fatal(err)
	}
	wait[protocol.NewInvitationEvent](t, bc, protocol.EvReceiveNewInvitation, byInvite(id))
	if err := bc.Accept(c, id, ""); err != nil {
		t.Fatal(err)
	}
	sw = lastSwitch(t, rb, "bob on mic", func(e rooms.SwitchRoleEvent) bool { return e.Role == rooms.RoleAnchor })
	if sw.Reason != rooms.SwitchByInvitation || sw.SeatIndex != 1 {
		t.Fatalf("bob's onSwitchRole %+v", sw)
	}
	eventually(t, "host, alice and vic hearing bob", func() bool {
		return receivesFrom(rh, "bob", 20) && receivesFrom(ra, "bob", 20) && receivesFrom(rv, "bob", 20)
	})

	// vic asks alice, who is no host: her accept gives nothing.
	id, err = vc.Invite(c, protocol.InviteArgs{Invitee: "alice", Data: req})
	if err != nil {
		t.Fatal(err)
	}
	wait[protocol.NewInvitationEvent](t, ac, protocol.EvReceiveNewInvitation, byInvite(id))
	if err := ac.Accept(c, id, ""); err != nil {
		t.Fatal(err)
	}
	sw = lastSwitch(t, rv, "vic told the approver is no host", func(e rooms.SwitchRoleEvent) bool { return e.Code != 0 })
	if sw.Code != rooms.ErrNotHost.Code || sw.Role != rooms.RoleAudience {
		t.Fatalf("vic's onSwitchRole %+v, want code %d", sw, rooms.ErrNotHost.Code)
	}
	// vic asks the host, who accepts, but both seats are taken.
	id, err = vc.Invite(c, protocol.InviteArgs{Invitee: "host", Data: req})
	if err != nil {
		t.Fatal(err)
	}
	wait[protocol.NewInvitationEvent](t, hc, protocol.EvReceiveNewInvitation, byInvite(id))
	if err := hc.Accept(c, id, ""); err != nil {
		t.Fatal(err)
	}
	sw = lastSwitch(t, rv, "vic told there is no seat", func(e rooms.SwitchRoleEvent) bool { return e.Code == rooms.ErrNoSeat.Code })
	if sw.Role != rooms.RoleAudience || rv.Peer().Publishes() {
		t.Fatalf("vic after no seat: %+v, publishes %v", sw, rv.Peer().Publishes())
	}
	info, err := rh.Info(c)
	if err != nil {
		t.Fatal(err)
	}
	if info.Seats[0].UserID != "alice" || info.Seats[1].UserID != "bob" || len(info.Audience) != 1 || info.Audience[0] != "vic" {
		t.Fatalf("room %+v", info)
	}
	for _, r := range []*roomclient.Room{rh, ra, rb, rv} {
		for _, err := range r.Errors() {
			t.Errorf("negotiation error: %v", err)
		}
	}
}
