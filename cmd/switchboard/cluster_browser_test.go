package main

// Browser tests of the cluster (issue 13): the demo app in headless
// Chromium (web/webtest's helpers), each page served by, and connected
// to, another node of a real cluster (startCluster: one redis-server and
// switchboard processes). Media flows between each page and the room's
// media node over UDP on loopback.

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

const (
	// clusterAcceptToMedia is how soon after the callee accepts both pages
	// must decode the other's video (5 s standalone: web's acceptToMedia;
	// more here, with three nodes and two browsers on two cores).
	clusterAcceptToMedia = 10 * time.Second
	// clusterBrowserBudget bounds one cluster browser test.
	clusterBrowserBudget = 3 * time.Minute
)

// clusterDemoCall starts the cluster and one demo page per user, page i
// served by base(i), signs them in, and places a video call from the first
// to the second through the demo; it returns once both decode the other's
// video, with the media node each page's room reports.
func clusterDemoCall(ctx context.Context, t *testing.T, c *testCluster, base func(i int) string) (pages []*webtest.Page, mediaNodes []string) {
	t.Helper()
	users := []string{c.user("alice"), c.user("bob")}
	pages = webtest.StartDemoPages(t, users...)
	for i, p := range pages {
		webtest.SignIn(ctx, t, p, base(i), p.Name)
	}
	webtest.Must(t, pages[0].WaitSel(ctx, webtest.Sel("contact", "user", users[1]), webtest.UIWait))
	callerFirst, calleeFirst := webtest.ConnectDemoCall(ctx, t, pages[0], pages[1], clusterAcceptToMedia)
	t.Logf("cluster: accept → first decoded frame: caller %v, callee %v", callerFirst.Round(time.Millisecond), calleeFirst.Round(time.Millisecond))
	for _, p := range pages {
		n, err := webtest.Eval[string](ctx, p, `window.demo.room().node ?? ''`)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		mediaNodes = append(mediaNodes, n)
	}
	if mediaNodes[0] == "" || mediaNodes[0] != mediaNodes[1] {
		t.Fatalf("the pages' rooms are on media nodes %q: want one node, named in the enterRoom reply", mediaNodes)
	}
	return pages, mediaNodes
}

// TestClusterBrowserCall: alice's page is served by node 1 (its WebSocket
// too) and bob's by node 2; alice video-calls bob through the demo, bob
// accepts, and each page decodes the other's video within 10 s of the
// accept: their media meets in one room on one media node (the same
// `node` in both enterRoom replies). Then bob hangs up and both pages show
// the call ended.
func TestClusterBrowserCall(t *testing.T) {
	webtest.ChromiumPath(t)
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterBrowserBudget)
	defer cancel()
	pages, nodes := clusterDemoCall(ctx, t, c, func(i int) string { return "http://" + c.node(i).addr })
	t.Logf("pages on nodes %s and %s; media node %s", c.nodeID(0), c.nodeID(1), nodes[0])
	webtest.Must(t, pages[1].Click(ctx, webtest.Sel("call-hangup"), webtest.UIWait))
	for _, p := range pages {
		webtest.Must(t, p.CallState(ctx, "ended", webtest.UIWait))
		if errs := p.PageErrors(ctx); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.Name, errs)
		}
	}
}

// TestClusterBrowserMediaNodeLost: as TestClusterBrowserCall, each page
// behind a load balancer of its own (failoverProxy: its node first, else
// any live node). The room's media node is SIGKILLed; the pages enter the
// room again on a live node with new connections and decode each other's
// video again; the call stays active on both. Two placements: the pages on
// nodes 2 and 3, so that the room goes to node 1 (the lowest ID among
// equally loaded nodes), which holds neither page's WebSocket: both pages
// get onExitRoom reason 4; and the pages on nodes 1 and 2, the room on the
// caller's node 1: the caller's WebSocket goes too, its page reconnects
// through its balancer to another node and resumes (the room's node is
// unavailable or gone: it enters again, resumed false), the callee's gets
// reason 4. Logged: the time from the kill to both pages decoding again,
// and each page's way back.
func TestClusterBrowserMediaNodeLost(t *testing.T) {
	webtest.ChromiumPath(t)
	for _, tc := range []struct {
		name  string
		slots [2]int
	}{
		{"parties on the other nodes", [2]int{1, 2}},
		{"media node holds the caller", [2]int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) { clusterMediaNodeLost(t, tc.slots) })
	}
}

