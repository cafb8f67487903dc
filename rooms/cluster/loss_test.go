package roomcluster_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
)

// TestMediaNodeLost: the room's media node n3 dies (its Redis cut: no
// cleanup of its own) while alice (n1) and bob (n2) are in it: both get
// onExitRoom reason 4 within a few node_ttl, enter again, land together on
// a live node, and media flows again. When n3 reaches Redis again it finds
// its room owned by a live node: it dismisses its copy (carol, connected
// to n3, gets reason 4 too).
func TestMediaNodeLost(t *testing.T) {
	_, nodes := startCluster(t, 3, options{})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.st.RoomRelay.ForcePlacement("n3")
	cc := n3.dial(t, "carol")
	if res, err := enterRaw(t, n3, cc, "carol", "ml"); err != nil || res.Node != "n3" {
		t.Fatalf("carol enters on n3: %+v %v", res, err)
	}
	a, b := n1.dial(t, "alice"), n2.dial(t, "bob")
	ra := enter(t, n1, a, "alice", "ml", roomclient.Options{})
	rb := enter(t, n2, b, "bob", "ml", roomclient.Options{})
	if ra.Result().Node != "n3" || rb.Result().Node != "n3" {
		t.Fatalf("entries on %q and %q, want n3", ra.Result().Node, rb.Result().Node)
	}
	eventually(t, 25*time.Second, "media both ways", func() bool { return receives(ra, 10, "bob") && receives(rb, 10, "alice") })

	cut := time.Now()
	n3.proxy.setCut(true)
	c := ctxT(t)
	for _, cl := range []*client.Client{a, b} {
		if _, err := cl.WaitEvent(c, rooms.EvExitRoom, exitReason("ml", rooms.ExitMediaNodeLost)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("reason 4 after %v (node_ttl 1.5s)", time.Since(cut).Round(time.Millisecond))
	ra.Close()
	rb.Close()
	ra2 := enter(t, n1, a, "alice", "ml", roomclient.Options{})
	rb2 := enter(t, n2, b, "bob", "ml", roomclient.Options{})
	node := ra2.Result().Node
	if node == "n3" || node == "" || rb2.Result().Node != node {
		t.Fatalf("entries again on %q and %q", node, rb2.Result().Node)
	}
	eventually(t, 25*time.Second, "media both ways again", func() bool { return receives(ra2, 10, "bob") && receives(rb2, 10, "alice") })
	t.Logf("media again after %v", time.Since(cut).Round(time.Millisecond))

	n3.proxy.setCut(false)
	if _, err := cc.WaitEvent(c, rooms.EvExitRoom, exitReason("ml", rooms.ExitMediaNodeLost)); err != nil {
		t.Fatalf("carol on n3 once it is back: %v", err)
	}
	eventually(t, 5*time.Second, "n3's copy of the room to go", func() bool { return !n3.st.Rooms.HasRoom("ml") })
	if got := hosts(nodes, "ml"); len(got) != 1 || got[0] != node {
		t.Fatalf("hosted on %v", got)
	}
}

// cutDialer dials a user's connections to a node and can cut the latest
// (a network drop, or the node's death as the client sees it).
type cutDialer struct {
	t    *testing.T
	n    *node
	user string

	mu    sync.Mutex
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context) (*client.Client, error) {
	wd := *websocket.DefaultDialer
	wd.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
		}
		return c, err
	}
	return client.Dial(ctx, d.n.url, d.n.token(d.t, d.user, ""), client.WithPingInterval(0), client.WithDialer(&wd))
}

