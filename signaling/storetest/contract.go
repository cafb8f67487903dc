// Package storetest holds the contract test that every signaling.Store
// implementation must pass (the way Centrifuge runs one set of broker tests
// against memory and Redis).
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Factory prepares a fresh, empty location for a store (a file, a key
// prefix, a schema) and returns open, which opens a store at that location.
// open may be called again after the previous store was closed and must then
// return a store holding the same data. open fails t (the subtest's) if it
// cannot open; Run closes every store it opens.
type Factory func(t *testing.T) (open func() signaling.Store)

// TimePrecision is the coarsest time precision a store may keep: a time
// comes back within this much of what was stored, in UTC. The zero time
// comes back as the zero time.
const TimePrecision = time.Millisecond

// Run runs the contract against the stores that newStore makes. The
// subtests run one after another, each on its own location.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func() signaling.Store)
	}{
		{"EmptyLoad", testEmptyLoad},
		{"InvitationRoundTrip", testInvitationRoundTrip},
		{"InviteeState", testInviteeState},
		{"InvitationData", testInvitationData},
		{"DeleteInvitationCascades", testDeleteInvitation},
		{"Groups", testGroups},
		{"DeleteGroupCascades", testDeleteGroup},
		{"Outbox", testOutbox},
		{"LoadOutbox", testLoadOutbox},
		{"DeleteOutboxEntry", testDeleteOutboxEntry},
		{"Users", testUsers},
		{"CustomStatus", testCustomStatus},
		{"Atomicity", testAtomicity},
		{"CancelledContext", testCancelledContext},
		{"Concurrency", testConcurrency},
		{"Persistence", testPersistence},
		{"ApplyAfterClose", testApplyAfterClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// base is a time in a zone other than UTC with nanoseconds, so that a store
// must convert to UTC and may round.
var base = time.Date(2025, time.March, 14, 15, 9, 26, 535_897_932, time.FixedZone("UTC+5:30", 5*3600+1800))

func at(d time.Duration) time.Time { return base.Add(d) }

// openStore opens a store that is closed when the test ends.
func openStore(t *testing.T, open func() signaling.Store) signaling.Store {
	t.Helper()
	s := open()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func apply(t *testing.T, s signaling.Store, muts ...signaling.Mutation) {
	t.Helper()
	if err := s.Apply(t.Context(), muts...); err != nil {
		t.Fatalf("Apply(%s): %v", describe(muts), err)
	}
}

func load(t *testing.T, s signaling.Store) *signaling.Snapshot {
	t.Helper()
	snap, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if snap == nil {
		t.Fatal("Load returned a nil snapshot and no error")
	}
	return snap
}

func describe(muts []signaling.Mutation) string {
	var b bytes.Buffer
	for i, m := range muts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%T", m)
	}
	return b.String()
}

func invitation(id string) signaling.InvitationRecord {
	return signaling.InvitationRecord{
		ID:        id,
		Inviter:   "alice",
		GroupID:   "g-" + id,
		Data:      `{"call":"` + id + `"}`,
		CreatedAt: at(0),
		Deadline:  at(30 * time.Second),
		PushInfo:  `{"title":"Call from alice","desc":"` + id + `"}`,
		Invitees: []signaling.InviteeRecord{
			{UserID: "zoe", State: signaling.StatePending, UpdatedAt: at(0), Pushed: true},
			{UserID: "bob", State: signaling.StateAccepted, UpdatedAt: at(time.Second)},
			{UserID: "mia", State: signaling.StateRejected, UpdatedAt: at(2 * time.Second)},
		},
	}
}

func group(id string) signaling.GroupRecord {
	return signaling.GroupRecord{
		ID:         id,
		Name:       "Group " + id,
		Owner:      "owner-" + id,
		JoinOption: protocol.JoinInvite,
		CreatedAt:  at(0),
		Members: []signaling.MemberRecord{
			{UserID: "owner-" + id, Role: protocol.RoleOwner, JoinedAt: at(0)},
			{UserID: "m1", Role: protocol.RoleMember, JoinedAt: at(time.Minute)},
		},
	}
}

func entry(user string, seq int64) signaling.OutboxEntry {
	return signaling.OutboxEntry{
		UserID:    user,
		Seq:       seq,
		Sender:    fmt.Sprintf("sender-%d", seq%3),
		Event:     "invitationReceived",
		Data:      json.RawMessage(fmt.Sprintf(`{"seq":%d,"user":%q}`, seq, user)),
		CreatedAt: at(time.Duration(seq) * time.Second),
		ExpiresAt: at(time.Hour + time.Duration(seq)*time.Second),
	}
}

func findInvitation(snap *signaling.Snapshot, id string) (signaling.InvitationRecord, bool) {
	for _, r := range snap.Invitations {
		if r.ID == id {
			return r, true
		}
	}
	return signaling.InvitationRecord{}, false
}

func findGroup(snap *signaling.Snapshot, id string) (signaling.GroupRecord, bool) {
	for _, g := range snap.Groups {
		if g.ID == id {
			return g, true
		}
	}
	return signaling.GroupRecord{}, false
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if want.IsZero() {
		if !got.IsZero() {
			t.Errorf("%s = %v, want the zero time", what, got)
		}
		return
	}
	if got.Location() != time.UTC {
		t.Errorf("%s = %v, want it in UTC", what, got)
	}
	if d := got.Sub(want); d <= -TimePrecision || d >= TimePrecision {
		t.Errorf("%s = %v, want %v (within %v)", what, got, want, TimePrecision)
	}
}

func checkInvitation(t *testing.T, snap *signaling.Snapshot, want signaling.InvitationRecord) {
	t.Helper()
	got, ok := findInvitation(snap, want.ID)
	if !ok {
		t.Errorf("invitation %q missing", want.ID)
		return
	}
	what := "invitation " + want.ID
	if got.Inviter != want.Inviter || got.GroupID != want.GroupID || got.Data != want.Data || got.PushInfo != want.PushInfo {
		t.Errorf("%s = {Inviter:%q GroupID:%q Data:%q PushInfo:%q}, want {Inviter:%q GroupID:%q Data:%q PushInfo:%q}", what,
			got.Inviter, got.GroupID, got.Data, got.PushInfo, want.Inviter, want.GroupID, want.Data, want.PushInfo)
	}
	checkTime(t, what+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, what+" Deadline", got.Deadline, want.Deadline)
	if len(got.Invitees) != len(want.Invitees) {
		t.Errorf("%s has invitees %+v, want %+v", what, got.Invitees, want.Invitees)
		return
	}
	for i, w := range want.Invitees {
		g := got.Invitees[i]
		if g.UserID != w.UserID || g.State != w.State || g.Pushed != w.Pushed {
			t.Errorf("%s invitee %d = %s/%v/pushed=%v, want %s/%v/pushed=%v", what, i, g.UserID, g.State, g.Pushed, w.UserID, w.State, w.Pushed)
		}
		checkTime(t, fmt.Sprintf("%s invitee %s UpdatedAt", what, w.UserID), g.UpdatedAt, w.UpdatedAt)
	}
}

func checkGroup(t *testing.T, snap *signaling.Snapshot, want signaling.GroupRecord) {
	t.Helper()
	got, ok := findGroup(snap, want.ID)
	if !ok {
		t.Errorf("group %q missing", want.ID)
		return
	}
	what := "group " + want.ID
	if got.Name != want.Name || got.Owner != want.Owner || got.JoinOption != want.JoinOption {
		t.Errorf("%s = {Name:%q Owner:%q JoinOption:%q}, want {Name:%q Owner:%q JoinOption:%q}", what,
			got.Name, got.Owner, got.JoinOption, want.Name, want.Owner, want.JoinOption)
	}
	checkTime(t, what+" CreatedAt", got.CreatedAt, want.CreatedAt)
	if len(got.Members) != len(want.Members) {
		t.Errorf("%s has members %+v, want %+v", what, got.Members, want.Members)
		return
	}
	for i, w := range want.Members {
		g := got.Members[i]
		if g.UserID != w.UserID || g.Role != w.Role || g.AddedBy != w.AddedBy {
			t.Errorf("%s member %d = %s/%s added by %q, want %s/%s added by %q", what, i, g.UserID, g.Role, g.AddedBy,
				w.UserID, w.Role, w.AddedBy)
		}
		checkTime(t, fmt.Sprintf("%s member %s JoinedAt", what, w.UserID), g.JoinedAt, w.JoinedAt)
	}
}

// checkOutbox checks the snapshot's outbox index against want, and each
// user's entries, data included, with LoadOutbox.
func checkOutbox(t *testing.T, s signaling.Store, snap *signaling.Snapshot, want ...signaling.OutboxEntry) {
	t.Helper()
	if len(snap.Outbox) != len(want) {
		var seqs []int64
		for _, e := range snap.Outbox {
			seqs = append(seqs, e.Seq)
		}
		t.Errorf("outbox holds seqs %v, want %d entries", seqs, len(want))
		return
	}
	byUser := map[string][]signaling.OutboxEntry{}
	for i, w := range want {
		g := snap.Outbox[i]
		if g.Seq != w.Seq || g.UserID != w.UserID || g.Sender != w.Sender || g.Bytes != w.Bytes() {
			t.Errorf("outbox[%d] = {Seq:%d UserID:%q Sender:%q Bytes:%d}, want {Seq:%d UserID:%q Sender:%q Bytes:%d}", i,
				g.Seq, g.UserID, g.Sender, g.Bytes, w.Seq, w.UserID, w.Sender, w.Bytes())
		}
		checkTime(t, fmt.Sprintf("outbox %d ExpiresAt", w.Seq), g.ExpiresAt, w.ExpiresAt)
		byUser[w.UserID] = append(byUser[w.UserID], w)
	}
	for user, want := range byUser {
		got, err := s.LoadOutbox(t.Context(), user, 0, 0)
		if err != nil {
			t.Errorf("LoadOutbox(%q): %v", user, err)
			continue
		}
		checkEntries(t, "LoadOutbox("+user+")", got, want)
	}
}

func checkEntries(t *testing.T, what string, got, want []signaling.OutboxEntry) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s returned %d entries, want %d", what, len(got), len(want))
		return
	}
	for i, w := range want {
		g := got[i]
		if g.Seq != w.Seq || g.UserID != w.UserID || g.Sender != w.Sender || g.Event != w.Event || !bytes.Equal(g.Data, w.Data) ||
			(g.Data == nil) != (w.Data == nil) {
			t.Errorf("%s[%d] = {Seq:%d UserID:%q Sender:%q Event:%q Data:%s}, want {Seq:%d UserID:%q Sender:%q Event:%q Data:%s}", what, i,
				g.Seq, g.UserID, g.Sender, g.Event, g.Data, w.Seq, w.UserID, w.Sender, w.Event, w.Data)
		}
		checkTime(t, fmt.Sprintf("%s %d CreatedAt", what, w.Seq), g.CreatedAt, w.CreatedAt)
		checkTime(t, fmt.Sprintf("%s %d ExpiresAt", what, w.Seq), g.ExpiresAt, w.ExpiresAt)
	}
}

