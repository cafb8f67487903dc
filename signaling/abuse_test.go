package signaling_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// attach connects a session of user without playing its replay.
func (h *harness) attach(user string) *session {
	h.t.Helper()
	s := &session{user: user}
	if err := h.eng.Attach(ctx, s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

// TestReplayIsPulled: what a user missed is handed to the connection as a
// replay that it pulls a batch at a time, never pushed all at once; live
// events decided meanwhile come after it, in order.
func TestReplayIsPulled(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxPendingPerInvitee, h.cfg.Limits.MaxPendingPerInviter = 300, 300
	h.restart()
	h.seen("ceo")
	m := h.connect("mallory")
	var ids []string
	for range 300 {
		id, err := h.eng.Invite(ctx, as(m), protocol.InviteArgs{Invitee: "ceo", Timeout: secs(0)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Kept for ceo while offline: an accept and a cancel of mallory's.
	for _, id := range ids[:2] {
		if err := h.eng.Cancel(ctx, as(m), protocol.InviteIDArgs{InviteID: id}); err != nil {
			t.Fatal(err)
		}
	}
	ids = ids[2:]

	ceo := h.attach("ceo")
	if got := ceo.take(); len(got) != 0 {
		t.Fatalf("Attach pushed %d frames; it must hand a replay over", len(got))
	}
	ceo.mu.Lock()
	r := ceo.replay
	ceo.mu.Unlock()
	if r == nil {
		t.Fatal("no replay handed over")
	}
	first := r.Next(ctx)
	if len(first) == 0 || len(first) > 32 {
		t.Fatalf("first batch has %d frames, want 1-32", len(first))
	}
	// While the replay is under way, mallory cancels an invitation that was
	// not replayed yet, and sends a new one: both live, after the replay.
	if err := h.eng.Cancel(ctx, as(m), protocol.InviteIDArgs{InviteID: ids[250]}); err != nil {
		t.Fatal(err)
	}
	late, err := h.eng.Invite(ctx, as(m), protocol.InviteArgs{Invitee: "ceo"})
	if err != nil {
		t.Fatal(err)
	}
	ceo.mu.Lock()
	for _, f := range first {
		ceo.evs = append(ceo.evs, parseFrame(f))
	}
	ceo.mu.Unlock()
	if calls := ceo.drain(); calls < 300/32 {
		t.Fatalf("the replay took %d Next calls, want it in batches", calls)
	}
	evs := ceo.take()
	var names []string
	var rung []string
	for _, ev := range evs {
		names = append(names, ev.Event)
		if ev.Event == protocol.EvReceiveNewInvitation {
			rung = append(rung, decode[protocol.NewInvitationEvent](t, ev).InviteID)
		}
	}
	if names[0] != protocol.EvInvitationCancelled || names[1] != protocol.EvInvitationCancelled {
		t.Fatalf("the kept events do not come first: %v", names[:3])
	}
	// (Invitations created at the same instant ring in any order.)
	want := slices.Delete(slices.Clone(ids), 250, 251)
	if len(rung) != len(want)+1 || rung[len(rung)-1] != late ||
		!slices.Equal(slices.Sorted(slices.Values(rung[:len(want)])), slices.Sorted(slices.Values(want))) {
		t.Fatalf("rung %d invitations, want the %d still pending, then the new one", len(rung), len(want))
	}
	if names[len(names)-2] != protocol.EvInvitationCancelled || names[len(names)-1] != protocol.EvReceiveNewInvitation {
		t.Fatalf("the live events do not come last: %v", names[len(names)-2:])
	}
	// The kept events were deleted once written: not again on the next connect.
	if got := h.connect("ceo").names(); len(got) != len(want)+1 || slices.Contains(got, protocol.EvInvitationCancelled) {
		t.Fatalf("next connect got %d events (cancelled again: %v)", len(got), slices.Contains(got, protocol.EvInvitationCancelled))
	}
}

// TestReplayCutShortKeepsTheRest: a connection that goes away in the middle
// of its replay has the kept events it wrote deleted, the others kept for
// the next connection.
func TestReplayCutShortKeepsTheRest(t *testing.T) {
	h := newHarness(t)
	h.seen("bob")
	a := h.connect("alice")
	for i := range 40 {
		id, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Data: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id}); err != nil {
			t.Fatal(err)
		}
	}
	b := h.attach("bob")
	b.mu.Lock()
	r := b.replay
	b.mu.Unlock()
	first := r.Next(ctx)
	r.Next(ctx) // the first batch was written; the second is lost with the connection
	h.eng.Detach(b)
	if r.Next(ctx) != nil {
		t.Fatal("a replay goes on after its connection was detached")
	}
	h.restart()
	evs := h.connect("bob").take()
	if len(evs)+len(first) != 40 {
		t.Fatalf("wrote %d, then got %d on the next connect; want the 40 once each", len(first), len(evs))
	}
}

// TestPendingInvitationCaps: invitations ringing for one user, and those one
// user has in progress, are capped, with their own errors.
func TestPendingInvitationCaps(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxPendingPerInvitee, h.cfg.Limits.MaxPendingPerInviter = 3, 4
	h.restart()
	a, b := h.connect("alice"), h.connect("bob")
	var ids []string
	for range 3 {
		id, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "ceo", Timeout: secs(0)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_, err := h.eng.Invite(ctx, as(b), protocol.InviteArgs{Invitee: "ceo"})
	mustCode(t, err, protocol.ErrInviteePendingFull)
	_, err = h.eng.CreateInvitation(ctx, as(b), signaling.InvitationSpec{Invitees: []string{"dan", "ceo"}})
	mustCode(t, err, protocol.ErrInviteePendingFull)
	// onlineUserOnly invitations do not ring on connect: not counted for the invitee.
	if _, err := h.eng.Invite(ctx, as(b), protocol.InviteArgs{Invitee: "ceo", OnlineUserOnly: true}); err != nil {
		t.Fatalf("onlineUserOnly invitation: %v", err)
	}
	// alice: 3 in progress, one more, then the cap.
	if _, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "dan"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "erin", OnlineUserOnly: true})
	mustCode(t, err, protocol.ErrTooManyInvitations)
	// The counts survive a restart (stored invitations only).
	h.restart()
	_, err = h.eng.Invite(ctx, as(h.connect("carol")), protocol.InviteArgs{Invitee: "ceo"})
	mustCode(t, err, protocol.ErrInviteePendingFull)
	_, err = h.eng.Invite(ctx, as(h.connect("alice")), protocol.InviteArgs{Invitee: "erin"})
	mustCode(t, err, protocol.ErrTooManyInvitations)
	// An answer frees a place for the invitee and the inviter.
	ceo := h.connect("ceo")
	if err := h.eng.Reject(ctx, as(ceo), protocol.InviteIDArgs{InviteID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "ceo"}); err != nil {
		t.Fatalf("after a rejection: %v", err)
	}
}

// TestOfflineQuotas: events kept for offline users count against the quota
// of whoever caused them, and against a total. Past either, an operation
// whose event carries new data (modify) fails with its error and changes
// nothing; an answer or a cancel is never refused: its kept copies lose
// their data. Users who never connected get nothing kept.
func TestOfflineQuotas(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", 1000)
	// One copy of a cancel with 1000 bytes of data costs about 1.2 KB.
	h.cfg.Limits.MaxOfflineBytesPerSender = 10 << 10
	h.cfg.Limits.MaxOfflineBytesTotal = 16 << 10
	h.restart()
	h.seen("off1", "off2")
	m := h.connect("mallory")
	const rounds = 20
	for r := range rounds {
		id, err := h.eng.CreateInvitation(ctx, as(m), signaling.InvitationSpec{Invitees: []string{"off1", "off2", "ghost"}, Data: big})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.eng.Cancel(ctx, as(m), protocol.InviteIDArgs{InviteID: id, Data: big}); err != nil {
			t.Fatalf("round %d: a cancel past the quota must not be refused: %v", r, err)
		}
	}
	// Past the quota a modify, whose kept copies have no lean form, fails
	// and changes nothing: the invitation still rings with its old data.
	id, err := h.eng.CreateInvitation(ctx, as(m), signaling.InvitationSpec{Invitees: []string{"off1", "ghost"}, Data: "old"})
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, h.eng.ModifyInvitation(ctx, as(m), protocol.InviteIDArgs{InviteID: id, Data: big}), protocol.ErrOfflineQuota)
	invs := h.connect("ghost").take()
	if len(invs) != 1 || decode[protocol.NewInvitationEvent](t, invs[0]).Data != "old" {
		t.Fatalf("ghost rings for %v, want the one invitation with its old data", invs)
	}
	if err := h.eng.Cancel(ctx, as(m), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatalf("small cancel: %v", err)
	}

	// Another sender fills the total.
	e := h.connect("eve")
	err = nil
	for i := 0; i < 20 && err == nil; i++ {
		var id string
		if id, err = h.eng.Invite(ctx, as(e), protocol.InviteArgs{Invitee: "off1"}); err != nil {
			t.Fatal(err)
		}
		err = h.eng.ModifyInvitation(ctx, as(e), protocol.InviteIDArgs{InviteID: id, Data: big})
	}
	mustCode(t, err, protocol.ErrOfflineStoreFull)

	// The usage survives a restart, and is released when the events are
	// delivered.
	h.restart()
	id, err = h.eng.Invite(ctx, as(h.connect("eve")), protocol.InviteArgs{Invitee: "off1"})
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, h.eng.ModifyInvitation(ctx, protocol.Actor{UserID: "eve"}, protocol.InviteIDArgs{InviteID: id, Data: big}), protocol.ErrOfflineStoreFull)
	for _, u := range []string{"off1", "off2"} {
		full, lean := 0, 0
		for _, ev := range h.connect(u).take() {
			if ev.Event != protocol.EvInvitationCancelled {
				continue
			}
			switch decode[protocol.CancelledEvent](t, ev).Data {
			case big:
				full++
			case "":
				lean++
			}
		}
		// 10 KiB / 2 copies of ~1.2 KB: 3 to 5 cancels kept whole, the
		// rest without their data.
		if full < 3 || full > 5 || full+lean < rounds {
			t.Fatalf("%s got %d cancels with their data and %d without, want 3-5 with and %d in all", u, full, lean, rounds)
		}
	}
	h.eng.Detach(h.connect("eve")) // nothing kept for eve: no error
	if err := h.eng.ModifyInvitation(ctx, protocol.Actor{UserID: "eve"}, protocol.InviteIDArgs{InviteID: id, Data: big}); err != nil {
		t.Fatalf("after delivery freed the quota: %v", err)
	}
	if got := h.connect("ghost").names(); len(got) != 0 {
		t.Fatalf("a user who never connected got %v kept", got)
	}
}

