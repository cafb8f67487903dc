// Package opsqueue is the serial work queue of Switchboard: functions pushed
// from any goroutine run one at a time, in the order they were pushed, on one
// goroutine of the queue's own, without any of the pusher's locks held (like
// LiveKit's utils.OpsQueue). The signaling engine and the rooms manager use
// it to call their observers, the calls manager to write call records, and
// each media participant to deliver its events.
//
// It lives under media because media is the module's bottom layer: a leaf
// that imports nothing else from Switchboard, so every other package may
// import media's subpackages but media may import no one else's.
// opsqueue itself imports only the standard library.
//
// Semantics, which its tests check:
//
//   - Push never blocks and never runs the op itself; the queue is unbounded
//     (each user bounds what it pushes: one op per decision it has made).
//   - Ops run in push order, one at a time, each to its end before the next.
//     An op may push more ops.
//   - Stop refuses new ops (Push returns false and drops the op) and lets
//     Run return once the ops already queued have run: stopping drains, it
//     never drops what was accepted. Close is Stop and then waits for that.
//   - A queue whose Run is never called runs nothing; what it holds is
//     garbage once the queue is.
//   - A panicking op is not recovered: like a panic on any goroutine it
//     ends the process (Done is not closed on the way). An op that panicked
//     has left its owner's state half changed, and carrying on with the
//     next op would hide the bug.
package opsqueue

import "sync"

// Queue runs ops serially. The zero value is not usable: call New.
type Queue struct {
	wake chan struct{} // capacity 1: ops may be queued, or the queue stopped
	done chan struct{} // closed when Run has returned

	mu      sync.Mutex // guards ops and stopped; innermost lock, never held while an op runs
	ops     []func()
	stopped bool
}

// New returns a queue that accepts ops; nothing runs them until Run (or
// Start) is called.
func New() *Queue {
	return &Queue{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Start runs Run on a new goroutine, which ends after Stop. Call Start or
// Run once.
func (q *Queue) Start() { go q.Run() }

// Run runs the queued ops on the calling goroutine until the queue is
// stopped and every op it accepted has run. Call Start or Run once.
func (q *Queue) Run() {
	for {
		q.mu.Lock()
		ops, stopped := q.ops, q.stopped
		q.ops = nil
		q.mu.Unlock()
		for i, op := range ops {
			ops[i] = nil // let what op holds go once it has run
			op()
		}
		if len(ops) > 0 {
			continue // ops may have pushed more
		}
		if stopped {
			close(q.done) // not deferred: a panicking op must not look like a drained queue
			return
		}
		<-q.wake
	}
}

// Push queues op and reports whether it was accepted; after Stop it drops
// op and returns false. It never blocks, so it may be called with locks
// held.
func (q *Queue) Push(op func()) bool {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return false
	}
	q.ops = append(q.ops, op)
	q.mu.Unlock()
	q.signal()
	return true
}

// Stop refuses any new op; Run returns once the ops already accepted have
// run. It does not wait (see Done and Close) and may be called more than
// once, from any goroutine, including from an op.
func (q *Queue) Stop() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.signal()
}

// Done is closed when Run has returned.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Close stops the queue and waits until every op it accepted has run. Call
// it only once Run has been started, and never from an op (it would wait
// for itself).
func (q *Queue) Close() {
	q.Stop()
	<-q.done
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
