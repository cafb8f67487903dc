package web_test

// The embedded TURN server (media/turnserver, turn.enabled) carrying calls
// whose clients may only use relay candidates: a Go room client here, a
// headless Chromium page in TestBrowserTURNRelayOnly.

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// turnMediaWithin bounds the wait for relayed media in both directions.
const turnMediaWithin = 20 * time.Second

// checkTURNCredentials checks the TURN entry of enterRoom's iceServers:
// the server's turn: URLs, and user's own credentials valid for about
// turn.credential_ttl.
func checkTURNCredentials(t *testing.T, s *webtest.Stack, r *roomclient.Room, user string) {
	t.Helper()
	ice := r.Result().ICEServers
	if len(ice) != 1 || len(ice[0].URLs) != 2 || !strings.HasPrefix(ice[0].URLs[0], "turn:127.0.0.1:") {
		t.Fatalf("%s: iceServers %+v, want the embedded TURN server's turn: URLs", user, ice)
	}
	exp, who, _ := strings.Cut(ice[0].Username, ":")
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || who != user {
		t.Fatalf("%s: TURN username %q, want EXPIRY:%s", user, ice[0].Username, user)
	}
	if left := time.Until(time.Unix(sec, 0)); left < s.Config.TURN.CredentialTTL-time.Minute || left > s.Config.TURN.CredentialTTL {
		t.Errorf("%s: credentials expire in %v, want about %v", user, left, s.Config.TURN.CredentialTTL)
	}
	if ice[0].Credential == "" || ice[0].Credential == turnserver.Password("", ice[0].Username) {
		t.Errorf("%s: TURN credential %q", user, ice[0].Credential)
	}
}

