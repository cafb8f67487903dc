package web_test

// Browser tests of the SDK and its room test page: real Chromium (headless,
// fake camera) driven over the DevTools protocol by chromedp, against the
// whole stack in-process (startServer: webtest.Start) with the Pion SFU on
// loopback. The Chromium helpers are in chrome_helpers_test.go.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

const (
	// browserTestBudget bounds one browser test from start to end.
	browserTestBudget = 60 * time.Second
	// browserMediaWithin is how long a page may take from its load to a
	// rising framesDecoded from the other page.
	browserMediaWithin = 15 * time.Second
	// sdkStateJS is the room test page's state for the artifacts.
	sdkStateJS = `JSON.stringify(window.sbState ?? null, null, 2)`
	// sdkRoomJS is the room test page's room.
	sdkRoomJS = `window.sbRoom`
)

// evalJS evaluates a JS expression (a promise is awaited) and decodes its
// value; it ends the test on error.
func evalJS[T any](ctx context.Context, b *browserPage, expr string) T {
	b.t.Helper()
	v, err := pageEval[T](ctx, b, expr)
	if err != nil {
		b.t.Fatalf("%s: %v\nexpression: %s", b.name, err, expr)
	}
	return v
}

// waitJS is pageWait that ends the test when cond does not hold within.
func waitJS[T any](ctx context.Context, b *browserPage, within time.Duration, cond, describe string) T {
	b.t.Helper()
	v, ok := pageWait[T](ctx, b, within, cond, describe)
	must(b.t, ok)
	return v
}

func hasEventJS(name, user string, extra string) string {
	return fmt.Sprintf(`window.sbState?.events.some((e) => e.name === %q && e.userID === %q %s)`, name, user, extra)
}

// TestBrowserRoomTwoPages opens the room test page as alice and as bob in
// two Chromium processes, one room; each must decode the other's video
// (framesDecoded rising on its subscriber connection) within 15 s of its
// page load and see the TRTC events for the other; then bob exits and
// alice sees him leave.
func TestBrowserRoomTwoPages(t *testing.T) {
	chromiumPath(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()

	base := startServer(t, time.Hour)
	users := []string{"alice", "bob"}
	pages := startBrowsers(t, sdkStateJS, users...)
	t.Logf("browsers started in %v", time.Since(start).Round(time.Millisecond))

	const room = "browser-room"
	pageURL := func(user string) string {
		return base + "/sdk/room-test.html?" + url.Values{"user": {user}, "room": {room}}.Encode()
	}
	// Both pages load at about the same time: either may enter first.
	loaded := make([]time.Time, len(pages))
	inParallel(t, pages, func(i int, p *browserPage) {
		loaded[i] = time.Now()
		p.run(ctx, "navigate", chromedp.Navigate(pageURL(users[i])))
	})

	for i, p := range pages {
		other := users[1-i]
		waitJS[bool](ctx, p, browserMediaWithin, `window.sbState?.entered === true`, `window.sbState`)
		// A rising framesDecoded for the other user's video, within 15 s of the page load.
		first := waitJS[float64](ctx, p, browserMediaWithin-time.Since(loaded[i]), framesDecodedJS(sdkRoomJS, other), `window.sbState`)
		later := waitJS[float64](ctx, p, max(browserMediaWithin-time.Since(loaded[i]), 3*time.Second),
			fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, framesDecodedJS(sdkRoomJS, other), first), `window.sbState`)
		if later <= first {
			t.Fatalf("%s: framesDecoded from %s did not rise: %v then %v", users[i], other, first, later)
		}
		t.Logf("%s: framesDecoded from %s: %v then %v", users[i], other, first, later)

		for _, ev := range []string{
			hasEventJS("onRemoteUserEnterRoom", other, ""),
			hasEventJS("onUserVideoAvailable", other, "&& e.available === true"),
		} {
			waitJS[bool](ctx, p, 5*time.Second, ev, `window.sbState.events`)
		}
		if n := evalJS[int](ctx, p, `document.querySelectorAll('video[data-user="`+other+`"]').length`); n != 1 {
			t.Errorf("%s: %d video elements for %s, want 1", users[i], n, other)
		}
		if errs := evalJS[[]string](ctx, p, `window.sbState.errors`); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", users[i], errs)
		}
		tm := evalJS[map[string]float64](ctx, p, `window.sbState.timings`)
		t.Logf("%s: ms since page load: connected %.0f, camera %.0f, enterRoom replied %.0f, media connected (onEnterRoom) %.0f, first frame from %s %.0f",
			users[i], tm["connected"], tm["camera"], tm["enterReplied"], tm["entered"], other, tm["firstFrame."+other])
	}

	// bob leaves; alice sees onRemoteUserLeaveRoom (reason 0) and loses his stream.
	alice, bob := pages[0], pages[1]
	evalJS[bool](ctx, bob, `window.sbRoom.exit().then(() => true)`)
	waitJS[bool](ctx, bob, 5*time.Second, `window.sbState.exited`, `window.sbState.events`)
	waitJS[bool](ctx, alice, 5*time.Second, hasEventJS("onRemoteUserLeaveRoom", "bob", "&& e.reason === 0"), `window.sbState.events`)
	waitJS[bool](ctx, alice, 5*time.Second, `!window.sbState.remoteUsers.includes('bob') && !window.sbRoom.remoteStreams.has('bob')`, `window.sbState.remoteUsers`)
	if errs := evalJS[[]string](ctx, alice, `window.sbState.errors`); len(errs) > 0 {
		t.Errorf("alice: page errors: %q", errs)
	}
	t.Logf("test body took %v", time.Since(start).Round(time.Millisecond))
}