func testEmptyLoad(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	snap := load(t, s)
	if len(snap.Invitations)+len(snap.Groups)+len(snap.Outbox)+len(snap.Users) != 0 {
		t.Errorf("new store holds %+v, want nothing", snap)
	}
	if err := s.Apply(t.Context()); err != nil {
		t.Errorf("Apply with no mutations: %v", err)
	}
	if ents, err := s.LoadOutbox(t.Context(), "nobody", 0, 0); err != nil || len(ents) != 0 {
		t.Errorf("LoadOutbox on a new store = %v, %v; want nothing", ents, err)
	}
}

func testInvitationRoundTrip(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	full := invitation("inv-1")
	// Zero times, empty data and no group stay as they are.
	bare := signaling.InvitationRecord{
		ID:       "inv-2",
		Inviter:  "carol",
		Invitees: []signaling.InviteeRecord{{UserID: "dave", State: signaling.StateTimedOut}},
	}
	states := signaling.InvitationRecord{ID: "inv-3", Inviter: "erin", CreatedAt: at(time.Hour)}
	for i, st := range []signaling.InviteeState{signaling.StateCancelled, signaling.StatePending,
		signaling.StateTimedOut, signaling.StateRejected, signaling.StateAccepted} {
		states.Invitees = append(states.Invitees, signaling.InviteeRecord{
			UserID: fmt.Sprintf("u%d", 9-i), State: st, UpdatedAt: at(time.Duration(i) * time.Millisecond),
		})
	}
	apply(t, s, signaling.PutInvitation{Invitation: full})
	apply(t, s, signaling.PutInvitation{Invitation: bare}, signaling.PutInvitation{Invitation: states})

	snap := load(t, s)
	if len(snap.Invitations) != 3 {
		t.Fatalf("Load returned %d invitations, want 3", len(snap.Invitations))
	}
	checkInvitation(t, snap, full)
	checkInvitation(t, snap, bare)
	checkInvitation(t, snap, states)

	// The same ID again is an error and changes nothing.
	dup := invitation("inv-1")
	dup.Data = "other"
	if err := s.Apply(t.Context(), signaling.PutInvitation{Invitation: dup}); err == nil {
		t.Error("PutInvitation on a taken ID succeeded, want an error")
	}
	checkInvitation(t, load(t, s), full)
}

