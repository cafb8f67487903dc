package calls

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// recordsComponent names the call records' schema in schema_migrations.
const recordsComponent = "calls"

// recordsSteps is the schema of the call records, one element per version
// (see sqlitedb.Migrate): never change a released step, add one.
//
// Times are INTEGER unix nanoseconds, NULL for the zero time (created_at is
// never zero). Participants keep their order in seq, numbered from 0.
// History reads the user's call IDs from call_participants_user, which
// covers the missed filter's results too, and calls_caller for the caller,
// then sorts that user's calls; calls_open holds the running calls only.
var recordsSteps = []string{
	`CREATE TABLE calls (
		call_id     TEXT    PRIMARY KEY,
		caller      TEXT    NOT NULL,
		group_id    TEXT    NOT NULL,
		room_id     TEXT    NOT NULL,
		media_type  TEXT    NOT NULL,
		created_at  INTEGER NOT NULL,
		began_at    INTEGER,
		ended_at    INTEGER,
		duration_ns INTEGER NOT NULL,
		result      TEXT    NOT NULL,
		end_reason  TEXT    NOT NULL,
		ended_by    TEXT    NOT NULL
	) STRICT;
	CREATE INDEX calls_history ON calls (created_at DESC, call_id DESC);
	CREATE INDEX calls_caller ON calls (caller, created_at DESC, call_id DESC);
	CREATE INDEX calls_open ON calls (created_at, call_id) WHERE ended_at IS NULL;
	CREATE TABLE call_participants (
		call_id     TEXT    NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
		seq         INTEGER NOT NULL,
		user_id     TEXT    NOT NULL,
		role        TEXT    NOT NULL,
		invited_at  INTEGER,
		answered_at INTEGER,
		answer      TEXT    NOT NULL,
		joined_at   INTEGER,
		left_at     INTEGER,
		result      TEXT    NOT NULL,
		PRIMARY KEY (call_id, seq)
	) STRICT, WITHOUT ROWID;
	CREATE INDEX call_participants_user ON call_participants (user_id, result, call_id);
	CREATE TABLE call_heartbeat (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		at INTEGER NOT NULL
	) STRICT;`,
}

const (
	sqlUpsertCall = `INSERT INTO calls (call_id, caller, group_id, room_id, media_type,
			created_at, began_at, ended_at, duration_ns, result, end_reason, ended_by)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (call_id) DO UPDATE SET
			caller = excluded.caller, group_id = excluded.group_id, room_id = excluded.room_id,
			media_type = excluded.media_type, created_at = excluded.created_at,
			began_at = excluded.began_at, ended_at = excluded.ended_at,
			duration_ns = excluded.duration_ns, result = excluded.result,
			end_reason = excluded.end_reason, ended_by = excluded.ended_by`
	sqlDeleteParticipants = `DELETE FROM call_participants WHERE call_id = ?`
	// sqlInsertParticipants is completed with one participantValues per
	// participant, at most participantsPerInsert of them.
	sqlInsertParticipants = `INSERT INTO call_participants (call_id, seq, user_id, role,
			invited_at, answered_at, answer, joined_at, left_at, result) VALUES `
	participantValues     = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	participantColumns    = 10
	participantsPerInsert = 50

	// recordColumns are the columns scanRecords reads: the call's, then its
	// participant's (NULL for a call without participants).
	recordColumns = `c.call_id, c.caller, c.group_id, c.room_id, c.media_type, c.created_at,
		c.began_at, c.ended_at, c.duration_ns, c.result, c.end_reason, c.ended_by,
		p.seq, p.user_id, p.role, p.invited_at, p.answered_at, p.answer, p.joined_at, p.left_at, p.result`
	sqlOpenCalls = `SELECT ` + recordColumns + `
		FROM calls c LEFT JOIN call_participants p ON p.call_id = c.call_id
		WHERE c.ended_at IS NULL
		ORDER BY c.created_at, c.call_id, p.seq`

	// The user's calls under each filter; the one parameter is the user,
	// once for each ?. A user takes part as the caller or through a
	// participant row.
	sqlHistoryAll = `c.call_id IN (
		SELECT call_id FROM call_participants WHERE user_id = ?
		UNION SELECT call_id FROM calls WHERE caller = ?)`
	sqlHistoryOutgoing = `c.caller = ?`
	sqlHistoryIncoming = `c.caller <> ? AND c.call_id IN (
		SELECT call_id FROM call_participants WHERE user_id = ?)`
	// sqlHistoryMissed lists the results of missedResults.
	sqlHistoryMissed = `c.caller <> ? AND c.call_id IN (
		SELECT call_id FROM call_participants
		WHERE user_id = ? AND result IN ('missed', 'busy', 'no_answer'))`

	sqlHeartbeat = `INSERT INTO call_heartbeat (id, at) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET at = excluded.at`
	sqlLastHeartbeat = `SELECT at FROM call_heartbeat WHERE id = 1`
)

