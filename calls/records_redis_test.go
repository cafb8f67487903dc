package calls_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/calls/recordtest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

func newRedisRecords(t testing.TB, srv *redistest.Server, prefix, node string) *calls.RedisRecords {
	t.Helper()
	r, err := calls.NewRedisRecords(srv.Client(), prefix, node)
	if err != nil {
		t.Fatalf("NewRedisRecords: %v", err)
	}
	return r
}

// TestRedisRecordsContract runs the RecordStore contract on one
// redis-server, each subtest under its own key prefix; KEYS is never sent.
func TestRedisRecordsContract(t *testing.T) {
	srv := redistest.Start(t)
	recordtest.Run(t, func(t *testing.T) calls.RecordStore {
		return newRedisRecords(t, srv, "contract:"+t.Name()+":", "node-1")
	})
	stats, err := srv.Client().Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	if strings.Contains(stats, "cmdstat_keys:") {
		t.Errorf("the records sent KEYS:\n%s", stats)
	}
}

// TestRedisRecordsHeartbeatPerNode: in a cluster each node keeps its own
// heartbeat; LastHeartbeat is the node's own, Heartbeats lists them all,
// and another prefix sees none of them.
func TestRedisRecordsHeartbeatPerNode(t *testing.T) {
	srv := redistest.Start(t)
	n1, n2 := newRedisRecords(t, srv, "hb:", "n1"), newRedisRecords(t, srv, "hb:", "n2")
	other := newRedisRecords(t, srv, "other:", "n1")
	ctx := t.Context()
	t1, t2 := recordsT0, recordsT0.Add(-time.Minute) // n2's is older: each keeps its own, not the latest
	if err := n1.Heartbeat(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if err := n2.Heartbeat(ctx, t2); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    *calls.RedisRecords
		want time.Time
	}{{n1, t1}, {n2, t2}, {other, time.Time{}}} {
		if got, err := tc.r.LastHeartbeat(ctx); err != nil || !got.Equal(tc.want) {
			t.Errorf("LastHeartbeat = %v, %v; want %v", got, err, tc.want)
		}
	}
	all, err := n2.Heartbeats(ctx)
	if err != nil || len(all) != 2 || !all["n1"].Equal(t1) || !all["n2"].Equal(t2) {
		t.Errorf("Heartbeats = %v, %v; want n1 %v and n2 %v", all, err, t1, t2)
	}
	// Both nodes see the same calls.
	rec := recordsCall("c1", "ann", recordsT0, "bob")
	if err := n1.SaveCall(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got, _, err := n2.History(ctx, "bob", calls.FilterAll, 10, ""); err != nil || len(got) != 1 {
		t.Errorf("n2's History(bob) = %d calls, %v; want n1's call", len(got), err)
	}
	if got, _, err := other.History(ctx, "bob", calls.FilterAll, 10, ""); err != nil || len(got) != 0 {
		t.Errorf("another prefix's History(bob) = %d calls, %v; want none", len(got), err)
	}
	if _, err := calls.NewRedisRecords(srv.Client(), "p:", ""); err == nil {
		t.Error("NewRedisRecords without a node ID succeeded")
	}
}

// TestRedisRecordsUnavailable: while Redis is down the calls fail with
// ErrStoreUnavailable; the same records work again once it is back, and
// what was saved before is there (append-only file).
func TestRedisRecordsUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedisRecords(t, srv, "down:", "n1")
	ctx := t.Context()
	if err := r.SaveCall(ctx, recordsCall("before", "ann", recordsT0, "bob")); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := r.SaveCall(ctx, recordsCall("lost", "ann", recordsT0.Add(time.Second), "bob")); !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Errorf("SaveCall while Redis is down = %v, want ErrStoreUnavailable", err)
	}
	if _, _, err := r.History(ctx, "ann", calls.FilterAll, 10, ""); !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Errorf("History while Redis is down = %v, want ErrStoreUnavailable", err)
	}
	if err := r.Heartbeat(ctx, recordsT0); !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Errorf("Heartbeat while Redis is down = %v, want ErrStoreUnavailable", err)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.SaveCall(ctx, recordsCall("after", "ann", recordsT0.Add(2*time.Second), "bob"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SaveCall still fails 10s after Redis came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the client's reconnection, bounded by the deadline
	}
	got, _, err := r.History(ctx, "bob", calls.FilterAll, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, rec := range got {
		ids = append(ids, rec.CallID)
	}
	if strings.Join(ids, ",") != "after,before" {
		t.Errorf("History(bob) after the outage = %q, want after,before", ids)
	}
}