func testInviteeState(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	want := invitation("inv")
	apply(t, s, signaling.PutInvitation{Invitation: want})
	apply(t, s,
		signaling.SetInviteeState{InviteID: "inv", UserID: "zoe", State: signaling.StateAccepted, At: at(time.Minute)},
		signaling.SetInviteeState{InviteID: "inv", UserID: "mia", State: signaling.StateCancelled, At: at(2 * time.Minute)},
	)
	want.Invitees[0].State, want.Invitees[0].UpdatedAt = signaling.StateAccepted, at(time.Minute)
	want.Invitees[2].State, want.Invitees[2].UpdatedAt = signaling.StateCancelled, at(2*time.Minute)
	checkInvitation(t, load(t, s), want)

	// A missing invitation or invitee is a no-op, not an error.
	apply(t, s,
		signaling.SetInviteeState{InviteID: "missing", UserID: "zoe", State: signaling.StateRejected, At: at(0)},
		signaling.SetInviteeState{InviteID: "inv", UserID: "nobody", State: signaling.StateRejected, At: at(0)},
	)
	snap := load(t, s)
	if len(snap.Invitations) != 1 {
		t.Errorf("Load returned %d invitations, want 1", len(snap.Invitations))
	}
	checkInvitation(t, snap, want)
}