// waitRelayedMedia waits until r receives audio and video from user and
// returns how long after since its first video packet and its first
// keyframe came.
func waitRelayedMedia(t *testing.T, r *roomclient.Room, user string, since time.Time) (packet, keyframe time.Duration) {
	t.Helper()
	deadline := time.Now().Add(turnMediaWithin)
	for {
		got := r.Received()
		a, v := got[peer.TrackKey{StreamID: user, Kind: "audio"}], got[peer.TrackKey{StreamID: user, Kind: "video"}]
		if a.Packets > 0 && v.Keyframes > 0 {
			return v.FirstPacket.Sub(since), v.FirstKeyframe.Sub(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no media from %s within %v: %+v", user, turnMediaWithin, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRelayed fails unless both connections of r selected a pair whose
// local candidate is a relay one.
func checkRelayed(t *testing.T, r *roomclient.Room, who string) {
	t.Helper()
	pub, sub := r.Peer().SelectedPairs()
	for name, pair := range map[string]*webrtc.ICECandidatePair{"publisher": pub, "subscriber": sub} {
		if pair == nil || pair.Local == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Errorf("%s: %s connection's selected pair %v, want a local relay candidate", who, name, pair)
			continue
		}
		t.Logf("%s: %s pair %s", who, name, pair)
	}
}

// TestTURNRelayOnlyCall: with turn.enabled, a one-to-one call between two
// Go room clients allowed only relay candidates connects through the
// embedded TURN server (each selected pair's local candidate is a relay
// one on 127.0.0.1), and audio and video flow both ways, still rising
// after the connection settled.
func TestTURNRelayOnlyCall(t *testing.T) {
	s := webtest.Start(t, webtest.Options{TURN: true})
	alice, bob := s.Dial("alice"), s.Dial("bob")
	pc := webtest.PeerConfig()
	pc.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	start := time.Now()
	call := s.StartCallWith(alice, bob, "bob", pc)
	checkTURNCredentials(t, s, call.Caller, "alice")
	checkTURNCredentials(t, s, call.Callee, "bob")

	for _, d := range []struct {
		r        *roomclient.Room
		from, to string
	}{{call.Caller, "bob", "alice"}, {call.Callee, "alice", "bob"}} {
		packet, key := waitRelayedMedia(t, d.r, d.from, start)
		t.Logf("relay-only call, %s's video at %s: first packet %v, first keyframe %v after the call request",
			d.from, d.to, packet.Round(time.Millisecond), key.Round(time.Millisecond))
	}
	checkRelayed(t, call.Caller, "alice")
	checkRelayed(t, call.Callee, "bob")
	if n := s.TURN.AllocationCount(); n < 4 {
		t.Errorf("%d TURN allocations, want at least 4 (two connections each)", n)
	}
	// Media keeps flowing both ways through the relay.
	before := [2]peer.TrackStats{call.Caller.Received()[peer.TrackKey{StreamID: "bob", Kind: "video"}], call.Callee.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}]}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := [2]peer.TrackStats{call.Caller.Received()[peer.TrackKey{StreamID: "bob", Kind: "video"}], call.Callee.Received()[peer.TrackKey{StreamID: "alice", Kind: "video"}]}
		if after[0].Bytes > before[0].Bytes && after[1].Bytes > before[1].Bytes {
			t.Logf("video bytes: alice got %d, bob got %d", after[0].Bytes, after[1].Bytes)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relayed video stopped: before %+v, after %+v", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, r := range []*roomclient.Room{call.Caller, call.Callee} {
		if errs := r.Errors(); len(errs) > 0 {
			t.Errorf("negotiation errors: %v", errs)
		}
	}
}

// selectedCandidateTypesJS is a promise of the local and remote candidate
// types of the pair each connection of the SDK room selected, e.g.
// {publisher: "relay/host", subscriber: "relay/host"}.
const selectedCandidateTypesJS = `(async () => {
	const pair = async (pc) => {
		if (!pc) return '';
		const stats = await pc.getStats();
		let out = '';
		stats.forEach((s) => {
			if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
			const p = stats.get(s.selectedCandidatePairId);
			const local = p && stats.get(p.localCandidateId), remote = p && stats.get(p.remoteCandidateId);
			if (local && remote) out = local.candidateType + '/' + remote.candidateType;
		});
		return out;
	};
	const room = window.sbRoom;
	return { publisher: await pair(room?.publisher), subscriber: await pair(room?.subscriber) };
})()`

// TestBrowserTURNRelayOnly: two Chromium pages whose RTCPeerConnections may
// only use relay candidates (iceTransportPolicy "relay", the room test
// page's ?relay=1) share a room through the embedded TURN server: each
// decodes the other's video (framesDecoded rising) and sends its own
// (bytesSent rising), and the pair each of the four connections selected
// has a local relay candidate (getStats candidateType "relay").
func TestBrowserTURNRelayOnly(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTestBudget)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	s := webtest.Start(t, webtest.Options{DevTokens: true, TURN: true, Logger: logger})
	const room = "turn-room"
	users := []string{"alice", "bob"}
	pages := startBrowsers(t, sdkStateJS, users...)

	loaded := make([]time.Time, len(pages))
	inParallel(t, pages, func(i int, p *browserPage) {
		loaded[i] = time.Now()
		p.run(ctx, "navigate", chromedp.Navigate(s.HTTP.URL+"/sdk/room-test.html?"+url.Values{"user": {users[i]}, "room": {room}, "relay": {"1"}}.Encode()))
	})
	sentJS := `(async () => { let n = 0; (await window.sbRoom.publisher.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') n += s.bytesSent; }); return n; })()`
	rising := func(expr string, than float64) string {
		return fmt.Sprintf(`(async () => { const n = await %s; return n > %v ? n : 0; })()`, expr, than)
	}
	for i, p := range pages {
		user, other := users[i], users[1-i]
		waitJS[bool](ctx, p, browserMediaWithin, `window.sbState?.entered === true`, `window.sbState`)
		ice := evalJS[[]map[string]any](ctx, p, `window.sbRoom.iceServers`)
		if len(ice) != 1 || !strings.HasSuffix(fmt.Sprint(ice[0]["username"]), ":"+user) {
			t.Errorf("%s: iceServers %v, want the TURN server with their own credentials", user, ice)
		}
		first := waitJS[float64](ctx, p, max(browserMediaWithin-time.Since(loaded[i]), 3*time.Second), framesDecodedJS(sdkRoomJS, other), `window.sbState`)
		later := waitJS[float64](ctx, p, 5*time.Second, rising(framesDecodedJS(sdkRoomJS, other), first), `window.sbState`)
		sent := waitJS[float64](ctx, p, 5*time.Second, sentJS, `window.sbState`)
		sentLater := waitJS[float64](ctx, p, 5*time.Second, rising(sentJS, sent), `window.sbState`)
		types := evalJS[map[string]string](ctx, p, selectedCandidateTypesJS)
		for _, conn := range []string{"publisher", "subscriber"} {
			if local, _, _ := strings.Cut(types[conn], "/"); local != "relay" {
				t.Errorf("%s: %s connection's selected pair is %q (local/remote), want a local relay candidate", user, conn, types[conn])
			}
		}
		tm := evalJS[map[string]float64](ctx, p, `window.sbState.timings`)
		t.Logf("%s (relay-only): framesDecoded from %s %v then %v, video bytesSent %v then %v; pairs (local/remote) %v",
			user, other, first, later, sent, sentLater, types)
		t.Logf("%s (relay-only): ms since page load: enterRoom replied %.0f, media connected (onEnterRoom) %.0f, first frame from %s %.0f",
			user, tm["enterReplied"], tm["entered"], other, tm["firstFrame."+other])
		if errs := evalJS[[]string](ctx, p, `window.sbState.errors`); len(errs) > 0 {
			t.Errorf("%s: page errors: %q", user, errs)
		}
	}
	if n := s.TURN.AllocationCount(); n < 4 {
		t.Errorf("%d TURN allocations, want at least 4 (two connections per page)", n)
	}
}
