package web_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
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
// to who writes the replies (the reader writes them when nothing waits:
// never waiting for the socket).
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

// TestReaderWritesReplies (issue 16): a reply that has nothing queued
// before it is written by the connection's reader, not by a writer
// goroutine started for it: a client's requests one after the other start
// no writer (the server started one per reply before).
func TestReaderWritesReplies(t *testing.T) {
	const requests = 200
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = time.Hour
		ts.webCfg.RequestsPerSec, ts.webCfg.RequestBurst = 1e6, 1e6
	})
	c, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token("alice")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitAttached(t, ts.engine, "alice")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	roundTrip := func(i int) {
		id := fmt.Sprintf("r%d", i)
		if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%q,"op":"getJoinedGroupList"}`, id)); err != nil {
			t.Fatal(err)
		}
		var reply struct {
			ID    string          `json:"id"`
			Error json.RawMessage `json:"error"`
		}
		if err := c.ReadJSON(&reply); err != nil {
			t.Fatal(err)
		}
		if reply.ID != id || reply.Error != nil {
			t.Fatalf("reply %+v; want %s, no error", reply, id)
		}
	}
	roundTrip(0)
	before := web.WritersStarted(ts.srv)
	for i := 1; i <= requests; i++ {
		roundTrip(i)
	}
	if n := web.WritersStarted(ts.srv) - before; n > requests/10 {
		t.Fatalf("%d requests and their replies started %d writer goroutines; want (almost) none", requests, n)
	} else {
		t.Logf("%d requests and their replies started %d writer goroutines", requests, n)
	}
}

// TestReplyCutShortIsFinishedFirst (issue 16): when the socket takes only
// part of a reply the reader writes (a client that does not read), a
// writer writes the rest, and the frames queued meanwhile come after it,
// whole and in order, once the client reads.
func TestReplyCutShortIsFinishedFirst(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = time.Hour
		ts.webCfg.MaxFrameBytes = 4*int64(maxSendBuffer(t)) + 1024
	})
	// A receive buffer of 4 KiB, not read until the end.
	d := websocket.Dialer{ReadBufferSize: 1024, NetDialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return errors.Join(err, serr)
		},
	}).DialContext}
	c, _, err := d.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token("alice")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitAttached(t, ts.engine, "alice")
	// The unknown_op reply echoes the op's name: twice what the server's
	// send buffer may grow to (net.ipv4.tcp_wmem's maximum).
	op := strings.Repeat("x", 2*maxSendBuffer(t))
	if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":"big","op":%q}`, op)); err != nil {
		t.Fatal(err)
	}
	// The reader wrote what the socket took and a writer waits to write
	// the rest.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(goroutineStacks(), "(*conn).writeRest") {
		if time.Now().After(deadline) {
			t.Fatal("no writer is writing the rest of the reply cut short")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Queued behind it: a reply and an event.
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":"small","op":"getJoinedGroupList"}`)); err != nil {
		t.Fatal(err)
	}
	bob := ts.dial("bob")
	if _, err := bob.Invite(testCtx(t), protocol.InviteArgs{Invitee: "alice"}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []string
	for len(got) < 3 {
		var f struct {
			ID    string `json:"id"`
			Event string `json:"event"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if f.ID == "big" && (f.Error == nil || !strings.Contains(f.Error.Message, op)) {
			t.Fatal("the reply cut short did not arrive whole")
		}
		got = append(got, f.ID+f.Event)
	}
	if want := []string{"big", "small", protocol.EvReceiveNewInvitation}; !slices.Equal(got, want) {
		t.Fatalf("frames %q; want %q", got, want)
	}
}

// goroutineStacks returns the stacks of every goroutine.
func goroutineStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// maxSendBuffer is the largest a TCP socket's send buffer grows to:
// net.ipv4.tcp_wmem's maximum (4 MiB when it cannot be read).
func maxSendBuffer(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		return 4 << 20
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil || n <= 0 {
		t.Fatalf("net.ipv4.tcp_wmem is %q", b)
	}
	return n
}

// TestReplyAfterWriteTimeoutPassed (issue 16): the write deadline a writer
// set for its last write has passed by the time the reader writes a reply
// (the connection was quiet for longer than write_timeout): the reply goes
// out all the same.
func TestReplyAfterWriteTimeoutPassed(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = time.Hour
		ts.webCfg.WriteTimeout = 50 * time.Millisecond
	})
	ctx := testCtx(t)
	alice, bob := ts.dial("alice"), ts.dial("bob")
	// An event: a writer writes it, with a write deadline 50 ms later.
	id, err := bob.Invite(ctx, protocol.InviteArgs{Invitee: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := alice.Reject(ctx, id, ""); err != nil {
		t.Fatalf("the reply after a quiet spell longer than write_timeout: %v", err)
	}
	if n := ts.engine.Online("alice"); n != 1 {
		t.Fatalf("alice has %d connections; want 1", n)
	}
}

// TestOperationEventsStartNoWriter (issue 16): the events an operation
// delivers are written by the goroutine that performed it, once the engine
// has released its lock (signaling.KickConn), and the replies by the
// reader, not by a writer goroutine started for each: call setups between
// two clients that read start no writer (four per setup before: two
// replies, the ring and onInviteeAccepted).
func TestOperationEventsStartNoWriter(t *testing.T) {
	const setups = 100
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = time.Hour
		ts.webCfg.RequestsPerSec, ts.webCfg.RequestBurst = 1e6, 1e6
	})
	dial := func(user string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token(user)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		waitAttached(t, ts.engine, user)
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		return c
	}
	caller, callee := dial("caller"), dial("callee")
	type frame struct {
		ID    string `json:"id"`
		Event string `json:"event"`
		Data  struct {
			InviteID string `json:"inviteID"`
		} `json:"data"`
		Error json.RawMessage `json:"error"`
	}
	read := func(c *websocket.Conn) frame {
		var f frame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatal(err)
		}
		if f.Error != nil {
			t.Fatalf("error reply %s", f.Error)
		}
		return f
	}
	setup := func(i int) {
		if err := caller.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":"i%d","op":"invite","args":{"invitee":"callee"}}`, i)); err != nil {
			t.Fatal(err)
		}
		if f := read(caller); f.ID != fmt.Sprintf("i%d", i) {
			t.Fatalf("caller got %+v; want the invite's reply", f)
		}
		ring := read(callee)
		if ring.Event != protocol.EvReceiveNewInvitation {
			t.Fatalf("callee got %+v; want the ring", ring)
		}
		if err := callee.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":"a%d","op":"accept","args":{"inviteID":%q}}`, i, ring.Data.InviteID)); err != nil {
			t.Fatal(err)
		}
		if f := read(callee); f.ID != fmt.Sprintf("a%d", i) {
			t.Fatalf("callee got %+v; want the accept's reply", f)
		}
		if f := read(caller); f.Event != protocol.EvInviteeAccepted {
			t.Fatalf("caller got %+v; want onInviteeAccepted", f)
		}
	}
	setup(0)
	before := web.WritersStarted(ts.srv)
	for i := 1; i <= setups; i++ {
		setup(i)
	}
	if n := web.WritersStarted(ts.srv) - before; n > setups/10 {
		t.Fatalf("%d call setups started %d writer goroutines; want (almost) none", setups, n)
	} else {
		t.Logf("%d call setups started %d writer goroutines", setups, n)
	}
}