func testInvitationData(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	want := invitation("inv")
	apply(t, s, signaling.PutInvitation{Invitation: want})
	apply(t, s, signaling.SetInvitationData{InviteID: "inv", Data: `{"modified":true}`})
	want.Data = `{"modified":true}`
	checkInvitation(t, load(t, s), want)

	apply(t, s, signaling.SetInvitationData{InviteID: "inv", Data: ""})
	want.Data = ""
	// A missing invitation is a no-op, not an error.
	apply(t, s, signaling.SetInvitationData{InviteID: "missing", Data: "x"})
	snap := load(t, s)
	if len(snap.Invitations) != 1 {
		t.Errorf("Load returned %d invitations, want 1", len(snap.Invitations))
	}
	checkInvitation(t, snap, want)
}

func testDeleteInvitation(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	keep := invitation("keep")
	apply(t, s, signaling.PutInvitation{Invitation: invitation("gone")}, signaling.PutInvitation{Invitation: keep})
	apply(t, s, signaling.DeleteInvitation{InviteID: "gone"}, signaling.DeleteInvitation{InviteID: "missing"})
	snap := load(t, s)
	if _, ok := findInvitation(snap, "gone"); ok || len(snap.Invitations) != 1 {
		t.Errorf("after delete Load returned %+v, want only %q", snap.Invitations, "keep")
	}
	checkInvitation(t, snap, keep)

	// The invitees went with it: the ID and user IDs can be used again.
	again := signaling.InvitationRecord{ID: "gone", Inviter: "x", CreatedAt: at(time.Hour),
		Invitees: []signaling.InviteeRecord{{UserID: "bob", State: signaling.StatePending, UpdatedAt: at(time.Hour)}}}
	apply(t, s, signaling.PutInvitation{Invitation: again})
	checkInvitation(t, load(t, s), again)
}

