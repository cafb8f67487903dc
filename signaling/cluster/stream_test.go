package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

// received records what a Reader handed over.
type received struct {
	mu     sync.Mutex
	events []cluster.Event
	lost   []int64
	gate   chan struct{} // if set, Handle waits on it for the first event
	notify chan struct{} // gets a value (if free) at each event
}

func newReceived() *received { return &received{notify: make(chan struct{}, 1)} }

func (r *received) handle(ctx context.Context, ev cluster.Event) {
	r.mu.Lock()
	first, gate := len(r.events) == 0, r.gate
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	if first && gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
}

func (r *received) onLost(_ context.Context, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, n)
}

func (r *received) snapshot() ([]cluster.Event, []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cluster.Event(nil), r.events...), append([]int64(nil), r.lost...)
}

// waitCount waits until n events were handled.
func (r *received) waitCount(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		if evs, _ := r.snapshot(); len(evs) >= n {
			return
		}
		select {
		case <-r.notify:
		case <-deadline:
			evs, _ := r.snapshot()
			t.Fatalf("%d events handled after %v, want %d", len(evs), d, n)
		}
	}
}

func (e *env) reader(node string, cfg cluster.Config, r *received) *cluster.Reader {
	e.t.Helper()
	rd, err := cluster.NewReader(cluster.ReaderParams{Params: e.params(node, cfg), Handle: r.handle, Lost: r.onLost})
	must(e.t, err)
	must(e.t, rd.Start())
	e.t.Cleanup(rd.Close)
	return rd
}

// appendEvents appends payloads p<from>..p<to-1> to node's stream, each in
// its own MULTI next to a state change (as the engine will).
func (e *env) appendEvents(c redis.UniversalClient, node string, from, to int) error {
	ctx := context.Background()
	ks := cluster.NewKeyspace(e.prefix, cluster.DefaultConfig())
	for i := from; i < to; i++ {
		_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, e.prefix+"state", "last", i)
			ks.Append(ctx, p, node, []byte(fmt.Sprintf("p%d", i)))
			return nil
		})
		if err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
	}
	return nil
}

// checkInOrder checks that evs are p0..p<n-1> with sequence numbers 1..n.
func checkInOrder(t *testing.T, evs []cluster.Event, n int) {
	t.Helper()
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	for i, ev := range evs {
		if string(ev.Payload) != fmt.Sprintf("p%d", i) || ev.Seq != int64(i+1) {
			t.Fatalf("event %d = seq %d %q, want seq %d p%d", i, ev.Seq, ev.Payload, i+1, i)
		}
	}
}

// TestReaderResumesAfterRedisRestart: a reader hands over its stream in
// order, trims it and records its position; when Redis is killed and
// restarted it resumes by itself: the events appended after the restart
// are all handled, in order, none twice, and the outage is logged once.
func TestReaderResumesAfterRedisRestart(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	r := newReceived()
	e.reader("a", cfg, r)
	w := e.client()
	must(t, e.appendEvents(w, "a", 0, 100))
	r.waitCount(t, 100, 5*time.Second)

	e.srv.Kill()
	eventually(t, 5*time.Second, func() string {
		if e.logs.count("redis unavailable", `loop="stream reader"`) == 0 {
			return "the reader did not notice the outage"
		}
		return ""
	})
	e.srv.Restart()
	// The writer may need a few tries while go-redis reconnects.
	eventually(t, 5*time.Second, func() string {
		if err := w.Ping(context.Background()).Err(); err != nil {
			return err.Error()
		}
		return ""
	})
	must(t, e.appendEvents(w, "a", 100, 200))
	r.waitCount(t, 200, 5*time.Second)
	evs, lost := r.snapshot()
	checkInOrder(t, evs, 200)
	if len(lost) != 0 {
		t.Errorf("Lost called: %v", lost)
	}
	ctx, admin, ks := context.Background(), e.srv.Client(), e.ks()
	eventually(t, 2*time.Second, func() string {
		n, err := admin.XLen(ctx, ks.StreamKey("a")).Result()
		pos, _ := admin.Get(ctx, e.prefix+"evpos:a").Result()
		if err != nil || n != 0 || !strings.HasSuffix(pos, " 200") {
			return fmt.Sprintf("stream length %d (%v), position %q: not trimmed", n, err, pos)
		}
		return ""
	})
	if n := e.logs.count("redis unavailable", `loop="stream reader"`); n != 1 {
		t.Errorf("the reader logged the outage %d times", n)
	}
	if n := e.logs.count("redis available again", `loop="stream reader"`); n != 1 {
		t.Errorf("the reader logged the recovery %d times", n)
	}
}

