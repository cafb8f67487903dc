package web_test

// Helpers of the browser tests (browser_test.go: SDK and room test page;
// demo_browser_test.go: the demo app): one headless Chromium per user,
// driven with chromedp, with the page's console, a screenshot and the
// page's state kept when a test fails. Flags:
// /work/shared/notes/webrtc-on-this-machine.md.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

const (
	// browserStartWait bounds starting one browser and opening its tab.
	browserStartWait = 30 * time.Second
	// browserCloseWait bounds closing one browser.
	browserCloseWait = 10 * time.Second
	// pagePoll is how often a page condition is checked.
	pagePoll = 50 * time.Millisecond
	// demoViewportWidth and demoViewportHeight are a phone's viewport.
	demoViewportWidth, demoViewportHeight = 375, 812
)

// startServer starts the whole stack (webtest.Start: engine, SFU on
// loopback, rooms, calls, transport) with dev tokens that live ttl (0: the
// server's default), and returns its base URL (http://127.0.0.1:port),
// where the demo is served at / and the SDK at /sdk/.
func startServer(t *testing.T, ttl time.Duration) string {
	t.Helper()
	// Pion logs routine things at teardown as warnings (reads on closed pipes).
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	return webtest.Start(t, webtest.Options{DevTokens: true, DevTokenTTL: ttl, Logger: logger}).HTTP.URL
}

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

// browserPage is one Chromium process with one tab, used by one user.
type browserPage struct {
	t       *testing.T
	name    string
	ctx     context.Context // the tab's chromedp context
	stateJS string          // the page's state for the artifacts: JS, may be a promise of a string

	mu      sync.Mutex
	console []string
}

// startBrowsers starts one browser per name, in parallel (see
// startBrowser), and ends the test if one did not start.
func startBrowsers(t *testing.T, stateJS string, names ...string) []*browserPage {
	t.Helper()
	exe := chromiumPath(t)
	pages := make([]*browserPage, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { pages[i], errs[i] = startBrowser(t, exe, n, stateJS) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return pages
}

// startDemoPages starts one browser per name, in parallel, with a phone's
// viewport. They close, after saving their artifacts if the test failed,
// when the test ends.
func startDemoPages(t *testing.T, names ...string) []*browserPage {
	t.Helper()
	pages := startBrowsers(t, demoStateJS, names...)
	for _, p := range pages {
		// A phone's viewport: the demo must work at this width.
		if err := chromedp.Do(p.ctx, chromedp.EmulateViewport(demoViewportWidth, demoViewportHeight)); err != nil {
			t.Fatalf("%s: set the viewport: %v", p.name, err)
		}
	}
	return pages
}

// startBrowser launches a headless Chromium of its own (own user-data dir)
// with the flags of the notes. It is closed, and on failure its screenshot,
// console and page state (stateJS) are saved, when the test ends. It may
// run on any goroutine.
func startBrowser(t *testing.T, exe, name, stateJS string) (*browserPage, error) {
	// chromedp's start has no deadline of its own: the allocator's parent
	// is cancelled (killing the browser) when starting takes too long.
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
	p := &browserPage{t: t, name: name, ctx: ctx, stateJS: stateJS}
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
	err := chromedp.Listen(ctx, p.onEvent) // starts the browser, opens the tab
	if !startTimer.Stop() {
		return nil, fmt.Errorf("%s: Chromium (%s) did not start within %v", name, exe, browserStartWait)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: start Chromium (%s): %w", name, exe, err)
	}
	t.Cleanup(p.saveArtifactsOnFailure) // runs before the browser closes
	return p, nil
}

// onEvent keeps the console; it runs on chromedp's reader, so it only appends.
func (p *browserPage) onEvent(ev any) {
	var line string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		parts := make([]string, 0, len(e.Args))
		for _, a := range e.Args {
			var s string
			switch {
			case a.Type == runtime.RemoteObjectTypeString && json.Unmarshal(a.Value, &s) == nil:
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
	p.mu.Lock()
	p.console = append(p.console, time.Now().Format("15:04:05.000 ")+line)
	p.mu.Unlock()
}

func (p *browserPage) consoleText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.console, "\n") + "\n"
}

// saveArtifactsOnFailure writes a screenshot, the console log and the
// page's state to a directory that outlives the test, and logs the paths.
func (p *browserPage) saveArtifactsOnFailure() {
	t := p.t
	if !t.Failed() {
		return
	}
	name := regexp.MustCompile(`[^A-Za-z0-9-]`).ReplaceAllString(t.Name(), "_")
	dir, err := os.MkdirTemp("", "switchboard-browser-"+name+"-")
	if err != nil {
		t.Logf("%s: no artifacts: %v", p.name, err)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	shot := filepath.Join(dir, p.name+".png")
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Logf("%s: screenshot failed: %v", p.name, err)
	} else if err := os.WriteFile(shot, png, 0o644); err == nil {
		t.Logf("%s: screenshot: %s", p.name, shot)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](p.stateJS, chromedp.EvalAwaitPromise))
	if err != nil {
		state = "page state unavailable: " + err.Error()
	}
	statePath := filepath.Join(dir, p.name+"-state.json")
	_ = os.WriteFile(statePath, []byte(state), 0o644)
	consolePath := filepath.Join(dir, p.name+"-console.log")
	if err := os.WriteFile(consolePath, []byte(p.consoleText()), 0o644); err == nil {
		t.Logf("%s: console log: %s; page state: %s", p.name, consolePath, statePath)
	}
}

// demoStateJS is the page's state for the artifacts: demoState and the RTP
// stats of the current room's connections.
const demoStateJS = `(async () => {
	const rtp = async (pc) => {
		if (!pc) return null;
		const out = [];
		(await pc.getStats()).forEach((s) => {
			if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp' || s.type === 'candidate-pair' && s.nominated) out.push(s);
		});
		return { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState, stats: out };
	};
	const room = window.demo?.room?.();
	const media = room ? { publisher: await rtp(room.publisher), subscriber: await rtp(room.subscriber),
		participants: Object.fromEntries(room.participants), remoteStreams: [...room.remoteStreams].map(([u, s]) => [u, s.getTracks().map((t) => t.kind + ':' + t.readyState)]) } : null;
	return JSON.stringify({ demoState: window.demoState ?? null, media }, null, 2);
})()`

// step returns the tab's context bounded by ctx's deadline.
func (p *browserPage) step(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(p.ctx)
	}
	return context.WithDeadline(p.ctx, dl)
}

