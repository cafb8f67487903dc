package web_test

// Browser tests: real Chromium (headless, fake camera) driven over the
// DevTools protocol by chromedp, against a real in-process server with the
// rooms manager and the Pion SFU on loopback. See
// /work/shared/notes/webrtc-on-this-machine.md for the flags.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/web"
)

const (
	// browserTestBudget bounds one browser test from start to end.
	browserTestBudget = 60 * time.Second
	// browserMediaWithin is how long a page may take from its load to a
	// rising framesDecoded from the other page.
	browserMediaWithin = 15 * time.Second
	// browserStartWait bounds starting one browser and opening its tab.
	browserStartWait = 30 * time.Second
	// browserCloseWait bounds closing one browser.
	browserCloseWait = 10 * time.Second
)

var browserSecret = []byte("browser-test-secret-0123456789abcdef")

// chromiumPath finds Chromium: $SWITCHBOARD_CHROMIUM when set, else
// /usr/bin/chromium or chromium on PATH. Without one the test is skipped
// locally, but fails when CI is set: CI must never skip the browser tests.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/chromium", "chromium"}
	if p := os.Getenv("SWITCHBOARD_CHROMIUM"); p != "" {
		candidates = []string{p}
	}
	for _, p := range candidates {
		if found, err := exec.LookPath(p); err == nil {
			return found
		}
	}
	why := fmt.Sprintf("Chromium not found (tried %s); install it with `apt-get install -y chromium`", strings.Join(candidates, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(why + " (CI is set: browser tests must not be skipped)")
	}
	t.Skip(why)
	return ""
}

// roomServer is the real server: signaling engine over a memory store,
// rooms manager over a loopback SFU, web server with dev tokens, on an
// httptest listener at 127.0.0.1.
type roomServer struct {
	URL string
}

func newRoomServer(t *testing.T, devTokenTTL time.Duration) *roomServer {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Pion warns about routine things at teardown (reads on closed pipes).
	mediaLog := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	auth, err := web.NewAuthenticator(web.AuthConfig{Secret: browserSecret, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	store := signaling.NewMemoryStore()
	engine, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Store: store, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	sfu, err := media.New(media.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, UDPPort: 0}, mediaLog.With("component", "media"))
	if err != nil {
		engine.Close()
		t.Fatal(err)
	}
	mgr := rooms.NewManager(rooms.Params{SFU: sfu, Tokens: auth, Logger: logger.With("component", "rooms")})
	stopMedia := func() {
		mgr.Close()
		if err := sfu.Close(); err != nil {
			t.Errorf("close SFU: %v", err)
		}
		engine.Close()
		_ = store.Close()
	}
	ops, err := web.MergeOps(engine.Ops(), mgr.Ops())
	if err != nil {
		stopMedia()
		t.Fatal(err)
	}
	srv, err := web.New(web.Params{
		Config: web.DefaultConfig(), Auth: auth, DevTokens: true, DevTokenTTL: devTokenTTL,
		Engine: engine, Ops: ops, OnSessionClosed: []func(signaling.Session){mgr.SessionClosed}, Logger: logger,
	})
	if err != nil {
		stopMedia()
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler()) // 127.0.0.1
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		hs.Close()
		stopMedia()
	})
	return &roomServer{URL: hs.URL}
}

// browserPage is one Chromium process with one tab.
type browserPage struct {
	t    *testing.T
	name string
	ctx  context.Context // the tab's chromedp context

	mu      sync.Mutex
	console []string
}

