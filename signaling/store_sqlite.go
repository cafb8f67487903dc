package signaling

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

const (
	// sqliteComponent names the store's schema in schema_migrations.
	sqliteComponent = "signaling"
	// sqliteMaxBatch bounds how many Apply calls share one transaction.
	sqliteMaxBatch = 256
	// sqliteCheckpointEvery is how often the checkpointer copies what was
	// committed since from the WAL into the database file.
	sqliteCheckpointEvery = 100 * time.Millisecond
	// sqliteWALMaxFrames: past this many frames in the WAL (4 KiB pages),
	// the writer finishes the checkpoint itself once it has nothing to do,
	// or before its next transaction past twice as many, so that the next
	// transaction starts the WAL over.
	sqliteWALMaxFrames = 4000
)

// sqliteSteps is the store's schema, one element per version (see
// sqlitedb.Migrate).
//
// Times are INTEGER unix nanoseconds (UTC), NULL for the zero time.
// Invitees keep their position in the invitation (since version 5 they
// are a JSON array in the invitation's row); members are returned
// owner first, then by join time, then in insertion order (rowid).
var sqliteSteps = []string{
	`CREATE TABLE sig_invitations (
		id         TEXT PRIMARY KEY,
		inviter    TEXT NOT NULL,
		group_id   TEXT NOT NULL,
		data       TEXT NOT NULL,
		created_at INTEGER,
		deadline   INTEGER
	) STRICT;
	CREATE TABLE sig_invitees (
		invite_id  TEXT    NOT NULL REFERENCES sig_invitations (id) ON DELETE CASCADE,
		user_id    TEXT    NOT NULL,
		pos        INTEGER NOT NULL,
		state      TEXT    NOT NULL,
		updated_at INTEGER,
		PRIMARY KEY (invite_id, user_id)
	) STRICT, WITHOUT ROWID;
	CREATE TABLE sig_groups (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL,
		owner       TEXT NOT NULL,
		join_option TEXT NOT NULL,
		created_at  INTEGER
	) STRICT;
	CREATE TABLE sig_group_members (
		group_id  TEXT NOT NULL REFERENCES sig_groups (id) ON DELETE CASCADE,
		user_id   TEXT NOT NULL,
		role      TEXT NOT NULL,
		joined_at INTEGER,
		PRIMARY KEY (group_id, user_id)
	) STRICT;
	CREATE TABLE sig_outbox (
		seq        INTEGER PRIMARY KEY,
		user_id    TEXT NOT NULL,
		event      TEXT NOT NULL,
		data       BLOB,
		created_at INTEGER,
		expires_at INTEGER
	) STRICT;
	CREATE INDEX sig_outbox_user ON sig_outbox (user_id, seq);
	CREATE INDEX sig_outbox_expiry ON sig_outbox (expires_at);`,
	// Version 2: who caused each kept event (per-sender quota), who added
	// each group member (groups one was added to by others have their own
	// cap), and the users who have connected at least once (only they get
	// kept events). The users are seeded with those the data shows have
	// connected: inviters, invitees who answered and group owners (version 1
	// cannot tell members who joined by themselves from members added by
	// others, so members are left out: they are recorded when they connect).
	`ALTER TABLE sig_outbox ADD COLUMN sender TEXT NOT NULL DEFAULT '';
	ALTER TABLE sig_group_members ADD COLUMN added_by TEXT NOT NULL DEFAULT '';
	CREATE TABLE sig_users (
		user_id TEXT PRIMARY KEY
	) STRICT, WITHOUT ROWID;
	INSERT OR IGNORE INTO sig_users (user_id) SELECT inviter FROM sig_invitations;
	INSERT OR IGNORE INTO sig_users (user_id) SELECT user_id FROM sig_invitees WHERE state IN ('accepted', 'rejected');
	INSERT OR IGNORE INTO sig_users (user_id) SELECT owner FROM sig_groups;`,
	// Version 3: offline push. An invitation's offlinePushInfo (JSON, '' for
	// none), and whether a push request was sent for each invitee.
	`ALTER TABLE sig_invitations ADD COLUMN push_info TEXT NOT NULL DEFAULT '';
	ALTER TABLE sig_invitees ADD COLUMN pushed INTEGER NOT NULL DEFAULT 0;`,
	// Version 4: presence. Each user's custom status text (setSelfStatus);
	// users without one have no row.
	`CREATE TABLE sig_user_status (
		user_id       TEXT PRIMARY KEY,
		custom_status TEXT NOT NULL
	) STRICT, WITHOUT ROWID;`,
	// Version 5: an invitation's invitees are kept in its row (a JSON array
	// of [user_id, state, updated_at, pushed] in invitation order), so that
	// putting an invitation is one statement and deleting it needs no
	// cascade. The rows of sig_invitees move there, ordered by pos.
	`ALTER TABLE sig_invitations ADD COLUMN invitees TEXT NOT NULL DEFAULT '[]';
	UPDATE sig_invitations SET invitees = (
		SELECT json_group_array(json_array(user_id, state, updated_at, pushed) ORDER BY pos)
		FROM sig_invitees WHERE invite_id = sig_invitations.id);
	DROP TABLE sig_invitees;`,
}

