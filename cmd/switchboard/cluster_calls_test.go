package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// The calls scenarios of CALLS.md (issue 12) on the three-node cluster of
// cluster_test.go: real processes, one Redis, the parties spread over the
// nodes. Every placement of a row has some step decided on a node other
// than the one that holds the call's other state (the call placed on one
// node and answered, hung up, rejected, cancelled or read on another), so
// that each row fails when the nodes do not share the calls' state.

// glareRounds is how many times the glare row makes its two parties call
// each other at the same instant, per placement.
const glareRounds = 20

// callPeer is the media side of a call's participant: audio only, enough
// for its media to connect in the room.
var callPeer = peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	t.Cleanup(cancel)
	return ctx
}

// placeCall has cl's user call invitee with the call op.
func placeCall(t *testing.T, cl *client.Client, invitee string, timeout *int) calls.CallResult {
	t.Helper()
	var res calls.CallResult
	if err := cl.Do(callCtx(t), calls.OpCall, calls.CallArgs{Invitee: invitee, MediaType: calls.MediaAudio, Timeout: timeout}, &res); err != nil {
		t.Fatalf("call %s: %v", invitee, err)
	}
	if res.CallID == "" || res.InviteID == "" || res.RoomID == "" || res.Merged {
		t.Fatalf("call %s: %+v", invitee, res)
	}
	return res
}

// isCallEndInvitation matches the server's call-end invitation of callID
// (CALLS.md step 5: sender "server", call_end set).
func isCallEndInvitation(callID string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		if ev.Decode(&v) != nil {
			return false
		}
		cd, ok, err := calls.ParseCallData(v.Data)
		return ok && err == nil && cd.IsCallEnd() && cd.FromServer() && strings.Contains(v.Data, callID)
	}
}

// countIf returns how many of evs are named name and match.
func countIf(evs []client.Event, name string, match func(client.Event) bool) int {
	n := 0
	for _, ev := range evs {
		if ev.Name == name && match(ev) {
			n++
		}
	}
	return n
}

// callEnd waits for cl's onCallEnd of callID and checks its reason,
// result and who ended it.
func callEnd(t *testing.T, cl *client.Client, who, callID string, reason calls.EndReason, result calls.Result, endedBy string) calls.EndEvent {
	t.Helper()
	end := decodeAs[calls.EndEvent](t, wait(t, cl, calls.EvCallEnd, callID))
	if end.Reason != reason || end.Result != result || end.EndedBy != endedBy {
		t.Fatalf("%s's onCallEnd %+v, want reason %q result %q by %q", who, end, reason, result, endedBy)
	}
	return end
}

// historyRecord reads user's call history on the node of slot i (a new device)
// and returns its one record, checked against the call's outcome.
func historyRecord(t *testing.T, c *testCluster, i int, user, callID string, result calls.Result, reason calls.EndReason, endedBy string) calls.CallInfo {
	t.Helper()
	cl := c.dial(t, i, user)
	var h calls.HistoryResult
	if err := cl.Do(callCtx(t), calls.OpGetCallHistory, calls.HistoryArgs{}, &h); err != nil {
		t.Fatal(err)
	}
	_ = cl.Close()
	if len(h.Calls) != 1 || h.Calls[0].CallID != callID {
		t.Fatalf("%s's history read on node %s: %+v, want the one call %s", user, c.nodeID(i), h.Calls, callID)
	}
	ci := h.Calls[0]
	if ci.CallResult != result || ci.EndReason != reason || ci.EndedBy != endedBy || ci.EndedAt == 0 {
		t.Fatalf("%s's record read on node %s: result %q reason %q by %q ended %d, want %q %q %q",
			user, c.nodeID(i), ci.CallResult, ci.EndReason, ci.EndedBy, ci.EndedAt, result, reason, endedBy)
	}
	return ci
}

// callRow is one row of the calls table: run with its parties on the node
// slots of each of placements.
type callRow struct {
	name       string
	placements [][]int
	run        func(t *testing.T, c *testCluster, at []int)
}

