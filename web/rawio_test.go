package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/rawio"
)

// tcpPair returns the two ends of a loopback TCP connection: a the
// accepted one, b the dialed one.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	b, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// TestRawIOLikeNetConn checks rawio.IO's Read and Write against what
// net.Conn gives: the bytes (a write larger than the socket buffers, so
// that it waits for the peer to read), the deadlines' errors, io.EOF at
// the peer's close, net.ErrClosed after the local close.
func TestRawIOLikeNetConn(t *testing.T) {
	a, b := tcpPair(t)
	// Through cappedConn, as the server's sockets come.
	r := rawio.New(&cappedConn{Conn: a, l: &capListener{}})
	if r == nil {
		t.Fatal("no raw I/O for a TCP connection")
	}

	// A write far over the socket buffers: it returns only once the peer
	// has read it all.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got := make(chan []byte, 1)
	go func() {
		buf, _ := io.ReadAll(io.LimitReader(b, int64(len(big))))
		got <- buf
	}()
	if n, err := r.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
	}
	select {
	case buf := <-got:
		if !bytes.Equal(buf, big) {
			t.Fatalf("the peer read %d bytes, not what was written", len(buf))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the peer did not read the write")
	}

	// Read: what the peer wrote, in pieces as they come.
	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 16)
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := r.Read(p)
	if err != nil || string(p[:n]) != "hello" {
		t.Fatalf("Read = %q, %v; want hello", p[:n], err)
	}

	// A read deadline that passes: a timeout, as net.Conn reports it.
	_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = r.Read(p)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline = %v; want a timeout (os.ErrDeadlineExceeded)", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past its deadline = %#v; want a *net.OpError of read", err)
	}
	_ = a.SetReadDeadline(time.Time{})

	// A write to a peer that does not read: the write deadline ends it
	// (small socket buffers, so that it fills them).
	_ = a.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = b.(*net.TCPConn).SetReadBuffer(16 << 10)
	_ = a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err = r.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n >= len(big) {
		t.Fatalf("Write to a peer that does not read = %d, %v; want fewer bytes and a timeout", n, err)
	}
	_ = a.SetWriteDeadline(time.Time{})

	// Closed here: net.ErrClosed.
	_ = a.Close()
	if _, err := r.Read(p); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v; want net.ErrClosed", err)
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
}

// TestRawIOEndOfStream: io.EOF once what the peer sent before its close
// is read.
func TestRawIOEndOfStream(t *testing.T) {
	a, b := tcpPair(t)
	r := rawio.New(a)
	if _, err := b.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	p := make([]byte, 16)
	if n, err := r.Read(p); err != nil || string(p[:n]) != "bye" {
		t.Fatalf("Read = %q, %v; want bye", p[:n], err)
	}
	if _, err := r.Read(p); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the peer's close = %v; want io.EOF", err)
	}
}

// TestRawIOOnlyForSockets: a connection without a file descriptor (a
// pipe, TLS) keeps its own Read and Write.
func TestRawIOOnlyForSockets(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if r := rawio.New(p1); r != nil {
		t.Fatal("raw I/O for a pipe")
	}
	if r := rawio.New(&cappedConn{Conn: p1, l: &capListener{}}); r != nil {
		t.Fatal("raw I/O for a pipe behind cappedConn")
	}
}

// TestBlockedRawReadEndsAtClose: a Read waiting for data (the connection's
// reader) returns when another goroutine closes the socket (the writer's
// close), as with net.Conn.
func TestBlockedRawReadEndsAtClose(t *testing.T) {
	a, _ := tcpPair(t)
	r := rawio.New(a)
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 8))
		errc <- err
	}()
	_ = a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Read at Close = %v; want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked Read did not end at Close")
	}
}

// TestServerSocketsGoRaw: the WebSocket connections of a real server, on
// the server's own listener (capListener, cappedConn), read and write
// their socket through rawio.IO, and a request and its reply get through.
func TestServerSocketsGoRaw(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	auth, err := NewAuthenticator(AuthConfig{Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := signaling.NewEngine(context.Background(), signaling.Params{
		Config: signaling.DefaultConfig(), Store: signaling.NewMemoryStore(), Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	srv, err := New(Params{Config: DefaultConfig(), Auth: auth, Engine: engine, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = hs.Shutdown(ctx)
		<-served
	}()

	tok, _, err := auth.Issue("alice", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"1","op":"getJoinedGroupList"}`)); err != nil {
		t.Fatal(err)
	}
	_, reply, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(reply, []byte(`"id":"1"`)) || bytes.Contains(reply, []byte(`"error"`)) {
		t.Fatalf("reply %s", reply)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.conns) != 1 {
		t.Fatalf("%d connections served, want 1", len(srv.conns))
	}
	for c := range srv.conns {
		if c.out.raw == nil {
			t.Fatal("the server's connection reads and writes through net.Conn, not rawio.IO")
		}
	}
}

// TestRawIOTryWrite: TryWrite writes what the socket takes now and returns
// without waiting for the rest (a peer that does not read), with no error;
// the peer then reads exactly the bytes taken. A deadline that has passed
// fails it at once, as it does Write.
func TestRawIOTryWrite(t *testing.T) {
	a, b := tcpPair(t)
	r := rawio.New(a)
	_ = a.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = b.(*net.TCPConn).SetReadBuffer(16 << 10)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan struct{})
	var n int
	var err error
	go func() {
		defer close(done)
		n, err = r.TryWrite(big)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite waited for the peer to read")
	}
	if err != nil || n <= 0 || n >= len(big) {
		t.Fatalf("TryWrite to a peer that does not read = %d, %v; want part of the %d bytes, nil", n, err, len(big))
	}
	got := make([]byte, n)
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, big[:n]) {
		t.Fatalf("the peer read %v; want the %d bytes taken", err, n)
	}
	_ = a.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := r.TryWrite([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TryWrite past its deadline = %v; want a timeout", err)
	}
}
