package web_test

// The SDK's answer to onExitRoom reason 4 (media_node_lost, cluster mode:
// ROOMS.md), tested on one node: a page reaches the server through
// frameProxy, which turns the onExitRoom of a member the server removed
// (reason 1) into reason 4 and can refuse enterRoom with 11015 as a
// forwarding node does when the room's media node does not answer. The
// server really dropped the member and its media, so the page must enter
// again with new connections for the video to come back. The cluster
// version (a media node SIGKILLed) is in cmd/switchboard.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// frameProxy serves a stack's pages and WebSocket to a browser: HTTP is
// passed through, WebSocket frames are passed one by one and may be changed.
type frameProxy struct {
	t       *testing.T
	backend *url.URL
	srv     *httptest.Server

	// rewriteExit turns onExitRoom reason 1 into reason 4.
	rewriteExit atomic.Bool
	// refuseEnter is how many enterRoom requests to come are answered by
	// the proxy with error 11015 room_node_unavailable.
	refuseEnter atomic.Int32
	refused     atomic.Int32

	mu    sync.Mutex
	conns map[*websocket.Conn]bool // both ends of every proxied WebSocket
	wg    sync.WaitGroup
}

func newFrameProxy(t *testing.T, backendURL string) *frameProxy {
	t.Helper()
	b, err := url.Parse(backendURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &frameProxy{t: t, backend: b, conns: map[*websocket.Conn]bool{}}
	mux := http.NewServeMux()
	mux.Handle("/", httputil.NewSingleHostReverseProxy(b))
	mux.HandleFunc("/ws", p.serveWS)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		p.dropWebSockets()
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.wg.Wait()
	})
	return p
}

var proxyUpgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (p *frameProxy) serveWS(w http.ResponseWriter, r *http.Request) {
	target := "ws://" + p.backend.Host + "/ws?" + r.URL.RawQuery
	up, res, err := websocket.DefaultDialer.DialContext(r.Context(), target, http.Header{"Origin": {"http://" + p.backend.Host}})
	if err != nil {
		status := http.StatusBadGateway
		if res != nil {
			status = res.StatusCode
		}
		http.Error(w, "proxy: "+err.Error(), status)
		return
	}
	down, err := proxyUpgrader.Upgrade(w, r, nil)
	if err != nil {
		_ = up.Close()
		return
	}
	p.mu.Lock()
	p.conns[up], p.conns[down] = true, true
	p.mu.Unlock()
	var downMu sync.Mutex // two writers of down: the replies the proxy makes up, and the server's frames
	writeDown := func(b []byte) error {
		downMu.Lock()
		defer downMu.Unlock()
		return down.WriteMessage(websocket.TextMessage, b)
	}
	p.wg.Go(func() { // browser → server
		defer up.Close()
		defer down.Close()
		for {
			_, b, err := down.ReadMessage()
			if err != nil {
				return
			}
			if reply := p.refusal(b); reply != nil {
				if writeDown(reply) != nil {
					return
				}
				continue
			}
			if up.WriteMessage(websocket.TextMessage, b) != nil {
				return
			}
		}
	})
	p.wg.Go(func() { // server → browser
		defer up.Close()
		defer down.Close()
		for {
			_, b, err := up.ReadMessage()
			if err != nil {
				return
			}
			if writeDown(p.rewrite(b)) != nil {
				return
			}
		}
	})
}

// dropWebSockets closes every proxied WebSocket (a network drop: the
// page reconnects through the proxy).
func (p *frameProxy) dropWebSockets() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// refusal is the proxy's error reply to an enterRoom it refuses, or nil.
func (p *frameProxy) refusal(b []byte) []byte {
	var req struct {
		ID string `json:"id"`
		Op string `json:"op"`
	}
	if json.Unmarshal(b, &req) != nil || req.Op != "enterRoom" {
		return nil
	}
	for {
		n := p.refuseEnter.Load()
		if n <= 0 {
			return nil
		}
		if p.refuseEnter.CompareAndSwap(n, n-1) {
			break
		}
	}
	p.refused.Add(1)
	reply, _ := json.Marshal(map[string]any{"id": req.ID, "error": map[string]any{
		"code": 11015, "reason": "room_node_unavailable", "message": "the room's media node did not answer; retry"}})
	return reply
}