// TestKnownUsersSurviveRestart: a user who connected once gets events kept
// after a restart too.
func TestKnownUsersSurviveRestart(t *testing.T) {
	h := newHarness(t)
	h.seen("bob")
	h.restart()
	a := h.connect("alice")
	id, _ := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob"})
	if err := h.eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	if got := h.connect("bob").names(); !slices.Equal(got, []string{protocol.EvInvitationCancelled}) {
		t.Fatalf("bob got %v", got)
	}
}

// TestGroupsAddedByOthersCap: groups others added a user to have their own
// cap, reported to the adder; the user's own groups are unaffected, and
// quitting frees a place.
func TestGroupsAddedByOthersCap(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxGroupsPerUser, h.cfg.Limits.MaxGroupsAddedByOthers = 2, 3
	h.restart()
	m, v := h.connect("mallory"), h.connect("victim")
	var gids []string
	for i := range 3 {
		gid, err := h.eng.CreateGroup(ctx, protocol.Actor{UserID: fmt.Sprint("m", i)}, protocol.CreateGroupArgs{Name: "g", MemberList: []string{"victim"}})
		if err != nil {
			t.Fatalf("group %d: %v", i, err)
		}
		gids = append(gids, gid)
	}
	_, err := h.eng.CreateGroup(ctx, as(m), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"victim"}})
	mustCode(t, err, protocol.ErrTooManyGroupsAdded)
	open, err := h.eng.CreateGroup(ctx, as(m), protocol.CreateGroupArgs{Name: "open"})
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, h.eng.InviteUserToGroup(ctx, as(m), protocol.GroupUsersArgs{GroupID: open, UserList: []string{"victim"}}), protocol.ErrTooManyGroupsAdded)
	// The victim's own quota is whole: joining and creating count there.
	if err := h.eng.JoinGroup(ctx, as(v), protocol.GroupIDArgs{GroupID: open}); err != nil {
		t.Fatalf("joinGroup: %v", err)
	}
	if _, err := h.eng.CreateGroup(ctx, as(v), protocol.CreateGroupArgs{Name: "mine"}); err != nil {
		t.Fatalf("createGroup: %v", err)
	}
	_, err = h.eng.CreateGroup(ctx, as(v), protocol.CreateGroupArgs{Name: "third"})
	mustCode(t, err, protocol.ErrTooManyGroups)
	// Survives a restart (who added whom is stored); quitting frees a place.
	h.restart()
	_, err = h.eng.CreateGroup(ctx, as(h.connect("mallory")), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"victim"}})
	mustCode(t, err, protocol.ErrTooManyGroupsAdded)
	if err := h.eng.QuitGroup(ctx, as(h.connect("victim")), protocol.GroupIDArgs{GroupID: gids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.CreateGroup(ctx, as(m), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"victim"}}); err != nil {
		t.Fatalf("after the victim quit one: %v", err)
	}
}

