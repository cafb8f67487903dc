package cluster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

// fired records the Fire calls of several pollers.
type fired struct {
	mu      sync.Mutex
	by      map[string][]string // id → nodes that fired it
	late    []time.Duration     // now - Due.At, at each fire
	n       int
	want    int
	all     chan struct{} // closed when n reaches want
	pollers map[string]*cluster.Poller
	noDone  string // this node fires without calling Done
}

func newFired(want int) *fired {
	return &fired{by: map[string][]string{}, want: want, all: make(chan struct{}), pollers: map[string]*cluster.Poller{}}
}

func (f *fired) poller(t *testing.T, e *env, node string, cfg cluster.Config) *cluster.Poller {
	t.Helper()
	p, err := cluster.NewPoller(cluster.PollerParams{Params: e.params(node, cfg), Fire: func(ctx context.Context, d cluster.Due) {
		f.mu.Lock()
		f.by[d.ID] = append(f.by[d.ID], node)
		f.late = append(f.late, time.Since(d.At))
		noDone := f.noDone == node
		p := f.pollers[node]
		f.mu.Unlock()
		if !noDone {
			if err := p.Done(ctx, d); err != nil {
				t.Error(err)
			}
		}
		// Counted once Done has returned: a test that ends when the last
		// fire is counted closes the poller (cancelling ctx) only then.
		f.mu.Lock()
		f.n++
		if f.n == f.want {
			close(f.all)
		}
		f.mu.Unlock()
	}})
	must(t, err)
	f.mu.Lock()
	f.pollers[node] = p
	f.mu.Unlock()
	must(t, p.Start())
	t.Cleanup(p.Close)
	return p
}

func (f *fired) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-f.all:
	case <-time.After(d):
		f.mu.Lock()
		defer f.mu.Unlock()
		t.Fatalf("%d fires after %v, want %d", f.n, d, f.want)
	}
}

// schedule schedules ids at their times, several per MULTI.
func schedule(t *testing.T, e *env, at map[string]time.Time) {
	t.Helper()
	ctx, c, ks := context.Background(), e.srv.Client(), e.ks()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for id, when := range at {
			ks.Schedule(ctx, p, id, when)
		}
		return nil
	})
	must(t, err)
}

// TestDeadlinesFireOnce: three pollers, 600 deadlines over 1.5 s: each
// fires exactly once, on time (the lateness is logged).
func TestDeadlinesFireOnce(t *testing.T) {
	e := newEnv(t)
	cfg := cluster.DefaultConfig() // timer_poll 200ms, lease 5s
	const n = 600
	f := newFired(n)
	for _, node := range []string{"a", "b", "c"} {
		f.poller(t, e, node, cfg)
	}
	r := rand.New(rand.NewPCG(1, 2))
	at := map[string]time.Time{}
	start := time.Now().Add(100 * time.Millisecond)
	for i := range n {
		at[fmt.Sprintf("inv-%d", i)] = start.Add(time.Duration(r.IntN(1500)) * time.Millisecond)
	}
	schedule(t, e, at)
	f.wait(t, 10*time.Second)
	f.mu.Lock()
	byNode := map[string]int{}
	for id, nodes := range f.by {
		if len(nodes) != 1 {
			t.Errorf("%s fired by %v", id, nodes)
		}
		byNode[nodes[0]]++
	}
	p50, p99, mx := percentiles(f.late)
	f.mu.Unlock()
	t.Logf("%d deadlines, 3 pollers (timer_poll %v): fired per node %v; lateness p50 %v p99 %v max %v",
		n, cfg.TimerPoll, byNode, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond))
	if bound := time.Second; mx > bound { // the design's bound
		t.Errorf("max lateness %v, want <= %v", mx, bound)
	}
	if n, err := e.srv.Client().ZCard(context.Background(), e.ks().DeadlinesKey()).Result(); err != nil || n != 0 {
		t.Errorf("%d deadlines left (%v)", n, err)
	}
}

