package webtest

// Headless Chromium for browser tests (web's SDK and demo tests, and the
// cluster's in cmd/switchboard): one Chromium process per user, driven
// with chromedp over the DevTools protocol, with the page's console, a
// screenshot and the page's state kept when a test fails. Flags:
// /work/shared/notes/webrtc-on-this-machine.md.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const (
	// BrowserStartWait bounds starting one browser and opening its tab.
	BrowserStartWait = 30 * time.Second
	// BrowserCloseWait bounds closing one browser.
	BrowserCloseWait = 10 * time.Second
	// PagePoll is how often a page condition is checked.
	PagePoll = 50 * time.Millisecond
)

// ChromiumPath finds Chromium: $SWITCHBOARD_CHROMIUM when set, else
// /usr/bin/chromium or chromium on PATH. Without one the test is skipped
// locally, but fails when CI is set: CI must never skip the browser tests.
func ChromiumPath(t testing.TB) string {
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

// Page is one Chromium process with one tab, used by one user. Its
// exported fields are set by StartBrowser and only read afterwards.
type Page struct {
	T       testing.TB
	Name    string
	Ctx     context.Context // the tab's chromedp context
	StateJS string          // the page's state for the artifacts: JS, may be a promise of a string

	mu      sync.Mutex
	console []string
}

// StartBrowsers starts one browser per name, in parallel (see
// StartBrowser), and ends the test if one did not start.
func StartBrowsers(t testing.TB, stateJS string, names ...string) []*Page {
	t.Helper()
	exe := ChromiumPath(t)
	pages := make([]*Page, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { pages[i], errs[i] = StartBrowser(t, exe, n, stateJS) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return pages
}

// StartBrowser launches a headless Chromium of its own (own user-data dir)
// with the flags of the notes. It is closed, and on failure its screenshot,
// console and page state (stateJS) are saved, when the test ends. It may
// run on any goroutine.
func StartBrowser(t testing.TB, exe, name, stateJS string) (*Page, error) {
	// chromedp's start has no deadline of its own: the allocator's parent
	// is cancelled (killing the browser) when starting takes too long.
	parent, kill := context.WithCancel(context.Background())
	startTimer := time.AfterFunc(BrowserStartWait, kill)
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
	p := &Page{T: t, Name: name, Ctx: ctx, StateJS: stateJS}
	t.Cleanup(func() {
		// Close gracefully, bounded; then make sure the process and every
		// goroutine of the allocator are gone.
		cctx, ccancel := context.WithTimeout(ctx, BrowserCloseWait)
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
		return nil, fmt.Errorf("%s: Chromium (%s) did not start within %v", name, exe, BrowserStartWait)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: start Chromium (%s): %w", name, exe, err)
	}
	t.Cleanup(p.saveArtifactsOnFailure) // runs before the browser closes
	return p, nil
}

// onEvent keeps the console; it runs on chromedp's reader, so it only appends.
func (p *Page) onEvent(ev any) {
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

func (p *Page) ConsoleText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.console, "\n") + "\n"
}

// saveArtifactsOnFailure writes a screenshot, the console log and the
// page's state to a directory that outlives the test, and logs the paths.
func (p *Page) saveArtifactsOnFailure() {
	t := p.T
	if !t.Failed() {
		return
	}
	name := regexp.MustCompile(`[^A-Za-z0-9-]`).ReplaceAllString(t.Name(), "_")
	dir, err := os.MkdirTemp("", "switchboard-browser-"+name+"-")
	if err != nil {
		t.Logf("%s: no artifacts: %v", p.Name, err)
		return
	}
	ctx, cancel := context.WithTimeout(p.Ctx, 5*time.Second)
	defer cancel()
	shot := filepath.Join(dir, p.Name+".png")
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Logf("%s: screenshot failed: %v", p.Name, err)
	} else if err := os.WriteFile(shot, png, 0o644); err == nil {
		t.Logf("%s: screenshot: %s", p.Name, shot)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](p.StateJS, chromedp.EvalAwaitPromise))
	if err != nil {
		state = "page state unavailable: " + err.Error()
	}
	statePath := filepath.Join(dir, p.Name+"-state.json")
	_ = os.WriteFile(statePath, []byte(state), 0o644)
	consolePath := filepath.Join(dir, p.Name+"-console.log")
	if err := os.WriteFile(consolePath, []byte(p.ConsoleText()), 0o644); err == nil {
		t.Logf("%s: console log: %s; page state: %s", p.Name, consolePath, statePath)
	}
}

// Step returns the tab's context bounded by ctx's deadline.
func (p *Page) Step(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(p.Ctx)
	}
	return context.WithDeadline(p.Ctx, dl)
}

