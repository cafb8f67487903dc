package roomclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mediaNodeLost is onExitRoom's reason 4 (ROOMS.md): the room's media node
// was lost, enter again.
const mediaNodeLost = int(rooms.ExitMediaNodeLost)

// errNodeUnavailable is the error a cluster answers an enterRoom with when
// the room's media node does not answer.
var errNodeUnavailable = rooms.ErrRoomNodeUnavailable

// lossProxy stands between one client and a real server (webtest) and acts
// as a cluster node whose room's media node is lost: lose takes the
// client's entry out of the server's room (an exitRoom on the client's
// behalf, whose reply the client never sees, as a dead media node forgets
// it) and then tells the client onExitRoom reason 4; refuse makes it answer
// the client's next enterRoom requests itself with 11015, as a node does
// while the room is being placed again.
type lossProxy struct {
	t   *testing.T
	url string // the server's WebSocket URL
	srv *httptest.Server

	mu      sync.Mutex
	down    *websocket.Conn // to the client; writes under wmu
	up      *websocket.Conn // to the server; writes under wmu
	wmu     sync.Mutex
	refuse  int                      // enterRoom requests still to refuse
	own     map[string]chan struct{} // the proxy's own requests: closed at their reply
	mute    map[string]chan struct{} // rooms whose onExitRoom reason 0 (the proxy's exitRoom) the client must not see: closed when dropped
	enters  atomic.Int64             // enterRoom requests from the client
	args    []rooms.EnterArgs        // their args, guarded by mu
	refused atomic.Int64
	wg      sync.WaitGroup
}

func newLossProxy(t *testing.T, serverURL string) *lossProxy {
	p := &lossProxy{t: t, url: serverURL, own: map[string]chan struct{}{}, mute: map[string]chan struct{}{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.close)
	return p
}

func (p *lossProxy) URL() string { return "ws" + strings.TrimPrefix(p.srv.URL, "http") + "/ws" }

func (p *lossProxy) serve(w http.ResponseWriter, r *http.Request) {
	h := http.Header{}
	h.Set("Authorization", r.Header.Get("Authorization"))
	up, _, err := websocket.DefaultDialer.Dial(p.url, h)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	down, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		_ = up.Close()
		return
	}
	p.mu.Lock()
	p.down, p.up = down, up
	p.mu.Unlock()
	p.wg.Add(1)
	go func() { // server → client
		defer p.wg.Done()
		defer down.Close()
		for {
			_, data, err := up.ReadMessage()
			if err != nil {
				return
			}
			var f struct {
				ID    *string             `json:"id"`
				Event string              `json:"event"`
				Data  rooms.ExitRoomEvent `json:"data"`
			}
			if json.Unmarshal(data, &f) == nil && f.Event == rooms.EvExitRoom && f.Data.Reason == int(rooms.ExitLeft) {
				p.mu.Lock()
				ch, mine := p.mute[f.Data.RoomID]
				delete(p.mute, f.Data.RoomID)
				p.mu.Unlock()
				if mine {
					close(ch)
					continue
				}
			}
			if f.ID != nil {
				p.mu.Lock()
				ch, mine := p.own[*f.ID]
				delete(p.own, *f.ID)
				p.mu.Unlock()
				if mine {
					close(ch)
					continue
				}
			}
			p.write(down, data)
		}
	}()
	// client → server, on the handler's goroutine
	defer up.Close()
	for {
		_, data, err := down.ReadMessage()
		if err != nil {
			return
		}
		var req protocol.Request
		if json.Unmarshal(data, &req) == nil && req.Op == rooms.OpEnterRoom {
			p.enters.Add(1)
			var args rooms.EnterArgs
			_ = json.Unmarshal(req.Args, &args)
			p.mu.Lock()
			p.args = append(p.args, args)
			refuse := p.refuse > 0
			if refuse {
				p.refuse--
			}
			p.mu.Unlock()
			if refuse {
				p.refused.Add(1)
				b, _ := protocol.EncodeReply(req.ID, nil, errNodeUnavailable)
				p.write(down, b)
				continue
			}
		}
		p.write(up, data)
	}
}

