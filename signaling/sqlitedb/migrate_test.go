package sqlitedb

import (
	"testing"
)

func TestMigrate(t *testing.T) {
	db, ctx := openTestDB(t), t.Context()
	steps := []string{
		`CREATE TABLE calls_a (id TEXT PRIMARY KEY)`,
		`CREATE TABLE calls_b (id TEXT PRIMARY KEY); INSERT INTO calls_b VALUES ('seed')`,
	}
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	for range 2 { // the second run finds everything applied
		if err := Migrate(ctx, db, "calls", steps); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	if n := count(`SELECT count(*) FROM calls_b`); n != 1 {
		t.Errorf("step 2 ran %d times, want once", n)
	}
	if n := count(`SELECT max(version) FROM schema_migrations WHERE component = 'calls'`); n != 2 {
		t.Errorf("calls is at version %d, want 2", n)
	}
	if err := Migrate(ctx, db, "signaling", []string{`CREATE TABLE sig_a (id TEXT)`}); err != nil {
		t.Fatalf("Migrate of another component: %v", err)
	}
	if n := count(`SELECT max(version) FROM schema_migrations WHERE component = 'signaling'`); n != 1 {
		t.Errorf("signaling is at version %d, want 1: components are counted apart", n)
	}

	// A failing step is rolled back with its record; the ones before stay.
	bad := append(steps, `CREATE TABLE calls_c (id TEXT)`, `CREATE TABLE calls_d (id TEXT); SELECT * FROM no_such_table`)
	if err := Migrate(ctx, db, "calls", bad); err == nil {
		t.Fatal("Migrate with a failing step succeeded")
	}
	if n := count(`SELECT count(*) FROM sqlite_schema WHERE name IN ('calls_c', 'calls_d')`); n != 1 {
		t.Errorf("%d of calls_c, calls_d exist, want calls_c only", n)
	}
	if n := count(`SELECT max(version) FROM schema_migrations WHERE component = 'calls'`); n != 3 {
		t.Errorf("calls is at version %d after a failed step 4, want 3", n)
	}

	// An older binary refuses a newer schema.
	if err := Migrate(ctx, db, "calls", steps); err == nil {
		t.Error("Migrate with fewer steps than applied succeeded, want an error")
	}
	if err := Migrate(ctx, db, "", steps); err == nil {
		t.Error("Migrate with no component name succeeded, want an error")
	}
}
