package calls

import (
	"context"
	"log/slog"
	"time"

	"github.com/switchboard-rtc/switchboard/media/opsqueue"
)

// saveQueue writes call records and heartbeats in order on one goroutine
// (an opsqueue), so that no lock is held across the store's I/O and a slow
// disk never delays a call's signaling. What it adds to the queue: each
// write has a timeout and logs its failure, and flush waits until
// everything queued so far is written.
type saveQueue struct {
	rec RecordStore
	log *slog.Logger
	q   *opsqueue.Queue
}

// saveTimeout bounds one write of the store.
const saveTimeout = 10 * time.Second

func newSaveQueue(rec RecordStore, log *slog.Logger) *saveQueue {
	q := &saveQueue{rec: rec, log: log, q: opsqueue.New()}
	q.q.Start()
	return q
}

// save queues r; after close it is dropped.
func (q *saveQueue) save(r CallRecord) {
	q.q.Push(func() { q.write(func(ctx context.Context) error { return q.rec.SaveCall(ctx, r) }) })
}

// heartbeat queues a heartbeat; after close it is dropped.
func (q *saveQueue) heartbeat(at time.Time) {
	q.q.Push(func() { q.write(func(ctx context.Context) error { return q.rec.Heartbeat(ctx, at) }) })
}

func (q *saveQueue) write(f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		q.log.Error("call record not saved", "err", err)
	}
}

// flush waits until everything queued before it is written (once the
// queue is closing: until everything is).
func (q *saveQueue) flush() {
	written := make(chan struct{})
	if q.q.Push(func() { close(written) }) {
		<-written
		return
	}
	<-q.q.Done()
}

// close writes what is queued and ends the goroutine.
func (q *saveQueue) close() { q.q.Close() }
