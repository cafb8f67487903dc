package calls_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
)

// glareRounds is how many times TestGlareUnderTrueConcurrency makes both
// sides call at the same instant.
const glareRounds = 300

// TestGlareUnderTrueConcurrency: A calls B and B calls A at the same
// instant, over and over. Each round makes exactly one call (one reply is
// merged into the other's call), the merged party never rings after its
// merged reply, and the winner never rings at all.
func TestGlareUnderTrueConcurrency(t *testing.T) {
	wcfg := web.DefaultConfig()
	wcfg.RequestsPerSec, wcfg.RequestBurst = 1_000_000, 1_000_000 // two requests a round
	s := newServer(t, opts{web: &wcfg})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	users := [2]string{"alice", "bob"}
	conns := [2]*client.Client{s.dial(users[0]), s.dial(users[1])}

	// readUntil reads c's frames in wire order until stop matches one.
	readUntil := func(c *client.Client, stop func(client.Event) bool) ([]client.Event, error) {
		var evs []client.Event
		for {
			ev, err := c.Next(ctx)
			if err != nil {
				return evs, err
			}
			evs = append(evs, ev)
			if stop(ev) {
				return evs, nil
			}
		}
	}
	isRing := func(ev client.Event) (string, bool) {
		var v protocol.NewInvitationEvent
		if ev.Name != protocol.EvReceiveNewInvitation || ev.Decode(&v) != nil {
			return "", false
		}
		return v.InviteID, true
	}
	merged := 0
	for round := range glareRounds {
		var res [2]calls.CallResult
		var after [2][]client.Event // each side's events after its reply
		var before [2][]client.Event
		errs := make([]error, 2)
		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		ready.Add(2)
		wg.Add(2)
		for i := range 2 {
			id := fmt.Sprintf("r%d-%d", round, i)
			args, _ := json.Marshal(calls.CallArgs{Invitee: users[1-i], MediaType: calls.MediaAudio})
			frame, _ := json.Marshal(protocol.Request{ID: id, Op: calls.OpCall, Args: args})
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				if errs[i] = conns[i].SendRaw(ctx, frame); errs[i] != nil {
					return
				}
				before[i], errs[i] = readUntil(conns[i], func(ev client.Event) bool { return ev.Reply && ev.ID == id })
				if errs[i] == nil {
					errs[i] = before[i][len(before[i])-1].Decode(&res[i])
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s's call: %v", round, users[i], err)
			}
		}
		if res[0].CallID != res[1].CallID || res[0].Merged == res[1].Merged {
			t.Fatalf("round %d: two calls, not one: %s got %+v, %s got %+v", round, users[0], res[0], users[1], res[1])
		}
		win := 0 // the caller of the one call
		if res[0].Merged {
			win = 1
		}
		merged++
		callID := res[win].CallID
		// The winner hangs up; both read on until the call's end, which
		// follows every frame the two call requests caused.
		if err := conns[win].Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: callID}, nil); err != nil {
			t.Fatalf("round %d: hangup: %v", round, err)
		}
		for i := range 2 {
			evs, err := readUntil(conns[i], func(ev client.Event) bool {
				var e calls.EndEvent
				return ev.Name == calls.EvCallEnd && ev.Decode(&e) == nil && e.CallID == callID
			})
			if err != nil {
				t.Fatalf("round %d: %s waits for the call's end: %v", round, users[i], err)
			}
			after[i] = evs
		}
		for i := range 2 {
			for _, ev := range before[i] {
				if id, ok := isRing(ev); ok && (i == win || id != callID) {
					t.Fatalf("round %d: %s rang for %s before its reply %+v", round, users[i], id, res[i])
				}
			}
			for _, ev := range after[i] {
				if id, ok := isRing(ev); ok {
					t.Fatalf("round %d: %s rang for %s after its reply %+v", round, users[i], id, res[i])
				}
			}
		}
	}
	if merged != glareRounds || s.Calls.Active() != 0 {
		t.Fatalf("%d merged rounds of %d; %d calls still running", merged, glareRounds, s.Calls.Active())
	}
}
