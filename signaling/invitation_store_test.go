package signaling_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// gateStore holds the first Apply after armed is set until release is
// closed, then applies it, or fails it with fail when fail is set.
type gateStore struct {
	signaling.Store
	fail    error
	armed   atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

// newGateStore is a gateStore on a memory store.
func newGateStore(fail error) *gateStore {
	return &gateStore{Store: signaling.NewMemoryStore(), fail: fail, arrived: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateStore) Apply(ctx context.Context, muts ...signaling.Mutation) error {
	if g.armed.CompareAndSwap(true, false) {
		close(g.arrived)
		<-g.release
		if g.fail != nil {
			return g.fail
		}
	}
	return g.Store.Apply(ctx, muts...)
}

// engineOn starts an engine on store with clock, and returns it with
// connect, which attaches a new session of user (keeping what it receives).
func engineOn(t *testing.T, store signaling.Store, clock *clocktest.Clock) (*signaling.Engine, func(user string) *session) {
	t.Helper()
	eng, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Store: store,
		Clock: clock, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return eng, func(user string) *session {
		t.Helper()
		s := &session{user: user}
		if err := eng.Attach(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// TestInviteeConnectingWhileTheInviteCommitsRingsOnce: an invitee who
// connects while the invitation is being written (decided, not yet
// delivered) gets its ring once: the delivery after the commit reaches the
// new connection, and its replay does not ring it again. It rang twice
// (seen in web's TestRepeatedIdIsNeverPerformedTwice, whose invitee's
// connection reached the engine after the client's dial returned).
func TestInviteeConnectingWhileTheInviteCommitsRingsOnce(t *testing.T) {
	gs := newGateStore(nil)
	eng, connect := engineOn(t, gs, clocktest.New(t0))
	a := connect("alice")
	eng.Detach(connect("bob")) // known, offline

	gs.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := eng.Invite(context.Background(), as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
		done <- err
	}()
	select {
	case <-gs.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the invitation never reached the store")
	}
	b := connect("bob") // while the invitation is being written
	close(gs.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the invite never returned")
	}
	b.drain()
	rings := 0
	for _, name := range b.names() {
		if name == protocol.EvReceiveNewInvitation {
			rings++
		}
	}
	if rings != 1 {
		t.Fatalf("bob was rung %d times, want once", rings)
	}
}

// recordStore records the mutations of every Apply.
type recordStore struct {
	signaling.Store
	mu   sync.Mutex
	muts [][]signaling.Mutation
}

func (r *recordStore) Apply(ctx context.Context, muts ...signaling.Mutation) error {
	r.mu.Lock()
	r.muts = append(r.muts, muts)
	r.mu.Unlock()
	return r.Store.Apply(ctx, muts...)
}

func (r *recordStore) take() [][]signaling.Mutation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.muts
	r.muts = nil
	return out
}

// TestEndedInvitationWritesItsDeletionOnly (issue 16): an answer, cancel or
// timeout that ends an invitation writes its deletion, which takes the
// invitees' states with it, and not the states first; an answer that does
// not end it writes the state.
func TestEndedInvitationWritesItsDeletionOnly(t *testing.T) {
	rs := &recordStore{Store: signaling.NewMemoryStore()}
	clock := clocktest.New(t0)
	eng, connect := engineOn(t, rs, clock)
	a, b, c := connect("alice"), connect("bob"), connect("carol")
	kinds := func(what string) []string {
		var out []string
		for _, muts := range rs.take() {
			for _, m := range muts {
				out = append(out, fmt.Sprintf("%T", m))
			}
		}
		t.Logf("%s: %v", what, out)
		return out
	}
	want := func(what string, got []string, w ...string) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("%s wrote %v, want %v", what, got, w)
		}
	}
	kinds("connections")

	id, err := eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
	if err != nil {
		t.Fatal(err)
	}
	kinds("invite")
	if err := eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	want("the accept that ends it", kinds("accept"), "signaling.DeleteInvitation")

	if _, err := eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "g", Name: "g", MemberList: []string{"bob", "carol"}}); err != nil {
		t.Fatal(err)
	}
	kinds("group")
	gid, err := eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: "g", InviteeList: []string{"bob", "carol"}, Timeout: secs(30)})
	if err != nil {
		t.Fatal(err)
	}
	kinds("group invite")
	if err := eng.Reject(ctx, as(b), protocol.InviteIDArgs{InviteID: gid}); err != nil {
		t.Fatal(err)
	}
	want("a reject that does not end it", kinds("reject"), "signaling.SetInviteeState")
	if err := eng.Accept(ctx, as(c), protocol.InviteIDArgs{InviteID: gid}); err != nil {
		t.Fatal(err)
	}
	want("the last answer", kinds("last accept"), "signaling.DeleteInvitation")

	id, err = eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
	if err != nil {
		t.Fatal(err)
	}
	kinds("invite")
	if err := eng.Cancel(ctx, as(a), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	want("a cancel", kinds("cancel"), "signaling.DeleteInvitation")

	if _, err := eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", Timeout: secs(10)}); err != nil {
		t.Fatal(err)
	}
	kinds("invite")
	clock.Advance(10 * time.Second)
	got := kinds("timeout")
	if !slices.Contains(got, "signaling.DeleteInvitation") || slices.Contains(got, "signaling.SetInviteeState") {
		t.Fatalf("a timeout wrote %v, want its deletion and no state", got)
	}
}
