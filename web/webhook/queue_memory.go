package webhook

import (
	"context"
	"slices"
	"sync"
	"time"
)

// MemoryQueue is a Queue in memory, for tests: it does not survive a
// restart.
type MemoryQueue struct {
	mu  sync.Mutex // guards all below
	seq int64
	ds  []Delivery // by Seq
}

var _ Queue = (*MemoryQueue)(nil)

// NewMemoryQueue returns an empty queue.
func NewMemoryQueue() *MemoryQueue { return &MemoryQueue{} }

func clone(d Delivery) Delivery {
	d.Body = slices.Clone(d.Body)
	return d
}

// Add implements Queue.
func (q *MemoryQueue) Add(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		q.seq++
		d = clone(d)
		d.Seq = q.seq
		d.CreatedAt, d.NextAt = d.CreatedAt.Truncate(time.Millisecond), d.NextAt.Truncate(time.Millisecond)
		q.ds = append(q.ds, d)
	}
	return nil
}

// Claim implements Queue.
func (q *MemoryQueue) Claim(ctx context.Context, now, leaseUntil time.Time, n int) ([]Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	type urlKey struct{ url, key string }
	blocked := map[urlKey]bool{}
	var out []Delivery
	for i := range q.ds {
		d := &q.ds[i]
		k := urlKey{d.URL, d.Key}
		first := d.Key == "" || !blocked[k]
		blocked[k] = true
		if len(out) < n && first && !d.NextAt.After(now) {
			d.NextAt = leaseUntil.Truncate(time.Millisecond)
			out = append(out, clone(*d))
		}
	}
	return out, nil
}

func (q *MemoryQueue) find(seq int64) int {
	i, ok := slices.BinarySearchFunc(q.ds, seq, func(d Delivery, s int64) int { return int(d.Seq - s) })
	if !ok {
		return -1
	}
	return i
}

// Retry implements Queue.
func (q *MemoryQueue) Retry(ctx context.Context, seq int64, attempts int, next time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := q.find(seq); i >= 0 {
		q.ds[i].Attempts, q.ds[i].NextAt = attempts, next.Truncate(time.Millisecond)
	}
	return nil
}

// Remove implements Queue.
func (q *MemoryQueue) Remove(ctx context.Context, seq int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := q.find(seq); i >= 0 {
		q.ds = slices.Delete(q.ds, i, i+1)
	}
	return nil
}

// Len implements Queue.
func (q *MemoryQueue) Len(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ds), nil
}

// NextAfter implements Queue.
func (q *MemoryQueue) NextAfter(ctx context.Context, t time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for _, d := range q.ds {
		if d.NextAt.After(t) && (next.IsZero() || d.NextAt.Before(next)) {
			next = d.NextAt
		}
	}
	return next, nil
}
