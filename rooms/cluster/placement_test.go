package roomcluster_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// enterRaw enters roomID with a room token, without media.
func enterRaw(t *testing.T, n *node, c *client.Client, user, roomID string) (rooms.EnterResult, error) {
	t.Helper()
	var res rooms.EnterResult
	err := c.Do(ctxT(t), rooms.OpEnterRoom, rooms.EnterArgs{RoomID: roomID, RoomToken: n.token(t, user, roomID)}, &res)
	return res, err
}

// TestConcurrentFirstEntry: clients connected to three nodes enter the
// same new room at the same instant: one room, on one node, named by every
// reply; for several rooms in a row.
func TestConcurrentFirstEntry(t *testing.T) {
	srv, nodes := startCluster(t, 3, options{})
	users := []string{"u1", "u2", "u3"}
	conns := make([]*client.Client, 3)
	for i, n := range nodes {
		conns[i] = n.dial(t, users[i])
	}
	for _, roomID := range []string{"c1", "c2", "c3", "c4"} { // 4: limits.max_rooms_per_user
		var wg sync.WaitGroup
		res := make([]rooms.EnterResult, 3)
		errs := make([]error, 3)
		start := make(chan struct{})
		for i := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var r rooms.EnterResult
				errs[i] = conns[i].Do(ctxT(t), rooms.OpEnterRoom,
					rooms.EnterArgs{RoomID: roomID, RoomToken: nodes[i].token(t, users[i], roomID)}, &r)
				res[i] = r
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %s enters: %v", roomID, users[i], err)
			}
		}
		if res[0].Node == "" || res[1].Node != res[0].Node || res[2].Node != res[0].Node {
			t.Fatalf("%s: replies name nodes %q %q %q", roomID, res[0].Node, res[1].Node, res[2].Node)
		}
		if got := hosts(nodes, roomID); len(got) != 1 || got[0] != res[0].Node {
			t.Fatalf("%s: hosted on %v", roomID, got)
		}
		for _, n := range nodes {
			if n.id == res[0].Node {
				if got := len(n.st.Rooms.Memberships()[roomID]); got != 3 {
					t.Fatalf("%s: %d members on %s", roomID, got, n.id)
				}
			}
		}
	}
	// Each node's heartbeat publishes the members it hosts (the load
	// placement reads): 12 in all.
	ks := cluster.NewKeyspace(nodes[0].st.Config.Cluster.Redis.Prefix(), nodes[0].st.Config.Cluster.Knobs)
	eventually(t, 10*time.Second, "the nodes' published load", func() bool {
		infos, err := ks.LiveNodes(ctxT(t), srv.Client())
		if err != nil || len(infos) != 3 {
			return false
		}
		var sum float64
		for _, in := range infos {
			sum += in.Load["members"]
		}
		return sum == 12
	})
}

// TestMovedReforward: n1 sends an enterRoom to n2 (its placement said so)
// while n3 owns the room: n2's claim answers "moved to n3" and n1 sends the
// request on there; the entry lands in the one room, on n3.
func TestMovedReforward(t *testing.T) {
	_, nodes := startCluster(t, 3, options{})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.st.RoomRelay.ForcePlacement("n3")
	b := n3.dial(t, "bob")
	if res, err := enterRaw(t, n3, b, "bob", "mv"); err != nil || res.Node != "n3" {
		t.Fatalf("bob enters on n3: %+v %v", res, err)
	}
	n1.st.RoomRelay.ForceForward("n2")
	a := n1.dial(t, "alice")
	res, err := enterRaw(t, n1, a, "alice", "mv")
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != "n3" || len(res.Room.Anchors) != 2 {
		t.Fatalf("alice's entry: node %q, anchors %v", res.Node, res.Room.Anchors)
	}
	if n2.st.Rooms.HasRoom("mv") {
		t.Fatal("n2 created the room it was not the owner of")
	}
	if got := hosts(nodes, "mv"); len(got) != 1 || got[0] != "n3" {
		t.Fatalf("hosted on %v", got)
	}
}

