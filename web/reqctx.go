package web

import (
	"context"
	"sync"
	"time"
)

// requestContexts makes the contexts of one connection's requests, which
// its reader performs one at a time: each request gets a context of its own
// with the deadline context.WithTimeout(parent, timeout) would give it, done
// when the deadline passes, when parent is done, or when the request ends
// (end), like WithTimeout's after its cancel. What it saves against
// WithTimeout per request (issue 16): the timer (one per connection,
// re-armed) and the registration in the server's context (one per
// connection, for its life, rather than one per request in the server
// context's child map under its lock).
//
// A context of it is not a context package type: contexts derived from it
// register through its AfterFunc (no goroutine per derived context), and
// Value hides the parent's cancelation, so that context.Cause reports this
// context's own error.
type requestContexts struct {
	parent context.Context

	mu         sync.Mutex
	timer      *time.Timer     // made on first use: fires at cur's deadline
	stopParent func() bool     // ends the watch of parent
	cur        *requestContext // the request in progress; nil between requests
}

func newRequestContexts(parent context.Context) *requestContexts {
	return &requestContexts{parent: parent}
}

// begin returns the context of a request that starts now.
func (rs *requestContexts) begin(timeout time.Duration) *requestContext {
	c := &requestContext{rs: rs, deadline: time.Now().Add(timeout)}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.timer == nil {
		rs.timer = time.AfterFunc(timeout, rs.expire)
		rs.stopParent = context.AfterFunc(rs.parent, rs.parentDone)
	} else {
		rs.timer.Reset(timeout)
	}
	rs.cur = c
	if err := rs.parent.Err(); err != nil {
		c.cancelLocked(err)
	}
	return c
}

// end ends c (the request in progress): it is canceled, as WithTimeout's
// cancel does.
func (rs *requestContexts) end(c *requestContext) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.timer.Stop()
	if rs.cur == c {
		rs.cur = nil
	}
	c.cancelLocked(context.Canceled)
}

// close releases the timer and the watch of parent once the connection
// makes no more requests.
func (rs *requestContexts) close() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.timer != nil {
		rs.timer.Stop()
		rs.stopParent()
	}
}

// expire is the timer's: the request in progress is past its deadline. A
// firing for an earlier request (the timer fired as it ended) finds the
// next one before its deadline, and the timer re-armed for it.
func (rs *requestContexts) expire() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if c := rs.cur; c != nil && !time.Now().Before(c.deadline) {
		c.cancelLocked(context.DeadlineExceeded)
	}
}

func (rs *requestContexts) parentDone() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if c := rs.cur; c != nil {
		c.cancelLocked(rs.parent.Err())
	}
}

// requestContext is one request's context.Context.
type requestContext struct {
	rs       *requestContexts
	deadline time.Time
	// guarded by rs.mu:
	done   chan struct{} // made by the first Done
	err    error
	afters map[*func()]struct{} // AfterFunc's, until done
}

// closedDone is the Done of a context done before anyone asked.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *requestContext) cancelLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	for f := range c.afters {
		go (*f)()
	}
	c.afters = nil
}

func (c *requestContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *requestContext) Done() <-chan struct{} {
	c.rs.mu.Lock()
	defer c.rs.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			return closedDone
		}
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *requestContext) Err() error {
	c.rs.mu.Lock()
	defer c.rs.mu.Unlock()
	return c.err
}

// Value is parent's, except parent's cancelation (a value that is a
// context: the context package looks its own up this way), which this
// context replaces with its own.
func (c *requestContext) Value(key any) any {
	v := c.rs.parent.Value(key)
	if _, isCtx := v.(context.Context); isCtx {
		return nil
	}
	return v
}

// AfterFunc arranges for f to run in its own goroutine once c is done, as
// context.AfterFunc does; the context package uses it for the contexts
// derived from c.
func (c *requestContext) AfterFunc(f func()) (stop func() bool) {
	c.rs.mu.Lock()
	defer c.rs.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	key := &f
	if c.afters == nil {
		c.afters = make(map[*func()]struct{})
	}
	c.afters[key] = struct{}{}
	return func() bool {
		c.rs.mu.Lock()
		defer c.rs.mu.Unlock()
		if _, ok := c.afters[key]; !ok {
			return false
		}
		delete(c.afters, key)
		return true
	}
}

func (c *requestContext) String() string { return "web.requestContext" }