// rewrite turns onExitRoom reason 1 into reason 4 while rewriteExit is set.
func (p *frameProxy) rewrite(b []byte) []byte {
	if !p.rewriteExit.Load() || !strings.Contains(string(b), `"onExitRoom"`) {
		return b
	}
	var ev struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	if json.Unmarshal(b, &ev) != nil || ev.Event != "onExitRoom" || ev.Data["reason"] != float64(1) {
		return b
	}
	ev.Data["reason"] = 4
	out, err := json.Marshal(ev)
	if err != nil {
		return b
	}
	p.t.Logf("proxy: onExitRoom of room %v: reason 1 → 4", ev.Data["roomID"])
	return out
}

// TestBrowserRoomReenterMediaNodeLost: alice (through frameProxy) and bob
// decode each other's video in a room; the server removes alice and her
// page gets onExitRoom reason 4, as when the room's media node is lost.
// Her SDK keeps the room: it closes both connections, enters again at
// once (refused twice with 11015: retried with backoff), with new
// connections, publishes again ('reconnecting' and 'resumed' with reason
// 4), and each page decodes the other's video again; alice's page never
// sees the room end. Logged: the time from the removal to alice decoding
// bob again. Then alice's WebSocket drops and her resume is refused twice
// with 11015: retried, it keeps her place and connections.
func TestBrowserRoomReenterMediaNodeLost(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*browserTestBudget)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	st := webtest.Start(t, webtest.Options{DevTokens: true, Logger: logger, Rooms: rooms.Config{RejoinGrace: 30 * time.Second}})
	fp := newFrameProxy(t, st.HTTP.URL)
	users := []string{"alice", "bob"}
	bases := []string{fp.srv.URL, st.HTTP.URL}
	pages := startBrowsers(t, sdkStateJS, users...)
	const room = "reenter-room"
	inParallel(t, pages, func(i int, p *browserPage) {
		p.run(ctx, "navigate", chromedp.Navigate(bases[i]+"/sdk/room-test.html?"+url.Values{"user": {users[i]}, "room": {room}}.Encode()))
	})
	for i, p := range pages {
		waitJS[bool](ctx, p, browserMediaWithin, `window.sbState?.entered === true`, `window.sbState`)
		waitJS[float64](ctx, p, browserMediaWithin, framesDecodedJS(sdkRoomJS, users[1-i]), `window.sbState`)
	}
	alice, bob := pages[0], pages[1]
	evalJS[bool](ctx, alice, `(() => { window.oldPCs = [window.sbRoom.publisher, window.sbRoom.subscriber]; return true; })()`)
	probe := `JSON.stringify({ws: window.sb.state, sub: window.sbRoom.subscriber?.connectionState, pub: window.sbRoom.publisher?.connectionState, events: window.sbState.events.slice(-8)})`

	fp.rewriteExit.Store(true)
	fp.refuseEnter.Store(2)
	removed := time.Now()
	if !st.Rooms.Kick(room, "alice") {
		t.Fatal("alice was not in the room")
	}
	waitJS[bool](ctx, alice, 10*time.Second, `window.sbState.events.some((e) => e.name === 'resumed' && e.reason === 4 && e.available === false)`, probe)
	// bob's video at alice, on her new subscriber connection.
	waitJS[float64](ctx, alice, browserMediaWithin, framesDecodedJS(sdkRoomJS, "bob"), probe)
	backAt := time.Since(removed)
	first := evalJS[float64](ctx, alice, framesDecodedJS(sdkRoomJS, "bob"))
	waitJS[float64](ctx, alice, 5*time.Second, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, framesDecodedJS(sdkRoomJS, "bob"), first), probe)
	t.Logf("removal (reason 4 at alice) to bob's video decoding again at alice: %v", backAt.Round(time.Millisecond))
	// alice's video at bob: her new publisher's tracks.
	waitJS[bool](ctx, bob, 10*time.Second, hasEventJS("onRemoteUserLeaveRoom", "alice", ""), `window.sbState.events`)
	waitJS[float64](ctx, bob, browserMediaWithin, fmt.Sprintf(`(async () => { const n = await %s; return n > 1 ? n : 0; })()`, framesDecodedJS(sdkRoomJS, "alice")), `window.sbState.events`)

	type aliceState struct {
		Exited, NewPublisher, NewSubscriber bool
		Names                               []string
		RetryCodes                          []float64
		Errors                              []string
	}
	got := evalJS[aliceState](ctx, alice, `({
		Exited: window.sbState.exited || window.sbRoom.exited,
		NewPublisher: !!window.sbRoom.publisher && window.sbRoom.publisher !== window.oldPCs[0],
		NewSubscriber: !!window.sbRoom.subscriber && window.sbRoom.subscriber !== window.oldPCs[1],
		Names: window.sbState.events.map((e) => e.name + (e.reason !== undefined ? ':' + e.reason : '')),
		RetryCodes: window.sbState.events.filter((e) => e.name === 'reenterRetry').map((e) => e.reason),
		Errors: window.sbState.errors,
	})`)
	t.Logf("alice's room events: %v", got.Names)
	if got.Exited {
		t.Error("alice's room ended; want it entered again")
	}
	if !got.NewPublisher || !got.NewSubscriber {
		t.Errorf("alice's connections: new publisher %v, new subscriber %v; want both new", got.NewPublisher, got.NewSubscriber)
	}
	if len(got.RetryCodes) != 2 || got.RetryCodes[0] != 11015 || got.RetryCodes[1] != 11015 || fp.refused.Load() != 2 {
		t.Errorf("retries %v (refused by the proxy: %d); want two after 11015", got.RetryCodes, fp.refused.Load())
	}
	if !strings.Contains(strings.Join(got.Names, ","), "reconnecting:4") {
		t.Errorf("no 'reconnecting' with reason 4 in %v", got.Names)
	}
	for _, n := range got.Names {
		if strings.HasPrefix(n, "onExitRoom") {
			t.Errorf("alice's page saw %s; the SDK must handle reason 4 itself", n)
		}
	}

	// A reconnection whose resume the server cannot serve yet (11015, as
	// from a node that does not reach the room's media node): retried
	// until it is served, and the place is kept (resumed true, same
	// connections).
	evalJS[bool](ctx, alice, `(() => { window.oldPCs = [window.sbRoom.publisher, window.sbRoom.subscriber]; return true; })()`)
	fp.refuseEnter.Store(2)
	fp.dropWebSockets()
	waitJS[bool](ctx, alice, 15*time.Second, `window.sbState.events.some((e) => e.name === 'resumed' && e.available === true)`, probe)
	first = evalJS[float64](ctx, alice, framesDecodedJS(sdkRoomJS, "bob"))
	waitJS[float64](ctx, alice, 10*time.Second, fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, framesDecodedJS(sdkRoomJS, "bob"), first), probe)
	got = evalJS[aliceState](ctx, alice, `({
		Exited: window.sbState.exited || window.sbRoom.exited,
		NewPublisher: window.sbRoom.publisher !== window.oldPCs[0],
		NewSubscriber: window.sbRoom.subscriber !== window.oldPCs[1],
		Names: window.sbState.events.map((e) => e.name + (e.reason !== undefined ? ':' + e.reason : '')),
		RetryCodes: window.sbState.events.filter((e) => e.name === 'reenterRetry').map((e) => e.reason),
		Errors: window.sbState.errors,
	})`)
	t.Logf("alice's room events: %v", got.Names)
	if got.Exited || got.NewPublisher || got.NewSubscriber || len(got.RetryCodes) != 4 || fp.refused.Load() != 4 {
		t.Errorf("resume refused twice: exited %v, new publisher %v, new subscriber %v, retries %v (refused: %d); want the same connections after 2 more retries",
			got.Exited, got.NewPublisher, got.NewSubscriber, got.RetryCodes, fp.refused.Load())
	}
	if evalJS[bool](ctx, bob, hasEventJS("onRemoteUserLeaveRoom", "alice", "&& e.t > window.sbState.events.findLast((x) => x.name === 'onRemoteUserEnterRoom' && x.userID === 'alice').t")) {
		t.Errorf("bob saw alice leave after her resume: %s", evalJS[string](ctx, bob, `JSON.stringify(window.sbState.events)`))
	}
	for _, p := range pages {
		if errs := evalJS[[]string](ctx, p, `window.sbState.errors`); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.name, errs)
		}
	}
}

