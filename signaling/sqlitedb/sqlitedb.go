// Package sqlitedb is the SQLite plumbing shared by the stores that keep
// their tables in Switchboard's one database file (signaling.SQLiteStore,
// calls.SQLiteRecords): opening the file with the DSN and pragmas they rely
// on, the per-component migrations runner, the encoding of times, and
// telling failures of the data from failures of the database. Each store
// keeps its own schema and queries.
//
// The driver is modernc.org/sqlite (no cgo), registered as "sqlite".
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// BusyTimeout is how long a statement waits for a lock held by another
// connection (a reader checkpointing, another component writing) before
// failing with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Open opens a pool on the database at path, creating the file and its
// directory if needed, with the DSN of DSN, and checks that it is a
// database in WAL mode. It returns the pool and the absolute path.
func Open(ctx context.Context, path string) (*sql.DB, string, error) {
	if path == "" {
		return nil, "", errors.New("empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, "", err
	}
	db, err := sql.Open("sqlite", DSN(abs))
	if err != nil {
		return nil, "", err
	}
	if err := checkWAL(ctx, db); err != nil {
		_ = db.Close()
		return nil, "", err
	}
	return db, abs, nil
}

// DSN applies the pragmas to every connection of a pool on path: the busy
// timeout, foreign keys, WAL with synchronous=NORMAL (a commit survives the
// process being killed, though not necessarily a power loss in the instant
// after it). _txlock makes BeginTx take the write lock at once (BEGIN
// IMMEDIATE), so that a read-then-write transaction cannot fail half-way
// with SQLITE_BUSY; read-only transactions still use a plain BEGIN.
func DSN(path string) string {
	return DSNBusy(path, BusyTimeout)
}

// DSNBusy is DSN with another busy timeout (tests shorten it).
func DSNBusy(path string, busyTimeout time.Duration) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// checkWAL fails early on a file that is not a database, and checks that
// WAL mode took effect (it cannot on some network file systems).
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	return nil
}

// Time encodes t as unix nanoseconds, or NULL (nil) for the zero time. A
// time outside the years 1678-2262 cannot be stored: the error is an
// *InvalidError.
func Time(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	ns := t.UnixNano()
	if !time.Unix(0, ns).Equal(t) {
		return nil, Invalid("time %v outside the storable range (years 1678-2262)", t)
	}
	return ns, nil
}

// TimeOf is the inverse of Time: the time in UTC, equal (time.Equal) to
// what was stored, or the zero time for NULL.
func TimeOf(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// InvalidError marks a value that cannot be stored as given: a bug in the
// caller, not a failure of the database.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

// Invalid returns an *InvalidError with a formatted message.
func Invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Canceled reports whether err comes from a context that ended (the caller
// gave up), as opposed to the database failing.
func Canceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Busy reports whether err is SQLite's "database is locked"
// (SQLITE_BUSY, with any extended code): another connection held the lock
// past the busy timeout. Nothing was written; a whole write transaction may
// be run again.
func Busy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// Logical reports whether err is about the data or the caller (an
// *InvalidError, a constraint violated, a context that ended) rather than
// the database being unable to work (I/O error, full or read-only disk,
// lock timeout, ...), which a store reports as "try again".
func Logical(err error) bool {
	var inv *InvalidError
	var se *sqlite.Error
	switch {
	case errors.As(err, &inv), Canceled(err):
		return true
	case errors.As(err, &se):
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	return false
}