func (p *lossProxy) write(c *websocket.Conn, data []byte) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = c.WriteMessage(websocket.TextMessage, data)
}

// refuseNext makes the proxy answer the client's next n enterRoom with 11015.
func (p *lossProxy) refuseNext(n int) {
	p.mu.Lock()
	p.refuse = n
	p.mu.Unlock()
}

// lose makes the client's entry in roomID vanish from the server, then
// sends the client onExitRoom reason 4.
func (p *lossProxy) lose(ctx context.Context, roomID string) {
	p.t.Helper()
	id := fmt.Sprintf("proxy-%d", time.Now().UnixNano())
	replied, dropped := make(chan struct{}), make(chan struct{})
	p.mu.Lock()
	p.own[id], p.mute[roomID] = replied, dropped
	up, down := p.up, p.down
	p.mu.Unlock()
	req, _ := json.Marshal(protocol.Request{ID: id, Op: rooms.OpExitRoom, Args: json.RawMessage(fmt.Sprintf(`{"roomID":%q}`, roomID))})
	p.write(up, req)
	for _, ch := range []chan struct{}{replied, dropped} {
		select {
		case <-ch:
		case <-ctx.Done():
			p.t.Fatal("the server did not answer the proxy's exitRoom, or sent no onExitRoom")
		}
	}
	ev, _ := protocol.EncodeEvent(rooms.EvExitRoom, rooms.ExitRoomEvent{RoomID: roomID, Reason: mediaNodeLost})
	p.write(down, ev)
}

func (p *lossProxy) close() {
	p.srv.Close()
	p.mu.Lock()
	for _, c := range []*websocket.Conn{p.up, p.down} {
		if c != nil {
			_ = c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func peerCfg() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true,
		VideoBitrate: 200_000, VideoFPS: 20, KeyframeInterval: 10 * time.Second}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func packets(r *roomclient.Room, user, kind string) uint64 {
	return r.Received()[peer.TrackKey{StreamID: user, Kind: kind}].Packets
}

// flowsAgain waits until r has received n more packets of both kinds from
// user than when called.
func flowsAgain(t *testing.T, r *roomclient.Room, user string, n uint64, what string) {
	t.Helper()
	a0, v0 := packets(r, user, media.KindAudio), packets(r, user, media.KindVideo)
	eventually(t, 15*time.Second, what, func() bool {
		return packets(r, user, media.KindAudio) >= a0+n && packets(r, user, media.KindVideo) >= v0+n
	})
}

func byUser(user string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			UserID string `json:"userID"`
		}
		return ev.Decode(&v) == nil && v.UserID == user
	}
}

// pair is bob in room roomID directly, and alice through a lossProxy.
type pair struct {
	s      *webtest.Stack
	proxy  *lossProxy
	a, b   *client.Client
	ra, rb *roomclient.Room
}

