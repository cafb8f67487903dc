package cluster

import (
	"context"
	"log/slog"
	"time"
)

// minBackoff is a loop's first wait after a failed Redis call.
const minBackoff = 50 * time.Millisecond

// retrier is a loop's view of Redis's health: a bounded exponential back-off
// and a log line when an outage starts and one when it ends (never one per
// attempt). It belongs to one goroutine.
type retrier struct {
	log   *slog.Logger
	what  string // the loop, in log lines
	max   time.Duration
	wait  time.Duration
	down  bool
	since time.Time
	fails int
}

func newRetrier(log *slog.Logger, what string, max time.Duration) *retrier {
	return &retrier{log: log, what: what, max: max}
}

// fail records a failed attempt and returns how long to wait before the
// next one.
func (r *retrier) fail(err error) time.Duration {
	r.fails++
	if !r.down {
		r.down, r.since, r.wait = true, time.Now(), minBackoff
		r.log.Warn("redis unavailable; retrying with back-off", "loop", r.what, "err", err)
	} else {
		r.wait = min(2*r.wait, r.max)
	}
	return r.wait
}

// ok records a successful attempt and reports whether it ended an outage.
func (r *retrier) ok() bool {
	if !r.down {
		return false
	}
	r.log.Info("redis available again", "loop", r.what, "outage", time.Since(r.since).Round(time.Millisecond), "failed_attempts", r.fails)
	r.down, r.fails = false, 0
	return true
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// opCtx bounds one Redis call of a loop.
func opCtx(ctx context.Context, cfg Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cfg.OpTimeout)
}
