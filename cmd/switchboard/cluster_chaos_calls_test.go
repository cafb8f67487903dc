package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// The calls part of issue 12's chaos test: a node dies (SIGKILL) while
// calls ring, are accepted and run, with their parties spread over the
// nodes. Slot 0 is the node killed; slots 1 and 2 survive.

const (
	chaosKilled = 0
	// chaosSetupTimeout is calls.setup_timeout: how long an accepted call
	// may go without media, and how long a participant whose node died may
	// stay away before the call ends without them.
	chaosSetupTimeout = 2 * time.Second
	// chaosHeartbeat is calls.heartbeat: a call cut by the node's death
	// ends at most this long before the kill.
	chaosHeartbeat = 200 * time.Millisecond
	// chaosRing is the ring timeout (s) of the call that times out.
	chaosRing = 3
)

// startClusterWith is startCluster with extra flags for every node.
func startClusterWith(t *testing.T, extra ...string) *testCluster {
	t.Helper()
	srv := redistest.Start(t)
	c := &testCluster{t: t, redis: srv, rdb: srv.Client()}
	serverBinary(t)
	for i := range clusterNodes {
		id := fmt.Sprintf("n%d", i+1)
		p := startProc(t, filepath.Join(t.TempDir(), "unused.db"), append(clusterArgs(srv, id), extra...)...)
		c.mu.Lock()
		c.nodes[i], c.ids[i], c.gen[i] = p, id, 1
		c.mu.Unlock()
	}
	return c
}

// chaosCall is one call of the chaos test and its two parties.
type chaosCall struct {
	name           string
	caller, callee string
	at             [2]int // the parties' node slots
	a, b           *client.Client
	r              calls.CallResult
	begin          calls.BeginEvent // if it began
	accepted       time.Time        // when the callee's accept was sent
	endSeen        time.Time        // when a survivor's party got onCallEnd
}

func (cc *chaosCall) String() string {
	return fmt.Sprintf("%s (caller on slot %d, callee on slot %d)", cc.name, cc.at[0], cc.at[1])
}

// arrival is an event a watcher waited for, and when it came (since the
// kill).
type arrival struct {
	ev    client.Event
	after time.Duration
	err   error
}

