package webtest

// The demo app (web/demo) in a browser: pages with a phone's viewport,
// signing in, a call placed and accepted by clicking as a person would,
// and what the pages show and decode.

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const (
	// DemoViewportWidth and DemoViewportHeight are a phone's viewport.
	DemoViewportWidth, DemoViewportHeight = 375, 812
	// UIWait bounds waiting for something the page shows after a click.
	UIWait = 10 * time.Second
)

// StartDemoPages starts one browser per name, in parallel, with a phone's
// viewport. They close, after saving their artifacts if the test failed,
// when the test ends.
func StartDemoPages(t testing.TB, names ...string) []*Page {
	t.Helper()
	pages := StartBrowsers(t, DemoStateJS, names...)
	for _, p := range pages {
		// A phone's viewport: the demo must work at this width.
		if err := chromedp.Do(p.Ctx, chromedp.EmulateViewport(DemoViewportWidth, DemoViewportHeight)); err != nil {
			t.Fatalf("%s: set the viewport: %v", p.Name, err)
		}
	}
	return pages
}

// DemoStateJS is the page's state for the artifacts: demoState and the RTP
// stats of the current room's connections.
const DemoStateJS = `(async () => {
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

// CallState waits until the call screen's data-state is want.
func (p *Page) CallState(ctx context.Context, want string, within time.Duration) bool {
	p.T.Helper()
	return p.WaitSel(ctx, fmt.Sprintf(`[data-testid="call-screen"][data-state=%q]:not([hidden])`, want), within)
}

// PageErrors returns the errors the page recorded (uncaught ones and
// failed actions).
func (p *Page) PageErrors(ctx context.Context) []string {
	errs, err := Eval[[]string](ctx, p, `window.demoState?.errors ?? []`)
	if err != nil {
		return []string{err.Error()}
	}
	return errs
}

// DemoRoomJS is the demo page's current room.
const DemoRoomJS = `window.demo?.room?.()`

// WaitDecoding waits until the page decodes frames of user's video and
// their count rises, and returns when it saw the first frame.
func (p *Page) WaitDecoding(ctx context.Context, user string, within time.Duration) (time.Time, bool) {
	p.T.Helper()
	first, ok := Wait[float64](ctx, p, within, FramesDecodedJS(DemoRoomJS, user), `window.demoState.call`)
	if !ok {
		return time.Time{}, false
	}
	at := time.Now()
	later, ok := Wait[float64](ctx, p, 5*time.Second,
		fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, FramesDecodedJS(DemoRoomJS, user), first), `window.demoState.call`)
	if !ok {
		return at, false
	}
	p.T.Logf("%s: framesDecoded of %s's video: %v, then %v", p.Name, user, first, later)
	return at, true
}

// LogTimings logs the page's call timings (demoState.timings, unix ms) as
// offsets from since, in order.
func (p *Page) LogTimings(ctx context.Context, since time.Time) {
	tm, err := Eval[map[string]float64](ctx, p, `window.demoState.timings ?? {}`)
	if err != nil {
		p.T.Logf("%s: no timings: %v", p.Name, err)
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
	p.T.Logf("%s: page timings: %s", p.Name, strings.Join(parts, ", "))
}

// Sel is the CSS selector of the element with data-testid testid and the
// data-<name>=value attributes of attrs (name, value, name, value, ...).
func Sel(testid string, attrs ...string) string {
	s := fmt.Sprintf(`[data-testid=%q]`, testid)
	for i := 0; i+1 < len(attrs); i += 2 {
		s += fmt.Sprintf(`[data-%s=%q]`, attrs[i], attrs[i+1])
	}
	return s
}

// Must ends the test when a helper reported a failure.
func Must(t testing.TB, ok bool) {
	t.Helper()
	if !ok {
		t.FailNow()
	}
}

// SignIn opens the demo (small camera) of the server at base and signs in
// as user.
func SignIn(ctx context.Context, t testing.TB, p *Page, base, user string) {
	t.Helper()
	Must(t, p.Open(ctx, base, "/?lowres=1"))
	Must(t, p.TypeInto(ctx, `[data-testid="signin-name"]`, user))
	Must(t, p.Click(ctx, `[data-testid="signin-submit"]`, UIWait))
	Must(t, p.WaitSel(ctx, `[data-testid="conn-state"][data-state="connected"]`, UIWait))
	_, ok := p.WaitText(ctx, Sel("me-name"), regexp.MustCompile("^"+user+"$"), UIWait)
	Must(t, ok)
}

// LocalPreviewJS: the page shows its own camera's picture.
const LocalPreviewJS = `(() => { const v = document.querySelector('[data-testid="local-video"]'); return !v.hidden && v.videoWidth > 0; })()`

// CalleeCameraJS: the page's camera was started for the call on its
// screen (a stream, a preview shown, or the "camera" timing mark).
const CalleeCameraJS = `(() => {
	const v = document.querySelector('[data-testid="local-video"]');
	return !v.hidden || v.srcObject !== null || window.demoState.timings?.camera !== undefined;
})()`

// ConnectDemoCall: caller video-calls callee (its Name is the user ID)
// from the contact list, the callee's page rings, the callee accepts, and
// both pages decode the other's video within acceptToMedia of the accept.
// It returns how long after the accept each page decoded its first frame.
func ConnectDemoCall(ctx context.Context, t testing.TB, caller, callee *Page, acceptToMedia time.Duration) (callerFirst, calleeFirst time.Duration) {
	t.Helper()
	Must(t, caller.Click(ctx, Sel("contact-video-call", "user", callee.Name), UIWait))
	Must(t, caller.CallState(ctx, "calling", UIWait))
	Must(t, callee.CallState(ctx, "ringing", UIWait))
	_, ok := callee.WaitText(ctx, Sel("call-title"), regexp.MustCompile("^"+caller.Name+"$"), time.Second)
	Must(t, ok)
	// The ring tone plays, or (autoplay blocked) waits for a tap; it never breaks the page.
	tone, ok := Wait[string](ctx, callee, 2*time.Second, `['playing', 'blocked'].includes(window.demoState.call?.ringTone) && window.demoState.call.ringTone`, `window.demoState.call`)
	Must(t, ok)
	t.Logf("%s: ring tone %s", callee.Name, tone)

	// Like a person, the callee looks at the ring screen a moment: the
	// caller's preview plays; the callee's camera stays off until the accept.
	_, ok = Wait[bool](ctx, caller, UIWait, LocalPreviewJS, `window.demoState.timings`)
	Must(t, ok)
	if on, err := Eval[bool](ctx, callee, CalleeCameraJS); err != nil || on {
		t.Fatalf("%s: the camera is on while it rings (%v)", callee.Name, err)
	}
	accepted := time.Now()
	Must(t, callee.Click(ctx, Sel("incoming-accept"), UIWait))
	firsts := make([]time.Duration, 2)
	pairs := [][2]*Page{{caller, callee}, {callee, caller}}
	var wg sync.WaitGroup
	for i, pr := range pairs {
		wg.Go(func() {
			if at, ok := pr[0].WaitDecoding(ctx, pr[1].Name, acceptToMedia-time.Since(accepted)); ok {
				firsts[i] = at.Sub(accepted)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("both pages must decode the other's video within %v of the accept", acceptToMedia)
	}
	for _, p := range []*Page{caller, callee} {
		Must(t, p.CallState(ctx, "active", UIWait))
		Must(t, p.WaitSel(ctx, Sel("remote-video", "user", map[*Page]string{caller: callee.Name, callee: caller.Name}[p]), time.Second))
	}
	t.Logf("accept → first decoded frame: %s's page %v, %s's page %v", caller.Name, firsts[0].Round(time.Millisecond), callee.Name, firsts[1].Round(time.Millisecond))
	caller.LogTimings(ctx, accepted)
	callee.LogTimings(ctx, accepted)
	return firsts[0], firsts[1]
}