func testGroups(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	g := signaling.GroupRecord{
		ID: "g", Name: "Team", Owner: "olga", JoinOption: protocol.JoinAny, CreatedAt: at(0),
		// Not in the order Load must return.
		Members: []signaling.MemberRecord{
			{UserID: "late", Role: protocol.RoleMember, JoinedAt: at(2 * time.Hour), AddedBy: "olga"},
			{UserID: "olga", Role: protocol.RoleOwner, JoinedAt: at(time.Hour)},
			{UserID: "early", Role: protocol.RoleMember, JoinedAt: at(time.Minute)},
		},
	}
	apply(t, s, signaling.PutGroup{Group: g})
	want := g
	want.Members = []signaling.MemberRecord{g.Members[1], g.Members[2], g.Members[0]}
	checkGroup(t, load(t, s), want)

	// A taken ID: ErrGroupExists, nothing changes.
	other := group("g")
	err := s.Apply(t.Context(), signaling.PutGroup{Group: other})
	if !errors.Is(err, protocol.ErrGroupExists) {
		t.Errorf("PutGroup on a taken ID = %v, want ErrGroupExists", err)
	}
	checkGroup(t, load(t, s), want)

	// Adding is idempotent: present members stay as they were.
	apply(t, s, signaling.AddGroupMembers{GroupID: "g", Members: []signaling.MemberRecord{
		{UserID: "early", Role: protocol.RoleOwner, JoinedAt: at(5 * time.Hour)},
		{UserID: "new", Role: protocol.RoleMember, JoinedAt: at(3 * time.Hour), AddedBy: "late"},
	}})
	apply(t, s, signaling.AddGroupMembers{GroupID: "g", Members: []signaling.MemberRecord{
		{UserID: "new", Role: protocol.RoleMember, JoinedAt: at(4 * time.Hour)},
	}})
	want.Members = append(want.Members, signaling.MemberRecord{UserID: "new", Role: protocol.RoleMember, JoinedAt: at(3 * time.Hour), AddedBy: "late"})
	checkGroup(t, load(t, s), want)

	// Adding to a missing group is a no-op and creates no group.
	apply(t, s, signaling.AddGroupMembers{GroupID: "missing", Members: []signaling.MemberRecord{
		{UserID: "x", Role: protocol.RoleMember, JoinedAt: at(0)},
	}})
	if snap := load(t, s); len(snap.Groups) != 1 {
		t.Errorf("Load returned %d groups, want 1", len(snap.Groups))
	}

	apply(t, s,
		signaling.RemoveGroupMembers{GroupID: "g", UserIDs: []string{"early", "nobody"}},
		signaling.RemoveGroupMembers{GroupID: "missing", UserIDs: []string{"x"}},
	)
	want.Members = []signaling.MemberRecord{want.Members[0], want.Members[2], want.Members[3]}
	checkGroup(t, load(t, s), want)
}

func testDeleteGroup(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	keep := group("keep")
	apply(t, s, signaling.PutGroup{Group: group("gone")}, signaling.PutGroup{Group: keep})
	apply(t, s, signaling.DeleteGroup{GroupID: "gone"}, signaling.DeleteGroup{GroupID: "missing"})
	snap := load(t, s)
	if _, ok := findGroup(snap, "gone"); ok || len(snap.Groups) != 1 {
		t.Errorf("after delete Load returned %+v, want only %q", snap.Groups, "keep")
	}
	checkGroup(t, snap, keep)

	// The members went with it: the ID is free and no old member comes back.
	again := signaling.GroupRecord{ID: "gone", Name: "Again", Owner: "m1", JoinOption: protocol.JoinAny, CreatedAt: at(time.Hour),
		Members: []signaling.MemberRecord{{UserID: "m1", Role: protocol.RoleOwner, JoinedAt: at(time.Hour)}}}
	apply(t, s, signaling.PutGroup{Group: again})
	checkGroup(t, load(t, s), again)
}

