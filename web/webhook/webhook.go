package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Config is the webhooks section of the config file.
type Config struct {
	// URLs receive every event; empty: webhooks are off.
	URLs []string `mapstructure:"urls"`
	// Secret keys the HMAC-SHA256 signature of each request.
	Secret []byte `mapstructure:"secret"`
	// Timeout bounds one request (connect, send, response headers and body).
	Timeout time.Duration `mapstructure:"timeout"`
	// RetryMin is the wait before the first retry; each retry doubles it, up
	// to RetryMax, with jitter (a random half of it).
	RetryMin time.Duration `mapstructure:"retry_min"`
	RetryMax time.Duration `mapstructure:"retry_max"`
	// MaxAge is how long after its event a delivery is retried; after it is
	// dropped (result expired).
	MaxAge time.Duration `mapstructure:"max_age"`
	// Workers is the number of requests in flight at most.
	Workers int `mapstructure:"workers"`
	// QueueSize bounds the events handed to the writer and not yet stored;
	// past it new events are dropped (result dropped).
	QueueSize int `mapstructure:"queue_size"`
}

// DefaultConfig is the embedded config file's webhooks section (a test of
// web/stack checks that they agree).
func DefaultConfig() Config {
	return Config{URLs: []string{}, Secret: []byte{}, Timeout: 5 * time.Second, RetryMin: time.Second,
		RetryMax: 10 * time.Minute, MaxAge: 24 * time.Hour, Workers: 4, QueueSize: 4096}
}

// Results of a delivery attempt, as Metrics receives them.
const (
	ResultOK      = "ok"      // a 2xx answer: the delivery is done
	ResultFailed  = "failed"  // an error, timeout or non-2xx answer: it will be retried
	ResultExpired = "expired" // failed, and the next retry would be past max_age: dropped
	ResultDropped = "dropped" // never queued: the hand-off was full, or the queue failed at shutdown
)

// Metrics receives delivery figures (the server exports them to
// Prometheus). Methods must not block.
type Metrics interface {
	// WebhookDelivery reports an attempt's result; latency is the request's
	// duration (0 for dropped).
	WebhookDelivery(result string, latency time.Duration)
}

type noMetrics struct{}

func (noMetrics) WebhookDelivery(string, time.Duration) {}

// Params are the sender's dependencies. Config and Queue are required.
type Params struct {
	Config  Config
	Queue   Queue
	Metrics Metrics // nil: none
	Logger  *slog.Logger
	// Client makes the requests; nil: a client that does not follow
	// redirects (a 3xx is a failure).
	Client *http.Client
}

// Event is the JSON body of every delivery.
type Event struct {
	ID        string          `json:"id"`        // the same on every retry and URL
	Type      string          `json:"type"`      // see the Type constants
	CreatedAt int64           `json:"createdAt"` // unix milliseconds, when it happened
	Data      json.RawMessage `json:"data"`
}

// published is an event handed to the writer.
type published struct {
	id, key string
	body    []byte
	at      time.Time
}

// Sender delivers events. Its goroutines end with Close.
type Sender struct {
	cfg    Config
	q      Queue
	stats  Metrics
	log    *slog.Logger
	client *http.Client

	mu     sync.RWMutex // guards closed against sends on in
	closed bool
	in     chan published

	wake    chan struct{} // capacity 1: deliveries may be due
	stopIn  chan struct{} // closed by Close: the writer drains in and ends
	inDone  chan struct{} // closed when the writer has ended
	ctx     context.Context
	cancel  context.CancelFunc // ends the dispatcher, the workers and their requests
	wg      sync.WaitGroup     // dispatcher and workers
	closeMu sync.Once
}

// leaseMargin is added to the request timeout to make a claim's lease.
const leaseMargin = 10 * time.Second

// storeRetry is the wait after the queue failed.
const storeRetry = time.Second

// pollMax bounds a dispatcher's sleep (another server may have added
// deliveries to a shared queue).
const pollMax = time.Second

