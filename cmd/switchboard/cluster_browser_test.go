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
// any live node). The room's media node is SIGKILLed: both pages get
// onExitRoom reason 4 (or, the page whose WebSocket was on that node,
// reconnect through the balancer to another node and resume), enter the
// room again on a live node with new connections, and decode each
// other's video again; the call stays active on both. Logged: the time
// from the kill to both pages decoding again.
func TestClusterBrowserMediaNodeLost(t *testing.T) {
	webtest.ChromiumPath(t)
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterBrowserBudget)
	defer cancel()
	lbs := []*failoverProxy{newFailoverProxy(t, c, 0), newFailoverProxy(t, c, 1)}
	pages, nodes := clusterDemoCall(ctx, t, c, func(i int) string { return "http://" + lbs[i].addr() })
	slot := -1
	for i := range clusterNodes {
		if c.nodeID(i) == nodes[0] {
			slot = i
		}
	}
	if slot < 0 {
		t.Fatalf("media node %q is not one of the cluster's", nodes[0])
	}
	for _, p := range pages {
		if _, err := webtest.Eval[bool](ctx, p, `(() => { const r = window.demo.room(); window.before = { room: r, sub: r.subscriber, pub: r.publisher }; return true; })()`); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("pages on nodes %s and %s (through their balancers); killing the media node %s (slot %d)", c.nodeID(0), c.nodeID(1), nodes[0], slot)
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
	for _, p := range pages {
		webtest.Must(t, p.CallState(ctx, "active", time.Second))
		if n, err := webtest.Eval[string](ctx, p, `window.demo.room().node`); err == nil {
			t.Logf("%s: room now on %s", p.Name, n)
		}
		if errs := p.PageErrors(ctx); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.Name, errs)
		}
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
