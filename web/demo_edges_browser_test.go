package web_test

// Browser tests of the demo's rough edges (issue 14): what a person sees
// and what the page does before they touch it.

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// watchJS runs in every document of a page before its own scripts: it
// counts getUserMedia calls (__gum), keeps the frames the page sends on
// its WebSocket (__sent), and counts the frames in which the sign-in form
// was on screen (__signinFrames).
const watchJS = `(() => {
	window.__gum = 0;
	window.__sent = [];
	window.__signinFrames = 0;
	const md = navigator.mediaDevices;
	const gum = md.getUserMedia.bind(md);
	md.getUserMedia = (...args) => { window.__gum++; return gum(...args); };
	const send = WebSocket.prototype.send;
	WebSocket.prototype.send = function (data) { window.__sent.push(String(data)); return send.call(this, data); };
	const frame = () => {
		const el = document.getElementById('screen-signin');
		if (el && !el.hidden && el.getClientRects().length > 0) window.__signinFrames++;
		requestAnimationFrame(frame);
	};
	requestAnimationFrame(frame);
})()`

// watch installs watchJS in p for every page it loads from now on.
func watch(ctx context.Context, t *testing.T, p *browserPage) {
	t.Helper()
	must(t, p.run(ctx, "add the watch script", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: watchJS})
		return chromedp.Void{}, err
	}))
}

// sentOps returns the args of every request of op the page sent (since it loaded).
func sentOps(ctx context.Context, t *testing.T, p *browserPage, op string) []map[string]any {
	t.Helper()
	frames, err := pageEval[[]string](ctx, p, `window.__sent`)
	if err != nil {
		t.Fatalf("%s: sent frames: %v", p.name, err)
	}
	var out []map[string]any
	for _, f := range frames {
		var req struct {
			Op   string         `json:"op"`
			Args map[string]any `json:"args"`
		}
		if json.Unmarshal([]byte(f), &req) == nil && req.Op == op {
			out = append(out, req.Args)
		}
	}
	return out
}

// noVibrateMessages fails the test when the page's console shows that it
// called navigator.vibrate without a user gesture.
func noVibrateMessages(t *testing.T, p *browserPage) {
	t.Helper()
	for _, line := range strings.Split(p.consoleText(), "\n") {
		if strings.Contains(line, "vibrate") {
			t.Errorf("%s: console: %s", p.name, line)
		}
	}
}