// sdkPage starts one browser on a page of the server at base (same
// origin, so the WebSocket's Origin check passes) for SDK tests that need
// no room.
func sdkPage(t *testing.T, ctx context.Context, base string) *browserPage {
	t.Helper()
	b := startBrowsers(t, sdkStateJS, "page")[0]
	must(t, b.run(ctx, "navigate", chromedp.Navigate(base+"/healthz")))
	return b
}

// sdkPrelude imports the SDK and defines token(user), which fetches a dev
// session token.
const sdkPrelude = `
	const { Switchboard, SwitchboardError } = await import('/sdk/switchboard.js');
	const token = async (user) => {
		const res = await fetch('/api/dev/token?user=' + encodeURIComponent(user), { cache: 'no-store' });
		return (await res.json()).token;
	};
`

// TestBrowserSDKSignaling drives the invitation and group ops of the SDK
// from a page: alice invites bob, bob rings and accepts, alice hears it; a
// second accept is refused with the server's code and reason; groups.
func TestBrowserSDKSignaling(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()
	p := sdkPage(t, ctx, startServer(t, time.Hour))

	type result struct {
		Inviter, InviteData, AcceptData, Invitee string
		ErrCode                                  int
		ErrReason, ErrName, ErrMessage           string
		IsSBError                                bool
		Members, Groups                          []string
		UnknownOpReason                          string
	}
	got := evalJS[result](ctx, p, `(async () => {
		`+sdkPrelude+`
		const alice = await Switchboard.connect({ getToken: () => token('alice') });
		const bob = await Switchboard.connect({ getToken: () => token('bob') });
		const ringing = bob.waitFor('onReceiveNewInvitation', undefined, 5000);
		const inviteID = await alice.invite({ invitee: 'bob', data: '{"room_id":"r1"}', timeout: 30 });
		const inv = await ringing;
		const accepted = alice.waitFor('onInviteeAccepted', (d) => d.inviteID === inviteID, 5000);
		await bob.accept(inv.inviteID, 'yes');
		const acc = await accepted;
		let err;
		try { await bob.accept(inviteID); } catch (e) { err = e; }
		const groupID = await alice.createGroup({ name: 'team', memberList: ['bob'] });
		const members = (await bob.getGroupMemberList(groupID)).map((m) => m.userID);
		const groups = (await bob.getJoinedGroupList()).map((g) => g.groupID);
		let unknown;
		try { await alice.request('noSuchOp', {}); } catch (e) { unknown = e; }
		alice.close();
		bob.close();
		return {
			Inviter: inv.inviter, InviteData: inv.data, AcceptData: acc.data, Invitee: acc.invitee,
			ErrCode: err?.code ?? 0, ErrReason: err?.reason ?? '', ErrName: err?.name ?? '', ErrMessage: err?.message ?? '',
			IsSBError: err instanceof SwitchboardError,
			Members: members, Groups: groups.filter((g) => g === groupID), UnknownOpReason: unknown?.reason ?? '',
		};
	})()`)
	if got.Inviter != "alice" || got.InviteData != `{"room_id":"r1"}` || got.AcceptData != "yes" || got.Invitee != "bob" {
		t.Errorf("invitation round trip: %+v", got)
	}
	if got.ErrCode != 8010 || got.ErrReason != "invalid_invite_id" || !got.IsSBError || got.ErrMessage == "" {
		t.Errorf("second accept: code %d reason %q name %q message %q, want 8010 invalid_invite_id SwitchboardError", got.ErrCode, got.ErrReason, got.ErrName, got.ErrMessage)
	}
	if strings.Join(got.Members, ",") != "alice,bob" || len(got.Groups) != 1 {
		t.Errorf("groups: members %v, bob's groups %v", got.Members, got.Groups)
	}
	if got.UnknownOpReason != "unknown_op" {
		t.Errorf("unknown op: reason %q, want unknown_op", got.UnknownOpReason)
	}
}