// New starts a sender: its writer, dispatcher and workers.
func New(p Params) (*Sender, error) {
	if p.Queue == nil {
		return nil, errors.New("webhook: New needs a Queue")
	}
	c := p.Config
	if c.Workers < 1 || c.QueueSize < 1 || c.Timeout <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin || c.MaxAge <= 0 {
		return nil, fmt.Errorf("webhook: invalid config %+v", c)
	}
	s := &Sender{cfg: c, q: p.Queue, stats: p.Metrics, log: p.Logger, client: p.Client,
		in: make(chan published, c.QueueSize), wake: make(chan struct{}, 1),
		stopIn: make(chan struct{}), inDone: make(chan struct{})}
	if s.stats == nil {
		s.stats = noMetrics{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = c.Workers
		s.client = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.writer()
	work := make(chan Delivery, c.Workers)
	done := make(chan struct{}, c.Workers)
	s.wg.Add(1 + c.Workers)
	go s.dispatch(work, done)
	for range c.Workers {
		go s.worker(work, done)
	}
	return s, nil
}

// Publish queues an event of type typ about data for every URL, ordered
// after the earlier events with the same key. It never blocks: when the
// hand-off is full, or after Close, the event is dropped (and counted).
func (s *Sender) Publish(typ, key string, data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		s.log.Error("webhook event not encoded", "type", typ, "err", err)
		return
	}
	now := time.Now()
	ev := Event{ID: newEventID(), Type: typ, CreatedAt: now.UnixMilli(), Data: raw}
	body, err := json.Marshal(ev)
	if err != nil {
		s.log.Error("webhook event not encoded", "type", typ, "err", err)
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		select {
		case s.in <- published{id: ev.ID, key: key, body: body, at: now}:
			return
		default:
		}
	}
	s.stats.WebhookDelivery(ResultDropped, 0)
	s.log.Warn("webhook event dropped", "type", typ, "id", ev.ID, "closed", s.closed)
}

func newEventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails
	return "evt_" + hex.EncodeToString(b[:])
}

// writerBatch bounds the events stored in one transaction.
const writerBatch = 64

// writer stores what Publish hands over, in batches, until Close; then it
// stores what is left and ends.
func (s *Sender) writer() {
	defer close(s.inDone)
	for {
		var batch []published
		select {
		case p := <-s.in:
			batch = append(batch, p)
		case <-s.stopIn:
			for {
				select {
				case p := <-s.in:
					batch = append(batch, p)
					if len(batch) == writerBatch {
						s.store(batch, true)
						batch = batch[:0]
					}
				default:
					s.store(batch, true)
					return
				}
			}
		}
	more:
		for len(batch) < writerBatch {
			select {
			case p := <-s.in:
				batch = append(batch, p)
			default:
				break more
			}
		}
		s.store(batch, false)
	}
}

// store adds a batch to the queue, one delivery per URL, retrying while the
// queue fails (once only when closing).
func (s *Sender) store(batch []published, closing bool) {
	if len(batch) == 0 {
		return
	}
	ds := make([]Delivery, 0, len(batch)*len(s.cfg.URLs))
	for _, p := range batch {
		for _, u := range s.cfg.URLs {
			ds = append(ds, Delivery{EventID: p.id, URL: u, Key: p.key, Body: p.body, CreatedAt: p.at, NextAt: p.at})
		}
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.q.Add(ctx, ds)
		cancel()
		if err == nil {
			s.kick()
			return
		}
		s.log.Error("webhook deliveries not queued", "n", len(ds), "err", err)
		if closing {
			for range batch {
				s.stats.WebhookDelivery(ResultDropped, 0)
			}
			return
		}
		select {
		case <-time.After(storeRetry):
		case <-s.stopIn:
			closing = true
		}
	}
}

func (s *Sender) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch claims due deliveries for the workers, never more than are free.
func (s *Sender) dispatch(work chan<- Delivery, done <-chan struct{}) {
	defer s.wg.Done()
	defer close(work)
	lease := s.cfg.Timeout + leaseMargin
	timer := time.NewTimer(0)
	defer timer.Stop()
	inflight := 0
	for {
		wait := pollMax
		now := time.Now()
		if free := s.cfg.Workers - inflight; free > 0 {
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			ds, err := s.q.Claim(ctx, now, now.Add(lease), free)
			var next time.Time
			if err == nil {
				next, err = s.q.NextAfter(ctx, now)
			}
			cancel()
			if err != nil && s.ctx.Err() == nil {
				s.log.Error("webhook queue failed", "err", err)
				wait = storeRetry
			}
			for _, d := range ds {
				work <- d // never blocks: at most Workers are out
				inflight++
			}
			if len(ds) == free {
				wait = 0 // there may be more
			} else if !next.IsZero() && next.Sub(now) < wait {
				wait = next.Sub(now)
			}
		}
		if wait > 0 || inflight == s.cfg.Workers {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(wait)
			select {
			case <-s.ctx.Done():
				// The workers finish their requests (cancelled) and record
				// them; wait for that before closing work.
				for inflight > 0 {
					<-done
					inflight--
				}
				return
			case <-done:
				inflight--
			case <-s.wake:
			case <-timer.C:
			}
		}
		for drained := false; !drained; {
			select {
			case <-done:
				inflight--
			default:
				drained = true
			}
		}
		if s.ctx.Err() != nil {
			for inflight > 0 {
				<-done
				inflight--
			}
			return
		}
	}
}