func testOutbox(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	a2, b3, a5, b7, a9 := entry("a", 2), entry("b", 3), entry("a", 5), entry("b", 7), entry("a", 9)
	noData := signaling.OutboxEntry{UserID: "c", Seq: 11, Event: "ping"} // no data, no expiry
	apply(t, s, signaling.AppendOutbox{Entry: a9}, signaling.AppendOutbox{Entry: a2})
	apply(t, s, signaling.AppendOutbox{Entry: b7}, signaling.AppendOutbox{Entry: a5},
		signaling.AppendOutbox{Entry: b3}, signaling.AppendOutbox{Entry: noData})
	checkOutbox(t, s, load(t, s), a2, b3, a5, b7, a9, noData)

	// Only a's entries up to and including 5 go.
	apply(t, s, signaling.DeleteOutbox{UserID: "a", UpTo: 5}, signaling.DeleteOutbox{UserID: "nobody", UpTo: 100})
	checkOutbox(t, s, load(t, s), b3, b7, a9, noData)

	// Expired at or before Before: b3 expires exactly then, b7 later.
	apply(t, s, signaling.PurgeOutbox{Before: b3.ExpiresAt})
	checkOutbox(t, s, load(t, s), b7, a9, noData)
	apply(t, s, signaling.PurgeOutbox{Before: a9.ExpiresAt.Add(-time.Second)})
	checkOutbox(t, s, load(t, s), a9, noData)
	apply(t, s, signaling.PurgeOutbox{Before: at(1000 * time.Hour)})
	checkOutbox(t, s, load(t, s), noData)
}

func testLoadOutbox(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	var want []signaling.OutboxEntry
	var muts []signaling.Mutation
	for seq := int64(1); seq <= 9; seq++ {
		e := entry("a", seq*2)
		if seq == 4 {
			e.Data = nil // no data stays no data
		}
		want = append(want, e)
		muts = append(muts, signaling.AppendOutbox{Entry: e}, signaling.AppendOutbox{Entry: entry("b", seq*2+1)})
	}
	apply(t, s, muts...)
	load := func(after int64, limit int) []signaling.OutboxEntry {
		t.Helper()
		got, err := s.LoadOutbox(t.Context(), "a", after, limit)
		if err != nil {
			t.Fatalf("LoadOutbox(a, %d, %d): %v", after, limit, err)
		}
		return got
	}
	checkEntries(t, "LoadOutbox(a, 0, 0)", load(0, 0), want)
	checkEntries(t, "LoadOutbox(a, 0, -1)", load(0, -1), want)
	// Pages: after a Seq (present or not), at most limit.
	checkEntries(t, "LoadOutbox(a, 0, 3)", load(0, 3), want[:3])
	checkEntries(t, "LoadOutbox(a, 6, 3)", load(6, 3), want[3:6])
	checkEntries(t, "LoadOutbox(a, 7, 3)", load(7, 3), want[3:6])
	checkEntries(t, "LoadOutbox(a, 16, 5)", load(16, 5), want[8:])
	checkEntries(t, "LoadOutbox(a, 18, 5)", load(18, 5), nil)
	if got, err := s.LoadOutbox(t.Context(), "nobody", 0, 0); err != nil || len(got) != 0 {
		t.Errorf("LoadOutbox(nobody) = %v, %v; want nothing", got, err)
	}
	// What LoadOutbox returns shares no memory with the store.
	got := load(0, 1)
	got[0].Data[0] = 'X'
	checkEntries(t, "LoadOutbox(a, 0, 1) after changing a copy", load(0, 1), want[:1])
}

