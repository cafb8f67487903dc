package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestReconnectWithManyPendingInvitations is issue #11 item 2: 300 stored
// invitations with timeout 0 pending for ceo were all delivered into the
// send queue of each new connection of ceo at once, which overflowed it:
// closed with 4002 on every reconnect, for good. The replay is now pulled by
// the writer as ceo reads: with a send queue of 8 frames ceo connects,
// receives all 300 and stays connected, on every reconnect.
func TestReconnectWithManyPendingInvitations(t *testing.T) {
	const pending = 300
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.SendQueue = 8
		allowPendingInvitations(&ts.sigCfg, pending)
	})
	ctx := testCtx(t)
	zero := 0
	data := strings.Repeat("x", 1000)
	for i := range pending {
		// One account, as in the report; from the engine, not to wait
		// for the per-connection request rate.
		if _, err := ts.engine.Invite(ctx, protocol.Actor{UserID: "mallory"},
			protocol.InviteArgs{Invitee: "ceo", Data: data, Timeout: &zero}); err != nil {
			t.Fatalf("invitation %d: %v", i, err)
		}
	}
	for round := range 2 {
		start := time.Now()
		ceo := ts.dial("ceo")
		got := map[string]bool{}
		for len(got) < pending {
			ev, err := ceo.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil)
			if err != nil {
				t.Fatalf("round %d: got %d of %d invitations, then %v (connection: %v)", round, len(got), pending, err, ceo.Err())
			}
			var inv protocol.NewInvitationEvent
			if err := ev.Decode(&inv); err != nil {
				t.Fatal(err)
			}
			got[inv.InviteID] = true
		}
		// Still connected, and served.
		if _, err := ceo.GetJoinedGroupList(ctx); err != nil {
			t.Fatalf("round %d: after the replay: %v", round, err)
		}
		t.Logf("round %d: %d pending invitations replayed with a send queue of 8 in %v", round, len(got), time.Since(start).Round(time.Millisecond))
		_ = ceo.Close()
		for ts.engine.Online("ceo") > 0 {
			if time.Since(start) > 10*time.Second {
				t.Fatal("ceo's connection never ended")
			}
			time.Sleep(time.Millisecond)
		}
	}
}
