package signaling_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// holdCleanup keeps the survivors from cleaning node up (its cleanup is
// claimed by a node that does not exist) until the returned func runs.
func (h *clusterHarness) holdCleanup(node string) (release func()) {
	h.t.Helper()
	key := h.prefix + "cleanup:" + node
	if err := h.srv.Client().Set(ctx, key, "hold", time.Minute).Err(); err != nil {
		h.t.Fatal(err)
	}
	return func() {
		if err := h.srv.Client().Del(ctx, key).Err(); err != nil {
			h.t.Error(err)
		}
	}
}

// cleanedUp waits until node's stream is gone (its cleanup finished).
func (h *clusterHarness) cleanedUp(node string) {
	h.t.Helper()
	h.eventually(func() string {
		if n, _ := h.srv.Client().Exists(ctx, h.prefix+"ev:"+node).Result(); n != 0 {
			return node + "'s stream is still there: not cleaned up"
		}
		return ""
	})
}

// TestClusterDeadNodeEventsToLiveConnection: a user's node dies and the
// user reconnects on another node before a survivor cleaned the dead node
// up. The events decided meanwhile went to the dead node's stream (it
// still counted); the cleanup hands them over to the live connection, once,
// and keeps nothing. An event decided after the reconnection went to both
// nodes and is not delivered twice.
func TestClusterDeadNodeEventsToLiveConnection(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	h.start("C")
	alice, bob := h.connect("A", "alice"), h.connect("C", "bob")
	inv1 := h.invite("A", alice, "bob")
	inv2 := h.invite("A", alice, "bob")
	h.expect(bob, protocol.EvReceiveNewInvitation, protocol.EvReceiveNewInvitation)
	release := h.holdCleanup("A")
	h.kill("A")
	// Decided while alice's only connection is on the dead node.
	if err := h.nodes["C"].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: inv1}); err != nil {
		t.Fatal(err)
	}
	alice2 := h.connect("B", "alice")
	h.expect(alice2)
	// Decided once she is on B too (A still counts): routed to both.
	if err := h.nodes["C"].Reject(ctx, as(bob), protocol.InviteIDArgs{InviteID: inv2}); err != nil {
		t.Fatal(err)
	}
	// The two answers and the sync marker.
	if n, err := srv.Client().XLen(ctx, h.prefix+"ev:A").Result(); err != nil || n != 3 {
		t.Fatalf("A's stream holds %d entries (%v), want 3", n, err)
	}
	release()
	h.cleanedUp("A")
	evs := h.expect(alice2, protocol.EvInviteeRejected, protocol.EvInviteeAccepted)
	if a := decode[protocol.InviteeEvent](t, evs[1]); a.InviteID != inv1 || a.Invitee != "bob" {
		t.Fatalf("bad accept %+v", a)
	}
	if k := h.kept(); k != 0 {
		t.Fatalf("kept bytes %d: the handed-over event was kept as well", k)
	}
	h.nodes["B"].Detach(alice2)
	h.expect(h.connect("B", "alice"))
}

// TestClusterDeadNodeHandoverRace: the user connects on another node at
// the moment a survivor hands the dead node's events over: each event
// reaches the new connection exactly once, by its replay or live.
func TestClusterDeadNodeHandoverRace(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	bob := h.connect("B", "bob")
	for round := range 5 {
		node, user := fmt.Sprintf("D%d", round), fmt.Sprintf("alice%d", round)
		h.start(node)
		alice := h.connect(node, user)
		id := h.invite(node, alice, "bob")
		h.expect(bob, protocol.EvReceiveNewInvitation)
		release := h.holdCleanup(node)
		h.kill(node)
		if err := h.nodes["B"].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
			t.Fatal(err)
		}
		release()
		// Attach as soon as a survivor claims the cleanup.
		var wg sync.WaitGroup
		var alice2 *session
		wg.Go(func() {
			key := h.prefix + "cleanup:" + node
			deadline := time.Now().Add(clusterWait)
			for time.Now().Before(deadline) {
				if v, _ := srv.Client().Get(ctx, key).Result(); v != "" {
					break
				}
				time.Sleep(time.Millisecond)
			}
			alice2 = &session{user: user}
			if err := h.nodes["A"].Attach(ctx, alice2); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		alice2.drain()
		h.cleanedUp(node)
		evs := h.expect(alice2, protocol.EvInviteeAccepted)
		if a := decode[protocol.InviteeEvent](t, evs[0]); a.InviteID != id {
			t.Fatalf("round %d: bad accept %+v", round, a)
		}
		h.eventually(func() string {
			if k := h.kept(); k != 0 {
				return fmt.Sprintf("round %d: kept bytes %d after the replay", round, k)
			}
			return ""
		})
		h.nodes["A"].Detach(alice2)
	}
}