// TestDemoRingBeforeGesture: bob's page signs in by itself (?user=) and
// rings before he touched it. It never logs a blocked navigator.vibrate
// (ring start or stop), does not start the camera while it rings, and after
// a reload shows the ringing screen again without flashing the sign-in
// form. alice's demo asks for no ring time (the server's default) unless
// she chooses one (?ring=45). bob accepts: only then his camera starts.
func TestDemoRingBeforeGesture(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob")
	alice, bob := pages[0], pages[1]
	for _, p := range pages {
		watch(ctx, t, p)
	}
	signIn(ctx, t, alice, base, "alice")
	must(t, bob.open(ctx, base, "/?lowres=1&user=bob"))
	must(t, bob.waitSel(ctx, sel("conn-state")+`[data-state="connected"]`, uiWait))
	must(t, alice.waitSel(ctx, sel("contact", "user", "bob"), uiWait))

	must(t, alice.click(ctx, sel("contact-video-call", "user", "bob"), uiWait))
	must(t, bob.callState(ctx, "ringing", uiWait))
	calls := sentOps(ctx, t, alice, "call")
	if len(calls) != 1 {
		t.Fatalf("alice sent %d call requests, want 1", len(calls))
	}
	if v, ok := calls[0]["timeout"]; ok {
		t.Errorf("alice's call asks for a %v s ring; want no timeout (the server's default)", v)
	}
	if active, _ := pageEval[bool](ctx, bob, `navigator.userActivation.hasBeenActive`); active {
		t.Fatal("bob's page has had a user gesture: the test needs a page nobody touched")
	}
	assertCameraOff := func(what string) {
		t.Helper()
		if n, err := pageEval[int](ctx, bob, `window.__gum`); err != nil || n != 0 {
			t.Errorf("%s: bob's page called getUserMedia %d times (%v), want none before the accept", what, n, err)
		}
		if on, err := pageEval[bool](ctx, bob, calleeCameraJS); err != nil || on {
			t.Errorf("%s: bob's camera is on while it rings (%v)", what, err)
		}
	}
	assertCameraOff("ringing")

	// bob reloads while it rings: the ringing screen comes back, and the
	// sign-in form never shows in between.
	if n, _ := pageEval[int](ctx, bob, `window.__signinFrames`); n != 0 {
		t.Errorf("bob's page showed the sign-in form in %d frames while signing in by itself", n)
	}
	must(t, bob.run(ctx, "reload", chromedp.Reload()))
	must(t, bob.callState(ctx, "ringing", uiWait))
	_, ok := bob.waitText(ctx, sel("call-title"), regexp.MustCompile(`^alice$`), time.Second)
	must(t, ok)
	if n, _ := pageEval[int](ctx, bob, `window.__signinFrames`); n != 0 {
		t.Errorf("after the reload bob's page showed the sign-in form in %d frames before the ringing screen", n)
	}
	bob.screenshot(ctx, shotPath(t, "ringing-after-reload.png"))
	assertCameraOff("ringing after the reload")

	// alice cancels: bob's ring stops, still without a gesture.
	must(t, alice.click(ctx, sel("call-cancel"), uiWait))
	must(t, bob.callState(ctx, "ended", uiWait))
	noVibrateMessages(t, bob)

	// alice chooses a 45 s ring; bob accepts, and only then his camera starts.
	must(t, alice.open(ctx, base, "/?lowres=1&user=alice&ring=45"))
	must(t, alice.waitSel(ctx, sel("contact", "user", "bob"), uiWait))
	connectCall(ctx, t, alice, bob)
	calls = sentOps(ctx, t, alice, "call")
	if len(calls) != 1 || calls[0]["timeout"] != float64(45) {
		t.Errorf("alice's call with ?ring=45: %v, want timeout 45", calls)
	}
	if n, _ := pageEval[int](ctx, bob, `window.__gum`); n == 0 {
		t.Error("bob's page never called getUserMedia, also after the accept")
	}
	noVibrateMessages(t, bob)
	noPageErrors(ctx, t, pages...)
}

// fitInfo is how a remote video is shown in its tile.
type fitInfo struct {
	TileW, TileH float64 // the video element's box (the tile)
	VideoW       float64 `json:"vw"` // the picture's size
	VideoH       float64 `json:"vh"`
	Fit          string  // computed object-fit
	Shown        float64 // the share of the picture that is visible, 0-1
	OnScreen     bool    // the tile is inside the viewport
}

// fitJS measures the video of the tile of sel: where object-fit puts the
// picture in the element's box and how much of it the box shows.
const fitJS = `((sel) => {
	const v = document.querySelector(sel + ' video');
	const r = v.getBoundingClientRect();
	const vw = v.videoWidth, vh = v.videoHeight;
	const fit = getComputedStyle(v).objectFit;
	let s = 0;
	if (fit === 'cover') s = Math.max(r.width / vw, r.height / vh);
	if (fit === 'contain') s = Math.min(r.width / vw, r.height / vh);
	const shown = s > 0 ? Math.min(1, r.width / (vw * s)) * Math.min(1, r.height / (vh * s)) : 0;
	return { tileW: r.width, tileH: r.height, vw, vh, fit, shown,
		onScreen: r.left >= 0 && r.top >= 0 && r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5 };
})`

