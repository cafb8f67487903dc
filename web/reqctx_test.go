package web

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// ctxMaker makes a request's context with a timeout under parent and ends
// it: context.WithTimeout and its cancel, or requestContexts.
type ctxMaker func(parent context.Context, timeout time.Duration) (context.Context, func())

func stdMaker(parent context.Context, timeout time.Duration) (context.Context, func()) {
	return context.WithTimeout(parent, timeout)
}

// connMaker keeps one requestContexts per parent, as a connection does.
func connMaker(t testing.TB) ctxMaker {
	all := map[context.Context]*requestContexts{}
	t.Cleanup(func() {
		for _, rs := range all {
			rs.close()
		}
	})
	return func(parent context.Context, timeout time.Duration) (context.Context, func()) {
		rs := all[parent]
		if rs == nil {
			rs = newRequestContexts(parent)
			all[parent] = rs
		}
		c := rs.begin(timeout)
		return c, func() { rs.end(c) }
	}
}

func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not done 5s after it should be")
	}
}

func notDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatalf("context done: %v", ctx.Err())
	default:
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("Err() = %v before the context is done", err)
	}
}

func wantErr(t *testing.T, ctx context.Context, want error) {
	t.Helper()
	if err := ctx.Err(); !errors.Is(err, want) || err != want {
		t.Fatalf("Err() = %v, want %v", err, want)
	}
	if cause := context.Cause(ctx); cause != want {
		t.Fatalf("Cause() = %v, want %v", cause, want)
	}
}

// TestRequestContextLikeWithTimeout (issue 16): a connection's request
// contexts behave as context.WithTimeout's do: the deadline, done at it
// with DeadlineExceeded, canceled when the request ends and when the
// server's context ends, contexts derived from them ended with them, and
// each request's context its own (an earlier one's end or deadline does
// not touch a later one).
func TestRequestContextLikeWithTimeout(t *testing.T) {
	for name, mk := range map[string]ctxMaker{"WithTimeout": stdMaker, "requestContexts": connMaker(t)} {
		t.Run(name, func(t *testing.T) {
			parent, cancelParent := context.WithCancel(context.Background())
			defer cancelParent()

			// The deadline passes.
			before := time.Now()
			c, end := mk(parent, 30*time.Millisecond)
			after := time.Now()
			d, ok := c.Deadline()
			if !ok || d.Before(before.Add(30*time.Millisecond)) || d.After(after.Add(30*time.Millisecond)) {
				t.Fatalf("Deadline() = %v, %v; want within [%v, %v]", d, ok, before.Add(30*time.Millisecond), after.Add(30*time.Millisecond))
			}
			notDone(t, c)
			derived, cancelDerived := context.WithCancel(c)
			waitDone(t, c)
			wantErr(t, c, context.DeadlineExceeded)
			waitDone(t, derived)
			wantErr(t, derived, context.DeadlineExceeded)
			cancelDerived()
			end()
			wantErr(t, c, context.DeadlineExceeded)

			// The next request's context is live, and canceled at its end;
			// what was derived from it and not yet canceled ends too.
			c2, end2 := mk(parent, time.Hour)
			notDone(t, c2)
			derived2, cancelDerived2 := context.WithTimeout(c2, time.Hour)
			defer cancelDerived2()
			if d2, _ := derived2.Deadline(); d2 != func() time.Time { d, _ := c2.Deadline(); return d }() {
				t.Fatalf("derived deadline %v, want the request's", d2)
			}
			end2()
			waitDone(t, c2)
			wantErr(t, c2, context.Canceled)
			waitDone(t, derived2)
			wantErr(t, derived2, context.Canceled)

			// AfterFunc: stopped before the end it never runs; registered
			// after the end it runs at once.
			c3, end3 := mk(parent, time.Hour)
			ran := make(chan struct{}, 2)
			stop := context.AfterFunc(c3, func() { ran <- struct{}{} })
			if !stop() {
				t.Fatal("stop() = false before the context ended")
			}
			end3()
			context.AfterFunc(c3, func() { ran <- struct{}{} })
			select {
			case <-ran:
			case <-time.After(5 * time.Second):
				t.Fatal("AfterFunc on an ended context did not run")
			}

			// Many short requests, each ended as its deadline passes: the
			// timer's firings for them never end a later request.
			for i := range 2000 {
				ci, endi := mk(parent, time.Duration(i%20)*time.Microsecond)
				if i%2 == 0 {
					waitDone(t, ci)
				}
				endi()
				if err := ci.Err(); err == nil {
					t.Fatal("an ended context reports no error")
				}
				long, endLong := mk(parent, time.Hour)
				for range 3 {
					runtime.Gosched()
				}
				if err := long.Err(); err != nil {
					t.Fatalf("request %d: a live request's context ended: %v", i, err)
				}
				endLong()
			}
			c4, end4 := mk(parent, time.Hour)
			select {
			case <-c4.Done():
				t.Fatalf("a live request's context ended: %v", c4.Err())
			case <-time.After(50 * time.Millisecond):
			}

			// The server's context ends: the request's context with it,
			// and every later one is done from the start.
			cancelParent()
			waitDone(t, c4)
			wantErr(t, c4, context.Canceled)
			end4()
			c5, end5 := mk(parent, time.Hour)
			waitDone(t, c5)
			wantErr(t, c5, context.Canceled)
			end5()
		})
	}
}

// TestRequestContextValues: values of the server's context reach the
// request's, and contexts derived from a request's need no goroutine of
// their own (they register through its AfterFunc).
func TestRequestContextValues(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancel()
	rs := newRequestContexts(parent)
	defer rs.close()
	c := rs.begin(time.Hour)
	if got := c.Value(key{}); got != "v" {
		t.Fatalf("Value = %v, want v", got)
	}
	_, cancelDerived := context.WithCancel(c)
	rs.mu.Lock()
	n := len(c.afters)
	rs.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d AfterFunc registrations for one derived context, want 1", n)
	}
	cancelDerived()
	rs.mu.Lock()
	n = len(c.afters)
	rs.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d AfterFunc registrations after the derived context's cancel, want 0", n)
	}
	rs.end(c)
}

// BenchmarkRequestContext is one request's context as the reader makes it:
// made under the server's context, asked for Done (the store's Apply
// does), ended. "WithTimeout" is what readLoop did before (issue 16).
func BenchmarkRequestContext(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, mk := range map[string]ctxMaker{"WithTimeout": stdMaker, "requestContexts": connMaker(b)} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, end := mk(parent, 10*time.Second)
				select {
				case <-c.Done():
					b.Fatal("done at once")
				default:
				}
				end()
			}
		})
	}
}
