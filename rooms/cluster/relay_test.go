package roomcluster_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
)

// TestCrossNodeRoom: alice connected to n1 and bob to n2 enter the same
// room: one room, on one node's SFU (both replies name it in `node`), and
// media flows both ways; the room events (enter, availability, leave) and
// the replies of the ops (mute, exitRoom) travel between the nodes; the
// relay counts its messages.
func TestCrossNodeRoom(t *testing.T) {
	_, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	a, b := n1.dial(t, "alice"), n2.dial(t, "bob")
	ra := enter(t, n1, a, "alice", "x1", roomclient.Options{})
	rb := enter(t, n2, b, "bob", "x1", roomclient.Options{})
	node := ra.Result().Node
	if node == "" || rb.Result().Node != node {
		t.Fatalf("enterRoom replies name nodes %q and %q", node, rb.Result().Node)
	}
	if got := hosts(nodes, "x1"); len(got) != 1 || got[0] != node {
		t.Fatalf("room x1 hosted on %v, reply says %s", got, node)
	}
	eventually(t, 25*time.Second, "media both ways", func() bool { return receives(ra, 10, "bob") && receives(rb, 10, "alice") })
	c := ctxT(t)
	if _, err := a.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []struct {
		who  string
		room *roomclient.Room
	}{{"alice", ra}, {"bob", rb}} {
		if err := cl.room.Client().Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "x1", Mute: true}, nil); err != nil {
			t.Fatalf("%s mutes: %v", cl.who, err)
		}
	}
	if _, err := b.WaitEvent(c, rooms.EvUserVideoAvailable, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitEvent(c, rooms.EvUserVideoAvailable, byUser("bob")); err != nil {
		t.Fatal(err)
	}
	var info rooms.RoomInfo
	if err := b.Do(c, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: "x1"}, &info); err != nil || len(info.Anchors) != 2 {
		t.Fatalf("getRoomInfo through n2: %+v, %v", info, err)
	}
	if err := ra.Exit(c); err != nil {
		t.Fatalf("alice exits: %v", err)
	}
	if _, err := b.WaitEvent(c, rooms.EvRemoteUserLeaveRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	if err := a.Do(c, rooms.OpMuteLocalAudio, rooms.MuteArgs{RoomID: "x1", Mute: true}, nil); !errors.Is(err, rooms.ErrNotInRoom) {
		t.Fatalf("mute after exit: %v, want not_in_room", err)
	}
	for _, n := range nodes {
		if n.id == node {
			continue
		}
		if got := relayed(t, n); got == 0 {
			t.Errorf("%s: no relay messages counted", n.id)
		}
	}
}

// relayed sums the node's switchboard_room_relay_messages_total.
func relayed(t *testing.T, n *node) float64 {
	t.Helper()
	res, err := http.Get(n.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "switchboard_room_relay_messages_total{") {
			var v float64
			f := strings.Fields(line)
			if _, err := fmtSscan(f[len(f)-1], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}