// SQLiteStore is the Store kept in one SQLite file (modernc.org/sqlite, no
// cgo), in WAL mode with synchronous=NORMAL: a committed Apply survives the
// process being killed (SIGKILL, crash), though not necessarily a power
// loss or kernel crash in the instant after it.
//
// Writes go through one writer goroutine that owns a dedicated connection
// and commits concurrent Apply calls together (group commit): it takes up to
// sqliteMaxBatch waiting calls, runs each inside its own SAVEPOINT of one
// transaction, so that a failing call is rolled back alone, and answers the
// callers once the COMMIT has succeeded. Under load it may wait a little for
// more calls before it begins a transaction (SQLiteOptions.CommitWait; see
// gather). Load reads through the pool and does not wait for the writer (WAL
// readers see the last commit).
//
// Checkpoints (copying committed pages from the WAL into the database file,
// with two fsyncs) are not made by a COMMIT, as SQLite would every 1000
// pages, stalling every caller queued behind it: a checkpointer goroutine
// makes them on a connection of the pool, every sqliteCheckpointEvery while
// there are new commits, alongside the writer (a PASSIVE checkpoint). The
// WAL starts over only after a checkpoint that no commit overtook, so once
// it holds sqliteWALMaxFrames the writer checkpoints what is left (little:
// the checkpointer did the rest) between two transactions: as soon as it
// has nothing to do, or before its next transaction once the WAL holds
// twice as many (the checkpointer then stays out of its way: SQLite
// checkpoints on one connection at a time and fails the other's at once).
//
// Times are stored as unix nanoseconds and come back in UTC, equal
// (time.Equal) to what was stored; the zero time is kept as NULL and comes
// back as the zero time. Times outside the years 1678-2262 cannot be stored.
//
// When a write fails for a reason other than the data (I/O error, full or
// read-only disk, ...) the error wraps ErrStoreUnavailable, and the writer
// closes its connection, so that the next Apply opens the file again and
// works once the cause is gone, without reopening the store. Note that
// SQLite creates the -wal and -shm files with the mode of the database
// file: if that was read-only, they must be made writable too.
type SQLiteStore struct {
	db  *sql.DB // the pool: Load, migrations, DB()
	log *slog.Logger
	// wdb holds at most the writer's one connection. It is apart from db so
	// that a connection the writer drops after a failure is replaced by a
	// newly opened one, never by an idle one of db that may have opened the
	// file while it was read-only.
	wdb *sql.DB

	// mu guards queue and closed. It is never held while talking to SQLite.
	mu     sync.Mutex
	queue  []*sqliteReq
	closed bool

	wake       chan struct{} // capacity 1: the queue may be non-empty
	closing    chan struct{} // closed by Close
	writerDone chan struct{} // closed when the writer goroutine has ended
	closeOnce  sync.Once
	closeErr   error

	// Owned by the writer goroutine.
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	// jsonBuf is reused to build an invitation's invitees column.
	jsonBuf []byte
	// The group-commit wait (see gather); commitWait 0: none.
	commitWait  time.Duration
	commitMin   int         // store.commit_batch
	lastCommit  time.Time   // when the writer's last transaction ended
	gatherTimer *time.Timer // reused by gather
	gatherOff   time.Time   // gather does not wait before this

	// Checkpoints (see runCheckpointer).
	ckptEvery        time.Duration
	walMaxFrames     int64
	walState         atomic.Int32  // walShort, walLong or walTooLong: whether the writer is to checkpoint
	checkpointerDone chan struct{} // closed when the checkpointer goroutine has ended

	// For tests.
	commits      atomic.Int64                           // committed transactions
	batchRetries atomic.Int64                           // batches run again with savepoints after a call failed
	savepoints   atomic.Int64                           // savepoints made (one per call of a batch run again)
	taken        atomic.Int64                           // calls taken from the queue by the writer
	connHook     func(context.Context, *sql.Conn) error // runs on each new writer connection; set before the first Apply

	// tooLongMissed counts the writer's checkpoints before a batch, the WAL
	// being too long, that were not made (for tests).
	tooLongMissed atomic.Int64
}