// Run performs chromedp actions, failing the test (from any goroutine: it
// uses Errorf and reports) on error.
func (p *Page) Run(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) bool {
	p.T.Helper()
	sctx, cancel := p.Step(ctx)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		p.T.Errorf("%s: %s: %v", p.Name, what, err)
		return false
	}
	return true
}

// Open loads path of the server at base.
func (p *Page) Open(ctx context.Context, base, path string) bool {
	return p.Run(ctx, "open "+path, chromedp.Navigate(base+path))
}

// Click clicks the element of a CSS selector once it is visible, within d.
func (p *Page) Click(ctx context.Context, sel string, d time.Duration) bool {
	p.T.Helper()
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return p.Run(cctx, "click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// TypeInto types text into an input (clearing it first).
func (p *Page) TypeInto(ctx context.Context, sel, text string) bool {
	p.T.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !p.Run(cctx, "wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel))) {
		return false
	}
	if _, err := Eval[bool](cctx, p, fmt.Sprintf(`(() => { document.querySelector(%q).value = ''; return true; })()`, sel)); err != nil {
		p.T.Errorf("%s: clear %s: %v", p.Name, sel, err)
		return false
	}
	return p.Run(cctx, "type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// Eval evaluates a JS expression (a promise is awaited) in the page.
func Eval[T any](ctx context.Context, p *Page, expr string) (T, error) {
	sctx, cancel := p.Step(ctx)
	defer cancel()
	return chromedp.Run(sctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// Wait evaluates cond in the page until it is truthy and returns its
// value; after within it fails the test, showing describe's value. The loop
// runs in the page: one round trip.
func Wait[T any](ctx context.Context, p *Page, within time.Duration, cond, describe string) (T, bool) {
	p.T.Helper()
	expr := fmt.Sprintf(`(async () => {
		const deadline = performance.now() + %d;
		for (;;) {
			const v = await (async () => (%s))();
			if (v) return v;
			if (performance.now() > deadline) throw new Error('timed out after %v: ' + %q + '\n  ' + JSON.stringify(%s));
			await new Promise((r) => setTimeout(r, %d));
		}
	})()`, within.Milliseconds(), cond, within, cond, describe, PagePoll.Milliseconds())
	v, err := Eval[T](ctx, p, expr)
	if err != nil {
		p.T.Errorf("%s: %v", p.Name, err)
		return v, false
	}
	return v, true
}

// WaitText waits until the text of the element of sel matches re.
func (p *Page) WaitText(ctx context.Context, sel string, re *regexp.Regexp, within time.Duration) (string, bool) {
	p.T.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%q); const s = el ? el.textContent.trim() : ''; return new RegExp(%q).test(s) ? s : ''; })()`,
		sel, re.String())
	return Wait[string](ctx, p, within, js, fmt.Sprintf(`{text: document.querySelector(%q)?.textContent ?? null, call: window.demoState?.call}`, sel))
}

// WaitSel waits until an element matches sel (visible or not).
func (p *Page) WaitSel(ctx context.Context, sel string, within time.Duration) bool {
	p.T.Helper()
	_, ok := Wait[bool](ctx, p, within, fmt.Sprintf(`document.querySelector(%q) !== null`, sel), `window.demoState`)
	return ok
}

// WaitGone waits until no element matches sel.
func (p *Page) WaitGone(ctx context.Context, sel string, within time.Duration) bool {
	p.T.Helper()
	_, ok := Wait[bool](ctx, p, within, fmt.Sprintf(`document.querySelector(%q) === null`, sel), `window.demoState`)
	return ok
}

// FramesDecodedJS is a promise of the framesDecoded of the inbound-rtp
// video stats whose track is user's remote video in room, a JS expression
// of an SDK room (0 when there is none yet).
func FramesDecodedJS(room, user string) string {
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

// Screenshot saves the page's viewport as a PNG file.
func (p *Page) Screenshot(ctx context.Context, path string) bool {
	p.T.Helper()
	sctx, cancel := p.Step(ctx)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		p.T.Errorf("%s: screenshot %s: %v", p.Name, path, err)
		return false
	}
	p.T.Logf("%s: screenshot %s", p.Name, path)
	return true
}
