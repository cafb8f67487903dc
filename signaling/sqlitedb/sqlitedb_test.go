package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openTestDB opens a database in a fresh directory, closed when the test
// ends.
func openTestDB(t *testing.T) *sql.DB {
	t.Helper()
	db, _, err := Open(t.Context(), filepath.Join(t.TempDir(), "sub", "test.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// TestOpen: the directory is created, the pool runs in WAL mode with
// foreign keys and the busy timeout, and transactions take the write lock
// at BEGIN.
func TestOpen(t *testing.T) {
	db := openTestDB(t)
	ctx := t.Context()
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"foreign_keys": "1",
		"busy_timeout": fmt.Sprint(BusyTimeout.Milliseconds()),
		"synchronous":  "1", // NORMAL
	} {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", pragma, err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	// BEGIN IMMEDIATE: a second transaction cannot begin while one is open.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if tx2, err := db.BeginTx(short, nil); err == nil {
		_ = tx2.Rollback()
		t.Error("a second write transaction began while the first held the lock")
	}
}

// TestOpenRefusesNonDatabase: a file that is not a database fails at Open.
func TestOpenRefusesNonDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("this is not an SQLite database, only some text that is long enough"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, _, err := Open(t.Context(), path); err == nil {
		_ = db.Close()
		t.Fatal("Open of a text file succeeded")
	}
	if db, _, err := Open(t.Context(), ""); err == nil {
		_ = db.Close()
		t.Fatal("Open of an empty path succeeded")
	}
}

// TestTime: times round-trip in UTC, the zero time is NULL, and times
// outside int64 nanoseconds are an *InvalidError.
func TestTime(t *testing.T) {
	local := time.Date(2025, 3, 30, 2, 30, 0, 123456789, time.FixedZone("X", 3600))
	v, err := Time(local)
	if err != nil {
		t.Fatal(err)
	}
	got := TimeOf(sql.NullInt64{Int64: v.(int64), Valid: true})
	if !got.Equal(local) || got.Location() != time.UTC {
		t.Errorf("round trip of %v = %v, want the same instant in UTC", local, got)
	}
	if v, err := Time(time.Time{}); v != nil || err != nil {
		t.Errorf("Time(zero) = %v, %v, want nil, nil", v, err)
	}
	if got := TimeOf(sql.NullInt64{}); !got.IsZero() {
		t.Errorf("TimeOf(NULL) = %v, want the zero time", got)
	}
	var inv *InvalidError
	if _, err := Time(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.As(err, &inv) {
		t.Errorf("Time(2300) error = %v, want an *InvalidError", err)
	}
}

// TestLogical tells the caller's and the data's errors from the database's.
func TestLogical(t *testing.T) {
	db := openTestDB(t)
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id TEXT PRIMARY KEY) STRICT`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES ('a')`); err != nil {
		t.Fatal(err)
	}
	_, dup := db.ExecContext(ctx, `INSERT INTO t VALUES ('a')`)
	_, syntax := db.ExecContext(ctx, `INSERT INTO no_such_table VALUES ('a')`)
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"constraint", fmt.Errorf("wrapped: %w", dup), true},
		{"invalid", Invalid("bad %d", 1), true},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), true},
		{"deadline", context.DeadlineExceeded, true},
		{"database", syntax, false},
		{"other", errors.New("disk on fire"), false},
	} {
		if c.err == nil {
			t.Fatalf("%s: no error to classify", c.name)
		}
		if got := Logical(c.err); got != c.want {
			t.Errorf("Logical(%s: %v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	if !Canceled(context.Canceled) || Canceled(dup) {
		t.Error("Canceled does not tell a context's end from a constraint")
	}
}
