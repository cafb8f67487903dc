//go:build linux

package media

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgState is a batch as sendmmsg(2) takes it, built in place once.
//
// The call is made with RawSyscall, not Syscall: the socket is
// non-blocking, so the call never waits (a full socket buffer returns
// EAGAIN, and the runtime's poller waits for it, as for any write), and the
// goroutine keeps its P. With Syscall the runtime marks the P as in a
// system call, and a fan-out's sendmmsg (tens of datagrams, each delivered
// through the loopback or NIC path within the call) outlasts the 20 µs
// after which sysmon takes the P away and hands it to another thread: a
// futex wake and a context switch per fan-out, and sysmon kept polling at
// its shortest interval.
type mmsgState struct {
	b    *sendBatch
	hdrs [maxBatch]unix.Mmsghdr
	iov  [maxBatch]unix.Iovec
	sa4  [maxBatch]unix.RawSockaddrInet4
	sa6  [maxBatch]unix.RawSockaddrInet6

	// The call in progress, for write (a method value bound once:
	// syscall.RawConn.Write takes a func, and a closure would be allocated
	// per call).
	from, count int
	sent        int
	errno       syscall.Errno
	again       bool // the side socket's buffer was full
	write       func(fd uintptr) bool
	writeSide   func(fd uintptr) bool
}

func (m *mmsgState) init(b *sendBatch) {
	m.b = b
	m.write = m.sendmmsg
	m.writeSide = m.sendmmsgSide
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Iov = &m.iov[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
}

// send sends the batch's first n datagrams and returns how many it
// handled: all of them, unless the socket cannot be used (then 0, and the
// caller writes them one by one). A datagram the kernel refuses (an
// unreachable destination) is dropped, as a single write's error is. The
// datagrams go through the side socket when there is one; what it cannot
// take at once (its buffer full) goes through the port's own socket,
// which waits on the poller as any write.
func (m *mmsgState) send(n int) int {
	raw := m.b.conn.raw
	if raw == nil {
		return 0
	}
	for i := range n {
		m.fill(i)
	}
	side := m.b.conn.side
	for i := 0; i < n; {
		m.from, m.count = i, n-i
		m.again = false
		if side == nil || side.Write(m.writeSide) != nil || m.again {
			if err := raw.Write(m.write); err != nil {
				return i // closed
			}
		} else if m.sent > 0 {
			m.b.conn.sideSent.Add(uint64(m.sent))
		}
		if m.errno != 0 || m.sent <= 0 {
			i++ // the kernel refused datagram i
			continue
		}
		i += m.sent
	}
	return n
}

// fill points header i at datagram i and its destination.
func (m *mmsgState) fill(i int) {
	b, dst := m.b.buf[i], m.b.dst[i]
	m.iov[i].Base = unsafe.SliceData(b)
	m.iov[i].SetLen(len(b))
	h := &m.hdrs[i].Hdr
	port := dst.Port()
	if ip := dst.Addr().Unmap(); ip.Is4() {
		sa := &m.sa4[i]
		sa.Family = unix.AF_INET
		putPort(&sa.Port, port)
		sa.Addr = ip.As4()
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4
	} else {
		sa := &m.sa6[i]
		sa.Family = unix.AF_INET6
		putPort(&sa.Port, port)
		sa.Addr = ip.As16()
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6
	}
}

// putPort stores port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// sendmmsg runs inside RawConn.Write; false asks it to wait until the
// socket is writable and call again.
func (m *mmsgState) sendmmsg(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[m.from])), uintptr(m.count), 0, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	m.sent, m.errno = int(r), e
	return true
}

// sendmmsgSide runs inside the side socket's RawConn.Write: that socket
// is not in the poller, so the call never waits (MSG_DONTWAIT); a full
// buffer sets again.
func (m *mmsgState) sendmmsgSide(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[m.from])), uintptr(m.count), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			m.again = true
		default:
			m.sent, m.errno = int(r), e
		}
		return true
	}
}

