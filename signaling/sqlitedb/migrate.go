package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// migrationsTable records which schema steps each component has applied.
// Components share one database (the signaling store, the call records),
// so a version is only meaningful together with its component name.
const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	component  TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	applied_at INTEGER NOT NULL, -- unix milliseconds
	PRIMARY KEY (component, version)
)`

// Migrate brings component's tables in db up to date. steps[i] is the SQL of
// schema version i+1 (it may hold several statements); once a step has been
// released it must never change: add a new step instead.
//
// Each missing step runs in its own transaction together with the row that
// records it in schema_migrations, so a step is applied exactly once even if
// the process dies half-way or two processes migrate at the same time (DSN
// makes transactions take the write lock at BEGIN, so the second process
// waits and then sees the step done). A failing step is
// rolled back and reported; the steps before it stay applied.
//
// Migrate refuses to run when the database holds a version of component
// newer than len(steps): a binary older than its data must not write to it.
func Migrate(ctx context.Context, db *sql.DB, component string, steps []string) error {
	if component == "" {
		return errors.New("sqlitedb: migrate: empty component name")
	}
	if _, err := db.ExecContext(ctx, migrationsTable); err != nil {
		return fmt.Errorf("sqlitedb: migrate %s: create schema_migrations: %w", component, err)
	}
	applied, err := appliedVersions(ctx, db, component)
	if err != nil {
		return err
	}
	for v := range applied {
		if v < 1 || v > len(steps) {
			return fmt.Errorf("sqlitedb: migrate %s: database has schema version %d, this binary knows versions 1-%d",
				component, v, len(steps))
		}
	}
	for i, step := range steps {
		if v := i + 1; !applied[v] {
			if err := migrateStep(ctx, db, component, v, step); err != nil {
				return err
			}
		}
	}
	return nil
}

func appliedVersions(ctx context.Context, db *sql.DB, component string) (map[int]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations WHERE component = ?`, component)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: migrate %s: read versions: %w", component, err)
	}
	defer rows.Close()
	applied := make(map[int]bool)
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("sqlitedb: migrate %s: read versions: %w", component, err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitedb: migrate %s: read versions: %w", component, err)
	}
	return applied, nil
}

// migrateStep applies one step and records it, in one transaction. It checks
// again inside the transaction, because another process may have applied the
// step since appliedVersions looked.
func migrateStep(ctx context.Context, db *sql.DB, component string, version int, step string) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitedb: migrate %s to version %d: begin: %w", component, version, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error being returned says more than a failed rollback
		}
	}()
	var done bool
	err = tx.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?)`,
		component, version).Scan(&done)
	if err != nil {
		return fmt.Errorf("sqlitedb: migrate %s to version %d: %w", component, version, err)
	}
	if done {
		return tx.Commit()
	}
	if _, err = tx.ExecContext(ctx, step); err != nil {
		return fmt.Errorf("sqlitedb: migrate %s to version %d: %w", component, version, err)
	}
	_, err = tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`,
		component, version, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("sqlitedb: migrate %s to version %d: record: %w", component, version, err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("sqlitedb: migrate %s to version %d: commit: %w", component, version, err)
	}
	return nil
}