// TestKeptEventsFloodOnKnownUsers is the flood of TestKeptEventsFlood aimed
// at 100 real users who are offline: the sender's quota bounds what is kept,
// and the cancel past it fails with offline_quota_exceeded.
func TestKeptEventsFloodOnKnownUsers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sb.db")
	store, err := signaling.OpenSQLite(ctx, path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := signaling.DefaultConfig()
	eng, err := signaling.NewEngine(ctx, signaling.Params{Config: cfg, Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	var users []string
	for i := range 100 {
		u := &session{user: fmt.Sprintf("user%03d", i)}
		if err := eng.Attach(ctx, u); err != nil {
			t.Fatal(err)
		}
		eng.Detach(u)
		users = append(users, u.user)
	}
	m := &session{user: "mallory"}
	if err := eng.Attach(ctx, m); err != nil {
		t.Fatal(err)
	}
	gid, err := eng.CreateGroup(ctx, as(m), protocol.CreateGroupArgs{Name: "flood", MemberList: users})
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Repeat("x", cfg.Limits.MaxDataBytes)
	for r := range 20 {
		id, err := eng.InviteInGroup(ctx, as(m), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: users, Data: data})
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if err := eng.Cancel(ctx, as(m), protocol.InviteIDArgs{InviteID: id, Data: data}); err != nil {
			t.Fatalf("round %d: a cancel is never refused for the quota: %v", r, err)
		}
	}
	n, bytes := outboxSize(t, store)
	t.Logf("20 rounds at 100 known offline users: outbox %d entries, %d data bytes", n, bytes)
	// Past the quota the cancels are kept without their 8 KB of data: what
	// is kept stays within the quota plus a small copy per cancel.
	if lim := int64(cfg.Limits.MaxOfflineBytesPerSender) + int64(n)*256; bytes > lim {
		t.Fatalf("the outbox holds %d bytes in %d entries, over the sender's quota plus lean copies (%d)", bytes, n, lim)
	}
}
