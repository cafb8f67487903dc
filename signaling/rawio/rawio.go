// Package rawio reads and writes a socket with the read(2) and write(2)
// system calls made through syscall.RawSyscall, in the socket's own
// RawConn callbacks (issue 16). The WebSocket transport (web) and the
// Redis connections of a cluster node (signaling/redisdb) use it.
//
// net.Conn's Read and Write enter the scheduler's system-call state for
// each call (entersyscall and exitsyscall), which lets sysmon take the P
// away from a call that lasts over one of its ticks and hand it to another
// thread, and wakes sysmon when every P was idle; it then polls every
// 20 µs until it has found nothing to do for a while. A server that goes
// idle and busy again hundreds of times a second, with thousands of frames
// or round trips a second, pays a thread hand-off and a sysmon wake-up for
// a good part of them (signaling/CLUSTER-DESIGN.md, "Session 10": sysmon
// was 7 % of a cluster node's CPU). The socket is non-blocking, so neither
// call ever blocks: a call that would block returns EAGAIN and the RawConn
// waits for the socket in the runtime's poller, as net.Conn does, with the
// same deadlines (SetReadDeadline, SetWriteDeadline on the conn) and the
// same end at Close.
package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// IO is a socket's Read and Write. What the caller sees is what net.Conn
// gives: io.EOF at the end of the stream, every other failure a
// *net.OpError ("read" or "write") wrapping the system call's error, the
// deadline's (os.ErrDeadlineExceeded) or net.ErrClosed.
type IO struct {
	rc          syscall.RawConn
	local, peer net.Addr

	rmu   sync.Mutex // guards the read state; held for one Read
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool // r.readFD, bound once

	wmu       sync.Mutex // guards the write state; held for one Write
	wbuf      []byte
	wn        int
	werr      syscall.Errno
	writeF    func(fd uintptr) bool // r.writeFD, bound once
	tryWriteF func(fd uintptr) bool // r.tryWriteFD, bound once
}

// New returns the raw I/O of c, or nil when c is not a socket whose
// descriptor can be reached (TLS, a pipe in tests): the caller then uses
// c's own Read and Write.
func New(c net.Conn) *IO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &IO{rc: rc, local: c.LocalAddr(), peer: c.RemoteAddr()}
	r.readF, r.writeF, r.tryWriteF = r.readFD, r.writeFD, r.tryWriteFD
	return r
}

// Read is net.Conn's Read.
func (r *IO) Read(p []byte) (int, error) {
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

// readFD is the RawConn callback of Read: false asks it to wait until the
// socket is readable (or the deadline passes, or the conn is closed).
func (r *IO) readFD(fd uintptr) bool {
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
func (r *IO) Write(p []byte) (int, error) { return r.write(p, r.writeF) }

// TryWrite writes what the socket takes of p now, without waiting for it
// to take more: n < len(p) with a nil error when its buffer is full. The
// errors are Write's (a deadline that has passed fails it at once).
func (r *IO) TryWrite(p []byte) (int, error) { return r.write(p, r.tryWriteF) }

// write writes p through the RawConn callback f (writeFD or tryWriteFD).
func (r *IO) write(p []byte, f func(fd uintptr) bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(f)
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

// tryWriteFD is the RawConn callback of TryWrite: writeFD that stops, rather
// than waits, when the socket's buffer is full.
func (r *IO) tryWriteFD(fd uintptr) bool {
	r.writeFD(fd)
	return true
}

// writeFD is the RawConn callback of Write: it writes until all is
// written, or asks to wait (false) when the socket's buffer is full.
func (r *IO) writeFD(fd uintptr) bool {
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

// opError is err as net.Conn's Read and Write report it. The RawConn's own
// errors (deadline, closed) come as a *net.OpError of its "raw-read" or
// "raw-write": their Err is kept.
func (r *IO) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok { //nolint:errorlint // the RawConn returns it as it is
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: r.local.Network(), Source: r.local, Addr: r.peer, Err: err}
}
