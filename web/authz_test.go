package web_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func peerCfg() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true, VideoBitrate: 100_000, VideoFPS: 10}
}

func waitFor(t *testing.T, c *client.Client, name string, match func(client.Event) bool) client.Event {
	t.Helper()
	ev, err := c.WaitEvent(testCtx(t), name, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v", name, err)
	}
	return ev
}

// waitMedia waits until r received audio and video packets from user.
func waitMedia(t *testing.T, r *roomclient.Room, user string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := r.Received()
		if got[peer.TrackKey{StreamID: user, Kind: "audio"}].Packets > 0 && got[peer.TrackKey{StreamID: user, Kind: "video"}].Packets > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no media from %s: %v", user, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receivedBeforeFence makes a round trip on c and returns the events that
// arrived before its reply: everything the server had sent c by the time
// it handled the request, which it answers after them on the same stream.
func receivedBeforeFence(t *testing.T, c *client.Client) []client.Event {
	t.Helper()
	ctx := testCtx(t)
	id := "fence-" + rand.Text()
	if err := c.SendRaw(ctx, []byte(`{"id":"`+id+`","op":"getJoinedGroupList","args":{}}`)); err != nil {
		t.Fatalf("fence: %v", err)
	}
	var out []client.Event
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("fence: waiting for the reply: %v", err)
		}
		if ev.Reply && ev.ID == id {
			if ev.Err != nil {
				t.Fatalf("fence: %v", ev.Err)
			}
			return out
		}
		out = append(out, ev)
	}
}

