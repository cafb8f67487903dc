package signaling_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// gateStore holds the first Apply after arm until release is closed.
type gateStore struct {
	signaling.Store
	armed   atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

func (g *gateStore) Apply(ctx context.Context, muts ...signaling.Mutation) error {
	if g.armed.CompareAndSwap(true, false) {
		close(g.arrived)
		<-g.release
	}
	return g.Store.Apply(ctx, muts...)
}

// TestInviteeConnectingWhileTheInviteCommitsRingsOnce: an invitee who
// connects while the invitation is being written (decided, not yet
// delivered) gets its ring once: the delivery after the commit reaches the
// new connection, and its replay does not ring it again. It rang twice
// (seen in web's TestRepeatedIdIsNeverPerformedTwice, whose invitee's
// connection reached the engine after the client's dial returned).
func TestInviteeConnectingWhileTheInviteCommitsRingsOnce(t *testing.T) {
	gs := &gateStore{Store: signaling.NewMemoryStore(), arrived: make(chan struct{}), release: make(chan struct{})}
	eng, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Store: gs,
		Clock: clocktest.New(t0), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	connect := func(user string) *session {
		s := &session{user: user}
		if err := eng.Attach(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
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