// run performs chromedp actions, failing the test (from any goroutine: it
// uses Errorf and reports) on error.
func (p *browserPage) run(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) bool {
	p.t.Helper()
	sctx, cancel := p.step(ctx)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		p.t.Errorf("%s: %s: %v", p.name, what, err)
		return false
	}
	return true
}

// open loads path of the server at base.
func (p *browserPage) open(ctx context.Context, base, path string) bool {
	return p.run(ctx, "open "+path, chromedp.Navigate(base+path))
}

// click clicks the element of a CSS selector once it is visible, within d.
func (p *browserPage) click(ctx context.Context, sel string, d time.Duration) bool {
	p.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return p.run(cctx, "click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// typeInto types text into an input (clearing it first).
func (p *browserPage) typeInto(ctx context.Context, sel, text string) bool {
	p.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !p.run(cctx, "wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel))) {
		return false
	}
	if _, err := pageEval[bool](cctx, p, fmt.Sprintf(`(() => { document.querySelector(%q).value = ''; return true; })()`, sel)); err != nil {
		p.t.Errorf("%s: clear %s: %v", p.name, sel, err)
		return false
	}
	return p.run(cctx, "type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// pageEval evaluates a JS expression (a promise is awaited) in the page.
func pageEval[T any](ctx context.Context, p *browserPage, expr string) (T, error) {
	sctx, cancel := p.step(ctx)
	defer cancel()
	return chromedp.Run(sctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// pageWait evaluates cond in the page until it is truthy and returns its
// value; after within it fails the test, showing describe's value. The loop
// runs in the page: one round trip.
func pageWait[T any](ctx context.Context, p *browserPage, within time.Duration, cond, describe string) (T, bool) {
	p.t.Helper()
	expr := fmt.Sprintf(`(async () => {
		const deadline = performance.now() + %d;
		for (;;) {
			const v = await (async () => (%s))();
			if (v) return v;
			if (performance.now() > deadline) throw new Error('timed out after %v: ' + %q + '\n  ' + JSON.stringify(%s));
			await new Promise((r) => setTimeout(r, %d));
		}
	})()`, within.Milliseconds(), cond, within, cond, describe, pagePoll.Milliseconds())
	v, err := pageEval[T](ctx, p, expr)
	if err != nil {
		p.t.Errorf("%s: %v", p.name, err)
		return v, false
	}
	return v, true
}

// waitText waits until the text of the element of sel matches re.
func (p *browserPage) waitText(ctx context.Context, sel string, re *regexp.Regexp, within time.Duration) (string, bool) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%q); const s = el ? el.textContent.trim() : ''; return new RegExp(%q).test(s) ? s : ''; })()`,
		sel, re.String())
	return pageWait[string](ctx, p, within, js, fmt.Sprintf(`{text: document.querySelector(%q)?.textContent ?? null, call: window.demoState?.call}`, sel))
}

// waitSel waits until an element matches sel (visible or not).
func (p *browserPage) waitSel(ctx context.Context, sel string, within time.Duration) bool {
	p.t.Helper()
	_, ok := pageWait[bool](ctx, p, within, fmt.Sprintf(`document.querySelector(%q) !== null`, sel), `window.demoState`)
	return ok
}

// waitGone waits until no element matches sel.
func (p *browserPage) waitGone(ctx context.Context, sel string, within time.Duration) bool {
	p.t.Helper()
	_, ok := pageWait[bool](ctx, p, within, fmt.Sprintf(`document.querySelector(%q) === null`, sel), `window.demoState`)
	return ok
}

// callState waits until the call screen's data-state is want.
func (p *browserPage) callState(ctx context.Context, want string, within time.Duration) bool {
	p.t.Helper()
	return p.waitSel(ctx, fmt.Sprintf(`[data-testid="call-screen"][data-state=%q]:not([hidden])`, want), within)
}

// pageErrors returns the errors the page recorded (uncaught ones and
// failed actions).
func (p *browserPage) pageErrors(ctx context.Context) []string {
	errs, err := pageEval[[]string](ctx, p, `window.demoState?.errors ?? []`)
	if err != nil {
		return []string{err.Error()}
	}
	return errs
}

// framesDecodedJS is a promise of the framesDecoded of the inbound-rtp
// video stats whose track is user's remote video in room, a JS expression
// of an SDK room (0 when there is none yet).
func framesDecodedJS(room, user string) string {
	return fmt.Sprintf(`(async () => {
		const room = %s;
		const track = room?.remoteStreams.get(%q)?.getVideoTracks()[0];
		if (!room?.subscriber || !track) return 0;
		const stats = await room.subscriber.getStats();
		let frames = 0;
		stats.forEach((s) => {
			if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier === track.id) frames = s.framesDecoded ?? 0;
		});
		return frames;
	})()`, room, user)
}

// demoRoomJS is the demo page's current room.
const demoRoomJS = `window.demo?.room?.()`

// waitDecoding waits until the page decodes frames of user's video and
// their count rises, and returns when it saw the first frame.
func (p *browserPage) waitDecoding(ctx context.Context, user string, within time.Duration) (time.Time, bool) {
	p.t.Helper()
	first, ok := pageWait[float64](ctx, p, within, framesDecodedJS(demoRoomJS, user), `window.demoState.call`)
	if !ok {
		return time.Time{}, false
	}
	at := time.Now()
	later, ok := pageWait[float64](ctx, p, 5*time.Second,
		fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, framesDecodedJS(demoRoomJS, user), first), `window.demoState.call`)
	if !ok {
		return at, false
	}
	p.t.Logf("%s: framesDecoded of %s's video: %v, then %v", p.name, user, first, later)
	return at, true
}

// logTimings logs the page's call timings (demoState.timings, unix ms) as
// offsets from since, in order.
func (p *browserPage) logTimings(ctx context.Context, since time.Time) {
	tm, err := pageEval[map[string]float64](ctx, p, `window.demoState.timings ?? {}`)
	if err != nil {
		p.t.Logf("%s: no timings: %v", p.name, err)
		return
	}
	names := make([]string, 0, len(tm))
	for n := range tm {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(tm[a], tm[b]) })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %+dms", n, int64(tm[n])-since.UnixMilli())
	}
	p.t.Logf("%s: page timings: %s", p.name, strings.Join(parts, ", "))
}

// screenshot saves the page's viewport as a PNG file.
func (p *browserPage) screenshot(ctx context.Context, path string) bool {
	p.t.Helper()
	sctx, cancel := p.step(ctx)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		p.t.Errorf("%s: screenshot %s: %v", p.name, path, err)
		return false
	}
	p.t.Logf("%s: screenshot %s", p.name, path)
	return true
}