// TestBrowserSDKReconnect: the server closes a session whose token expired
// with 4001; the SDK reports reconnecting (4001), fetches a fresh token with
// getToken, reconnects, and requests work again.
func TestBrowserSDKReconnect(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()
	p := sdkPage(t, ctx, startServer(t, 2*time.Second)) // dev tokens live 1-2 s (exp has 1 s precision)

	type result struct {
		States    []string
		Codes     []int
		Tokens    int
		GroupList bool
	}
	got := evalJS[result](ctx, p, `(async () => {
		`+sdkPrelude+`
		let tokens = 0;
		const states = [], codes = [];
		const sb = await Switchboard.connect({
			getToken: () => { tokens++; return token('carol'); },
			backoffInitial: 100, backoffMax: 1000,
		});
		sb.on('connectionState', (s) => { states.push(s.state); codes.push(s.code ?? 0); });
		const back = new Promise((resolve, reject) => {
			const timer = setTimeout(() => reject(new Error('no reconnect: ' + JSON.stringify(states))), 10000);
			sb.on('connectionState', (s) => { if (s.state === 'connected') { clearTimeout(timer); resolve(); } });
		});
		await back;
		const list = await sb.getJoinedGroupList();
		sb.close();
		return { States: states, Codes: codes, Tokens: tokens, GroupList: Array.isArray(list) };
	})()`)
	t.Logf("connection states %v, close codes %v, getToken calls %d", got.States, got.Codes, got.Tokens)
	if len(got.States) < 3 || got.States[0] != "reconnecting" || got.Codes[0] != 4001 || !slices.Contains(got.States, "connected") {
		t.Errorf("connection states %v codes %v, want reconnecting (4001) … connected … disconnected", got.States, got.Codes)
	}
	if got.States[len(got.States)-1] != "disconnected" {
		t.Errorf("after close: last state %q, want disconnected", got.States[len(got.States)-1])
	}
	if got.Tokens < 2 || !got.GroupList {
		t.Errorf("getToken called %d times (want ≥ 2), request after reconnect ok: %v", got.Tokens, got.GroupList)
	}
}

// TestSDKAssets checks how the SDK files are served: type, caching, 304,
// and the dev-only test page.
func TestSDKAssets(t *testing.T) {
	base := startServer(t, time.Hour)
	for _, tc := range []struct{ path, ctype string }{
		{"/sdk/switchboard.js", "text/javascript; charset=utf-8"},
		{"/sdk/room-test.html", "text/html; charset=utf-8"},
	} {
		res, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.ctype || res.Header.Get("Cache-Control") == "" {
			t.Fatalf("%s: %d %q cache %q", tc.path, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
		}
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		req.Header.Set("If-None-Match", res.Header.Get("ETag"))
		res2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res2.Body.Close()
		if res2.StatusCode != http.StatusNotModified {
			t.Errorf("%s with its ETag: %d, want 304", tc.path, res2.StatusCode)
		}
	}
	res, err := http.Get(base + "/sdk/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown asset: %d, want 404", res.StatusCode)
	}
}

