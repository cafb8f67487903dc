package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Rooms and media across nodes (issue 13) on the cluster harness of
// cluster_test.go: real switchboard processes on one Redis, each node with
// its own media UDP port on 127.0.0.1 (startProc's --media.udp_port=0 and
// --media.listen_ip=127.0.0.1), Go room clients (rooms/roomclient) that
// publish synthetic VP8 video and Opus audio and count what they receive.
// A room lives on one node, its media node, named by the enterRoom reply's
// `node` (roomclient.Room.Node) and by the `room:<id>` key in Redis.

// mediaPeer is a call party's media: audio and video, keyframes only every
// 10 s, so that a quick first keyframe at a subscriber is the SFU's
// keyframe request at work.
var mediaPeer = peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true,
	VideoBitrate: 100_000, VideoFPS: 15, KeyframeInterval: 10 * time.Second}

// mediaWithin bounds each wait for media to flow (loopback; a slow shared
// machine).
const mediaWithin = 20 * time.Second

// waitUntil polls cond every 20 ms until it holds, or fails the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// got is what r's current peer has received from user (kind audio or video).
func got(r *roomclient.Room, user, kind string) peer.TrackStats {
	return r.Received()[peer.TrackKey{StreamID: user, Kind: kind}]
}

// hears reports whether r's current peer received at least n packets of
// both kinds, and a video keyframe, from each of users.
func hears(r *roomclient.Room, n uint64, users ...string) bool {
	for _, u := range users {
		a, v := got(r, u, media.KindAudio), got(r, u, media.KindVideo)
		if a.Packets < n || v.Packets < n || v.Keyframes == 0 {
			return false
		}
	}
	return true
}

// describeMedia renders what r received, for failures.
func describeMedia(r *roomclient.Room) string {
	out := fmt.Sprintf("node %q:", r.Node())
	for k, st := range r.Received() {
		out += fmt.Sprintf(" %s/%s %d packets %d keyframes;", k.StreamID, k.Kind, st.Packets, st.Keyframes)
	}
	return out
}

