package web_test

// Browser tests of the demo app (web/demo), against the whole stack
// (startServer: webtest.Start, with engine, SFU on loopback, rooms, calls,
// transport). Each page is one user in its own headless Chromium with a
// fake camera; the tests click through the demo as a person would and check
// what the pages show and what their RTCPeerConnections decode (getStats).
// At most three browsers run at once (the machine has two cores).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

const (
	// demoTestBudget bounds one demo browser test from start to end.
	demoTestBudget = 90 * time.Second
	// acceptToMedia is how soon after the callee accepts both pages must
	// decode the other's video.
	acceptToMedia = 5 * time.Second
	// uiWait bounds waiting for something the page shows after a click.
	uiWait = 10 * time.Second
)

// must ends the test when a helper reported a failure.
func must(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.FailNow()
	}
}

// signIn opens the demo (small camera) and signs in as user.
func signIn(ctx context.Context, t *testing.T, p *browserPage, base, user string) {
	t.Helper()
	webtest.SignIn(ctx, t, p.Page, base, user)
}

// inParallel runs f for every page at once and ends the test if one failed.
func inParallel(t *testing.T, pages []*browserPage, f func(i int, p *browserPage)) {
	t.Helper()
	var wg sync.WaitGroup
	for i, p := range pages {
		wg.Go(func() { f(i, p) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func sel(testid string, attrs ...string) string { return webtest.Sel(testid, attrs...) }

// noPageErrors fails the test for every error a page recorded.
func noPageErrors(ctx context.Context, t *testing.T, pages ...*browserPage) {
	t.Helper()
	for _, p := range pages {
		if errs := p.pageErrors(ctx); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", p.name, errs)
		}
	}
}

// calleeCameraJS: the page's camera was started for the call on its
// screen.
const calleeCameraJS = webtest.CalleeCameraJS

// connectCall: caller video-calls callee from the contact list, the callee's
// page rings, the callee accepts, and both pages decode the other's video
// within acceptToMedia (webtest.ConnectDemoCall). It returns how long after
// the accept each page decoded its first frame.
func connectCall(ctx context.Context, t *testing.T, caller, callee *browserPage) (callerFirst, calleeFirst time.Duration) {
	t.Helper()
	return webtest.ConnectDemoCall(ctx, t, caller.Page, callee.Page, acceptToMedia)
}

// TestBrowserOneToOneCall: alice video-calls bob from the lobby; bob's page
// rings; bob accepts; both pages decode the other's video within 5 s of the
// accept; alice hangs up; both pages show "Call ended, 00:0X".
func TestBrowserOneToOneCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob")
	alice, bob := pages[0], pages[1]
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
	}
	must(t, alice.waitSel(ctx, sel("contact", "user", "bob"), uiWait))

	connectCall(ctx, t, alice, bob)
	// bob mutes his microphone, then switches the call to audio: alice's
	// page shows his muted mic, is told, and stops sending video too.
	bobTile := sel("remote-tile", "user", "bob")
	must(t, bob.click(ctx, sel("call-mute-mic"), uiWait))
	must(t, alice.waitSel(ctx, bobTile+".no-audio", uiWait))
	must(t, bob.click(ctx, sel("call-switch-audio"), uiWait))
	_, ok := alice.waitText(ctx, sel("call-notice"), regexp.MustCompile(`bob switched the call to audio`), uiWait)
	must(t, ok)
	must(t, alice.waitSel(ctx, bobTile+".no-video", uiWait))
	must(t, alice.waitSel(ctx, sel("call-screen")+`[data-media-type="audio"]`, uiWait))
	for _, p := range pages {
		if n, _ := pageEval[int](ctx, p, `window.demo.room().localStream?.getVideoTracks().length ?? 0`); n != 0 {
			t.Errorf("%s: still %d local video tracks after the switch to audio", p.name, n)
		}
	}
	// The timer runs from onCallBegin's start time.
	_, ok = alice.waitText(ctx, sel("call-timer"), regexp.MustCompile(`^00:0[2-9]$`), uiWait)
	must(t, ok)
	must(t, alice.click(ctx, sel("call-hangup"), uiWait))

	ended := regexp.MustCompile(`^Call ended, 00:0\d$`)
	for _, p := range pages {
		text, ok := p.waitText(ctx, sel("call-status"), ended, 5*time.Second)
		must(t, ok)
		t.Logf("%s's page: %q", p.name, text)
		must(t, p.callState(ctx, "ended", time.Second))
	}
	// bob learned the duration from the server (onCallEnd or the call-end invitation).
	_, ok = pageWait[bool](ctx, bob, 5*time.Second,
		`window.demoState.events.some((e) => (e.name === 'onCallEnd' && e.result === 'completed') || (e.name === 'onReceiveNewInvitation' && e.data.includes('call_end')))`,
		`window.demoState.events.map((e) => e.name)`)
	must(t, ok)
	noPageErrors(ctx, t, pages...)
}

// TestBrowserBusyLine: while alice and bob are in a call, carol calls bob
// and sees "Line busy" at once; bob's page does not ring, and his call
// history shows carol's call as missed (busy).
func TestBrowserBusyLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob", "carol")
	alice, bob, carol := pages[0], pages[1], pages[2]
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
	}
	must(t, alice.waitSel(ctx, sel("contact", "user", "bob"), uiWait))
	must(t, carol.waitSel(ctx, sel("contact", "user", "bob"), uiWait))
	connectCall(ctx, t, alice, bob)

	start := time.Now()
	must(t, carol.click(ctx, sel("contact-video-call", "user", "bob"), uiWait))
	_, ok := carol.waitText(ctx, sel("call-status"), regexp.MustCompile(`^Line busy$`), 5*time.Second)
	must(t, ok)
	t.Logf("carol's page showed \"Line busy\" %v after her click", time.Since(start).Round(time.Millisecond))
	must(t, carol.callState(ctx, "ended", time.Second))

	// bob stays in his call and is told of the missed call instead of ringing.
	_, ok = pageWait[bool](ctx, bob, 5*time.Second,
		`(window.demoState.missed ?? []).some((m) => m.caller === 'carol' && m.reason === 'line_busy')`, `window.demoState.missed`)
	must(t, ok)
	must(t, bob.callState(ctx, "active", time.Second))
	if peers, _ := pageEval[[]string](ctx, bob, `window.demoState.call.peers`); len(peers) != 1 || peers[0] != "alice" {
		t.Errorf("bob's call: peers %v, want [alice]", peers)
	}

	must(t, bob.click(ctx, sel("call-hangup"), uiWait))
	must(t, bob.callState(ctx, "ended", uiWait))
	must(t, bob.click(ctx, sel("call-close"), uiWait))
	must(t, bob.click(ctx, sel("tab-history"), uiWait))
	must(t, bob.waitSel(ctx, sel("history-row", "caller", "carol", "result", "busy", "direction", "incoming"), uiWait))
	must(t, bob.waitSel(ctx, sel("history-row", "caller", "alice", "result", "completed"), uiWait))
	text, ok := bob.waitText(ctx, sel("history-row", "caller", "carol")+` [data-testid="history-result"]`, regexp.MustCompile(`^busy$`), time.Second)
	must(t, ok)
	t.Logf("bob's history, carol's call: %q", text)

	// The "missed" filter keeps carol's call and drops the completed one.
	must(t, bob.run(ctx, "filter missed", chromedp.SetValue(chromedp.CSS(sel("history-filter")), "missed")))
	if _, err := pageEval[bool](ctx, bob, `document.querySelector('[data-testid="history-filter"]').dispatchEvent(new Event('change'))`); err != nil {
		t.Fatalf("bob: filter change: %v", err)
	}
	must(t, bob.waitGone(ctx, sel("history-row", "caller", "alice"), uiWait))
	must(t, bob.waitSel(ctx, sel("history-row", "caller", "carol", "result", "busy"), time.Second))
	noPageErrors(ctx, t, pages...)
}