func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// TestForwardingNodeLost: n1, which holds only alice's and dave's
// WebSockets, dies (its Redis and their connections cut) while they are in
// a room on n2. Alice's room client reconnects through n3 and resumes her
// entry with its resumeToken (same peer, media flows again, bob sees no
// leave). Dave does not come back: n2 closes his remote session when it
// notices n1 dead, and bob sees him leave (reason 1) after the rejoin
// grace.
func TestForwardingNodeLost(t *testing.T) {
	const grace = 3 * time.Second
	_, nodes := startCluster(t, 3, options{grace: grace})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n2.st.RoomRelay.ForcePlacement("n2")
	b := n2.dial(t, "bob")
	rb := enter(t, n2, b, "bob", "fl", roomclient.Options{})
	da := &cutDialer{t: t, n: n1, user: "alice"}
	a, err := da.dial(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	redial := &cutDialer{t: t, n: n3, user: "alice"}
	ra := enter(t, n1, a, "alice", "fl", roomclient.Options{Redial: redial.dial})
	dd := &cutDialer{t: t, n: n1, user: "dave"}
	d, err := dd.dial(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rd := enter(t, n1, d, "dave", "fl", roomclient.Options{})
	if ra.Result().Node != "n2" || rd.Result().Node != "n2" {
		t.Fatalf("entries on %q %q, want n2", ra.Result().Node, rd.Result().Node)
	}
	eventually(t, 25*time.Second, "media", func() bool { return receives(ra, 10, "bob") && receives(rb, 10, "alice", "dave") })
	p := ra.Peer()
	c := ctxT(t)
	if _, err := b.WaitEvent(c, rooms.EvRemoteUserEnterRoom, byUser("dave")); err != nil {
		t.Fatal(err)
	}

	n1.proxy.setCut(true)
	da.cut()
	dd.cut() // dave's media goes on: only his signaling is gone
	eventually(t, 15*time.Second, "alice to resume through n3", func() bool {
		resumed, entered := ra.Rejoins()
		if entered > 0 {
			t.Fatalf("alice entered anew instead of resuming: %v", ra.Errors())
		}
		return resumed == 1
	})
	if ra.Peer() != p {
		t.Fatal("the resumed room client changed its peer")
	}
	flowsAgain(t, ra, "bob", 20, "bob's media at alice after the resume")
	flowsAgain(t, rb, "alice", 20, "alice's media at bob after the resume")
	if err := ra.Client().Do(c, rooms.OpMuteLocalVideo, rooms.MuteArgs{RoomID: "fl", Mute: true}, nil); err != nil {
		t.Fatalf("mute through n3: %v", err)
	}
	ev, err := b.WaitEvent(c, rooms.EvRemoteUserLeaveRoom, nil)
	if err != nil {
		t.Fatal(err)
	}
	var leave rooms.RemoteLeaveEvent
	if err := ev.Decode(&leave); err != nil || leave.UserID != "dave" || leave.Reason != int(rooms.LeaveConnectionLost) {
		t.Fatalf("bob's first leave: %+v %v, want dave with reason 1", leave, err)
	}
	if got := n2.st.Rooms.Memberships()["fl"]; len(got) != 2 {
		t.Fatalf("members left: %v", got)
	}
}

// TestRoomNodeUnavailable: the room's media node does not answer (its
// relay stream unusable): the enterRoom through another node fails with
// 11015 room_node_unavailable after the request's deadline; once the node
// answers again, the retry succeeds.
func TestRoomNodeUnavailable(t *testing.T) {
	srv, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	n2.st.RoomRelay.ForcePlacement("n2")
	if _, err := enterRaw(t, n2, n2.dial(t, "bob"), "bob", "nu"); err != nil {
		t.Fatal(err)
	}
	rdb := srv.Client()
	stream := "rc{" + t.Name() + "}:rm:n2"
	if err := rdb.Set(context.Background(), stream, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	a := n1.dial(t, "alice")
	start := time.Now()
	_, err := enterRaw(t, n1, a, "alice", "nu")
	if !errors.Is(err, rooms.ErrRoomNodeUnavailable) {
		t.Fatalf("enterRoom while n2 does not answer: %v, want room_node_unavailable", err)
	}
	if d := time.Since(start); d < 4500*time.Millisecond {
		t.Fatalf("11015 after %v, before the request's deadline (5s)", d)
	}
	if err := rdb.Del(context.Background(), stream).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := enterRaw(t, n1, a, "alice", "nu")
	if err != nil || res.Node != "n2" {
		t.Fatalf("retry: %+v %v", res, err)
	}
}

// TestMediaNodeShutdown: a media node shut down gracefully dismisses its
// rooms with reason 4 (relayed to members connected elsewhere) and
// releases their leases: alice, on n1, enters again at once and the room
// is placed on a live node.
func TestMediaNodeShutdown(t *testing.T) {
	_, nodes := startCluster(t, 2, options{})
	n1, n2 := nodes[0], nodes[1]
	n2.st.RoomRelay.ForcePlacement("n2")
	if _, err := enterRaw(t, n2, n2.dial(t, "bob"), "bob", "sd"); err != nil {
		t.Fatal(err)
	}
	a := n1.dial(t, "alice")
	if res, err := enterRaw(t, n1, a, "alice", "sd"); err != nil || res.Node != "n2" {
		t.Fatalf("alice enters: %+v %v", res, err)
	}
	n2.stop()
	if _, err := a.WaitEvent(ctxT(t), rooms.EvExitRoom, exitReason("sd", rooms.ExitMediaNodeLost)); err != nil {
		t.Fatal(err)
	}
	res, err := enterRaw(t, n1, a, "alice", "sd")
	if err != nil || res.Node != "n1" {
		t.Fatalf("alice enters again: %+v %v", res, err)
	}
}

// TestEnterWhileMediaNodeDies: an enterRoom sent to a media node that dies
// before answering is placed again once the node is declared dead, within
// the request's deadline: the entry lands on a live node, no 11015.
func TestEnterWhileMediaNodeDies(t *testing.T) {
	_, nodes := startCluster(t, 3, options{})
	n1, n3 := nodes[0], nodes[2]
	n3.st.RoomRelay.ForcePlacement("n3")
	if _, err := enterRaw(t, n3, n3.dial(t, "carol"), "carol", "wd"); err != nil {
		t.Fatal(err)
	}
	a := n1.dial(t, "alice")
	n3.proxy.setCut(true)
	start := time.Now()
	res, err := enterRaw(t, n1, a, "alice", "wd")
	if err != nil || res.Node == "" || res.Node == "n3" {
		t.Fatalf("entry while the media node dies: %+v %v", res, err)
	}
	t.Logf("entered on %s %v after the media node's death", res.Node, time.Since(start).Round(time.Millisecond))
}