// waitMedia waits until each party's Room hears the others (n packets of
// both kinds and a keyframe from each).
func waitMedia(t *testing.T, what string, n uint64, parties map[string]*roomclient.Room) {
	t.Helper()
	deadline := time.Now().Add(mediaWithin)
	for {
		all := true
		for u, r := range parties {
			var others []string
			for o := range parties {
				if o != u {
					others = append(others, o)
				}
			}
			all = all && hears(r, n, others...)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			var state string
			for u, r := range parties {
				state += fmt.Sprintf("\n  %s: %s errors %v", u, describeMedia(r), r.Errors())
			}
			t.Fatalf("%s: no media between every pair within %v:%s", what, mediaWithin, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slotOf returns the slot of node id, or fails.
func (c *testCluster) slotOf(t *testing.T, id string) int {
	t.Helper()
	for i := range clusterNodes {
		if c.nodeID(i) == id {
			return i
		}
	}
	t.Fatalf("media node %q is none of the cluster's nodes %v", id, c.allIDs())
	return -1
}

func (c *testCluster) allIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids[:])
}

// roomKey returns the `room:<id>` key in Redis (the room's media node), ""
// when there is none.
func (c *testCluster) roomKey(t *testing.T, roomID string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	v, err := c.rdb.Get(ctx, clusterPrefix+"room:"+roomID).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// roomToken is a room token of user for roomID from the dev endpoint of
// slot i (every node shares the secret).
func (c *testCluster) roomToken(t *testing.T, i int, user, roomID string) string {
	t.Helper()
	res, err := oneShot.Get("http://" + c.node(i).addr + "/api/dev/token?user=" + user + "&room=" + roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("room token: %v", err)
	}
	return tok.Token
}

// redialer returns a roomclient Redial that connects user to the node of
// slot i (whatever node is in that slot then).
func (c *testCluster) redialer(user string, i int) func(ctx context.Context) (*client.Client, error) {
	return func(ctx context.Context) (*client.Client, error) {
		p := c.node(i)
		res, err := oneShot.Get("http://" + p.addr + "/api/dev/token?user=" + user)
		if err != nil {
			return nil, err
		}
		var tok struct {
			Token string `json:"token"`
		}
		err = json.NewDecoder(res.Body).Decode(&tok)
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		return client.Dial(ctx, p.url(), tok.Token, client.WithPingInterval(0), client.WithEventBuffer(4096))
	}
}

// mediaCall is a running one-to-one video call whose parties' Rooms hear
// each other.
type mediaCall struct {
	caller, callee string
	a, b           *client.Client // the parties' connections their Rooms use
	ra, rb         *roomclient.Room
	r              calls.CallResult
	begin          calls.BeginEvent
	accepted       time.Time
}

// callParty is one party's placement and Room options.
type callParty struct {
	slot int
	opts roomclient.Options // Peer is mediaPeer when it has neither audio nor video
	// redialTo, if set, has the Room reconnect (Options.Redial) to the
	// node of the slot it returns, given the parties' slots, when its
	// connection ends.
	redialTo func(callerSlot, calleeSlot int) int
}

// startMediaCall has a caller on slot caller.slot call a callee on
// callee.slot (video); the caller enters the call's room, the callee
// accepts and enters; it returns once both got onCallBegin. place, if not
// nil, runs after the call is placed and before anyone entered its room,
// on a connection of the caller on slot 0 (to place the room) and returns
// the parties' slots to use.
func startMediaCall(t *testing.T, c *testCluster, caller, callee callParty,
	place func(a0 *client.Client, r calls.CallResult) (callerSlot, calleeSlot int)) *mediaCall {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterWait)
	defer cancel()
	mc := &mediaCall{caller: c.user("alice"), callee: c.user("bob")}
	a0 := c.dial(t, caller.slot, mc.caller)
	if err := a0.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: mc.callee, MediaType: calls.MediaVideo, Timeout: ptr(30)}, &mc.r); err != nil {
		t.Fatalf("call: %v", err)
	}
	mc.a = a0
	if place != nil {
		caller.slot, callee.slot = place(a0, mc.r)
		mc.a = c.dial(t, caller.slot, mc.caller)
	}
	mc.b = c.dial(t, callee.slot, mc.callee)
	for _, p := range []*callParty{&caller, &callee} {
		if !p.opts.Peer.Audio && !p.opts.Peer.Video {
			p.opts.Peer = mediaPeer
		}
	}
	if caller.redialTo != nil {
		caller.opts.Redial = c.redialer(mc.caller, caller.redialTo(caller.slot, callee.slot))
	}
	if callee.redialTo != nil {
		callee.opts.Redial = c.redialer(mc.callee, callee.redialTo(caller.slot, callee.slot))
	}
	var err error
	if mc.ra, err = roomclient.Enter(ctx, mc.a, mc.r.RoomID, caller.opts); err != nil {
		t.Fatalf("caller's enterRoom on node %s: %v", c.nodeID(caller.slot), err)
	}
	t.Cleanup(mc.ra.Close)
	wait(t, mc.b, protocol.EvReceiveNewInvitation, mc.r.InviteID)
	mc.accepted = time.Now()
	if err := mc.b.Accept(ctx, mc.r.InviteID, ""); err != nil {
		t.Fatal(err)
	}
	if mc.rb, err = roomclient.Enter(ctx, mc.b, mc.r.RoomID, callee.opts); err != nil {
		t.Fatalf("callee's enterRoom on node %s: %v", c.nodeID(callee.slot), err)
	}
	t.Cleanup(mc.rb.Close)
	mc.begin = decodeAs[calls.BeginEvent](t, wait(t, mc.a, calls.EvCallBegin, mc.r.CallID))
	wait(t, mc.b, calls.EvCallBegin, mc.r.CallID)
	return mc
}

// ended describes the onCallEnd the caller got, if any (for failures).
func (mc *mediaCall) ended() string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	ev, err := mc.ra.Client().WaitEvent(ctx, calls.EvCallEnd, byID(mc.r.CallID))
	if err != nil {
		return "no onCallEnd at the caller"
	}
	return "ended: " + ev.String()
}

