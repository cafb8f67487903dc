package redisdb

import (
	"context"
	"net"
	"syscall"
	"unsafe"

	"github.com/switchboard-rtc/switchboard/signaling/rawio"
)

// rawConn is a connection to Redis (TCP or a Unix socket, no TLS) whose
// Read and Write are package rawio's: read(2) and write(2) without the
// scheduler's system-call state, which woke sysmon for a node's round trips
// to Redis (at the bench's max rate its polling was 7 % of a node's CPU;
// signaling/CLUSTER-DESIGN.md, "Session 10").
//
// Everything else is the socket's own (deadlines, addresses, Close, and
// SyscallConn, with which go-redis's pool checks an idle connection's
// health before it hands it out). Errors are what net.Conn reports: io.EOF
// at the end of the stream, otherwise a *net.OpError.
type rawConn struct {
	net.Conn // *net.TCPConn or *net.UnixConn
	rc       syscall.RawConn
	raw      *rawio.IO
}

// rawDialer is dial (go-redis's own dialer for the options) with its
// connections made rawConns where their socket can be reached (not TLS).
func rawDialer(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newRawConn(c), nil
	}
}

// newRawConn is c with raw reads and writes, or c itself when c is not a
// socket whose descriptor can be reached.
func newRawConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	raw := rawio.New(c)
	if raw == nil {
		return c
	}
	return &rawConn{Conn: c, rc: rc, raw: raw}
}

// SyscallConn is what go-redis's pool peeks through to check an idle
// connection's health before it hands it out (peekConn).
func (r *rawConn) SyscallConn() (syscall.RawConn, error) { return peekConn{r.rc}, nil }

// peekConn is the socket's RawConn for go-redis's peeks (its pool's health
// check, and its look for RESP3 push data): each calls Read with a callback
// that makes one non-blocking recvfrom(MSG_PEEK) through the syscall
// package, which enters the scheduler's system-call state and so wakes
// sysmon (see rawConn), once per connection taken from the pool. Read
// makes that peek first with a raw system call: when the socket has
// nothing to read (the answer for a healthy idle connection) the
// callback's own peek would find the same and leave its result as it is,
// so Read returns without calling it; otherwise (data, the end of the
// stream, an error) the callback runs and finds what it finds.
//
// So it is a RawConn only for callbacks that peek without waiting; the
// connection's own reads and writes go through rawConn.
type peekConn struct{ syscall.RawConn }

func (p peekConn) Read(f func(fd uintptr) bool) error {
	empty := false
	if err := p.RawConn.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
				syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if e == syscall.EINTR {
				continue
			}
			empty = e == syscall.EAGAIN
			return true
		}
	}); err != nil {
		return err
	}
	if empty {
		return nil
	}
	return p.RawConn.Read(f)
}

// Read is net.Conn's Read, made raw.
func (r *rawConn) Read(p []byte) (int, error) { return r.raw.Read(p) }

// Write is net.Conn's Write, made raw.
func (r *rawConn) Write(p []byte) (int, error) { return r.raw.Write(p) }