// TestBrowserRoomReenterGivesUp: after onExitRoom reason 4, every attempt
// to enter again is refused with 11015: the room retries with backoff for
// reenterTimeout (1.5 s here), then ends with onExitRoom reason 4 after an
// 'error' carrying 11015; the Switchboard object never emits the reason-4
// onExitRoom the room took over. With reenterTimeout 0, reason 4 ends the
// room at once.
func TestBrowserRoomReenterGivesUp(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	st := webtest.Start(t, webtest.Options{DevTokens: true, Logger: logger})
	fp := newFrameProxy(t, st.HTTP.URL)
	p := sdkPage(t, ctx, fp.srv.URL)

	run := func(user, room string, reenterTimeout int) string {
		return fmt.Sprintf(`(async () => {
			%s
			const rt = await (await fetch('/api/dev/token?user=%[2]s&room=%[3]s', { cache: 'no-store' })).json();
			const sb = await Switchboard.connect({ getToken: () => token(%[2]q), reenterTimeout: %[4]d, reenterBackoffInitial: 100 });
			const sbExits = [];
			sb.on('onExitRoom', (d) => sbExits.push(d.reason));
			const room = await sb.enterRoom(%[3]q, { roomToken: rt.token });
			let retries = 0, errCode = 0, lostAt = 0;
			room.on('reconnecting', () => { lostAt = performance.now(); });
			room.on('reenterRetry', () => retries++);
			room.on('error', (e) => { errCode = e.code; });
			window.ready = true;
			const exit = await room.waitFor('onExitRoom', undefined, 20000);
			const endedAt = performance.now();
			const elapsed = endedAt - (lostAt || endedAt); // no 'reconnecting': 0, not a later now() subtracted
			await new Promise((r) => setTimeout(r, 100));
			sb.close();
			return JSON.stringify({ exit, elapsed, retries, errCode, sbExits });
		})()`, sdkPrelude, user, room, reenterTimeout)
	}
	kick := func(user, room string) {
		waitJS[bool](ctx, p, 10*time.Second, `window.ready === true`, `null`)
		fp.rewriteExit.Store(true)
		fp.refuseEnter.Store(1000)
		if !st.Rooms.Kick(room, user) {
			t.Errorf("%s was not in %s", user, room)
		}
	}

	for _, tc := range []struct {
		user, room     string
		reenterTimeout int
		minMs, maxMs   float64
		minRetries     int
	}{
		{"carol", "gives-up-room", 1500, 1400, 6000, 2},
		{"dave", "no-reenter-room", 0, 0, 500, 0},
	} {
		done := make(chan string, 1)
		go func() {
			v, err := pageEval[string](ctx, p, run(tc.user, tc.room, tc.reenterTimeout))
			if err != nil {
				t.Errorf("%s: %v", tc.user, err)
			}
			done <- v
		}()
		kick(tc.user, tc.room)
		var got struct {
			Exit    map[string]any
			Elapsed float64
			Retries int
			ErrCode float64
			SBExits []float64
		}
		if err := json.Unmarshal([]byte(<-done), &got); err != nil {
			t.Fatalf("%s: %v", tc.user, err)
		}
		evalJS[bool](ctx, p, `(() => { window.ready = false; return true; })()`)
		fp.refuseEnter.Store(0)
		t.Logf("%s (reenterTimeout %d ms): onExitRoom %v after %.0f ms, %d retries, error code %v, onExitRoom on the Switchboard: %v",
			tc.user, tc.reenterTimeout, got.Exit, got.Elapsed, got.Retries, got.ErrCode, got.SBExits)
		if got.Exit["reason"] != float64(4) || got.Exit["roomID"] != tc.room {
			t.Errorf("%s: room ended with %v, want reason 4", tc.user, got.Exit)
		}
		if got.Elapsed < tc.minMs || got.Elapsed > tc.maxMs || got.Retries < tc.minRetries {
			t.Errorf("%s: ended %.0f ms after reason 4 with %d retries; want %v-%v ms, at least %d retries", tc.user, got.Elapsed, got.Retries, tc.minMs, tc.maxMs, tc.minRetries)
		}
		if tc.reenterTimeout > 0 && (got.ErrCode != 11015 || len(got.SBExits) != 0) {
			t.Errorf("%s: error code %v (want 11015), onExitRoom on the Switchboard %v (want none)", tc.user, got.ErrCode, got.SBExits)
		}
		if tc.reenterTimeout == 0 && (len(got.SBExits) != 1 || got.SBExits[0] != 4) {
			t.Errorf("%s: onExitRoom on the Switchboard %v, want [4]", tc.user, got.SBExits)
		}
	}
}
