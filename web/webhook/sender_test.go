package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// received is one request the test endpoint got.
type received struct {
	body    []byte
	header  http.Header
	event   webhook.Event
	verr    error // webhook.Verify's verdict
	status  int   // what the endpoint answered
	arrived time.Time
}

// endpoint is an httptest server standing for the app's backend. status
// decides each answer (by request number, from 1); hang makes it wait for
// the request's end instead.
type endpoint struct {
	*httptest.Server
	got    chan received
	n      atomic.Int64
	status func(n int64) int
	hang   atomic.Bool
}

func newEndpoint(t *testing.T, status func(n int64) int) *endpoint {
	t.Helper()
	e := &endpoint{got: make(chan received, 1000), status: status}
	if e.status == nil {
		e.status = func(int64) int { return http.StatusNoContent }
	}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // read first: the server notices the client going only after the body
		if e.hang.Load() {
			<-r.Context().Done()
			return
		}
		rc := received{body: body, header: r.Header.Clone(), arrived: time.Now(),
			verr: webhook.Verify(secret, body, r.Header.Get(webhook.HeaderSignature), time.Minute)}
		_ = json.Unmarshal(body, &rc.event)
		rc.status = e.status(e.n.Add(1))
		w.WriteHeader(rc.status)
		e.got <- rc
	}))
	t.Cleanup(e.Close)
	return e
}

// next waits, with a deadline, for the endpoint's next request.
func (e *endpoint) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-e.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook request within 10s")
		return received{}
	}
}

// quiet checks that no request arrives for d.
func (e *endpoint) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case r := <-e.got:
		t.Fatalf("unexpected webhook request %s", r.body)
	case <-time.After(d):
	}
}

func testConfig(urls ...string) webhook.Config {
	c := webhook.DefaultConfig()
	c.URLs, c.Secret = urls, secret
	c.RetryMin, c.RetryMax = 20*time.Millisecond, 80*time.Millisecond
	c.Timeout = 2 * time.Second
	return c
}

// counts is a webhook.Metrics that counts results.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) WebhookDelivery(result string, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[result]++
}

func (c *counts) get(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[result]
}

