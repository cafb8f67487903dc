package signaling

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

const (
	// sqliteComponent names the store's schema in schema_migrations.
	sqliteComponent = "signaling"
	// sqliteMaxBatch bounds how many Apply calls share one transaction.
	sqliteMaxBatch = 256
)

// sqliteSteps is the store's schema, one element per version (see
// sqlitedb.Migrate).
//
// Times are INTEGER unix nanoseconds (UTC), NULL for the zero time.
// Invitees keep their position in the invitation; members are returned
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
}

// Statements run by the writer; each is prepared once per connection.
const (
	sqlBegin         = `BEGIN IMMEDIATE`
	sqlCommit        = `COMMIT`
	sqlRollback      = `ROLLBACK`
	sqlSavepoint     = `SAVEPOINT apply`
	sqlRelease       = `RELEASE apply`
	sqlRollbackTo    = `ROLLBACK TO apply`
	sqlPutInvitation = `INSERT INTO sig_invitations (id, inviter, group_id, data, created_at, deadline)
		VALUES (?, ?, ?, ?, ?, ?)`
	sqlPutInvitee = `INSERT INTO sig_invitees (invite_id, user_id, pos, state, updated_at)
		VALUES (?, ?, ?, ?, ?)`
	sqlSetInviteeState   = `UPDATE sig_invitees SET state = ?, updated_at = ? WHERE invite_id = ? AND user_id = ?`
	sqlSetInvitationData = `UPDATE sig_invitations SET data = ? WHERE id = ?`
	sqlDeleteInvitation  = `DELETE FROM sig_invitations WHERE id = ?`
	sqlPutGroup          = `INSERT INTO sig_groups (id, name, owner, join_option, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	// sqlAddMember adds nothing when the group does not exist or the user is
	// already a member.
	sqlAddMember = `INSERT INTO sig_group_members (group_id, user_id, role, joined_at, added_by)
		SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sig_groups WHERE id = ?1)
		ON CONFLICT (group_id, user_id) DO NOTHING`
	sqlRemoveMember = `DELETE FROM sig_group_members WHERE group_id = ? AND user_id = ?`
	sqlDeleteGroup  = `DELETE FROM sig_groups WHERE id = ?`
	sqlAppendOutbox = `INSERT INTO sig_outbox (seq, user_id, sender, event, data, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`
	sqlDeleteOutbox      = `DELETE FROM sig_outbox WHERE user_id = ? AND seq <= ?`
	sqlDeleteOutboxEntry = `DELETE FROM sig_outbox WHERE user_id = ? AND seq = ?`
	sqlPurgeOutbox       = `DELETE FROM sig_outbox WHERE expires_at <= ?`
	sqlPutUser           = `INSERT INTO sig_users (user_id) VALUES (?) ON CONFLICT (user_id) DO NOTHING`
)

// SQLiteStore is the Store kept in one SQLite file (modernc.org/sqlite, no
// cgo), in WAL mode with synchronous=NORMAL: a committed Apply survives the
// process being killed (SIGKILL, crash), though not necessarily a power
// loss or kernel crash in the instant after it.
//
// Writes go through one writer goroutine that owns a dedicated connection
// and commits concurrent Apply calls together (group commit): it takes up to
// sqliteMaxBatch waiting calls, runs each inside its own SAVEPOINT of one
// transaction, so that a failing call is rolled back alone, and answers the
// callers once the COMMIT has succeeded. Load reads through the pool and does
// not wait for the writer (WAL readers see the last commit).
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

	// For tests.
	commits  atomic.Int64                           // committed transactions
	taken    atomic.Int64                           // calls taken from the queue by the writer
	connHook func(context.Context, *sql.Conn) error // runs on each new writer connection; set before the first Apply
}

var _ Store = (*SQLiteStore)(nil)

// sqliteReq is one Apply call waiting for the writer. state moves from
// reqQueued to reqTaken (the writer will answer on done) or to reqAbandoned
// (the caller's ctx ended first; the writer skips it), never back.
type sqliteReq struct {
	ctx   context.Context
	muts  []Mutation
	state atomic.Int32
	err   error      // the call's own result, set by the writer
	done  chan error // capacity 1, so the writer never blocks on it
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// OpenSQLite opens (creating it and its directory if needed) the store at
// path and brings its schema up to date. log may be nil.
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*SQLiteStore, error) {
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
		db:         db,
		wdb:        wdb,
		log:        log,
		wake:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	go s.runWriter()
	log.Info("sqlite store open", "path", abs)
	return s, nil
}

// DB returns the store's database, for other components' tables (create
// them with sqlitedb.Migrate under another component name). Their writes
// take the same SQLite write lock as the store's writer and wait for it up
// to the busy timeout. The sig_* tables belong to the store.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// Apply implements Store. It returns once the mutations are committed, or
// failed. A ctx that ends while the call is still queued withdraws it (it is
// then never applied); once the writer has taken it, Apply waits for the
// outcome, which is bounded by the busy timeout. Applying to a missing
// invitation, invitee or group (SetInviteeState, SetInvitationData,
// AddGroupMembers, RemoveGroupMembers, Delete*) is a no-op, not an error.
func (s *SQLiteStore) Apply(ctx context.Context, muts ...Mutation) error {
	if err := sqliteCtxErr(ctx); err != nil {
		return err
	}
	r := &sqliteReq{ctx: ctx, muts: muts, done: make(chan error, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errSQLiteClosed
	}
	if len(muts) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return fmt.Errorf("signaling: sqlite store: apply: %w", ctx.Err())
		}
		return <-r.done
	}
}

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
		if err := errors.Join(s.wdb.Close(), s.db.Close()); err != nil {
			s.closeErr = fmt.Errorf("signaling: close sqlite store: %w", err)
		}
	})
	return s.closeErr
}

// runWriter is the writer goroutine. It ends when the store is closed and
// the queue is empty.
func (s *SQLiteStore) runWriter() {
	defer close(s.writerDone)
	defer s.dropConn()
	buf := make([]*sqliteReq, 0, sqliteMaxBatch)
	for {
		batch, last := s.take(buf)
		if len(batch) > 0 {
			s.runBatch(batch)
			clear(batch)
			continue
		}
		if last {
			return
		}
		select {
		case <-s.wake:
		case <-s.closing:
		}
	}
}

// take moves up to sqliteMaxBatch queued calls into buf. last reports that
// the store is closed and nothing is left, so no call can arrive any more.
func (s *SQLiteStore) take(buf []*sqliteReq) (batch []*sqliteReq, last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), sqliteMaxBatch)
	batch = append(buf[:0], s.queue[:n]...)
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return batch, s.closed && len(batch) == 0
}

// queueLen is for tests.
func (s *SQLiteStore) queueLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// runBatch commits the calls of batch that are still wanted in one
// transaction and answers each of them.
func (s *SQLiteStore) runBatch(batch []*sqliteReq) {
	live := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(reqQueued, reqTaken) {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	s.taken.Add(int64(len(live)))
	err := s.commitBatch(live)
	for _, r := range live {
		// A call that failed on its own keeps its error: it applied nothing
		// either way, and its own reason is the more useful one.
		if r.err == nil {
			r.err = err
		}
		r.done <- r.err
	}
}

// commitBatch runs reqs in one transaction, setting each call's own result
// in r.err. It returns the error that fails the whole batch (connection,
// BEGIN, savepoint handling or COMMIT), after rolling back.
func (s *SQLiteStore) commitBatch(reqs []*sqliteReq) (err error) {
	ctx := context.Background() // the batch serves several callers; none may cancel it
	if s.conn == nil {
		if s.conn, err = s.wdb.Conn(ctx); err != nil {
			s.conn = nil
			return sqliteErr("connect", err)
		}
		s.stmts = make(map[string]*sql.Stmt)
		if s.connHook != nil {
			if err := s.connHook(ctx, s.conn); err != nil {
				s.dropConn()
				return sqliteErr("connect", err)
			}
		}
	}
	if err := s.exec(ctx, sqlBegin); err != nil {
		s.dropConn()
		return sqliteErr("begin", err)
	}
	// suspect is set by a failure that may have left the connection in a
	// bad state (I/O, read-only, full): it is replaced after the batch.
	suspect := false
	defer func() {
		if err != nil {
			if !sqliteLogical(err) {
				suspect = true
			}
			if rerr := s.exec(ctx, sqlRollback); rerr != nil {
				suspect = true
			}
		}
		if suspect {
			s.dropConn()
		}
	}()

	ok := 0
	if len(reqs) == 1 {
		// No savepoint needed: the transaction is the call.
		r := reqs[0]
		if r.err = sqliteCtxErr(r.ctx); r.err == nil {
			r.err = s.applyAll(ctx, r.muts)
		}
		if r.err == nil {
			ok++
		} else if !sqliteLogical(r.err) {
			suspect = true
		}
	} else {
		for _, r := range reqs {
			if r.err = sqliteCtxErr(r.ctx); r.err != nil {
				continue // the caller is waiting but no longer wants it done
			}
			if err := s.exec(ctx, sqlSavepoint); err != nil {
				return sqliteErr("savepoint", err)
			}
			r.err = s.applyAll(ctx, r.muts)
			if r.err != nil {
				if !sqliteLogical(r.err) {
					suspect = true
				}
				if err := s.exec(ctx, sqlRollbackTo); err != nil {
					// SQLite rolls back the whole transaction on some
					// errors (SQLITE_FULL, SQLITE_IOERR): the savepoint is
					// gone and so is the work of the calls before.
					return sqliteErr("rollback to savepoint", err)
				}
			} else {
				ok++
			}
			if err := s.exec(ctx, sqlRelease); err != nil {
				return sqliteErr("release savepoint", err)
			}
		}
	}
	if ok == 0 {
		if err := s.exec(ctx, sqlRollback); err != nil {
			suspect = true
		}
		return nil
	}
	if err := s.exec(ctx, sqlCommit); err != nil {
		return sqliteErr("commit", err)
	}
	s.commits.Add(1)
	return nil
}

// sqliteCtxErr reports whether the caller of a taken call has gone away.
func sqliteCtxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("signaling: sqlite store: apply: %w", err)
	}
	return nil
}

// dropConn closes the writer's connection; the next batch opens a new one.
func (s *SQLiteStore) dropConn() {
	if s.conn == nil {
		return
	}
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmts = nil
	// Returning ErrBadConn from Raw makes database/sql close the connection
	// instead of returning it to the pool, where it could still hold a file
	// opened read-only or an open transaction.
	_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.conn.Close()
	s.conn = nil
}

// exec runs q, prepared once per connection, on the writer's connection.
func (s *SQLiteStore) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.execResult(ctx, q, args...)
	return err
}

func (s *SQLiteStore) execResult(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st := s.stmts[q]
	if st == nil {
		var err error
		if st, err = s.conn.PrepareContext(ctx, q); err != nil {
			return nil, err
		}
		s.stmts[q] = st
	}
	return st.ExecContext(ctx, args...)
}

func (s *SQLiteStore) applyAll(ctx context.Context, muts []Mutation) error {
	for _, m := range muts {
		if err := s.apply(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one mutation inside the writer's transaction.
func (s *SQLiteStore) apply(ctx context.Context, m Mutation) error {
	switch m := m.(type) {
	case PutInvitation:
		inv := m.Invitation
		op := fmt.Sprintf("put invitation %q", inv.ID)
		created, err := sqlitedb.Time(inv.CreatedAt)
		if err != nil {
			return sqliteErr(op, err)
		}
		deadline, err := sqlitedb.Time(inv.Deadline)
		if err != nil {
			return sqliteErr(op, err)
		}
		if err := s.exec(ctx, sqlPutInvitation, inv.ID, inv.Inviter, inv.GroupID, inv.Data, created, deadline); err != nil {
			return sqliteErr(op, err)
		}
		for i, e := range inv.Invitees {
			if err := s.putInvitee(ctx, inv.ID, i, e); err != nil {
				return sqliteErr(op, err)
			}
		}
	case SetInviteeState:
		op := fmt.Sprintf("set state of invitee %q of invitation %q", m.UserID, m.InviteID)
		if _, err := ParseInviteeState(m.State.String()); err != nil {
			return sqliteErr(op, sqlitedb.Invalid("invalid state %v", m.State))
		}
		at, err := sqlitedb.Time(m.At)
		if err != nil {
			return sqliteErr(op, err)
		}
		if err := s.exec(ctx, sqlSetInviteeState, m.State.String(), at, m.InviteID, m.UserID); err != nil {
			return sqliteErr(op, err)
		}
	case SetInvitationData:
		if err := s.exec(ctx, sqlSetInvitationData, m.Data, m.InviteID); err != nil {
			return sqliteErr(fmt.Sprintf("set data of invitation %q", m.InviteID), err)
		}
	case DeleteInvitation:
		if err := s.exec(ctx, sqlDeleteInvitation, m.InviteID); err != nil {
			return sqliteErr(fmt.Sprintf("delete invitation %q", m.InviteID), err)
		}
	case PutGroup:
		g := m.Group
		op := fmt.Sprintf("put group %q", g.ID)
		created, err := sqlitedb.Time(g.CreatedAt)
		if err != nil {
			return sqliteErr(op, err)
		}
		res, err := s.execResult(ctx, sqlPutGroup, g.ID, g.Name, g.Owner, string(g.JoinOption), created)
		if err != nil {
			return sqliteErr(op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return sqliteErr(op, err)
		} else if n == 0 {
			return sqliteErr(op, protocol.ErrGroupExists)
		}
		if err := s.addMembers(ctx, g.ID, g.Members); err != nil {
			return sqliteErr(op, err)
		}
	case AddGroupMembers:
		if err := s.addMembers(ctx, m.GroupID, m.Members); err != nil {
			return sqliteErr(fmt.Sprintf("add members to group %q", m.GroupID), err)
		}
	case RemoveGroupMembers:
		for _, u := range m.UserIDs {
			if err := s.exec(ctx, sqlRemoveMember, m.GroupID, u); err != nil {
				return sqliteErr(fmt.Sprintf("remove member %q from group %q", u, m.GroupID), err)
			}
		}
	case DeleteGroup:
		if err := s.exec(ctx, sqlDeleteGroup, m.GroupID); err != nil {
			return sqliteErr(fmt.Sprintf("delete group %q", m.GroupID), err)
		}
	case AppendOutbox:
		e := m.Entry
		op := fmt.Sprintf("append outbox entry %d for %q", e.Seq, e.UserID)
		created, err := sqlitedb.Time(e.CreatedAt)
		if err != nil {
			return sqliteErr(op, err)
		}
		expires, err := sqlitedb.Time(e.ExpiresAt)
		if err != nil {
			return sqliteErr(op, err)
		}
		var data any // NULL for nil Data
		if e.Data != nil {
			data = []byte(e.Data)
		}
		if err := s.exec(ctx, sqlAppendOutbox, e.Seq, e.UserID, e.Sender, e.Event, data, created, expires); err != nil {
			return sqliteErr(op, err)
		}
	case DeleteOutbox:
		if err := s.exec(ctx, sqlDeleteOutbox, m.UserID, m.UpTo); err != nil {
			return sqliteErr(fmt.Sprintf("delete outbox of %q up to %d", m.UserID, m.UpTo), err)
		}
	case DeleteOutboxEntry:
		if err := s.exec(ctx, sqlDeleteOutboxEntry, m.UserID, m.Seq); err != nil {
			return sqliteErr(fmt.Sprintf("delete outbox entry %d of %q", m.Seq, m.UserID), err)
		}
	case PutUser:
		if err := s.exec(ctx, sqlPutUser, m.UserID); err != nil {
			return sqliteErr(fmt.Sprintf("put user %q", m.UserID), err)
		}
	case PurgeOutbox:
		// Entries without an expiry (zero ExpiresAt, NULL) never match.
		before, err := sqlitedb.Time(m.Before)
		if err != nil {
			return sqliteErr("purge outbox", err)
		}
		if err := s.exec(ctx, sqlPurgeOutbox, before); err != nil {
			return sqliteErr("purge outbox", err)
		}
	default:
		return sqliteErr("apply", sqlitedb.Invalid("unknown mutation %T", m))
	}
	return nil
}

func (s *SQLiteStore) putInvitee(ctx context.Context, inviteID string, pos int, e InviteeRecord) error {
	if _, err := ParseInviteeState(e.State.String()); err != nil {
		return sqlitedb.Invalid("invitee %q: invalid state %v", e.UserID, e.State)
	}
	at, err := sqlitedb.Time(e.UpdatedAt)
	if err != nil {
		return err
	}
	return s.exec(ctx, sqlPutInvitee, inviteID, e.UserID, pos, e.State.String(), at)
}

func (s *SQLiteStore) addMembers(ctx context.Context, groupID string, members []MemberRecord) error {
	for _, m := range members {
		at, err := sqlitedb.Time(m.JoinedAt)
		if err != nil {
			return err
		}
		if err := s.exec(ctx, sqlAddMember, groupID, m.UserID, string(m.Role), at, m.AddedBy); err != nil {
			return fmt.Errorf("member %q: %w", m.UserID, err)
		}
	}
	return nil
}

// Load implements Store. It reads in one transaction, so it sees the state
// after some commit, never half of one.
func (s *SQLiteStore) Load(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSQLiteClosed
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, sqliteErr("load", err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep
	snap := &Snapshot{}
	if err := loadInvitations(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load invitations", err)
	}
	if err := loadGroups(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load groups", err)
	}
	if err := loadUsers(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load users", err)
	}
	if err := loadOutboxIndex(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	return snap, nil
}

// LoadOutbox implements Store.
func (s *SQLiteStore) LoadOutbox(ctx context.Context, user string, afterSeq int64, limit int) ([]OutboxEntry, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSQLiteClosed
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, sender, event, data, created_at, expires_at FROM sig_outbox
		WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?`, user, afterSeq, limit)
	if err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		e := OutboxEntry{UserID: user}
		var data []byte
		var created, expires sql.NullInt64
		if err := rows.Scan(&e.Seq, &e.Sender, &e.Event, &data, &created, &expires); err != nil {
			return nil, sqliteErr("load outbox", err)
		}
		if data != nil {
			e.Data = data
		}
		e.CreatedAt, e.ExpiresAt = sqlitedb.TimeOf(created), sqlitedb.TimeOf(expires)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	return out, nil
}

