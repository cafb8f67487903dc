package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is a real server (SQLite store on disk, real engine, real
// handler) on a loopback httptest listener.
type testServer struct {
	t      *testing.T
	dbPath string
	sigCfg signaling.Config
	webCfg web.Config
	dev    bool

	auth   *web.Authenticator
	store  *signaling.SQLiteStore
	engine *signaling.Engine
	srv    *web.Server
	http   *httptest.Server
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func newTestServer(t *testing.T, tweak func(*testServer)) *testServer {
	t.Helper()
	ts := &testServer{t: t, dbPath: filepath.Join(t.TempDir(), "sb.db"), sigCfg: signaling.DefaultConfig(), webCfg: web.DefaultConfig(), dev: true}
	if tweak != nil {
		tweak(ts)
	}
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (ts *testServer) start() {
	t := ts.t
	t.Helper()
	var err error
	ts.auth, err = web.NewAuthenticator(web.AuthConfig{Secret: testSecret, Dev: ts.dev})
	if err != nil {
		t.Fatal(err)
	}
	ts.store, err = signaling.OpenSQLite(context.Background(), ts.dbPath, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ts.engine, err = signaling.NewEngine(context.Background(), signaling.Params{Config: ts.sigCfg, Store: ts.store, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, err = web.New(web.Params{Config: ts.webCfg, Auth: ts.auth, DevTokens: ts.dev, Engine: ts.engine, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ts.http = httptest.NewServer(ts.srv.Handler())
}

func (ts *testServer) stop() {
	if ts.http == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ts.srv.Shutdown(ctx)
	ts.http.Close()
	ts.engine.Close()
	_ = ts.store.Close()
	ts.http = nil
}

func (ts *testServer) restart() { ts.stop(); ts.start() }

func (ts *testServer) wsURL() string { return "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/ws" }

func (ts *testServer) token(user string) string {
	tok, _, err := ts.auth.Issue(user, "", time.Hour)
	if err != nil {
		ts.t.Fatal(err)
	}
	return tok
}

// dialStatus dials as alice with header h and returns 101 for an upgrade,
// else the HTTP status of the refusal.
func (ts *testServer) dialStatus(t *testing.T, h http.Header) int {
	t.Helper()
	c, err := client.Dial(testCtx(t), ts.wsURL(), ts.token("alice"), client.WithHeader(h))
	if err == nil {
		c.Close()
		return http.StatusSwitchingProtocols
	}
	var de *client.DialError
	if !errors.As(err, &de) {
		t.Fatal(err)
	}
	return de.Status
}

func (ts *testServer) dial(user string) *client.Client {
	ts.t.Helper()
	c, err := client.Dial(testCtx(ts.t), ts.wsURL(), ts.token(user))
	if err != nil {
		ts.t.Fatalf("dial %s: %v", user, err)
	}
	ts.t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCode(t *testing.T, err error, want *protocol.Error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %s (%d)", err, want.Reason, want.Code)
	}
}

func invitationOf(t *testing.T, ev client.Event) protocol.NewInvitationEvent {
	t.Helper()
	var v protocol.NewInvitationEvent
	if err := ev.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func byInvite(id string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			InviteID string `json:"inviteID"`
		}
		return ev.Decode(&v) == nil && v.InviteID == id
	}
}

func TestHealthAndDevToken(t *testing.T) {
	ts := newTestServer(t, nil)
	res, err := http.Get(ts.http.URL + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", res, err)
	}
	res.Body.Close()
	res, err = http.Get(ts.http.URL + "/api/dev/token?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Token  string `json:"token"`
		UserID string `json:"userID"`
	}
	_ = json.NewDecoder(res.Body).Decode(&out)
	res.Body.Close()
	if res.StatusCode != 200 || out.UserID != "alice" {
		t.Fatalf("dev token: %d %+v", res.StatusCode, out)
	}
	c, err := client.Dial(testCtx(t), ts.wsURL(), out.Token)
	if err != nil {
		t.Fatalf("dial with the dev token: %v", err)
	}
	c.Close()
	for _, bad := range []string{"", "a b", strings.Repeat("x", 65)} {
		res, _ := http.Get(ts.http.URL + "/api/dev/token?user=" + bad)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("user %q: status %d", bad, res.StatusCode)
		}
	}
}

func TestDevTokenDisabled(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.dev = false })
	res, err := http.Get(ts.http.URL + "/api/dev/token?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", res.StatusCode)
	}
	if _, err := web.NewAuthenticator(web.AuthConfig{Secret: []byte("short"), Dev: false}); err == nil {
		t.Fatal("a short secret was accepted outside dev mode")
	}
	if _, err := web.NewAuthenticator(web.AuthConfig{Dev: false}); err == nil {
		t.Fatal("an empty secret was accepted outside dev mode")
	}
}

func TestUpgradeAuth(t *testing.T) {
	ts := newTestServer(t, nil)
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	room, _, _ := ts.auth.Issue("alice", "room1", time.Hour)
	cases := map[string]string{
		"missing":     "",
		"garbage":     "not-a-jwt",
		"other key":   sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), jwt.MapClaims{"sub": "alice", "exp": exp}),
		"expired":     sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}),
		"no exp":      sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"}),
		"alg none":    sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp}),
		"HS512":       sign(jwt.SigningMethodHS512, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp}),
		"bad user id": sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "a b", "exp": exp}),
		"room token":  room,
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := client.Dial(testCtx(t), ts.wsURL(), tok)
			var de *client.DialError
			if !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
				t.Fatalf("got %v, want HTTP 401", err)
			}
		})
	}
	// The query parameter works as well as the header.
	ws, res, err := websocket.DefaultDialer.Dial(ts.wsURL()+"?token="+ts.token("alice"), nil)
	if err != nil {
		t.Fatalf("?token=: %v (%v)", err, res)
	}
	ws.Close()
}

