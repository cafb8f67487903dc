package webhook_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/redistest"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

func newRedisQueue(t *testing.T, srv *redistest.Server, prefix string) *webhook.RedisQueue {
	t.Helper()
	q, err := webhook.NewRedisQueue(srv.Client(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestRedisQueueContract runs the Queue contract on a real redis-server,
// and checks that another prefix sees nothing of it.
func TestRedisQueueContract(t *testing.T) {
	srv := redistest.Start(t)
	queueContract(t, newRedisQueue(t, srv, "contract:"))
	if n, err := newRedisQueue(t, srv, "other:").Len(t.Context()); err != nil || n != 0 {
		t.Errorf("another prefix's Len = %d, %v; want 0", n, err)
	}
}

// TestRedisQueueSharedClaims: two servers' queues on one prefix claim
// concurrently; every delivery is claimed exactly once within a lease, and
// deliveries of one URL and Key only in Seq order.
func TestRedisQueueSharedClaims(t *testing.T) {
	srv := redistest.Start(t)
	qs := [2]*webhook.RedisQueue{newRedisQueue(t, srv, "shared:"), newRedisQueue(t, srv, "shared:")}
	ctx := t.Context()
	const total = 120
	var ds []webhook.Delivery
	for i := range total {
		ds = append(ds, webhook.Delivery{EventID: fmt.Sprintf("e%03d", i), URL: "u", Key: fmt.Sprintf("k%d", i%4),
			Body: []byte("{}"), CreatedAt: q0, NextAt: q0})
	}
	// Added from both queues at once, in halves.
	var wg sync.WaitGroup
	for h, q := range qs {
		wg.Go(func() {
			if err := q.Add(ctx, ds[h*total/2:(h+1)*total/2]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var mu sync.Mutex
	claimed := map[string]int{}
	lastSeq := map[string]int64{} // Key → the Seq last removed
	for _, q := range qs {
		wg.Go(func() {
			for round := 0; round < 4*total; round++ {
				got, err := q.Claim(ctx, q0, q0.Add(time.Hour), 3)
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range got {
					mu.Lock()
					claimed[d.EventID]++
					if d.Seq <= lastSeq[d.Key] {
						t.Errorf("%s (seq %d) claimed after seq %d of key %s", d.EventID, d.Seq, lastSeq[d.Key], d.Key)
					}
					lastSeq[d.Key] = d.Seq
					mu.Unlock()
					if err := q.Remove(ctx, d.Seq); err != nil {
						t.Error(err)
						return
					}
				}
				if n, _ := q.Len(ctx); n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(claimed) != total {
		t.Errorf("%d deliveries claimed, want %d", len(claimed), total)
	}
	for id, n := range claimed {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
}

// TestRedisQueueSurvivesKill: what Add returned for is there after
// redis-server is killed and started again.
func TestRedisQueueSurvivesKill(t *testing.T) {
	srv := redistest.Start(t, redistest.FsyncAlways())
	q := newRedisQueue(t, srv, "kill:")
	if err := q.Add(t.Context(), []webhook.Delivery{{EventID: "e1", URL: "u", Body: []byte("{}"), CreatedAt: q0, NextAt: q0}}); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, err := q.Claim(t.Context(), q0, q0.Add(time.Minute), 10)
		if err == nil {
			if len(ds) != 1 || ds[0].EventID != "e1" {
				t.Fatalf("after kill and restart: %+v", ds)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Claim still fails 10s after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the client's reconnection, bounded by the deadline
	}
}