// TestClusterChaosCalls: SIGKILL one of three nodes while one-to-one calls
// ring, are accepted and run, their parties spread over the nodes (rooms
// are node-local, issue 13: each party's media is in the call's room on
// its own node, and a call begins once both are connected there).
//
//   - run1 (callee's signaling and media on the dead node), run2 (the
//     caller's), run3 (both): the call ends with connection_lost, ended by
//     a party of the dead node, once setup_timeout has passed since that
//     node's last heartbeat; its end is that heartbeat (at most
//     chaosHeartbeat before the kill) and its duration up to it. The
//     survivor gets onCallEnd; the party of the dead node, reconnecting to
//     a survivor, gets the call-end invitation and onCallEnd, once.
//   - back (the callee on the dead node, who reconnects to a survivor and
//     enters the room there at once, within setup_timeout): goes on, and
//     ends by the caller's hangup.
//   - surv (both on survivors, running): goes on; hung up afterwards, it
//     ends with hangup, completed, and one call-end invitation.
//   - acc1, acc2 (accepted, no media yet, a party on the dead node): the
//     setup deadline fires from a survivor: failed.
//   - ringA (the caller on the dead node): the ring times out from a
//     survivor (no_answer), at most maxTimeoutLateness late; ringB (the
//     callee on the dead node): the caller's hangup cancels it; ringC
//     (both on survivors): rejected after the kill as usual.
//
// Each call has a record read with getCallHistory on a survivor by each
// party, and each event reaches each party once.
func TestClusterChaosCalls(t *testing.T) {
	c := startClusterWith(t, "--calls.setup_timeout="+chaosSetupTimeout.String(), "--calls.heartbeat="+chaosHeartbeat.String())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pc := peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true}
	enter := func(cl *client.Client, roomID string) {
		t.Helper()
		r, err := roomclient.Enter(ctx, cl, roomID, roomclient.Options{Peer: pc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
	}
	newCall := func(name string, callerAt, calleeAt, timeout int) *chaosCall {
		t.Helper()
		cc := &chaosCall{name: name, caller: c.user(name + "-a"), callee: c.user(name + "-b"), at: [2]int{callerAt, calleeAt}}
		cc.a, cc.b = c.dial(t, callerAt, cc.caller), c.dial(t, calleeAt, cc.callee)
		attached(t, cc.b)
		if err := cc.a.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: cc.callee, MediaType: calls.MediaAudio, Timeout: ptr(timeout)}, &cc.r); err != nil {
			t.Fatalf("%s: call: %v", cc, err)
		}
		wait(t, cc.b, protocol.EvReceiveNewInvitation, cc.r.InviteID)
		return cc
	}
	accept := func(cc *chaosCall) {
		t.Helper()
		cc.accepted = time.Now()
		if err := cc.b.Accept(ctx, cc.r.InviteID, ""); err != nil {
			t.Fatalf("%s: accept: %v", cc, err)
		}
		wait(t, cc.a, protocol.EvInviteeAccepted, cc.r.InviteID)
	}
	running := func(name string, callerAt, calleeAt int) *chaosCall {
		t.Helper()
		cc := newCall(name, callerAt, calleeAt, 30)
		enter(cc.a, cc.r.RoomID)
		accept(cc)
		enter(cc.b, cc.r.RoomID)
		cc.begin = decodeAs[calls.BeginEvent](t, wait(t, cc.a, calls.EvCallBegin, cc.r.CallID))
		wait(t, cc.b, calls.EvCallBegin, cc.r.CallID)
		t.Logf("%s: began %v after the accept", cc, time.UnixMilli(cc.begin.StartTime).Sub(cc.accepted).Round(time.Millisecond))
		return cc
	}

	// Running calls first (media takes a while), then the accepted ones,
	// then the rings: all of them are in their state at the kill.
	run1, run2, run3, surv := running("run1", 1, chaosKilled), running("run2", chaosKilled, 2),
		running("run3", chaosKilled, chaosKilled), running("surv", 1, 2)
	back := running("back", 1, chaosKilled)
	ringA := newCall("ringA", chaosKilled, 1, chaosRing)
	ringADeadline := time.Now().Add(chaosRing * time.Second) // the deadline is before this bound
	ringB, ringC := newCall("ringB", 1, chaosKilled, 30), newCall("ringC", 1, 2, 30)
	acc1, acc2 := newCall("acc1", chaosKilled, 1, 30), newCall("acc2", 2, chaosKilled, 30)
	accept(acc1)
	accept(acc2)
	time.Sleep(2 * chaosHeartbeat) // a heartbeat of the node to kill after every begin

	c.kill(t, chaosKilled) // SIGKILL, and it has ended
	killed := time.Now()

	// Watch the survivors' parties for the end of each call at once, so
	// that each arrival time is measured on its own.
	watch := func(cl *client.Client, name, id string) <-chan arrival {
		ch := make(chan arrival, 1)
		go func() {
			ctx, cancel := context.WithTimeout(ctx, clusterWait)
			defer cancel()
			ev, err := cl.WaitEvent(ctx, name, byID(id))
			ch <- arrival{ev, time.Since(killed), err}
		}()
		return ch
	}
	ends := map[*chaosCall]<-chan arrival{
		run1: watch(run1.a, calls.EvCallEnd, run1.r.CallID),
		run2: watch(run2.b, calls.EvCallEnd, run2.r.CallID),
		acc1: watch(acc1.b, calls.EvCallEnd, acc1.r.CallID),
		acc2: watch(acc2.a, calls.EvCallEnd, acc2.r.CallID),
	}
	ringATimeout := watch(ringA.b, protocol.EvInvitationTimeout, ringA.r.InviteID)

	// back's callee comes back at once: reconnects to a survivor and
	// enters the call's room there, within setup_timeout of the dead
	// node's last heartbeat: the call goes on.
	backB := c.dial(t, 2, back.callee)
	enter(backB, back.r.RoomID)
	t.Logf("%s: the callee entered the room again on slot 2 %v after the kill", back, time.Since(killed).Round(time.Millisecond))

	// Survivors act on their calls while the dead node's calls end.
	if err := ringB.a.Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: ringB.r.CallID}, nil); err != nil {
		t.Fatalf("%s: hangup after the kill: %v", ringB, err)
	}
	if err := ringC.b.Reject(ctx, ringC.r.InviteID, ""); err != nil {
		t.Fatalf("%s: reject after the kill: %v", ringC, err)
	}
	wait(t, ringC.a, protocol.EvInviteeRejected, ringC.r.InviteID)
	for _, cc := range []*chaosCall{ringB, ringC} {
		if end := decodeAs[calls.EndEvent](t, wait(t, cc.a, calls.EvCallEnd, cc.r.CallID)); end.Reason == calls.EndConnectionLost {
			t.Errorf("%s: onCallEnd %+v", cc, end)
		}
	}

	// The ring of the dead node's caller times out from a survivor.
	got := <-ringATimeout
	if got.err != nil {
		t.Fatalf("%s: the callee's timeout: %v", ringA, got.err)
	}
	late := killed.Add(got.after).Sub(ringADeadline)
	t.Logf("%s: timeout reached the callee %v after the kill, %v after the deadline", ringA, got.after.Round(time.Millisecond), late.Round(time.Millisecond))
	if late > maxTimeoutLateness {
		t.Errorf("%s: timeout %v late, want at most %v", ringA, late, maxTimeoutLateness)
	}

	// The accepted calls fail at their setup deadline; the running ones
	// end with connection_lost once setup_timeout has passed since the
	// dead node's last heartbeat.
	for _, cc := range []*chaosCall{acc1, acc2, run1, run2} {
		got := <-ends[cc]
		if got.err != nil {
			t.Fatalf("%s: the survivor's onCallEnd: %v", cc, got.err)
		}
		end := decodeAs[calls.EndEvent](t, got.ev)
		cc.endSeen = killed.Add(got.after)
		t.Logf("%s: onCallEnd %s reached the survivor %v after the kill (%v after the accept)", cc, end.Reason,
			got.after.Round(time.Millisecond), killed.Add(got.after).Sub(cc.accepted).Round(time.Millisecond))
		switch cc {
		case acc1, acc2:
			if end.Reason != calls.EndFailed || end.Result != calls.ResultFailed || end.DurationMs != 0 {
				t.Errorf("%s: onCallEnd %+v, want failed", cc, end)
			}
			if d := killed.Add(got.after).Sub(cc.accepted); d > chaosSetupTimeout+maxTimeoutLateness {
				t.Errorf("%s: failed %v after the accept, want within setup_timeout %v + %v", cc, d, chaosSetupTimeout, maxTimeoutLateness)
			}
		default:
			by := cc.callee
			if cc == run2 {
				by = cc.caller
			}
			if end.Reason != calls.EndConnectionLost || end.EndedBy != by || end.Result != calls.ResultCompleted || end.DurationMs <= 0 {
				t.Errorf("%s: onCallEnd %+v, want connection_lost by %s", cc, end, by)
			}
			// It ends setup_timeout after the last heartbeat (before the
			// kill), noticed within a node_ttl (900 ms) scan.
			if got.after > chaosSetupTimeout+2*time.Second {
				t.Errorf("%s: ended %v after the kill, want within setup_timeout %v + 2 s", cc, got.after, chaosSetupTimeout)
			}
		}
	}

	// The survivors' running call went on through all of that: it ends by
	// its own hangup, once, with one call-end invitation for the one who
	// hung up.
	hungUp := time.Now()
	if err := surv.a.Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: surv.r.CallID}, nil); err != nil {
		t.Fatalf("%s: hangup: %v", surv, err)
	}
	for _, cl := range []*client.Client{surv.a, surv.b} {
		end := decodeAs[calls.EndEvent](t, wait(t, cl, calls.EvCallEnd, surv.r.CallID))
		if end.Reason != calls.EndHangup || end.EndedBy != surv.caller || end.Result != calls.ResultCompleted ||
			end.DurationMs < lastedAtLeast(hungUp, surv.begin.StartTime) {
			t.Fatalf("%s: onCallEnd %+v, want hangup by %s lasting past the kill", surv, end, surv.caller)
		}
	}
	if _, err := surv.a.WaitEvent(ctx, protocol.EvReceiveNewInvitation, isCallEndInvitation(surv.r.CallID)); err != nil {
		t.Fatalf("%s: call-end invitation: %v", surv, err)
	}
	// So did the call whose callee came back; the caller hangs it up.
	hungUp = time.Now()
	if err := back.a.Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: back.r.CallID}, nil); err != nil {
		t.Fatalf("%s: hangup: %v", back, err)
	}
	for _, cl := range []*client.Client{back.a, backB} {
		end := decodeAs[calls.EndEvent](t, wait(t, cl, calls.EvCallEnd, back.r.CallID))
		if end.Reason != calls.EndHangup || end.EndedBy != back.caller || end.Result != calls.ResultCompleted ||
			end.DurationMs < lastedAtLeast(hungUp, back.begin.StartTime) {
			t.Fatalf("%s: onCallEnd %+v, want hangup by %s lasting past the kill", back, end, back.caller)
		}
	}

	// The dead node's parties reconnect to a survivor once the dead node
	// is cleaned up, and get what they missed.
	c.cleanedUp(t, chaosKilled)
	probe := c.dial(t, 1, c.user("probe"))
	// run3 was entirely on the dead node: no one to tell at its end; its
	// parties, reconnected, get onCallEnd kept for them.
	run3Again := map[string]*client.Client{}
	for _, u := range []string{run3.caller, run3.callee} {
		cl := c.dial(t, 2, u)
		run3Again[u] = cl
		ev, err := cl.WaitEvent(ctx, calls.EvCallEnd, byID(run3.r.CallID))
		if err != nil {
			t.Fatalf("%s: %s reconnected: onCallEnd: %v", run3, u, err)
		}
		t.Logf("%s: %s reconnected, got onCallEnd %v after the kill", run3, u, time.Since(killed).Round(time.Millisecond))
		if end := decodeAs[calls.EndEvent](t, ev); end.Reason != calls.EndConnectionLost {
			t.Errorf("%s: onCallEnd %+v", run3, end)
		}
	}
	again := func(user string) *client.Client { return c.dial(t, 2, user) }
	type missed struct {
		name, id string
		match    func(client.Event) bool
	}
	expect := func(cc *chaosCall, cl *client.Client, user string, want ...missed) []client.Event {
		t.Helper()
		for _, w := range want {
			match := w.match
			if match == nil {
				match = byID(w.id)
			}
			if _, err := cl.WaitEvent(ctx, w.name, match); err != nil {
				t.Fatalf("%s: %s reconnected: %s: %v", cc, user, w.name, err)
			}
		}
		rest := barrier(t, probe, cl, user)
		for _, w := range want {
			match := w.match
			if match == nil {
				match = byID(w.id)
			}
			if n := countIf(rest, w.name, match); n != 0 {
				t.Errorf("%s: %s got %s %d more times", cc, user, w.name, n)
			}
		}
		if n := countIf(rest, protocol.EvReceiveNewInvitation, byID(cc.r.InviteID)); n != 0 {
			t.Errorf("%s: %s rang again %d times", cc, user, n)
		}
		return rest
	}
	ended := func(cc *chaosCall) missed { return missed{name: calls.EvCallEnd, id: cc.r.CallID} }
	callEnd := func(cc *chaosCall) missed {
		return missed{name: protocol.EvReceiveNewInvitation, match: isCallEndInvitation(cc.r.CallID)}
	}
	expect(ringA, again(ringA.caller), ringA.caller, missed{name: protocol.EvInvitationTimeout, id: ringA.r.InviteID}, ended(ringA))
	expect(ringB, again(ringB.callee), ringB.callee, missed{name: protocol.EvInvitationCancelled, id: ringB.r.InviteID})
	expect(acc1, again(acc1.caller), acc1.caller, ended(acc1))
	expect(acc2, again(acc2.callee), acc2.callee, ended(acc2))
	expect(run1, again(run1.callee), run1.callee, callEnd(run1), ended(run1))
	expect(run2, again(run2.caller), run2.caller, callEnd(run2), ended(run2))
	// run3: both were on the dead node; the one who ended it (left first)
	// gets the call-end invitation, the other does not.
	r3 := historyOf(t, c, run3)
	for _, u := range []string{run3.caller, run3.callee} {
		var want []missed
		if u == r3.EndedBy {
			want = append(want, callEnd(run3))
		}
		rest := expect(run3, run3Again[u], u, want...)
		if n := countIf(rest, calls.EvCallEnd, byID(run3.r.CallID)); n != 0 {
			t.Errorf("%s: %s got onCallEnd %d more times", run3, u, n)
		}
		if u == r3.EndedBy {
			continue
		}
		// The one who stayed sent the call-end invitation (the server,
		// on their behalf): their devices see it as its inviter
		// (PROTOCOL.md, the inviter's other devices), once at most, and
		// are not its invitee.
		var own []protocol.NewInvitationEvent
		for _, ev := range rest {
			if ev.Name == protocol.EvReceiveNewInvitation && isCallEndInvitation(run3.r.CallID)(ev) {
				own = append(own, decodeAs[protocol.NewInvitationEvent](t, ev))
			}
		}
		if len(own) > 1 || (len(own) == 1 && (own[0].Inviter != u || !slices.Equal(own[0].InviteeList, []string{r3.EndedBy}))) {
			t.Errorf("%s: %s, who did not end it (%s did), got call-end invitations %+v", run3, u, r3.EndedBy, own)
		}
	}

	// Nothing stored is lost: every call placed has its record, the same
	// for both parties, read on a survivor.
	for _, tc := range []struct {
		cc     *chaosCall
		result calls.Result
		reason calls.EndReason
		by     string
	}{
		{ringA, calls.ResultNoAnswer, calls.EndNoAnswer, ""},
		{ringB, calls.ResultCancelled, calls.EndCancelled, ringB.caller},
		{ringC, calls.ResultRejected, calls.EndRejected, ringC.callee},
		{acc1, calls.ResultFailed, calls.EndFailed, ""},
		{acc2, calls.ResultFailed, calls.EndFailed, ""},
		{run1, calls.ResultCompleted, calls.EndConnectionLost, run1.callee},
		{run2, calls.ResultCompleted, calls.EndConnectionLost, run2.caller},
		{run3, calls.ResultCompleted, calls.EndConnectionLost, r3.EndedBy},
		{surv, calls.ResultCompleted, calls.EndHangup, surv.caller},
		{back, calls.ResultCompleted, calls.EndHangup, back.caller},
	} {
		cc := tc.cc
		for i, u := range []string{cc.caller, cc.callee} {
			ci, ok := historyEntry(t, c.dial(t, 1+i, u), cc.r.CallID)
			if !ok {
				t.Errorf("%s: no record in %s's history", cc, u)
				continue
			}
			if ci.CallResult != tc.result || ci.EndReason != tc.reason || (tc.by != "" && ci.EndedBy != tc.by) || ci.EndedAt == 0 {
				t.Errorf("%s: %s's record: result %q reason %q by %q ended %d; want %q %q %q", cc, u,
					ci.CallResult, ci.EndReason, ci.EndedBy, ci.EndedAt, tc.result, tc.reason, tc.by)
			}
			if tc.reason == calls.EndConnectionLost {
				// Its end is the dead node's last heartbeat, its duration
				// up to it.
				if ci.EndedAt > killed.UnixMilli() || ci.EndedAt < killed.Add(-chaosHeartbeat-500*time.Millisecond).UnixMilli() {
					t.Errorf("%s: ended at %d, want the last heartbeat before the kill at %d (heartbeat %v)", cc, ci.EndedAt, killed.UnixMilli(), chaosHeartbeat)
				}
				// Its party was given setup_timeout from that heartbeat
				// to come back.
				if !cc.endSeen.IsZero() && cc.endSeen.Before(time.UnixMilli(ci.EndedAt).Add(chaosSetupTimeout)) {
					t.Errorf("%s: ended (seen %d) before setup_timeout %v had passed since the heartbeat %d", cc, cc.endSeen.UnixMilli(), chaosSetupTimeout, ci.EndedAt)
				}
				if ci.BeganAt != cc.begin.StartTime || abs64(ci.DurationMs-(ci.EndedAt-ci.BeganAt)) > 1 {
					t.Errorf("%s: began %d (onCallBegin %d), duration %d ms, ended %d", cc, ci.BeganAt, cc.begin.StartTime, ci.DurationMs, ci.EndedAt)
				}
			}
		}
	}
	if r3.EndedBy != run3.caller && r3.EndedBy != run3.callee {
		t.Errorf("%s: ended by %q", run3, r3.EndedBy)
	}
}