func TestOriginCheck(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.webCfg.AllowedOrigins = []string{"https://app.example.com"} })
	dial := func(origin string) int { return ts.dialStatus(t, http.Header{"Origin": {origin}}) }
	if got := dial("https://evil.example.com"); got != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", got)
	}
	if got := dial("https://app.example.com"); got != 101 {
		t.Fatalf("allowed origin: %d", got)
	}
	if got := dial(ts.http.URL); got != 101 {
		t.Fatalf("same origin: %d", got)
	}
}

// TestOneToOneFlowOverWebSocket: invite, ring on every device, accept on
// one, the other stops ringing, the inviter hears it; data byte for byte.
func TestOneToOneFlowOverWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	alice, alice2 := ts.dial("alice"), ts.dial("alice")
	bob1, bob2 := ts.dial("bob"), ts.dial("bob")
	carol := ts.dial("carol")
	data := "{\"room_id\":\"r-1\",\"note\":\"h\u00e9llo \\\"quoted\\\" \U0001F600\\n\"}"
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Data: data, Timeout: ptr(30)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob1, bob2, alice2} {
		ev, err := c.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id))
		if err != nil {
			t.Fatal(err)
		}
		inv := invitationOf(t, ev)
		if inv.Data != data || inv.Inviter != "alice" || inv.Timeout != 30 || inv.GroupID != "" {
			t.Fatalf("ring %+v", inv)
		}
	}
	if err := bob1.Accept(ctx, id, "accepted-data"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, alice2, bob2} {
		ev, err := c.WaitEvent(ctx, protocol.EvInviteeAccepted, byInvite(id))
		if err != nil {
			t.Fatal(err)
		}
		var v protocol.InviteeEvent
		_ = ev.Decode(&v)
		if v.Invitee != "bob" || v.Data != "accepted-data" {
			t.Fatalf("accepted %+v", v)
		}
	}
	mustCode(t, bob2.Accept(ctx, id, ""), protocol.ErrInvalidInviteID)
	if err := bob1.ExpectNoEvent(ctx, 200*time.Millisecond, protocol.EvInviteeAccepted); err != nil {
		t.Fatalf("the accepting device got its own event: %v", err)
	}
	if err := carol.ExpectNoEvent(ctx, 100*time.Millisecond, ""); err != nil {
		t.Fatalf("an outsider got an event: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestEveryOpOverWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	gid, err := a.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "class", Name: "Class", MemberList: []string{"bob"}})
	if err != nil || gid != "class" {
		t.Fatalf("createGroup: %q %v", gid, err)
	}
	if err := ts.dial("carol").JoinGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if err := a.InviteUserToGroup(ctx, gid, []string{"dave", "erin"}); err != nil {
		t.Fatal(err)
	}
	if err := a.KickGroupMember(ctx, gid, []string{"erin"}, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := ts.dial("dave").QuitGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	members, err := b.GetGroupMemberList(ctx, gid)
	if err != nil || len(members) != 3 {
		t.Fatalf("members %+v %v", members, err)
	}
	groups, err := b.GetJoinedGroupList(ctx)
	if err != nil || len(groups) != 1 || groups[0].GroupID != gid {
		t.Fatalf("groups %+v %v", groups, err)
	}
	id, err := a.InviteInGroup(ctx, protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob", "carol"}, Data: "raise hand"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ModifyInvitation(ctx, id, "raise hand v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvInvitationModified, byInvite(id)); err != nil {
		t.Fatal(err)
	}
	if err := b.Reject(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	id2, _ := a.Invite(ctx, protocol.InviteArgs{Invitee: "bob"})
	if err := a.Cancel(ctx, id2, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvInvitationCancelled, byInvite(id2)); err != nil {
		t.Fatal(err)
	}
	if err := a.DismissGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvGroupDismissed, nil); err != nil {
		t.Fatal(err)
	}
}

// TestBadInputKeepsConnection sends every kind of bad request; each gets its
// error code and the connection stays usable.
func TestBadInputKeepsConnection(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.sigCfg.Limits.MaxDataBytes = 100 })
	ctx := testCtx(t)
	c := ts.dial("alice")
	cases := []struct {
		name  string
		frame string
		id    string
		want  *protocol.Error
	}{
		{"not json", `{{{`, "", protocol.ErrMalformedRequest},
		{"array", `[1,2]`, "", protocol.ErrMalformedRequest},
		{"no id", `{"op":"invite","args":{}}`, "", protocol.ErrMalformedRequest},
		{"no op", `{"id":"r2"}`, "r2", protocol.ErrMalformedRequest},
		{"args not object", `{"id":"r3","op":"invite","args":[1]}`, "r3", protocol.ErrMalformedRequest},
		{"unknown envelope field", `{"id":"r4","op":"invite","argz":{}}`, "r4", protocol.ErrMalformedRequest},
		{"unknown op", `{"id":"r5","op":"teleport","args":{}}`, "r5", protocol.ErrUnknownOp},
		{"wrong type", `{"id":"r6","op":"invite","args":{"invitee":42}}`, "r6", protocol.ErrInvalidParameter},
		{"unknown field", `{"id":"r7","op":"invite","args":{"invitees":["bob"]}}`, "r7", protocol.ErrInvalidParameter},
		{"missing field", `{"id":"r8","op":"invite","args":{"data":"x"}}`, "r8", protocol.ErrInvalidParameter},
		{"data too large", `{"id":"r9","op":"invite","args":{"invitee":"bob","data":"` + strings.Repeat("x", 101) + `"}}`, "r9", protocol.ErrDataTooLarge},
		{"timeout too large", `{"id":"r10","op":"invite","args":{"invitee":"bob","timeout":100000}}`, "r10", protocol.ErrTimeoutTooLarge},
		{"bad invite id", `{"id":"r11","op":"accept","args":{"inviteID":"inv_nope"}}`, "r11", protocol.ErrInvalidInviteID},
		{"trailing data", `{"id":"r12","op":"getJoinedGroupList"} {}`, "r12", protocol.ErrMalformedRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.SendRaw(ctx, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			raw, err := c.WaitReply(ctx, tc.id)
			if err == nil {
				t.Fatalf("got a result %s, want error %s", raw, tc.want.Reason)
			}
			mustCode(t, err, tc.want)
			if tc.name == "wrong type" && !strings.Contains(err.Error(), "invitee") {
				t.Fatalf("the message does not name the field: %v", err)
			}
		})
	}
	if err := c.SendBinary(ctx, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	_, err := c.WaitReply(ctx, "")
	mustCode(t, err, protocol.ErrMalformedRequest)
	// Still usable, and nothing was created by any of it.
	groups, err := c.GetJoinedGroupList(ctx)
	if err != nil || len(groups) != 0 {
		t.Fatalf("after bad input: %v %v", groups, err)
	}
	b := ts.dial("bob")
	if err := b.ExpectNoEvent(ctx, 100*time.Millisecond, ""); err != nil {
		t.Fatalf("bad requests rang bob: %v", err)
	}
}

func TestOversizedFrameAndInvalidUTF8Close(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.webCfg.MaxFrameBytes = 1024 })
	ctx := testCtx(t)
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"too big", []byte(`{"id":"1","op":"invite","args":{"data":"` + strings.Repeat("x", 2000) + `"}}`), websocket.CloseMessageTooBig},
		{"not utf-8", []byte("{\"id\":\"1\",\"op\":\"\xff\xfe\"}"), websocket.CloseInvalidFramePayloadData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial("alice")
			if err := c.SendRaw(ctx, tc.frame); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatal("connection not closed")
			}
			if got := client.CloseCode(c.Err()); got != tc.code {
				t.Fatalf("close code %d (%v), want %d", got, c.Err(), tc.code)
			}
		})
	}
	// A frame at the limit is fine.
	c := ts.dial("alice")
	pad := strings.Repeat("x", 1024-len(`{"id":"1","op":"getJoinedGroupList","args":{},"":""}`))
	frame := `{"id":"1","op":"getJoinedGroupList","args":{}` + strings.Repeat(" ", len(pad)) + `}`
	if len(frame) > 1024 {
		t.Fatalf("test frame is %d bytes", len(frame))
	}
	if err := c.SendRaw(ctx, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReply(ctx, "1"); err != nil {
		t.Fatalf("frame at the limit: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.webCfg.RequestsPerSec = 5; ts.webCfg.RequestBurst = 5 })
	ctx := testCtx(t)
	c := ts.dial("alice")
	limited := 0
	for i := 0; i < 8; i++ {
		if _, err := c.GetJoinedGroupList(ctx); err != nil {
			mustCode(t, err, protocol.ErrRateLimited)
			limited++
		}
	}
	if limited < 2 {
		t.Fatalf("only %d of 8 instant requests were limited at burst 5", limited)
	}
	time.Sleep(450 * time.Millisecond) // two tokens come back at 5/s
	if _, err := c.GetJoinedGroupList(ctx); err != nil {
		t.Fatalf("after the rate recovered: %v", err)
	}
}

func TestRepeatedRequestIDIsPerformedOnce(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	args := json.RawMessage(`{"invitee":"bob","data":"once"}`)
	r1, err := a.DoRaw(ctx, "same-id", "invite", args)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.DoRaw(ctx, "same-id", "invite", args)
	if err != nil {
		t.Fatal(err)
	}
	if string(r1) != string(r2) {
		t.Fatalf("replies differ: %s vs %s", r1, r2)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.ExpectNoEvent(ctx, 200*time.Millisecond, protocol.EvReceiveNewInvitation); err != nil {
		t.Fatalf("the repeated request rang again: %v", err)
	}
	// A different id performs it again.
	if _, err := a.DoRaw(ctx, "other-id", "invite", args); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSlowReaderIsDropped: a client that never reads is disconnected when
// its queue fills; the others keep being served.
func TestSlowReaderIsDropped(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.SendQueue = 4
		ts.sigCfg.Limits.MaxDataBytes = 60000
		ts.sigCfg.Limits.MaxPendingPerInviter = 0 // the flood's invitations stay live
		ts.webCfg.RequestsPerSec = 10000
		ts.webCfg.RequestBurst = 10000
	})
	ctx := testCtx(t)
	// A raw socket that never reads, with tiny buffers so TCP fills fast.
	d := websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 256}
	h := http.Header{"Authorization": {"Bearer " + ts.token("slow")}}
	slow, _, err := d.Dial(ts.wsURL(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	waitAttached(t, ts.engine, "slow") // the upgrade completes before the engine knows the session
	alice, bob := ts.dial("alice"), ts.dial("bob")
	big := strings.Repeat("z", 60000)
	deadline := time.Now().Add(15 * time.Second)
	for ts.engine.Online("slow") > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow reader was never disconnected")
		}
		if _, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "slow", Data: big, OnlineUserOnly: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Others unaffected.
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id)); err != nil {
		t.Fatal(err)
	}
}