func clusterMediaNodeLost(t *testing.T, slots [2]int) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterBrowserBudget)
	defer cancel()
	lbs := []*failoverProxy{newFailoverProxy(t, c, slots[0]), newFailoverProxy(t, c, slots[1])}
	pages, nodes := clusterDemoCall(ctx, t, c, func(i int) string { return "http://" + lbs[i].addr() })
	slot := c.slotOf(t, nodes[0])
	watchRoom(ctx, t, pages)
	t.Logf("pages on nodes %s and %s (through their balancers); killing the media node %s", c.nodeID(slots[0]), c.nodeID(slots[1]), nodes[0])
	killed := time.Now()
	c.kill(t, slot)

	back := make([]time.Duration, len(pages))
	var wg sync.WaitGroup
	for i, p := range pages {
		other := pages[1-i].Name
		wg.Go(func() {
			// New connections of the same room object, on another media
			// node, decoding the other's video, rising.
			cond := fmt.Sprintf(`(async () => {
				const r = window.demo.room();
				if (!r || r !== window.before.room || !r.subscriber || r.subscriber === window.before.sub || r.node === %q || r.node === '') return 0;
				return await %s;
			})()`, nodes[0], webtest.FramesDecodedJS("window.demo.room()", other))
			first, ok := webtest.Wait[float64](ctx, p, 30*time.Second, cond, `{ node: window.demo.room()?.node, ws: window.demo.sb?.state, notices: window.demoState.callNotices, call: window.demoState.call }`)
			if !ok {
				return
			}
			back[i] = time.Since(killed)
			_, ok = webtest.Wait[float64](ctx, p, 5*time.Second, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, cond, first), `window.demoState.call`)
			if ok {
				p.T.Logf("%s: decoding %s's video again %v after the kill", p.Name, other, back[i].Round(time.Millisecond))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("media node SIGKILL → both pages decoding again: %v (%s %v, %s %v)", max(back[0], back[1]).Round(time.Millisecond),
		pages[0].Name, back[0].Round(time.Millisecond), pages[1].Name, back[1].Round(time.Millisecond))
	for i, p := range pages {
		webtest.Must(t, p.CallState(ctx, "active", time.Second))
		logRoomPath(ctx, t, p)
		// A page whose WebSocket was elsewhere heard of the loss from the
		// server (reason 4); the other one lost its WebSocket with the node.
		cond := `window.roomLog.some((e) => e.name === 'reconnecting' && e.reason === 4) && window.roomLog.some((e) => e.name === 'resumed' && e.reason === 4)`
		if c.nodeID(slots[i]) == nodes[0] {
			cond = `window.roomLog.some((e) => e.name === 'connection' && e.state === 'reconnecting') && window.roomLog.some((e) => e.name === 'resumed' && !e.resumed)`
		}
		if ok, err := webtest.Eval[bool](ctx, p, cond); err != nil || !ok {
			t.Errorf("%s: its way back is not %s (%v)", p.Name, cond, err)
		}
		// The call screen shows the other's new stream, playing.
		other := pages[1-i].Name
		_, ok := webtest.Wait[bool](ctx, p, 5*time.Second, fmt.Sprintf(`(() => {
			const v = document.querySelector(%q);
			return !!v && v.srcObject === window.demo.room().remoteStreams.get(%q) && v.videoWidth > 0 && !v.paused;
		})()`, webtest.Sel("remote-video", "user", other), other), `window.demoState.callNotices`)
		webtest.Must(t, ok)
		if errs := p.PageErrors(ctx); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.Name, errs)
		}
	}
}