// startBrowser launches a headless Chromium of its own (own user-data dir)
// with the flags of the notes. It is closed, and on failure its screenshot,
// console and page state are saved, when the test ends. It may run on any
// goroutine.
func startBrowser(t *testing.T, exe, name string) (*browserPage, error) {
	// The allocator's parent is cancelled, killing the browser, when the
	// start takes too long: chromedp's own start has no deadline.
	parent, kill := context.WithCancel(context.Background())
	startTimer := time.AfterFunc(browserStartWait, kill)
	allocCtx, allocCancel := chromedp.NewExecAllocator(parent,
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browserPage{t: t, name: name, ctx: ctx}
	t.Cleanup(func() {
		// Close gracefully, bounded; then make sure the process and every
		// goroutine of the allocator are gone.
		cctx, ccancel := context.WithTimeout(ctx, browserCloseWait)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("%s: closing the browser: %v", name, err)
		}
		ccancel()
		cancel()
		allocCancel()
		kill()
	})
	// Listen starts the browser and opens the tab.
	err := chromedp.Listen(ctx, b.onEvent)
	if !startTimer.Stop() {
		return nil, fmt.Errorf("%s: Chromium (%s) did not start within %v", name, exe, browserStartWait)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: start Chromium (%s): %w", name, exe, err)
	}
	t.Cleanup(b.saveArtifactsOnFailure) // runs before the browser closes
	return b, nil
}

// onEvent keeps the console: it runs on chromedp's reader, so it only appends.
func (b *browserPage) onEvent(ev any) {
	var line string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		parts := make([]string, 0, len(e.Args))
		for _, a := range e.Args {
			switch s, err := stringValue(a); {
			case err == nil:
				parts = append(parts, s)
			case a.Description != "":
				parts = append(parts, a.Description)
			default:
				parts = append(parts, string(a.Value))
			}
		}
		line = fmt.Sprintf("console.%s: %s", e.Type, strings.Join(parts, " "))
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		desc := d.Text
		if d.Exception != nil {
			desc += " " + d.Exception.Description
		}
		line = fmt.Sprintf("exception: %s (%s:%d)", desc, d.URL, d.LineNumber)
	case *log.EventEntryAdded:
		line = fmt.Sprintf("log.%s [%s]: %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL)
	default:
		return
	}
	b.mu.Lock()
	b.console = append(b.console, time.Now().Format("15:04:05.000 ")+line)
	b.mu.Unlock()
}

func stringValue(o *runtime.RemoteObject) (string, error) {
	if o.Type != runtime.RemoteObjectTypeString {
		return "", errors.New("not a string")
	}
	var s string
	err := json.Unmarshal(o.Value, &s)
	return s, err
}

func (b *browserPage) consoleText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.console, "\n") + "\n"
}