// TestDeadPeerDetected: a client that stops answering pings is dropped
// after the pong timeout.
func TestDeadPeerDetected(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = 50 * time.Millisecond
		ts.webCfg.PongTimeout = 300 * time.Millisecond
	})
	h := http.Header{"Authorization": {"Bearer " + ts.token("ghost")}}
	ghost, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	// A live client that reads (and so answers pings) stays.
	live := ts.dial("live")
	waitAttached(t, ts.engine, "ghost") // the upgrade completes before the engine knows the session
	start := time.Now()
	for ts.engine.Online("ghost") > 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("dead peer not detected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("dropped after %v, before the pong timeout", el)
	}
	if _, err := live.GetJoinedGroupList(testCtx(t)); err != nil {
		t.Fatalf("live client dropped too: %v", err)
	}
}

// TestFirstPingsSpread: connections made together do not ping together.
// Each one's first ping comes at a random point of its first ping_interval
// (never later), so the pings of a crowd that reconnects at once (after a
// restart) are spread over the interval instead of landing in one burst
// every ping_interval.
func TestFirstPingsSpread(t *testing.T) {
	const interval = 400 * time.Millisecond
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = interval
		ts.webCfg.PongTimeout = 10 * time.Second
	})
	const n = 30
	firsts := make(chan time.Duration, n) // each connection's first ping, after its own dial
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		h := http.Header{"Authorization": {"Bearer " + ts.token(fmt.Sprintf("crowd%02d", i))}}
		dialed := time.Now()
		ws, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), h)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		var once sync.Once
		ws.SetPingHandler(func(string) error {
			once.Do(func() { firsts <- time.Since(dialed) })
			return nil
		})
		wg.Go(func() {
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return // closed at the end
				}
			}
		})
	}
	var got []time.Duration
	deadline := time.After(interval + 2*time.Second)
	for len(got) < n {
		select {
		case d := <-firsts:
			got = append(got, d)
		case <-deadline:
			t.Fatalf("%d of %d connections pinged within %v", len(got), n, interval+2*time.Second)
		}
	}
	slices.Sort(got)
	t.Logf("first pings %v to %v after their dials (ping_interval %v)", got[0], got[n-1], interval)
	// All within the first interval (a loaded machine may fire a timer
	// late) ...
	if got[n-1] > interval+time.Second {
		t.Errorf("a first ping came %v after its dial: later than ping_interval %v", got[n-1], interval)
	}
	// ... and spread over it: 30 uniform draws span less than half the
	// interval with probability 30/2^29.
	if spread := got[n-1] - got[0]; spread < interval/2 {
		t.Errorf("the first pings of %d connections made together came within %v of each other (ping_interval %v): not spread", n, spread, interval)
	}
}