// TestAuthorizationMatrix runs every op that touches someone else's
// invitation, group, room or call as each kind of outsider, and checks the
// documented error and that nobody received anything because of it.
func TestAuthorizationMatrix(t *testing.T) {
	s := webtest.Start(t, webtest.Options{})
	ctx := testCtx(t)
	alice, bob, carol := s.Dial("alice"), s.Dial("bob"), s.Dial("carol")

	// A group (invite-only) with alice (owner), bob and carol.
	gid, err := alice.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "team", Name: "Team", MemberList: []string{"bob", "carol"}, JoinOption: "invite"})
	if err != nil {
		t.Fatal(err)
	}
	// A pending invitation alice → bob.
	inv, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Data: "secret-data", Timeout: ptr(300)})
	if err != nil {
		t.Fatal(err)
	}
	// A running one-to-one call alice ↔ bob with media, and a group call.
	call := s.StartCall(alice, bob, "bob")
	ra := call.Caller
	var gcall calls.CallResult
	if err := alice.Do(ctx, calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"carol"}}, &gcall); err != nil {
		t.Fatal(err)
	}
	// A backend's room: alice and bob (on other devices) entered it with
	// room tokens, and their media flows.
	const board = "board-meeting-7"
	aliceB, bobB := s.Dial("alice"), s.Dial("bob")
	boardRooms := map[string]*roomclient.Room{}
	for name, c := range map[string]*client.Client{"alice": aliceB, "bob": bobB} {
		r, err := roomclient.Enter(ctx, c, board, roomclient.Options{RoomToken: s.RoomToken(name, board), Peer: peerCfg()})
		if err != nil {
			t.Fatalf("%s enters %s: %v", name, board, err)
		}
		t.Cleanup(r.Close)
		boardRooms[name] = r
	}
	// Media flowing both ways in both rooms: every member has connected
	// and published, and the events that announce it have been sent. Then
	// forget what everyone has received so far.
	waitMedia(t, boardRooms["alice"], "bob")
	waitMedia(t, boardRooms["bob"], "alice")
	waitMedia(t, call.Caller, "bob")
	waitMedia(t, call.Callee, "alice")
	for _, c := range []*client.Client{alice, bob, carol, aliceB, bobB} {
		receivedBeforeFence(t, c)
	}

	eve := s.Dial("eve") // an outsider: no invitation, group, room or call of hers
	type tc struct {
		who  *client.Client
		name string
		op   string
		args any
		want *protocol.Error
	}
	cases := []tc{
		// not the inviter
		{eve, "cancel someone's invitation", protocol.OpCancel, protocol.InviteIDArgs{InviteID: inv}, protocol.ErrNoPermission},
		{eve, "modify someone's invitation", protocol.OpModifyInvitation, protocol.InviteIDArgs{InviteID: inv, Data: "x"}, protocol.ErrNoPermission},
		{bob, "invitee cancels", protocol.OpCancel, protocol.InviteIDArgs{InviteID: inv}, protocol.ErrNoPermission},
		// not an invitee
		{eve, "accept someone's invitation", protocol.OpAccept, protocol.InviteIDArgs{InviteID: inv}, protocol.ErrInvalidInviteID},
		{eve, "reject someone's invitation", protocol.OpReject, protocol.InviteIDArgs{InviteID: inv}, protocol.ErrInvalidInviteID},
		{alice, "inviter accepts own invitation", protocol.OpAccept, protocol.InviteIDArgs{InviteID: inv}, protocol.ErrInvalidInviteID},
		// not a group member
		{eve, "inviteInGroup", protocol.OpInviteInGroup, protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob"}}, protocol.ErrNotGroupMember},
		{eve, "inviteUserToGroup", protocol.OpInviteUserToGroup, protocol.GroupUsersArgs{GroupID: gid, UserList: []string{"eve"}}, protocol.ErrNotGroupMember},
		{eve, "kickGroupMember", protocol.OpKickGroupMember, protocol.KickArgs{GroupID: gid, MemberList: []string{"bob"}}, protocol.ErrNotGroupMember},
		{eve, "dismissGroup", protocol.OpDismissGroup, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrNotGroupMember},
		{eve, "quitGroup", protocol.OpQuitGroup, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrNotGroupMember},
		{eve, "getGroupMemberList", protocol.OpGetGroupMemberList, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrNotGroupMember},
		{eve, "joinGroup of an invite-only group", protocol.OpJoinGroup, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrJoinForbidden},
		{eve, "groupCall in someone's group", calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"bob"}}, protocol.ErrNotGroupMember},
		{eve, "joinCall of someone's group call", calls.OpJoinCall, calls.CallIDArgs{CallID: gcall.CallID}, protocol.ErrNotGroupMember},
		{eve, "getGroupCalls of someone's group", calls.OpGetGroupCalls, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrNotGroupMember},
		// a member who is not the owner
		{bob, "member kicks", protocol.OpKickGroupMember, protocol.KickArgs{GroupID: gid, MemberList: []string{"carol"}}, protocol.ErrNotGroupOwner},
		{bob, "member dismisses", protocol.OpDismissGroup, protocol.GroupIDArgs{GroupID: gid}, protocol.ErrNotGroupOwner},
		// not admitted to the room
		{eve, "enterRoom of a call", rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID}, rooms.ErrNotAdmitted},
		{eve, "enterRoom with a token for another room", rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID, RoomToken: s.RoomToken("eve", "elsewhere")}, rooms.ErrNotAdmitted},
		{eve, "enterRoom with someone else's room token", rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID, RoomToken: s.RoomToken("alice", call.RoomID)}, rooms.ErrNotAdmitted},
		{carol, "enterRoom of a call she is not in", rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID}, rooms.ErrNotAdmitted},
		{eve, "exitRoom", rooms.OpExitRoom, rooms.RoomArgs{RoomID: call.RoomID}, rooms.ErrNotInRoom},
		{eve, "rtcSignal", rooms.OpRtcSignal, rooms.SignalArgs{RoomID: call.RoomID, Signal: media.Signal{Target: media.TargetSubscriber, Type: media.SignalAnswer, SDP: "v=0"}}, rooms.ErrNotInRoom},
		{eve, "muteLocalAudio", rooms.OpMuteLocalAudio, rooms.MuteArgs{RoomID: call.RoomID, Mute: true}, rooms.ErrNotInRoom},
		{eve, "muteLocalVideo", rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: call.RoomID, Mute: true}, rooms.ErrNotInRoom},
		// not a participant of the call
		{eve, "hangup", calls.OpHangup, calls.CallIDArgs{CallID: call.CallID}, calls.ErrNotInCall},
		{eve, "switchCallMediaType", calls.OpSwitchCallMediaType, calls.SwitchArgs{CallID: call.CallID, MediaType: "audio"}, calls.ErrNotInCall},
		{carol, "inviteUser into a call she has not joined", calls.OpInviteUser, calls.InviteUserArgs{CallID: gcall.CallID, UserList: []string{"bob"}}, calls.ErrNotInCall},
		{carol, "hangup of a call she is not in", calls.OpHangup, calls.CallIDArgs{CallID: call.CallID}, calls.ErrNotInCall},
		// a call claiming a room ID that is not free
		{eve, "call into a token room", calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: board, Timeout: ptr(0)}, calls.ErrRoomUnavailable},
		{eve, "raw invite with call data naming a token room", protocol.OpInvite,
			protocol.InviteArgs{Invitee: "nobody", Data: calls.NewCallData(calls.MediaVideo, board, []string{"nobody"}, ""), Timeout: ptr(0)}, calls.ErrRoomUnavailable},
		{eve, "call into someone's call room", calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: call.RoomID, Timeout: ptr(0)}, calls.ErrRoomUnavailable},
		{eve, "groupCall into a token room", calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"bob"}, RoomID: board}, protocol.ErrNotGroupMember},
		{carol, "groupCall into someone's call room", calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"bob"}, RoomID: call.RoomID}, calls.ErrRoomUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.who.Do(ctx, c.op, c.args, nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("%s: got %v, want %s (%d)", c.op, err, c.want.Reason, c.want.Code)
			}
			if c.want == calls.ErrRoomUnavailable {
				for _, secret := range []string{call.CallID, gcall.CallID, "alice", "bob"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("the refusal %q reveals %q", err, secret)
					}
				}
			}
		})
	}
	// The outsider's attempts to enter, after her attempts to claim the rooms
	// (as audience: invisible to the others): she gets into no room, so she receives
	// nothing of anyone's (checked on what her peer received, in case she
	// had got in).
	for _, roomID := range []string{board, call.RoomID} {
		spy, err := roomclient.Enter(ctx, eve, roomID, roomclient.Options{Role: rooms.RoleAudience, Peer: peerCfg()})
		if err == nil {
			t.Errorf("eve entered %s as audience", roomID)
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if len(spy.Received()) > 0 {
					break
				}
			}
			for key, st := range spy.Received() {
				t.Errorf("eve received %d packets of %s's %s in %s", st.Packets, key.StreamID, key.Kind, roomID)
			}
			spy.Close()
		} else if !errors.Is(err, rooms.ErrNotAdmitted) {
			t.Errorf("eve enters %s: %v", roomID, err)
		}
	}
	// Records: the outsider sees none of theirs.
	var h calls.HistoryResult
	if err := eve.Do(ctx, calls.OpGetCallHistory, calls.HistoryArgs{}, &h); err != nil || len(h.Calls) != 0 {
		t.Fatalf("eve's history: %+v %v", h, err)
	}
	// Nobody received anything because of the refused requests: what a
	// request causes is sent before its reply, so it precedes the fence.
	for name, c := range map[string]*client.Client{"alice": alice, "bob": bob, "carol": carol, "eve": eve, "alice's other device": aliceB, "bob's other device": bobB} {
		for _, ev := range receivedBeforeFence(t, c) {
			if ev.Name == rooms.EvRtcSignal {
				continue // media renegotiation of the running call
			}
			t.Errorf("%s received %s after outsiders' requests", name, ev)
		}
	}
	// The call and the invitation are untouched.
	if info, ok := s.Engine.Invitation(inv); !ok || info.Data != "secret-data" || info.States["bob"] != signaling.StatePending {
		t.Fatalf("invitation changed: %+v %v", info, ok)
	}
	if rec, ok := s.Calls.Call(call.CallID); !ok || !rec.EndedAt.IsZero() {
		t.Fatalf("call changed: %+v", rec)
	}
	if got := ra.Received(); got[peer.TrackKey{StreamID: "eve", Kind: "video"}].Packets != 0 {
		t.Fatal("eve's media reached the call")
	}
	for name, r := range boardRooms {
		if got := r.Received(); got[peer.TrackKey{StreamID: "eve", Kind: "video"}].Packets != 0 {
			t.Fatalf("eve's media reached %s in %s", name, board)
		}
	}

	// A call may reserve a free room ID: it is the call's while it runs. A
	// later call naming it is refused without a word about the first, a
	// room token for it does not get a non-participant in, and the
	// caller's hangup ends that call's membership only.
	var squat calls.CallResult
	if err := eve.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: "nobody", RoomID: "standup-9", Timeout: ptr(0)}, &squat); err != nil {
		t.Fatal(err)
	}
	err = alice.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: "bob", RoomID: "standup-9"}, nil)
	if !errors.Is(err, calls.ErrRoomUnavailable) || strings.Contains(err.Error(), squat.CallID) || strings.Contains(err.Error(), "eve") {
		t.Fatalf("call into a reserved room: %v", err)
	}
	err = carol.Do(ctx, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "standup-9", RoomToken: s.RoomToken("carol", "standup-9")}, nil)
	if !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("a token holder entered a call's room: %v", err)
	}
	if err := eve.Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: squat.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, eve, calls.EvCallEnd, nil)
	for name, c := range map[string]*client.Client{"alice": alice, "bob": bob, "carol": carol, "alice's other device": aliceB, "bob's other device": bobB} {
		for _, ev := range receivedBeforeFence(t, c) {
			if ev.Name != rooms.EvRtcSignal {
				t.Errorf("%s received %s because of eve's reservation", name, ev)
			}
		}
	}
	if rec, ok := s.Calls.Call(call.CallID); !ok || !rec.EndedAt.IsZero() {
		t.Fatalf("call changed: %+v", rec)
	}

	// Outsiders without a valid session token never get a connection.
	other := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "eve", "exp": time.Now().Add(time.Hour).Unix()})
	otherTok, _ := other.SignedString([]byte("some-other-key-some-other-key-xx"))
	expired := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "eve", "exp": time.Now().Add(-time.Second).Unix()})
	expiredTok, _ := expired.SignedString(webtest.Secret)
	for name, tok := range map[string]string{"no token": "", "expired token": expiredTok, "token signed with another key": otherTok} {
		_, err := client.Dial(ctx, s.URL, tok)
		var de *client.DialError
		if !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
			t.Errorf("%s: %v, want HTTP 401", name, err)
		}
	}
}