// TestRoomsPerUserAcrossNodes: limits.max_rooms_per_user counts the rooms
// a user is in on every node: alice (limit 2) in rooms on n2 and n3 is
// refused a third on n1 (which alone would see none), and admitted once
// she left one.
func TestRoomsPerUserAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 3, options{maxRooms: 2})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n2.st.RoomRelay.ForcePlacement("n2")
	n3.st.RoomRelay.ForcePlacement("n3")
	if _, err := enterRaw(t, n2, n2.dial(t, "carol"), "carol", "ua"); err != nil {
		t.Fatal(err)
	}
	if _, err := enterRaw(t, n3, n3.dial(t, "dave"), "dave", "ub"); err != nil {
		t.Fatal(err)
	}
	n1.st.RoomRelay.ForcePlacement("n1")
	a := n1.dial(t, "alice")
	for _, id := range []string{"ua", "ub"} {
		if _, err := enterRaw(t, n1, a, "alice", id); err != nil {
			t.Fatalf("alice enters %s: %v", id, err)
		}
	}
	if _, err := enterRaw(t, n1, a, "alice", "uc"); !errors.Is(err, rooms.ErrTooManyRooms) {
		t.Fatalf("third room: %v, want too_many_rooms", err)
	}
	if n1.st.Rooms.HasRoom("uc") {
		t.Fatal("the refused entry created its room")
	}
	if err := a.Do(ctxT(t), rooms.OpExitRoom, rooms.RoomArgs{RoomID: "ua"}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := enterRaw(t, n1, a, "alice", "uc")
	if err != nil || res.Node != "n1" {
		t.Fatalf("after leaving one: %+v %v", res, err)
	}
}

// TestCallRoomRefusesTokenAcrossNodes: a room token is refused, on any
// node, for the room ID of a running call placed on another node; the
// call's accepted callee enters it from that node.
func TestCallRoomRefusesTokenAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	n2.st.RoomRelay.ForcePlacement("n2")
	a, b, e := n1.dial(t, "alice"), n2.dial(t, "bob"), n2.dial(t, "eve")
	c := ctxT(t)
	var call calls.CallResult
	if err := a.Do(c, calls.OpCall, calls.CallArgs{Invitee: "bob"}, &call); err != nil {
		t.Fatal(err)
	}
	if _, err := enterRaw(t, n2, e, "eve", call.RoomID); !errors.Is(err, rooms.ErrNotAdmitted) {
		t.Fatalf("eve's room token for the call's room: %v, want not_admitted", err)
	}
	if n2.st.Rooms.HasRoom(call.RoomID) {
		t.Fatal("the refused entry created the room")
	}
	ring := func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		return ev.Decode(&v) == nil && v.InviteID == call.CallID
	}
	if _, err := b.WaitEvent(c, protocol.EvReceiveNewInvitation, ring); err != nil {
		t.Fatal(err)
	}
	if err := b.Accept(c, call.CallID, ""); err != nil {
		t.Fatal(err)
	}
	var res rooms.EnterResult
	if err := b.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID}, &res); err != nil || res.Node != "n2" {
		t.Fatalf("bob enters the call's room: %+v %v", res, err)
	}
	res = rooms.EnterResult{}
	if err := a.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: call.RoomID}, &res); err != nil || res.Node != "n2" {
		t.Fatalf("alice (the caller, on n1) enters the call's room: %+v %v", res, err)
	}
}

// TestCallRefusedOnHostedRoom: a call cannot be placed, on any node, on
// the room ID of a room that exists on a live node (room_unavailable):
// carol's room is on n2, alice calls from n1 with that room ID.
func TestCallRefusedOnHostedRoom(t *testing.T) {
	_, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	n2.st.RoomRelay.ForcePlacement("n2")
	if _, err := enterRaw(t, n2, n2.dial(t, "carol"), "carol", "busyroom"); err != nil {
		t.Fatal(err)
	}
	a := n1.dial(t, "alice")
	err := a.Do(ctxT(t), calls.OpCall, calls.CallArgs{Invitee: "bob", RoomID: "busyroom"}, nil)
	if !errors.Is(err, calls.ErrRoomUnavailable) {
		t.Fatalf("call on a hosted room's ID: %v, want room_unavailable", err)
	}
}
