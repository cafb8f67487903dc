package webhook_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// openSQLiteQueue opens a queue on the database at path, closed when the
// test ends.
func openSQLiteQueue(t *testing.T, path string) *webhook.SQLiteQueue {
	t.Helper()
	db, _, err := sqlitedb.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	q, err := webhook.NewSQLiteQueue(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestQueueContract runs the Queue contract on every implementation.
func TestQueueContract(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) webhook.Queue{
		"memory": func(*testing.T) webhook.Queue { return webhook.NewMemoryQueue() },
		"sqlite": func(t *testing.T) webhook.Queue { return openSQLiteQueue(t, filepath.Join(t.TempDir(), "q.db")) },
	} {
		t.Run(name, func(t *testing.T) { queueContract(t, open(t)) })
	}
}

var q0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func queueContract(t *testing.T, q webhook.Queue) {
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	claim := func(now time.Time, n int) []webhook.Delivery {
		t.Helper()
		ds, err := q.Claim(ctx, now, now.Add(time.Minute), n)
		must(err)
		return ds
	}
	ids := func(ds []webhook.Delivery) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.EventID+"@"+d.URL)
		}
		return out
	}
	eq := func(what string, got []webhook.Delivery, want ...string) {
		t.Helper()
		g := ids(got)
		if len(g) != len(want) {
			t.Fatalf("%s: got %v, want %v", what, g, want)
		}
		for i := range want {
			if g[i] != want[i] {
				t.Fatalf("%s: got %v, want %v", what, g, want)
			}
		}
	}
	if n, err := q.Len(ctx); err != nil || n != 0 {
		t.Fatalf("new queue Len = %d, %v", n, err)
	}
	if next, err := q.NextAfter(ctx, q0); err != nil || !next.IsZero() {
		t.Fatalf("new queue NextAfter = %v, %v", next, err)
	}
	d := func(id, url, key string, next time.Time) webhook.Delivery {
		return webhook.Delivery{EventID: id, URL: url, Key: key, Body: []byte(`{"id":"` + id + `"}`), CreatedAt: q0, NextAt: next}
	}
	must(q.Add(ctx, []webhook.Delivery{
		d("e1", "u1", "k", q0), d("e1", "u2", "k", q0), // one event, two URLs
		d("e2", "u1", "k", q0),                    // after e1 on u1
		d("e3", "u1", "", q0),                     // no key: never waits
		d("e4", "u1", "other", q0.Add(time.Hour)), // not due yet
	}))
	if n, _ := q.Len(ctx); n != 5 {
		t.Fatalf("Len = %d, want 5", n)
	}
	// Round trip of the fields.
	got := claim(q0, 1)
	eq("first claim", got, "e1@u1")
	if g := got[0]; g.Key != "k" || !bytes.Equal(g.Body, []byte(`{"id":"e1"}`)) || !g.CreatedAt.Equal(q0) || g.Attempts != 0 || g.Seq <= 0 {
		t.Fatalf("claimed %+v", g)
	}
	first := got[0]
	// e2 waits for e1 on u1 (leased, still queued); e1 on u2 and e3 do not.
	eq("second claim", claim(q0, 10), "e1@u2", "e3@u1")
	eq("nothing more due", claim(q0.Add(30*time.Second), 10))
	// The lease runs out: e1@u1, e1@u2 and e3@u1 are due again.
	eq("after the lease", claim(q0.Add(2*time.Minute), 10), "e1@u1", "e1@u2", "e3@u1")
	// NextAfter sees the leases and e4.
	if next, _ := q.NextAfter(ctx, q0.Add(2*time.Minute)); !next.Equal(q0.Add(3 * time.Minute)) {
		t.Fatalf("NextAfter = %v, want the lease's end %v", next, q0.Add(3*time.Minute))
	}
	// A retry keeps e2 waiting until e1 is gone.
	must(q.Retry(ctx, first.Seq, 1, q0.Add(270*time.Second)))
	eq("e1 retrying", claim(q0.Add(4*time.Minute), 10), "e1@u2", "e3@u1")
	got = claim(q0.Add(270*time.Second), 10)
	eq("e1 due again", got, "e1@u1")
	if got[0].Attempts != 1 {
		t.Fatalf("attempts = %d, want 1", got[0].Attempts)
	}
	must(q.Remove(ctx, first.Seq))
	must(q.Remove(ctx, first.Seq)) // missing: no error
	must(q.Retry(ctx, first.Seq, 9, q0))
	eq("e2 after e1", claim(q0.Add(270*time.Second), 1), "e2@u1")
	if n, _ := q.Len(ctx); n != 4 {
		t.Fatalf("Len = %d, want 4", n)
	}
	eq("every lease over, e4 due", claim(q0.Add(2*time.Hour), 10), "e1@u2", "e2@u1", "e3@u1", "e4@u1")
	// A cancelled context is an error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := q.Add(cctx, []webhook.Delivery{d("e5", "u1", "", q0)}); err == nil {
		t.Error("Add with a cancelled context succeeded")
	}
}

// TestSQLiteQueueSurvivesReopen: what was added is there after the
// database is opened again, Seq keeps growing.
func TestSQLiteQueueSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openSQLiteQueue(t, path)
	if err := q.Add(t.Context(), []webhook.Delivery{{EventID: "e1", URL: "u", Body: []byte("{}"), CreatedAt: q0, NextAt: q0}}); err != nil {
		t.Fatal(err)
	}
	q2 := openSQLiteQueue(t, path)
	ds, err := q2.Claim(t.Context(), q0, q0.Add(time.Minute), 10)
	if err != nil || len(ds) != 1 || ds[0].EventID != "e1" {
		t.Fatalf("after reopen: %+v, %v", ds, err)
	}
}