func (mc *mediaCall) parties() map[string]*roomclient.Room {
	return map[string]*roomclient.Room{mc.caller: mc.ra, mc.callee: mc.rb}
}

// oneRoom checks that every Room names the same media node, one of the
// cluster's live nodes and the `room:<id>` key's, and returns it.
func oneRoom(t *testing.T, c *testCluster, roomID string, rs map[string]*roomclient.Room) string {
	t.Helper()
	var node string
	for u, r := range rs {
		if r.Node() == "" {
			t.Fatalf("%s's enterRoom reply names no media node", u)
		}
		if node == "" {
			node = r.Node()
		}
		if r.Node() != node {
			var nodes []string
			for u, r := range rs {
				nodes = append(nodes, u+"@"+r.Node())
			}
			t.Fatalf("the parties are in rooms on different nodes: %v", nodes)
		}
	}
	c.slotOf(t, node)
	if k := c.roomKey(t, roomID); k != node {
		t.Fatalf("room:%s in Redis is %q, the enterRoom replies name %q", roomID, k, node)
	}
	return node
}

// hangUp has the caller hang up and checks both parties' onCallEnd: a
// completed call lasting at least until the hangup was sent.
func (mc *mediaCall) hangUp(t *testing.T) calls.EndEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	hungUp := time.Now()
	if err := mc.ra.Client().Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: mc.r.CallID}, nil); err != nil {
		t.Fatalf("hangup: %v", err)
	}
	var end calls.EndEvent
	for _, cl := range []*client.Client{mc.ra.Client(), mc.rb.Client()} {
		end = decodeAs[calls.EndEvent](t, wait(t, cl, calls.EvCallEnd, mc.r.CallID))
		if end.Reason != calls.EndHangup || end.EndedBy != mc.caller || end.Result != calls.ResultCompleted ||
			end.DurationMs < hungUp.Sub(time.UnixMilli(mc.begin.StartTime)).Milliseconds() {
			t.Fatalf("onCallEnd %+v: want hangup by %s, completed, lasting from its begin (%d) to the hangup (%v later)",
				end, mc.caller, mc.begin.StartTime, hungUp.Sub(time.UnixMilli(mc.begin.StartTime)))
		}
	}
	return end
}

// TestClusterMediaCall: a one-to-one video call whose caller and callee
// are connected to different nodes: both are in ONE room (the same media
// node in both enterRoom replies, and in Redis), and each receives the
// other's audio and video.
func TestClusterMediaCall(t *testing.T) {
	c := startCluster(t)
	for _, at := range [][]int{{0, 1}, {2, 0}} {
		t.Run(fmt.Sprintf("nodes%v", at), func(t *testing.T) {
			mc := startMediaCall(t, c, callParty{slot: at[0]}, callParty{slot: at[1]}, nil)
			waitMedia(t, "caller and callee", 30, mc.parties())
			t.Logf("caller on %s, callee on %s, room on %s: media both ways %v after the accept",
				c.nodeID(at[0]), c.nodeID(at[1]), mc.ra.Node(), time.Since(mc.accepted).Round(time.Millisecond))
			oneRoom(t, c, mc.r.RoomID, mc.parties())
			for _, r := range mc.parties() {
				for _, err := range r.Errors() {
					t.Errorf("negotiation error: %v", err)
				}
			}
			mc.hangUp(t)
		})
	}
}