// TestIdleDeadlineFollowsLastMessage: a connection is closed pong_timeout
// after the client's last message, not sooner (the read deadline is moved
// lazily: see readLoop), and not much later. The client sends requests for
// most of the timeout, then nothing, and answers no ping.
func TestIdleDeadlineFollowsLastMessage(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = 50 * time.Millisecond
		ts.webCfg.PongTimeout = 640 * time.Millisecond
	})
	h := http.Header{"Authorization": {"Bearer " + ts.token("quiet")}}
	ws, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	waitAttached(t, ts.engine, "quiet")
	var last time.Time
	for i := range 25 {
		frame := fmt.Sprintf(`{"id":"%d","op":"getJoinedGroupList"}`, i)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		last = time.Now()
		time.Sleep(20 * time.Millisecond) // paces the requests (under the rate limit)
	}
	for ts.engine.Online("quiet") > 0 {
		if time.Since(last) > 5*time.Second {
			t.Fatal("idle connection not closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(last)
	if el < ts.webCfg.PongTimeout {
		t.Fatalf("closed %v after the last message, before the pong timeout (%v)", el, ts.webCfg.PongTimeout)
	}
	if el > ts.webCfg.PongTimeout+time.Second {
		t.Fatalf("closed %v after the last message, the pong timeout is %v", el, ts.webCfg.PongTimeout)
	}
	t.Logf("closed %v after the last message (pong timeout %v)", el, ts.webCfg.PongTimeout)
}

func TestTimeoutFiresOnServerClock(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	a := ts.dial("alice")
	sent := time.Now()
	id, err := a.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Timeout: ptr(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitEvent(ctx, protocol.EvInvitationTimeout, byInvite(id)); err != nil {
		t.Fatal(err)
	}
	el := time.Since(sent)
	t.Logf("a 1 s invitation timed out %v after the invite was sent", el)
	if el < time.Second || el > 1100*time.Millisecond+50*time.Millisecond {
		// 100 ms is the bound; the rest is loopback and scheduling slack under -race.
		t.Fatalf("timeout arrived %v after the invite, want 1 s (+100 ms)", el)
	}
}

func TestRestartKeepsStoredInvitations(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	a := ts.dial("alice")
	if _, err := a.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "g", Name: "G", MemberList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	id, err := a.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Data: "d", Timeout: ptr(60)})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	ts.restart()
	b := ts.dial("bob")
	ev, err := b.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id))
	if err != nil {
		t.Fatal(err)
	}
	if inv := invitationOf(t, ev); inv.Data != "d" || inv.Timeout > 60 || inv.Timeout < 55 {
		t.Fatalf("after restart: %+v", inv)
	}
	if err := b.Accept(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	groups, err := b.GetJoinedGroupList(ctx)
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups after restart: %v %v", groups, err)
	}
	// alice was offline: she gets the acceptance when she connects.
	a2 := ts.dial("alice")
	if _, err := a2.WaitEvent(ctx, protocol.EvInviteeAccepted, byInvite(id)); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentAnswersOverWebSocket: many devices race to answer many