func testDeleteOutboxEntry(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	a1, b2, a3, a4 := entry("a", 1), entry("b", 2), entry("a", 3), entry("a", 4)
	apply(t, s, signaling.AppendOutbox{Entry: a1}, signaling.AppendOutbox{Entry: b2},
		signaling.AppendOutbox{Entry: a3}, signaling.AppendOutbox{Entry: a4})
	// Only that entry of that user; another user's Seq, or a missing one, is a no-op.
	apply(t, s, signaling.DeleteOutboxEntry{UserID: "a", Seq: 3}, signaling.DeleteOutboxEntry{UserID: "a", Seq: 2},
		signaling.DeleteOutboxEntry{UserID: "c", Seq: 99})
	checkOutbox(t, s, load(t, s), a1, b2, a4)
}

func testUsers(t *testing.T, open func() signaling.Store) {
	s := open()
	apply(t, s, signaling.PutUser{UserID: "ann"}, signaling.PutUser{UserID: "bo"})
	apply(t, s, signaling.PutUser{UserID: "ann"}) // again: a no-op
	check := func(snap *signaling.Snapshot, want ...string) {
		t.Helper()
		got := slices.Sorted(slices.Values(snap.Users))
		if !slices.Equal(got, want) {
			t.Errorf("Users = %v, want %v", got, want)
		}
	}
	check(load(t, s), "ann", "bo")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openStore(t, open)
	check(load(t, s), "ann", "bo")
	// A failed batch records no user.
	err := s.Apply(t.Context(), signaling.PutUser{UserID: "cy"}, signaling.PutGroup{Group: group("g")}, signaling.PutGroup{Group: group("g")})
	if !errors.Is(err, protocol.ErrGroupExists) {
		t.Fatalf("Apply = %v, want ErrGroupExists", err)
	}
	check(load(t, s), "ann", "bo")
}

func testCustomStatus(t *testing.T, open func() signaling.Store) {
	s := open()
	apply(t, s, signaling.SetCustomStatus{UserID: "ann", Text: "in a meeting"}, signaling.SetCustomStatus{UserID: "bo", Text: "away"})
	apply(t, s, signaling.SetCustomStatus{UserID: "ann", Text: "back at 3 ✈"}) // replaces
	apply(t, s, signaling.SetCustomStatus{UserID: "bo", Text: ""})             // removes
	apply(t, s, signaling.SetCustomStatus{UserID: "cy", Text: ""})             // missing: a no-op
	want := map[string]string{"ann": "back at 3 ✈"}
	check := func(snap *signaling.Snapshot) {
		t.Helper()
		if !maps.Equal(snap.CustomStatus, want) {
			t.Errorf("CustomStatus = %v, want %v", snap.CustomStatus, want)
		}
	}
	check(load(t, s))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openStore(t, open)
	check(load(t, s))
	// A failed batch sets no text.
	apply(t, s, signaling.PutGroup{Group: group("g")})
	err := s.Apply(t.Context(), signaling.SetCustomStatus{UserID: "ann", Text: "lost"}, signaling.PutGroup{Group: group("g")})
	if !errors.Is(err, protocol.ErrGroupExists) {
		t.Fatalf("Apply = %v, want ErrGroupExists", err)
	}
	check(load(t, s))
	// The snapshot shares no memory with the store.
	load(t, s).CustomStatus["ann"] = "changed"
	check(load(t, s))
}

func testAtomicity(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	apply(t, s, signaling.PutGroup{Group: group("taken")}, signaling.PutInvitation{Invitation: invitation("old")})
	before := load(t, s)

	err := s.Apply(t.Context(),
		signaling.PutInvitation{Invitation: invitation("new")},
		signaling.SetInvitationData{InviteID: "old", Data: "changed"},
		signaling.DeleteGroup{GroupID: "taken"},
		signaling.PutGroup{Group: group("fresh")},
		signaling.AppendOutbox{Entry: entry("a", 1)},
		signaling.PutGroup{Group: group("fresh")}, // fails: taken by the same batch
	)
	if !errors.Is(err, protocol.ErrGroupExists) {
		t.Fatalf("Apply = %v, want ErrGroupExists", err)
	}
	after := load(t, s)
	if len(after.Invitations) != 1 || len(after.Groups) != 1 || len(after.Outbox) != 0 {
		t.Fatalf("failed Apply left %+v, want %+v", after, before)
	}
	checkInvitation(t, after, before.Invitations[0])
	checkGroup(t, after, before.Groups[0])
}