// TestClusterMediaGroupCall: a three-party group video call, each party
// connected to its own node and the room on one of them: everyone hears
// everyone; a member joining late on a fourth connection (on a node that
// is not the media node) is told who is there and gets each video's first
// keyframe within 1 s of the track starting (keyframes come every 10 s
// otherwise: only the SFU's keyframe request explains a quick one).
func TestClusterMediaGroupCall(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	users := []string{c.user("alice"), c.user("bob"), c.user("carol")}
	dave := c.user("dave")
	conns := make([]*client.Client, len(users))
	for i, u := range users {
		conns[i] = c.dial(t, i, u)
	}
	gid, err := conns[0].CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: c.user("grp"), Name: "crew", MemberList: []string{users[1], users[2], dave}})
	if err != nil {
		t.Fatal(err)
	}
	var call calls.CallResult
	if err := conns[0].Do(ctx, calls.OpGroupCall, calls.GroupCallArgs{GroupID: gid, InviteeList: users[1:], MediaType: calls.MediaVideo, Timeout: ptr(30)}, &call); err != nil {
		t.Fatalf("groupCall: %v", err)
	}
	rs := map[string]*roomclient.Room{}
	enter := func(i int, u string, cl *client.Client) *roomclient.Room {
		r, err := roomclient.Enter(ctx, cl, call.RoomID, roomclient.Options{Peer: mediaPeer})
		if err != nil {
			t.Fatalf("%s's enterRoom on node %s: %v", u, c.nodeID(i), err)
		}
		t.Cleanup(r.Close)
		return r
	}
	rs[users[0]] = enter(0, users[0], conns[0])
	for i := 1; i < len(users); i++ {
		wait(t, conns[i], protocol.EvReceiveNewInvitation, call.InviteID)
		if err := conns[i].Accept(ctx, call.InviteID, ""); err != nil {
			t.Fatal(err)
		}
		rs[users[i]] = enter(i, users[i], conns[i])
	}
	waitMedia(t, "the three parties", 30, rs)
	node := oneRoom(t, c, call.RoomID, rs)
	t.Logf("parties on %v, room on %s", c.allIDs(), node)

	// The late joiner: on a node that is not the media node.
	slot := (c.slotOf(t, node) + 1) % clusterNodes
	d := c.dial(t, slot, dave)
	var joined struct {
		RoomID string `json:"roomID"`
	}
	if err := d.Do(ctx, calls.OpJoinCall, calls.CallIDArgs{CallID: call.CallID}, &joined); err != nil || joined.RoomID != call.RoomID {
		t.Fatalf("joinCall: %+v %v", joined, err)
	}
	rd := enter(slot, dave, d)
	// When its media connected (both PeerConnections), to 5 ms.
	waitUntil(t, mediaWithin, "the late joiner's media to connect", rd.Peer().Connected)
	connected := time.Now()
	if rd.Node() != node {
		t.Fatalf("the late joiner's enterRoom names node %q, the room is on %q", rd.Node(), node)
	}
	if n := len(rd.Result().Participants); n != 3 {
		t.Fatalf("the late joiner is told of %d participants, want 3: %+v", n, rd.Result().Participants)
	}
	waitUntil(t, mediaWithin, "the late joiner hearing the three parties", func() bool { return hears(rd, 5, users...) })
	for _, u := range users {
		v := got(rd, u, media.KindVideo)
		if k := v.FirstKeyframe.Sub(connected); v.Keyframes == 0 || k > time.Second {
			t.Errorf("late joiner, video of %s: first keyframe %v after its media connected (track started %v after), want within 1 s",
				u, k, v.Started.Sub(connected))
		} else {
			t.Logf("late joiner, video of %s: first keyframe %v after its media connected", u, k.Round(time.Millisecond))
		}
	}
	for u, r := range rs {
		for _, err := range r.Errors() {
			t.Errorf("%s: negotiation error: %v", u, err)
		}
	}
}

