package roomcluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "roomcluster-test-secret-0123456789abcdef"

// redisProxy forwards TCP connections to Redis until cut: a node behind it
// loses Redis at once (its node key expires, the others declare it dead)
// without any cleanup of its own, as when it is killed.
type redisProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *redisProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *redisProxy) addr() string { return p.ln.Addr().String() }

func (p *redisProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// setCut cuts (true) or restores (false) the node's Redis.
func (p *redisProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

func (p *redisProxy) close() {
	_ = p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}

// node is one in-process node of the cluster: the whole stack in cluster
// mode (engine, SFU, rooms, calls, relay) behind an httptest server, its
// Redis through a proxy the test may cut.
type node struct {
	id    string
	st    *stack.Stack
	http  *httptest.Server
	url   string
	proxy *redisProxy
}

// options change every node's configuration.
type options struct {
	maxRooms int
	ttl      time.Duration
	grace    time.Duration // media.rejoin_grace
}

// startCluster starts n nodes n1..nN on one Redis.
func startCluster(t *testing.T, n int, o options) (*redistest.Server, []*node) {
	t.Helper()
	srv := redistest.StartTCP(t)
	var nodes []*node
	for i := 1; i <= n; i++ {
		nodes = append(nodes, startNode(t, srv, "n"+string(rune('0'+i)), o))
	}
	return srv, nodes
}

func startNode(t *testing.T, srv *redistest.Server, id string, o options) *node {
	t.Helper()
	cfg, err := stack.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, srv.Addr())
	cfg.Store.Path = "/nonexistent/never-opened.db"
	cfg.Auth.Secret = []byte(secret)
	cfg.Media.SFU.UDPPort, cfg.Media.SFU.ListenIP, cfg.Media.SFU.IncludeLoopback = 0, "127.0.0.1", true
	if o.maxRooms > 0 {
		cfg.Limits.Rooms.MaxRoomsPerUser = o.maxRooms
	}
	cfg.Media.RejoinGrace = o.grace
	if cfg.Media.RejoinGrace == 0 {
		cfg.Media.RejoinGrace = 10 * time.Second
	}
	cfg.Server.Web.RequestTimeout = 5 * time.Second
	cfg.Metrics.Enabled, cfg.Metrics.Addr = true, ""
	cfg.Cluster.NodeID = id
	cfg.Cluster.Redis.Addr = px.addr()
	cfg.Cluster.Redis.KeyPrefix = "rc{" + t.Name() + "}:"
	ttl := o.ttl
	if ttl == 0 {
		ttl = 1500 * time.Millisecond // short, but not so short that a loaded test machine looks dead
	}
	cfg.Cluster.Knobs.NodeTTL, cfg.Cluster.Knobs.OpTimeout = ttl, ttl/3
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, st: st, proxy: px}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", id, logs.String())
		}
	})
	n.http = httptest.NewServer(st.Handler())
	n.url = "ws" + strings.TrimPrefix(n.http.URL, "http") + "/ws"
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down (its Redis restored first, so that it leaves
// at once).
func (n *node) stop() {
	n.proxy.setCut(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.st.Shutdown(ctx)
	n.http.Close()
	_ = n.st.Close()
}

func (n *node) token(t *testing.T, user, room string) string {
	t.Helper()
	tok, _, err := n.st.Auth.Issue(user, room, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dial connects user to the node; closed when the test ends.
func (n *node) dial(t *testing.T, user string) *client.Client {
	t.Helper()
	c, err := n.dialErr(context.Background(), t, user)
	if err != nil {
		t.Fatalf("dial %s at %s: %v", user, n.id, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (n *node) dialErr(ctx context.Context, t *testing.T, user string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return client.Dial(ctx, n.url, n.token(t, user, ""), client.WithPingInterval(0))
}

// enter enters roomID with a room token and media.
func enter(t *testing.T, n *node, c *client.Client, user, roomID string, o roomclient.Options) *roomclient.Room {
	t.Helper()
	if o.RoomToken == "" {
		o.RoomToken = n.token(t, user, roomID)
	}
	o.Peer = peerCfg()
	r, err := roomclient.Enter(ctxT(t), c, roomID, o)
	if err != nil {
		t.Fatalf("%s enters %s through %s: %v", user, roomID, n.id, err)
	}
	t.Cleanup(r.Close)
	return r
}

func peerCfg() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true,
		VideoBitrate: 100_000, VideoFPS: 15, KeyframeInterval: 5 * time.Second}
}

func ctxT(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
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

// receives reports whether r got at least n packets of both kinds from
// each of users.
func receives(r *roomclient.Room, n uint64, users ...string) bool {
	got := r.Received()
	for _, u := range users {
		for _, k := range []string{media.KindAudio, media.KindVideo} {
			if got[peer.TrackKey{StreamID: u, Kind: k}].Packets < n {
				return false
			}
		}
	}
	return true
}

// flowsAgain waits until r receives n more packets of both kinds from user.
func flowsAgain(t *testing.T, r *roomclient.Room, user string, n uint64, what string) {
	t.Helper()
	got := r.Received()
	a0 := got[peer.TrackKey{StreamID: user, Kind: media.KindAudio}].Packets
	v0 := got[peer.TrackKey{StreamID: user, Kind: media.KindVideo}].Packets
	eventually(t, 25*time.Second, what, func() bool {
		got := r.Received()
		return got[peer.TrackKey{StreamID: user, Kind: media.KindAudio}].Packets >= a0+n &&
			got[peer.TrackKey{StreamID: user, Kind: media.KindVideo}].Packets >= v0+n
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

// exitReason matches onExitRoom of roomID with reason.
func exitReason(roomID string, reason rooms.ExitReason) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v rooms.ExitRoomEvent
		return ev.Decode(&v) == nil && v.RoomID == roomID && v.Reason == int(reason)
	}
}

// hosts lists the nodes that have a room roomID.
func hosts(nodes []*node, roomID string) []string {
	var out []string
	for _, n := range nodes {
		if n.st.Rooms.HasRoom(roomID) {
			out = append(out, n.id)
		}
	}
	return out
}

// logBuf is a log sink safe for the stack's goroutines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func fmtSscan(s string, v *float64) (int, error) { return fmt.Sscan(s, v) }
