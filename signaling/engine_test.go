package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// session is a fake connection that records what it is sent. Like the real
// one, it holds live events back while a replay is in progress; replay
// writes the replay's frames, then the held ones.
type session struct {
	user   string
	mu     sync.Mutex
	evs    []protocol.EventFrame
	held   []protocol.EventFrame
	replay *signaling.Replay
}

func (s *session) UserID() string { return s.user }

func parseFrame(frame []byte) protocol.EventFrame {
	var f struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(frame, &f); err != nil {
		panic(err)
	}
	return protocol.EventFrame{Event: f.Event, Data: f.Data}
}

func (s *session) Deliver(frame []byte) {
	f := parseFrame(frame)
	s.mu.Lock()
	if s.replay != nil {
		s.held = append(s.held, f)
	} else {
		s.evs = append(s.evs, f)
	}
	s.mu.Unlock()
}

func (s *session) StartReplay(r *signaling.Replay) {
	s.mu.Lock()
	s.replay = r
	s.mu.Unlock()
}

// drain plays the replay to its end, as the connection's writer does, at
// most max frames at a time (0: no limit); it returns how many Next calls
// it took.
func (s *session) drain() int {
	s.mu.Lock()
	r := s.replay
	s.mu.Unlock()
	if r == nil {
		return 0
	}
	calls := 0
	for {
		frames := r.Next(context.Background())
		calls++
		if frames == nil {
			break
		}
		s.mu.Lock()
		for _, f := range frames {
			s.evs = append(s.evs, parseFrame(f))
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.evs = append(s.evs, s.held...)
	s.held, s.replay = nil, nil
	s.mu.Unlock()
	return calls
}

// take returns and forgets what the session received.
func (s *session) take() []protocol.EventFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.evs
	s.evs = nil
	return out
}

func (s *session) names() []string {
	var out []string
	for _, e := range s.take() {
		out = append(out, e.Event)
	}
	return out
}

func decode[T any](t *testing.T, e protocol.EventFrame) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(e.Data.(json.RawMessage), &v); err != nil {
		t.Fatalf("decode %s: %v", e.Event, err)
	}
	return v
}

type harness struct {
	t     *testing.T
	clock *clocktest.Clock
	store *signaling.MemoryStore
	eng   *signaling.Engine
	cfg   signaling.Config
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clock: clocktest.New(t0), store: signaling.NewMemoryStore(), cfg: signaling.DefaultConfig()}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	eng, err := signaling.NewEngine(context.Background(), signaling.Params{Config: h.cfg, Store: h.store, Clock: h.clock,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng = eng
	h.t.Cleanup(eng.Close)
}

// restart closes the engine and starts another on the same store.
func (h *harness) restart() {
	h.eng.Close()
	h.start()
}

func (h *harness) connect(user string) *session {
	h.t.Helper()
	s := &session{user: user}
	if err := h.eng.Attach(context.Background(), s); err != nil {
		h.t.Fatal(err)
	}
	s.drain()
	return s
}

// seen makes users known to the engine (connected once), as users of a
// real deployment are, so that events are kept for them while offline.
func (h *harness) seen(users ...string) {
	h.t.Helper()
	for _, u := range users {
		h.eng.Detach(h.connect(u))
	}
}

func as(s *session) protocol.Actor { return protocol.Actor{UserID: s.user, Session: s} }

func secs(n int) *int { return &n }

var ctx = context.Background()

func mustCode(t *testing.T, err error, want *protocol.Error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %s (%d)", err, want.Reason, want.Code)
	}
}