func abs64(n int64) int64 { return max(n, -n) }

// historyEntry reads callID in cl's user's call history.
func historyEntry(t *testing.T, cl *client.Client, callID string) (calls.CallInfo, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	var h calls.HistoryResult
	if err := cl.Do(ctx, calls.OpGetCallHistory, calls.HistoryArgs{Limit: 100}, &h); err != nil {
		t.Fatalf("getCallHistory: %v", err)
	}
	_ = cl.Close()
	for _, ci := range h.Calls {
		if ci.CallID == callID {
			return ci, true
		}
	}
	return calls.CallInfo{}, false
}

// historyOf is cc's record in its caller's history, read on a survivor.
func historyOf(t *testing.T, c *testCluster, cc *chaosCall) calls.CallInfo {
	t.Helper()
	ci, ok := historyEntry(t, c.dial(t, 1, cc.caller), cc.r.CallID)
	if !ok {
		t.Fatalf("%s: no record", cc)
	}
	return ci
}

// lastedAtLeast is the shortest durationMs a call that began at
// startTime (onCallBegin's, in ms) and ended after end can report: the
// server truncates both its start time and the duration to the ms, so a
// call hung up within a ms of end reports up to 1 ms less than end −
// startTime (seen: 3,174 against 3,175).
func lastedAtLeast(end time.Time, startTime int64) int64 {
	return end.Sub(time.UnixMilli(startTime)).Milliseconds() - 1
}