// worker makes the deliveries it is handed, one at a time.
func (s *Sender) worker(work <-chan Delivery, done chan<- struct{}) {
	defer s.wg.Done()
	for d := range work {
		s.deliver(d)
		done <- struct{}{}
	}
}

// deliver makes one attempt and records its outcome in the queue.
func (s *Sender) deliver(d Delivery) {
	start := time.Now()
	err := s.post(d)
	latency := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	var qerr error
	var answered httpError
	switch {
	case err == nil:
		s.stats.WebhookDelivery(ResultOK, latency)
		qerr = s.q.Remove(ctx, d.Seq)
	case s.ctx.Err() != nil && !errors.As(err, &answered):
		// Shutting down: not an attempt; due again at once after a restart.
		qerr = s.q.Retry(ctx, d.Seq, d.Attempts, now)
	default:
		attempts := d.Attempts + 1
		next := now.Add(s.backoff(attempts))
		if next.Sub(d.CreatedAt) > s.cfg.MaxAge {
			s.stats.WebhookDelivery(ResultExpired, latency)
			s.log.Warn("webhook delivery given up", "url", d.URL, "event", d.EventID, "attempts", attempts, "err", err)
			qerr = s.q.Remove(ctx, d.Seq)
			break
		}
		s.stats.WebhookDelivery(ResultFailed, latency)
		s.log.Info("webhook delivery failed, will retry", "url", d.URL, "event", d.EventID, "attempts", attempts,
			"retry_in", next.Sub(now).Round(time.Millisecond), "err", err)
		qerr = s.q.Retry(ctx, d.Seq, attempts, next)
	}
	if qerr != nil {
		// The lease runs out and the delivery is tried again.
		s.log.Error("webhook queue failed", "err", qerr)
	}
	s.kick() // the next delivery of its key may be due
}

// backoff is the wait after the attempts-th failure: RetryMin doubled per
// failure, capped at RetryMax, of which a random half is taken off.
func (s *Sender) backoff(attempts int) time.Duration {
	d := s.cfg.RetryMax
	if attempts < 62 {
		if b := s.cfg.RetryMin << (attempts - 1); b > 0 && b < d {
			d = b
		}
	}
	return d/2 + mrand.N(d/2+1)
}

// httpError is a non-2xx answer.
type httpError struct{ status int }

func (e httpError) Error() string { return "HTTP status " + strconv.Itoa(e.status) }

// post sends d once, bounded by the request timeout.
func (s *Sender) post(d Delivery) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return err
	}
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(d.Body, &ev)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Switchboard-Webhook/1")
	req.Header.Set(HeaderEventID, d.EventID)
	req.Header.Set(HeaderEventType, ev.Type)
	req.Header.Set(HeaderAttempt, strconv.Itoa(d.Attempts+1))
	req.Header.Set(HeaderSignature, Sign(s.cfg.Secret, d.Body, time.Now()))
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return httpError{resp.StatusCode}
	}
	return nil
}

// QueueLen is the number of deliveries queued (for the metrics); -1 when
// the queue cannot tell.
func (s *Sender) QueueLen() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := s.q.Len(ctx)
	if err != nil {
		return -1
	}
	return n
}

// Close stops taking events, stores those handed over, then ends the
// workers: requests in flight are cancelled and due again at once at the
// next start (the receiver may get them twice: it deduplicates by event
// ID). It is idempotent.
func (s *Sender) Close() error {
	s.closeMu.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stopIn)
		<-s.inDone
		s.cancel()
		s.wg.Wait()
		s.client.CloseIdleConnections()
	})
	return nil
}