// TestClusterConcurrentFirstEntry: three clients on the three nodes enter
// the same new (token) room at the same instant: there is one room, on
// one node, and each member sees the other two. First with media (each
// hears the other two), then more rounds with bare enterRoom requests.
func TestClusterConcurrentFirstEntry(t *testing.T) {
	const bareRounds = 8
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	// together runs f(i) for the three nodes at the same instant.
	together := func(f func(i int)) {
		var ready, done sync.WaitGroup
		start := make(chan struct{})
		ready.Add(clusterNodes)
		done.Add(clusterNodes)
		for i := range clusterNodes {
			go func() {
				defer done.Done()
				ready.Done()
				<-start
				f(i)
			}()
		}
		ready.Wait()
		close(start)
		done.Wait()
	}

	roomID := c.user("first")
	users := make([]string, clusterNodes)
	conns := make([]*client.Client, clusterNodes)
	tokens := make([]string, clusterNodes)
	for i := range clusterNodes {
		users[i] = c.user("u")
		conns[i] = c.dial(t, i, users[i])
		tokens[i] = c.roomToken(t, i, users[i], roomID)
	}
	entered := make([]*roomclient.Room, clusterNodes)
	errs := make([]error, clusterNodes)
	together(func(i int) {
		entered[i], errs[i] = roomclient.Enter(ctx, conns[i], roomID, roomclient.Options{RoomToken: tokens[i], Peer: mediaPeer})
	})
	rs := map[string]*roomclient.Room{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s's enterRoom on node %s: %v", users[i], c.nodeID(i), err)
		}
		t.Cleanup(entered[i].Close)
		rs[users[i]] = entered[i]
	}
	node := oneRoom(t, c, roomID, rs)
	waitMedia(t, "three first entries at once", 20, rs)
	t.Logf("with media: one room on %s", node)

	for round := range bareRounds {
		roomID := c.user("bare")
		for i := range clusterNodes {
			users[i] = c.user("v")
			conns[i] = c.dial(t, i, users[i])
			tokens[i] = c.roomToken(t, i, users[i], roomID)
		}
		replies := make([]rooms.EnterResult, clusterNodes)
		together(func(i int) {
			errs[i] = conns[i].Do(ctx, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: roomID, RoomToken: tokens[i]}, &replies[i])
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s's enterRoom on node %s: %v", round, users[i], c.nodeID(i), err)
			}
			if replies[i].Node == "" || replies[i].Node != replies[0].Node {
				t.Fatalf("round %d: the replies name media nodes %q, %q, %q: not one room", round, replies[0].Node, replies[1].Node, replies[2].Node)
			}
		}
		if k := c.roomKey(t, roomID); k != replies[0].Node {
			t.Fatalf("round %d: room:%s in Redis is %q, the replies name %q", round, roomID, k, replies[0].Node)
		}
		for i := range clusterNodes {
			var info rooms.RoomInfo
			if err := conns[i].Do(ctx, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: roomID}, &info); err != nil {
				t.Fatalf("round %d: getRoomInfo on node %s: %v", round, c.nodeID(i), err)
			}
			members := append(slices.Clone(info.Anchors), info.Audience...)
			slices.Sort(members)
			want := slices.Sorted(slices.Values(users))
			if !slices.Equal(members, want) {
				t.Fatalf("round %d: %s sees members %v, want %v", round, users[i], members, want)
			}
		}
		for i := range clusterNodes {
			if err := conns[i].Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: roomID}, nil); err != nil {
				t.Fatalf("round %d: exitRoom: %v", round, err)
			}
			_ = conns[i].Close()
		}
	}
}

// placeApart enters the call's room with a bare enterRoom of the caller on
// a0 (slot 0) to learn its media node, and returns the two other slots for
// the parties: the caller's Room, on another connection, replaces that
// entry (the same user from another device), and the room stays where it
// is.
func placeApart(t *testing.T, c *testCluster, media *string) func(a0 *client.Client, r calls.CallResult) (int, int) {
	return func(a0 *client.Client, r calls.CallResult) (int, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		defer cancel()
		var rep rooms.EnterResult
		if err := a0.Do(ctx, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: r.RoomID}, &rep); err != nil {
			t.Fatalf("the caller's first enterRoom: %v", err)
		}
		if rep.Node == "" {
			t.Fatal("the enterRoom reply names no media node")
		}
		*media = rep.Node
		m := c.slotOf(t, rep.Node)
		return (m + 1) % clusterNodes, (m + 2) % clusterNodes
	}
}

// exitReason4 matches onExitRoom of roomID with reason 4 (media_node_lost).
func exitReason4(roomID string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var e rooms.ExitRoomEvent
		return ev.Decode(&e) == nil && e.RoomID == roomID && e.Reason == int(rooms.ExitMediaNodeLost)
	}
}

