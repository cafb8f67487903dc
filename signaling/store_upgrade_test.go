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

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