// invitations; each invitation has exactly one winner.
func TestConcurrentAnswersOverWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	a := ts.dial("alice")
	devices := []*client.Client{ts.dial("bob"), ts.dial("bob"), ts.dial("bob"), ts.dial("bob")}
	for round := 0; round < 30; round++ {
		id, err := a.Invite(ctx, protocol.InviteArgs{Invitee: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i, d := range devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if i%2 == 0 {
					err = d.Accept(ctx, id, "")
				} else {
					err = d.Reject(ctx, id, "")
				}
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, protocol.ErrInvalidInviteID) {
					t.Errorf("unexpected %v", err)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Cancel(ctx, id, ""); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
		wg.Wait()
		if wins != 1 {
			t.Fatalf("round %d: %d winners", round, wins)
		}
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial("alice")
	ts.stop()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed")
	}
	if got := client.CloseCode(c.Err()); got != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", got)
	}
}

func TestTokenExpiryClosesConnection(t *testing.T) {
	ts := newTestServer(t, nil)
	tok, _, _ := ts.auth.Issue("alice", "", 1500*time.Millisecond)
	c, err := client.Dial(testCtx(t), ts.wsURL(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not closed at expiry")
	}
	if got := client.CloseCode(c.Err()); got != web.CloseTokenExpired {
		t.Fatalf("close code %d, want %d", got, web.CloseTokenExpired)
	}
}

func TestConnectionsPerUser(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.sigCfg.Limits.ConnectionsPerUser = 2; ts.webCfg.MaxConnsPerUser = 2 })
	ts.dial("alice")
	ts.dial("alice")
	_, err := client.Dial(testCtx(t), ts.wsURL(), ts.token("alice"))
	var de *client.DialError
	if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Fatalf("third connection: %v", err)
	}
	ts.dial("bob") // others unaffected
}

