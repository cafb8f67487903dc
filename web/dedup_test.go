package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestReplyCacheIsBoundedByBytes is issue #11 item 5: connections asking
// getGroupMemberList of a 1,000-member group under 256 distinct ids each
// kept every ~100 KB reply in the duplicate-id cache (10 connections took
// the heap from 3 MB to 270 MB). The cache is bounded by limits.dedup_bytes
// per connection: the heap grows by about that much per connection.
func TestReplyCacheIsBoundedByBytes(t *testing.T) {
	const conns, ids, members = 4, 128, 1000
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.RequestsPerSec, ts.webCfg.RequestBurst = 1e6, 1e6
		ts.webCfg.DedupBytes = 256 << 10
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	owner := ts.dial("owner")
	list := make([]string, 0, members-1)
	for i := range members - 1 {
		list = append(list, fmt.Sprintf("member-with-a-longish-name-%04d", i))
	}
	if _, err := owner.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "big", Name: "Big", MemberList: list}); err != nil {
		t.Fatal(err)
	}
	raw, err := owner.DoRaw(ctx, "probe", protocol.OpGetGroupMemberList, json.RawMessage(`{"groupID":"big"}`))
	if err != nil {
		t.Fatal(err)
	}
	replyBytes := len(raw)

	clients := make([]*client.Client, conns)
	for i := range clients {
		clients[i] = ts.dial("owner")
	}
	before := heapInUse()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				if _, err := c.DoRaw(ctx, fmt.Sprintf("list-%d", i), protocol.OpGetGroupMemberList, json.RawMessage(`{"groupID":"big"}`)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	after := heapInUse()
	growth := int64(after) - int64(before)
	bound := int64(conns*ts.webCfg.DedupBytes) + 4<<20
	t.Logf("%d connections x %d ids x %d-byte replies (%d MB of replies): heap %d -> %d MB (growth %d KB; bound %d KB)",
		conns, ids, replyBytes, conns*ids*replyBytes>>20, before>>20, after>>20, growth>>10, bound>>10)
	if growth > bound {
		t.Fatalf("heap grew by %d KB, more than %d connections x limits.dedup_bytes %d + 4 MB", growth>>10, conns, ts.webCfg.DedupBytes)
	}
	for _, c := range clients { // the cache lives as long as its connection
		if _, err := c.GetJoinedGroupList(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRepeatedIdIsNeverPerformedTwice: a request id whose reply was pushed
// out of the cache by bytes is still known: a repeat is answered
// duplicate_request_id and not performed again; one whose reply is still
// kept gets that reply again.
func TestRepeatedIdIsNeverPerformedTwice(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.RequestsPerSec, ts.webCfg.RequestBurst = 1e6, 1e6
		ts.webCfg.DedupBytes = 4 << 10
	})
	ctx := testCtx(t)
	alice, bob := ts.dial("alice"), ts.dial("bob")
	first, err := alice.DoRaw(ctx, "inv-1", protocol.OpInvite, json.RawMessage(`{"invitee":"bob","data":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
	// Still kept: the same reply again, nothing performed.
	again, err := alice.DoRaw(ctx, "inv-1", protocol.OpInvite, json.RawMessage(`{"invitee":"bob","data":"x"}`))
	if err != nil || string(again) != string(first) {
		t.Fatalf("repeat while kept: %s %v, want %s", again, err, first)
	}
	// Push its reply out by bytes with bigger replies.
	if _, err := alice.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "g", Name: "G", MemberList: []string{"bob", "carol", "dave"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		if _, err := alice.DoRaw(ctx, fmt.Sprintf("list-%d", i), protocol.OpGetGroupMemberList, json.RawMessage(`{"groupID":"g"}`)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = alice.DoRaw(ctx, "inv-1", protocol.OpInvite, json.RawMessage(`{"invitee":"bob","data":"x"}`))
	if !errors.Is(err, protocol.ErrDuplicateID) {
		t.Fatalf("repeat after its reply was dropped: %v, want duplicate_request_id", err)
	}
	if err := bob.ExpectNoEvent(ctx, 200*time.Millisecond, protocol.EvReceiveNewInvitation); err != nil {
		t.Fatalf("the repeated invite was performed again: %v", err)
	}
}