func testCancelledContext(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Apply(ctx, signaling.PutGroup{Group: group("g")}); err == nil {
		t.Error("Apply with a cancelled context succeeded, want an error")
	}
	if snap := load(t, s); len(snap.Groups) != 0 {
		t.Errorf("Apply with a cancelled context stored %+v", snap.Groups)
	}
}

func testConcurrency(t *testing.T, open func() signaling.Store) {
	s := openStore(t, open)
	apply(t, s, signaling.PutGroup{Group: group("taken")})
	const workers, perWorker = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				n := int64(w*perWorker + i + 1)
				id := fmt.Sprintf("g-%d-%d", w, i)
				err := s.Apply(t.Context(),
					signaling.PutGroup{Group: group(id)},
					signaling.AppendOutbox{Entry: entry(id, n)},
				)
				if err != nil {
					errs <- fmt.Errorf("Apply(group %s): %w", id, err)
				}
				// Every fifth call fails; the others, possibly committed
				// together with it, must not be affected.
				if i%5 == 0 {
					err := s.Apply(t.Context(),
						signaling.AppendOutbox{Entry: entry("never", -n)},
						signaling.PutGroup{Group: group("taken")},
					)
					if !errors.Is(err, protocol.ErrGroupExists) {
						errs <- fmt.Errorf("Apply(group taken) = %v, want ErrGroupExists", err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	snap := load(t, s)
	if got, want := len(snap.Groups), workers*perWorker+1; got != want {
		t.Errorf("Load returned %d groups, want %d", got, want)
	}
	if got, want := len(snap.Outbox), workers*perWorker; got != want {
		t.Errorf("Load returned %d outbox entries, want %d", got, want)
	}
	for i, e := range snap.Outbox {
		if e.Seq != int64(i+1) {
			t.Fatalf("outbox[%d].Seq = %d, want %d (ordered, none of the failed calls)", i, e.Seq, i+1)
		}
	}
}

func testPersistence(t *testing.T, open func() signaling.Store) {
	s := open()
	inv, g := invitation("inv"), group("g")
	apply(t, s,
		signaling.PutInvitation{Invitation: inv},
		signaling.PutGroup{Group: g},
		signaling.AppendOutbox{Entry: entry("a", 1)},
		signaling.AppendOutbox{Entry: entry("b", 2)},
	)
	apply(t, s, signaling.SetInviteeState{InviteID: "inv", UserID: "zoe", State: signaling.StateTimedOut, At: at(time.Hour)})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	inv.Invitees[0].State, inv.Invitees[0].UpdatedAt = signaling.StateTimedOut, at(time.Hour)

	s = openStore(t, open)
	snap := load(t, s)
	checkInvitation(t, snap, inv)
	checkGroup(t, snap, g)
	checkOutbox(t, s, snap, entry("a", 1), entry("b", 2))

	// The reopened store takes writes, and keeps the taken IDs.
	if err := s.Apply(t.Context(), signaling.PutGroup{Group: g}); !errors.Is(err, protocol.ErrGroupExists) {
		t.Errorf("PutGroup on a taken ID after reopening = %v, want ErrGroupExists", err)
	}
	apply(t, s, signaling.DeleteInvitation{InviteID: "inv"})
	if snap := load(t, s); len(snap.Invitations) != 0 {
		t.Errorf("Load after delete returned %+v", snap.Invitations)
	}
}

func testApplyAfterClose(t *testing.T, open func() signaling.Store) {
	s := open()
	apply(t, s, signaling.PutGroup{Group: group("g")})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Apply(t.Context(), signaling.PutGroup{Group: group("h")}); err == nil {
		t.Error("Apply after Close succeeded, want an error")
	}
}
