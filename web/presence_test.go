package web_test

import (
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// waitStatus waits for an onUserStatusChanged about user and returns it.
func waitStatus(t *testing.T, c *client.Client, user string) protocol.UserStatus {
	t.Helper()
	ev, err := c.WaitEvent(testCtx(t), protocol.EvUserStatusChanged, func(ev client.Event) bool {
		var r protocol.UserStatusResult
		return ev.Decode(&r) == nil && len(r.StatusList) == 1 && r.StatusList[0].UserID == user
	})
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.UserStatusResult
	if err := ev.Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.StatusList[0]
}

// TestPresenceOverWebSocket: presence across real connections of the Go
// client: online with the first device, still online while one of two
// remains, offline after the last; the custom text notifies and survives a
// restart (SQLite); a user outside the rule gets unknown and 13001, and
// keeps a usable connection.
func TestPresenceOverWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	alice := ts.dial("alice")
	if _, err := alice.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "lobby", Name: "Lobby", MemberList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	got, err := alice.SubscribeUserStatus(ctx, []string{"bob"})
	if err != nil || len(got) != 1 || got[0].StatusType != protocol.StatusOffline {
		t.Fatalf("subscribe = %+v, %v; want bob offline", got, err)
	}

	phone := ts.dial("bob")
	if st := waitStatus(t, alice, "bob"); st.StatusType != protocol.StatusOnline {
		t.Fatalf("bob's first device: %+v", st)
	}
	// bob's connections as the server counts them: a dial returns once the
	// WebSocket is open, which can be before the server has attached it.
	waitOnline := func(want int, when string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ts.engine.Online("bob") != want; {
			if time.Now().After(deadline) {
				t.Fatalf("bob has %d connections, want %d %s", ts.engine.Online("bob"), want, when)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	laptop := ts.dial("bob")
	waitOnline(2, "with the laptop")
	_ = phone.Close()
	// Once the server has seen the phone's close (bob still has the
	// laptop), getUserStatus says online, and no event came.
	waitOnline(1, "after the phone closed")
	if err := alice.ExpectNoEvent(ctx, 300*time.Millisecond, protocol.EvUserStatusChanged); err != nil {
		t.Fatal(err)
	}
	if got, err := alice.GetUserStatus(ctx, []string{"bob"}); err != nil || got[0].StatusType != protocol.StatusOnline {
		t.Fatalf("with one device left: %+v, %v", got, err)
	}
	if err := laptop.SetSelfStatus(ctx, "on the road"); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, alice, "bob"); st != (protocol.UserStatus{UserID: "bob", StatusType: protocol.StatusOnline, CustomStatus: "on the road"}) {
		t.Fatalf("after setSelfStatus: %+v", st)
	}
	_ = laptop.Close()
	if st := waitStatus(t, alice, "bob"); st.StatusType != protocol.StatusOffline || st.CustomStatus != "on the road" {
		t.Fatalf("bob's last device closed: %+v", st)
	}

	mallory := ts.dial("mallory")
	_, err = mallory.SubscribeUserStatus(ctx, []string{"bob"})
	mustCode(t, err, protocol.ErrStatusNotVisible)
	if got, err := mallory.GetUserStatus(ctx, []string{"bob"}); err != nil || got[0].StatusType != protocol.StatusUnknown || got[0].CustomStatus != "" {
		t.Fatalf("mallory's getUserStatus: %+v, %v", got, err)
	}

	ts.restart()
	alice = ts.dial("alice")
	if got, err := alice.GetUserStatus(ctx, []string{"bob"}); err != nil ||
		got[0] != (protocol.UserStatus{UserID: "bob", StatusType: protocol.StatusOffline, CustomStatus: "on the road"}) {
		t.Fatalf("after a restart: %+v, %v", got, err)
	}
}