// cutNet is the network between a page and the server, which the test cuts
// and restores: a TCP proxy in front of the server (the page's HTTP and
// WebSocket) and a filter on the SFU's UDP socket (the page's media).
// Headless Chromium's DevTools network emulation (offline, packetLoss 100)
// does not reach an open WebSocket or WebRTC's sockets: tried, media and
// the WebSocket went on.
type cutNet struct {
	ln     net.Listener
	target string
	cut    atomic.Bool // TCP and UDP
	mute   atomic.Bool // UDP only: media cut, WebSocket up

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newCutNet(t *testing.T) *cutNet {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &cutNet{ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = ln.Close()
		n.closeAll()
		n.wg.Wait()
	})
	return n
}

// serve forwards the connections to target (host:port) until the test ends.
func (n *cutNet) serve(target string) {
	n.target = target
	n.wg.Go(n.accept)
}

func (n *cutNet) accept() {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		if n.cut.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", n.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		n.mu.Lock()
		n.conns[c], n.conns[up] = true, true
		n.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			n.wg.Go(func() {
				_, _ = io.Copy(pair[0], pair[1])
				_ = pair[0].Close()
				_ = pair[1].Close()
			})
		}
	}
}

func (n *cutNet) closeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for c := range n.conns {
		_ = c.Close()
		delete(n.conns, c)
	}
}

// setCut cuts (every TCP connection closed, new ones refused, every UDP
// datagram of the SFU dropped) or restores the network.
func (n *cutNet) setCut(on bool) {
	n.cut.Store(on)
	if on {
		n.closeAll()
	}
}

// wrap makes the SFU's UDP socket drop every datagram while the network is cut.
func (n *cutNet) wrap(pc net.PacketConn) net.PacketConn { return &droppingConn{PacketConn: pc, n: n} }

type droppingConn struct {
	net.PacketConn
	n *cutNet
}

func (c *droppingConn) dropping() bool { return c.n.cut.Load() || c.n.mute.Load() }

func (c *droppingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		k, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.dropping() {
			return k, addr, err
		}
	}
}

