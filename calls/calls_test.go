package calls_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// server is the whole stack (webtest) with a manual clock for the calls
// layer, so that durations are checked without sleeping.
type server struct {
	*webtest.Stack
	clock *clocktest.Clock
}

type opts struct {
	cfg     calls.Config
	records calls.RecordStore
	store   signaling.Store
	web     *web.Config // nil: the default
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newServer(t *testing.T, o opts) *server {
	t.Helper()
	if o.cfg == (calls.Config{}) {
		o.cfg = calls.DefaultConfig()
		o.cfg.Heartbeat = 0
	}
	clock := clocktest.New(t0)
	st := webtest.Start(t, webtest.Options{Calls: &o.cfg, Records: o.records, Store: o.store, Clock: clock, Web: o.web})
	return &server{Stack: st, clock: clock}
}

func (s *server) dial(user string) *client.Client { return s.Dial(user) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func peerCfg() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true, VideoBitrate: 150_000, VideoFPS: 15}
}

// enter puts c's user into the call's room with real media.
func enter(t *testing.T, c *client.Client, roomID string) *roomclient.Room {
	t.Helper()
	r, err := roomclient.Enter(ctx(t), c, roomID, roomclient.Options{Peer: peerCfg()})
	if err != nil {
		t.Fatalf("enter %s: %v", roomID, err)
	}
	t.Cleanup(r.Close)
	return r
}

func byInvite(id string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			InviteID string `json:"inviteID"`
		}
		return ev.Decode(&v) == nil && v.InviteID == id
	}
}

func byCall(id string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			CallID string `json:"callID"`
		}
		return ev.Decode(&v) == nil && v.CallID == id
	}
}

func wait[T any](t *testing.T, c *client.Client, name string, match func(client.Event) bool) T {
	t.Helper()
	ev, err := c.WaitEvent(ctx(t), name, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v", name, err)
	}
	var v T
	if err := ev.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func call(t *testing.T, c *client.Client, invitee, mediaType string) calls.CallResult {
	t.Helper()
	var res calls.CallResult
	if err := c.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: invitee, MediaType: mediaType}, &res); err != nil {
		t.Fatalf("call %s: %v", invitee, err)
	}
	return res
}