func TestNextStateTable(t *testing.T) {
	all := []signaling.InviteeState{signaling.StateUnknown, signaling.StatePending, signaling.StateAccepted,
		signaling.StateRejected, signaling.StateTimedOut, signaling.StateCancelled}
	want := map[signaling.Action]signaling.InviteeState{
		signaling.ActionAccept: signaling.StateAccepted, signaling.ActionReject: signaling.StateRejected,
		signaling.ActionTimeout: signaling.StateTimedOut, signaling.ActionCancel: signaling.StateCancelled,
	}
	for _, from := range all {
		for a, to := range want {
			got, err := signaling.NextState(from, a)
			if from == signaling.StatePending {
				if err != nil || got != to {
					t.Errorf("%s --%s--> %s, %v; want %s", from, a, got, err, to)
				}
				continue
			}
			if !errors.Is(err, protocol.ErrInvalidInviteID) || got != from {
				t.Errorf("%s --%s--> %s, %v; want no change and invalid_invite_id", from, a, got, err)
			}
		}
		if _, err := signaling.NextState(from, signaling.ActionUnknown); err == nil {
			t.Errorf("%s accepts the unknown action", from)
		}
		if s := from.String(); s == "" {
			t.Errorf("state %d has no name", int(from))
		}
		if from != signaling.StateUnknown {
			if p, err := signaling.ParseInviteeState(from.String()); err != nil || p != from {
				t.Errorf("ParseInviteeState(%q) = %v, %v", from.String(), p, err)
			}
		}
	}
}

func TestInviteRoutingAcrossDevices(t *testing.T) {
	h := newHarness(t)
	alice1, alice2 := h.connect("alice"), h.connect("alice")
	bob1, bob2 := h.connect("bob"), h.connect("bob")
	carol := h.connect("carol")

	id, err := h.eng.Invite(ctx, as(alice1), protocol.InviteArgs{Invitee: "bob", Data: `{"x":"é ✓"}`, Timeout: secs(30)})
	if err != nil {
		t.Fatal(err)
	}
	if got := alice1.names(); len(got) != 0 {
		t.Fatalf("the acting connection got events %v; it gets a reply only", got)
	}
	for _, s := range []*session{alice2, bob1, bob2} {
		evs := s.take()
		if len(evs) != 1 || evs[0].Event != protocol.EvReceiveNewInvitation {
			t.Fatalf("%s got %v", s.user, evs)
		}
		ev := decode[protocol.NewInvitationEvent](t, evs[0])
		if ev.InviteID != id || ev.Inviter != "alice" || ev.GroupID != "" || !slices.Equal(ev.InviteeList, []string{"bob"}) ||
			ev.Data != `{"x":"é ✓"}` || ev.Timeout != 30 || ev.TimeoutMs != 30000 {
			t.Fatalf("bad event %+v", ev)
		}
	}
	if got := carol.names(); len(got) != 0 {
		t.Fatalf("an outsider got %v", got)
	}

	// bob answers on device 1: device 2 stops ringing (gets the event), alice's devices hear it.
	if err := h.eng.Accept(ctx, as(bob1), protocol.InviteIDArgs{InviteID: id, Data: "ok"}); err != nil {
		t.Fatal(err)
	}
	if got := bob1.names(); len(got) != 0 {
		t.Fatalf("acting device got %v", got)
	}
	for _, s := range []*session{alice1, alice2, bob2} {
		evs := s.take()
		if len(evs) != 1 || evs[0].Event != protocol.EvInviteeAccepted {
			t.Fatalf("%s got %v", s.user, evs)
		}
		if ev := decode[protocol.InviteeEvent](t, evs[0]); ev.InviteID != id || ev.Invitee != "bob" || ev.Data != "ok" {
			t.Fatalf("bad event %+v", ev)
		}
	}
	// The invitation ended: every further action is invalid_invite_id.
	mustCode(t, h.eng.Accept(ctx, as(bob2), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
	mustCode(t, h.eng.Reject(ctx, as(bob2), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
	mustCode(t, h.eng.Cancel(ctx, as(alice1), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
	if _, ok := h.eng.Invitation(id); ok {
		t.Fatal("ended invitation still live")
	}
	if h.clock.Pending() != 1 { // only the outbox purge timer
		t.Fatalf("timers left: %d", h.clock.Pending())
	}
	if got := carol.names(); len(got) != 0 {
		t.Fatalf("an outsider got %v", got)
	}
}

func TestInviteValidation(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxInvitees = 3
	h.restart()
	a := h.connect("alice")
	big := make([]byte, h.cfg.Limits.MaxDataBytes+1)
	for i := range big {
		big[i] = 'x'
	}
	cases := []struct {
		name string
		args protocol.InviteArgs
		want *protocol.Error
	}{
		{"no invitee", protocol.InviteArgs{}, protocol.ErrInvalidParameter},
		{"bad invitee", protocol.InviteArgs{Invitee: "b b"}, protocol.ErrInvalidParameter},
		{"self", protocol.InviteArgs{Invitee: "alice"}, protocol.ErrInvalidParameter},
		{"negative timeout", protocol.InviteArgs{Invitee: "bob", Timeout: secs(-1)}, protocol.ErrInvalidParameter},
		{"timeout above max", protocol.InviteArgs{Invitee: "bob", Timeout: secs(301)}, protocol.ErrTimeoutTooLarge},
		{"data too large", protocol.InviteArgs{Invitee: "bob", Data: string(big)}, protocol.ErrDataTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.eng.Invite(ctx, as(a), c.args)
			mustCode(t, err, c.want)
		})
	}
	// At the limits: accepted.
	if _, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Data: string(big[:len(big)-1]), Timeout: secs(300)}); err != nil {
		t.Fatalf("data at the limit: %v", err)
	}
	gid, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"b1", "b2", "b3", "b4"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"b1", "b2", "b3"}}); err != nil {
		t.Fatalf("list at the limit: %v", err)
	}
	_, err = h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"b1", "b2", "b3", "b4"}})
	mustCode(t, err, protocol.ErrListTooLarge)
	_, err = h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"b1", "b1"}})
	mustCode(t, err, protocol.ErrInvalidParameter)
	_, err = h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"zed"}})
	mustCode(t, err, protocol.ErrNotGroupMember)
	_, err = h.eng.InviteInGroup(ctx, protocol.Actor{UserID: "zed"}, protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"b1"}})
	mustCode(t, err, protocol.ErrNotGroupMember)
	_, err = h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: "nope", InviteeList: []string{"b1"}})
	mustCode(t, err, protocol.ErrGroupNotFound)
}

