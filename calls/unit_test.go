package calls_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Unit tests of the call state machine: the manager over the fakes of
// fakes_test.go and a manual clock, driven through its ops and its
// observer hooks. No network, no store but memory, no waiting: each runs
// in milliseconds. The full-stack tests (calls_test.go, web) run the same
// stories over the real engine, rooms and transport.

type unit struct {
	t     *testing.T
	clock *clocktest.Clock
	eng   *fakeEngine
	rooms *fakeRooms
	rec   *calls.MemoryRecords
	m     *calls.Manager
	ops   map[string]protocol.OpFunc
}

func newUnit(t *testing.T, mod func(*calls.Config)) *unit {
	t.Helper()
	cfg := calls.DefaultConfig()
	cfg.Heartbeat = 0
	if mod != nil {
		mod(&cfg)
	}
	u := &unit{t: t, clock: clocktest.New(t0), eng: newFakeEngine(), rooms: newFakeRooms(), rec: calls.NewMemoryRecords()}
	m, err := calls.NewManager(context.Background(), calls.Params{Config: cfg, Engine: u.eng, Rooms: u.rooms,
		Records: u.rec, Clock: u.clock, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	u.m, u.ops = m, m.Ops()
	return u
}

// op runs op name as user, then its after-reply work (as the transport
// does once the reply is queued).
func (u *unit) op(user, name string, args any) (any, error) {
	u.t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		u.t.Fatal(err)
	}
	res, err := u.ops[name](context.Background(), protocol.Actor{UserID: user}, raw)
	if ar, ok := res.(signaling.AfterReplier); ok && err == nil {
		ar.AfterReply()
	}
	return res, err
}

func (u *unit) mustOp(user, name string, args any) any {
	u.t.Helper()
	res, err := u.op(user, name, args)
	if err != nil {
		u.t.Fatalf("%s %s: %v", user, name, err)
	}
	return res
}

// call places a one-to-one audio call from caller to callee.
func (u *unit) call(caller, callee string) calls.CallResult {
	u.t.Helper()
	res := u.mustOp(caller, calls.OpCall, calls.CallArgs{Invitee: callee, MediaType: calls.MediaAudio})
	cr, ok := res.(calls.CallResult)
	if !ok || cr.CallID == "" || cr.RoomID == "" || cr.InviteID != cr.CallID {
		u.t.Fatalf("call %s → %s: %#v", caller, callee, res)
	}
	return cr
}

func (u *unit) connect(roomID string, users ...string) {
	u.t.Helper()
	for _, user := range users {
		if !u.rooms.connect(roomID, user) {
			u.t.Fatalf("%s not admitted to room %s", user, roomID)
		}
	}
}

// saved returns the stored record of callID, after flushing the save queue
// (getCallHistory flushes it).
func (u *unit) saved(user, callID string) calls.CallRecord {
	u.t.Helper()
	u.mustOp(user, calls.OpGetCallHistory, calls.HistoryArgs{})
	recs, _, err := u.rec.History(context.Background(), user, calls.FilterAll, 100, "")
	if err != nil {
		u.t.Fatal(err)
	}
	for _, r := range recs {
		if r.CallID == callID {
			return r
		}
	}
	u.t.Fatalf("no record of %s for %s", callID, user)
	return calls.CallRecord{}
}

// ended checks the call's stored end and its onCallEnd event.
func (u *unit) ended(callID string, result calls.Result, reason calls.EndReason, endedBy string, to ...string) calls.CallRecord {
	u.t.Helper()
	if r, ok := u.m.Call(callID); ok && r.EndedAt.IsZero() {
		u.t.Errorf("call %s still running", callID)
	}
	r := u.saved(to[0], callID)
	if r.EndedAt.IsZero() || r.Result != result || r.EndReason != reason || r.EndedBy != endedBy {
		u.t.Errorf("record: ended %v result %q reason %q by %q, want result %q reason %q by %q",
			r.EndedAt, r.Result, r.EndReason, r.EndedBy, result, reason, endedBy)
	}
	evs := u.eng.eventsNamed(calls.EvCallEnd)
	if len(evs) != 1 {
		u.t.Fatalf("%d onCallEnd events, want 1", len(evs))
	}
	ev := evs[0].Data.(calls.EndEvent)
	if ev.CallID != callID || ev.Reason != reason || ev.EndedBy != endedBy || ev.Result != result || !evs[0].Keep {
		u.t.Errorf("onCallEnd = %+v (keep %v), want reason %q by %q result %q", ev, evs[0].Keep, reason, endedBy, result)
	}
	if !slices.Equal(evs[0].Users, to) {
		u.t.Errorf("onCallEnd to %v, want %v", evs[0].Users, to)
	}
	if got := u.rooms.releasedRooms(); !slices.Contains(got, r.RoomID) {
		u.t.Errorf("room %s not released (released: %v)", r.RoomID, got)
	}
	return r
}

func participant(r calls.CallRecord, user string) calls.ParticipantRecord {
	for _, p := range r.Participants {
		if p.UserID == user {
			return p
		}
	}
	return calls.ParticipantRecord{}
}

// Ring → accept → both media connected → begin → hangup → end with
// duration, reason, endedBy, the server's call-end invitation, the record.
func TestUnitCallCompletes(t *testing.T) {
	u := newUnit(t, nil)
	c := u.call("alice", "bob")
	specs := u.eng.createdSpecs()
	if len(specs) != 1 || specs[0].ID != c.CallID || !slices.Equal(specs[0].Invitees, []string{"bob"}) || len(specs[0].NoRing) != 0 {
		t.Fatalf("invitations created: %+v", specs)
	}
	if cd, ok, err := calls.ParseCallData(specs[0].Data); !ok || err != nil || cd.RoomID != c.RoomID || cd.CallID != c.CallID {
		t.Errorf("ring data %s: room %q call %q (ok %v err %v), want %s %s", specs[0].Data, cd.RoomID, cd.CallID, ok, err, c.RoomID, c.CallID)
	}
	if u.rooms.connect(c.RoomID, "bob") {
		t.Fatal("bob entered the call's room before accepting")
	}
	u.mustOp("bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	if !u.m.Busy("alice") || !u.m.Busy("bob") {
		t.Error("an accepted call does not make both busy")
	}
	u.connect(c.RoomID, "alice")
	if n := len(u.eng.eventsNamed(calls.EvCallBegin)); n != 0 {
		t.Fatalf("onCallBegin with one participant connected (%d)", n)
	}
	u.clock.Advance(2 * time.Second)
	u.connect(c.RoomID, "bob")
	began := t0.Add(2 * time.Second)
	begins := u.eng.eventsNamed(calls.EvCallBegin)
	if len(begins) != 1 || !slices.Equal(begins[0].Users, []string{"alice", "bob"}) {
		t.Fatalf("onCallBegin: %+v", begins)
	}
	if b := begins[0].Data.(calls.BeginEvent); b.CallID != c.CallID || b.StartTime != began.UnixMilli() || b.MediaType != calls.MediaAudio {
		t.Errorf("onCallBegin = %+v, want start %d", b, began.UnixMilli())
	}

	u.clock.Advance(42 * time.Second)
	u.mustOp("bob", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	if u.m.Active() != 0 || u.m.Busy("alice") || u.m.Busy("bob") {
		t.Error("the call still runs, or keeps a line busy, after the hangup")
	}
	r := u.ended(c.CallID, calls.ResultCompleted, calls.EndHangup, "bob", "alice", "bob")
	if !r.BeganAt.Equal(began) || r.Duration != 42*time.Second || !r.EndedAt.Equal(began.Add(42*time.Second)) {
		t.Errorf("record: began %v ended %v duration %v, want %v, +42s", r.BeganAt, r.EndedAt, r.Duration, began)
	}
	for _, user := range []string{"alice", "bob"} {
		if p := participant(r, user); p.Result != calls.ResultCompleted || p.JoinedAt.IsZero() || p.LeftAt.IsZero() {
			t.Errorf("participant %s: %+v", user, p)
		}
	}
	if ev := u.eng.eventsNamed(calls.EvCallEnd)[0].Data.(calls.EndEvent); ev.Duration != 42 || ev.DurationMs != 42000 {
		t.Errorf("onCallEnd duration %d s / %d ms, want 42 / 42000", ev.Duration, ev.DurationMs)
	}
	// TRTC's step 5, composed by the server: the one who stayed sends the
	// one who left the call-end invitation with the duration.
	ns := u.eng.notifyRecs()
	if len(ns) != 1 || ns[0].From != "alice" || !slices.Equal(ns[0].To, []string{"bob"}) {
		t.Fatalf("call-end invitations: %+v", ns)
	}
	cd, ok, err := calls.ParseCallData(ns[0].Data)
	if !ok || err != nil || !cd.IsCallEnd() || !cd.FromServer() || cd.CallEnd == nil || *cd.CallEnd != 42 || cd.CallID != c.CallID {
		t.Errorf("call-end data %s: end %v from server %v", ns[0].Data, cd.IsCallEnd(), cd.FromServer())
	}
}

func TestUnitCallRejected(t *testing.T) {
	u := newUnit(t, nil)
	c := u.call("alice", "bob")
	u.mustOp("bob", protocol.OpReject, protocol.InviteIDArgs{InviteID: c.InviteID})
	r := u.ended(c.CallID, calls.ResultRejected, calls.EndRejected, "bob", "alice")
	if p := participant(r, "bob"); p.Answer != calls.AnswerRejected || p.Result != calls.ResultRejected {
		t.Errorf("bob: %+v", p)
	}
	if ns := u.eng.notifyRecs(); len(ns) != 0 {
		t.Errorf("call-end invitation for a call that never began: %+v", ns)
	}
}

func TestUnitCallNoAnswer(t *testing.T) {
	u := newUnit(t, nil)
	c := u.call("alice", "bob")
	u.eng.timeout(c.InviteID)
	r := u.ended(c.CallID, calls.ResultNoAnswer, calls.EndNoAnswer, "", "alice")
	if p := participant(r, "bob"); p.Answer != calls.AnswerNoAnswer || p.Result != calls.ResultMissed {
		t.Errorf("bob: %+v", p)
	}
}

func TestUnitCallCancelled(t *testing.T) {
	for _, how := range []string{"cancel", "hangup"} {
		t.Run(how, func(t *testing.T) {
			u := newUnit(t, nil)
			c := u.call("alice", "bob")
			if how == "cancel" {
				u.mustOp("alice", protocol.OpCancel, protocol.InviteIDArgs{InviteID: c.InviteID})
			} else {
				u.mustOp("alice", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
			}
			r := u.ended(c.CallID, calls.ResultCancelled, calls.EndCancelled, "alice", "alice")
			if p := participant(r, "bob"); p.Answer != calls.AnswerCancelled || p.Result != calls.ResultMissed {
				t.Errorf("bob: %+v", p)
			}
			if as := u.eng.answerRecs(); len(as) != 1 || as[0].Op != "cancel" || as[0].User != "alice" || as[0].InviteID != c.InviteID {
				t.Errorf("engine answers: %+v, want alice's cancel", as)
			}
		})
	}
}

// startBusy has alice and bob in a call that began, then carol calls bob.
func startBusy(t *testing.T, policy calls.BusyPolicy) (*unit, calls.CallResult) {
	u := newUnit(t, func(c *calls.Config) { c.BusyPolicy = policy })
	ab := u.call("alice", "bob")
	u.mustOp("bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: ab.InviteID})
	u.connect(ab.RoomID, "alice", "bob")
	if !u.m.Busy("bob") {
		t.Fatal("bob is not busy in a call that began")
	}
	return u, u.call("carol", "bob")
}

func TestUnitBusyReject(t *testing.T) {
	u, c := startBusy(t, calls.BusyReject)
	spec := u.eng.createdSpecs()[1]
	if !slices.Equal(spec.NoRing, []string{"bob"}) {
		t.Errorf("NoRing = %v, want [bob] (the busy line does not ring)", spec.NoRing)
	}
	as := u.eng.answerRecs()
	busy := as[len(as)-1]
	if busy.Op != "reject" || busy.User != "bob" || busy.InviteID != c.InviteID || !busy.Silent || busy.Data != calls.LineBusy {
		t.Errorf("server's rejection for bob: %+v, want a silent reject with line_busy data", busy)
	}
	missed := u.eng.eventsNamed(calls.EvCallMissed)
	if len(missed) != 1 || !slices.Equal(missed[0].Users, []string{"bob"}) || missed[0].Data.(calls.MissedEvent).Reason != "line_busy" {
		t.Errorf("onCallMissed: %+v", missed)
	}
	r := u.ended(c.CallID, calls.ResultBusy, calls.EndBusy, "bob", "carol")
	if p := participant(r, "bob"); p.Answer != calls.AnswerBusy {
		t.Errorf("bob: %+v", p)
	}
}

func TestUnitBusyRing(t *testing.T) {
	u, c := startBusy(t, calls.BusyRing)
	if spec := u.eng.createdSpecs()[1]; len(spec.NoRing) != 0 {
		t.Errorf("NoRing = %v under busy policy ring", spec.NoRing)
	}
	if n := len(u.eng.eventsNamed(calls.EvCallMissed)); n != 0 {
		t.Errorf("%d onCallMissed under busy policy ring", n)
	}
	// The app rejects with line_busy itself.
	u.mustOp("bob", protocol.OpReject, protocol.InviteIDArgs{InviteID: c.InviteID, Data: calls.LineBusy})
	u.ended(c.CallID, calls.ResultBusy, calls.EndBusy, "bob", "carol")
}

// Glare: bob calls alice while alice's call to him still rings: the call
// that rang first wins, bob's call becomes his acceptance of it.
func TestUnitGlare(t *testing.T) {
	u := newUnit(t, nil)
	first := u.call("alice", "bob")
	u.clock.Advance(time.Second)
	res := u.mustOp("bob", calls.OpCall, calls.CallArgs{Invitee: "alice"})
	cr := res.(calls.CallResult)
	if !cr.Merged || cr.CallID != first.CallID || cr.RoomID != first.RoomID || cr.InviteID != first.InviteID {
		t.Fatalf("bob's call = %+v, want merged into %+v", cr, first)
	}
	if n := len(u.eng.createdSpecs()); n != 1 {
		t.Errorf("%d invitations created, want alice's only", n)
	}
	as := u.eng.answerRecs()
	if len(as) != 1 || as[0].Op != "accept" || as[0].User != "bob" || as[0].InviteID != first.InviteID || !strings.Contains(as[0].Data, `"glare":true`) {
		t.Errorf("engine answers: %+v, want bob's glare accept", as)
	}
	if u.m.Active() != 1 {
		t.Errorf("%d calls running, want 1", u.m.Active())
	}
	rec, ok := u.m.Call(first.CallID)
	if p := participant(rec, "bob"); !ok || p.Answer != calls.AnswerAccepted {
		t.Errorf("bob in the merged call: %+v", p)
	}
	u.connect(first.RoomID, "alice", "bob")
	if n := len(u.eng.eventsNamed(calls.EvCallBegin)); n != 1 {
		t.Errorf("%d onCallBegin, want 1", n)
	}
}

// Accepted, but the media never connects: the call fails at setup_timeout.
func TestUnitSetupTimeout(t *testing.T) {
	u := newUnit(t, func(c *calls.Config) { c.SetupTimeout = 10 * time.Second })
	c := u.call("alice", "bob")
	u.mustOp("bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	u.connect(c.RoomID, "alice")
	u.clock.Advance(10*time.Second - time.Millisecond)
	if u.m.Active() != 1 {
		t.Fatal("the call ended before setup_timeout")
	}
	u.clock.Advance(time.Millisecond)
	r := u.ended(c.CallID, calls.ResultFailed, calls.EndFailed, "", "alice", "bob")
	if !r.BeganAt.IsZero() || !r.EndedAt.Equal(t0.Add(10*time.Second)) {
		t.Errorf("record: began %v ended %v", r.BeganAt, r.EndedAt)
	}
	if p := participant(r, "bob"); p.Result != calls.ResultFailed {
		t.Errorf("bob: %+v", p)
	}
}

// A group call goes on while two remain, and ends when fewer do.
func TestUnitGroupCallAllLeft(t *testing.T) {
	u := newUnit(t, nil)
	u.eng.groups["g"] = []string{"alice", "bob", "carol"}
	res := u.mustOp("alice", calls.OpGroupCall, calls.GroupCallArgs{GroupID: "g", InviteeList: []string{"bob", "carol"}})
	c := res.(calls.CallResult)
	for _, user := range []string{"bob", "carol"} {
		u.mustOp(user, protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	}
	u.connect(c.RoomID, "alice", "bob", "carol")
	u.clock.Advance(time.Minute)
	u.mustOp("bob", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	if u.m.Active() != 1 || len(u.eng.eventsNamed(calls.EvCallEnd)) != 0 {
		t.Fatal("the group call ended with two still in it")
	}
	u.clock.Advance(time.Minute)
	u.rooms.leave(c.RoomID, "carol", rooms.LeaveConnectionLost)
	r := u.ended(c.CallID, calls.ResultCompleted, calls.EndAllLeft, "carol", "alice", "bob", "carol")
	if r.Duration != 2*time.Minute || r.GroupID != "g" {
		t.Errorf("record: duration %v group %q", r.Duration, r.GroupID)
	}
	if ns := u.eng.notifyRecs(); len(ns) != 1 || ns[0].From != "alice" || !slices.Equal(ns[0].To, []string{"carol"}) || ns[0].GroupID != "g" {
		t.Errorf("call-end invitations: %+v", ns)
	}
}

// Answering a ring one does not have is refused by the engine and changes
// nothing in the call.
func TestUnitAnswerNotRinging(t *testing.T) {
	u := newUnit(t, nil)
	c := u.call("alice", "bob")
	_, err := u.op("carol", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	if !errors.Is(err, protocol.ErrInvalidInviteID) {
		t.Fatalf("carol's accept: %v, want invalid_invite_id", err)
	}
	if u.rooms.connect(c.RoomID, "carol") || u.m.Active() != 1 {
		t.Error("carol's refused accept admitted her or ended the call")
	}
}

// The room's media node lets the participants go (cluster mode: it shuts
// down, or loses the room: rooms.LeaveMediaNodeLost): the call is not
// ended; they enter again and it goes on. One who does not come back within
// setup_timeout has left with the connection lost, at the time it was lost:
// a one-to-one call ends connection_lost with its duration up to then, once.
func TestUnitMediaNodeLostCallWaits(t *testing.T) {
	u := newUnit(t, func(c *calls.Config) { c.SetupTimeout = 10 * time.Second })
	c := u.call("alice", "bob")
	u.mustOp("bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	u.connect(c.RoomID, "alice", "bob")
	u.clock.Advance(5 * time.Second)
	for _, user := range []string{"alice", "bob"} {
		u.rooms.leave(c.RoomID, user, rooms.LeaveMediaNodeLost)
	}
	if u.m.Active() != 1 || len(u.eng.eventsNamed(calls.EvCallEnd)) != 0 {
		t.Fatal("the call ended when its media node let its participants go")
	}
	u.clock.Advance(3 * time.Second)
	u.connect(c.RoomID, "alice", "bob") // their entries again: admitted
	u.clock.Advance(time.Minute)
	if u.m.Active() != 1 || len(u.eng.eventsNamed(calls.EvCallEnd)) != 0 {
		t.Fatal("the call ended although both came back within setup_timeout")
	}
	if n := len(u.eng.eventsNamed(calls.EvCallBegin)); n != 1 {
		t.Fatalf("%d onCallBegin, want 1 (one call)", n)
	}

	// Lost again; alice comes back, bob does not.
	lost := t0.Add(5*time.Second + 3*time.Second + time.Minute)
	for _, user := range []string{"bob", "alice"} {
		u.rooms.leave(c.RoomID, user, rooms.LeaveMediaNodeLost)
	}
	u.clock.Advance(2 * time.Second)
	u.connect(c.RoomID, "alice")
	u.clock.Advance(8*time.Second - time.Millisecond)
	if u.m.Active() != 1 {
		t.Fatal("the call ended before setup_timeout")
	}
	u.clock.Advance(time.Millisecond)
	r := u.ended(c.CallID, calls.ResultCompleted, calls.EndConnectionLost, "bob", "alice", "bob")
	if !r.BeganAt.Equal(t0) || !r.EndedAt.Equal(lost) || r.Duration != lost.Sub(t0) {
		t.Errorf("record: began %v ended %v duration %v, want %v, %v, %v", r.BeganAt, r.EndedAt, r.Duration, t0, lost, lost.Sub(t0))
	}
	if p := participant(r, "bob"); !p.LeftAt.Equal(lost) || p.Result != calls.ResultCompleted {
		t.Errorf("bob: %+v, want left at %v", p, lost)
	}
	if ns := u.eng.notifyRecs(); len(ns) != 1 || ns[0].From != "alice" || !slices.Equal(ns[0].To, []string{"bob"}) {
		t.Errorf("call-end invitations: %+v", ns)
	}
	u.clock.Advance(time.Minute)
	if n := len(u.eng.eventsNamed(calls.EvCallEnd)); n != 1 {
		t.Fatalf("%d onCallEnd, want 1", n)
	}
}

// A group call loses a participant its media node let go who does not come
// back, and goes on with the two who did; one lost who hangs up instead of
// entering again leaves at once (hangup).
func TestUnitMediaNodeLostGroupCall(t *testing.T) {
	u := newUnit(t, func(c *calls.Config) { c.SetupTimeout = 10 * time.Second })
	u.eng.groups["g"] = []string{"alice", "bob", "carol"}
	c := u.mustOp("alice", calls.OpGroupCall, calls.GroupCallArgs{GroupID: "g", InviteeList: []string{"bob", "carol"}}).(calls.CallResult)
	for _, user := range []string{"bob", "carol"} {
		u.mustOp(user, protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	}
	u.connect(c.RoomID, "alice", "bob", "carol")
	u.clock.Advance(time.Minute)
	for _, user := range []string{"alice", "bob", "carol"} {
		u.rooms.leave(c.RoomID, user, rooms.LeaveMediaNodeLost)
	}
	u.clock.Advance(time.Second)
	u.connect(c.RoomID, "alice", "bob")
	u.clock.Advance(10 * time.Second)
	if u.m.Active() != 1 || len(u.eng.eventsNamed(calls.EvCallEnd)) != 0 {
		t.Fatal("the group call ended with two back in it")
	}
	rec, _ := u.m.Call(c.CallID)
	if p := participant(rec, "carol"); !p.LeftAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("carol, not back: %+v, want left at %v", p, t0.Add(time.Minute))
	}
	u.rooms.leave(c.RoomID, "bob", rooms.LeaveMediaNodeLost)
	u.clock.Advance(time.Second)
	u.mustOp("bob", calls.OpHangup, calls.CallIDArgs{CallID: c.CallID})
	r := u.ended(c.CallID, calls.ResultCompleted, calls.EndAllLeft, "bob", "alice", "bob", "carol")
	if r.EndedAt != t0.Add(time.Minute+12*time.Second) {
		t.Errorf("record: ended %v, want at bob's hangup", r.EndedAt)
	}
}

// With setup_timeout off there is no wait: a participant its media node
// lets go has lost the connection at once.
func TestUnitMediaNodeLostNoSetupTimeout(t *testing.T) {
	u := newUnit(t, func(c *calls.Config) { c.SetupTimeout = 0 })
	c := u.call("alice", "bob")
	u.mustOp("bob", protocol.OpAccept, protocol.InviteIDArgs{InviteID: c.InviteID})
	u.connect(c.RoomID, "alice", "bob")
	u.clock.Advance(time.Second)
	u.rooms.leave(c.RoomID, "bob", rooms.LeaveMediaNodeLost)
	u.ended(c.CallID, calls.ResultCompleted, calls.EndConnectionLost, "bob", "alice", "bob")
}
