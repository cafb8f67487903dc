package web

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// HealthChecker tells /healthz whether the server can do its work: a
// non-nil error makes it answer 503 with the error, so that a load
// balancer takes the node out. It must be cheap.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// probeTimeout bounds the probe write of StoreHealth.
const probeTimeout = 2 * time.Second

// StoreHealth wraps the engine's store and remembers whether its last
// write failed; it is the HealthChecker of /healthz. While the last write
// failed, each health check (one at a time) makes a probe write, a no-op
// delete, so that a node taken out of rotation, which gets no traffic,
// is seen to recover.
type StoreHealth struct {
	signaling.Store

	mu      sync.Mutex // guards lastErr
	lastErr error      // the last write's failure; nil when it succeeded
	probing atomic.Bool
}

var (
	_ signaling.Store = (*StoreHealth)(nil)
	_ HealthChecker   = (*StoreHealth)(nil)
)

// WatchStore returns st wrapped so that its writes are watched.
func WatchStore(st signaling.Store) *StoreHealth { return &StoreHealth{Store: st} }

// Apply implements signaling.Store and records the outcome. A conflict
// (ErrGroupExists) is a working store; a write abandoned because its
// caller's context ended says nothing about the store.
func (h *StoreHealth) Apply(ctx context.Context, muts ...signaling.Mutation) error {
	err := h.Store.Apply(ctx, muts...)
	switch {
	case err != nil && ctx.Err() != nil:
	case err == nil || errors.Is(err, protocol.ErrGroupExists):
		h.set(nil)
	default:
		h.set(err)
	}
	return err
}

func (h *StoreHealth) set(err error) {
	h.mu.Lock()
	h.lastErr = err
	h.mu.Unlock()
}

func (h *StoreHealth) last() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastErr
}

// Health implements HealthChecker: the last write's failure, after a probe
// write when no other probe runs.
func (h *StoreHealth) Health(ctx context.Context) error {
	if h.last() == nil {
		return nil
	}
	if h.probing.CompareAndSwap(false, true) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_ = h.Apply(pctx, signaling.DeleteOutbox{UserID: "", UpTo: 0}) // matches nothing: "" is no user
		cancel()
		h.probing.Store(false)
	}
	if err := h.last(); err != nil {
		return fmt.Errorf("store writes fail: %w", err)
	}
	return nil
}