// TestClusterBrowserSignalingNodeLost: as TestClusterBrowserMediaNodeLost,
// but the node killed holds only one page's WebSocket (not the room's media
// node): that page reconnects through its balancer to another node and
// resumes its place (resumed true: the same connections go on, the video
// keeps decoding); the other page sees no leave; the call stays active.
func TestClusterBrowserSignalingNodeLost(t *testing.T) {
	webtest.ChromiumPath(t)
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterBrowserBudget)
	defer cancel()
	lbs := []*failoverProxy{newFailoverProxy(t, c, 0), newFailoverProxy(t, c, 1)}
	pages, nodes := clusterDemoCall(ctx, t, c, func(i int) string { return "http://" + lbs[i].addr() })
	victim := 0 // the page whose node is killed: pages are on slots 0 and 1
	if c.slotOf(t, nodes[0]) == 0 {
		victim = 1
	}
	watchRoom(ctx, t, pages)
	p, other := pages[victim], pages[1-victim]
	t.Logf("media node %s; killing %s's node %s", nodes[0], p.Name, c.nodeID(victim))
	killed := time.Now()
	c.kill(t, victim)
	_, ok := webtest.Wait[bool](ctx, p, 30*time.Second, `(window.roomLog ?? []).some((e) => e.name === 'resumed')`, `{ ws: window.demo.sb?.state, log: window.roomLog }`)
	webtest.Must(t, ok)
	t.Logf("%s: resumed %v after the kill", p.Name, time.Since(killed).Round(time.Millisecond))
	got, err := webtest.Eval[string](ctx, p, `JSON.stringify({ resumed: window.roomLog.find((e) => e.name === 'resumed').resumed,
		same: window.demo.room() === window.before.room && window.demo.room().subscriber === window.before.sub })`)
	if err != nil || got != `{"resumed":true,"same":true}` {
		t.Errorf("%s: after the reconnection %s (%v), want resumed on the same connections", p.Name, got, err)
	}
	for _, pr := range [][2]*webtest.Page{{p, other}, {other, p}} {
		dec := webtest.FramesDecodedJS("window.demo.room()", pr[1].Name)
		first, err := webtest.Eval[float64](ctx, pr[0], dec)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := webtest.Wait[float64](ctx, pr[0], 10*time.Second, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, dec, first), `window.demoState.call`)
		webtest.Must(t, ok)
	}
	if left, _ := webtest.Eval[bool](ctx, other, `(window.roomLog ?? []).some((e) => e.name === 'onRemoteUserLeaveRoom')`); left {
		t.Errorf("%s saw %s leave", other.Name, p.Name)
	}
	for _, p := range pages {
		webtest.Must(t, p.CallState(ctx, "active", time.Second))
		logRoomPath(ctx, t, p)
		if errs := p.PageErrors(ctx); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.Name, errs)
		}
	}
}

// watchRoom keeps, in each page, its current room and connections
// (window.before) and the room's recovery events from now on
// (window.roomLog).
func watchRoom(ctx context.Context, t *testing.T, pages []*webtest.Page) {
	t.Helper()
	for _, p := range pages {
		if _, err := webtest.Eval[bool](ctx, p, `(() => {
			const r = window.demo.room();
			window.before = { room: r, sub: r.subscriber, pub: r.publisher };
			window.roomLog = [];
			const t0 = performance.now();
			for (const name of ['reconnecting', 'reenterRetry', 'resumed', 'onExitRoom', 'onRemoteUserLeaveRoom', 'onRemoteUserEnterRoom']) {
				r.on(name, (d) => window.roomLog.push({ name, ms: Math.round(performance.now() - t0), ...d }));
			}
			window.demo.sb.on('connectionState', (d) => window.roomLog.push({ name: 'connection', ms: Math.round(performance.now() - t0), state: d.state }));
			return true;
		})()`); err != nil {
			t.Fatal(err)
		}
	}
}

// logRoomPath logs how a page's room recovered (window.roomLog).
func logRoomPath(ctx context.Context, t *testing.T, p *webtest.Page) {
	t.Helper()
	if s, err := webtest.Eval[string](ctx, p, `JSON.stringify({ node: window.demo.room().node, log: window.roomLog })`); err == nil {
		t.Logf("%s: %s", p.Name, s)
	}
}

// failoverProxy is a TCP load balancer for one page: each connection goes
// to the node of its preferred slot, or, when that one refuses (killed),
// to the first other node that accepts. The page loads the demo and opens
// its WebSocket through it, so its reconnection lands on a live node
// under the same URL.
type failoverProxy struct {
	ln    net.Listener
	c     *testCluster
	first int

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newFailoverProxy(t *testing.T, c *testCluster, first int) *failoverProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &failoverProxy{ln: ln, c: c, first: first, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for conn := range p.conns {
			_ = conn.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *failoverProxy) addr() string { return p.ln.Addr().String() }

func (p *failoverProxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		var up net.Conn
		for k := range clusterNodes {
			n := p.c.node((p.first + k) % clusterNodes)
			if up, err = net.DialTimeout("tcp", n.addr, time.Second); err == nil {
				break
			}
		}
		if up == nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		p.conns[down], p.conns[up] = true, true
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{down, up}, {up, down}} {
			p.wg.Go(func() {
				_, _ = io.Copy(pair[0], pair[1])
				_ = pair[0].Close()
				_ = pair[1].Close()
				p.mu.Lock()
				delete(p.conns, pair[0])
				delete(p.conns, pair[1])
				p.mu.Unlock()
			})
		}
	}
}