func measureFit(ctx context.Context, t *testing.T, p *browserPage, user string) fitInfo {
	t.Helper()
	info, err := pageEval[fitInfo](ctx, p, fitJS+`(`+jsString(sel("remote-tile", "user", user))+`)`)
	if err != nil {
		t.Fatalf("%s: measure %s's tile: %v", p.name, user, err)
	}
	return info
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// mutedIconJS: the muted-microphone icon of a tile as a person sees it:
// its size, whether it is displayed and visible, on screen, and not
// covered by something else at its centre.
const mutedIconJS = `((sel) => {
	const el = document.querySelector(sel + ' .muted-mic');
	if (!el) return { found: false };
	const r = el.getBoundingClientRect();
	const cs = getComputedStyle(el);
	const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
	return { found: true, w: r.width, h: r.height, display: cs.display, visibility: cs.visibility, opacity: Number(cs.opacity),
		onScreen: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight,
		onTop: hit !== null && el.contains(hit) };
})`

type mutedIcon struct {
	Found      bool
	W, H       float64
	Display    string
	Visibility string
	Opacity    float64
	OnScreen   bool
	OnTop      bool
}

// TestDemoWideCall: a one-to-one call at 1280 x 800. Each page shows the
// other's whole 4:3 picture (letterboxed, nothing cut off), and when bob
// mutes his microphone alice sees the muted icon on his tile: it has a
// size, is displayed and visible, on screen and not covered.
func TestDemoWideCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob")
	alice, bob := pages[0], pages[1]
	for _, p := range pages {
		must(t, p.run(ctx, "viewport", chromedp.EmulateViewport(1280, 800)))
		signIn(ctx, t, p, base, p.name)
	}
	must(t, alice.waitSel(ctx, sel("contact", "user", "bob"), uiWait))
	connectCall(ctx, t, alice, bob)

	for _, p := range pages {
		other := map[*browserPage]string{alice: "bob", bob: "alice"}[p]
		_, ok := pageWait[bool](ctx, p, uiWait, `(() => { const v = document.querySelector('[data-testid="remote-video"]'); return v && v.videoWidth > 0; })()`, `window.demoState.call`)
		must(t, ok)
		f := measureFit(ctx, t, p, other)
		t.Logf("%s's page: %s's %gx%g picture in a %.0fx%.0f tile, object-fit %s: %.1f%% shown", p.name, other, f.VideoW, f.VideoH, f.TileW, f.TileH, f.Fit, 100*f.Shown)
		if f.Shown < 0.99 || !f.OnScreen {
			t.Errorf("%s's page: only %.1f%% of %s's picture is shown (on screen: %v), want all of it", p.name, 100*f.Shown, other, f.OnScreen)
		}
	}

	must(t, bob.click(ctx, sel("call-mute-mic"), uiWait))
	bobTile := sel("remote-tile", "user", "bob")
	must(t, alice.waitSel(ctx, bobTile+".no-audio", uiWait))
	icon, err := pageEval[mutedIcon](ctx, alice, mutedIconJS+`(`+jsString(bobTile)+`)`)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice's page: bob's muted icon %+v", icon)
	if !icon.Found || icon.W < 8 || icon.H < 8 || icon.Display == "none" || icon.Visibility != "visible" || icon.Opacity < 0.5 || !icon.OnScreen || !icon.OnTop {
		t.Errorf("bob's muted icon on alice's page is not visible: %+v", icon)
	}
	alice.screenshot(ctx, shotPath(t, "wide-call-muted.png"))

	// Unmuted again: the icon goes.
	must(t, bob.click(ctx, sel("call-mute-mic"), uiWait))
	must(t, alice.waitGone(ctx, bobTile+".no-audio", uiWait))
	if icon, _ := pageEval[mutedIcon](ctx, alice, mutedIconJS+`(`+jsString(bobTile)+`)`); icon.W != 0 || icon.Display != "none" {
		t.Errorf("bob unmuted, but alice's page still shows the muted icon: %+v", icon)
	}
	noPageErrors(ctx, t, pages...)
}
