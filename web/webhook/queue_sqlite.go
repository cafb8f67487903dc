package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// sqliteComponent names the queue's schema in schema_migrations.
const sqliteComponent = "webhooks"

// sqliteSteps is the queue's schema (see sqlitedb.Migrate). Times are unix
// milliseconds.
var sqliteSteps = []string{
	`CREATE TABLE webhook_deliveries (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		event_id   TEXT    NOT NULL,
		url        TEXT    NOT NULL,
		okey       TEXT    NOT NULL,
		body       BLOB    NOT NULL,
		created_at INTEGER NOT NULL,
		attempts   INTEGER NOT NULL,
		next_at    INTEGER NOT NULL
	) STRICT;
	CREATE INDEX webhook_deliveries_next ON webhook_deliveries (next_at);
	CREATE INDEX webhook_deliveries_order ON webhook_deliveries (url, okey, seq);`,
}

// SQLiteQueue is the Queue kept in a table of Switchboard's SQLite
// database (the signaling store's: signaling.SQLiteStore.DB). It shares the
// pool; each call is one short statement or transaction.
type SQLiteQueue struct {
	db *sql.DB
}

var _ Queue = (*SQLiteQueue)(nil)

// NewSQLiteQueue migrates the queue's table in db and returns the queue.
// db stays the caller's to close.
func NewSQLiteQueue(ctx context.Context, db *sql.DB) (*SQLiteQueue, error) {
	if err := sqlitedb.Migrate(ctx, db, sqliteComponent, sqliteSteps); err != nil {
		return nil, err
	}
	return &SQLiteQueue{db: db}, nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(n int64) time.Time { return time.UnixMilli(n).UTC() }

// Add implements Queue.
func (q *SQLiteQueue) Add(ctx context.Context, ds []Delivery) (err error) {
	if len(ds) == 0 {
		return ctx.Err()
	}
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("webhook queue: add: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	for _, d := range ds {
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (event_id, url, okey, body, created_at, attempts, next_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, d.EventID, d.URL, d.Key, d.Body, ms(d.CreatedAt), d.Attempts, ms(d.NextAt))
		if err != nil {
			return fmt.Errorf("webhook queue: add: %w", err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("webhook queue: add: %w", err)
	}
	return nil
}

// Claim implements Queue.
func (q *SQLiteQueue) Claim(ctx context.Context, now, leaseUntil time.Time, n int) (_ []Delivery, err error) {
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("webhook queue: claim: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	rows, err := tx.QueryContext(ctx, `SELECT seq, event_id, url, okey, body, created_at, attempts FROM webhook_deliveries d
		WHERE next_at <= ? AND (okey = '' OR NOT EXISTS (
			SELECT 1 FROM webhook_deliveries e WHERE e.url = d.url AND e.okey = d.okey AND e.seq < d.seq))
		ORDER BY seq LIMIT ?`, ms(now), n)
	if err != nil {
		return nil, fmt.Errorf("webhook queue: claim: %w", err)
	}
	var out []Delivery
	for rows.Next() {
		var d Delivery
		var created int64
		if err = rows.Scan(&d.Seq, &d.EventID, &d.URL, &d.Key, &d.Body, &created, &d.Attempts); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("webhook queue: claim: %w", err)
		}
		d.CreatedAt, d.NextAt = fromMS(created), fromMS(ms(leaseUntil))
		out = append(out, d)
	}
	if err = rows.Close(); err != nil {
		return nil, fmt.Errorf("webhook queue: claim: %w", err)
	}
	if len(out) > 0 {
		seqs := make([]string, len(out))
		for i, d := range out {
			seqs[i] = fmt.Sprint(d.Seq)
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET next_at = ? WHERE seq IN (`+strings.Join(seqs, ",")+`)`, ms(leaseUntil))
		if err != nil {
			return nil, fmt.Errorf("webhook queue: claim: %w", err)
		}
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("webhook queue: claim: %w", err)
	}
	return out, nil
}

// Retry implements Queue.
func (q *SQLiteQueue) Retry(ctx context.Context, seq int64, attempts int, next time.Time) error {
	if _, err := q.db.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = ?, next_at = ? WHERE seq = ?`,
		attempts, ms(next), seq); err != nil {
		return fmt.Errorf("webhook queue: retry: %w", err)
	}
	return nil
}

// Remove implements Queue.
func (q *SQLiteQueue) Remove(ctx context.Context, seq int64) error {
	if _, err := q.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE seq = ?`, seq); err != nil {
		return fmt.Errorf("webhook queue: remove: %w", err)
	}
	return nil
}

// Len implements Queue.
func (q *SQLiteQueue) Len(ctx context.Context) (int, error) {
	var n int
	if err := q.db.QueryRowContext(ctx, `SELECT count(*) FROM webhook_deliveries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("webhook queue: len: %w", err)
	}
	return n, nil
}

// NextAfter implements Queue.
func (q *SQLiteQueue) NextAfter(ctx context.Context, t time.Time) (time.Time, error) {
	var next sql.NullInt64
	if err := q.db.QueryRowContext(ctx, `SELECT min(next_at) FROM webhook_deliveries WHERE next_at > ?`, ms(t)).Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("webhook queue: next: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return fromMS(next.Int64), nil
}