func (c *droppingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.dropping() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// TestBrowserRoomNetworkCut: alice's page is in a room with bob's; the
// network is cut (alice's WebSocket and HTTP through a proxy closed and
// refused; every media datagram of the SFU dropped) and restored, five
// times. Each time alice's page returns to the room by itself: the SDK
// reconnects and resumes its entry (same RTCPeerConnections) and restarts
// ICE, and bob's video decodes again at alice (framesDecoded rising); bob
// never sees alice leave. The time from network back to video back is
// logged per run with its median (bounded, not asserted tightly). Then the
// media alone is cut (WebSocket up): the page restarts ICE on both
// connections by itself, and the video comes back once the network does.
func TestBrowserRoomNetworkCut(t *testing.T) {
	chromiumPath(t)
	const (
		runs    = 5
		offline = 6 * time.Second // long enough for ICE to go disconnected
		// videoBackWithin bounds each recovery: loose on a shared machine.
		videoBackWithin = 20 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cn := newCutNet(t)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	st := webtest.Start(t, webtest.Options{DevTokens: true, Logger: logger,
		Rooms: rooms.Config{RejoinGrace: 30 * time.Second},
		Media: media.Config{WrapPacketConn: cn.wrap, ICEDisconnectedGrace: 30 * time.Second}})
	cn.serve(strings.TrimPrefix(st.HTTP.URL, "http://"))
	users := []string{"alice", "bob"}
	bases := []string{"http://" + cn.ln.Addr().String(), st.HTTP.URL} // alice through the cuttable network
	pages := startBrowsers(t, sdkStateJS, users...)
	const room = "cut-room"
	inParallel(t, pages, func(i int, p *browserPage) {
		p.run(ctx, "navigate", chromedp.Navigate(bases[i]+"/sdk/room-test.html?"+url.Values{"user": {users[i]}, "room": {room}}.Encode()))
	})
	alice, bob := pages[0], pages[1]
	for i, p := range pages {
		waitJS[bool](ctx, p, browserMediaWithin, `window.sbState?.entered === true`, `window.sbState`)
		waitJS[float64](ctx, p, browserMediaWithin, framesDecodedJS(sdkRoomJS, users[1-i]), `window.sbState`)
	}
	decoded := framesDecodedJS(sdkRoomJS, "bob")
	probe := `JSON.stringify({ws: window.sb.state, sub: window.sbRoom.subscriber?.connectionState, pub: window.sbRoom.publisher?.connectionState, events: window.sbState.events.slice(-6)})`

	var took []time.Duration
	for run := 1; run <= runs; run++ {
		cn.setCut(true)
		cutAt := time.Now()
		// The cut holds the media: framesDecoded stops rising.
		stalled := waitJS[float64](ctx, alice, offline, fmt.Sprintf(`(async () => {
			const a = await %[1]s; await new Promise((r) => setTimeout(r, 1000)); const b = await %[1]s;
			return a === b ? b + 1 : 0; })()`, decoded), probe) - 1
		if rest := offline - time.Since(cutAt); rest > 0 {
			waitJS[bool](ctx, alice, rest+time.Second, fmt.Sprintf(`new Promise((r) => setTimeout(() => r(true), %d))`, rest.Milliseconds()), probe)
		}
		t.Logf("run %d: after %v offline: %s", run, time.Since(cutAt).Round(time.Millisecond), evalJS[string](ctx, alice, probe))
		cn.setCut(false)
		back := time.Now()
		waitJS[float64](ctx, alice, videoBackWithin, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, decoded, stalled), probe)
		d := time.Since(back)
		took = append(took, d)
		t.Logf("run %d: network back to bob's video decoding again at alice: %v; %s", run, d.Round(time.Millisecond), evalJS[string](ctx, alice, probe))
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	t.Logf("network back to video back over %d runs (%v offline each): p50 %v, min %v, max %v; all %v",
		runs, offline, sorted[len(sorted)/2].Round(time.Millisecond), sorted[0].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), took)

	// The media alone is cut (the WebSocket stays up) until the page's
	// connections are disconnected and it restarts ICE on them; then the
	// network comes back and bob's video decodes again.
	cn.mute.Store(true)
	waitJS[bool](ctx, alice, 30*time.Second, `window.sbState.events.some((e) => e.name === 'iceRestart')`, probe)
	stalled := evalJS[float64](ctx, alice, decoded)
	cn.mute.Store(false)
	back := time.Now()
	waitJS[float64](ctx, alice, videoBackWithin, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, decoded, stalled), probe)
	t.Logf("media-only cut: ICE restarted by the page; network back to video back: %v", time.Since(back).Round(time.Millisecond))

	t.Logf("alice's page events by name: %s", evalJS[string](ctx, alice, `JSON.stringify(window.sbState.events.reduce((m, e) => {
		const k = e.name + (e.name === 'resumed' ? ':' + e.available : e.name === 'iceRestart' ? ':' + e.userID : '');
		m[k] = (m[k] ?? 0) + 1;
		return m;
	}, {}))`))
	// alice is still in the room on the same connections; bob never saw her leave.
	if evalJS[bool](ctx, alice, `window.sbState.exited`) {
		t.Error("alice's room was exited")
	}
	if n := evalJS[int](ctx, alice, `window.sbState.events.filter((e) => e.name === 'resumed' && e.available === true).length`); n < 1 {
		t.Errorf("alice's room resumed %d times, want at least 1: %s", n, evalJS[string](ctx, alice, `JSON.stringify(window.sbState.events)`))
	}
	if evalJS[bool](ctx, bob, hasEventJS("onRemoteUserLeaveRoom", "alice", "")) {
		t.Errorf("bob saw alice leave: %s", evalJS[string](ctx, bob, `JSON.stringify(window.sbState.events)`))
	}
	for _, p := range pages {
		if errs := evalJS[[]string](ctx, p, `window.sbState.errors`); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.name, errs)
		}
	}
}
