package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// The calls part of the chaos tests (issues 12 and 13): a node dies
// (SIGKILL) while calls ring, are accepted and run, with their parties'
// WebSockets spread over the nodes and their rooms each on one media node
// (wherever the first entry placed it: issue 13). Slot 0 is the node
// killed; slots 1 and 2 survive.

const (
	chaosKilled = 0
	// chaosSetupTimeout is calls.setup_timeout: how long an accepted call
	// may go without media, and how long a participant whose media node
	// died may stay away before the call ends without them.
	chaosSetupTimeout = 2 * time.Second
	// chaosHeartbeat is calls.heartbeat: a call cut by the death of its
	// media node ends at most this long before the kill.
	chaosHeartbeat = 200 * time.Millisecond
	// chaosRejoinGrace is media.rejoin_grace: how long a party whose
	// WebSocket's node died keeps its place (and media) in a room on a
	// survivor, waiting for it to come back.
	chaosRejoinGrace = 3 * time.Second
	// chaosNoticed bounds how long the survivors take to notice the death:
	// node_ttl (900 ms, clusterArgs) and a watch period, with slack for
	// a loaded machine.
	chaosNoticed = 2 * time.Second
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
	at             [2]int // the parties' WebSockets' node slots
	room           int    // the slot of the room's media node (-1: no room)
	a, b           *client.Client
	ra, rb         *roomclient.Room // the parties' Rooms, if it runs
	r              calls.CallResult
	begin          calls.BeginEvent // if it began
	accepted       time.Time        // when the callee's accept was sent
	endSeen        time.Time        // when a survivor's party got onCallEnd
}

func (cc *chaosCall) String() string {
	return fmt.Sprintf("%s (caller on slot %d, callee on slot %d, room on slot %d)", cc.name, cc.at[0], cc.at[1], cc.room)
}

// arrival is an event a watcher waited for, and when it came (since the
// kill).
type arrival struct {
	ev    client.Event
	after time.Duration
	err   error
}