func loadInvitations(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	index := make(map[string]int)
	err := sqliteRows(ctx, tx, `SELECT id, inviter, group_id, data, created_at, deadline
		FROM sig_invitations ORDER BY rowid`,
		func(rows *sql.Rows) error {
			var r InvitationRecord
			var created, deadline sql.NullInt64
			if err := rows.Scan(&r.ID, &r.Inviter, &r.GroupID, &r.Data, &created, &deadline); err != nil {
				return err
			}
			r.CreatedAt, r.Deadline = sqlitedb.TimeOf(created), sqlitedb.TimeOf(deadline)
			index[r.ID] = len(snap.Invitations)
			snap.Invitations = append(snap.Invitations, r)
			return nil
		})
	if err != nil {
		return err
	}
	return sqliteRows(ctx, tx, `SELECT invite_id, user_id, state, updated_at
		FROM sig_invitees ORDER BY invite_id, pos`,
		func(rows *sql.Rows) error {
			var id, state string
			var e InviteeRecord
			var at sql.NullInt64
			if err := rows.Scan(&id, &e.UserID, &state, &at); err != nil {
				return err
			}
			var err error
			if e.State, err = ParseInviteeState(state); err != nil {
				return fmt.Errorf("invitation %q, invitee %q: %w", id, e.UserID, err)
			}
			e.UpdatedAt = sqlitedb.TimeOf(at)
			i, ok := index[id]
			if !ok { // foreign keys make this impossible
				return fmt.Errorf("invitee %q of missing invitation %q", e.UserID, id)
			}
			snap.Invitations[i].Invitees = append(snap.Invitations[i].Invitees, e)
			return nil
		})
}