func TestCancelRules(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.connect("alice"), h.connect("bob"), h.connect("carol")
	gid, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"bob", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	b.take()
	c.take()
	id, err := h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, h.eng.Cancel(ctx, as(b), protocol.InviteIDArgs{InviteID: id}), protocol.ErrNoPermission)
	mustCode(t, h.eng.ModifyInvitation(ctx, as(b), protocol.InviteIDArgs{InviteID: id}), protocol.ErrNoPermission)
	if err := h.eng.Reject(ctx, as(b), protocol.InviteIDArgs{InviteID: id, Data: "no"}); err != nil {
		t.Fatal(err)
	}
	// Once someone answered, the inviter can no longer cancel.
	mustCode(t, h.eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
	if got := c.names(); !slices.Equal(got, []string{protocol.EvReceiveNewInvitation, protocol.EvInviteeRejected}) {
		t.Fatalf("carol got %v", got)
	}

	id2, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	b.take()
	if err := h.eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id2, Data: "bye"}); err != nil {
		t.Fatal(err)
	}
	evs := b.take()
	if len(evs) != 1 || evs[0].Event != protocol.EvInvitationCancelled {
		t.Fatalf("bob got %v", evs)
	}
	if ev := decode[protocol.CancelledEvent](t, evs[0]); ev.InviteID != id2 || ev.Inviter != "alice" || ev.Data != "bye" {
		t.Fatalf("bad event %+v", ev)
	}
	mustCode(t, h.eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id2}), protocol.ErrInvalidInviteID)
	// Not an invitee: 8010 too.
	id3, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	mustCode(t, h.eng.Accept(ctx, as(c), protocol.InviteIDArgs{InviteID: id3}), protocol.ErrInvalidInviteID)
}

