package cluster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

// TestRegistryNodes: Nodes answers for a thousand users in one round trip
// (two when Redis lost the script), leaving out users without connections
// and nodes that are no longer in `nodes` (cleaned up), but not those
// that are only without their key (dead and not yet cleaned up, or alive
// after a Redis outage and not yet registered again).
func TestRegistryNodes(t *testing.T) {
	e := newEnv(t)
	// No timing is tested here: c "dies" by its key's deletion, and no
	// survivor may clean it up before the first check. With a minute's
	// node_ttl, a and b list c as dead (last heartbeat older than the TTL)
	// only a minute after its last heartbeat, whatever the machine's load;
	// op_timeout is the default's (a thousand writes on a loaded machine).
	cfg := cluster.DefaultConfig()
	cfg.NodeTTL = time.Minute
	a, b, c := e.member("a", cfg, nil), e.member("b", cfg, nil), e.member("c", cfg, nil)
	ctx := context.Background()
	const users = 1000
	want, withC := map[string][]string{}, map[string][]string{}
	var names []string
	for i := range users {
		u := fmt.Sprintf("user-%d", i)
		names = append(names, u)
		for _, m := range []*member{a, b, c} {
			if i%len(m.id+"xy") == 0 || (m.id == "a" && i%2 == 1) { // a varied mix, some users nowhere
				if err := m.reg.Add(ctx, u); err != nil {
					// A write failed (op_timeout on a loaded machine); Add
					// counted the connection and the writer retries it.
					fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					must(t, m.reg.Flush(fctx))
					cancel()
				}
				withC[u] = append(withC[u], m.id)
				if m.id != "c" {
					want[u] = append(want[u], m.id)
				}
			}
		}
	}
	names = append(names, "nobody", "user-1") // unknown, and named twice
	// c dies: its key is gone at once, its entries stay until a survivor
	// cleans up.
	c.kill()
	must(t, e.srv.Client().Del(ctx, e.ks().NodeKey("c")).Err())

	rt := &roundTrips{}
	client := e.client()
	client.AddHook(rt)
	reg, err := cluster.NewRegistry(cluster.RegistryParams{Params: cluster.Params{Client: client, Prefix: e.prefix, NodeID: "q", Config: cfg}})
	must(t, err)
	check := func(what string, wantTrips int64, want map[string][]string) {
		t.Helper()
		before := rt.n.Load()
		got, err := reg.Nodes(ctx, names...)
		must(t, err)
		trips := rt.n.Load() - before
		t.Logf("Nodes of %d users (%s): %d round trip(s)", len(names), what, trips)
		if trips != wantTrips {
			t.Errorf("%s: %d round trips, want %d", what, trips, wantTrips)
		}
		for _, w := range []map[string][]string{got, want} {
			for u := range w {
				if !slices.Equal(got[u], want[u]) {
					t.Fatalf("%s: Nodes[%s] = %v, want %v", what, u, got[u], want[u])
				}
			}
		}
	}
	must(t, client.ScriptFlush(ctx).Err()) // also opens the connection
	// No script: one round trip, whatever Redis's script cache holds.
	check("script cache empty", 1, withC)                           // c is not cleaned up yet
	must(t, e.srv.Client().ZRem(ctx, e.ks().NodesKey(), "c").Err()) // the end of c's cleanup
	check("c cleaned up", 1, want)
}

// TestRegistryConcurrent: Add and Remove from many goroutines on a few
// users; once every call returned, Redis holds exactly the local counts.
func TestRegistryConcurrent(t *testing.T) {
	e := newEnv(t)
	a := e.member("a", fastConfig(), nil)
	ctx := context.Background()
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			held := map[string]int{}
			for range 200 {
				u := users[r.IntN(len(users))]
				if held[u] > 0 && r.IntN(2) == 0 {
					held[u]--
					if err := a.reg.Remove(ctx, u); err != nil {
						t.Error(err)
						return
					}
				} else {
					held[u]++
					if err := a.reg.Add(ctx, u); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	admin := e.srv.Client()
	members, err := admin.SMembers(ctx, e.prefix+"nodeusers:a").Result()
	must(t, err)
	for _, u := range users {
		n := a.reg.Local(u)
		got, err := admin.HGet(ctx, e.ks().ConnKey(u), "a").Int()
		if n == 0 {
			if err != redis.Nil || slices.Contains(members, u) {
				t.Errorf("%s: no local connection, Redis has %d (%v), nodeusers %v", u, got, err, members)
			}
			continue
		}
		if err != nil || got != n || !slices.Contains(members, u) {
			t.Errorf("%s: %d local connections, Redis has %d (%v), nodeusers %v", u, n, got, err, members)
		}
	}
}

// TestRegistryNotStarted: a registry used outside Start..Close counts
// nothing.
func TestRegistryNotStarted(t *testing.T) {
	e := newEnv(t)
	reg, err := cluster.NewRegistry(cluster.RegistryParams{Params: e.params("a", fastConfig())})
	must(t, err)
	if err := reg.Add(context.Background(), "u"); err != cluster.ErrNotStarted {
		t.Errorf("Add before Start: %v", err)
	}
	must(t, reg.Start())
	if err := reg.Start(); err != cluster.ErrStarted {
		t.Errorf("second Start: %v", err)
	}
	must(t, reg.Add(context.Background(), "u"))
	must(t, reg.Close(context.Background()))
	if err := reg.Add(context.Background(), "u"); err != cluster.ErrClosed {
		t.Errorf("Add after Close: %v", err)
	}
	if got := e.keys(); len(got) != 0 {
		t.Errorf("keys left after Close: %v", got)
	}
}