// TestReaderRestartsFromPosition: a new reader of the same node (the node
// restarted) goes on after the last entry handled before, with no gap
// reported (the sequence goes on from the recorded position).
func TestReaderRestartsFromPosition(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	r := newReceived()
	rd := e.reader("a", cfg, r)
	w := e.client()
	must(t, e.appendEvents(w, "a", 0, 10))
	r.waitCount(t, 10, 5*time.Second)
	rd.Close()
	must(t, e.appendEvents(w, "a", 10, 20))
	r2 := newReceived()
	e.reader("a", cfg, r2)
	r2.waitCount(t, 10, 5*time.Second)
	evs, lost := r2.snapshot()
	if evs[0].Seq != 11 || evs[9].Seq != 20 || len(lost) != 0 {
		t.Errorf("second reader: first seq %d, last %d, lost %v", evs[0].Seq, evs[9].Seq, lost)
	}
}

// TestStreamMaxLen: past stream_max_len unread entries, appending drops
// the oldest; the reader reports how many it missed (Lost), then handles
// the rest in order. Handled and lost add up to what was appended.
func TestStreamMaxLen(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	cfg.StreamMaxLen = 50
	cfg.StreamBatch = 10
	r := newReceived()
	r.gate = make(chan struct{})
	rd, err := cluster.NewReader(cluster.ReaderParams{Params: e.params("a", cfg), Handle: r.handle, Lost: r.onLost})
	must(t, err)
	must(t, rd.Start())
	defer rd.Close()
	ks := cluster.NewKeyspace(e.prefix, cfg)
	w, ctx := e.client(), context.Background()
	appendN := func(from, to int) {
		for i := from; i < to; i++ {
			_, err := w.TxPipelined(ctx, func(p redis.Pipeliner) error {
				ks.Append(ctx, p, "a", []byte(fmt.Sprintf("p%d", i)))
				return nil
			})
			must(t, err)
		}
	}
	appendN(0, 1)
	r.waitCount(t, 1, 5*time.Second) // the reader is stuck in its first Handle
	appendN(1, 200)
	if n, _ := w.XLen(ctx, ks.StreamKey("a")).Result(); n != 50 {
		t.Errorf("stream length %d, want stream_max_len 50", n)
	}
	close(r.gate)
	r.waitCount(t, 51, 5*time.Second)
	evs, lost := r.snapshot()
	if len(evs) != 51 || len(lost) != 1 || lost[0] != 149 {
		t.Fatalf("handled %d, lost %v; want 51 handled (the first and the last 50) and one gap of 149", len(evs), lost)
	}
	for i, ev := range evs[1:] {
		if want := int64(151 + i); ev.Seq != want || string(ev.Payload) != fmt.Sprintf("p%d", want-1) {
			t.Fatalf("event %d: seq %d %q, want %d", i+1, ev.Seq, ev.Payload, want)
		}
	}
}

// TestReaderStreamLost: when the stream and its sequence are lost (Redis
// restarted without its data, or this node was declared dead and its
// stream handed over), the reader reports an unknown loss (Lost(-1)) and
// handles the new entries.
func TestReaderStreamLost(t *testing.T) {
	e := newEnv(t)
	r := newReceived()
	e.reader("a", fastConfig(), r)
	w := e.client()
	must(t, e.appendEvents(w, "a", 0, 5))
	r.waitCount(t, 5, 5*time.Second)
	// The reader records its position in its next read: the loss below
	// must come after that record (one written after it would put the
	// position back, and the new stream would look rolled back).
	e.waitPosition(t, w, "a", 5)
	must(t, w.Del(context.Background(), e.ks().StreamKey("a"), e.prefix+"evseq:a", e.prefix+"evpos:a").Err())
	must(t, e.appendEvents(w, "a", 0, 3))
	r.waitCount(t, 8, 5*time.Second)
	evs, lost := r.snapshot()
	if len(lost) != 1 || lost[0] != -1 || evs[5].Seq != 1 || evs[7].Seq != 3 {
		t.Errorf("lost %v, seqs after the loss %d..%d", lost, evs[5].Seq, evs[7].Seq)
	}
}

