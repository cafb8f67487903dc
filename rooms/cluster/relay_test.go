package roomcluster_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
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
	n1.st.RoomRelay.ForcePlacement("n1") // the room on alice's node: bob's ops are relayed
	a, b := n1.dial(t, "alice"), n2.dial(t, "bob")
	t0 := time.Now()
	ra := enter(t, n1, a, "alice", "x1", roomclient.Options{})
	t1 := time.Now()
	rb := enter(t, n2, b, "bob", "x1", roomclient.Options{})
	t.Logf("enterRoom: %v on the media node, %v relayed from the other node", t1.Sub(t0).Round(time.Microsecond), time.Since(t1).Round(time.Microsecond))
	node := ra.Result().Node
	if node != "n1" || rb.Result().Node != node {
		t.Fatalf("enterRoom replies name nodes %q and %q", node, rb.Result().Node)
	}
	if got := hosts(nodes, "x1"); len(got) != 1 || got[0] != node {
		t.Fatalf("room x1 hosted on %v, reply says %s", got, node)
	}
	eventually(t, 25*time.Second, "media both ways", func() bool { return receives(ra, 10, "bob") && receives(rb, 10, "alice") })
	t.Logf("media both ways %v after the first enterRoom; relay messages counted by n2 so far (bob's entry and negotiation): %v",
		time.Since(t0).Round(time.Millisecond), relayed(t, n2))
	c := ctxT(t)
	if _, err := a.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("bob")); err != nil {
		t.Fatal(err)
	}
	// bob learns of alice from his enterRoom reply when her media was
	// connected before he entered (the relay hop makes that possible),
	// else from the event.
	if !slices.ContainsFunc(rb.Result().Participants, func(p rooms.ParticipantInfo) bool { return p.UserID == "alice" }) {
		if _, err := b.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
			t.Fatal(err)
		}
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
	// Alice was the media node's only local member: the room stays for
	// bob, connected elsewhere.
	if got := hosts(nodes, "x1"); len(got) != 1 || got[0] != node {
		t.Fatalf("after alice left, room x1 hosted on %v", got)
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

// TestRelayAfterRedisRestart: Redis restarts (killed, started again from
// its append-only file) under a room whose members are on two nodes: the
// relay resumes by itself, the room stays one room on its node (no
// member is told to leave), and the ops and events travel again.
func TestRelayAfterRedisRestart(t *testing.T) {
	srv, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	n1.st.RoomRelay.ForcePlacement("n1")
	a, b := n1.dial(t, "alice"), n2.dial(t, "bob")
	ra := enter(t, n1, a, "alice", "rr", roomclient.Options{})
	rb := enter(t, n2, b, "bob", "rr", roomclient.Options{})
	if rb.Result().Node != "n1" {
		t.Fatalf("bob's entry on %q", rb.Result().Node)
	}
	eventually(t, 25*time.Second, "media both ways", func() bool { return receives(ra, 10, "bob") && receives(rb, 10, "alice") })

	srv.Kill()
	srv.Restart()
	c := ctxT(t)
	eventually(t, 20*time.Second, "bob's mute through n2 after the restart", func() bool {
		return b.Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "rr", Mute: true}, nil) == nil
	})
	if _, err := a.WaitEvent(c, rooms.EvUserVideoAvailable, byUser("bob")); err != nil {
		t.Fatal(err)
	}
	flowsAgain(t, ra, "bob", 10, "bob's media at alice after the restart")
	for _, cl := range []struct {
		name string
		c    interface {
			ExpectNoEvent(context.Context, time.Duration, string) error
		}
	}{{"alice", a}, {"bob", b}} {
		if err := cl.c.ExpectNoEvent(c, 0, rooms.EvExitRoom); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
	}
	if got := hosts(nodes, "rr"); len(got) != 1 || got[0] != "n1" {
		t.Fatalf("hosted on %v", got)
	}
}

// TestGroupAcrossThreeNodes: three members, each connected to its own
// node, in one room hosted on one of them: media flows between every pair;
// a late joiner on a fourth connection (a second device's node) gets a
// keyframe of each publisher soon after its media connects.
func TestGroupAcrossThreeNodes(t *testing.T) {
	_, nodes := startCluster(t, 3, options{})
	users := []string{"ann", "ben", "cat"}
	var rs []*roomclient.Room
	for i, n := range nodes {
		rs = append(rs, enter(t, n, n.dial(t, users[i]), users[i], "g3", roomclient.Options{}))
	}
	node := rs[0].Result().Node
	for i, r := range rs {
		if r.Result().Node != node {
			t.Fatalf("%s's entry on %q, ann's on %q", users[i], r.Result().Node, node)
		}
	}
	eventually(t, 25*time.Second, "media between every pair", func() bool {
		return receives(rs[0], 10, "ben", "cat") && receives(rs[1], 10, "ann", "cat") && receives(rs[2], 10, "ann", "ben")
	})
	late := nodes[1]
	if late.id == node {
		late = nodes[2]
	}
	start := time.Now()
	rd := enter(t, late, late.dial(t, "dan"), "dan", "g3", roomclient.Options{})
	eventually(t, 25*time.Second, "the late joiner's first keyframes", func() bool {
		got := rd.Received()
		for _, u := range users {
			if got[peer.TrackKey{StreamID: u, Kind: media.KindVideo}].Keyframes == 0 {
				return false
			}
		}
		return true
	})
	var last time.Time
	for _, u := range users {
		st := rd.Received()[peer.TrackKey{StreamID: u, Kind: media.KindVideo}]
		if st.FirstKeyframe.After(last) {
			last = st.FirstKeyframe
		}
		if d := st.FirstKeyframe.Sub(st.FirstPacket); d > time.Second {
			t.Errorf("%s's first keyframe at the late joiner %v after its first packet", u, d)
		}
	}
	t.Logf("late joiner through %s (room on %s): keyframes of all three %v after its enterRoom", late.id, node, last.Sub(start).Round(time.Millisecond))
}