func enterPair(t *testing.T, roomID string, opts roomclient.Options) *pair {
	t.Helper()
	ctx := testCtx(t)
	s := webtest.Start(t, webtest.Options{})
	pr := &pair{s: s, proxy: newLossProxy(t, s.URL), b: s.Dial("bob")}
	var err error
	pr.rb, err = roomclient.Enter(ctx, pr.b, roomID, roomclient.Options{RoomToken: s.RoomToken("bob", roomID), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pr.rb.Close)
	pr.a, err = client.Dial(ctx, pr.proxy.URL(), s.Token("alice"), client.WithPingInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pr.a.Close() })
	opts.RoomToken, opts.Peer = s.RoomToken("alice", roomID), peerCfg()
	pr.ra, err = roomclient.Enter(ctx, pr.a, roomID, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pr.ra.Close)
	eventually(t, 15*time.Second, "media both ways", func() bool {
		return packets(pr.ra, "bob", media.KindVideo) > 10 && packets(pr.rb, "alice", media.KindVideo) > 10 &&
			packets(pr.ra, "bob", media.KindAudio) > 10 && packets(pr.rb, "alice", media.KindAudio) > 10
	})
	// Taken off bob's events: a later one is the re-entry's.
	if _, err := pr.b.WaitEvent(ctx, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	return pr
}

// TestMediaNodeLostReentersWithNewMedia: onExitRoom reason 4 makes the Room
// enter the room again by itself on the same connection, at once, with a
// new peer (new PeerConnections) publishing the same tracks: bob sees
// alice leave and enter again, and media flows both ways again; the
// application still gets the onExitRoom event.
func TestMediaNodeLostReentersWithNewMedia(t *testing.T) {
	pr := enterPair(t, "lost", roomclient.Options{})
	ctx := testCtx(t)
	old := pr.ra.Peer()
	oldToken := pr.ra.Result().ResumeToken
	lost := time.Now()
	pr.proxy.lose(ctx, "lost")

	eventually(t, 10*time.Second, "alice's Room to enter again", func() bool {
		n, re := pr.ra.MediaLost()
		return n == 1 && re == 1
	})
	if pr.ra.Peer() == old || pr.ra.Client() != pr.a {
		t.Fatal("re-entered with the old peer, or on another connection")
	}
	if tok := pr.ra.Result().ResumeToken; tok == "" || tok == oldToken {
		t.Fatalf("resume token after the re-entry %q (was %q): want a new entry's", tok, oldToken)
	}
	if resumed, entered := pr.ra.Rejoins(); resumed+entered != 0 {
		t.Fatalf("Rejoins %d %d: a media-node loss is not a reconnection", resumed, entered)
	}
	// The old peer is closed: its counters stop.
	if st, _ := old.States(); st.String() != "closed" {
		t.Errorf("old peer's publisher %v, want closed", st)
	}
	flowsAgain(t, pr.ra, "bob", 20, "bob's media at alice's new peer")
	flowsAgain(t, pr.rb, "alice", 20, "alice's media at bob from her new peer")
	t.Logf("onExitRoom reason 4 to media both ways again: %v", time.Since(lost).Round(time.Millisecond))

	ev, err := pr.a.WaitEvent(ctx, rooms.EvExitRoom, nil)
	if err != nil {
		t.Fatal(err)
	}
	var exit rooms.ExitRoomEvent
	if ev.Decode(&exit) != nil || exit.Reason != mediaNodeLost {
		t.Fatalf("alice's onExitRoom %v, want reason 4", ev)
	}
	if _, err := pr.b.WaitEvent(ctx, rooms.EvRemoteUserLeaveRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.b.WaitEvent(ctx, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	if got := pr.s.Rooms.Members("lost"); len(got) != 2 {
		t.Errorf("members after the re-entry: %+v", got)
	}
	for _, err := range append(pr.ra.Errors(), pr.rb.Errors()...) {
		t.Errorf("negotiation error: %v", err)
	}
	pr.proxy.mu.Lock()
	args := slices.Clone(pr.proxy.args)
	pr.proxy.mu.Unlock()
	if len(args) != 2 {
		t.Fatalf("enterRoom requests %+v, want the first and one re-entry", args)
	}
	if again := args[1]; again.RoomToken == "" || again.RoomToken != args[0].RoomToken || again.Role != "anchor" ||
		again.ResumeToken != "" || again.RoomID != "lost" {
		t.Errorf("the re-entry's args %+v, want the first's room token and role (%+v), no resume token", again, args[0])
	}
}

// TestMediaNodeLostRetriesWithBackoff: while the room cannot be placed (the
// node answers 11015), the Room keeps entering again with backoff, and gets
// in once it can.
func TestMediaNodeLostRetriesWithBackoff(t *testing.T) {
	pr := enterPair(t, "retry", roomclient.Options{})
	ctx := testCtx(t)
	pr.proxy.refuseNext(3)
	lost := time.Now()
	pr.proxy.lose(ctx, "retry")
	eventually(t, 10*time.Second, "alice's Room to enter again", func() bool { _, re := pr.ra.MediaLost(); return re == 1 })
	took := time.Since(lost)
	// Refused at once, then after 100, 200 and 400 ms: the fourth attempt
	// gets in, about 700 ms later.
	if n := pr.proxy.refused.Load(); n != 3 {
		t.Fatalf("%d refused attempts, want 3", n)
	}
	if took < 700*time.Millisecond || took > 5*time.Second {
		t.Errorf("entered again %v after the loss, want after the 700 ms of backoff", took)
	}
	flowsAgain(t, pr.rb, "alice", 20, "alice's media at bob after the retries")
	flowsAgain(t, pr.ra, "bob", 20, "bob's media at alice after the retries")
	for _, err := range append(pr.ra.Errors(), pr.rb.Errors()...) {
		t.Errorf("negotiation error: %v", err)
	}
}

// TestMediaNodeLostGivesUp: a room that cannot be placed again within
// Options.RejoinTimeout: the Room stops trying at the bound and says why
// in Errors.
func TestMediaNodeLostGivesUp(t *testing.T) {
	const bound = 1500 * time.Millisecond
	pr := enterPair(t, "never", roomclient.Options{RejoinTimeout: bound})
	ctx := testCtx(t)
	pr.proxy.refuseNext(1000)
	lost := time.Now()
	pr.proxy.lose(ctx, "never")
	eventually(t, 10*time.Second, "alice's Room to give up", func() bool { return len(pr.ra.Errors()) > 0 })
	took := time.Since(lost)
	errs := pr.ra.Errors()
	if took > bound+time.Second || !strings.Contains(errs[0].Error(), "room_node_unavailable") {
		t.Fatalf("gave up after %v with %v, want within %v + 1 s and the last error", took, errs, bound)
	}
	n := pr.proxy.refused.Load()
	// At once, then after 100, 200, 400, 800 ms: 5 attempts fit in 1.5 s.
	if n < 4 || n > 6 {
		t.Errorf("%d attempts in %v, want about 5", n, bound)
	}
	time.Sleep(500 * time.Millisecond) // it does not try again after giving up
	if m := pr.proxy.refused.Load(); m != n {
		t.Errorf("%d more attempts after giving up", m-n)
	}
	if _, re := pr.ra.MediaLost(); re != 0 {
		t.Errorf("%d re-entries, want none", re)
	}
}

// TestReconnectNotResumedRebuildsMedia: alice's WebSocket is cut and her
// Redial waits until the server has dropped her entry (rejoin grace over),
// as when a client reconnects late or to a node that does not know the
// entry: enterRoom with the resume token answers resumed:false and the Room
// builds a new peer; media flows both ways again.
func TestReconnectNotResumedRebuildsMedia(t *testing.T) {
	ctx := testCtx(t)
	s := webtest.Start(t, webtest.Options{Rooms: rooms.Config{RejoinGrace: 300 * time.Millisecond}})
	b := s.Dial("bob")
	rb, err := roomclient.Enter(ctx, b, "late", roomclient.Options{RoomToken: s.RoomToken("bob", "late"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	d := &webtest.CutDialer{Stack: s, User: "alice"}
	a, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	left := make(chan struct{})
	redial := func(ctx context.Context) (*client.Client, error) {
		select {
		case <-left:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return d.Dial(ctx)
	}
	ra, err := roomclient.Enter(ctx, a, "late", roomclient.Options{RoomToken: s.RoomToken("alice", "late"), Peer: peerCfg(), Redial: redial})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	eventually(t, 15*time.Second, "media both ways", func() bool {
		return packets(ra, "bob", media.KindVideo) > 10 && packets(rb, "alice", media.KindVideo) > 10
	})
	old := ra.Peer()
	d.Cut()
	if _, err := b.WaitEvent(ctx, rooms.EvRemoteUserLeaveRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	close(left)
	eventually(t, 10*time.Second, "alice's Room to enter anew", func() bool {
		resumed, entered := ra.Rejoins()
		return resumed == 0 && entered == 1
	})
	if ra.Peer() == old || ra.Client() == a || ra.Result().Resumed {
		t.Fatal("not a new entry with a new peer on a new connection")
	}
	flowsAgain(t, ra, "bob", 20, "bob's media at alice's new peer")
	flowsAgain(t, rb, "alice", 20, "alice's media at bob from her new peer")
	if _, err := b.WaitEvent(ctx, rooms.EvRemoteUserEnterRoom, byUser("alice")); err != nil {
		t.Fatal(err)
	}
	for _, err := range append(ra.Errors(), rb.Errors()...) {
		t.Errorf("negotiation error: %v", err)
	}
}

// cut closes the proxied connection both ways, as a node that dies.
func (p *lossProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.down.Close()
	_ = p.up.Close()
}

// TestReconnectRetriesNodeUnavailable: alice's connection drops and her
// new one (to another node, in a cluster) answers 11015 room_node_unavailable
// twice: the Room keeps trying instead of giving up, and resumes.
func TestReconnectRetriesNodeUnavailable(t *testing.T) {
	ctx := testCtx(t)
	s := webtest.Start(t, webtest.Options{Rooms: rooms.Config{RejoinGrace: 10 * time.Second}})
	proxy := newLossProxy(t, s.URL)
	b := s.Dial("bob")
	rb, err := roomclient.Enter(ctx, b, "hop", roomclient.Options{RoomToken: s.RoomToken("bob", "hop"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	dial := func(ctx context.Context) (*client.Client, error) {
		return client.Dial(ctx, proxy.URL(), s.Token("alice"), client.WithPingInterval(0))
	}
	a, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ra, err := roomclient.Enter(ctx, a, "hop", roomclient.Options{RoomToken: s.RoomToken("alice", "hop"), Peer: peerCfg(), Redial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	eventually(t, 15*time.Second, "media both ways", func() bool {
		return packets(ra, "bob", media.KindVideo) > 10 && packets(rb, "alice", media.KindVideo) > 10
	})
	p := ra.Peer()
	proxy.refuseNext(2)
	proxy.cut()
	eventually(t, 10*time.Second, "alice's Room to resume", func() bool { resumed, _ := ra.Rejoins(); return resumed == 1 })
	if n := proxy.refused.Load(); n != 2 || ra.Peer() != p {
		t.Fatalf("%d refusals before the resume (want 2), same peer %v", n, ra.Peer() == p)
	}
	flowsAgain(t, rb, "alice", 20, "alice's media at bob after the resume")
	for _, err := range append(ra.Errors(), rb.Errors()...) {
		t.Errorf("negotiation error: %v", err)
	}
}

// TestMediaNodeLostKeepsRole: an audience member whose room's media node is
// lost enters again as audience (it publishes nothing) and still receives.
func TestMediaNodeLostKeepsRole(t *testing.T) {
	ctx := testCtx(t)
	s := webtest.Start(t, webtest.Options{})
	proxy := newLossProxy(t, s.URL)
	b := s.Dial("bob")
	rb, err := roomclient.Enter(ctx, b, "aud", roomclient.Options{RoomToken: s.RoomToken("bob", "aud"), Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	a, err := client.Dial(ctx, proxy.URL(), s.Token("alice"), client.WithPingInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ra, err := roomclient.Enter(ctx, a, "aud", roomclient.Options{RoomToken: s.RoomToken("alice", "aud"), Role: rooms.RoleAudience, Peer: peerCfg()})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	eventually(t, 15*time.Second, "bob's media at alice", func() bool { return packets(ra, "bob", media.KindVideo) > 10 })
	proxy.lose(ctx, "aud")
	eventually(t, 10*time.Second, "alice's Room to enter again", func() bool { _, re := ra.MediaLost(); return re == 1 })
	if ra.Role() != rooms.RoleAudience || ra.Result().Role != rooms.RoleAudience {
		t.Fatalf("role after the re-entry %q (reply %q), want audience", ra.Role(), ra.Result().Role)
	}
	flowsAgain(t, ra, "bob", 20, "bob's media at alice's new peer")
	if ra.Peer().Publishes() {
		t.Error("the audience member publishes after the re-entry")
	}
	if info, err := ra.Info(ctx); err != nil || !slices.Equal(info.Audience, []string{"alice"}) {
		t.Errorf("room info %+v, %v: want alice in the audience", info, err)
	}
	for _, err := range append(ra.Errors(), rb.Errors()...) {
		t.Errorf("negotiation error: %v", err)
	}
}
