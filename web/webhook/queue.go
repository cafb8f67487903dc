package webhook

import (
	"context"
	"time"
)

// Delivery is one event to send to one URL.
type Delivery struct {
	Seq     int64 // assigned by Queue.Add, increasing in the order added
	EventID string
	URL     string
	// Key orders deliveries: one waits while an earlier one (lower Seq)
	// with the same URL and a non-empty Key is queued.
	Key       string
	Body      []byte
	CreatedAt time.Time // when the event happened: webhooks.max_age counts from it
	Attempts  int       // failed attempts so far
	NextAt    time.Time // the next attempt is due at or after it
}

// Queue holds the deliveries not yet made, durably: what Add stored
// survives a restart. Implementations are safe for concurrent use and pass
// the contract test (queue_test.go); several servers may share one queue
// (Claim leases what it returns). The SQLite implementation is SQLiteQueue,
// the in-memory one MemoryQueue; others (Redis) go in their own queue_*.go.
//
// Times come back within a millisecond of what was stored.
type Queue interface {
	// Add stores ds atomically, giving each its Seq (ds is not changed).
	Add(ctx context.Context, ds []Delivery) error
	// Claim returns, by Seq, at most n deliveries due at now (NextAt not
	// after now) that no earlier delivery of the same URL and Key precedes,
	// and sets their NextAt to leaseUntil, so that no one claims them again
	// until then (if the claimant dies, they are due again at leaseUntil).
	Claim(ctx context.Context, now, leaseUntil time.Time, n int) ([]Delivery, error)
	// Retry records a claimed delivery's failed attempts and next attempt.
	// A missing delivery is not an error.
	Retry(ctx context.Context, seq int64, attempts int, next time.Time) error
	// Remove deletes a delivery (made, or given up). A missing delivery is
	// not an error.
	Remove(ctx context.Context, seq int64) error
	// Len is the number of deliveries queued.
	Len(ctx context.Context) (int, error)
	// NextAfter is the earliest NextAt later than t, or the zero time if
	// none is.
	NextAfter(ctx context.Context, t time.Time) (time.Time, error)
}