// TestConnectionsPerUserRace: connections racing for a user's last places
// are decided before the upgrade, so exactly the limit get through and
// every other one gets 429 (none is upgraded and then closed).
func TestConnectionsPerUserRace(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.sigCfg.Limits.ConnectionsPerUser = 2; ts.webCfg.MaxConnsPerUser = 2 })
	const n = 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []*client.Client
	refused := 0
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(testCtx(t), ts.wsURL(), ts.token("carol"))
			mu.Lock()
			defer mu.Unlock()
			var de *client.DialError
			switch {
			case err == nil:
				ok = append(ok, c)
			case errors.As(err, &de) && de.Status == http.StatusTooManyRequests:
				refused++
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, c := range ok {
		// A connection the engine refused after the upgrade would be
		// closed now: a round trip proves each one is alive.
		if _, err := c.GetJoinedGroupList(testCtx(t)); err != nil {
			t.Errorf("an admitted connection is not usable: %v", err)
		}
		c.Close()
	}
	if len(ok) != 2 || refused != n-2 {
		t.Fatalf("%d connections admitted and %d refused with 429, want 2 and %d", len(ok), refused, n-2)
	}
}

// waitAttached waits, at most 5 s, until the engine has a connection of
// user.
func waitAttached(t *testing.T, e *signaling.Engine, user string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); e.Online(user) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s's connection never reached the engine", user)
		}
	}
}
