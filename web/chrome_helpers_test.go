package web_test

// Helpers of the browser tests (browser_test.go: SDK and room test page;
// demo_browser_test.go: the demo app). The Chromium helpers themselves
// live in web/webtest (browser.go, demo.go), shared with cmd/switchboard's
// cluster browser tests; browserPage adapts them to these tests' names.

import (
	"context"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rtc/switchboard/web/webtest"
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

// chromiumPath finds Chromium (webtest.ChromiumPath): without it the test
// is skipped locally and fails under CI.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return webtest.ChromiumPath(t)
}

// browserPage is one Chromium process with one tab, used by one user
// (webtest.Page).
type browserPage struct {
	*webtest.Page
	t    *testing.T
	name string
}

func adapt(t *testing.T, pages []*webtest.Page) []*browserPage {
	out := make([]*browserPage, len(pages))
	for i, p := range pages {
		out[i] = &browserPage{Page: p, t: t, name: p.Name}
	}
	return out
}

// startBrowsers starts one browser per name, in parallel
// (webtest.StartBrowsers), and ends the test if one did not start.
func startBrowsers(t *testing.T, stateJS string, names ...string) []*browserPage {
	t.Helper()
	return adapt(t, webtest.StartBrowsers(t, stateJS, names...))
}

// startDemoPages starts one browser per name, in parallel, with a phone's
// viewport (webtest.StartDemoPages).
func startDemoPages(t *testing.T, names ...string) []*browserPage {
	t.Helper()
	return adapt(t, webtest.StartDemoPages(t, names...))
}

func (p *browserPage) run(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) bool {
	p.t.Helper()
	return p.Run(ctx, what, actions...)
}

func (p *browserPage) open(ctx context.Context, base, path string) bool {
	p.t.Helper()
	return p.Open(ctx, base, path)
}

func (p *browserPage) click(ctx context.Context, sel string, d time.Duration) bool {
	p.t.Helper()
	return p.Click(ctx, sel, d)
}

func (p *browserPage) typeInto(ctx context.Context, sel, text string) bool {
	p.t.Helper()
	return p.TypeInto(ctx, sel, text)
}

func (p *browserPage) waitText(ctx context.Context, sel string, re *regexp.Regexp, within time.Duration) (string, bool) {
	p.t.Helper()
	return p.WaitText(ctx, sel, re, within)
}

func (p *browserPage) waitSel(ctx context.Context, sel string, within time.Duration) bool {
	p.t.Helper()
	return p.WaitSel(ctx, sel, within)
}

func (p *browserPage) waitGone(ctx context.Context, sel string, within time.Duration) bool {
	p.t.Helper()
	return p.WaitGone(ctx, sel, within)
}

func (p *browserPage) callState(ctx context.Context, want string, within time.Duration) bool {
	p.t.Helper()
	return p.CallState(ctx, want, within)
}

func (p *browserPage) pageErrors(ctx context.Context) []string { return p.PageErrors(ctx) }

func (p *browserPage) waitDecoding(ctx context.Context, user string, within time.Duration) (time.Time, bool) {
	p.t.Helper()
	return p.WaitDecoding(ctx, user, within)
}

func (p *browserPage) logTimings(ctx context.Context, since time.Time) { p.LogTimings(ctx, since) }

func (p *browserPage) screenshot(ctx context.Context, path string) bool {
	p.t.Helper()
	return p.Screenshot(ctx, path)
}

func (p *browserPage) consoleText() string { return p.ConsoleText() }

// pageEval evaluates a JS expression (a promise is awaited) in the page.
func pageEval[T any](ctx context.Context, p *browserPage, expr string) (T, error) {
	return webtest.Eval[T](ctx, p.Page, expr)
}

// pageWait evaluates cond in the page until it is truthy and returns its
// value (webtest.Wait); after within it fails the test.
func pageWait[T any](ctx context.Context, p *browserPage, within time.Duration, cond, describe string) (T, bool) {
	p.t.Helper()
	return webtest.Wait[T](ctx, p.Page, within, cond, describe)
}

// framesDecodedJS is a promise of the framesDecoded of user's remote video
// in room, a JS expression of an SDK room (webtest.FramesDecodedJS).
func framesDecodedJS(room, user string) string { return webtest.FramesDecodedJS(room, user) }