func TestModifyInvitation(t *testing.T) {
	h := newHarness(t)
	a, b := h.connect("alice"), h.connect("bob")
	id, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Data: "v1"})
	b.take()
	if err := h.eng.ModifyInvitation(ctx, as(a), protocol.InviteIDArgs{InviteID: id, Data: "v2"}); err != nil {
		t.Fatal(err)
	}
	evs := b.take()
	if len(evs) != 1 || evs[0].Event != protocol.EvInvitationModified || decode[protocol.ModifiedEvent](t, evs[0]).Data != "v2" {
		t.Fatalf("bob got %v", evs)
	}
	// A device connecting later rings with the new data.
	b2 := h.connect("bob")
	evs = b2.take()
	if len(evs) != 1 || decode[protocol.NewInvitationEvent](t, evs[0]).Data != "v2" {
		t.Fatalf("late device got %v", evs)
	}
	online, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", OnlineUserOnly: true})
	mustCode(t, h.eng.ModifyInvitation(ctx, as(a), protocol.InviteIDArgs{InviteID: online, Data: "x"}), protocol.ErrInvalidParameter)
}

func TestTimeoutFiresAtDeadline(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.connect("alice"), h.connect("bob"), h.connect("carol")
	gid, _ := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"bob", "carol"}})
	id, err := h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob", "carol"}, Timeout: secs(10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	a.take()
	b.take()
	c.take()
	h.clock.Advance(10*time.Second - time.Millisecond)
	if got := a.names(); len(got) != 0 {
		t.Fatalf("before the deadline alice got %v", got)
	}
	h.clock.Advance(time.Millisecond)
	for _, s := range []*session{a, c} {
		evs := s.take()
		if len(evs) != 1 || evs[0].Event != protocol.EvInvitationTimeout {
			t.Fatalf("%s got %v", s.user, evs)
		}
		if ev := decode[protocol.TimeoutEvent](t, evs[0]); ev.InviteID != id || !slices.Equal(ev.InviteeList, []string{"carol"}) {
			t.Fatalf("bad event %+v", ev)
		}
	}
	if got := b.names(); len(got) != 0 {
		t.Fatalf("bob had answered; got %v", got)
	}
	mustCode(t, h.eng.Accept(ctx, as(c), protocol.InviteIDArgs{InviteID: id}), protocol.ErrInvalidInviteID)
}

func TestDefaultAndZeroTimeout(t *testing.T) {
	h := newHarness(t)
	a, b := h.connect("alice"), h.connect("bob")
	def, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	never, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(0)})
	evs := b.take()
	if decode[protocol.NewInvitationEvent](t, evs[0]).Timeout != 30 || decode[protocol.NewInvitationEvent](t, evs[1]).Timeout != 0 {
		t.Fatalf("timeouts: %v", evs)
	}
	h.clock.Advance(time.Hour)
	if _, ok := h.eng.Invitation(def); ok {
		t.Fatal("default-timeout invitation still live after an hour")
	}
	if _, ok := h.eng.Invitation(never); !ok {
		t.Fatal("timeout 0 invitation timed out")
	}
	for _, e := range b.take() {
		if e.Event == protocol.EvInvitationTimeout && decode[protocol.TimeoutEvent](t, e).InviteID == never {
			t.Fatal("timeout event for a timeout-0 invitation")
		}
	}
}

func TestOfflineInviteeRingsOnConnect(t *testing.T) {
	h := newHarness(t)
	a := h.connect("alice")
	id, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
	onlineOnly, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", OnlineUserOnly: true})
	h.clock.Advance(12*time.Second + 300*time.Millisecond)
	b := h.connect("bob")
	evs := b.take()
	if len(evs) != 1 {
		t.Fatalf("bob got %d events, want 1 (the onlineUserOnly invitation is not stored): %v", len(evs), evs)
	}
	ev := decode[protocol.NewInvitationEvent](t, evs[0])
	if ev.InviteID != id || ev.Timeout != 18 || ev.TimeoutMs != 17700 {
		t.Fatalf("bad event %+v (want the time left, 17.7 s)", ev)
	}
	if err := h.eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: onlineOnly}); err != nil {
		t.Fatalf("an onlineUserOnly invitation can still be answered by its invitee: %v", err)
	}
}