// TestClusterMediaNodeKilled: SIGKILL the media node of a running call
// whose parties are connected to the two other nodes: both get onExitRoom
// reason 4, their Rooms enter again by themselves, the room is placed on a
// live node, and each receives the other's media again, on new peers,
// through the new media node. The call goes on: hung up afterwards, it is
// one call in the history (read on a survivor) whose duration covers it
// all, kill included. The same with SIGTERM: a node shut down gracefully
// hands its rooms over the same way (ROOMS.md, Cluster mode).
func TestClusterMediaNodeKilled(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGKILL", syscall.SIGKILL}, {"SIGTERM", syscall.SIGTERM}} {
		t.Run(tc.name, func(t *testing.T) { mediaNodeStopped(t, tc.sig) })
	}
}

// stop sends sig to the node of slot i and waits for it to end.
func (c *testCluster) stop(t *testing.T, i int, sig syscall.Signal) {
	t.Helper()
	p := c.node(i)
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(clusterWait):
		t.Fatalf("node %s did not end within %v of %v", c.nodeID(i), clusterWait, sig)
	}
}

func mediaNodeStopped(t *testing.T, sig syscall.Signal) {
	c := startCluster(t)
	var dead string
	mc := startMediaCall(t, c, callParty{slot: 0}, callParty{}, placeApart(t, c, &dead))
	waitMedia(t, "before the kill", 30, mc.parties())
	if node := oneRoom(t, c, mc.r.RoomID, mc.parties()); node != dead {
		t.Fatalf("the room moved from %s to %s before the kill", dead, node)
	}
	deadSlot := c.slotOf(t, dead)
	aSlot, bSlot := (deadSlot+1)%clusterNodes, (deadSlot+2)%clusterNodes
	t.Logf("caller on %s, callee on %s, room on %s", c.nodeID(aSlot), c.nodeID(bSlot), dead)
	oldA, oldB := mc.ra.Peer(), mc.rb.Peer()

	c.stop(t, deadSlot, sig)
	killed := time.Now() // the node has ended (a SIGTERMed one told its members before)
	for _, cl := range []*client.Client{mc.a, mc.b} {
		waitMatch(t, cl, rooms.EvExitRoom, exitReason4(mc.r.RoomID))
	}
	t.Logf("onExitRoom reason 4 at both %v after the node ended", time.Since(killed).Round(time.Millisecond))
	waitUntil(t, mediaWithin, "both Rooms to enter again", func() bool {
		_, a := mc.ra.MediaLost()
		_, b := mc.rb.MediaLost()
		if a < 1 || b < 1 {
			if errs := append(mc.ra.Errors(), mc.rb.Errors()...); len(errs) > 0 {
				t.Fatalf("a Room gave up entering again: %v (the call: %s)", errs, mc.ended())
			}
		}
		return a >= 1 && b >= 1
	})
	if mc.ra.Peer() == oldA || mc.rb.Peer() == oldB {
		t.Fatal("a Room entered again with its old peer")
	}
	waitMedia(t, "after the kill", 30, mc.parties())
	again := time.Since(killed)
	for u, r := range mc.parties() {
		other := mc.caller
		if u == mc.caller {
			other = mc.callee
		}
		a, v := got(r, other, media.KindAudio), got(r, other, media.KindVideo)
		t.Logf("%s: first audio packet %v, first video keyframe %v after the node ended", u,
			a.FirstPacket.Sub(killed).Round(time.Millisecond), v.FirstKeyframe.Sub(killed).Round(time.Millisecond))
	}
	node := oneRoom(t, c, mc.r.RoomID, mc.parties())
	if node == dead {
		t.Fatalf("the room is still on the dead node %s", dead)
	}
	t.Logf("media node %s stopped (%v): media both ways again through %s %v after it ended", dead, sig, node, again.Round(time.Millisecond))
	for _, r := range mc.parties() {
		if lost, re := r.MediaLost(); lost != 1 || re != 1 {
			t.Errorf("a Room saw %d media-node losses and entered again %d times, want 1 and 1", lost, re)
		}
		for _, err := range r.Errors() {
			t.Errorf("negotiation error: %v", err)
		}
	}

	end := mc.hangUp(t)
	for i, u := range []string{mc.caller, mc.callee} {
		ci := historyRecord(t, c, []int{aSlot, bSlot}[i], u, mc.r.CallID, calls.ResultCompleted, calls.EndHangup, mc.caller)
		if ci.BeganAt != mc.begin.StartTime || ci.DurationMs != end.DurationMs || ci.BeganAt > killed.UnixMilli() || ci.EndedAt < time.Now().Add(-clusterWait).UnixMilli() {
			t.Fatalf("%s's record %+v: want the one call, begun at %d (before the kill), lasting %d ms to the hangup", u, ci, mc.begin.StartTime, end.DurationMs)
		}
	}
}

