package web_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/web"
)

// hardened is a server behind web's own http.Server and listener (as the
// binary runs it), on loopback.
type hardened struct {
	addr string
	srv  *web.Server
	auth *web.Authenticator
}

func startHardened(t *testing.T, cfg web.Config) *hardened {
	t.Helper()
	auth, err := web.NewAuthenticator(web.AuthConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := signaling.NewEngine(context.Background(), signaling.Params{Config: signaling.DefaultConfig(), Store: signaling.NewMemoryStore(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := web.New(web.Params{Config: cfg, Auth: auth, Engine: engine, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if hs.Shutdown(ctx) != nil {
			_ = hs.Close()
		}
		<-served
		engine.Close()
	})
	return &hardened{addr: ln.Addr().String(), srv: srv, auth: auth}
}

// get sends GET path on c and returns the status, or an error.
func get(c net.Conn, br *bufio.Reader, path string) (int, error) {
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		return 0, err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// waitClosed waits until the server closes c (EOF or reset) or within.
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(within))
	_, err := br.ReadByte()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("the server did not close the connection within %v (%v)", within, err)
	}
	return time.Since(start)
}

// TestIdleSocketsAreCappedAndClosed is issue #11 item 4 in-process: idle
// keep-alive sockets fill server.max_connections; one more connection is
// answered 503 at once, not left hanging; the idle ones are closed after
// server.idle_timeout, and /healthz answers 200 again.
func TestIdleSocketsAreCappedAndClosed(t *testing.T) {
	cfg := web.DefaultConfig()
	cfg.MaxConnections, cfg.IdleTimeout = 8, 500*time.Millisecond
	h := startHardened(t, cfg)

	type sock struct {
		c  net.Conn
		br *bufio.Reader
	}
	var idle []sock
	for range cfg.MaxConnections {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if code, err := get(c, br, "/healthz"); err != nil || code != 200 {
			t.Fatalf("idle socket's request: %d %v", code, err)
		}
		idle = append(idle, sock{c, br})
	}
	// The cap is reached: the next connection gets 503 at once.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(5 * time.Second))
	code, err := get(c, bufio.NewReader(c), "/healthz")
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("past the cap: %d %v, want 503", code, err)
	}
	t.Logf("past the cap: 503 after %v", time.Since(start))

	for i, s := range idle {
		if d := waitClosed(t, s.c, s.br, cfg.IdleTimeout+3*time.Second); i == 0 {
			t.Logf("first idle socket closed %v after the wait began (idle timeout %v)", d, cfg.IdleTimeout)
		}
	}
	// The slots are free again (the server's Close may trail the client's
	// EOF by a moment).
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := hc.Get("http://" + h.addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz after the idle sockets closed: %v %v", res, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBodyThatNeverArrivesIsDropped: a request announcing a body that
// never comes is cut after server.read_timeout.
func TestBodyThatNeverArrivesIsDropped(t *testing.T) {
	cfg := web.DefaultConfig()
	cfg.ReadTimeout = 300 * time.Millisecond
	h := startHardened(t, cfg)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := time.Now()
	if _, err := io.WriteString(c, "POST /api/dev/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	// The server may answer (405/404) before it gives up on the body; then
	// it must close the connection rather than wait for the body forever.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if res, err := http.ReadResponse(br, nil); err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	waitClosed(t, c, br, 5*time.Second)
	t.Logf("a request whose body never arrives is closed %v after it was sent (read timeout %v)", time.Since(sent), cfg.ReadTimeout)
}

// TestWebSocketOutlivesReadTimeout: the read and idle timeouts do not
// apply to an upgraded WebSocket, which lives by its ping/pong rule.
func TestWebSocketOutlivesReadTimeout(t *testing.T) {
	cfg := web.DefaultConfig()
	cfg.ReadTimeout, cfg.IdleTimeout, cfg.ReadHeaderTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	cfg.PingInterval, cfg.PongTimeout = 100*time.Millisecond, time.Second
	h := startHardened(t, cfg)
	ctx := testCtx(t)
	tok, _, err := h.auth.Issue("alice", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, "ws://"+h.addr+"/ws", tok, client.WithPingInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lifetime := 10 * cfg.ReadTimeout
	select {
	case <-c.Done():
		t.Fatalf("the WebSocket was closed: %v", c.Err())
	case <-time.After(lifetime):
	}
	if _, err := c.GetJoinedGroupList(ctx); err != nil {
		t.Fatalf("a request after %v (read timeout %v): %v", lifetime, cfg.ReadTimeout, err)
	}
}