func TestOutcomesWhileOfflineAreDeliveredOnConnect(t *testing.T) {
	h := newHarness(t)
	a, b := h.connect("alice"), h.connect("bob")
	acc, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	rej, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	tmo, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(5)})
	h.eng.Detach(a) // alice goes offline
	if err := h.eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: acc, Data: "yes"}); err != nil {
		t.Fatal(err)
	}
	if err := h.eng.Reject(ctx, as(b), protocol.InviteIDArgs{InviteID: rej, Data: "no"}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(5 * time.Second)
	// And a cancelled invitation bob never saw while offline.
	h.eng.Detach(b)
	a2 := h.connect("alice")
	can, _ := h.eng.Invite(ctx, as(a2), protocol.InviteArgs{Invitee: "bob"})
	if err := h.eng.Cancel(ctx, as(a2), protocol.InviteIDArgs{InviteID: can}); err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, id string }{
		{protocol.EvInviteeAccepted, acc}, {protocol.EvInviteeRejected, rej}, {protocol.EvInvitationTimeout, tmo},
	}
	evs := a2.take()
	if len(evs) != len(want) {
		t.Fatalf("alice got %v", evs)
	}
	for i, w := range want {
		var got struct {
			InviteID string `json:"inviteID"`
		}
		_ = json.Unmarshal(evs[i].Data.(json.RawMessage), &got)
		if evs[i].Event != w.name || got.InviteID != w.id {
			t.Fatalf("event %d: %s %s, want %s %s", i, evs[i].Event, got.InviteID, w.name, w.id)
		}
	}
	// Survives a restart too: bob's missed cancel is in the store.
	h.restart()
	b2 := h.connect("bob")
	evs = b2.take()
	if len(evs) != 1 || evs[0].Event != protocol.EvInvitationCancelled {
		t.Fatalf("bob got %v", evs)
	}
	// Delivered once only.
	b3 := h.connect("bob")
	if got := b3.names(); len(got) != 0 {
		t.Fatalf("second connect got %v again", got)
	}
	h.restart()
	if got := h.connect("bob").names(); len(got) != 0 {
		t.Fatalf("after restart bob got %v again", got)
	}
}

func TestRestartKeepsInvitationsAndDeadlines(t *testing.T) {
	h := newHarness(t)
	h.seen("bob")
	a := h.connect("alice")
	gid, _ := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "team", Name: "Team", MemberList: []string{"bob"}})
	long, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(60)})
	short, _ := h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob"}, Timeout: secs(5)})
	none, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "carol", Timeout: secs(0)})
	h.eng.Detach(a)
	h.eng.Close()
	h.clock.Advance(20 * time.Second) // the server is down for 20 s
	h.start()

	// The short one expired while down: timed out at start, kept for alice.
	if _, ok := h.eng.Invitation(short); ok {
		t.Fatal("expired invitation still live after restart")
	}
	info, ok := h.eng.Invitation(long)
	if !ok || info.Deadline != t0.Add(60*time.Second) {
		t.Fatalf("long invitation after restart: %+v %v", info, ok)
	}
	if _, ok := h.eng.Invitation(none); !ok {
		t.Fatal("timeout-0 invitation lost")
	}
	if !h.eng.IsGroupMember("team", "bob") {
		t.Fatal("group lost")
	}
	b := h.connect("bob")
	evs := b.take()
	// bob missed the timeout of the short one, then rings for the long one with 40 s left.
	if len(evs) != 2 || evs[0].Event != protocol.EvInvitationTimeout || evs[1].Event != protocol.EvReceiveNewInvitation {
		t.Fatalf("bob got %v", evs)
	}
	if ev := decode[protocol.NewInvitationEvent](t, evs[1]); ev.InviteID != long || ev.Timeout != 40 {
		t.Fatalf("bad ring %+v", ev)
	}
	// The timer fires at the original deadline, not 60 s after the restart.
	h.clock.Advance(40*time.Second - time.Millisecond)
	if _, ok := h.eng.Invitation(long); !ok {
		t.Fatal("fired early")
	}
	h.clock.Advance(time.Millisecond)
	if _, ok := h.eng.Invitation(long); ok {
		t.Fatal("did not fire at the stored deadline")
	}
	if got := b.names(); !slices.Equal(got, []string{protocol.EvInvitationTimeout}) {
		t.Fatalf("bob got %v", got)
	}
	a2 := h.connect("alice")
	if got := a2.names(); !slices.Equal(got, []string{protocol.EvInvitationTimeout, protocol.EvInvitationTimeout}) {
		t.Fatalf("alice got %v", got)
	}
}