// TestClusterSignalingNodeKilled: SIGKILL a node that held only one
// party's WebSocket (the media node and the other party are elsewhere):
// that party's Room reconnects to another node (the other party's, not the
// media node: the resume goes through the relay) and resumes its entry
// (same peer); media keeps flowing both ways, the other party sees no
// leave, and the call goes on until hung up, one completed call.
func TestClusterSignalingNodeKilled(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	var node string
	toCaller := func(callerSlot, _ int) int { return callerSlot }
	mc := startMediaCall(t, c, callParty{slot: 0}, callParty{redialTo: toCaller}, placeApart(t, c, &node))
	waitMedia(t, "before the kill", 30, mc.parties())
	oneRoom(t, c, mc.r.RoomID, mc.parties())
	mSlot := c.slotOf(t, node)
	aSlot, bSlot := (mSlot+1)%clusterNodes, (mSlot+2)%clusterNodes
	t.Logf("caller on %s, callee on %s (killed), room on %s", c.nodeID(aSlot), c.nodeID(bSlot), node)
	p := mc.rb.Peer()

	c.kill(t, bSlot)
	killed := time.Now()
	waitUntil(t, clusterWait, "the callee's Room to resume on another node", func() bool {
		resumed, entered := mc.rb.Rejoins()
		if entered > 0 {
			t.Fatalf("the callee entered anew instead of resuming (errors %v)", mc.rb.Errors())
		}
		return resumed == 1
	})
	t.Logf("the callee resumed on %s %v after the kill", c.nodeID(aSlot), time.Since(killed).Round(time.Millisecond))
	if mc.rb.Peer() != p || mc.rb.Client() == mc.b || mc.rb.Node() != node {
		t.Fatalf("after the resume: same peer %v, new connection %v, media node %q (was %q)", mc.rb.Peer() == p, mc.rb.Client() != mc.b, mc.rb.Node(), node)
	}
	flowing := func(what string) {
		t.Helper()
		a0, b0 := got(mc.ra, mc.callee, media.KindVideo).Packets, got(mc.rb, mc.caller, media.KindVideo).Packets
		waitUntil(t, mediaWithin, "media both ways "+what, func() bool {
			return got(mc.ra, mc.callee, media.KindVideo).Packets >= a0+30 && got(mc.rb, mc.caller, media.KindVideo).Packets >= b0+30
		})
		t.Logf("media both ways %s: 30 more packets %v after the kill", what, time.Since(killed).Round(time.Millisecond))
	}
	flowing("after the resume")
	// Once the survivors noticed the death (the media node closes the dead
	// node's sessions then), the resumed entry is still there, media too.
	c.cleanedUp(t, bSlot)
	t.Logf("the killed node cleaned up %v after the kill", time.Since(killed).Round(time.Millisecond))
	flowing("after the cleanup")
	// The resumed entry answers on the new connection; its mute is the
	// fence: any leave the caller was sent for the callee came before it.
	if err := mc.rb.Client().Do(ctx, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: mc.r.RoomID, Mute: true}, nil); err != nil {
		t.Fatalf("mute on the new connection: %v", err)
	}
	if _, err := mc.a.WaitEvent(ctx, rooms.EvUserVideoAvailable, func(ev client.Event) bool {
		var e rooms.AvailableEvent
		return ev.Decode(&e) == nil && e.UserID == mc.callee && !e.Available
	}); err != nil {
		t.Fatal(err)
	}
	if err := mc.a.ExpectNoEvent(ctx, 0, rooms.EvRemoteUserLeaveRoom); err != nil {
		t.Errorf("the caller: %v", err)
	}
	for _, r := range mc.parties() {
		if lost, re := r.MediaLost(); lost+re != 0 {
			t.Errorf("a Room saw %d media-node losses (%d re-entries): the media node is alive", lost, re)
		}
		for _, err := range r.Errors() {
			t.Errorf("negotiation error: %v", err)
		}
	}
	end := mc.hangUp(t)
	ci := historyRecord(t, c, mSlot, mc.callee, mc.r.CallID, calls.ResultCompleted, calls.EndHangup, mc.caller)
	if ci.BeganAt != mc.begin.StartTime || ci.DurationMs != end.DurationMs {
		t.Fatalf("the callee's record %+v: want begun at %d, lasting %d ms", ci, mc.begin.StartTime, end.DurationMs)
	}
}

