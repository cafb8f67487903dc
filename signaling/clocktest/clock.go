// Package clocktest provides a manual clock for tests of code that takes a
// protocol.Clock: time moves only when the test calls Advance.
package clocktest

import (
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Clock is a manual protocol.Clock.
type Clock struct {
	mu     sync.Mutex // guards now, timers, seq
	now    time.Time
	timers []*timer
	seq    int
}

var _ protocol.Clock = (*Clock)(nil)

// New returns a clock set to start.
func New(start time.Time) *Clock { return &Clock{now: start} }

type timer struct {
	c    *Clock
	at   time.Time
	seq  int
	f    func()
	done bool
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d; it runs during Advance.
func (c *Clock) AfterFunc(d time.Duration, f func()) protocol.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *timer) bool { return x == t })
	return true
}

// Advance moves the clock forward by d, running every timer that falls due,
// in deadline order, each synchronously and with the clock set to its
// deadline. Timers scheduled by those callbacks run too if they fall due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		slices.SortFunc(c.timers, func(a, b *timer) int {
			if x := a.at.Compare(b.at); x != 0 {
				return x
			}
			return a.seq - b.seq
		})
		if len(c.timers) == 0 || c.timers[0].at.After(end) {
			c.now = end
			c.mu.Unlock()
			return
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.done = true
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
	}
}

// Pending returns how many timers are scheduled.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