// TestBrowserGroupCall: alice creates a group, adds bob and carol, and
// starts a group video call. bob accepts, carol declines; carol's Groups
// tab lists the running call (with names, no raw IDs) and a Join button:
// she joins (joinCall) and every page decodes the two others' videos. carol
// hangs up: the others see her tile go and a notice. alice rings carol in
// again (inviteUser) and she accepts. alice and bob hang up: fewer than two
// remain and the call ends for carol.
func TestBrowserGroupCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob", "carol")
	alice, bob, carol := pages[0], pages[1], pages[2]
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
	}

	must(t, alice.click(ctx, sel("tab-groups"), uiWait))
	must(t, alice.typeInto(ctx, sel("group-name"), "team"))
	must(t, alice.click(ctx, sel("group-create"), uiWait))
	card := sel("group-card", "name", "team")
	for _, u := range []string{"bob", "carol"} {
		must(t, alice.typeInto(ctx, card+" "+sel("group-add-member-input"), u))
		must(t, alice.click(ctx, card+" "+sel("group-add-member"), uiWait))
		must(t, alice.waitSel(ctx, card+" "+sel("group-member", "user", u), uiWait))
	}
	must(t, alice.click(ctx, card+" "+sel("group-video-call"), uiWait))
	must(t, alice.callState(ctx, "calling", uiWait))
	for _, p := range []*browserPage{bob, carol} {
		must(t, p.callState(ctx, "ringing", uiWait))
		_, ok := p.waitText(ctx, sel("call-status"), regexp.MustCompile(`^alice is calling the group`), time.Second)
		must(t, ok)
	}
	must(t, bob.click(ctx, sel("incoming-accept"), uiWait))
	must(t, carol.click(ctx, sel("incoming-reject"), uiWait))
	_, ok := alice.waitText(ctx, sel("call-notice"), regexp.MustCompile(`carol declined`), uiWait)
	must(t, ok)
	inParallel(t, []*browserPage{alice, bob}, func(_ int, p *browserPage) {
		p.waitDecoding(ctx, map[*browserPage]string{alice: "bob", bob: "alice"}[p], 20*time.Second)
	})

	callID, err := pageEval[string](ctx, alice, `window.demoState.call.callID`)
	if err != nil {
		t.Fatal(err)
	}
	// carol declined; the Groups tab lists the running call (who is in it,
	// by name) with a Join button, and no raw IDs anywhere.
	must(t, carol.click(ctx, sel("tab-groups"), uiWait))
	running := card + " " + sel("group-call", "call-id", callID)
	_, ok = carol.waitText(ctx, running+" "+sel("group-call-who"), regexp.MustCompile(`^alice, bob$`), uiWait)
	must(t, ok)
	noRawIDs(ctx, t, carol)
	carol.screenshot(ctx, shotPath(t, "group-running-call.png"))
	joined := time.Now()
	must(t, carol.click(ctx, running+" "+sel("group-call-join"), uiWait))
	everyoneDecodes(ctx, t, pages, joined, "carol's join")
	for _, p := range pages {
		must(t, p.callState(ctx, "active", uiWait))
		if n, _ := pageEval[int](ctx, p, `document.querySelectorAll('[data-testid="remote-tile"]').length`); n != 2 {
			t.Errorf("%s: %d remote tiles, want 2", p.name, n)
		}
		must(t, p.waitSel(ctx, sel("call-screen")+fmt.Sprintf(`[data-call-id=%q]`, callID), uiWait))
		noRawIDs(ctx, t, p)
		// In the grid each tile shows the whole picture, or fills a tile of
		// nearly its shape (at most a fifth cut off).
		for _, other := range pages {
			if other != p {
				if f := measureFit(ctx, t, p, other.name); f.Shown < 0.79 {
					t.Errorf("%s's page: %.1f%% of %s's picture shown (%+v)", p.name, 100*f.Shown, other.name, f)
				}
			}
		}
	}

	// carol leaves; the call goes on for alice and bob.
	must(t, carol.click(ctx, sel("call-hangup"), uiWait))
	must(t, carol.callState(ctx, "ended", uiWait))
	inParallel(t, []*browserPage{alice, bob}, func(_ int, p *browserPage) {
		if p.waitGone(ctx, sel("remote-tile", "user", "carol"), uiWait) {
			p.waitText(ctx, sel("call-notice"), regexp.MustCompile(`carol left the call`), uiWait)
		}
	})
	for _, p := range []*browserPage{alice, bob} {
		must(t, p.callState(ctx, "active", time.Second))
		must(t, p.waitSel(ctx, sel("remote-tile", "user", map[*browserPage]string{alice: "bob", bob: "alice"}[p]), time.Second))
	}
	must(t, carol.click(ctx, sel("call-close"), uiWait))

	// alice rings carol in again (inviteUser); carol accepts.
	must(t, alice.click(ctx, sel("call-invite"), uiWait))
	must(t, alice.click(ctx, sel("invite-option", "user", "carol"), uiWait))
	must(t, alice.click(ctx, sel("invite-submit"), uiWait))
	must(t, carol.callState(ctx, "ringing", uiWait))
	accepted := time.Now()
	must(t, carol.click(ctx, sel("incoming-accept"), uiWait))
	everyoneDecodes(ctx, t, pages, accepted, "carol's accept")
	for _, p := range pages {
		p.logTimings(ctx, accepted)
	}
	must(t, carol.callState(ctx, "active", uiWait))
	// carol, rung by a later invitation, learned the call's ID.
	must(t, carol.waitSel(ctx, sel("call-screen")+fmt.Sprintf(`[data-call-id=%q]`, callID), uiWait))

	// alice and bob leave: fewer than two remain, the call ends for carol.
	must(t, alice.click(ctx, sel("call-hangup"), uiWait))
	must(t, carol.waitGone(ctx, sel("remote-tile", "user", "alice"), uiWait))
	must(t, bob.click(ctx, sel("call-hangup"), uiWait))
	_, ok = carol.waitText(ctx, sel("call-status"), regexp.MustCompile(`^Call ended, \d\d:\d\d$`), uiWait)
	must(t, ok)
	noPageErrors(ctx, t, pages...)
}

