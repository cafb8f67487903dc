package signaling

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/clocktest"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestApplyLockedComparesInviteeState: applyLocked moves an invitee only
// from the state its SetInviteeState expects (From), and its undo puts the
// invitee back, indexed as ringing again.
func TestApplyLockedComparesInviteeState(t *testing.T) {
	e, err := NewEngine(context.Background(), Params{Config: DefaultConfig(), Store: NewMemoryStore(),
		Clock: clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	id, err := e.Invite(context.Background(), protocol.Actor{UserID: "alice"}, protocol.InviteArgs{Invitee: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	at := e.clock.Now()
	for _, from := range []InviteeState{StateAccepted, StateRejected, StateTimedOut, StateCancelled} {
		_, err := e.applyLocked(SetInviteeState{InviteID: id, UserID: "bob", State: StateAccepted, At: at, From: from})
		if !errors.Is(err, errConflict) {
			t.Fatalf("a move from %s applied to a pending invitee: %v", from, err)
		}
		if st := e.invitations[id].stateOf("bob"); st != StatePending {
			t.Fatalf("bob is %s after a refused move", st)
		}
	}
	c, err := e.applyLocked(SetInviteeState{InviteID: id, UserID: "bob", State: StateAccepted, At: at, From: StatePending})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.invitations[id].stateOf("bob"); st != StateAccepted || len(e.byInvitee["bob"]) != 0 {
		t.Fatalf("bob is %s, ringing %d; want accepted, ringing none", st, len(e.byInvitee["bob"]))
	}
	if _, err := e.applyLocked(SetInviteeState{InviteID: id, UserID: "bob", State: StateRejected, At: at, From: StatePending}); !errors.Is(err, errConflict) {
		t.Fatalf("a second answer applied: %v", err)
	}
	c.undo()
	if st := e.invitations[id].stateOf("bob"); st != StatePending || e.byInvitee["bob"][id] == nil {
		t.Fatalf("after the undo bob is %s, ringing %v; want pending and ringing", st, e.byInvitee["bob"][id] != nil)
	}
}
