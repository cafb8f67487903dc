package calls_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/calls/recordtest"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// recordsSignalingStore opens a signaling store at path, closed when tb ends.
func recordsSignalingStore(tb testing.TB, path string) *signaling.SQLiteStore {
	tb.Helper()
	store, err := signaling.OpenSQLite(context.Background(), path, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("OpenSQLite: %v", err)
	}
	tb.Cleanup(func() {
		if err := store.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return store
}

// recordsSQLite opens call records in the database of a new signaling
// store, as cmd wires them.
func recordsSQLite(tb testing.TB) (*signaling.SQLiteStore, *calls.SQLiteRecords) {
	tb.Helper()
	store := recordsSignalingStore(tb, filepath.Join(tb.TempDir(), "switchboard.db"))
	recs, err := calls.NewSQLiteRecords(context.Background(), store.DB())
	if err != nil {
		tb.Fatalf("NewSQLiteRecords: %v", err)
	}
	return store, recs
}

func TestMemoryRecordsContract(t *testing.T) {
	recordtest.Run(t, func(t *testing.T) calls.RecordStore { return calls.NewMemoryRecords() })
}

func TestSQLiteRecordsContract(t *testing.T) {
	recordtest.Run(t, func(t *testing.T) calls.RecordStore {
		_, recs := recordsSQLite(t)
		return recs
	})
}

var recordsT0 = time.Date(2025, time.June, 1, 12, 0, 0, 123_456_789, time.UTC)

func recordsCall(id, caller string, created time.Time, invitees ...string) calls.CallRecord {
	rec := calls.CallRecord{
		CallID: id, Caller: caller, RoomID: "room-" + id, MediaType: "video",
		CreatedAt: created, BeganAt: created.Add(2 * time.Second), EndedAt: created.Add(time.Minute),
		Duration: 58 * time.Second, Result: calls.ResultCompleted, EndReason: "hangup", EndedBy: caller,
		Participants: []calls.ParticipantRecord{{UserID: caller, Role: calls.RoleCaller, InvitedAt: created,
			JoinedAt: created.Add(time.Second), LeftAt: created.Add(time.Minute), Result: calls.ResultCompleted}},
	}
	for _, u := range invitees {
		rec.Participants = append(rec.Participants, calls.ParticipantRecord{UserID: u, Role: calls.RoleInvitee,
			InvitedAt: created, AnsweredAt: created.Add(time.Second), Answer: calls.AnswerAccepted,
			JoinedAt: created.Add(2 * time.Second), LeftAt: created.Add(time.Minute), Result: calls.ResultCompleted})
	}
	return rec
}

// TestSQLiteRecordsWithSignalingStore writes call records through the pool
// while the signaling store's writer commits through its own connection to
// the same file: both wait for SQLite's write lock (busy timeout) and none
// fails.
func TestSQLiteRecordsWithSignalingStore(t *testing.T) {
	store, recs := recordsSQLite(t)
	const (
		workers   = 4
		perWorker = 40
	)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := fmt.Sprintf("call-%d-%03d", w, i)
				if err := recs.SaveCall(ctx, recordsCall(id, "alice", recordsT0.Add(time.Duration(w*perWorker+i)*time.Millisecond), "bob")); err != nil {
					errs <- fmt.Errorf("SaveCall(%s): %w", id, err)
				}
			}
		})
		wg.Go(func() {
			for i := range perWorker {
				seq := int64(w*perWorker + i + 1)
				err := store.Apply(ctx, signaling.AppendOutbox{Entry: signaling.OutboxEntry{
					UserID: "bob", Seq: seq, Event: "onInvited", Data: []byte(`{}`), CreatedAt: recordsT0, ExpiresAt: recordsT0.Add(time.Hour),
				}})
				if err != nil {
					errs <- fmt.Errorf("Apply(AppendOutbox %d): %w", seq, err)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range perWorker {
			if err := recs.Heartbeat(ctx, recordsT0.Add(time.Duration(i)*time.Second)); err != nil {
				errs <- fmt.Errorf("Heartbeat: %w", err)
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	snap, err := store.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(snap.Outbox) != workers*perWorker {
		t.Errorf("outbox holds %d entries, want %d", len(snap.Outbox), workers*perWorker)
	}
	n := 0
	for cursor := ""; ; {
		page, next, err := recs.History(ctx, "bob", calls.FilterIncoming, calls.MaxHistoryLimit, cursor)
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		n += len(page)
		if next == "" {
			break
		}
		cursor = next
	}
	if n != workers*perWorker {
		t.Errorf("History(bob) lists %d calls, want %d", n, workers*perWorker)
	}
}

// TestSQLiteRecordsOutwaitBusyTimeout holds SQLite's write lock from
// another connection for several busy timeouts: SaveCall and Heartbeat, one
// at a time, wait for it (running their transaction again each time the
// busy timeout ends) rather than fail with SQLITE_BUSY, which lost the
// record. This is what a writer that SQLite's busy handler starves sees
// (the flaky failure of the Concurrency contract test under load: BEGIN
// IMMEDIATE, "database is locked (5) (SQLITE_BUSY)" after 5 s of
// polling while other writers committed back to back). With ctx ended, the
// write gives up.
func TestSQLiteRecordsOutwaitBusyTimeout(t *testing.T) {
	const busyTimeout = 50 * time.Millisecond
	path := filepath.Join(t.TempDir(), "switchboard.db")
	store := recordsSignalingStore(t, path)
	db, err := sql.Open("sqlite", sqlitedb.DSNBusy(path, busyTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, err := calls.NewSQLiteRecords(t.Context(), db)
	if err != nil {
		t.Fatalf("NewSQLiteRecords: %v", err)
	}
	holder, err := store.DB().Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	writes := []struct {
		name  string
		write func(context.Context) error
	}{
		{"SaveCall", func(ctx context.Context) error {
			return recs.SaveCall(ctx, recordsCall("locked", "alice", recordsT0, "bob"))
		}},
		{"Heartbeat", func(ctx context.Context) error { return recs.Heartbeat(ctx, recordsT0) }},
	}
	for _, w := range writes {
		if _, err := holder.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
			t.Fatalf("BEGIN IMMEDIATE: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		done := make(chan error, 1)
		go func() { done <- w.write(ctx) }()
		select {
		case err := <-done:
			t.Fatalf("%s returned %v while another connection held the write lock", w.name, err)
		case <-time.After(4 * busyTimeout):
		}
		if _, err := holder.ExecContext(t.Context(), "ROLLBACK"); err != nil {
			t.Fatalf("ROLLBACK: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s after the lock was released: %v", w.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still waits 30 s after the lock was released", w.name)
		}
		cancel()
	}
	if recs, _, err := recs.History(t.Context(), "bob", calls.FilterAll, 10, ""); err != nil || len(recs) != 1 {
		t.Errorf("History(bob): %d calls, %v; want the saved one", len(recs), err)
	}
	if at, err := recs.LastHeartbeat(t.Context()); err != nil || !at.Equal(recordsT0) {
		t.Errorf("LastHeartbeat: %v, %v; want %v", at, err, recordsT0)
	}

	// The lock held until ctx ends: the write returns then, with the
	// context's error, and writes nothing.
	if _, err := holder.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*busyTimeout)
	defer cancel()
	err = recs.SaveCall(ctx, recordsCall("never", "alice", recordsT0.Add(time.Second), "bob"))
	if err == nil || ctx.Err() == nil {
		t.Errorf("SaveCall with the lock held past its ctx: %v before ctx ended (%v)", err, ctx.Err())
	}
	if _, err := holder.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatalf("ROLLBACK: %v", err)
	}
	if recs, _, err := recs.History(t.Context(), "bob", calls.FilterAll, 10, ""); err != nil || len(recs) != 1 {
		t.Errorf("History(bob): %d calls, %v; want only the first one", len(recs), err)
	}
}

// TestSQLiteRecordsReopen checks that the records survive closing the
// database and that opening them again migrates nothing twice.
func TestSQLiteRecordsReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchboard.db")
	first, err := signaling.OpenSQLite(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	recs, err := calls.NewSQLiteRecords(t.Context(), first.DB())
	if err != nil {
		t.Fatalf("NewSQLiteRecords: %v", err)
	}
	want := recordsCall("c1", "alice", recordsT0, "bob")
	want.EndedAt, want.Result = time.Time{}, ""
	if err := recs.SaveCall(t.Context(), want); err != nil {
		t.Fatalf("SaveCall: %v", err)
	}
	if err := recs.Heartbeat(t.Context(), recordsT0); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	store := recordsSignalingStore(t, path)
	for range 2 {
		if recs, err = calls.NewSQLiteRecords(t.Context(), store.DB()); err != nil {
			t.Fatalf("NewSQLiteRecords again: %v", err)
		}
	}
	open, err := recs.OpenCalls(t.Context())
	if err != nil || len(open) != 1 || open[0].CallID != "c1" || len(open[0].Participants) != 2 {
		t.Errorf("OpenCalls after reopening = %+v, %v; want c1 with two participants", open, err)
	}
	if hb, err := recs.LastHeartbeat(t.Context()); err != nil || !hb.Equal(recordsT0) {
		t.Errorf("LastHeartbeat after reopening = %v, %v; want %v", hb, err, recordsT0)
	}
	var versions int
	err = store.DB().QueryRowContext(t.Context(),
		`SELECT count(*) FROM schema_migrations WHERE component = 'calls'`).Scan(&versions)
	if err != nil || versions != 1 {
		t.Errorf("schema_migrations holds %d versions of calls (%v), want 1", versions, err)
	}
}

// TestSQLiteRecordsNewerSchema refuses a database written by a newer binary.
func TestSQLiteRecordsNewerSchema(t *testing.T) {
	store, _ := recordsSQLite(t)
	_, err := store.DB().ExecContext(t.Context(),
		`INSERT INTO schema_migrations (component, version, applied_at) VALUES ('calls', 99, 0)`)
	if err != nil {
		t.Fatalf("insert version: %v", err)
	}
	if _, err := calls.NewSQLiteRecords(t.Context(), store.DB()); err == nil {
		t.Error("NewSQLiteRecords on a database of schema version 99: no error")
	}
	if _, err := calls.NewSQLiteRecords(t.Context(), nil); err == nil {
		t.Error("NewSQLiteRecords(nil): no error")
	}
}

// TestSQLiteRecordsClosedDatabase checks that a failure of the database is
// reported as ErrStoreUnavailable, not as a bad record or a panic.
func TestSQLiteRecordsClosedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchboard.db")
	store, err := signaling.OpenSQLite(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	recs, err := calls.NewSQLiteRecords(t.Context(), store.DB())
	if err != nil {
		t.Fatalf("NewSQLiteRecords: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, protocol.ErrStoreUnavailable) {
			t.Errorf("%s on a closed database: got %v, want ErrStoreUnavailable", op, err)
		}
	}
	check("SaveCall", recs.SaveCall(t.Context(), recordsCall("c", "alice", recordsT0)))
	_, _, err = recs.History(t.Context(), "alice", calls.FilterAll, 0, "")
	check("History", err)
	_, err = recs.OpenCalls(t.Context())
	check("OpenCalls", err)
	check("Heartbeat", recs.Heartbeat(t.Context(), recordsT0))
	_, err = recs.LastHeartbeat(t.Context())
	check("LastHeartbeat", err)
}

// BenchmarkSQLiteRecordsSave saves a new ended call with four participants
// per iteration.
func BenchmarkSQLiteRecordsSave(b *testing.B) {
	_, recs := recordsSQLite(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rec := recordsCall(fmt.Sprintf("call-%09d", i), "alice", recordsT0.Add(time.Duration(i)*time.Millisecond), "bob", "carol", "dave")
		if err := recs.SaveCall(ctx, rec); err != nil {
			b.Fatalf("SaveCall: %v", err)
		}
		i++
	}
}

// BenchmarkSQLiteRecordsHistory reads one page of 20 calls, with their
// participants, of a user who took part in 1,000 of 10,000 calls.
func BenchmarkSQLiteRecordsHistory(b *testing.B) {
	_, recs := recordsSQLite(b)
	ctx := context.Background()
	const (
		total = 10_000
		users = 40
	)
	for i := range total {
		// Four of the 40 users take part in each call.
		u := func(k int) string { return fmt.Sprintf("user-%02d", (i+k*10)%users) }
		rec := recordsCall(fmt.Sprintf("call-%05d", i), u(0), recordsT0.Add(time.Duration(i)*time.Second), u(1), u(2), u(3))
		if i%3 == 0 {
			rec.Participants[1].Result = calls.ResultMissed
		}
		if err := recs.SaveCall(ctx, rec); err != nil {
			b.Fatalf("SaveCall: %v", err)
		}
	}
	page := func(b *testing.B, filter calls.HistoryFilter, cursor string) string {
		recs, next, err := recs.History(ctx, "user-07", filter, 20, cursor)
		if err != nil || len(recs) != 20 || next == "" {
			b.Fatalf("History = %d calls, %q, %v; want a full page", len(recs), next, err)
		}
		return next
	}
	for _, filter := range []calls.HistoryFilter{calls.FilterAll, calls.FilterMissed, calls.FilterOutgoing} {
		b.Run(string(filter)+"/first", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				page(b, filter, "")
			}
		})
		b.Run(string(filter)+"/deep", func(b *testing.B) {
			cursor := ""
			for range 3 {
				cursor = page(b, filter, cursor)
			}
			b.ReportAllocs()
			for b.Loop() {
				page(b, filter, cursor)
			}
		})
	}
}
