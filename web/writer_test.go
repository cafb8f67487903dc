package web_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// countingListener counts the writes to each connection it accepts.
type countingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*countingConn
}

type countingConn struct {
	net.Conn
	writes    atomic.Int64
	deadlines atomic.Int64 // write deadlines set
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (l *countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: nc}
	l.mu.Lock()
	l.conns = append(l.conns, cc)
	l.mu.Unlock()
	return cc, nil
}

func (l *countingListener) all() []*countingConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*countingConn(nil), l.conns...)
}

// TestFramesWrittenTogetherInOneWrite (issue 16): frames the writer has at
// hand together (here the replay of pending invitations, 32 at a time) go
// to the socket in one write, not one write per frame.
func TestFramesWrittenTogetherInOneWrite(t *testing.T) {
	const pending = 64
	ts := newTestServer(t, func(ts *testServer) { allowPendingInvitations(&ts.sigCfg, pending) })
	ctx := testCtx(t)
	zero := 0
	for i := range pending {
		if _, err := ts.engine.Invite(ctx, protocol.Actor{UserID: "mallory"},
			protocol.InviteArgs{Invitee: "ceo", Data: strings.Repeat("x", 100), Timeout: &zero}); err != nil {
			t.Fatalf("invitation %d: %v", i, err)
		}
	}
	hs := httptest.NewUnstartedServer(ts.srv.Handler())
	ln := &countingListener{Listener: hs.Listener}
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)

	ceo, err := client.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", ts.token("ceo"))
	if err != nil {
		t.Fatal(err)
	}
	defer ceo.Close()
	for got := 0; got < pending; got++ {
		if _, err := ceo.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
			t.Fatalf("got %d of %d invitations, then %v", got, pending, err)
		}
	}
	conns := ln.all()
	if len(conns) != 1 {
		t.Fatalf("%d connections accepted, want 1", len(conns))
	}
	// The handshake's response, then the replay's two batches.
	if n := conns[0].writes.Load(); n > 1+pending/32 {
		t.Fatalf("%d frames took %d writes to the socket (handshake included), want at most %d", pending, n, 1+pending/32)
	} else {
		t.Logf("%d frames in %d writes (handshake included)", pending, n)
	}
	// One write deadline per write to the socket, not one per frame (and
	// the two of the handshake: set, then cleared).
	if d := conns[0].deadlines.Load(); d > 2+pending/32 {
		t.Fatalf("%d frames in %d writes set %d write deadlines, want at most %d", pending, conns[0].writes.Load(), d, 2+pending/32)
	}
}

// TestIdleConnectionHoldsNoWriter (issue 16): an idle connection costs the
// server one goroutine (its reader); a writer runs only while there is
// something to write, and the ping timer starts one when a ping is due.
func TestIdleConnectionHoldsNoWriter(t *testing.T) {
	const idle = 20
	ts := newTestServer(t, func(ts *testServer) {
		// Pings start writers: none during the count.
		ts.webCfg.PingInterval = time.Hour
	})
	settle := func(want func(int) bool) int {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if want(n) || time.Now().After(deadline) {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A connection that came and went, so that whatever the server starts
	// once (the observers' queue, ...) runs already.
	_ = ts.dial("warmup").Close()
	for ts.engine.Online("warmup") > 0 {
		time.Sleep(time.Millisecond)
	}
	base := runtime.NumGoroutine()
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range idle {
		user := "idle" + string(rune('a'+i))
		c, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token(user)}})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		waitAttached(t, ts.engine, user)
	}
	// The raw clients start no goroutine; each server connection keeps its
	// reader, and its writers end once they have written what there was.
	n := settle(func(n int) bool { return n-base <= idle })
	if n-base > idle {
		t.Fatalf("%d idle connections hold %d goroutines, want at most one each", idle, n-base)
	}
	t.Logf("%d idle connections hold %d goroutines", idle, n-base)
}

// TestRequesterThatDoesNotReadIsClosed: a client that floods requests and
// never reads their replies is disconnected (its replies fill the send
// queue: 4002), and the others keep being served. A guard for any change
// to who writes the replies (issue 16 tried the reader writing them).
func TestRequesterThatDoesNotReadIsClosed(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.WriteTimeout = 300 * time.Millisecond
		ts.webCfg.RequestsPerSec = 100000
		ts.webCfg.RequestBurst = 100000
	})
	ctx := testCtx(t)
	// A raw socket with a small receive buffer that never reads.
	d := websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 64 << 10, NetDialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return errors.Join(err, serr)
		},
	}).DialContext}
	flood, _, err := d.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token("flood")}})
	if err != nil {
		t.Fatal(err)
	}
	waitAttached(t, ts.engine, "flood")
	// Each reply echoes the 30,000-byte op name (unknown_op).
	op := strings.Repeat("x", 30000)
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 5000 {
			select {
			case <-stop:
				return
			default:
			}
			// No write deadline: a server that stops reading for a while
			// (its reader blocked writing a reply, or not scheduled on a
			// loaded machine) blocks the flood until it reads again or
			// closes the connection. The flood ended at the first 200 ms
			// stall once, before enough replies were due to fill the
			// queue: the server then had no reason to disconnect it.
			if err := flood.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":"r%d","op":%q}`, i, op)); err != nil {
				return // the server closed the connection (or the test did)
			}
			sent.Add(1)
		}
	})
	defer func() { close(stop); _ = flood.Close(); wg.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for ts.engine.Online("flood") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the client that does not read was never disconnected (%d requests sent)", sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("disconnected after %d requests", sent.Load())
	// Others unaffected.
	alice, bob := ts.dial("alice"), ts.dial("bob")
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id)); err != nil {
		t.Fatal(err)
	}
}
