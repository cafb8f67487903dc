package peer

import (
	"sync"

	"github.com/switchboard-rtc/switchboard/media"
)

// SignalQueue is an unbounded FIFO of signals between a peer and its
// signaling connection: the side that pushes (an event handler, a Peer's
// send callback) must never block, and negotiation messages are few. One
// goroutine pops.
type SignalQueue struct {
	mu     sync.Mutex // guards items and closed
	items  []media.Signal
	closed bool
	wake   chan struct{}
}

// NewSignalQueue returns an empty queue.
func NewSignalQueue() *SignalQueue { return &SignalQueue{wake: make(chan struct{}, 1)} }

// Push appends s; after Close it drops s.
func (q *SignalQueue) Push(s media.Signal) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, s)
	}
	q.mu.Unlock()
	q.signal()
}

// Pop waits for the oldest signal; ok is false once the queue is closed.
func (q *SignalQueue) Pop() (s media.Signal, ok bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return media.Signal{}, false
		}
		if len(q.items) > 0 {
			s = q.items[0]
			q.items = q.items[1:]
			q.mu.Unlock()
			return s, true
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// Close ends the queue: Pop returns false from now on.
func (q *SignalQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *SignalQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