// TestReaderOlderBuildEntries: a stream written by an older build (IDs
// from Redis's clock, the sequence number in an "s" field, the counter in
// evseq) takes Append's entries after its own, an older build's append
// after those goes on with Append's numbering, and the reader handles
// them all, in order, reporting the restart of the numbering once.
func TestReaderOlderBuildEntries(t *testing.T) {
	e := newEnv(t)
	w, ctx := e.client(), context.Background()
	ks := e.ks()
	for i := 1; i <= 3; i++ {
		_, err := w.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, e.prefix+"evseq:a")
			p.XAdd(ctx, &redis.XAddArgs{Stream: ks.StreamKey("a"), Values: []any{"s", i, "p", fmt.Sprintf("old%d", i)}})
			return nil
		})
		must(t, err)
	}
	must(t, e.appendEvents(w, "a", 0, 2))
	// An older build's append after them (its script: INCR, XADD *) gets
	// the next number in its ID (Redis's clock is below the stream's top).
	must(t, w.Eval(ctx, "local s = redis.call('INCR', KEYS[2])\n"+
		"return redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[1], '*', 's', s, 'p', ARGV[2])",
		[]string{ks.StreamKey("a"), e.prefix + "evseq:a"}, 1000, "old4").Err())
	r := newReceived()
	e.reader("a", fastConfig(), r)
	r.waitCount(t, 6, 5*time.Second)
	evs, lost := r.snapshot()
	var got []string
	for _, ev := range evs {
		got = append(got, fmt.Sprintf("%d:%s", ev.Seq, ev.Payload))
	}
	if want := "1:old1 2:old2 3:old3 1:p0 2:p1 3:old4"; strings.Join(got, " ") != want || len(lost) != 1 || lost[0] != -1 {
		t.Errorf("handled %v, lost %v; want %s and one restart (-1)", got, lost, want)
	}
	if !strings.HasPrefix(evs[4].ID, cluster.StreamIDMs+"-") {
		t.Errorf("appended entry ID %q, want %s-1", evs[4].ID, cluster.StreamIDMs)
	}
}

// TestReaderStreamLostBelowPosition: a lost stream (with the reader's
// recorded position) starts again with
// entry IDs at or below the reader's position (Redis restarted without
// its data within the same millisecond, or with its clock set back): the
// reader notices that the sequence restarted, reports it, and handles the
// new entries instead of waiting past them.
func TestReaderStreamLostBelowPosition(t *testing.T) {
	e := newEnv(t)
	r := newReceived()
	e.reader("a", fastConfig(), r)
	w, ctx := e.client(), context.Background()
	must(t, e.appendEvents(w, "a", 0, 5))
	r.waitCount(t, 5, 5*time.Second)
	// The reader records its position in the pipeline of its next read:
	// wait for that record, so the loss below comes after it (a record
	// written after the loss would make the stream look rolled back).
	e.waitPosition(t, w, "a", 5)
	ks := e.ks()
	must(t, w.Del(ctx, ks.StreamKey("a"), e.prefix+"evpos:a").Err())
	for i := 1; i <= 3; i++ {
		_, err := w.TxPipelined(ctx, func(p redis.Pipeliner) error {
			ks.Append(ctx, p, "a", []byte(fmt.Sprintf("q%d", i)))
			return nil
		})
		must(t, err)
	}
	// The new entries are numbered from the start again: their IDs are
	// below the reader's position.
	if info := w.XInfoStream(ctx, ks.StreamKey("a")).Val(); info.LastGeneratedID != cluster.StreamIDMs+"-2" {
		t.Fatalf("last ID after the loss %q, want %s-2", info.LastGeneratedID, cluster.StreamIDMs)
	}
	r.waitCount(t, 8, 5*time.Second)
	evs, lost := r.snapshot()
	if len(lost) != 1 || lost[0] != -1 || string(evs[5].Payload) != "q1" || string(evs[7].Payload) != "q3" {
		t.Errorf("lost %v, payloads after the loss %q..%q", lost, evs[5].Payload, evs[7].Payload)
	}
}

