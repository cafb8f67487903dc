package redisdb

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawConn is a connection to Redis (TCP or a Unix socket, no TLS) whose
// Read and Write are read(2) and write(2) made with syscall.RawSyscall in
// the socket's RawConn callbacks (signaling/CLUSTER-DESIGN.md, "Session 10").
//
// net.Conn's Read and Write enter the scheduler's system-call state for
// each call. When every P of the process was idle, sysmon sleeps until
// such a call wakes it; then it polls every 20 µs until it has found
// nothing to do for a millisecond and more. A node goes idle and busy
// again hundreds of times a second, and its operations' round trips to
// Redis were the calls that woke sysmon: at the bench's max rate sysmon's
// polling was 7 % of a node's CPU. The socket is non-blocking, so neither
// raw call ever blocks: one that would returns EAGAIN and the RawConn waits
// for the socket in the runtime's poller, as net.Conn does, with the same
// deadlines (go-redis sets them on the conn) and the same end at Close.
//
// Everything else is the socket's own (deadlines, addresses, Close, and
// SyscallConn, with which go-redis's pool checks an idle connection's
// health before it hands it out). Errors are what net.Conn reports: io.EOF
// at the end of the stream, otherwise a *net.OpError.
type rawConn struct {
	net.Conn // *net.TCPConn or *net.UnixConn
	rc       syscall.RawConn

	rmu   sync.Mutex // one Read at a time; guards the read state
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wmu    sync.Mutex // one Write at a time; guards the write state
	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
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
	r := &rawConn{Conn: c, rc: rc}
	r.readF, r.writeF = r.readFD, r.writeFD
	return r
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

// Read is net.Conn's Read.
func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	defer r.rmu.Unlock()
	r.rbuf, r.rn, r.rerr = p, 0, 0
	err := r.rc.Read(r.readF)
	n, errno := r.rn, r.rerr
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case errno != 0:
		return 0, r.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readFD is Read's RawConn callback: false waits until the socket is
// readable (or the deadline passes, or the conn is closed).
func (r *rawConn) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rerr = e
		return true
	}
}

// Write is net.Conn's Write: it returns once all of p is written, or with
// the error that stopped it.
func (r *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.writeF)
	n, errno := r.wn, r.werr
	r.wbuf = nil
	switch {
	case err != nil:
		return n, r.opError("write", err)
	case errno != 0:
		return n, r.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// writeFD is Write's RawConn callback: it writes until all is written, or
// waits (false) while the socket's buffer is full.
func (r *rawConn) writeFD(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[r.wn])), uintptr(len(r.wbuf)-r.wn))
		switch e {
		case 0:
			r.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.werr = e
		return true
	}
	return true
}

// opError is err as net.Conn's Read and Write report it; the RawConn's own
// errors (deadline, closed) keep their Err.
func (r *rawConn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok { //nolint:errorlint // the RawConn returns it as it is
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}