// SQLiteRecords is the RecordStore kept in the signaling store's SQLite
// database (signaling.SQLiteStore.DB()), in the tables of the "calls"
// component.
//
// It writes through the pool it was given: each SaveCall is one transaction
// that takes SQLite's write lock at BEGIN (sqlitedb.DSN, which
// signaling.OpenSQLite uses, sets _txlock=immediate) and waits up to the DSN's busy timeout while the
// signaling store's writer holds it; one that still finds it held is run
// again (retryBusy). Reads see the last commit and wait for nothing.
//
// Times are stored as unix nanoseconds and come back in UTC, equal
// (time.Equal) to what was stored; the zero time comes back as the zero time.
// A failure of the database wraps protocol.ErrStoreUnavailable; a record
// that cannot be stored wraps ErrInvalidRecord.
type SQLiteRecords struct {
	db *sql.DB
}

var _ RecordStore = (*SQLiteRecords)(nil)

// NewSQLiteRecords brings the call records' tables in db up to date and
// returns the store. db should come from signaling.SQLiteStore.DB(), whose
// DSN sets the pragmas the store relies on; it stays owned by the caller.
func NewSQLiteRecords(ctx context.Context, db *sql.DB) (*SQLiteRecords, error) {
	if db == nil {
		return nil, errors.New("calls: sqlite records: nil database")
	}
	if err := sqlitedb.Migrate(ctx, db, recordsComponent, recordsSteps); err != nil {
		return nil, fmt.Errorf("calls: sqlite records: %w", err)
	}
	return &SQLiteRecords{db: db}, nil
}

// SaveCall implements RecordStore: the call row is inserted or replaced and
// its participant rows replaced, in one transaction.
func (s *SQLiteRecords) SaveCall(ctx context.Context, rec CallRecord) error {
	err := checkRecord(rec)
	if err == nil {
		err = retryBusy(ctx, func() error { return s.saveCall(ctx, rec) })
	}
	if err != nil {
		return fmt.Errorf("calls: sqlite records: save call %q: %w", rec.CallID, err)
	}
	return nil
}

// recordsBusyRetryFor is how long a write that found the database locked
// past the busy timeout is run again from the start (while its ctx lasts).
const recordsBusyRetryFor = 2 * sqlitedb.BusyTimeout