// openSideSocket opens a second UDP socket bound to the address of raw's
// socket, which only sends: the batches of the fan-outs leave through it.
//
// Why: the kernel frees each datagram sent (on the loopback when it is
// delivered, on a NIC when it is transmitted) and then tells the sending
// socket's waiters that it is writable (sock_wfree, EPOLLOUT). The port's
// own socket is in the Go runtime's poller (edge-triggered, read and
// write), so every datagram sent through it runs the poller's callback
// under its lock and wakes a thread parked in epoll_wait, which finds
// nothing to do and parks again: per datagram sent, for every subscriber.
// The side socket is never polled (a blocking descriptor that os.NewFile
// leaves out of the poller; its sends do not wait: MSG_DONTWAIT), so
// nothing waits on it and nobody is woken.
//
// Both sockets are in one SO_REUSEPORT group with a classic BPF program
// that picks the group's first socket, the port's own, for every
// datagram that arrives: the side socket receives nothing. SO_REUSEPORT
// is set on the port's socket after its bind (the choice of an ephemeral
// port is not affected). Any step that fails leaves the port as it was
// (nil: the batches go through the port's own socket).
func openSideSocket(raw syscall.RawConn) (syscall.RawConn, func() error) {
	var (
		sa      unix.Sockaddr
		family  int
		v6only  int
		failure error
	)
	err := raw.Control(func(fd uintptr) {
		if sa, failure = unix.Getsockname(int(fd)); failure != nil {
			return
		}
		switch sa.(type) {
		case *unix.SockaddrInet4:
			family = unix.AF_INET
		case *unix.SockaddrInet6:
			family = unix.AF_INET6
			if v6only, failure = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); failure != nil {
				return
			}
		default:
			failure = errors.New("media: not an IP socket")
			return
		}
		failure = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil || failure != nil {
		return nil, nil
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, nil
	}
	ok := false
	defer func() {
		if !ok {
			_ = unix.Close(fd)
		}
	}()
	if family == unix.AF_INET6 {
		if unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only) != nil {
			return nil, nil
		}
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) != nil {
		return nil, nil
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0) // the kernel's minimum
	if unix.Bind(fd, sa) != nil {
		return nil, nil
	}
	// Until the program is attached the group spreads arrivals over both
	// sockets; the SFU has no peer yet.
	first := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &unix.SockFprog{Len: 1, Filter: &first[0]}) != nil {
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "media-side-socket")
	side, err := f.SyscallConn()
	if err != nil {
		return nil, nil
	}
	ok = true
	return side, f.Close
}

// rawReader reads one datagram with recvfrom(2) made with RawSyscall, for
// the same reason as mmsgState's sendmmsg, which matters even more here:
// every packet a publisher sends is one read, and a read made with Syscall
// enters the runtime's system call state, whose entry wakes sysmon when the
// process was idle; sysmon then polls at its shortest period (20 µs) for
// the next millisecond. On a forwarder between packets that is most of the
// time: sysmon's nanosleeps were 13-17 % of the server's CPU (perf, 2 ×
// (2 + 20) at 1 Mbit/s). The socket is non-blocking: when nothing is
// queued, recvfrom returns EAGAIN and RawConn.Read waits on the poller.
type rawReader struct {
	buf   []byte
	n     int
	from  unix.RawSockaddrAny
	errno syscall.Errno
	call  func(fd uintptr) bool // bound once, as mmsgState.write
	// nowait makes recvfrom return when the socket is empty (errno
	// EAGAIN) instead of waiting on the poller.
	nowait bool
}