// TestReaderStreamRolledBack: Redis comes back with the stream as it was a
// moment before (the last writes of its append-only file lost): the
// entries the reader had handled since are not handled again, and the new
// ones are.
func TestReaderStreamRolledBack(t *testing.T) {
	e := newEnv(t)
	r := newReceived()
	checks := &restartChecks{key: e.ks().StreamKey("a")}
	p := e.params("a", fastConfig())
	p.Client.AddHook(checks)
	rd, err := cluster.NewReader(cluster.ReaderParams{Params: p, Handle: r.handle, Lost: r.onLost})
	must(t, err)
	must(t, rd.Start())
	t.Cleanup(rd.Close)
	w, ctx := e.client(), context.Background()
	must(t, e.appendEvents(w, "a", 0, 3))
	r.waitCount(t, 3, 5*time.Second)
	ks := e.ks()
	eventually(t, 5*time.Second, func() string {
		if n, _ := w.XLen(ctx, ks.StreamKey("a")).Result(); n != 0 {
			return "not trimmed"
		}
		return ""
	})
	snap, err := w.Get(ctx, e.prefix+"evpos:a").Result()
	must(t, err)
	must(t, e.appendEvents(w, "a", 3, 5))
	r.waitCount(t, 5, 5*time.Second)
	// Back to the moment after the third: the fourth and fifth were
	// appended (and are handled), neither trimmed nor recorded.
	eventually(t, 5*time.Second, func() string {
		if n, _ := w.XLen(ctx, ks.StreamKey("a")).Result(); n != 0 {
			return "not trimmed"
		}
		return ""
	})
	evs, _ := r.snapshot()
	_, err = w.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, ks.StreamKey("a"))
		p.Set(ctx, e.prefix+"evpos:a", snap, 0)
		for _, ev := range evs[3:] {
			p.XAdd(ctx, &redis.XAddArgs{Stream: ks.StreamKey("a"), ID: ev.ID, Values: []any{"p", ev.Payload}})
		}
		return nil
	})
	must(t, err)
	// Idle reads pass (the reader checks for a restart after each)...
	from := checks.n.Load()
	eventually(t, 5*time.Second, func() string {
		if checks.n.Load() < from+2 {
			return "the reader did not check for a restart"
		}
		return ""
	})
	// ...and a new entry is handled, once.
	must(t, e.appendEvents(w, "a", 5, 6))
	r.waitCount(t, 6, 5*time.Second)
	evs, _ = r.snapshot()
	if len(evs) != 6 || string(evs[5].Payload) != "p5" {
		t.Fatalf("handled %d events, the last %q; want 6, the last p5", len(evs), evs[len(evs)-1].Payload)
	}
}

// restartChecks counts the reader's checks for a lost stream (pipelines
// that read key's XINFO STREAM, its last sequence number).
type restartChecks struct {
	key string
	n   atomic.Int64
}

func (h *restartChecks) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *restartChecks) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *restartChecks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if args := c.Args(); len(args) == 3 && c.Name() == "xinfo" && args[2] == h.key {
				h.n.Add(1)
			}
		}
		return err
	}
}

// TestReaderOneRoundTripPerBatch: the trim and the position's record go
// in the pipeline of the next read, so that a batch costs the reader one
// round trip, not two; a new reader still goes on after the last entry
// handled.
func TestReaderOneRoundTripPerBatch(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	r := newReceived()
	p := e.params("a", cfg)
	rt := &roundTrips{}
	p.Client.(*redis.Client).AddHook(rt)
	rd, err := cluster.NewReader(cluster.ReaderParams{Params: p, Handle: r.handle, Lost: r.onLost})
	must(t, err)
	must(t, rd.Start())
	t.Cleanup(rd.Close)
	w := e.client()
	must(t, e.appendEvents(w, "a", 0, 1))
	r.waitCount(t, 1, 5*time.Second)
	const n = 10
	before := rt.n.Load()
	start := time.Now()
	for i := 1; i <= n; i++ {
		must(t, e.appendEvents(w, "a", i, i+1))
		r.waitCount(t, i+1, 5*time.Second)
	}
	got := rt.n.Load() - before
	// Reads that waited streamBlock (500 ms) for nothing add one each.
	idle := int64(time.Since(start) / (500 * time.Millisecond))
	if got > n+1+idle {
		t.Errorf("%d round trips for %d batches read one by one (%d idle reads at most); want one per batch", got, n, idle)
	}
	rd.Close()
	must(t, e.appendEvents(w, "a", n+1, n+2))
	r2 := newReceived()
	e.reader("a", cfg, r2)
	r2.waitCount(t, 1, 5*time.Second)
	if evs, lost := r2.snapshot(); len(evs) != 1 || evs[0].Seq != n+2 || len(lost) != 0 {
		t.Errorf("new reader: %d events, first seq %d, lost %v; want seq %d only", len(evs), evs[0].Seq, lost, n+2)
	}
}

// waitPosition waits (at most 5 s) until the reader of node has recorded
// its position after its seq-th event.
func (e *env) waitPosition(t *testing.T, w *redis.Client, node string, seq int) {
	t.Helper()
	suffix := fmt.Sprintf(" %d", seq)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if pos, _ := w.Get(context.Background(), e.prefix+"evpos:"+node).Result(); strings.HasSuffix(pos, suffix) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not record its position after %d events", seq)
		}
	}
}