var _ Store = (*SQLiteStore)(nil)

// Values of SQLiteStore.walState.
const (
	walShort   int32 = iota // the checkpointer keeps up
	walLong                 // the writer checkpoints once it has nothing to do
	walTooLong              // the writer checkpoints before its next transaction
)

// OpenSQLite opens (creating it and its directory if needed) the store at
// path and brings its schema up to date, without a group-commit wait. log
// may be nil.
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*SQLiteStore, error) {
	return OpenSQLiteWith(ctx, path, log, SQLiteOptions{})
}

// SQLiteOptions are an SQLiteStore's settings (store.* in the server's
// configuration).
type SQLiteOptions struct {
	// CommitWait and CommitBatch are the writer's group-commit wait (see
	// SQLiteStore): while calls arrive faster than one per CommitWait, a
	// transaction that would hold fewer than CommitBatch calls waits up to
	// CommitWait for more. CommitWait 0 (or CommitBatch at most 1): no wait.
	CommitWait  time.Duration
	CommitBatch int
}

// OpenSQLiteWith is OpenSQLite with options.
func OpenSQLiteWith(ctx context.Context, path string, log *slog.Logger, o SQLiteOptions) (*SQLiteStore, error) {
	s, err := openSQLiteNoStart(ctx, path, log, sqliteCheckpointEvery, sqliteWALMaxFrames)
	if err != nil {
		return nil, err
	}
	s.commitWait, s.commitMin = o.CommitWait, min(o.CommitBatch, sqliteMaxBatch)
	s.start()
	return s, nil
}

// openSQLite is OpenSQLite with the checkpoints' settings (tests change them).
func openSQLite(ctx context.Context, path string, log *slog.Logger, ckptEvery time.Duration, walMaxFrames int64) (*SQLiteStore, error) {
	s, err := openSQLiteNoStart(ctx, path, log, ckptEvery, walMaxFrames)
	if err != nil {
		return nil, err
	}
	s.start()
	return s, nil
}

// start starts the writer and the checkpointer.
func (s *SQLiteStore) start() {
	go s.runWriter()
	go s.runCheckpointer()
}

// openSQLiteNoStart opens the store; start starts its goroutines.
func openSQLiteNoStart(ctx context.Context, path string, log *slog.Logger, ckptEvery time.Duration, walMaxFrames int64) (*SQLiteStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("signaling: open sqlite store: empty path")
	}
	db, abs, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("signaling: open sqlite store %s: %w", path, err)
	}
	if err := sqlitedb.Migrate(ctx, db, sqliteComponent, sqliteSteps); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("signaling: open sqlite store %s: %w", path, err)
	}
	wdb, err := sql.Open("sqlite", sqlitedb.DSN(abs))
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("signaling: open sqlite store %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	s := &SQLiteStore{
		db:               db,
		wdb:              wdb,
		log:              log,
		wake:             make(chan struct{}, 1),
		closing:          make(chan struct{}),
		writerDone:       make(chan struct{}),
		ckptEvery:        ckptEvery,
		walMaxFrames:     walMaxFrames,
		checkpointerDone: make(chan struct{}),
	}
	log.Info("sqlite store open", "path", abs)
	return s, nil
}

// DB returns the store's database, for other components' tables (create
// them with sqlitedb.Migrate under another component name). Their writes
// take the same SQLite write lock as the store's writer and wait for it up
// to the busy timeout. The sig_* tables belong to the store.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

var errSQLiteClosed = fmt.Errorf("signaling: sqlite store closed: %w", protocol.ErrShuttingDown)

// Close implements Store: it waits for the writer to commit the calls
// already queued, then closes the database. Later calls return nil.
func (s *SQLiteStore) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		<-s.writerDone
		<-s.checkpointerDone
		if err := errors.Join(s.wdb.Close(), s.db.Close()); err != nil {
			s.closeErr = fmt.Errorf("signaling: close sqlite store: %w", err)
		}
	})
	return s.closeErr
}

// sqliteLogical reports whether err is about the data (a taken ID, a
// constraint, an invalid mutation, a caller's ctx) rather than the database
// being unable to work.
func sqliteLogical(err error) bool {
	return errors.Is(err, protocol.ErrGroupExists) || sqlitedb.Logical(err)
}

// sqliteErr adds op to err; a failure of the database also wraps
// ErrStoreUnavailable, so that it reaches the client as "try again".
func sqliteErr(op string, err error) error {
	if sqliteLogical(err) {
		return fmt.Errorf("signaling: sqlite store: %s: %w", op, err)
	}
	return fmt.Errorf("signaling: sqlite store: %s: %w: %w", op, protocol.ErrStoreUnavailable, err)
}