func loadGroups(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	index := make(map[string]int)
	err := sqliteRows(ctx, tx, `SELECT id, name, owner, join_option, created_at FROM sig_groups ORDER BY rowid`,
		func(rows *sql.Rows) error {
			var g GroupRecord
			var created sql.NullInt64
			if err := rows.Scan(&g.ID, &g.Name, &g.Owner, &g.JoinOption, &created); err != nil {
				return err
			}
			g.CreatedAt = sqlitedb.TimeOf(created)
			index[g.ID] = len(snap.Groups)
			snap.Groups = append(snap.Groups, g)
			return nil
		})
	if err != nil {
		return err
	}
	return sqliteRows(ctx, tx, `SELECT group_id, user_id, role, joined_at, added_by FROM sig_group_members
		ORDER BY group_id, role <> 'owner', joined_at, rowid`,
		func(rows *sql.Rows) error {
			var id string
			var m MemberRecord
			var at sql.NullInt64
			if err := rows.Scan(&id, &m.UserID, &m.Role, &at, &m.AddedBy); err != nil {
				return err
			}
			m.JoinedAt = sqlitedb.TimeOf(at)
			i, ok := index[id]
			if !ok {
				return fmt.Errorf("member %q of missing group %q", m.UserID, id)
			}
			snap.Groups[i].Members = append(snap.Groups[i].Members, m)
			return nil
		})
}

func loadUsers(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT user_id FROM sig_users`, func(rows *sql.Rows) error {
		var u string
		if err := rows.Scan(&u); err != nil {
			return err
		}
		snap.Users = append(snap.Users, u)
		return nil
	})
}

// loadOutboxIndex reads the outbox without its data.
func loadOutboxIndex(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT seq, user_id, sender, length(CAST(event AS BLOB)) + coalesce(length(data), 0), expires_at
		FROM sig_outbox ORDER BY seq`,
		func(rows *sql.Rows) error {
			var e OutboxInfo
			var expires sql.NullInt64
			if err := rows.Scan(&e.Seq, &e.UserID, &e.Sender, &e.Bytes, &expires); err != nil {
				return err
			}
			e.ExpiresAt = sqlitedb.TimeOf(expires)
			snap.Outbox = append(snap.Outbox, e)
			return nil
		})
}

// sqliteRows calls f for each row of q.
func sqliteRows(ctx context.Context, tx *sql.Tx, q string, f func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
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