// everyoneDecodes waits until every page decodes every other page's video.
func everyoneDecodes(ctx context.Context, t *testing.T, pages []*browserPage, since time.Time, what string) {
	t.Helper()
	inParallel(t, pages, func(_ int, p *browserPage) {
		for _, other := range pages {
			if other == p {
				continue
			}
			if at, ok := p.waitDecoding(ctx, other.name, 20*time.Second); ok {
				t.Logf("%s's page decodes %s's video %v after %s", p.name, other.name, at.Sub(since).Round(time.Millisecond), what)
			}
		}
	})
}

// noRawIDs fails the test when the page shows a raw group or invitation ID
// (grp_…, inv_…) where people read names.
func noRawIDs(ctx context.Context, t *testing.T, p *browserPage) {
	t.Helper()
	text, err := pageEval[string](ctx, p, `document.body.innerText`)
	if err != nil {
		t.Errorf("%s: page text: %v", p.name, err)
		return
	}
	if m := regexp.MustCompile(`\b(grp|inv)_\w+`).FindString(text); m != "" {
		t.Errorf("%s: the page shows the raw ID %q", p.name, m)
	}
}

// shotPath is where a test's screenshot goes: $SWITCHBOARD_DEMO_SCREENSHOTS
// when set (to look at them), else the test's temporary directory.
func shotPath(t *testing.T, name string) string {
	dir := os.Getenv("SWITCHBOARD_DEMO_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	return filepath.Join(dir, name)
}

// TestBrowserClassroom: the teacher opens a class, two students join; the
// teacher asks who wants to speak; both students raise their hands; the
// teacher (and the students) see both hands; the teacher picks s2, s2
// accepts, and every page shows that s2 speaks.
func TestBrowserClassroom(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	teacher, s1, s2 := openClass(ctx, t)
	pages := []*browserPage{teacher, s1, s2}
	for _, u := range []string{"s1", "s2"} {
		must(t, teacher.waitSel(ctx, sel("class-member", "user", u), uiWait))
	}

	must(t, teacher.click(ctx, sel("class-ask-hands"), uiWait))
	for _, p := range []*browserPage{s1, s2} {
		must(t, p.waitSel(ctx, sel("class-prompt"), uiWait))
		must(t, p.click(ctx, sel("class-raise-hand"), uiWait))
		must(t, p.waitSel(ctx, sel("class-my-hand"), uiWait))
	}
	// Everyone in the round sees both hands.
	for _, p := range pages {
		for _, u := range []string{"s1", "s2"} {
			must(t, p.waitSel(ctx, sel("class-hand", "user", u), uiWait))
		}
	}

	must(t, teacher.click(ctx, sel("class-pick", "user", "s2"), uiWait))
	must(t, s2.waitSel(ctx, sel("class-speak-prompt"), uiWait))
	must(t, s1.waitSel(ctx, sel("class-speaker", "state", "asked", "speaker", "s2"), uiWait))
	if n, _ := pageEval[int](ctx, s1, `document.querySelectorAll('[data-testid="class-speak-prompt"]').length`); n != 0 {
		t.Errorf("s1 was offered to speak, but the teacher picked s2")
	}
	must(t, s2.click(ctx, sel("class-accept-speak"), uiWait))
	want := map[*browserPage]*regexp.Regexp{
		teacher: regexp.MustCompile(`s2 is speaking`),
		s1:      regexp.MustCompile(`s2 is speaking`),
		s2:      regexp.MustCompile(`You are speaking`),
	}
	for _, p := range pages {
		must(t, p.waitSel(ctx, sel("class-speaker", "state", "speaking", "speaker", "s2"), uiWait))
		text, ok := p.waitText(ctx, sel("class-speaker")+" .who", want[p], time.Second)
		must(t, ok)
		t.Logf("%s's page: %q", p.name, text)
	}
	noPageErrors(ctx, t, pages...)
}

// TestBrowserCameraDenied: when the camera permission is denied, the call
// screen still works and a banner says why there is no camera.
func TestBrowserCameraDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	alice := startDemoPages(t, "alice")[0]
	signIn(ctx, t, alice, base, "alice")
	// What the browser does when the user blocks the camera.
	if _, err := pageEval[bool](ctx, alice, `(() => {
		navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
		return true;
	})()`); err != nil {
		t.Fatal(err)
	}
	must(t, alice.click(ctx, sel("tab-groups"), uiWait))
	must(t, alice.typeInto(ctx, sel("group-name"), "pair"))
	must(t, alice.typeInto(ctx, sel("group-members"), "bob"))
	must(t, alice.click(ctx, sel("group-create"), uiWait))
	must(t, alice.click(ctx, sel("group-card", "name", "pair")+" "+sel("group-video-call"), uiWait))
	text, ok := alice.waitText(ctx, sel("media-error"), regexp.MustCompile(`permission denied`), uiWait)
	must(t, ok)
	t.Logf("banner: %q", text)
	must(t, alice.callState(ctx, "calling", uiWait))
	must(t, alice.click(ctx, sel("call-cancel"), uiWait))
	_, ok = alice.waitText(ctx, sel("call-status"), regexp.MustCompile(`^Call cancelled$`), uiWait)
	must(t, ok)
}

