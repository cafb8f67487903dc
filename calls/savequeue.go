package calls

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// saveQueue writes call records and heartbeats in order on one goroutine,
// so that no lock is held across the store's I/O and a slow disk never
// delays a call's signaling. flush waits until everything queued so far is
// written.
type saveQueue struct {
	rec RecordStore
	log *slog.Logger

	mu      sync.Mutex // guards items, closed, pending; innermost lock
	items   []saveItem
	closed  bool
	pending int
	idle    *sync.Cond // signalled when pending drops to 0
	wake    chan struct{}
	done    chan struct{}
}

type saveItem struct {
	rec       *CallRecord
	heartbeat time.Time
}

func newSaveQueue(rec RecordStore, log *slog.Logger) *saveQueue {
	q := &saveQueue{rec: rec, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	q.idle = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func (q *saveQueue) push(it saveItem) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, it)
	q.pending++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *saveQueue) save(r CallRecord)      { q.push(saveItem{rec: &r}) }
func (q *saveQueue) heartbeat(at time.Time) { q.push(saveItem{heartbeat: at}) }

func (q *saveQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		closed := q.closed
		q.mu.Unlock()
		for _, it := range items {
			q.write(it)
		}
		q.mu.Lock()
		q.pending -= len(items)
		if q.pending == 0 {
			q.idle.Broadcast()
		}
		q.mu.Unlock()
		if len(items) > 0 {
			continue
		}
		if closed {
			return
		}
		<-q.wake
	}
}

func (q *saveQueue) write(it saveItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if it.rec != nil {
		err = q.rec.SaveCall(ctx, *it.rec)
	} else {
		err = q.rec.Heartbeat(ctx, it.heartbeat)
	}
	if err != nil {
		q.log.Error("call record not saved", "err", err)
	}
}

// flush waits until everything queued before it is written.
func (q *saveQueue) flush() {
	q.mu.Lock()
	for q.pending > 0 {
		q.idle.Wait()
	}
	q.mu.Unlock()
}

// close writes what is queued and ends the goroutine.
func (q *saveQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	<-q.done
}