func history(t *testing.T, c *client.Client, filter string) []calls.CallInfo {
	t.Helper()
	var res calls.HistoryResult
	if err := c.Do(ctx(t), calls.OpGetCallHistory, calls.HistoryArgs{Filter: filter}, &res); err != nil {
		t.Fatal(err)
	}
	return res.Calls
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneToOneVideoCallTRTCSteps runs TRTC's one-to-one video call,
// steps 1-5, with media really flowing.
func TestOneToOneVideoCallTRTCSteps(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")

	// 1. The inviter calls; the room ID travels in the invitation's data.
	res := call(t, alice, "bob", calls.MediaVideo)
	if res.CallID == "" || res.RoomID == "" || res.CallID != res.InviteID {
		t.Fatalf("call result %+v", res)
	}
	ra := enter(t, alice, res.RoomID) // the caller enters the room at once

	// 2. The invitee rings and reads the room ID from the data.
	inv := wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	cd, ok, err := calls.ParseCallData(inv.Data)
	if !ok || err != nil || cd.RoomID != res.RoomID || cd.CallID != res.CallID || cd.CallType != calls.CallTypeVideo || cd.Cmd != "videoCall" {
		t.Fatalf("call data %q: %+v %v %v", inv.Data, cd, ok, err)
	}
	// Nobody else may enter the call's room, nor bob before he accepts.
	if err := bob.Do(ctx(t), rooms.OpEnterRoom, rooms.EnterArgs{RoomID: res.RoomID}, nil); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("bob entered before accepting: %v", err)
	}
	mallory := s.dial("mallory")
	if err := mallory.Do(ctx(t), rooms.OpEnterRoom, rooms.EnterArgs{RoomID: res.RoomID}, nil); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("an outsider entered the call's room: %v", err)
	}

	// 3. The invitee accepts and enters; both see each other enter; the call begins.
	if err := bob.Accept(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	rb := enter(t, bob, res.RoomID)
	wait[rooms.RemoteEnterEvent](t, alice, rooms.EvRemoteUserEnterRoom, nil)
	wait[rooms.RemoteEnterEvent](t, bob, rooms.EvRemoteUserEnterRoom, nil)
	for _, c := range []*client.Client{alice, bob} {
		b := wait[calls.BeginEvent](t, c, calls.EvCallBegin, byCall(res.CallID))
		if b.RoomID != res.RoomID || b.MediaType != calls.MediaVideo || b.StartTime != t0.UnixMilli() {
			t.Fatalf("onCallBegin %+v", b)
		}
	}
	// 4. Video is available both ways and flows.
	wait[rooms.AvailableEvent](t, alice, rooms.EvUserVideoAvailable, nil)
	wait[rooms.AvailableEvent](t, bob, rooms.EvUserVideoAvailable, nil)
	eventually(t, "media both ways", func() bool {
		return ra.Received()[peer.TrackKey{StreamID: "bob", Kind: "video"}].Packets > 5 &&
			rb.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}].Packets > 5
	})
	if !s.Calls.Busy("alice") || !s.Calls.Busy("bob") {
		t.Fatal("participants of a running call are not busy")
	}

	// 5. After 65 s (server clock) alice hangs up; bob, who stays, sends
	// alice the call-end invitation with the duration.
	s.clock.Advance(65 * time.Second)
	if err := alice.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	leave := wait[rooms.RemoteLeaveEvent](t, bob, rooms.EvRemoteUserLeaveRoom, nil)
	if leave.UserID != "alice" || leave.Reason != 0 {
		t.Fatalf("leave %+v", leave)
	}
	for _, c := range []*client.Client{alice, bob} {
		end := wait[calls.EndEvent](t, c, calls.EvCallEnd, byCall(res.CallID))
		if end.Duration != 65 || end.DurationMs != 65000 || end.Reason != "hangup" || end.EndedBy != "alice" || end.Result != calls.ResultCompleted {
			t.Fatalf("onCallEnd %+v", end)
		}
	}
	followUp := wait[protocol.NewInvitationEvent](t, alice, protocol.EvReceiveNewInvitation, func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		return ev.Decode(&v) == nil && strings.Contains(v.Data, "call_end")
	})
	var hang struct {
		BusinessID string `json:"businessID"`
		CallEnd    int64  `json:"call_end"`
		Data       struct {
			Cmd    string `json:"cmd"`
			CallID string `json:"call_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(followUp.Data), &hang); err != nil {
		t.Fatal(err)
	}
	if followUp.Inviter != "bob" || followUp.Timeout != 0 || hang.BusinessID != "av_call" || hang.CallEnd != 65 || hang.Data.Cmd != "hangup" || hang.Data.CallID != res.CallID {
		t.Fatalf("call-end invitation %+v / %+v", followUp, hang)
	}
	if s.Calls.Busy("alice") || s.Calls.Busy("bob") {
		t.Fatal("still busy after the call ended")
	}
	// The record.
	for _, c := range []*client.Client{alice, bob} {
		h := history(t, c, "all")
		if len(h) != 1 || h[0].Result != calls.ResultCompleted || h[0].Duration != 65 || h[0].EndReason != "hangup" || h[0].EndedBy != "alice" {
			t.Fatalf("history %+v", h)
		}
		if len(h[0].Members) != 2 || h[0].Members[0].JoinedAt != t0.UnixMilli() {
			t.Fatalf("participants %+v", h[0].Members)
		}
	}
	if h := history(t, alice, "outgoing"); len(h) != 1 {
		t.Fatalf("alice outgoing: %+v", h)
	}
	if h := history(t, alice, "incoming"); len(h) != 0 {
		t.Fatalf("alice incoming: %+v", h)
	}
}

func TestBusyLineRejectedByServer(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob, carol := s.dial("alice"), s.dial("bob"), s.dial("carol")
	bob2 := s.dial("bob") // a second device of bob's
	s.StartCall(alice, bob, "bob")
	res := call(t, carol, "bob", calls.MediaAudio)
	rej := wait[protocol.InviteeEvent](t, carol, protocol.EvInviteeRejected, byInvite(res.CallID))
	if rej.Invitee != "bob" || !strings.Contains(rej.Data, `"line_busy":"line_busy"`) {
		t.Fatalf("rejection %+v", rej)
	}
	for _, c := range []*client.Client{bob, bob2} {
		missed := wait[calls.MissedEvent](t, c, calls.EvCallMissed, byCall(res.CallID))
		if missed.Caller != "carol" || missed.Reason != "line_busy" || missed.MediaType != calls.MediaAudio {
			t.Fatalf("missed %+v", missed)
		}
		expectNoInvite(t, c, res.CallID)
	}
	end := wait[calls.EndEvent](t, carol, calls.EvCallEnd, byCall(res.CallID))
	if end.Result != calls.ResultBusy || end.Reason != "busy" {
		t.Fatalf("end %+v", end)
	}
	h := history(t, carol, "all")
	if len(h) != 1 || h[0].Result != calls.ResultBusy {
		t.Fatalf("carol's history %+v", h)
	}
	m := history(t, bob, "missed")
	if len(m) != 1 || m[0].CallID != res.CallID || m[0].Result != calls.ResultBusy || m[0].Caller != "carol" {
		t.Fatalf("bob's missed calls %+v", m)
	}
}

func TestBusyLineRingPolicy(t *testing.T) {
	cfg := calls.DefaultConfig()
	cfg.BusyPolicy, cfg.Heartbeat = calls.BusyRing, 0
	s := newServer(t, opts{cfg: cfg})
	alice, bob, carol := s.dial("alice"), s.dial("bob"), s.dial("carol")
	s.StartCall(alice, bob, "bob")
	res := call(t, carol, "bob", calls.MediaVideo)
	wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	// bob's app rejects with the busy reason itself (TRTC's step 3).
	if err := bob.Reject(ctx(t), res.CallID, calls.LineBusy); err != nil {
		t.Fatal(err)
	}
	end := wait[calls.EndEvent](t, carol, calls.EvCallEnd, byCall(res.CallID))
	if end.Result != calls.ResultBusy {
		t.Fatalf("end %+v", end)
	}
}

func TestCancelAndNoAnswer(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	res := call(t, alice, "bob", calls.MediaVideo)
	wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := alice.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	wait[protocol.CancelledEvent](t, bob, protocol.EvInvitationCancelled, byInvite(res.CallID))
	if end := wait[calls.EndEvent](t, alice, calls.EvCallEnd, byCall(res.CallID)); end.Result != calls.ResultCancelled {
		t.Fatalf("end %+v", end)
	}

	s.clock.Advance(time.Second) // history is ordered by the server's clock
	var res2 calls.CallResult
	if err := alice.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "bob", Timeout: ptr(1)}, &res2); err != nil {
		t.Fatal(err)
	}
	wait[protocol.TimeoutEvent](t, alice, protocol.EvInvitationTimeout, byInvite(res2.CallID))
	if end := wait[calls.EndEvent](t, alice, calls.EvCallEnd, byCall(res2.CallID)); end.Result != calls.ResultNoAnswer {
		t.Fatalf("end %+v", end)
	}
	h := history(t, bob, "missed")
	if len(h) != 2 {
		t.Fatalf("bob's missed calls: %+v", h)
	}
	for _, c := range h {
		if c.Result != calls.ResultMissed {
			t.Fatalf("bob's result %q, want missed", c.Result)
		}
	}
	a := history(t, alice, "outgoing")
	if len(a) != 2 || a[0].Result != calls.ResultNoAnswer || a[1].Result != calls.ResultCancelled {
		t.Fatalf("alice's outgoing calls: %+v", a)
	}
	// A rejected call.
	res3 := call(t, alice, "bob", calls.MediaAudio)
	if err := bob.Reject(ctx(t), res3.CallID, ""); err != nil {
		t.Fatal(err)
	}
	if end := wait[calls.EndEvent](t, alice, calls.EvCallEnd, byCall(res3.CallID)); end.Result != calls.ResultRejected {
		t.Fatalf("end %+v", end)
	}
}

func ptr[T any](v T) *T { return &v }

// TestGlare: A calls B while B's call to A still rings: one call, not busy
// both ways. The call that rang first wins.
func TestGlare(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	first := call(t, alice, "bob", calls.MediaVideo)
	second := call(t, bob, "alice", calls.MediaVideo)
	if !second.Merged || second.CallID != first.CallID || second.RoomID != first.RoomID {
		t.Fatalf("bob's call was not merged into alice's: %+v vs %+v", second, first)
	}
	acc := wait[protocol.InviteeEvent](t, alice, protocol.EvInviteeAccepted, byInvite(first.CallID))
	if acc.Invitee != "bob" {
		t.Fatalf("accepted %+v", acc)
	}
	enter(t, alice, first.RoomID)
	enter(t, bob, first.RoomID)
	wait[calls.BeginEvent](t, alice, calls.EvCallBegin, byCall(first.CallID))
	wait[calls.BeginEvent](t, bob, calls.EvCallBegin, byCall(first.CallID))
}

// TestGroupCallJoinAndInviteUser: a group call where members accept one by
// one, one joins while it runs, more are rung in, and it ends when fewer
// than two remain.
func TestGroupCallJoinAndInviteUser(t *testing.T) {
	s := newServer(t, opts{})
	users := []string{"ann", "ben", "cat", "dan", "eve"}
	cl := map[string]*client.Client{}
	for _, u := range users {
		cl[u] = s.dial(u)
	}
	gid, err := cl["ann"].CreateGroup(ctx(t), protocol.CreateGroupArgs{Name: "team", MemberList: users[1:]})
	if err != nil {
		t.Fatal(err)
	}
	var res calls.CallResult
	if err := cl["ann"].Do(ctx(t), calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"ben", "cat"}, MediaType: "video"}, &res); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["ann"], res.RoomID)
	wait[protocol.NewInvitationEvent](t, cl["ben"], protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := cl["ben"].Accept(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	// cat sees ben's acceptance, and rejects.
	wait[protocol.InviteeEvent](t, cl["cat"], protocol.EvInviteeAccepted, byInvite(res.CallID))
	if err := cl["cat"].Reject(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["ben"], res.RoomID)
	wait[calls.BeginEvent](t, cl["ann"], calls.EvCallBegin, byCall(res.CallID))

	// dan was not rung: he finds the running call in his group, and joins it.
	var gc calls.GroupCallsResult
	if err := cl["dan"].Do(ctx(t), calls.OpGetGroupCalls, protocol.GroupIDArgs{GroupID: gid}, &gc); err != nil {
		t.Fatal(err)
	}
	if len(gc.Calls) != 1 || gc.Calls[0].CallID != res.CallID || gc.Calls[0].RoomID != res.RoomID || gc.Calls[0].Caller != "ann" ||
		gc.Calls[0].MediaType != "video" || gc.Calls[0].StartTime != t0.UnixMilli() || strings.Join(gc.Calls[0].Participants, ",") != "ann,ben" {
		t.Fatalf("getGroupCalls: %+v, want call %s of ann in room %s with ann and ben", gc.Calls, res.CallID, res.RoomID)
	}
	var j calls.JoinResult
	if err := cl["dan"].Do(ctx(t), calls.OpJoinCall, calls.CallIDArgs{CallID: res.CallID}, &j); err != nil {
		t.Fatal(err)
	}
	if j.StartTime != t0.UnixMilli() {
		t.Fatalf("joinCall startTime %d, want the call's start %d", j.StartTime, t0.UnixMilli())
	}
	rd := enter(t, cl["dan"], j.RoomID)
	eventually(t, "dan receiving ann and ben", func() bool {
		got := rd.Received()
		return got[peer.TrackKey{StreamID: "ann", Kind: "video"}].Packets > 3 && got[peer.TrackKey{StreamID: "ben", Kind: "video"}].Packets > 3
	})
	// An outsider cannot join.
	zed := s.dial("zed")
	if err := zed.Do(ctx(t), calls.OpJoinCall, calls.CallIDArgs{CallID: res.CallID}, nil); !errors.Is(err, protocol.ErrNotGroupMember) {
		t.Fatalf("outsider joinCall: %v", err)
	}
	if err := zed.Do(ctx(t), calls.OpGetGroupCalls, protocol.GroupIDArgs{GroupID: gid}, nil); !errors.Is(err, protocol.ErrNotGroupMember) {
		t.Fatalf("outsider getGroupCalls: %v", err)
	}
	if err := zed.Do(ctx(t), calls.OpGetGroupCalls, protocol.GroupIDArgs{}, nil); !errors.Is(err, protocol.ErrInvalidParameter) {
		t.Fatalf("getGroupCalls without a group: %v", err)
	}
	// Ring eve in; ben (already in) is not rung again.
	var iu calls.InviteUserResult
	if err := cl["ben"].Do(ctx(t), calls.OpInviteUser, calls.InviteUserArgs{CallID: res.CallID, UserList: []string{"eve", "ben", "dan"}}, &iu); err != nil {
		t.Fatal(err)
	}
	if len(iu.UserList) != 1 || iu.UserList[0] != "eve" {
		t.Fatalf("inviteUser rang %v, want [eve]", iu.UserList)
	}
	inv := wait[protocol.NewInvitationEvent](t, cl["eve"], protocol.EvReceiveNewInvitation, byInvite(iu.InviteID))
	if cd, _, _ := calls.ParseCallData(inv.Data); cd.RoomID != res.RoomID || cd.CallID != res.CallID {
		t.Fatalf("eve rung into room %q call %q, want %q %q", cd.RoomID, cd.CallID, res.RoomID, res.CallID)
	}
	expectNoInvite(t, cl["ben"], iu.InviteID)
	if err := cl["eve"].Accept(ctx(t), iu.InviteID, ""); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["eve"], res.RoomID)
	wait[rooms.RemoteEnterEvent](t, cl["ann"], rooms.EvRemoteUserEnterRoom, func(ev client.Event) bool {
		var v rooms.RemoteEnterEvent
		return ev.Decode(&v) == nil && v.UserID == "eve"
	})
	// People leave: the call goes on while two remain.
	s.clock.Advance(30 * time.Second)
	for _, u := range []string{"ann", "ben", "dan"} {
		if err := cl[u].Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
			t.Fatal(err)
		}
		if u != "dan" {
			if rec, _ := s.Calls.Call(res.CallID); !rec.EndedAt.IsZero() {
				t.Fatalf("call ended after %s left with others still in it", u)
			}
		}
	}
	end := wait[calls.EndEvent](t, cl["eve"], calls.EvCallEnd, byCall(res.CallID))
	if end.Reason != "all_left" || end.Duration != 30 || end.EndedBy != "dan" {
		t.Fatalf("end %+v", end)
	}
	// An ended call is no longer listed.
	if err := cl["cat"].Do(ctx(t), calls.OpGetGroupCalls, protocol.GroupIDArgs{GroupID: gid}, &gc); err != nil || len(gc.Calls) != 0 {
		t.Fatalf("getGroupCalls after the end: %+v, %v", gc.Calls, err)
	}
	h := history(t, cl["cat"], "all")
	if len(h) != 1 || h[0].Result != calls.ResultRejected || h[0].CallResult != calls.ResultCompleted {
		t.Fatalf("cat's history %+v", h)
	}
	h = history(t, cl["dan"], "all")
	if len(h) != 1 || h[0].Result != calls.ResultCompleted {
		t.Fatalf("dan's history %+v", h)
	}
}

// TestGroupCallRingAgainAfterHangup: a member who declined, joined with
// joinCall and hung up is rung in again (inviteUser); their accept admits
// them to the room again.
func TestGroupCallRingAgainAfterHangup(t *testing.T) {
	s := newServer(t, opts{})
	users := []string{"ann", "ben", "cat"}
	cl := map[string]*client.Client{}
	for _, u := range users {
		cl[u] = s.dial(u)
	}
	gid, err := cl["ann"].CreateGroup(ctx(t), protocol.CreateGroupArgs{Name: "team", MemberList: users[1:]})
	if err != nil {
		t.Fatal(err)
	}
	var res calls.CallResult
	if err := cl["ann"].Do(ctx(t), calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: []string{"ben", "cat"}, MediaType: "video"}, &res); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["ann"], res.RoomID)
	wait[protocol.NewInvitationEvent](t, cl["cat"], protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := cl["ben"].Accept(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	if err := cl["cat"].Reject(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["ben"], res.RoomID)
	wait[calls.BeginEvent](t, cl["ann"], calls.EvCallBegin, byCall(res.CallID))
	// cat joins after all, then hangs up.
	if err := cl["cat"].Do(ctx(t), calls.OpJoinCall, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	room := enter(t, cl["cat"], res.RoomID)
	if err := cl["cat"].Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	if err := room.Exit(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// ann rings cat in again; cat accepts and may enter.
	var iu calls.InviteUserResult
	if err := cl["ann"].Do(ctx(t), calls.OpInviteUser, calls.InviteUserArgs{CallID: res.CallID, UserList: []string{"cat"}}, &iu); err != nil {
		t.Fatal(err)
	}
	if len(iu.UserList) != 1 {
		t.Fatalf("inviteUser rang %v, want [cat]", iu.UserList)
	}
	wait[protocol.NewInvitationEvent](t, cl["cat"], protocol.EvReceiveNewInvitation, byInvite(iu.InviteID))
	if err := cl["cat"].Accept(ctx(t), iu.InviteID, ""); err != nil {
		t.Fatal(err)
	}
	enter(t, cl["cat"], res.RoomID)
}

// TestClassroomRaiseHands is TRTC's education flow: two inviteInGroup
// rounds, "raise hand" then "speak"; everyone sees each acceptance.
func TestClassroomRaiseHands(t *testing.T) {
	s := newServer(t, opts{})
	teacher := s.dial("teacher")
	students := []string{"s1", "s2", "s3"}
	sc := map[string]*client.Client{}
	for _, u := range students {
		sc[u] = s.dial(u)
	}
	gid, err := teacher.CreateGroup(ctx(t), protocol.CreateGroupArgs{Name: "class", MemberList: students})
	if err != nil {
		t.Fatal(err)
	}
	raise, err := teacher.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: students, Data: `{"cmd":"raise hand"}`, Timeout: ptr(60)})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range students {
		inv := wait[protocol.NewInvitationEvent](t, sc[u], protocol.EvReceiveNewInvitation, byInvite(raise))
		if inv.Data != `{"cmd":"raise hand"}` || len(inv.InviteeList) != 3 {
			t.Fatalf("%s got %+v", u, inv)
		}
	}
	for _, u := range []string{"s1", "s2"} {
		if err := sc[u].Accept(ctx(t), raise, "hand up"); err != nil {
			t.Fatal(err)
		}
	}
	// The teacher and every student see both hands.
	// (The student who raised a hand got the reply, not the event.)
	for name, c := range map[string]*client.Client{"teacher": teacher, "s1": sc["s1"], "s2": sc["s2"], "s3": sc["s3"]} {
		want := map[string]bool{"s1": true, "s2": true}
		delete(want, name)
		for len(want) > 0 {
			a := wait[protocol.InviteeEvent](t, c, protocol.EvInviteeAccepted, byInvite(raise))
			delete(want, a.Invitee)
		}
	}
	speak, err := teacher.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"s2"}, Data: `{"cmd":"speak"}`})
	if err != nil {
		t.Fatal(err)
	}
	wait[protocol.NewInvitationEvent](t, sc["s2"], protocol.EvReceiveNewInvitation, byInvite(speak))
	if err := sc["s2"].Accept(ctx(t), speak, ""); err != nil {
		t.Fatal(err)
	}
	a := wait[protocol.InviteeEvent](t, teacher, protocol.EvInviteeAccepted, byInvite(speak))
	if a.Invitee != "s2" {
		t.Fatalf("speaker %+v", a)
	}
	// Plain signaling: no call was made of it.
	if h := history(t, teacher, "all"); len(h) != 0 {
		t.Fatalf("classroom invitations became calls: %+v", h)
	}
}

func TestSwitchMediaTypeAndAdmission(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	res := s.StartCall(alice, bob, "bob").CallResult
	if err := alice.Do(ctx(t), calls.OpSwitchCallMediaType, calls.SwitchArgs{CallID: res.CallID, MediaType: "audio"}, nil); err != nil {
		t.Fatal(err)
	}
	ev := wait[calls.MediaTypeEvent](t, bob, calls.EvCallMediaTypeChanged, byCall(res.CallID))
	if ev.MediaType != "audio" || ev.UserID != "alice" {
		t.Fatalf("event %+v", ev)
	}
	carol := s.dial("carol")
	for _, op := range []string{calls.OpHangup, calls.OpSwitchCallMediaType} {
		err := carol.Do(ctx(t), op, calls.SwitchArgs{CallID: res.CallID, MediaType: "audio"}, nil)
		if op == calls.OpHangup {
			err = carol.Do(ctx(t), op, calls.CallIDArgs{CallID: res.CallID}, nil)
		}
		if !errors.Is(err, calls.ErrNotInCall) {
			t.Fatalf("%s by an outsider: %v", op, err)
		}
	}
	if err := carol.Do(ctx(t), calls.OpJoinCall, calls.CallIDArgs{CallID: res.CallID}, nil); !errors.Is(err, calls.ErrNotGroupCall) {
		t.Fatalf("joinCall on a one-to-one call: %v", err)
	}
	if err := carol.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: "inv_nope"}, nil); !errors.Is(err, calls.ErrCallNotFound) {
		t.Fatalf("hangup of an unknown call: %v", err)
	}
	if h := history(t, carol, "all"); len(h) != 0 {
		t.Fatalf("an outsider sees records: %+v", h)
	}
}

// TestRawInviteIsACall: an invite whose data is av_call data is a call.
func TestRawInviteIsACall(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	data := `{"version":4,"businessID":"av_call","call_type":1,"room_id":123456,"data":{"cmd":"audioCall","room_id":123456}}`
	var res calls.CallResult
	raw, err := alice.DoRaw(ctx(t), "x1", protocol.OpInvite, json.RawMessage(`{"invitee":"bob","data":`+strconvQuote(data)+`}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(raw, &res)
	if res.CallID == "" || res.RoomID != "123456" {
		t.Fatalf("reply %s", raw)
	}
	inv := wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if inv.Data != data {
		t.Fatalf("data changed: %q", inv.Data)
	}
	// No room_id: the server assigns one and the invitee receives it.
	noRoom := `{"version":4,"businessID":"av_call","call_type":2,"data":{"cmd":"videoCall","extra":"kept"}}`
	id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "carol", Data: noRoom})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := s.Calls.Call(id)
	if !ok || rec.RoomID == "" || rec.MediaType != calls.MediaVideo {
		t.Fatalf("record %+v %v", rec, ok)
	}
	carol := s.dial("carol")
	inv = wait[protocol.NewInvitationEvent](t, carol, protocol.EvReceiveNewInvitation, byInvite(id))
	cd, _, _ := calls.ParseCallData(inv.Data)
	if cd.RoomID != rec.RoomID || !strings.Contains(inv.Data, `"extra":"kept"`) {
		t.Fatalf("assigned room not in the data: %s", inv.Data)
	}
	// Malformed call data is refused.
	_, err = alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: `{"businessID":"av_call","call_type":"x"}`})
	if !errors.Is(err, calls.ErrBadCallData) {
		t.Fatalf("bad call data: %v", err)
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestRestartEndsRunningCalls: a call running when the server stops ends,
// when it starts again, with reason server_restart and its duration up to
// the last heartbeat.
func TestRestartEndsRunningCalls(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sb.db")
	open := func() (*signaling.SQLiteStore, calls.RecordStore) {
		st, err := signaling.OpenSQLite(context.Background(), db, quiet())
		if err != nil {
			t.Fatal(err)
		}
		rec, err := calls.NewSQLiteRecords(context.Background(), st.DB())
		if err != nil {
			t.Fatal(err)
		}
		return st, rec
	}
	st, rec := open()
	cfg := calls.DefaultConfig()
	cfg.Heartbeat = 5 * time.Second
	s := newServer(t, opts{cfg: cfg, records: rec, store: st})
	alice, bob := s.dial("alice"), s.dial("bob")
	res := s.StartCall(alice, bob, "bob").CallResult
	s.clock.Advance(12 * time.Second) // heartbeats at +5 s and +10 s
	// Stop without ending the call (the crash is simulated by never
	// running the calls' end; Close only flushes and writes a heartbeat
	// at its clock, +12 s).
	s.Calls.Close()
	_ = alice.Close()
	_ = bob.Close()
	s.Stop()
	_ = st.Close()

	st2, rec2 := open()
	defer st2.Close()
	m, err := calls.NewManager(context.Background(), calls.Params{Config: cfg, Engine: mustEngine(t, st2), Records: rec2, Clock: clocktest.New(t0.Add(time.Hour)), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	open2, _ := rec2.OpenCalls(context.Background())
	if len(open2) != 0 {
		t.Fatalf("calls still open after restart: %+v", open2)
	}
	h, _, err := rec2.History(context.Background(), "alice", calls.FilterAll, 10, "")
	if err != nil || len(h) != 1 {
		t.Fatalf("history %v %v", h, err)
	}
	if h[0].CallID != res.CallID || h[0].EndReason != "server_restart" || h[0].Duration != 12*time.Second || h[0].Result != calls.ResultCompleted {
		t.Fatalf("record after restart: %+v", h[0])
	}
}

func mustEngine(t *testing.T, st signaling.Store) *signaling.Engine {
	e, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Store: st, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// expectNoInvite fails if c rang (now or within 150 ms) for invitation id.
func expectNoInvite(t *testing.T, c *client.Client, id string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if ev, err := c.WaitEvent(wctx, protocol.EvReceiveNewInvitation, byInvite(id)); err == nil {
		t.Fatalf("rang for %s: %v", id, ev)
	}
}

// TestAcceptedCallWithoutMediaFails: a call accepted whose media never
// connects ends as failed after calls.setup_timeout, and nobody stays busy.
func TestAcceptedCallWithoutMediaFails(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	res := call(t, alice, "bob", calls.MediaAudio)
	wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := bob.Accept(ctx(t), res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	if !s.Calls.Busy("bob") || !s.Calls.Busy("alice") {
		t.Fatal("an accepted call being set up does not make its parties busy")
	}
	s.clock.Advance(calls.DefaultConfig().SetupTimeout - time.Second)
	if rec, _ := s.Calls.Call(res.CallID); !rec.EndedAt.IsZero() {
		t.Fatal("ended before the setup timeout")
	}
	s.clock.Advance(time.Second)
	end := wait[calls.EndEvent](t, alice, calls.EvCallEnd, byCall(res.CallID))
	if end.Result != calls.ResultFailed || end.Reason != "failed" || end.Duration != 0 {
		t.Fatalf("end %+v", end)
	}
	if s.Calls.Busy("bob") || s.Calls.Busy("alice") {
		t.Fatal("still busy after the failed call")
	}
	h := history(t, bob, "all")
	if len(h) != 1 || h[0].Result != calls.ResultFailed {
		t.Fatalf("bob's history %+v", h)
	}
}