// TestBrowserTokenExpired: the server closes a session whose token expired
// (4001); the demo fetches a fresh dev token, reconnects and says so.
func TestBrowserTokenExpired(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 2*time.Second) // tokens live 1-2 s (exp has 1 s precision)
	alice := startDemoPages(t, "alice")[0]
	signIn(ctx, t, alice, base, "alice")
	text, ok := alice.waitText(ctx, sel("notice"), regexp.MustCompile(`expired.*fresh token`), uiWait)
	must(t, ok)
	t.Logf("notice: %q", text)
	must(t, alice.waitSel(ctx, sel("conn-state", "state", "connected"), uiWait))
	// The lobby still answers after the reconnect.
	must(t, alice.click(ctx, sel("lobby-refresh"), uiWait))
	noPageErrors(ctx, t, alice)
}

// TestDemoAssets checks how the demo is served: the page at /, its files
// under /demo/ with their types and caching, and 404 for anything else.
func TestDemoAssets(t *testing.T) {
	base := startServer(t, time.Hour)
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `data-testid="signin-name"`},
		{"/demo/app.js", "text/javascript; charset=utf-8", "from '/sdk/switchboard.js'"},
		{"/demo/call.js", "text/javascript; charset=utf-8", "parseCallData"},
		{"/demo/style.css", "text/css; charset=utf-8", ".call-controls"},
	} {
		res, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.ctype || res.Header.Get("ETag") == "" ||
			!strings.Contains(string(body), tc.contains) {
			t.Errorf("%s: %d %q etag %q, body has %q: %v", tc.path, res.StatusCode, res.Header.Get("Content-Type"),
				res.Header.Get("ETag"), tc.contains, strings.Contains(string(body), tc.contains))
		}
	}
	for _, path := range []string{"/demo/nope.js", "/nope", "/demo/"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, res.StatusCode)
		}
	}
}

