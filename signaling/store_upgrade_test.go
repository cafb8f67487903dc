package signaling

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// TestSQLiteUpgradeFromVersion1: a database written by a binary that knew
// only schema version 1 opens, is migrated, and keeps its data: kept
// events get an unknown sender, members count as having joined by
// themselves, and the users the data shows have connected are known.
func TestSQLiteUpgradeFromVersion1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", sqlitedb.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitedb.Migrate(ctx, db, sqliteComponent, sqliteSteps[:1]); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	for _, q := range []string{
		`INSERT INTO sig_invitations VALUES ('inv', 'alice', '', 'd', 1, NULL)`,
		`INSERT INTO sig_invitees VALUES ('inv', 'bob', 0, 'accepted', 1), ('inv', 'ghost', 1, 'pending', 1)`,
		`INSERT INTO sig_groups VALUES ('g', 'G', 'olga', 'any', 1)`,
		`INSERT INTO sig_group_members VALUES ('g', 'olga', 'owner', 1), ('g', 'added', 'member', 2)`,
		`INSERT INTO sig_outbox VALUES (7, 'bob', 'onInvitationCancelled', CAST('{"x":1}' AS BLOB), 1, ` + itoa(now+int64(time.Hour)) + `)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, path)
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(snap.Users)); !slices.Equal(got, []string{"alice", "bob", "olga"}) {
		t.Errorf("known users after the upgrade = %v, want alice (inviter), bob (answered), olga (owner)", got)
	}
	if len(snap.Groups) != 1 || len(snap.Groups[0].Members) != 2 || snap.Groups[0].Members[1].AddedBy != "" {
		t.Errorf("groups after the upgrade = %+v", snap.Groups)
	}
	if len(snap.Outbox) != 1 || snap.Outbox[0].Seq != 7 || snap.Outbox[0].Sender != "" || snap.Outbox[0].Bytes != len("onInvitationCancelled")+7 {
		t.Errorf("outbox index after the upgrade = %+v", snap.Outbox)
	}
	ents, err := s.LoadOutbox(ctx, "bob", 0, 0)
	if err != nil || len(ents) != 1 || string(ents[0].Data) != `{"x":1}` {
		t.Errorf("LoadOutbox(bob) after the upgrade = %+v, %v", ents, err)
	}
	// The new columns and table take writes.
	err = s.Apply(ctx, PutUser{UserID: "added"}, AppendOutbox{Entry: OutboxEntry{UserID: "bob", Seq: 8, Sender: "alice", Event: "e"}},
		AddGroupMembers{GroupID: "g", Members: []MemberRecord{{UserID: "x", Role: protocol.RoleMember, AddedBy: "olga"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The engine starts on it.
	e, err := NewEngine(context.Background(), Params{Config: DefaultConfig(), Store: s, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
}

// TestSQLiteUpgradeFromVersion4MovesInvitees: the invitees of a database
// of schema version 4 (a table of their own) move into their invitation's
// row in their positions, with state, time and pushed kept, and take
// answers and the invitation's deletion afterwards; the old table is gone.
func TestSQLiteUpgradeFromVersion4MovesInvitees(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v4.db")
	db, err := sql.Open("sqlite", sqlitedb.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitedb.Migrate(ctx, db, sqliteComponent, sqliteSteps[:4]); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO sig_invitations VALUES ('inv', 'alice', '', 'd', 1, 9, '{"p":1}'), ('lone', 'alice', '', '', NULL, NULL, ''), ('two', 'x"y', '', '', 2, NULL, '')`,
		// Inserted out of their positions: pos decides the order.
		`INSERT INTO sig_invitees VALUES ('inv', 'carol', 2, 'pending', NULL, 1), ('inv', 'bob', 0, 'accepted', 5, 0), ('inv', 'dä"ve', 1, 'rejected', 6, 0)`,
		`INSERT INTO sig_invitees VALUES ('two', 'q', 0, 'pending', 3, 1)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, path)
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns := func(n int64) time.Time { return time.Unix(0, n).UTC() }
	want := []InvitationRecord{
		{ID: "inv", Inviter: "alice", Data: "d", CreatedAt: ns(1), Deadline: ns(9), PushInfo: `{"p":1}`, Invitees: []InviteeRecord{
			{UserID: "bob", State: StateAccepted, UpdatedAt: ns(5)},
			{UserID: `dä"ve`, State: StateRejected, UpdatedAt: ns(6)},
			{UserID: "carol", State: StatePending, Pushed: true},
		}},
		{ID: "lone", Inviter: "alice"},
		{ID: "two", Inviter: `x"y`, CreatedAt: ns(2), Invitees: []InviteeRecord{{UserID: "q", State: StatePending, UpdatedAt: ns(3), Pushed: true}}},
	}
	if !invitationsEqual(snap.Invitations, want) {
		t.Errorf("invitations after the upgrade =\n%+v\nwant\n%+v", snap.Invitations, want)
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'sig_invitees'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("sig_invitees tables after the upgrade: %d, %v; want 0", n, err)
	}
	// Answers change only the invitee named; an unknown one changes nothing.
	err = s.Apply(ctx, SetInviteeState{InviteID: "inv", UserID: "carol", State: StateAccepted, At: ns(7)},
		SetInviteeState{InviteID: "inv", UserID: `dä"ve`, State: StateCancelled, At: ns(8)},
		SetInviteeState{InviteID: "inv", UserID: "nobody", State: StateAccepted, At: ns(8)},
		DeleteInvitation{InviteID: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if snap, err = s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	want[0].Invitees[1].State, want[0].Invitees[1].UpdatedAt = StateCancelled, ns(8)
	want[0].Invitees[2].State, want[0].Invitees[2].UpdatedAt = StateAccepted, ns(7)
	if !invitationsEqual(snap.Invitations, want[:2]) {
		t.Errorf("invitations after answers and a deletion =\n%+v\nwant\n%+v", snap.Invitations, want[:2])
	}
}

// TestSQLiteInviteeNamedTwiceRefused: an invitation naming a user twice is
// refused and leaves nothing, as the primary key of sig_invitees made it
// before the invitees moved into the invitation's row; short and long
// lists alike.
func TestSQLiteInviteeNamedTwiceRefused(t *testing.T) {
	s := openSQLiteAt(t, filepath.Join(t.TempDir(), "dup.db"))
	for _, n := range []int{2, 40} {
		inv := InvitationRecord{ID: "dup-" + itoa(int64(n)), Inviter: "alice"}
		for i := range n - 1 {
			inv.Invitees = append(inv.Invitees, InviteeRecord{UserID: "u" + itoa(int64(i)), State: StatePending})
		}
		inv.Invitees = append(inv.Invitees, InviteeRecord{UserID: "u0", State: StatePending})
		if err := s.Apply(t.Context(), PutInvitation{Invitation: inv}); err == nil {
			t.Errorf("%d invitees, u0 twice: stored", n)
		}
	}
	snap, err := s.Load(t.Context())
	if err != nil || len(snap.Invitations) != 0 {
		t.Errorf("after refused invitations: %+v, %v", snap.Invitations, err)
	}
}

// invitationsEqual compares records with time.Equal.
func invitationsEqual(a, b []InvitationRecord) bool {
	return slices.EqualFunc(a, b, func(x, y InvitationRecord) bool {
		return x.ID == y.ID && x.Inviter == y.Inviter && x.GroupID == y.GroupID && x.Data == y.Data &&
			x.CreatedAt.Equal(y.CreatedAt) && x.Deadline.Equal(y.Deadline) && x.PushInfo == y.PushInfo &&
			slices.EqualFunc(x.Invitees, y.Invitees, func(p, q InviteeRecord) bool {
				return p.UserID == q.UserID && p.State == q.State && p.UpdatedAt.Equal(q.UpdatedAt) && p.Pushed == q.Pushed
			})
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