// TestDeadlineClaimerDies: a node claims deadlines and dies before Done:
// the others fire each of them again, exactly once, after the lease.
func TestDeadlineClaimerDies(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig() // timer_poll 50ms, lease 1s
	const n = 20
	first := newFired(n)
	first.noDone = "a"
	pa := first.poller(t, e, "a", cfg)
	at := map[string]time.Time{}
	now := time.Now()
	for i := range n {
		at[fmt.Sprintf("inv-%d", i)] = now
	}
	schedule(t, e, at)
	first.wait(t, 5*time.Second)
	claimed := time.Now()
	pa.Close() // a is gone, its claims not done (Close does no Done)

	again := newFired(n)
	again.poller(t, e, "b", cfg)
	again.poller(t, e, "c", cfg)
	again.wait(t, cfg.TimerLease+5*time.Second)
	refired := time.Since(claimed)
	again.mu.Lock()
	defer again.mu.Unlock()
	for id, nodes := range again.by {
		if len(nodes) != 1 || nodes[0] == "a" {
			t.Errorf("%s fired again by %v", id, nodes)
		}
	}
	p50, p99, mx := percentiles(again.late)
	t.Logf("claimer died: fired again %v after the claim (timer_lease %v, timer_poll %v); lateness after the lease p50 %v p99 %v max %v",
		refired.Round(time.Millisecond), cfg.TimerLease, cfg.TimerPoll, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond))
	if refired < cfg.TimerLease-100*time.Millisecond {
		t.Errorf("fired again %v after the claim, before the lease %v ended", refired, cfg.TimerLease)
	}
}

// TestDeadlineScheduleCancelMove: in one MULTI, a deadline is scheduled,
// another cancelled, a third moved later; Done after a re-Schedule keeps
// the new deadline.
func TestDeadlineScheduleCancelMove(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	ctx, c, ks := context.Background(), e.srv.Client(), e.ks()
	now := time.Now()
	schedule(t, e, map[string]time.Time{"x": now, "y": now, "z": now})
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ks.Cancel(ctx, p, "y")
		ks.Schedule(ctx, p, "z", now.Add(time.Hour))
		return nil
	})
	must(t, err)
	f := newFired(1)
	var once sync.Once
	p, err := cluster.NewPoller(cluster.PollerParams{Params: e.params("a", cfg), Fire: func(ctx context.Context, d cluster.Due) {
		// The op re-schedules x before Done: Done must leave it.
		_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			ks.Schedule(ctx, p, d.ID, now.Add(2*time.Hour))
			ks.Done(ctx, p, d)
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		f.mu.Lock()
		f.by[d.ID] = append(f.by[d.ID], "a")
		f.mu.Unlock()
		once.Do(func() { close(f.all) })
	}})
	must(t, err)
	must(t, p.Start())
	defer p.Close()
	f.wait(t, 5*time.Second)
	p.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.by) != 1 || len(f.by["x"]) != 1 {
		t.Errorf("fired %v, want x once", f.by)
	}
	got, err := c.ZRangeWithScores(ctx, ks.DeadlinesKey(), 0, -1).Result()
	must(t, err)
	if len(got) != 2 || got[0].Member != "z" || got[1].Member != "x" ||
		int64(got[1].Score) != now.Add(2*time.Hour).UnixMilli() {
		t.Errorf("deadlines left %v, want z (+1h) and x re-scheduled (+2h)", got)
	}
}

// TestPollerResumesAfterRedisRestart: the poller keeps trying while Redis
// is down (logging the outage once) and fires deadlines after it is back.
func TestPollerResumesAfterRedisRestart(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	f := newFired(10)
	f.poller(t, e, "a", cfg)
	e.srv.Kill()
	eventually(t, 5*time.Second, func() string {
		if e.logs.count("redis unavailable", `loop="timer poller"`) == 0 {
			return "the poller did not notice the outage"
		}
		return ""
	})
	e.srv.Restart()
	at := map[string]time.Time{}
	for i := range 10 {
		at[fmt.Sprint(i)] = time.Now()
	}
	schedule(t, e, at)
	f.wait(t, 5*time.Second)
	if n := e.logs.count("redis unavailable", `loop="timer poller"`); n != 1 {
		t.Errorf("the poller logged the outage %d times", n)
	}
}