// TestDemoScreenshots saves the demo's main screens as PNG files into the
// directory $SWITCHBOARD_DEMO_SCREENSHOTS (skipped when it is not set), to
// look at the design: sign-in, contacts, ringing, in call, call ended,
// history, group call, classroom.
func TestDemoScreenshots(t *testing.T) {
	dir := os.Getenv("SWITCHBOARD_DEMO_SCREENSHOTS")
	if dir == "" {
		t.Skip("set SWITCHBOARD_DEMO_SCREENSHOTS to a directory to save the demo's screens")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*demoTestBudget)
	defer cancel()
	shot := func(p *browserPage, name string) { must(t, p.screenshot(ctx, filepath.Join(dir, "demo-"+name+".png"))) }
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob", "carol")
	alice, bob, carol := pages[0], pages[1], pages[2]

	must(t, alice.open(ctx, base, "/?lowres=1"))
	must(t, alice.waitSel(ctx, sel("signin-name"), uiWait))
	must(t, alice.typeInto(ctx, sel("signin-name"), "alice"))
	shot(alice, "signin")
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
	}
	must(t, alice.waitSel(ctx, sel("contact", "user", "carol"), uiWait))
	shot(alice, "contacts")

	must(t, alice.click(ctx, sel("contact-video-call", "user", "bob"), uiWait))
	must(t, bob.callState(ctx, "ringing", uiWait))
	shot(bob, "ringing") // no camera preview: the camera starts on accept
	must(t, bob.click(ctx, sel("incoming-accept"), uiWait))
	_, ok := alice.waitDecoding(ctx, "bob", 15*time.Second)
	must(t, ok)
	_, ok = alice.waitText(ctx, sel("call-timer"), regexp.MustCompile(`^00:0[3-9]$`), uiWait)
	must(t, ok)
	shot(alice, "in-call")
	must(t, alice.click(ctx, sel("call-hangup"), uiWait))
	must(t, bob.callState(ctx, "ended", uiWait))
	shot(bob, "call-ended")
	must(t, bob.click(ctx, sel("call-close"), uiWait))
	must(t, bob.click(ctx, sel("tab-history"), uiWait))
	must(t, bob.waitSel(ctx, sel("history-row"), uiWait))
	shot(bob, "history")
	must(t, alice.click(ctx, sel("call-close"), uiWait))

	must(t, alice.click(ctx, sel("tab-groups"), uiWait))
	must(t, alice.typeInto(ctx, sel("group-name"), "team"))
	must(t, alice.typeInto(ctx, sel("group-members"), "bob, carol"))
	must(t, alice.click(ctx, sel("group-create"), uiWait))
	card := sel("group-card", "name", "team")
	must(t, alice.waitSel(ctx, card+" "+sel("group-member", "user", "carol"), uiWait))
	shot(alice, "groups")
	must(t, alice.click(ctx, card+" "+sel("group-video-call"), uiWait))
	for _, p := range []*browserPage{bob, carol} {
		must(t, p.click(ctx, sel("incoming-accept"), uiWait))
	}
	for _, u := range []string{"bob", "carol"} {
		_, ok := alice.waitDecoding(ctx, u, 20*time.Second)
		must(t, ok)
	}
	shot(alice, "group-call")
	// alice and bob hang up; fewer than two remain: carol's call ends.
	for _, p := range []*browserPage{alice, bob} {
		must(t, p.click(ctx, sel("call-hangup"), uiWait))
	}
	for _, p := range pages {
		must(t, p.callState(ctx, "ended", uiWait))
		must(t, p.click(ctx, sel("call-close"), uiWait))
	}

	for _, p := range pages {
		must(t, p.click(ctx, sel("tab-classroom"), uiWait))
	}
	must(t, alice.click(ctx, sel("class-teach"), uiWait))
	for _, p := range []*browserPage{bob, carol} {
		must(t, p.click(ctx, sel("class-join"), uiWait))
	}
	must(t, alice.waitSel(ctx, sel("class-member", "user", "carol"), uiWait))
	must(t, alice.click(ctx, sel("class-ask-hands"), uiWait))
	must(t, bob.waitSel(ctx, sel("class-prompt"), uiWait))
	shot(bob, "classroom-prompt")
	for _, p := range []*browserPage{bob, carol} {
		must(t, p.click(ctx, sel("class-raise-hand"), uiWait))
	}
	must(t, alice.waitSel(ctx, sel("class-hand", "user", "carol"), uiWait))
	must(t, alice.waitSel(ctx, sel("class-hand", "user", "bob"), uiWait))
	shot(alice, "classroom-teacher")
	must(t, alice.click(ctx, sel("class-pick", "user", "bob"), uiWait))
	must(t, bob.click(ctx, sel("class-accept-speak"), uiWait))
	must(t, carol.waitSel(ctx, sel("class-speaker", "state", "speaking"), uiWait))
	shot(carol, "classroom-student")
}

// openClass signs a teacher and two students (s1, s2) in on the demo's
// classroom tab: the teacher opens the class, the students join it.
func openClass(ctx context.Context, t *testing.T) (teacher, s1, s2 *browserPage) {
	t.Helper()
	base := startServer(t, 0)
	pages := startDemoPages(t, "teacher", "s1", "s2")
	teacher, s1, s2 = pages[0], pages[1], pages[2]
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
		must(t, p.click(ctx, sel("tab-classroom"), uiWait))
	}
	must(t, teacher.click(ctx, sel("class-teach"), uiWait))
	must(t, teacher.waitSel(ctx, sel("class-role", "role", "teacher"), uiWait))
	for _, p := range []*browserPage{s1, s2} {
		must(t, p.click(ctx, sel("class-join"), uiWait))
		must(t, p.waitSel(ctx, sel("class-role", "role", "student"), uiWait))
	}
	return teacher, s1, s2
}
