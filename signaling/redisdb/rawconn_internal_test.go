package redisdb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// The options' dialer gives raw connections to TCP and Unix sockets, and
// go-redis's own (TLS) connection otherwise.
func TestDialerGivesRawConns(t *testing.T) {
	for _, start := range []func(testing.TB, ...redistest.Option) *redistest.Server{redistest.Start, redistest.StartTCP} {
		s := start(t)
		o, err := Config{Addr: s.ConfigAddr()}.Options()
		if err != nil {
			t.Fatal(err)
		}
		if o.Dialer == nil {
			t.Fatalf("%s: the options have no dialer of ours", s.ConfigAddr())
		}
		c, err := o.Dialer(t.Context(), o.Network, o.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*rawConn); !ok {
			t.Errorf("%s: dialed a %T, want a *rawConn", s.ConfigAddr(), c)
		}
		if _, ok := c.(syscall.Conn); !ok {
			t.Errorf("%s: the conn is no syscall.Conn: go-redis could not check its health", s.ConfigAddr())
		}
		_ = c.Close()
	}
	// TLS: a listener that never answers the handshake; the dialer must not
	// hand back a raw conn (it would bypass TLS) nor hang past the context.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o, err := Config{Addr: ln.Addr().String(), TLS: true}.Options()
	if err != nil {
		t.Fatal(err)
	}
	o.DialTimeout = 200 * time.Millisecond
	if c, err := o.Dialer(t.Context(), o.Network, o.Addr); err == nil {
		_ = c.Close()
		t.Errorf("a TLS dial to a listener that never answers succeeded with a %T", c)
	}
}

// A raw conn reads and writes as net.Conn: more than the socket buffers
// hold in one Write (the EAGAIN wait), io.EOF at the peer's close, the read
// deadline, a Read ended by Close.
func TestRawConnLikeNetConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d, err := rawDialer((&net.Dialer{Timeout: time.Second}).DialContext)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, ok := d.(*rawConn)
	if !ok {
		t.Fatalf("dialed a %T", d)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	_ = r.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, big) {
			t.Fatalf("the peer read %d bytes, not what was written", len(b))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the peer did not read it all")
	}

	if _, err := peer.Write([]byte("+PONG\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.ReadFull(r, buf[:7]); n != 7 || err != nil || string(buf[:7]) != "+PONG\r\n" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}

	_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = r.Read(buf)
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past the deadline: %v, want a read *net.OpError of os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Read past the deadline: %v is not a net.Error timeout", err)
	}

	_ = r.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(buf)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the Read wait in the poller (either order passes)
	_ = r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read ended by Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
}

func TestRawConnEOF(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("bye"))
			_ = c.Close()
		}
	}()
	d, err := rawDialer((&net.Dialer{Timeout: time.Second}).DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_ = d.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(d)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want bye and io.EOF at the end", b, err)
	}
}

// A client of Open works through raw conns, values larger than the socket
// buffers included, and recovers after Redis restarts.
func TestOpenRawConnsWork(t *testing.T) {
	s := redistest.StartTCP(t)
	c, err := Open(t.Context(), Config{Addr: s.ConfigAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := strings.Repeat("x", 3<<20)
	if err := c.Set(t.Context(), "big", v, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(t.Context(), "big").Result(); err != nil || got != v {
		t.Fatalf("GET big: %d bytes, %v", len(got), err)
	}
	s.Kill()
	s.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(t.Context()).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PING answered after the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The pool's peek (peekConn): with nothing to read the callback is not run
// (its own peek would find EAGAIN and leave the check at healthy); with
// data waiting or the peer gone it runs, and finds that.
func TestPeekConnRunsTheCallbackOnlyWhenTheSocketHasSomething(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d, err := rawDialer((&net.Dialer{Timeout: time.Second}).DialContext)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	rc, err := d.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// peek is go-redis's callback (internal/pool.checkSyscallConn).
	peek := func() (ran bool, n int, perr error) {
		err := rc.Read(func(fd uintptr) bool {
			ran = true
			var b [1]byte
			n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		if err != nil {
			t.Fatalf("RawConn.Read: %v", err)
		}
		return ran, n, perr
	}
	if ran, _, _ := peek(); ran {
		t.Error("the callback ran on an empty socket")
	}
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ran, n, perr := peek()
		if ran {
			if n != 1 || perr != nil {
				t.Errorf("the callback's peek with data waiting: %d, %v", n, perr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the callback never ran with data waiting")
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(d, buf); err != nil {
		t.Fatal(err)
	}
	_ = peer.Close()
	for {
		ran, n, perr := peek()
		if ran {
			if n != 0 || perr != nil {
				t.Errorf("the callback's peek after the peer closed: %d, %v; want 0, nil (the end)", n, perr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the callback never ran after the peer closed")
		}
		time.Sleep(time.Millisecond)
	}
}
