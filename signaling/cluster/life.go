package cluster

import (
	"context"
	"sync"
)

type lifeState int

const (
	lifeNew lifeState = iota
	lifeStarted
	lifeClosed
)

// life runs a primitive's goroutines between Start and Close: each gets a
// context that Close cancels, and Close waits for all of them to return.
type life struct {
	mu     sync.Mutex // guards state and cancel
	state  lifeState
	cancel context.CancelFunc
	done   chan struct{} // closed when stopping starts
	wg     sync.WaitGroup
}

func newLife() life { return life{done: make(chan struct{})} }

// start runs each of loops in its own goroutine.
func (l *life) start(loops ...func(context.Context)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case lifeStarted:
		return ErrStarted
	case lifeClosed:
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.state, l.cancel = lifeStarted, cancel
	for _, f := range loops {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			f(ctx)
		}()
	}
	return nil
}

// stop cancels the loops and waits for them; it reports whether they had
// been started and not stopped before.
func (l *life) stop() bool {
	l.mu.Lock()
	state := l.state
	if state != lifeClosed {
		l.state = lifeClosed
		if l.cancel != nil {
			l.cancel()
		}
		close(l.done)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return state == lifeStarted
}

// err is nil while started, else why the primitive cannot be used.
func (l *life) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case lifeNew:
		return ErrNotStarted
	case lifeClosed:
		return ErrClosed
	}
	return nil
}
