package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The SDK rooms of the demo's classroom and live room pages.
const (
	classRoomJS = `window.demo?.classroom?.stage?.room`
	liveRoomJS  = `window.demo?.live?.stage?.room`
)

// inboundJS is a promise of the inbound-rtp stats of user's remote track
// of kind in room (a JS expression of an SDK room): bytesReceived for
// audio, framesDecoded for video; 0 when there is none yet.
func inboundJS(room, user, kind string) string {
	field := "bytesReceived"
	if kind == "video" {
		field = "framesDecoded"
	}
	return fmt.Sprintf(`(async () => {
		const room = %s;
		const stream = room?.remoteStreams.get(%q);
		const track = stream?.getTracks().find((t) => t.kind === %q);
		if (!room?.subscriber || !track) return 0;
		const stats = await room.subscriber.getStats();
		let n = 0;
		stats.forEach((s) => {
			if (s.type === 'inbound-rtp' && s.kind === %q && s.trackIdentifier === track.id) n = s[%q] ?? 0;
		});
		return n;
	})()`, room, user, kind, kind, field)
}

// waitRising waits until p receives user's track of kind in room and its
// count (audio bytes, video frames decoded) rises.
func waitRising(ctx context.Context, t *testing.T, p *browserPage, room, user, kind string, within time.Duration) {
	t.Helper()
	describe := fmt.Sprintf(`{room: %[1]s ? {role: %[1]s.role, info: %[1]s.info, streams: [...%[1]s.remoteStreams.keys()]} : null, classroom: window.demoState.classroom, live: window.demoState.live}`, room)
	first, ok := pageWait[float64](ctx, p, within, inboundJS(room, user, kind), describe)
	must(t, ok)
	later, ok := pageWait[float64](ctx, p, 10*time.Second,
		fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, inboundJS(room, user, kind), first), describe)
	must(t, ok)
	t.Logf("%s: %s's %s: %v, then %v", p.name, user, kind, first, later)
}

// waitStreamGone waits until p's room no longer has a stream of user and
// its stage shows no tile of user.
func waitStreamGone(ctx context.Context, t *testing.T, p *browserPage, room, user string) {
	t.Helper()
	cond := fmt.Sprintf(`(() => { const r = %s; return !!r && !r.remoteStreams.has(%q) && !document.querySelector('[data-testid="stage-tile"][data-user=%q]'); })()`, room, user, user)
	_, ok := pageWait[bool](ctx, p, 15*time.Second, cond, `window.demoState`)
	must(t, ok)
}

// TestBrowserClassroomMedia: the teacher's camera and microphone reach every
// student; the student the teacher picks goes on the mic (the server
// switches their role) and every page sees and hears them; the teacher
// takes them off again and their tracks end on the other pages.
func TestBrowserClassroomMedia(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	teacher, s1, s2 := openClass(ctx, t)
	pages := []*browserPage{teacher, s1, s2}
	// The teacher reaches every student.
	inParallel(t, []*browserPage{s1, s2}, func(_ int, p *browserPage) {
		waitRising(ctx, t, p, classRoomJS, "teacher", "video", 30*time.Second)
		waitRising(ctx, t, p, classRoomJS, "teacher", "audio", 10*time.Second)
	})

	must(t, teacher.click(ctx, sel("class-ask-hands"), uiWait))
	for _, p := range []*browserPage{s1, s2} {
		must(t, p.waitSel(ctx, sel("class-prompt"), uiWait))
		must(t, p.click(ctx, sel("class-raise-hand"), uiWait))
	}
	must(t, teacher.waitSel(ctx, sel("class-hand", "user", "s2"), uiWait))
	must(t, teacher.click(ctx, sel("class-pick", "user", "s2"), uiWait))
	must(t, s2.waitSel(ctx, sel("class-speak-prompt"), uiWait))
	must(t, s2.click(ctx, sel("class-accept-speak"), uiWait))
	// s2 is on the mic: published, seen and heard by the teacher and s1.
	_, ok := pageWait[bool](ctx, s2, uiWait, `window.demoState.classroom.roomRole === 'anchor'`, `window.demoState.classroom`)
	must(t, ok)
	inParallel(t, []*browserPage{teacher, s1}, func(_ int, p *browserPage) {
		waitRising(ctx, t, p, classRoomJS, "s2", "video", 30*time.Second)
		waitRising(ctx, t, p, classRoomJS, "s2", "audio", 10*time.Second)
		must(t, p.waitSel(ctx, sel("class-speaker", "state", "speaking", "speaker", "s2"), uiWait))
	})
	teacher.screenshot(ctx, shotPath(t, "classroom-media.png"))

	// The teacher takes s2 off the mic: s2's tracks end on the other pages.
	must(t, teacher.click(ctx, sel("class-take-off", "user", "s2"), uiWait))
	inParallel(t, []*browserPage{teacher, s1}, func(_ int, p *browserPage) {
		waitStreamGone(ctx, t, p, classRoomJS, "s2")
	})
	_, ok = pageWait[bool](ctx, s2, uiWait, `window.demoState.classroom.roomRole === 'audience' && !window.demo.classroom.stage.room.publisher`, `window.demoState.classroom`)
	must(t, ok)
	// s1 still hears the teacher.
	waitRising(ctx, t, s1, classRoomJS, "teacher", "audio", 10*time.Second)
	noPageErrors(ctx, t, pages...)
}