// TestTokensNeverLogged: with debug logging, nothing the server logs holds
// a token, whether it came in the header or the query string.
func TestTokensNeverLogged(t *testing.T) {
	var logs webtest.LogBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := webtest.Start(t, webtest.Options{Logger: log, DevTokens: true})
	ctx := testCtx(t)
	tok := s.Token("alice")
	c, err := client.Dial(ctx, s.URL+"?token="+tok, "")
	if err != nil {
		t.Fatal(err)
	}
	b := s.Dial("bob")
	id, _ := c.Invite(ctx, protocol.InviteArgs{Invitee: "bob"})
	_ = b.Accept(ctx, id, "")
	_ = c.Do(ctx, "nope", nil, nil)
	res, err := http.Get(s.HTTP.URL + "/api/dev/token?user=carol")
	if err != nil {
		t.Fatal(err)
	}
	var dev struct {
		Token string `json:"token"`
	}
	_ = json.NewDecoder(res.Body).Decode(&dev)
	res.Body.Close()
	_, _ = client.Dial(ctx, s.URL, tok[:len(tok)-4]+"AAAA") // a bad token is refused, and not logged either
	c.Close()
	s.Stop()
	out := logs.String()
	if !strings.Contains(out, "connected") {
		t.Fatalf("debug logs were not captured: %q", out)
	}
	for _, secret := range []string{tok, dev.Token, strings.Split(tok, ".")[2]} {
		if strings.Contains(out, secret) {
			t.Fatalf("a token appears in the logs")
		}
	}
}
