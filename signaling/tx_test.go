package signaling_test

import (
	"errors"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestFailedAnswerUndoKeepsAnotherAnswer: an answer whose write fails is
// undone for its invitee only: another invitee's answer, decided and stored
// while the failed write was in flight, stays (the undo restores what the
// failed mutation touched, not the whole invitation as it was).
func TestFailedAnswerUndoKeepsAnotherAnswer(t *testing.T) {
	fs := newGateStore(errors.New("disk on fire"))
	eng, connect := engineOn(t, fs, clocktest.New(t0))
	a, b, c := connect("alice"), connect("bob"), connect("carol")
	connect("dave")
	if _, err := eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "g", Name: "g", MemberList: []string{"bob", "carol", "dave"}}); err != nil {
		t.Fatal(err)
	}
	id, err := eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: "g", InviteeList: []string{"bob", "carol", "dave"}, Timeout: secs(30)})
	if err != nil {
		t.Fatal(err)
	}

	fs.armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id}) }()
	select {
	case <-fs.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's accept never reached the store")
	}
	if err := eng.Reject(ctx, as(c), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	close(fs.release)
	select {
	case err := <-done:
		mustCode(t, err, protocol.ErrStoreUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("bob's accept never returned")
	}
	info, ok := eng.Invitation(id)
	if !ok {
		t.Fatal("the invitation is gone")
	}
	want := map[string]signaling.InviteeState{"bob": signaling.StatePending, "carol": signaling.StateRejected, "dave": signaling.StatePending}
	for u, st := range want {
		if info.States[u] != st {
			t.Fatalf("states %v, want %v", info.States, want)
		}
	}
	// Bob may answer again, and the invitation goes on.
	if err := eng.Accept(ctx, as(b), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Accept(ctx, as(connect("dave")), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := eng.Invitation(id); ok {
		t.Fatal("the invitation is still live after every invitee answered")
	}
}