func TestStoreFailureChangesNothing(t *testing.T) {
	h := newHarness(t)
	a, b := h.connect("alice"), h.connect("bob")
	h.store.FailNext(1)
	_, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	mustCode(t, err, protocol.ErrStoreUnavailable)
	if got := b.names(); len(got) != 0 {
		t.Fatalf("bob got %v for an invitation that was not stored", got)
	}
	id, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(10)})
	if err != nil {
		t.Fatal(err)
	}
	b.take()
	h.store.FailNext(1)
	mustCode(t, h.eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id}), protocol.ErrStoreUnavailable)
	if got := a.names(); len(got) != 0 {
		t.Fatalf("alice got %v for an accept that was not stored", got)
	}
	if info, _ := h.eng.Invitation(id); info.States["bob"] != signaling.StatePending {
		t.Fatalf("state after failed accept: %v", info.States["bob"])
	}
	// The timeout fails to store once, then retries.
	h.store.FailNext(1)
	h.clock.Advance(10 * time.Second)
	if _, ok := h.eng.Invitation(id); !ok {
		t.Fatal("timeout applied although the store failed")
	}
	h.clock.Advance(time.Second)
	if _, ok := h.eng.Invitation(id); ok {
		t.Fatal("timeout not retried after the store recovered")
	}
	if got := a.names(); !slices.Equal(got, []string{protocol.EvInvitationTimeout}) {
		t.Fatalf("alice got %v", got)
	}
	h.store.FailNext(1)
	_, err = h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "g", Name: "g"})
	mustCode(t, err, protocol.ErrStoreUnavailable)
	if _, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "g", Name: "g"}); err != nil {
		t.Fatalf("group creation after recovery: %v", err)
	}
}

// TestRacesResolveToOneOutcome runs accept, reject, cancel and the timeout
// against one invitee at once, many times: exactly one wins, the losers
// get invalid_invite_id and cause no event.
func TestRacesResolveToOneOutcome(t *testing.T) {
	h := newHarness(t)
	for round := 0; round < 200; round++ {
		a := &session{user: "alice"}
		b1, b2 := &session{user: "bob"}, &session{user: "bob"}
		for _, s := range []*session{a, b1, b2} {
			if err := h.eng.Attach(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		id, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(1)})
		if err != nil {
			t.Fatal(err)
		}
		b1.take()
		b2.take()
		var wins atomic.Int32
		var wg sync.WaitGroup
		try := func(f func() error) {
			defer wg.Done()
			err := f()
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, protocol.ErrInvalidInviteID):
			default:
				t.Errorf("round %d: unexpected error %v", round, err)
			}
		}
		wg.Add(5)
		go try(func() error { return h.eng.Accept(ctx, as(b1), protocol.InviteIDArgs{InviteID: id}) })
		go try(func() error { return h.eng.Accept(ctx, as(b2), protocol.InviteIDArgs{InviteID: id}) })
		go try(func() error { return h.eng.Reject(ctx, as(b2), protocol.InviteIDArgs{InviteID: id}) })
		go try(func() error { return h.eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id}) })
		timedOut := make(chan struct{})
		go func() {
			defer wg.Done()
			h.clock.Advance(time.Second)
			close(timedOut)
		}()
		wg.Wait()
		<-timedOut
		_, live := h.eng.Invitation(id)
		if live {
			t.Fatalf("round %d: invitation still live", round)
		}
		// Exactly one outcome: either one call won and alice saw at most its
		// event (none if she cancelled: the actor gets a reply), or no call
		// won and alice saw the timeout.
		evs := a.take()
		w := wins.Load()
		isTimeout := len(evs) == 1 && evs[0].Event == protocol.EvInvitationTimeout
		ok := (w == 1 && len(evs) <= 1 && !isTimeout) || (w == 0 && isTimeout)
		if !ok {
			t.Fatalf("round %d: %d winning calls, alice saw %v", round, w, evs)
		}
		for _, s := range []*session{a, b1, b2} {
			h.eng.Detach(s)
		}
	}
}