// TestClusterChaosCalls: SIGKILL one of three nodes while one-to-one calls
// ring, are accepted and run (with media), their parties' WebSockets spread
// over the nodes and each call's room on one media node (issue 13).
//
//   - run1 (the callee's WebSocket on the dead node, the room on a
//     survivor), run2 (the caller's), run3 (both): the party does not come
//     back. Its place and media stay for media.rejoin_grace after the
//     survivors notice the death; then it leaves with its connection lost
//     and the call ends: connection_lost, ended by that party, at that
//     time, with its duration up to it. The survivor gets onCallEnd; the
//     party, reconnecting to a survivor, gets the call-end invitation and
//     onCallEnd, once.
//   - back (the callee's WebSocket on the dead node, the room on a
//     survivor): the callee's Room reconnects to a survivor and resumes its
//     entry within the grace (same peer): the call goes on, and ends by the
//     caller's hangup with its full duration.
//   - mlost (the room on the dead node, both parties on survivors, whose
//     Rooms do not enter again): the call ends connection_lost once
//     setup_timeout has passed since the dead node's last heartbeat, its
//     end that heartbeat, its duration up to it.
//   - mback (the room on the dead node, both parties on survivors): both
//     get onExitRoom reason 4, their Rooms enter again, the room is placed
//     on a survivor and media flows again both ways; the call goes on, one
//     call, ended by the caller's hangup with its full duration.
//   - surv (both parties and the room on survivors): goes on; hung up
//     afterwards, it ends with hangup, completed, and one call-end
//     invitation.
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
	c := startClusterWith(t, "--calls.setup_timeout="+chaosSetupTimeout.String(), "--calls.heartbeat="+chaosHeartbeat.String(),
		"--media.rejoin_grace="+chaosRejoinGrace.String())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	pc := peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true}
	enter := func(cc *chaosCall, cl *client.Client, opts roomclient.Options) *roomclient.Room {
		t.Helper()
		opts.Peer = pc
		r, err := roomclient.Enter(ctx, cl, cc.r.RoomID, opts)
		if err != nil {
			t.Fatalf("%s: enterRoom: %v", cc, err)
		}
		t.Cleanup(r.Close)
		if cc.room >= 0 && r.Node() != c.nodeID(cc.room) {
			t.Fatalf("%s: entered on media node %s, the room was placed on %s", cc, r.Node(), c.nodeID(cc.room))
		}
		return r
	}
	newCall := func(name string, callerAt, calleeAt, timeout int) *chaosCall {
		t.Helper()
		cc := &chaosCall{name: name, caller: c.user(name + "-a"), callee: c.user(name + "-b"), at: [2]int{callerAt, calleeAt}, room: -1}
		cc.a, cc.b = c.dial(t, callerAt, cc.caller), c.dial(t, calleeAt, cc.callee)
		attached(t, cc.b)
		if err := cc.a.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: cc.callee, MediaType: calls.MediaAudio, Timeout: ptr(timeout)}, &cc.r); err != nil {
			t.Fatalf("%s: call: %v", cc, err)
		}
		wait(t, cc.b, protocol.EvReceiveNewInvitation, cc.r.InviteID)
		return cc
	}
	// placed places a call whose room will be on the node of slot room:
	// the test writes the room's lease (room:<id>, the media node's ID, as
	// the node's claim would) before anyone enters it, so that the first
	// entry goes there (placement by load is TestClusterConcurrentFirstEntry's
	// and TestClusterMediaCall's subject; here each row needs its room on a
	// given side of the kill). enter checks that the room is there.
	placed := func(name string, callerAt, calleeAt, room int) *chaosCall {
		t.Helper()
		cc := newCall(name, callerAt, calleeAt, 30)
		cc.room = room
		if err := c.rdb.Set(ctx, clusterPrefix+"room:"+cc.r.RoomID, c.nodeID(room), 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
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
	running := func(name string, callerAt, calleeAt, room int, ao, bo roomclient.Options) *chaosCall {
		t.Helper()
		cc := placed(name, callerAt, calleeAt, room)
		cc.ra = enter(cc, cc.a, ao)
		accept(cc)
		cc.rb = enter(cc, cc.b, bo)
		cc.begin = decodeAs[calls.BeginEvent](t, wait(t, cc.a, calls.EvCallBegin, cc.r.CallID))
		wait(t, cc.b, calls.EvCallBegin, cc.r.CallID)
		t.Logf("%s: began %v after the accept", cc, time.UnixMilli(cc.begin.StartTime).Sub(cc.accepted).Round(time.Millisecond))
		return cc
	}
	// hearsAudio reports whether r's current peer received n audio packets
	// from user.
	hearsAudio := func(r *roomclient.Room, user string, n uint64) bool {
		return got(r, user, media.KindAudio).Packets >= n
	}

	// Running calls first (media takes a while), then the accepted calls,
	// then the rings: all of them are in their state at the kill.
	stay := roomclient.Options{RejoinTimeout: -1} // does not enter again after reason 4
	mlost := running("mlost", 1, 2, chaosKilled, stay, stay)
	mback := running("mback", 2, 1, chaosKilled, roomclient.Options{}, roomclient.Options{})
	run1 := running("run1", 1, chaosKilled, 1, roomclient.Options{}, roomclient.Options{})
	run2 := running("run2", chaosKilled, 2, 2, roomclient.Options{}, roomclient.Options{})
	run3 := running("run3", chaosKilled, chaosKilled, 1, roomclient.Options{}, roomclient.Options{})
	surv := running("surv", 1, 2, 2, roomclient.Options{}, roomclient.Options{})
	back := &chaosCall{}
	back = running("back", 1, chaosKilled, 2, roomclient.Options{}, roomclient.Options{Redial: func(ctx context.Context) (*client.Client, error) {
		return c.redialer(back.callee, 2)(ctx)
	}})
	for _, cc := range []*chaosCall{mlost, mback, run1, run2, run3, surv, back} {
		waitUntil(t, mediaWithin, cc.name+"'s media both ways", func() bool {
			return hearsAudio(cc.ra, cc.callee, 10) && hearsAudio(cc.rb, cc.caller, 10)
		})
	}
	ringA := newCall("ringA", chaosKilled, 1, chaosRing)
	ringADeadline := time.Now().Add(chaosRing * time.Second) // the deadline is before this bound
	ringB, ringC := newCall("ringB", 1, chaosKilled, 30), newCall("ringC", 1, 2, 30)
	acc1, acc2 := newCall("acc1", chaosKilled, 1, 30), newCall("acc2", 2, chaosKilled, 30)
	accept(acc1)
	accept(acc2)
	time.Sleep(2 * chaosHeartbeat) // a heartbeat of the node to kill after every begin
	backPeer := back.rb.Peer()
	mbackPeers := [2]*peer.Peer{mback.ra.Peer(), mback.rb.Peer()}

	c.kill(t, chaosKilled) // SIGKILL, and it has ended
	killed := time.Now()
	t.Logf("killed slot %d (%s) %v into the test", chaosKilled, c.nodeID(chaosKilled), killed.Sub(start).Round(time.Millisecond))

	// Watch the survivors' parties for the end of each call at once, so
	// that each arrival time is measured on its own.
	watch := func(cl *client.Client, name, id string) <-chan arrival {
		ch := make(chan arrival, 1)
		go func() {
			ctx, cancel := context.WithTimeout(ctx, 2*clusterWait)
			defer cancel()
			ev, err := cl.WaitEvent(ctx, name, byID(id))
			ch <- arrival{ev, time.Since(killed), err}
		}()
		return ch
	}
	ends := map[*chaosCall]<-chan arrival{
		run1:  watch(run1.a, calls.EvCallEnd, run1.r.CallID),
		run2:  watch(run2.b, calls.EvCallEnd, run2.r.CallID),
		mlost: watch(mlost.a, calls.EvCallEnd, mlost.r.CallID),
		acc1:  watch(acc1.b, calls.EvCallEnd, acc1.r.CallID),
		acc2:  watch(acc2.a, calls.EvCallEnd, acc2.r.CallID),
	}
	ringATimeout := watch(ringA.b, protocol.EvInvitationTimeout, ringA.r.InviteID)

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

	// back's callee comes back within the grace: its Room reconnects to
	// slot 2 and resumes its entry, the same peer, its media going on.
	waitUntil(t, clusterWait, back.name+"'s callee to resume on a survivor", func() bool {
		resumed, entered := back.rb.Rejoins()
		if entered > 0 {
			t.Fatalf("%s: the callee entered anew instead of resuming (errors %v)", back, back.rb.Errors())
		}
		return resumed == 1
	})
	if back.rb.Peer() != backPeer {
		t.Fatalf("%s: the callee resumed with a new peer", back)
	}
	t.Logf("%s: the callee resumed on slot 2 %v after the kill", back, time.Since(killed).Round(time.Millisecond))

	// mback's parties are told the media node is lost (reason 4), enter
	// again, and hear each other through the room on a survivor.
	for _, cl := range []*client.Client{mback.a, mback.b} {
		waitMatch(t, cl, rooms.EvExitRoom, exitReason4(mback.r.RoomID))
	}
	waitUntil(t, mediaWithin, mback.name+"'s media again both ways on new peers", func() bool {
		return mback.ra.Peer() != mbackPeers[0] && mback.rb.Peer() != mbackPeers[1] &&
			hearsAudio(mback.ra, mback.callee, 10) && hearsAudio(mback.rb, mback.caller, 10)
	})
	if mback.ra.Node() == c.nodeID(chaosKilled) || mback.ra.Node() != mback.rb.Node() {
		t.Fatalf("%s: after the kill the parties are in rooms on %q and %q", mback, mback.ra.Node(), mback.rb.Node())
	}
	t.Logf("%s: media both ways again through %s %v after the kill", mback, mback.ra.Node(), time.Since(killed).Round(time.Millisecond))

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

	// The accepted calls fail at their setup deadline; mlost ends with
	// connection_lost once setup_timeout has passed since the dead node's
	// last heartbeat; run1 and run2 once their party's rejoin grace is
	// over.
	for _, cc := range []*chaosCall{acc1, acc2, mlost, run1, run2} {
		got := <-ends[cc]
		if got.err != nil {
			t.Fatalf("%s: the survivor's onCallEnd: %v", cc, got.err)
		}
		end := decodeAs[calls.EndEvent](t, got.ev)
		cc.endSeen = killed.Add(got.after)
		t.Logf("%s: onCallEnd %s by %s reached the survivor %v after the kill (%v after the accept)", cc, end.Reason, end.EndedBy,
			got.after.Round(time.Millisecond), killed.Add(got.after).Sub(cc.accepted).Round(time.Millisecond))
		switch cc {
		case acc1, acc2:
			if end.Reason != calls.EndFailed || end.Result != calls.ResultFailed || end.DurationMs != 0 {
				t.Errorf("%s: onCallEnd %+v, want failed", cc, end)
			}
			if d := killed.Add(got.after).Sub(cc.accepted); d > chaosSetupTimeout+maxTimeoutLateness {
				t.Errorf("%s: failed %v after the accept, want within setup_timeout %v + %v", cc, d, chaosSetupTimeout, maxTimeoutLateness)
			}
		case mlost:
			if end.Reason != calls.EndConnectionLost || (end.EndedBy != cc.caller && end.EndedBy != cc.callee) ||
				end.Result != calls.ResultCompleted || end.DurationMs <= 0 {
				t.Errorf("%s: onCallEnd %+v, want connection_lost by a party", cc, end)
			}
			// setup_timeout after the last heartbeat (before the kill),
			// noticed within a node_ttl scan.
			if got.after > chaosSetupTimeout+chaosNoticed {
				t.Errorf("%s: ended %v after the kill, want within setup_timeout %v + %v", cc, got.after, chaosSetupTimeout, chaosNoticed)
			}
		default:
			by := cc.callee
			if cc == run2 {
				by = cc.caller
			}
			if end.Reason != calls.EndConnectionLost || end.EndedBy != by || end.Result != calls.ResultCompleted || end.DurationMs <= 0 {
				t.Errorf("%s: onCallEnd %+v, want connection_lost by %s", cc, end, by)
			}
			// The grace starts when the survivors notice the death.
			if got.after < chaosRejoinGrace || got.after > chaosRejoinGrace+chaosNoticed+time.Second {
				t.Errorf("%s: ended %v after the kill, want after the rejoin grace %v, within %v more", cc, got.after, chaosRejoinGrace, chaosNoticed+time.Second)
			}
		}
	}

	// The calls whose parties are back, or never left, went on through all
	// of that: each ends by its caller's hangup, once, lasting past the
	// kill, with one call-end invitation for the one who hung up.
	for _, cc := range []*chaosCall{surv, back, mback} {
		hungUp := time.Now()
		if err := cc.ra.Client().Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: cc.r.CallID}, nil); err != nil {
			t.Fatalf("%s: hangup: %v", cc, err)
		}
		for _, cl := range []*client.Client{cc.ra.Client(), cc.rb.Client()} {
			end := decodeAs[calls.EndEvent](t, wait(t, cl, calls.EvCallEnd, cc.r.CallID))
			if end.Reason != calls.EndHangup || end.EndedBy != cc.caller || end.Result != calls.ResultCompleted ||
				end.DurationMs < lastedAtLeast(hungUp, cc.begin.StartTime) {
				t.Fatalf("%s: onCallEnd %+v, want hangup by %s lasting past the kill", cc, end, cc.caller)
			}
		}
		if _, err := cc.ra.Client().WaitEvent(ctx, protocol.EvReceiveNewInvitation, isCallEndInvitation(cc.r.CallID)); err != nil {
			t.Fatalf("%s: call-end invitation: %v", cc, err)
		}
	}

	// The dead node's parties reconnect to a survivor once the dead node
	// is cleaned up, and get what they missed.
	c.cleanedUp(t, chaosKilled)
	t.Logf("the dead node cleaned up %v after the kill", time.Since(killed).Round(time.Millisecond))
	probe := c.dial(t, 1, c.user("probe"))
	// run3's parties were both on the dead node: no one to tell at its
	// end; reconnected, they get onCallEnd kept for them.
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
	// mlost: the party who ended it (its media counted lost first) gets the
	// call-end invitation from the other, on the connection it kept.
	ml := historyOf(t, c, mlost)
	mlostBy := mlost.ra.Client()
	if ml.EndedBy == mlost.callee {
		mlostBy = mlost.rb.Client()
	}
	if _, err := mlostBy.WaitEvent(ctx, protocol.EvReceiveNewInvitation, isCallEndInvitation(mlost.r.CallID)); err != nil {
		t.Fatalf("%s: %s's call-end invitation: %v", mlost, ml.EndedBy, err)
	}
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
	const (
		atHeartbeat = "the dead node's last heartbeat"
		afterGrace  = "the end of the rejoin grace"
		pastKill    = "a hangup after the kill"
	)
	for _, tc := range []struct {
		cc     *chaosCall
		result calls.Result
		reason calls.EndReason
		by     string
		end    string
	}{
		{ringA, calls.ResultNoAnswer, calls.EndNoAnswer, "", ""},
		{ringB, calls.ResultCancelled, calls.EndCancelled, ringB.caller, ""},
		{ringC, calls.ResultRejected, calls.EndRejected, ringC.callee, ""},
		{acc1, calls.ResultFailed, calls.EndFailed, "", ""},
		{acc2, calls.ResultFailed, calls.EndFailed, "", ""},
		{mlost, calls.ResultCompleted, calls.EndConnectionLost, ml.EndedBy, atHeartbeat},
		{run1, calls.ResultCompleted, calls.EndConnectionLost, run1.callee, afterGrace},
		{run2, calls.ResultCompleted, calls.EndConnectionLost, run2.caller, afterGrace},
		{run3, calls.ResultCompleted, calls.EndConnectionLost, r3.EndedBy, afterGrace},
		{surv, calls.ResultCompleted, calls.EndHangup, surv.caller, pastKill},
		{back, calls.ResultCompleted, calls.EndHangup, back.caller, pastKill},
		{mback, calls.ResultCompleted, calls.EndHangup, mback.caller, pastKill},
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
			if tc.end == "" {
				continue
			}
			// One call, from its begin, its duration up to its end.
			if ci.BeganAt != cc.begin.StartTime || abs64(ci.DurationMs-(ci.EndedAt-ci.BeganAt)) > 1 {
				t.Errorf("%s: %s's record: began %d (onCallBegin %d), duration %d ms, ended %d", cc, u, ci.BeganAt, cc.begin.StartTime, ci.DurationMs, ci.EndedAt)
			}
			ended := time.UnixMilli(ci.EndedAt)
			switch tc.end {
			case atHeartbeat:
				if ended.After(killed) || ended.Before(killed.Add(-chaosHeartbeat-500*time.Millisecond)) {
					t.Errorf("%s: ended at %d, want %s before the kill at %d (heartbeat %v)", cc, ci.EndedAt, tc.end, killed.UnixMilli(), chaosHeartbeat)
				}
				// Its parties were given setup_timeout from that
				// heartbeat to come back.
				if cc.endSeen.Before(ended.Add(chaosSetupTimeout)) {
					t.Errorf("%s: ended (seen %d) before setup_timeout %v had passed since the heartbeat %d", cc, cc.endSeen.UnixMilli(), chaosSetupTimeout, ci.EndedAt)
				}
			case afterGrace:
				if ended.Before(killed.Add(chaosRejoinGrace)) || ended.After(killed.Add(chaosRejoinGrace+chaosNoticed+time.Second)) {
					t.Errorf("%s: ended %v after the kill, want %s (%v after the death was noticed)", cc, ended.Sub(killed), tc.end, chaosRejoinGrace)
				}
			case pastKill:
				if !ended.After(killed) {
					t.Errorf("%s: ended %v, before the kill %v", cc, ended, killed)
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
