package signaling_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
	"github.com/switchboard-rtc/switchboard/signaling/storetest"
)

// The Redis tests live in the external test package, which can import
// storetest (it imports signaling).

func newRedisStore(t testing.TB, c redis.UniversalClient, prefix string) *signaling.RedisStore {
	t.Helper()
	s, err := signaling.NewRedisStore(c, prefix, nil)
	if err != nil {
		t.Fatalf("NewRedisStore: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var redisT0 = time.Date(2025, time.June, 1, 12, 0, 0, 123_456_789, time.UTC)

func redisGroup(id string) signaling.GroupRecord {
	return signaling.GroupRecord{ID: id, Name: id, Owner: "o", JoinOption: protocol.JoinAny, CreatedAt: redisT0,
		Members: []signaling.MemberRecord{{UserID: "o", Role: protocol.RoleOwner, JoinedAt: redisT0}}}
}

func redisInvitation(id string) signaling.InvitationRecord {
	return signaling.InvitationRecord{ID: id, Inviter: "alice", Data: "d-" + id, CreatedAt: redisT0,
		Invitees: []signaling.InviteeRecord{{UserID: "bob", State: signaling.StatePending, UpdatedAt: redisT0}}}
}

func redisEntry(user string, seq int64) signaling.OutboxEntry {
	return signaling.OutboxEntry{UserID: user, Seq: seq, Event: "e", Data: []byte(`{}`), CreatedAt: redisT0, ExpiresAt: redisT0.Add(time.Hour)}
}

func mustLoad(t *testing.T, s signaling.Store) *signaling.Snapshot {
	t.Helper()
	snap, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap
}

// TestRedisStoreContract runs the Store contract on one redis-server, each
// subtest under its own key prefix; the store never sends KEYS.
func TestRedisStoreContract(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	storetest.Run(t, func(t *testing.T) func() signaling.Store {
		prefix := "contract:" + t.Name() + ":"
		return func() signaling.Store {
			s, err := signaling.NewRedisStore(c, prefix, nil)
			if err != nil {
				t.Fatalf("NewRedisStore: %v", err)
			}
			return s
		}
	})
	stats, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	if strings.Contains(stats, "cmdstat_keys:") {
		t.Errorf("the store sent KEYS:\n%s", stats)
	}
	if !strings.Contains(stats, "cmdstat_exec:") || !strings.Contains(stats, "cmdstat_watch:") {
		t.Errorf("no MULTI/EXEC with WATCH seen in the command stats:\n%s", stats)
	}
}

// TestRedisStorePrefixesAreSeparate: two stores with different prefixes on
// one Redis see nothing of each other, and write only under their prefix.
func TestRedisStorePrefixesAreSeparate(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	a, b := newRedisStore(t, c, "a:"), newRedisStore(t, c, "b:")
	ctx := t.Context()
	muts := func(text string) []signaling.Mutation {
		return []signaling.Mutation{
			signaling.PutGroup{Group: redisGroup("g")},
			signaling.PutInvitation{Invitation: redisInvitation("inv")},
			signaling.AppendOutbox{Entry: redisEntry("bob", 1)},
			signaling.PutUser{UserID: "bob"},
			signaling.SetCustomStatus{UserID: "bob", Text: text},
		}
	}
	// The same IDs in both: neither sees the other's as taken.
	if err := a.Apply(ctx, muts("in a")...); err != nil {
		t.Fatalf("Apply on a: %v", err)
	}
	if err := b.Apply(ctx, muts("in b")...); err != nil {
		t.Fatalf("Apply on b (same IDs, other prefix): %v", err)
	}
	if err := b.Apply(ctx, signaling.DeleteGroup{GroupID: "g"}, signaling.DeleteOutbox{UserID: "bob", UpTo: 1},
		signaling.PutUser{UserID: "carol"}); err != nil {
		t.Fatalf("Apply on b: %v", err)
	}
	sa, sb := mustLoad(t, a), mustLoad(t, b)
	if len(sa.Groups) != 1 || len(sa.Outbox) != 1 || len(sa.Users) != 1 || sa.CustomStatus["bob"] != "in a" {
		t.Errorf("a holds %+v: b's changes leaked into it", sa)
	}
	if len(sb.Groups) != 0 || len(sb.Outbox) != 0 || len(sb.Users) != 2 || sb.CustomStatus["bob"] != "in b" || len(sb.Invitations) != 1 {
		t.Errorf("b holds %+v", sb)
	}
	if ents, err := a.LoadOutbox(ctx, "bob", 0, 0); err != nil || len(ents) != 1 {
		t.Errorf("a's LoadOutbox(bob) = %v, %v; want its one entry", ents, err)
	}
	keys, err := redistest.Keys(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "a:") && !strings.HasPrefix(k, "b:") {
			t.Errorf("key %q is under neither prefix", k)
		}
	}
	if ka, _ := redistest.Keys(ctx, c, "a:"); len(ka) == 0 {
		t.Error("no key under a:")
	}
}

// TestRedisStoreRacingStores: two stores on one prefix (two nodes) race to
// put the same group and invitation IDs; each ID goes to exactly one, and
// the loser's batch applies nothing.
func TestRedisStoreRacingStores(t *testing.T) {
	srv := redistest.Start(t)
	stores := [2]*signaling.RedisStore{newRedisStore(t, srv.Client(), "race:"), newRedisStore(t, srv.Client(), "race:")}
	const rounds = 150
	var wins [2]int
	for round := range rounds {
		var wg sync.WaitGroup
		var errs [2]error
		start := make(chan struct{})
		for i, s := range stores {
			wg.Go(func() {
				<-start
				id := fmt.Sprintf("r%d", round)
				// Each node's own outbox entry and user ride with the shared IDs.
				errs[i] = s.Apply(t.Context(),
					signaling.AppendOutbox{Entry: redisEntry(fmt.Sprintf("n%d", i), int64(round*2+i+1))},
					signaling.PutInvitation{Invitation: redisInvitation(id)},
					signaling.PutGroup{Group: redisGroup(id)},
				)
			})
		}
		close(start)
		wg.Wait()
		switch {
		case errs[0] == nil && errs[1] != nil:
			wins[0]++
		case errs[1] == nil && errs[0] != nil:
			wins[1]++
		default:
			t.Fatalf("round %d: errors %v and %v, want exactly one to fail", round, errs[0], errs[1])
		}
		for _, err := range errs {
			if err != nil && errors.Is(err, protocol.ErrStoreUnavailable) {
				t.Fatalf("round %d: the loser failed with %v, want a taken ID", round, err)
			}
		}
	}
	snap := mustLoad(t, stores[0])
	if len(snap.Groups) != rounds || len(snap.Invitations) != rounds || len(snap.Outbox) != rounds {
		t.Errorf("after %d rounds: %d groups, %d invitations, %d outbox entries; want %d of each",
			rounds, len(snap.Groups), len(snap.Invitations), len(snap.Outbox), rounds)
	}
	t.Logf("wins: %v", wins)
}

// TestRedisStoreInvalidMutation: what cannot be stored fails before
// anything is written, and is not reported as the store being unavailable.
func TestRedisStoreInvalidMutation(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Client(), "inv:")
	bad := redisInvitation("x")
	bad.Invitees[0].State = signaling.InviteeState(99)
	far := redisGroup("far")
	far.CreatedAt = time.Date(2300, time.January, 1, 0, 0, 0, 0, time.UTC)
	for name, m := range map[string]signaling.Mutation{
		"invalid invitee state": signaling.PutInvitation{Invitation: bad},
		"invalid new state":     signaling.SetInviteeState{InviteID: "x", UserID: "bob", State: signaling.StateUnknown},
		"time out of range":     signaling.PutGroup{Group: far},
	} {
		err := s.Apply(t.Context(), signaling.PutUser{UserID: "u"}, m)
		if err == nil || errors.Is(err, protocol.ErrStoreUnavailable) {
			t.Errorf("%s: Apply = %v, want an error that is not store_unavailable", name, err)
		}
	}
	if snap := mustLoad(t, s); len(snap.Users)+len(snap.Groups)+len(snap.Invitations) != 0 {
		t.Errorf("failed batches stored %+v", snap)
	}
}

// TestRedisStoreSurvivesKill: what Apply returned for is back after
// redis-server is killed with SIGKILL and started again (append-only file),
// through the same client.
func TestRedisStoreSurvivesKill(t *testing.T) {
	srv := redistest.Start(t, redistest.FsyncAlways())
	c := srv.Client()
	s := newRedisStore(t, c, "kill:")
	ctx := t.Context()
	var muts []signaling.Mutation
	for i := range 20 {
		muts = append(muts, signaling.PutGroup{Group: redisGroup(fmt.Sprintf("g%d", i))},
			signaling.AppendOutbox{Entry: redisEntry("bob", int64(i+1))})
	}
	if err := s.Apply(ctx, muts...); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := s.Apply(ctx, signaling.PutInvitation{Invitation: redisInvitation("inv")},
		signaling.SetInviteeState{InviteID: "inv", UserID: "bob", State: signaling.StateAccepted, At: redisT0.Add(time.Second)}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	srv.Kill()
	srv.Restart()

	s2 := newRedisStore(t, c, "kill:")
	snap := loadEventually(t, s2)
	if len(snap.Groups) != 20 || len(snap.Outbox) != 20 || len(snap.Invitations) != 1 {
		t.Fatalf("after kill and restart: %d groups, %d outbox entries, %d invitations; want 20, 20, 1",
			len(snap.Groups), len(snap.Outbox), len(snap.Invitations))
	}
	if st := snap.Invitations[0].Invitees[0].State; st != signaling.StateAccepted {
		t.Errorf("invitee state after restart = %v, want accepted", st)
	}
	if err := s2.Apply(ctx, signaling.PutGroup{Group: redisGroup("g0")}); !errors.Is(err, protocol.ErrGroupExists) {
		t.Errorf("PutGroup of a group from before the kill = %v, want ErrGroupExists", err)
	}
}

// loadEventually retries Load until it succeeds (the client reconnects on
// its own, after its dial back-off) or a deadline passes.
func loadEventually(t *testing.T, s signaling.Store) *signaling.Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, err := s.Load(t.Context())
		if err == nil {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("Load did not succeed within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the client's reconnection, bounded by the deadline
	}
}

// TestRedisStoreUnavailable: while Redis is down every call fails fast with
// an error wrapping ErrStoreUnavailable (what the engine answers as
// store_unavailable), and the same store works again once Redis is back,
// with nothing of the failed calls applied.
func TestRedisStoreUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Client(), "down:")
	ctx := t.Context()
	if err := s.Apply(ctx, signaling.PutGroup{Group: redisGroup("before")}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	srv.Stop()

	calls := map[string]func() error{
		"Apply (no reads)": func() error { return s.Apply(ctx, signaling.PutUser{UserID: "lost"}) },
		"Apply (watched)":  func() error { return s.Apply(ctx, signaling.PutGroup{Group: redisGroup("lost")}) },
		"Load":             func() error { _, err := s.Load(ctx); return err },
		"LoadOutbox":       func() error { _, err := s.LoadOutbox(ctx, "bob", 0, 0); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if !errors.Is(err, protocol.ErrStoreUnavailable) {
			t.Errorf("%s while Redis is down = %v, want ErrStoreUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %v to fail, want it fast", name, d)
		}
	}

	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Apply(ctx, signaling.PutGroup{Group: redisGroup("after")})
		if err == nil {
			break
		}
		if !errors.Is(err, protocol.ErrStoreUnavailable) {
			t.Fatalf("Apply after restart = %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Apply still fails 10s after Redis came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the client's reconnection, bounded by the deadline
	}
	snap := mustLoad(t, s)
	var ids []string
	for _, g := range snap.Groups {
		ids = append(ids, g.ID)
	}
	if strings.Join(ids, ",") != "before,after" || len(snap.Users) != 0 {
		t.Errorf("after the outage: groups %q, users %q; want before,after and no user", ids, snap.Users)
	}
}

// TestRedisStoreCloseLeavesClient: Close ends the store, not the client
// (the caller owns it), and is idempotent.
func TestRedisStoreCloseLeavesClient(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	s := newRedisStore(t, c, "close:")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := s.Apply(t.Context(), signaling.PutUser{UserID: "u"}); !errors.Is(err, protocol.ErrShuttingDown) {
		t.Errorf("Apply after Close = %v, want ErrShuttingDown", err)
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Errorf("the client is closed with the store: %v", err)
	}
}

// roundTrips counts the commands and pipelines a client sends, each one
// round trip to Redis, but for those that set up a new connection (HELLO,
// CLIENT SETINFO).
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() != "client" {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// TestRedisStoreRoundTrips: an Apply whose mutations depend on stored state
// (the engine's usual batch: an invitation and its events' outbox entries)
// takes two round trips (WATCH and the reads in one pipeline, then MULTI/EXEC); one
// that depends on nothing takes one.
func TestRedisStoreRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	h := &roundTrips{}
	c.AddHook(h)
	s := newRedisStore(t, c, "rt:")
	for _, tc := range []struct {
		name string
		muts []signaling.Mutation
		want int64
	}{
		{"invitation with outbox entries", []signaling.Mutation{signaling.PutInvitation{Invitation: redisInvitation("i")},
			signaling.AppendOutbox{Entry: redisEntry("bob", 1)}, signaling.AppendOutbox{Entry: redisEntry("carol", 2)}}, 2},
		{"answer", []signaling.Mutation{signaling.SetInviteeState{InviteID: "i", UserID: "bob", State: signaling.StateAccepted, At: redisT0},
			signaling.DeleteOutbox{UserID: "bob", UpTo: 1}}, 2},
		{"no preconditions", []signaling.Mutation{signaling.DeleteInvitation{InviteID: "i"}, signaling.PutUser{UserID: "bob"},
			signaling.SetCustomStatus{UserID: "bob", Text: "away"}}, 1},
	} {
		before := h.n.Load()
		if err := s.Apply(t.Context(), tc.muts...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := h.n.Load() - before; got != tc.want {
			t.Errorf("%s: %d round trips, want %d", tc.name, got, tc.want)
		}
	}
}