// TestClusterPartyAndMediaNodeKilled: SIGKILL the node that held both the
// room (its media node) and the callee's WebSocket: the caller, connected
// elsewhere, gets onExitRoom reason 4 and enters again by itself; the
// callee's Room reconnects to the third node, its resume token is stale
// (the entry died with the node), so the reply is resumed:false and it
// builds new media. Both end up in one room on a live node, hearing each
// other, and the call goes on until hung up.
func TestClusterPartyAndMediaNodeKilled(t *testing.T) {
	c := startCluster(t)
	var dead string
	// The caller on another node, the callee on the media node; the
	// callee's Room redials to the third node.
	third := func(callerSlot, calleeSlot int) int { return 3 - callerSlot - calleeSlot }
	mc := startMediaCall(t, c, callParty{slot: 0}, callParty{redialTo: third}, func(a0 *client.Client, r calls.CallResult) (int, int) {
		other, _ := placeApart(t, c, &dead)(a0, r)
		return other, c.slotOf(t, dead)
	})
	waitMedia(t, "before the kill", 30, mc.parties())
	oneRoom(t, c, mc.r.RoomID, mc.parties())
	deadSlot := c.slotOf(t, dead)
	aSlot := (deadSlot + 1) % clusterNodes
	t.Logf("caller on %s, callee and room on %s", c.nodeID(aSlot), dead)
	oldA, oldB := mc.ra.Peer(), mc.rb.Peer()

	c.kill(t, deadSlot)
	killed := time.Now()
	waitMatch(t, mc.a, rooms.EvExitRoom, exitReason4(mc.r.RoomID))
	waitUntil(t, mediaWithin, "the caller to enter again and the callee to reconnect", func() bool {
		_, a := mc.ra.MediaLost()
		resumed, entered := mc.rb.Rejoins()
		if resumed > 0 {
			t.Fatal("the callee's entry resumed on another node after its media node died")
		}
		return a >= 1 && entered >= 1
	})
	if mc.ra.Peer() == oldA || mc.rb.Peer() == oldB || mc.rb.Result().Resumed {
		t.Fatal("a party kept its old peer")
	}
	waitMedia(t, "after the kill", 30, mc.parties())
	node := oneRoom(t, c, mc.r.RoomID, mc.parties())
	if node == dead {
		t.Fatalf("the room is still on the dead node %s", dead)
	}
	t.Logf("media node and callee's node %s killed: media both ways again through %s %v after the kill", dead, node, time.Since(killed).Round(time.Millisecond))
	for u, r := range mc.parties() {
		for _, err := range r.Errors() {
			t.Errorf("%s: negotiation error: %v", u, err)
		}
	}
	end := mc.hangUp(t)
	ci := historyRecord(t, c, aSlot, mc.callee, mc.r.CallID, calls.ResultCompleted, calls.EndHangup, mc.caller)
	if ci.BeganAt != mc.begin.StartTime || ci.DurationMs != end.DurationMs {
		t.Fatalf("the callee's record %+v: want begun at %d, lasting %d ms", ci, mc.begin.StartTime, end.DurationMs)
	}
}