// saveArtifactsOnFailure writes a screenshot, the console log and the page's
// sbState to a directory that outlives the test, and logs their paths.
func (b *browserPage) saveArtifactsOnFailure() {
	t := b.t
	if !t.Failed() {
		return
	}
	dir, err := os.MkdirTemp("", "switchboard-browser-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Logf("%s: no artifacts: %v", b.name, err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Logf("%s: screenshot failed: %v", b.name, err)
	} else if err := os.WriteFile(filepath.Join(dir, b.name+".png"), png, 0o644); err == nil {
		t.Logf("%s: screenshot: %s", b.name, filepath.Join(dir, b.name+".png"))
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.sbState ?? null, null, 2)`))
	if err != nil {
		state = "sbState unavailable: " + err.Error()
	}
	page := filepath.Join(dir, b.name+"-state.json")
	_ = os.WriteFile(page, []byte(state), 0o644)
	consolePath := filepath.Join(dir, b.name+"-console.log")
	if err := os.WriteFile(consolePath, []byte(b.consoleText()), 0o644); err == nil {
		t.Logf("%s: console log: %s; page state: %s", b.name, consolePath, page)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// step returns the tab's context bounded by ctx's deadline.
func (b *browserPage) step(ctx context.Context) context.Context {
	dl, ok := ctx.Deadline()
	if !ok {
		return b.ctx
	}
	sctx, cancel := context.WithDeadline(b.ctx, dl)
	context.AfterFunc(ctx, cancel)
	return sctx
}

// eval evaluates a JS expression (a promise is awaited) and decodes its value.
func evalJS[T any](ctx context.Context, b *browserPage, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.step(ctx), chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v\nexpression: %s", b.name, err, expr)
	}
	return v
}

// waitJS evaluates cond (a JS expression, may be async) in the page until it
// is truthy and returns its value; after within it fails with describe's
// value. The loop runs in the page: one round trip.
func waitJS[T any](ctx context.Context, b *browserPage, within time.Duration, cond, describe string) T {
	b.t.Helper()
	expr := fmt.Sprintf(`(async () => {
		const deadline = performance.now() + %d;
		for (;;) {
			const v = await (async () => (%s))();
			if (v) return v;
			if (performance.now() > deadline) throw new Error('timed out: ' + %q + '; ' + JSON.stringify(%s));
			await new Promise((r) => setTimeout(r, 50));
		}
	})()`, within.Milliseconds(), cond, cond, describe)
	return evalJS[T](ctx, b, expr)
}

// framesDecodedJS returns, as a promise, the framesDecoded of the
// inbound-rtp video stats of the subscriber connection whose track is the
// video of user's remote stream (0 when none yet).
func framesDecodedJS(user string) string {
	return fmt.Sprintf(`(async () => {
		const room = window.sbRoom;
		const stream = room?.remoteStreams.get(%q);
		const track = stream?.getVideoTracks()[0];
		if (!room?.subscriber || !track) return 0;
		const stats = await room.subscriber.getStats();
		let frames = 0;
		stats.forEach((s) => {
			if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier === track.id) frames = s.framesDecoded ?? 0;
		});
		return frames;
	})()`, user)
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
	exe := chromiumPath(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()

	srv := newRoomServer(t, time.Hour)
	users := []string{"alice", "bob"}
	pages := make([]*browserPage, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() { pages[i], errs[i] = startBrowser(t, exe, u) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("browsers started in %v", time.Since(start).Round(time.Millisecond))

	const room = "browser-room"
	pageURL := func(user string) string {
		return srv.URL + "/sdk/room-test.html?" + url.Values{"user": {user}, "room": {room}}.Encode()
	}
	// Both pages load at about the same time: either may enter first.
	loaded := make([]time.Time, len(pages))
	for i, p := range pages {
		wg.Go(func() {
			loaded[i] = time.Now()
			if err := chromedp.Do(p.step(ctx), chromedp.Navigate(pageURL(users[i]))); err != nil {
				t.Errorf("%s: navigate: %v", users[i], err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	for i, p := range pages {
		other := users[1-i]
		waitJS[bool](ctx, p, browserMediaWithin, `window.sbState?.entered === true`, `window.sbState`)
		// A rising framesDecoded for the other user's video, within 15 s of the page load.
		first := waitJS[float64](ctx, p, browserMediaWithin-time.Since(loaded[i]), framesDecodedJS(other), `window.sbState`)
		later := waitJS[float64](ctx, p, max(browserMediaWithin-time.Since(loaded[i]), 3*time.Second),
			fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, framesDecodedJS(other), first), `window.sbState`)
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

// sdkPage starts one browser on a page of srv (same origin, so the
// WebSocket's Origin check passes) for SDK tests that need no room.
func sdkPage(t *testing.T, ctx context.Context, srv *roomServer) *browserPage {
	t.Helper()
	b, err := startBrowser(t, chromiumPath(t), "page")
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b.step(ctx), chromedp.Navigate(srv.URL+"/healthz")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
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
	srv := newRoomServer(t, time.Hour)
	p := sdkPage(t, ctx, srv)

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
	srv := newRoomServer(t, 2*time.Second) // dev tokens live 1-2 s (exp has 1 s precision)
	p := sdkPage(t, ctx, srv)

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
	srv := newRoomServer(t, time.Hour)
	for _, tc := range []struct{ path, ctype string }{
		{"/sdk/switchboard.js", "text/javascript; charset=utf-8"},
		{"/sdk/room-test.html", "text/html; charset=utf-8"},
	} {
		res, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.ctype || res.Header.Get("Cache-Control") == "" {
			t.Fatalf("%s: %d %q cache %q", tc.path, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
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
	res, err := http.Get(srv.URL + "/sdk/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown asset: %d, want 404", res.StatusCode)
	}
}