// read fills b; ok is false when the read could not be made this way (the
// caller then reads through net.UDPConn). With nowait it does not wait
// for a datagram: err is errWouldBlock when none is waiting.
func (r *rawReader) read(raw syscall.RawConn, b []byte, nowait bool) (n int, addr netip.AddrPort, ok bool, err error) {
	if len(b) == 0 {
		return 0, netip.AddrPort{}, false, nil
	}
	if r.call == nil {
		r.call = r.recvfrom
	}
	r.buf, r.nowait = b, nowait
	defer func() { r.buf = nil }()
	if err := raw.Read(r.call); err != nil {
		return 0, netip.AddrPort{}, true, err // closed
	}
	if r.errno == unix.EAGAIN {
		return 0, netip.AddrPort{}, true, errWouldBlock
	}
	if r.errno != 0 {
		return 0, netip.AddrPort{}, true, os.NewSyscallError("recvfrom", r.errno)
	}
	switch r.from.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.from))
		addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), getPort(&sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&r.from))
		ip := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				ip = ip.WithZone(ifi.Name)
			}
		}
		addr = netip.AddrPortFrom(ip, getPort(&sa.Port))
	default:
		return 0, netip.AddrPort{}, false, nil
	}
	return r.n, addr, true, nil
}

// recvfrom runs inside RawConn.Read; false asks it to wait until the
// socket is readable and call again.
func (r *rawReader) recvfrom(fd uintptr) bool {
	size := uint32(unix.SizeofSockaddrAny)
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), 0,
		uintptr(unsafe.Pointer(&r.from)), uintptr(unsafe.Pointer(&size)))
	if e == unix.EINTR || (e == unix.EAGAIN && !r.nowait) {
		return false
	}
	r.n, r.errno = int(n), e
	return true
}

// getPort reads a port in network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// rawWriter sends one datagram with sendto(2) made with RawSyscall: the
// writes that are not batched (Pion's RTCP, STUN, DTLS, and a stream's
// datagrams between fan-outs), for the reason given at rawReader. A
// write through net.UDPConn enters the runtime's system call state, and
// that entry wakes sysmon whenever every P was idle, which on this server
// is between two bursts of packets; sysmon then polls every 20 µs for the
// next millisecond. The sender reports and ICE checks of a few dozen
// connections (a hundred or more writes per second) kept it polling:
// runtime.sysmon was 5-6 % of the server's CPU (perf).
type rawWriter struct {
	b       []byte
	sa4     unix.RawSockaddrInet4
	sa6     unix.RawSockaddrInet6
	name    unsafe.Pointer
	namelen uintptr
	n       int
	errno   syscall.Errno
	call    func(fd uintptr) bool // bound once, as mmsgState.write
}

// rawWriters holds rawWriters: WriteToAddrPort is called from any
// goroutine.
var rawWriters = sync.Pool{New: func() any {
	w := &rawWriter{}
	w.call = w.sendto
	return w
}}

// writeRaw writes b to addr; ok is false when the write could not be
// made this way (an address with a zone: the caller then writes through
// net.UDPConn).
func writeRaw(raw syscall.RawConn, b []byte, addr netip.AddrPort) (n int, ok bool, err error) {
	w := rawWriters.Get().(*rawWriter)
	defer rawWriters.Put(w)
	port := addr.Port()
	switch ip := addr.Addr().Unmap(); {
	case ip.Is4():
		w.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
		putPort(&w.sa4.Port, port)
		w.name, w.namelen = unsafe.Pointer(&w.sa4), unix.SizeofSockaddrInet4
	case ip.Is6() && ip.Zone() == "":
		w.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		putPort(&w.sa6.Port, port)
		w.name, w.namelen = unsafe.Pointer(&w.sa6), unix.SizeofSockaddrInet6
	default:
		return 0, false, nil
	}
	w.b = b
	defer func() { w.b = nil }()
	if err := raw.Write(w.call); err != nil {
		return 0, true, err // closed
	}
	if w.errno != 0 {
		return 0, true, os.NewSyscallError("sendto", w.errno)
	}
	return w.n, true, nil
}

// sendto runs inside RawConn.Write; false asks it to wait until the
// socket is writable and call again.
func (w *rawWriter) sendto(fd uintptr) bool {
	var p unsafe.Pointer
	if len(w.b) > 0 {
		p = unsafe.Pointer(&w.b[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(w.b)), 0, uintptr(w.name), w.namelen)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	w.n, w.errno = int(n), e
	return true
}