func newSender(t *testing.T, cfg webhook.Config, q webhook.Queue, m webhook.Metrics) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(webhook.Params{Config: cfg, Queue: q, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestRetriedAfterServerErrors: a delivery answered 500 twice is retried
// until it is accepted, each attempt signed (Verify passes), with the same
// event ID and an increasing attempt number, after a growing wait; the
// other URL gets it once.
func TestRetriedAfterServerErrors(t *testing.T) {
	flaky := newEndpoint(t, func(n int64) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	good := newEndpoint(t, nil)
	m := &counts{}
	s := newSender(t, testConfig(flaky.URL, good.URL), webhook.NewMemoryQueue(), m)
	s.Publish("test.event", "k", map[string]string{"hello": "world"})

	var attempts []received
	for range 3 {
		attempts = append(attempts, flaky.next(t))
	}
	once := good.next(t)
	for i, r := range attempts {
		if r.verr != nil {
			t.Errorf("attempt %d: signature does not verify: %v", i+1, r.verr)
		}
		if r.event.ID == "" || r.event.ID != attempts[0].event.ID || r.header.Get(webhook.HeaderEventID) != r.event.ID {
			t.Errorf("attempt %d: event ID %q (header %q), want %q on every attempt", i+1, r.event.ID, r.header.Get(webhook.HeaderEventID), attempts[0].event.ID)
		}
		if got := r.header.Get(webhook.HeaderAttempt); got != []string{"1", "2", "3"}[i] {
			t.Errorf("attempt %d: %s = %q", i+1, webhook.HeaderAttempt, got)
		}
		if r.event.Type != "test.event" || string(r.event.Data) != `{"hello":"world"}` {
			t.Errorf("attempt %d: event %+v", i+1, r.event)
		}
	}
	if once.event.ID != attempts[0].event.ID || once.verr != nil {
		t.Errorf("other URL got %+v (verify: %v)", once.event, once.verr)
	}
	// Backoff: at least half of RetryMin, then half of twice it (jitter takes up to half).
	if gap := attempts[1].arrived.Sub(attempts[0].arrived); gap < 10*time.Millisecond {
		t.Errorf("first retry after %v, want at least 10ms", gap)
	}
	if gap := attempts[2].arrived.Sub(attempts[1].arrived); gap < 20*time.Millisecond {
		t.Errorf("second retry after %v, want at least 20ms", gap)
	}
	flaky.quiet(t, 200*time.Millisecond)
	if m.get(webhook.ResultFailed) != 2 || m.get(webhook.ResultOK) != 2 {
		t.Errorf("metrics failed=%d ok=%d, want 2 and 2", m.get(webhook.ResultFailed), m.get(webhook.ResultOK))
	}
	if n := s.QueueLen(); n != 0 {
		t.Errorf("QueueLen = %d after delivery, want 0", n)
	}
}

// TestPendingDeliverySurvivesRestart: a delivery whose endpoint fails is
// still queued in SQLite when the sender stops, and the sender of the next
// start delivers it, same event ID.
func TestPendingDeliverySurvivesRestart(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	e := newEndpoint(t, func(int64) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	path := filepath.Join(t.TempDir(), "sb.db")
	cfg := testConfig(e.URL)
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // no retry before the restart
	m := &counts{}
	s := newSender(t, cfg, openSQLiteQueue(t, path), m)
	s.Publish("test.event", "k", 1)
	first := e.next(t)
	if first.status != http.StatusServiceUnavailable {
		t.Fatalf("first attempt answered %d", first.status)
	}
	for deadline := time.Now().Add(10 * time.Second); m.get(webhook.ResultFailed) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failed attempt was never counted")
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The next start: the delivery is due in an hour; its wait is not
	// shortened by a restart, so make it due now through the queue.
	q := openSQLiteQueue(t, path)
	if n, err := q.Len(t.Context()); err != nil || n != 1 {
		t.Fatalf("after the stop the queue holds %d, %v; want 1", n, err)
	}
	ds, err := q.Claim(t.Context(), time.Now().Add(2*time.Hour), time.Now(), 1) // lease "until now": due at once
	if err != nil || len(ds) != 1 {
		t.Fatalf("claim: %v, %v", ds, err)
	}
	down.Store(false)
	newSender(t, testConfig(e.URL), q, nil)
	again := e.next(t)
	if again.event.ID != first.event.ID || again.status != http.StatusOK || again.verr != nil {
		t.Fatalf("after restart got event %q (status %d, verify %v), want %q", again.event.ID, again.status, again.verr, first.event.ID)
	}
	if got := again.header.Get(webhook.HeaderAttempt); got != "2" {
		t.Errorf("attempt after restart = %s, want 2", got)
	}
}

// TestInFlightAtStopIsDueAtStart: a request in flight when the sender
// stops is cancelled and delivered at the next start.
func TestInFlightAtStopIsDueAtStart(t *testing.T) {
	e := newEndpoint(t, nil)
	e.hang.Store(true)
	path := filepath.Join(t.TempDir(), "sb.db")
	cfg := testConfig(e.URL)
	cfg.Timeout = time.Minute
	s := newSender(t, cfg, openSQLiteQueue(t, path), nil)
	s.Publish("test.event", "k", 1)
	q := openSQLiteQueue(t, path)
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until it is claimed (in flight)
		next, err := q.NextAfter(t.Context(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !next.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("delivery never claimed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e.hang.Store(false)
	newSender(t, testConfig(e.URL), q, nil)
	if r := e.next(t); r.event.Type != "test.event" || r.verr != nil {
		t.Fatalf("after restart got %+v (verify %v)", r.event, r.verr)
	}
}

// TestDroppedAfterMaxAge: a delivery that keeps failing is dropped once its
// next retry would pass max_age.
func TestDroppedAfterMaxAge(t *testing.T) {
	e := newEndpoint(t, func(int64) int { return http.StatusInternalServerError })
	cfg := testConfig(e.URL)
	cfg.MaxAge = 150 * time.Millisecond
	m := &counts{}
	q := webhook.NewMemoryQueue()
	s := newSender(t, cfg, q, m)
	s.Publish("test.event", "", 1)
	deadline := time.Now().Add(10 * time.Second)
	for m.get(webhook.ResultExpired) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("never dropped; failed %d times", m.get(webhook.ResultFailed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := q.Len(t.Context()); n != 0 {
		t.Fatalf("queue holds %d after the drop", n)
	}
	if m.get(webhook.ResultFailed) < 1 {
		t.Errorf("dropped without a failed retry")
	}
}

// TestOrderPerKey: events of one key reach a URL in the order published,
// even when the first needs retries; another key is not held up.
func TestOrderPerKey(t *testing.T) {
	e := newEndpoint(t, func(n int64) int {
		if n <= 2 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	s := newSender(t, testConfig(e.URL), webhook.NewMemoryQueue(), nil)
	s.Publish("first", "k", 1)
	s.Publish("second", "k", 2)
	var ok []string
	for len(ok) < 2 {
		r := e.next(t)
		if r.status == http.StatusOK {
			ok = append(ok, r.event.Type)
		} else if r.event.Type != "first" {
			t.Fatalf("%s tried while first was failing", r.event.Type)
		}
	}
	if ok[0] != "first" || ok[1] != "second" {
		t.Fatalf("delivered %v, want first then second", ok)
	}
}

// stuckQueue is a queue whose Add waits until released: a database that
// hangs.
type stuckQueue struct {
	*webhook.MemoryQueue
	release chan struct{}
}

func (q stuckQueue) Add(ctx context.Context, ds []webhook.Delivery) error {
	select {
	case <-q.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.MemoryQueue.Add(ctx, ds)
}

// TestPublishNeverBlocks: with the queue stuck, Publish still returns at
// once; past queue_size events are dropped and counted.
func TestPublishNeverBlocks(t *testing.T) {
	e := newEndpoint(t, nil)
	cfg := testConfig(e.URL)
	cfg.QueueSize = 2
	m := &counts{}
	q := stuckQueue{MemoryQueue: webhook.NewMemoryQueue(), release: make(chan struct{})}
	s := newSender(t, cfg, q, m)
	// More events than the hand-off and the writer's batch can hold while
	// the queue is stuck: the rest are dropped, counted, and Publish never
	// waits.
	const events = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range events {
			s.Publish("test.event", "", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a stuck queue")
	}
	dropped := m.get(webhook.ResultDropped)
	if dropped == 0 || dropped >= events {
		t.Fatalf("%d of %d events dropped, want some but not all", dropped, events)
	}
	close(q.release)
	// Exactly what was handed over is delivered once the queue works again.
	for range events - dropped {
		e.next(t)
	}
	e.quiet(t, 200*time.Millisecond)
}