func TestGroupLifecycle(t *testing.T) {
	h := newHarness(t)
	a, b, c, d := h.connect("alice"), h.connect("bob"), h.connect("carol"), h.connect("dave")
	gid, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "Class 1", MemberList: []string{"bob", "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.names(); !slices.Equal(got, []string{protocol.EvMemberEnter}) {
		t.Fatalf("bob got %v", got)
	}
	_, err = h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: gid, Name: "again"})
	mustCode(t, err, protocol.ErrGroupExists)

	if err := h.eng.JoinGroup(ctx, as(c), protocol.GroupIDArgs{GroupID: gid}); err != nil {
		t.Fatal(err)
	}
	mustCode(t, h.eng.JoinGroup(ctx, as(c), protocol.GroupIDArgs{GroupID: gid}), protocol.ErrAlreadyMember)
	for _, s := range []*session{a, b} {
		evs := s.take()
		if len(evs) != 1 || evs[0].Event != protocol.EvMemberEnter || !slices.Equal(decode[protocol.MemberEnterEvent](t, evs[0]).MemberList, []string{"carol"}) {
			t.Fatalf("%s got %v", s.user, evs)
		}
	}
	if err := h.eng.InviteUserToGroup(ctx, as(b), protocol.GroupUsersArgs{GroupID: gid, UserList: []string{"dave", "carol"}}); err != nil {
		t.Fatal(err)
	}
	if evs := d.take(); len(evs) != 1 || !slices.Equal(decode[protocol.MemberEnterEvent](t, evs[0]).MemberList, []string{"dave"}) {
		t.Fatalf("dave got %v", evs)
	}
	res, err := h.eng.GetGroupMemberList(ctx, as(c), protocol.GroupIDArgs{GroupID: gid})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range res.MemberList {
		ids = append(ids, m.UserID)
	}
	if !slices.Equal(ids[:2], []string{"alice", "bob"}) || len(ids) != 4 || res.MemberList[0].Role != protocol.RoleOwner {
		t.Fatalf("members %+v", res.MemberList)
	}
	_, err = h.eng.GetGroupMemberList(ctx, protocol.Actor{UserID: "eve"}, protocol.GroupIDArgs{GroupID: gid})
	mustCode(t, err, protocol.ErrNotGroupMember)

	mustCode(t, h.eng.KickGroupMember(ctx, as(b), protocol.KickArgs{GroupID: gid, MemberList: []string{"carol"}}), protocol.ErrNotGroupOwner)
	mustCode(t, h.eng.QuitGroup(ctx, as(a), protocol.GroupIDArgs{GroupID: gid}), protocol.ErrOwnerCannotQuit)
	a.take()
	b.take()
	c.take()
	d.take()
	if err := h.eng.KickGroupMember(ctx, as(a), protocol.KickArgs{GroupID: gid, MemberList: []string{"carol"}, Reason: "noise"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*session{b, c, d} {
		evs := s.take()
		if len(evs) != 1 || evs[0].Event != protocol.EvMemberKicked {
			t.Fatalf("%s got %v", s.user, evs)
		}
	}
	if err := h.eng.QuitGroup(ctx, as(d), protocol.GroupIDArgs{GroupID: gid}); err != nil {
		t.Fatal(err)
	}
	if evs := b.take(); len(evs) != 1 || decode[protocol.MemberLeaveEvent](t, evs[0]).Member != "dave" {
		t.Fatalf("bob got %v", evs)
	}
	list, _ := h.eng.GetJoinedGroupList(ctx, as(b))
	if len(list.GroupList) != 1 || list.GroupList[0].MemberCount != 2 || list.GroupList[0].Name != "Class 1" {
		t.Fatalf("bob's groups %+v", list)
	}
	h.restart()
	list, _ = h.eng.GetJoinedGroupList(ctx, protocol.Actor{UserID: "bob"})
	if len(list.GroupList) != 1 || list.GroupList[0].MemberCount != 2 {
		t.Fatalf("after restart: %+v", list)
	}
	b = h.connect("bob")
	a = h.connect("alice")
	mustCode(t, h.eng.DismissGroup(ctx, as(b), protocol.GroupIDArgs{GroupID: gid}), protocol.ErrNotGroupOwner)
	if err := h.eng.DismissGroup(ctx, as(a), protocol.GroupIDArgs{GroupID: gid}); err != nil {
		t.Fatal(err)
	}
	if got := b.names(); !slices.Equal(got, []string{protocol.EvGroupDismissed}) {
		t.Fatalf("bob got %v", got)
	}
	if list, _ := h.eng.GetJoinedGroupList(ctx, as(b)); len(list.GroupList) != 0 {
		t.Fatalf("dismissed group still listed: %+v", list)
	}
}

func TestGroupLimits(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxGroupMembers = 3
	h.cfg.Limits.MaxGroupsPerUser = 2
	h.restart()
	a := h.connect("alice")
	_, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"b", "c", "d"}})
	mustCode(t, err, protocol.ErrGroupFull)
	g1, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"b", "c"}})
	if err != nil {
		t.Fatalf("at the member limit: %v", err)
	}
	mustCode(t, h.eng.JoinGroup(ctx, protocol.Actor{UserID: "d"}, protocol.GroupIDArgs{GroupID: g1}), protocol.ErrGroupFull)
	if _, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g2"}); err != nil {
		t.Fatalf("at the groups-per-user limit: %v", err)
	}
	_, err = h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "g3"})
	mustCode(t, err, protocol.ErrTooManyGroups)
	_, err = h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: ""})
	mustCode(t, err, protocol.ErrInvalidParameter)
	_, err = h.eng.CreateGroup(ctx, protocol.Actor{UserID: "x"}, protocol.CreateGroupArgs{Name: "n", JoinOption: "sometimes"})
	mustCode(t, err, protocol.ErrInvalidParameter)
	inv, _ := h.eng.CreateGroup(ctx, protocol.Actor{UserID: "x"}, protocol.CreateGroupArgs{Name: "n", JoinOption: "invite"})
	mustCode(t, h.eng.JoinGroup(ctx, protocol.Actor{UserID: "y"}, protocol.GroupIDArgs{GroupID: inv}), protocol.ErrJoinForbidden)
}

func TestConnectionLimit(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < h.cfg.Limits.ConnectionsPerUser; i++ {
		h.connect("alice")
	}
	err := h.eng.Attach(ctx, &session{user: "alice"})
	mustCode(t, err, protocol.ErrTooManyConnections)
	if n := h.eng.Online("alice"); n != h.cfg.Limits.ConnectionsPerUser {
		t.Fatalf("online = %d", n)
	}
}

func TestOfflineEventCap(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxOfflineEvents = 3
	h.restart()
	h.seen("alice")
	b := h.connect("bob")
	var ids []string
	for i := 0; i < 5; i++ {
		id, err := h.eng.Invite(ctx, protocol.Actor{UserID: "alice"}, protocol.InviteArgs{Invitee: "bob", Data: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if err := h.eng.Reject(ctx, as(b), protocol.InviteIDArgs{InviteID: id}); err != nil {
			t.Fatal(err)
		}
	}
	evs := h.connect("alice").take()
	if len(evs) != 3 {
		t.Fatalf("alice got %d events, want the newest 3", len(evs))
	}
	if got := decode[protocol.InviteeEvent](t, evs[0]).InviteID; got != ids[2] {
		t.Fatalf("oldest kept is %s, want %s", got, ids[2])
	}
}