// TestClusterCallScenarios runs the calls scenarios of CALLS.md on a
// three-node cluster with their parties spread over the nodes.
func TestClusterCallScenarios(t *testing.T) {
	c := startCluster(t)
	rows := []callRow{
		// A begun call (media connected: each party's peer in the call's
		// room on its own node, rooms being node-local until issue 13)
		// hung up: at = alice, bob, the node the hangup is sent from (a
		// second device of the hanger there, unless it is the hanger's
		// own node), the node history is read on; hanger 0 alice, 1 bob.
		{name: "one-to-one call: hangup, call-end invitation, history", placements: [][]int{
			{0, 1, 1, 2, 1}, // bob hangs up on node 2
			{0, 1, 0, 2, 0}, // alice hangs up on node 1
			{0, 0, 2, 1, 1}, // both on node 1; bob hangs up from a device on node 3
			{2, 0, 2, 1, 0}, // alice hangs up on node 3
		}, run: func(t *testing.T, c *testCluster, at []int) {
			users := [2]string{c.user("alice"), c.user("bob")}
			devs := [2]*client.Client{c.dial(t, at[0], users[0]), c.dial(t, at[1], users[1])}
			hanger := at[4]
			stayer := 1 - hanger
			call := placeCall(t, devs[0], users[1], ptr(30))
			ra, err := roomclient.Enter(callCtx(t), devs[0], call.RoomID, roomclient.Options{Peer: callPeer})
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()
			wait(t, devs[1], protocol.EvReceiveNewInvitation, call.InviteID)
			if err := devs[1].Accept(callCtx(t), call.InviteID, ""); err != nil {
				t.Fatal(err)
			}
			rb, err := roomclient.Enter(callCtx(t), devs[1], call.RoomID, roomclient.Options{Peer: callPeer})
			if err != nil {
				t.Fatal(err)
			}
			defer rb.Close()
			for _, d := range devs {
				wait(t, d, calls.EvCallBegin, call.CallID)
			}
			time.Sleep(50 * time.Millisecond) // a duration above zero
			hd := devs[hanger]
			if at[2] != at[hanger] {
				hd = c.dial(t, at[2], users[hanger])
			}
			if err := hd.Do(callCtx(t), calls.OpHangup, calls.CallIDArgs{CallID: call.CallID}, nil); err != nil {
				t.Fatalf("hangup on node %s: %v", c.nodeID(at[2]), err)
			}
			var end calls.EndEvent
			for i, d := range devs {
				end = callEnd(t, d, users[i], call.CallID, calls.EndHangup, calls.ResultCompleted, users[hanger])
			}
			if end.DurationMs <= 0 {
				t.Fatalf("onCallEnd %+v: a begun call without duration", end)
			}
			// CALLS.md step 5: the party that stayed sends the party that
			// left the call-end invitation; both get it once (the leaver as
			// its invitee, the stayer's devices as its inviter's copy).
			for i, d := range devs {
				inv := decodeAs[protocol.NewInvitationEvent](t, waitMatch(t, d, protocol.EvReceiveNewInvitation, isCallEndInvitation(call.CallID)))
				if inv.Inviter != users[stayer] || inv.Timeout != 0 || !slices.Equal(inv.InviteeList, []string{users[hanger]}) {
					t.Fatalf("%s's call-end invitation %+v, want from %s to %s with timeout 0", users[i], inv, users[stayer], users[hanger])
				}
			}
			sender := c.dial(t, at[3], c.user("marker"))
			for i, d := range devs {
				evs := barrier(t, sender, d, users[i])
				if n := countIf(evs, protocol.EvReceiveNewInvitation, isCallEndInvitation(call.CallID)); n != 0 {
					t.Errorf("%s got %d more call-end invitations, want exactly one", users[i], n)
				}
				if n := count(evs, calls.EvCallEnd, call.CallID) + count(evs, calls.EvCallBegin, call.CallID); n != 0 {
					t.Errorf("%s got %d more onCallBegin/onCallEnd", users[i], n)
				}
			}
			for i := range users {
				ci := historyRecord(t, c, at[3], users[i], call.CallID, calls.ResultCompleted, calls.EndHangup, users[hanger])
				if ci.BeganAt == 0 || ci.DurationMs != end.DurationMs || ci.Result != calls.ResultCompleted {
					t.Fatalf("%s's record %+v, want begun, %d ms, completed", users[i], ci, end.DurationMs)
				}
			}
		}},
		// Busy line: alice (at[0]) calls bob (at[1]), who accepts; carol
		// (at[2]) then calls bob, who has a second device on at[3].
		{name: "busy line: the callee in a call rejects with line_busy, never rings", placements: [][]int{
			{0, 1, 2, 0}, // the issue's: alice node 1, bob node 2, carol node 3
			{0, 0, 1, 2}, // the call on node 1, carol on node 2
			{2, 1, 0, 1},
		}, run: func(t *testing.T, c *testCluster, at []int) {
			a, b, cr := c.user("alice"), c.user("bob"), c.user("carol")
			alice, bob, carol, bob2 := c.dial(t, at[0], a), c.dial(t, at[1], b), c.dial(t, at[2], cr), c.dial(t, at[3], b)
			first := placeCall(t, alice, b, ptr(30))
			wait(t, bob, protocol.EvReceiveNewInvitation, first.InviteID)
			wait(t, bob2, protocol.EvReceiveNewInvitation, first.InviteID)
			if err := bob.Accept(callCtx(t), first.InviteID, ""); err != nil {
				t.Fatal(err)
			}
			wait(t, alice, protocol.EvInviteeAccepted, first.InviteID)
			second := placeCall(t, carol, b, ptr(30))
			rej := decodeAs[protocol.InviteeEvent](t, wait(t, carol, protocol.EvInviteeRejected, second.InviteID))
			cd, ok, err := calls.ParseCallData(rej.Data)
			if rej.Invitee != b || !ok || err != nil || !strings.Contains(rej.Data, `"line_busy":"line_busy"`) {
				t.Fatalf("rejection %+v (%v, %v), want bob's line_busy", rej, cd, err)
			}
			callEnd(t, carol, cr, second.CallID, calls.EndBusy, calls.ResultBusy, b)
			for _, d := range []*client.Client{bob, bob2} {
				wait(t, d, calls.EvCallMissed, second.CallID)
			}
			sender := c.dial(t, at[2], c.user("marker"))
			for _, d := range []*client.Client{bob, bob2} {
				if n := count(barrier(t, sender, d, b), protocol.EvReceiveNewInvitation, second.InviteID); n != 0 {
					t.Fatalf("busy bob's device rang %d times for carol's call", n)
				}
			}
			historyRecord(t, c, at[0], cr, second.CallID, calls.ResultBusy, calls.EndBusy, b)
			// alice's call goes on: alice hangs up, and it ends then.
			if err := alice.Do(callCtx(t), calls.OpHangup, calls.CallIDArgs{CallID: first.CallID}, nil); err != nil {
				t.Fatalf("hangup of the first call: %v", err)
			}
			callEnd(t, bob, b, first.CallID, calls.EndHangup, calls.ResultFailed, a)
		}},
		// Glare: alice (at[0]) and bob (at[1]) call each other at the same
		// instant, glareRounds times.
		{name: "glare: exactly one call", placements: [][]int{{0, 1}, {1, 2}, {2, 0}}, run: func(t *testing.T, c *testCluster, at []int) {
			users := [2]string{c.user("alice"), c.user("bob")}
			devs := [2]*client.Client{c.dial(t, at[0], users[0]), c.dial(t, at[1], users[1])}
			for _, d := range devs {
				attached(t, d)
			}
			type round struct {
				callID string
				winner int
			}
			var rounds []round
			for r := range glareRounds {
				var res [2]calls.CallResult
				var errs [2]error
				var ready, done sync.WaitGroup
				start := make(chan struct{})
				ready.Add(2)
				done.Add(2)
				for i := range 2 {
					go func() {
						defer done.Done()
						ready.Done()
						<-start
						errs[i] = devs[i].Do(callCtx(t), calls.OpCall, calls.CallArgs{Invitee: users[1-i], MediaType: calls.MediaAudio, Timeout: ptr(30)}, &res[i])
					}()
				}
				ready.Wait()
				close(start)
				done.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d: %s's call: %v", r, users[i], err)
					}
				}
				if res[0].CallID == "" || res[0].CallID != res[1].CallID || res[0].Merged == res[1].Merged {
					t.Fatalf("round %d: not one call: alice got %+v, bob got %+v", r, res[0], res[1])
				}
				win := 0
				if res[0].Merged {
					win = 1
				}
				// The merged party accepted the winner's call: the winner
				// hears of it, and hangs up.
				wait(t, devs[win], protocol.EvInviteeAccepted, res[win].CallID)
				if err := devs[win].Do(callCtx(t), calls.OpHangup, calls.CallIDArgs{CallID: res[win].CallID}, nil); err != nil {
					t.Fatalf("round %d: hangup: %v", r, err)
				}
				callEnd(t, devs[1-win], users[1-win], res[win].CallID, calls.EndHangup, calls.ResultFailed, users[win])
				rounds = append(rounds, round{res[win].CallID, win})
			}
			sender := c.dial(t, at[1], c.user("marker"))
			evs := [2][]client.Event{barrier(t, sender, devs[0], users[0]), barrier(t, sender, devs[1], users[1])}
			wins := 0
			for r, rd := range rounds {
				if n := count(evs[rd.winner], protocol.EvReceiveNewInvitation, rd.callID); n != 0 {
					t.Errorf("round %d: the winner rang %d times for its own call", r, n)
				}
				if n := count(evs[1-rd.winner], protocol.EvReceiveNewInvitation, rd.callID); n > 1 {
					t.Errorf("round %d: the merged party rang %d times", r, n)
				}
				wins += rd.winner
			}
			// Exactly one record per round, read from the third node.
			var h calls.HistoryResult
			reader := c.dial(t, 3-at[0]-at[1], users[0])
			if err := reader.Do(callCtx(t), calls.OpGetCallHistory, calls.HistoryArgs{Limit: 100}, &h); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ci := range h.Calls {
				got = append(got, ci.CallID)
			}
			var want []string
			for _, rd := range slices.Backward(rounds) {
				want = append(want, rd.callID)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("alice's history: %v, want one call per round, newest first: %v", got, want)
			}
			t.Logf("%d rounds: bob's call won %d", glareRounds, wins)
		}},
		// A call's invitation answered or not. Rejected: at = alice, bob
		// (ringing), the node bob rejects from (a second device there,
		// unless it is bob's own node), the node history is read on.
		{name: "reject across nodes", placements: [][]int{{0, 1, 1, 2}, {0, 0, 1, 2}, {2, 1, 1, 0}}, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			rejecter := bob
			if at[2] != at[1] {
				rejecter = c.dial(t, at[2], b)
				attached(t, rejecter)
			}
			call := placeCall(t, alice, b, ptr(30))
			wait(t, bob, protocol.EvReceiveNewInvitation, call.InviteID)
			if rejecter != bob {
				wait(t, rejecter, protocol.EvReceiveNewInvitation, call.InviteID)
			}
			if err := rejecter.Reject(callCtx(t), call.InviteID, ""); err != nil {
				t.Fatal(err)
			}
			wait(t, alice, protocol.EvInviteeRejected, call.InviteID)
			callEnd(t, alice, a, call.CallID, calls.EndRejected, calls.ResultRejected, b)
			historyRecord(t, c, at[3], a, call.CallID, calls.ResultRejected, calls.EndRejected, b)
			historyRecord(t, c, at[3], b, call.CallID, calls.ResultRejected, calls.EndRejected, b)
		}},
		// Cancelled by alice's second device (at[2]); timed out (1 s):
		// at = alice, bob, the node of alice's second device or of the
		// history read.
		{name: "cancel across nodes", placements: [][]int{{0, 1, 2}, {0, 0, 1}, {2, 1, 0}}, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			alice2 := c.dial(t, at[2], a)
			call := placeCall(t, alice, b, ptr(30))
			wait(t, bob, protocol.EvReceiveNewInvitation, call.InviteID)
			if err := alice2.Cancel(callCtx(t), call.InviteID, ""); err != nil {
				t.Fatalf("cancel on node %s: %v", c.nodeID(at[2]), err)
			}
			wait(t, bob, protocol.EvInvitationCancelled, call.InviteID)
			for _, d := range []*client.Client{alice, alice2} {
				callEnd(t, d, a, call.CallID, calls.EndCancelled, calls.ResultCancelled, a)
			}
			historyRecord(t, c, at[2], b, call.CallID, calls.ResultCancelled, calls.EndCancelled, a)
			if err := bob.Accept(callCtx(t), call.InviteID, ""); invitationCode(err) != protocol.ErrInvalidInviteID.Code {
				t.Fatalf("accept after cancel: %v, want 8010", err)
			}
		}},
		{name: "timeout across nodes", placements: [][]int{{0, 1, 2}, {0, 0, 1}, {2, 1, 0}}, run: func(t *testing.T, c *testCluster, at []int) {
			a, b := c.user("alice"), c.user("bob")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			call := placeCall(t, alice, b, ptr(1))
			wait(t, bob, protocol.EvReceiveNewInvitation, call.InviteID)
			for _, d := range []*client.Client{alice, bob} {
				wait(t, d, protocol.EvInvitationTimeout, call.InviteID)
			}
			callEnd(t, alice, a, call.CallID, calls.EndNoAnswer, calls.ResultNoAnswer, "")
			historyRecord(t, c, at[2], a, call.CallID, calls.ResultNoAnswer, calls.EndNoAnswer, "")
			ci := historyRecord(t, c, at[2], b, call.CallID, calls.ResultNoAnswer, calls.EndNoAnswer, "")
			if ci.Result != calls.ResultMissed {
				t.Fatalf("bob's result %q, want missed", ci.Result)
			}
		}},
	}
	for _, row := range rows {
		for _, at := range row.placements {
			t.Run(fmt.Sprintf("%s/nodes%v", row.name, at), func(t *testing.T) { row.run(t, c, at) })
		}
	}
}

// waitMatch waits for the event name on cl that match matches.
func waitMatch(t *testing.T, cl *client.Client, name string, match func(client.Event) bool) client.Event {
	t.Helper()
	ev, err := cl.WaitEvent(callCtx(t), name, match)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return ev
}