// TestBrowserLiveRoom: a host and two audience members; one asks for the
// mic, the host accepts, and the others hear them (audio bytes rising).
func TestBrowserLiveRoom(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "host", "a1", "a2")
	host, a1, a2 := pages[0], pages[1], pages[2]
	for _, p := range pages {
		signIn(ctx, t, p, base, p.name)
		must(t, p.click(ctx, sel("tab-live"), uiWait))
	}
	must(t, host.click(ctx, sel("live-host"), uiWait))
	must(t, host.waitSel(ctx, sel("live-role", "role", "host"), uiWait))
	for _, p := range []*browserPage{a1, a2} {
		must(t, p.click(ctx, sel("live-join"), uiWait))
		must(t, p.waitSel(ctx, sel("live-role", "role", "audience"), uiWait))
	}
	inParallel(t, []*browserPage{a1, a2}, func(_ int, p *browserPage) {
		waitRising(ctx, t, p, liveRoomJS, "host", "audio", 30*time.Second)
	})
	for _, u := range []string{"a1", "a2"} {
		must(t, host.waitSel(ctx, sel("live-audience-member", "user", u), uiWait))
	}

	// a1 asks for the mic; the host accepts.
	must(t, a1.click(ctx, sel("live-request-mic"), uiWait))
	must(t, a1.waitSel(ctx, sel("live-request-pending"), uiWait))
	must(t, host.click(ctx, sel("live-accept-request", "user", "a1"), uiWait))
	must(t, a1.waitSel(ctx, sel("live-role", "role", "anchor"), uiWait))
	for _, p := range pages {
		must(t, p.waitSel(ctx, sel("live-seat", "user", "a1"), uiWait))
	}
	inParallel(t, []*browserPage{host, a2}, func(_ int, p *browserPage) {
		waitRising(ctx, t, p, liveRoomJS, "a1", "audio", 30*time.Second)
	})
	host.screenshot(ctx, shotPath(t, "live-room.png"))

	// a1 leaves the mic: their tracks end on the other pages.
	must(t, a1.click(ctx, sel("live-leave-mic"), uiWait))
	must(t, a1.waitSel(ctx, sel("live-role", "role", "audience"), uiWait))
	inParallel(t, []*browserPage{host, a2}, func(_ int, p *browserPage) {
		waitStreamGone(ctx, t, p, liveRoomJS, "a1")
	})
	noPageErrors(ctx, t, pages...)
}

// TestBrowserDemoStatusText: a user sets their status text with the lobby's
// control; another page's contact list shows it, live.
func TestBrowserDemoStatusText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob")
	alice, bob := pages[0], pages[1]
	signIn(ctx, t, bob, base, "bob")
	signIn(ctx, t, alice, base, "alice")
	contactPresence(ctx, t, alice, "bob", "online")
	must(t, bob.typeInto(ctx, sel("my-status"), "at lunch"))
	must(t, bob.click(ctx, sel("my-status-set"), uiWait))
	must(t, bob.waitSel(ctx, sel("my-status-saved", "status", "at lunch"), uiWait))
	contactPresence(ctx, t, alice, "bob", "online · at lunch")
	noPageErrors(ctx, t, alice, bob)
}