// retryBusy runs write, one whole write transaction or statement, again
// while it fails with SQLITE_BUSY, for up to recordsBusyRetryFor and while
// ctx lasts.
//
// SQLite's busy handler is not fair: a connection waiting for the write
// lock polls it, less and less often (every 100 ms after the first 228
// ms), and one that asks right after a COMMIT takes it first. Under a
// steady flow of writes (the signaling store's writer at full load, or
// concurrent SaveCall calls), each waiting up to the busy timeout while
// another commits back to back, a wait could end without ever finding the
// lock free, and the record would be lost. Each run starts the polling
// over, quick at first. BEGIN IMMEDIATE is where SQLITE_BUSY comes from
// (once it holds the write lock, nothing in a transaction waits for
// another connection), so nothing was written and running the write again
// is safe; SaveCall and Heartbeat are idempotent anyway.
func retryBusy(ctx context.Context, write func() error) error {
	start := time.Now()
	for {
		err := write()
		if err == nil || !sqlitedb.Busy(err) || ctx.Err() != nil || time.Since(start) >= recordsBusyRetryFor {
			return err
		}
		// A busy error that came without the busy handler's wait (SQLite
		// returns some at once) is not retried in a tight loop.
		t := time.NewTimer(recordsBusyPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// recordsBusyPause separates two runs of a write that found the database
// locked.
const recordsBusyPause = 10 * time.Millisecond

// saveCall runs SaveCall's transaction once.
func (s *SQLiteRecords) saveCall(ctx context.Context, rec CallRecord) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr("begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error being returned says more than a failed rollback
		}
	}()
	_, err = tx.ExecContext(ctx, sqlUpsertCall,
		rec.CallID, rec.Caller, rec.GroupID, rec.RoomID, rec.MediaType,
		rec.CreatedAt.UnixNano(), nullTime(rec.BeganAt), nullTime(rec.EndedAt),
		int64(rec.Duration), string(rec.Result), string(rec.EndReason), rec.EndedBy)
	if err != nil {
		return dbErr("put call", err)
	}
	if _, err = tx.ExecContext(ctx, sqlDeleteParticipants, rec.CallID); err != nil {
		return dbErr("delete participants", err)
	}
	if err = insertParticipants(ctx, tx, rec.CallID, rec.Participants); err != nil {
		return dbErr("put participants", err)
	}
	if err = tx.Commit(); err != nil {
		return dbErr("commit", err)
	}
	return nil
}

// insertParticipants inserts ps, numbered from 0, a batch of rows per
// statement.
func insertParticipants(ctx context.Context, tx *sql.Tx, callID string, ps []ParticipantRecord) error {
	var q strings.Builder
	args := make([]any, 0, min(len(ps), participantsPerInsert)*participantColumns)
	for start := 0; start < len(ps); start += participantsPerInsert {
		batch := ps[start:min(start+participantsPerInsert, len(ps))]
		q.Reset()
		q.WriteString(sqlInsertParticipants)
		args = args[:0]
		for i, p := range batch {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString(participantValues)
			args = append(args, callID, start+i, p.UserID, string(p.Role),
				nullTime(p.InvitedAt), nullTime(p.AnsweredAt), string(p.Answer),
				nullTime(p.JoinedAt), nullTime(p.LeftAt), string(p.Result))
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// History implements RecordStore. It reads with one statement, so a page
// never holds half of a concurrent SaveCall.
func (s *SQLiteRecords) History(ctx context.Context, user string, filter HistoryFilter, limit int, cursor string) ([]CallRecord, string, error) {
	fail := func(err error) ([]CallRecord, string, error) {
		return nil, "", fmt.Errorf("calls: sqlite records: history of %q: %w", user, err)
	}
	filter, err := checkFilter(filter)
	if err != nil {
		return fail(err)
	}
	after, err := decodeCursor(cursor)
	if err != nil {
		return fail(err)
	}
	limit = historyLimit(limit)

	var q strings.Builder
	q.WriteString(`WITH page AS (SELECT * FROM calls c WHERE `)
	args := make([]any, 0, 5)
	switch filter {
	case FilterOutgoing:
		q.WriteString(sqlHistoryOutgoing)
		args = append(args, user)
	case FilterIncoming:
		q.WriteString(sqlHistoryIncoming)
		args = append(args, user, user)
	case FilterMissed:
		q.WriteString(sqlHistoryMissed)
		args = append(args, user, user)
	default:
		q.WriteString(sqlHistoryAll)
		args = append(args, user, user)
	}
	if after != nil {
		q.WriteString(` AND (c.created_at, c.call_id) < (?, ?)`)
		args = append(args, after.createdAt, after.callID)
	}
	// One call more than asked for tells whether there is a next page.
	q.WriteString(` ORDER BY c.created_at DESC, c.call_id DESC LIMIT ?)
		SELECT ` + recordColumns + `
		FROM page c LEFT JOIN call_participants p ON p.call_id = c.call_id
		ORDER BY c.created_at DESC, c.call_id DESC, p.seq`)
	args = append(args, limit+1)

	recs, err := s.query(ctx, q.String(), args...)
	if err != nil {
		return fail(dbErr("query", err))
	}
	if len(recs) <= limit {
		return recs, "", nil
	}
	recs = recs[:limit:limit]
	return recs, positionOf(recs[limit-1]).cursor(), nil
}

// OpenCalls implements RecordStore. The records come oldest CreatedAt first
// (ties by CallID ascending).
func (s *SQLiteRecords) OpenCalls(ctx context.Context) ([]CallRecord, error) {
	recs, err := s.query(ctx, sqlOpenCalls)
	if err != nil {
		return nil, fmt.Errorf("calls: sqlite records: open calls: %w", dbErr("query", err))
	}
	return recs, nil
}

// query runs q, which selects recordColumns ordered by call and then seq,
// and gathers the rows into records.
func (s *SQLiteRecords) query(ctx context.Context, q string, args ...any) ([]CallRecord, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var recs []CallRecord
	for rows.Next() {
		var (
			c                               CallRecord
			created, duration               int64
			began, ended                    sql.NullInt64
			seq                             sql.NullInt64
			user, role, answer, result      sql.NullString
			invited, answered, joined, left sql.NullInt64
		)
		err := rows.Scan(&c.CallID, &c.Caller, &c.GroupID, &c.RoomID, &c.MediaType, &created,
			&began, &ended, &duration, &c.Result, &c.EndReason, &c.EndedBy,
			&seq, &user, &role, &invited, &answered, &answer, &joined, &left, &result)
		if err != nil {
			return nil, err
		}
		if n := len(recs); n == 0 || recs[n-1].CallID != c.CallID {
			c.CreatedAt = time.Unix(0, created).UTC()
			c.BeganAt, c.EndedAt = sqlitedb.TimeOf(began), sqlitedb.TimeOf(ended)
			c.Duration = time.Duration(duration)
			recs = append(recs, c)
		}
		if !seq.Valid { // a call without participants
			continue
		}
		r := &recs[len(recs)-1]
		r.Participants = append(r.Participants, ParticipantRecord{
			UserID:     user.String,
			Role:       Role(role.String),
			InvitedAt:  sqlitedb.TimeOf(invited),
			AnsweredAt: sqlitedb.TimeOf(answered),
			Answer:     Answer(answer.String),
			JoinedAt:   sqlitedb.TimeOf(joined),
			LeftAt:     sqlitedb.TimeOf(left),
			Result:     Result(result.String),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}

// Heartbeat implements RecordStore. The last call wins, even with an
// earlier time (the clock may have been set back).
func (s *SQLiteRecords) Heartbeat(ctx context.Context, at time.Time) error {
	if err := checkHeartbeat(at); err != nil {
		return fmt.Errorf("calls: sqlite records: heartbeat: %w", err)
	}
	err := retryBusy(ctx, func() error {
		_, err := s.db.ExecContext(ctx, sqlHeartbeat, at.UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("calls: sqlite records: heartbeat: %w", dbErr("put", err))
	}
	return nil
}

// LastHeartbeat implements RecordStore.
func (s *SQLiteRecords) LastHeartbeat(ctx context.Context) (time.Time, error) {
	var at int64
	err := s.db.QueryRowContext(ctx, sqlLastHeartbeat).Scan(&at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("calls: sqlite records: last heartbeat: %w", dbErr("query", err))
	}
	return time.Unix(0, at).UTC(), nil
}

// nullTime encodes t as unix nanoseconds, or NULL for the zero time. t has
// passed checkRecord, so it is storable.
func nullTime(t time.Time) any {
	v, _ := sqlitedb.Time(t)
	return v
}

// dbErr adds what failed to err; a failure of the database, as opposed to
// the caller's ctx ending, also wraps protocol.ErrStoreUnavailable.
func dbErr(op string, err error) error {
	if sqlitedb.Canceled(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, protocol.ErrStoreUnavailable, err)
}