// TestEventRecipientThatDoesNotReadIsClosed: a user who never reads the
// events others' operations send them is disconnected once their queue is
// full (4002), and the operations that send them (whose goroutines try
// the recipient's socket, signaling.KickConn) are never held up by it.
func TestEventRecipientThatDoesNotReadIsClosed(t *testing.T) {
	// A sender that waited for the recipient's socket would wait this long.
	const writeTimeout = 2 * time.Second
	ts := newTestServer(t, func(ts *testServer) {
		ts.webCfg.PingInterval = time.Hour
		ts.webCfg.WriteTimeout = writeTimeout
		ts.webCfg.RequestsPerSec, ts.webCfg.RequestBurst = 1e6, 1e6
	})
	ctx := testCtx(t)
	d := websocket.Dialer{ReadBufferSize: 256, NetDialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return errors.Join(err, serr)
		},
	}).DialContext}
	deaf, _, err := d.Dial(ts.wsURL(), http.Header{"Authorization": {"Bearer " + ts.token("deaf")}})
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.Close()
	waitAttached(t, ts.engine, "deaf")
	bob := ts.dial("bob")
	data := strings.Repeat("d", 8000)
	deadline := time.Now().Add(30 * time.Second)
	slowest, n := time.Duration(0), 0
	for ts.engine.Online("deaf") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the user who does not read was never disconnected (%d invitations)", n)
		}
		start := time.Now()
		id, err := bob.Invite(ctx, protocol.InviteArgs{Invitee: "deaf", Data: data})
		if err == nil {
			err = bob.Cancel(ctx, id, "")
		}
		if err != nil {
			t.Fatalf("invitation %d: %v", n, err)
		}
		slowest = max(slowest, time.Since(start))
		n++
	}
	t.Logf("disconnected after %d invitations of 8 kB; slowest invite and cancel %v", n, slowest)
	if slowest >= writeTimeout*3/4 {
		t.Fatalf("an invite and cancel took %v: the sender waited for the recipient's socket", slowest)
	}
}
