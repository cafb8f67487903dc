package web_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

var noKeepAlive = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// fetch GETs url with extra headers (Host sets the request's Host) and
// returns the status and body.
func fetch(t *testing.T, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := noKeepAlive.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(body)
}

// TestDevModeRefusesForeignHost is issue #11 item 5 (DNS rebinding): a
// page at evil.example whose name resolves to 127.0.0.1 sends Host and
// Origin evil.example. In dev mode the server answers such requests to
// /api/dev/token and /ws with 421; loopback hosts and the hosts of
// server.allowed_origins are served.
func TestDevModeRefusesForeignHost(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.webCfg.AllowedOrigins = []string{"https://app.example.com"} })
	port := ts.http.URL[strings.LastIndex(ts.http.URL, ":"):]
	evil := map[string]string{"Host": "evil.example" + port, "Origin": "http://evil.example" + port}
	if code, _, body := fetch(t, ts.http.URL+"/api/dev/token?user=alice", evil); code != http.StatusMisdirectedRequest || strings.Contains(body, "token") && !strings.Contains(body, "Host") {
		t.Fatalf("dev token for a foreign Host: %d %s", code, body)
	}
	tok := ts.token("alice")
	if code, _, body := fetch(t, ts.http.URL+"/ws?token="+tok, map[string]string{"Host": evil["Host"], "Origin": evil["Origin"],
		"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}); code != http.StatusMisdirectedRequest {
		t.Fatalf("/ws for a foreign Host: %d %s", code, body)
	}
	for _, host := range []string{"127.0.0.1" + port, "localhost" + port, "[::1]" + port, "app.example.com"} {
		if code, _, body := fetch(t, ts.http.URL+"/api/dev/token?user=alice", map[string]string{"Host": host}); code != 200 {
			t.Errorf("dev token for Host %s: %d %s", host, code, body)
		}
	}
	// Outside dev mode there is no token to steal: the Host is not checked.
	prod := newTestServer(t, func(ts *testServer) { ts.dev = false })
	if code, _, body := fetch(t, prod.http.URL+"/healthz", evil); code != 200 {
		t.Fatalf("production healthz for another Host: %d %s", code, body)
	}
}

// TestBearerSchemeIsCaseInsensitive: RFC 7235 auth schemes are
// case-insensitive.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		h := http.Header{"Authorization": {scheme + " " + ts.token("alice")}}
		d := client.WithHeader(h)
		c, err := client.Dial(testCtx(t), ts.wsURL(), "", d)
		if err != nil {
			t.Errorf("Authorization: %s <token>: %v", scheme, err)
			continue
		}
		c.Close()
	}
}

// TestOriginSchemeMustMatch: without server.allowed_origins, only the
// server's own origin is allowed, scheme included: http://host must not
// pass for an https server, nor https://host for an http one.
func TestOriginSchemeMustMatch(t *testing.T) {
	ts := newTestServer(t, nil)
	host := strings.TrimPrefix(ts.http.URL, "http://")
	dial := func(origin string, extra http.Header) int {
		h := http.Header{"Origin": {origin}}
		for k, v := range extra {
			h[k] = v
		}
		return ts.dialStatus(t, h)
	}
	if got := dial("http://"+host, nil); got != 101 {
		t.Fatalf("same origin: %d", got)
	}
	if got := dial("https://"+host, nil); got != http.StatusForbidden {
		t.Fatalf("https origin on an http server: %d, want 403", got)
	}
	// Behind a TLS-terminating proxy that says so, the server is https.
	https := http.Header{"X-Forwarded-Proto": {"https"}}
	if got := dial("https://"+host, https); got != 101 {
		t.Fatalf("https origin behind an https proxy: %d", got)
	}
	if got := dial("http://"+host, https); got != http.StatusForbidden {
		t.Fatalf("http origin on an https server: %d, want 403", got)
	}
}

// TestSecurityHeaders: the demo and SDK pages carry a Content-Security-
// Policy without inline script, and every response the anti-framing,
// referrer and nosniff headers.
func TestSecurityHeaders(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, path := range []string{"/", "/sdk/room-test.html", "/demo/app.js", "/sdk/switchboard.js", "/healthz", "/api/dev/token?user=alice"} {
		code, h, _ := fetch(t, ts.http.URL+path, nil)
		if code != 200 {
			t.Errorf("%s: %d", path, code)
			continue
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", path, k, got, want)
			}
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: Content-Security-Policy %q allows inline code", path, csp)
		}
	}
	// No inline script, style or handler is left in the pages (the CSP
	// would block them).
	for _, path := range []string{"/", "/sdk/room-test.html"} {
		_, _, body := fetch(t, ts.http.URL+path, nil)
		low := strings.ToLower(body)
		for _, bad := range []string{"<style", " style=", " onclick=", " onload=", " onerror=", "javascript:"} {
			if strings.Contains(low, bad) {
				t.Errorf("%s contains inline %q", path, bad)
			}
		}
		for rest := low; ; {
			i := strings.Index(rest, "<script")
			if i < 0 {
				break
			}
			end := strings.Index(rest[i:], ">")
			if !strings.Contains(rest[i:i+end], " src=") {
				t.Errorf("%s has an inline script: %s", path, rest[i:i+end+1])
			}
			rest = rest[i+end:]
		}
	}
}

// TestHealthReportsStoreFailure is issue #11 item 5: /healthz said ok while
// every store write failed. It answers 503 once a write has failed, and ok
// again once the store accepts writes (a probe write, when nobody writes).
func TestHealthReportsStoreFailure(t *testing.T) {
	st := signaling.NewMemoryStore()
	s := webtest.Start(t, webtest.Options{Store: st})
	ctx := testCtx(t)
	health := func() (int, string) {
		code, _, body := fetch(t, s.HTTP.URL+"/healthz", nil)
		return code, body
	}
	if code, body := health(); code != 200 {
		t.Fatalf("healthy store: %d %s", code, body)
	}
	a := s.Dial("alice")
	st.FailNext(1000)
	if _, err := a.Invite(ctx, protocol.InviteArgs{Invitee: "bob"}); !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Fatalf("invite with a failing store: %v", err)
	}
	code, body := health()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Fatalf("failing store: healthz %d %q, want 503 naming the store", code, body)
	}
	if code, _ := health(); code != http.StatusServiceUnavailable {
		t.Fatalf("still failing store: healthz %d", code)
	}
	st.FailNext(0) // the store recovers; nobody writes
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := health()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovered store: healthz %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
