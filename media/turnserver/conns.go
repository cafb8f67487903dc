package turnserver

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// maxAcceptBackoff bounds the wait before accepting again after an error
// such as running out of file descriptors.
const maxAcceptBackoff = time.Second

// conns tracks the TCP and TLS connections of both listeners: it closes one
// past Config.MaxConnections at once, one from a source IP that already has
// Config.MaxConnectionsPerIP without an allocation at once, one that goes
// Config.AllocateTimeout without an allocation, and, at Close, all of them
// (pion's server only closes the listeners, and its per-connection
// goroutine would otherwise run as long as the client keeps the connection
// open).
type conns struct {
	max, perIP      int
	allocateTimeout time.Duration
	log             *slog.Logger

	mu        sync.Mutex // guards the fields below and every trackedConn's allocs and pending
	open      map[string]*trackedConn
	pending   map[netip.Addr]int // per source IP, the open connections without an allocation
	closed    bool
	refused   uint64
	refusedIP uint64
	timedOut  uint64
}

func newConns(cfg Config, log *slog.Logger) *conns {
	return &conns{max: cfg.MaxConnections, perIP: cfg.MaxConnectionsPerIP, allocateTimeout: cfg.AllocateTimeout, log: log,
		open: map[string]*trackedConn{}, pending: map[netip.Addr]int{}}
}

var (
	errTooManyConns      = errors.New("turnserver: too many connections")
	errTooManyConnsPerIP = errors.New("turnserver: too many connections without an allocation from one IP")
)

// add counts c in, and starts its allocate timer, unless the server's cap
// or its IP's is reached, or the server closed.
func (s *conns) add(c *trackedConn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return net.ErrClosed
	case len(s.open) >= s.max:
		s.refused++
		return errTooManyConns
	case s.pending[c.ip] >= s.perIP:
		s.refusedIP++
		return errTooManyConnsPerIP
	}
	s.open[c.key] = c
	s.setPending(c, true)
	c.timer = time.AfterFunc(s.allocateTimeout, c.expire)
	return nil
}

// setPending counts c in or out of its IP's connections without an
// allocation. s.mu is held.
func (s *conns) setPending(c *trackedConn, pending bool) {
	switch {
	case pending == c.pending:
		return
	case pending:
		s.pending[c.ip]++
	default:
		if s.pending[c.ip]--; s.pending[c.ip] <= 0 {
			delete(s.pending, c.ip)
		}
	}
	c.pending = pending
}

// allocation is called when an allocation of the connection from src to
// dst begins (delta 1) or ends (-1): a connection with none is on its
// allocate timer. Allocations over UDP match no connection.
func (s *conns) allocation(src, dst net.Addr, delta int) {
	if src == nil || dst == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.open[connKey(src, dst)]
	if c == nil {
		return
	}
	c.allocs += delta
	s.setPending(c, c.allocs <= 0)
	if c.allocs > 0 {
		c.timer.Stop()
	} else {
		c.timer.Reset(s.allocateTimeout)
	}
}

func (s *conns) timedOutOne() {
	s.mu.Lock()
	s.timedOut++
	s.mu.Unlock()
}

func (s *conns) stats() (open int, refused, refusedIP, timedOut uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open), s.refused, s.refusedIP, s.timedOut
}

// closeAll closes every connection; add refuses new ones.
func (s *conns) closeAll() {
	s.mu.Lock()
	s.closed = true
	open := s.open
	s.open, s.pending = map[string]*trackedConn{}, map[netip.Addr]int{}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// connKey identifies a TCP connection by its addresses as pion reports an
// allocation's: the client's (src) and the server's (dst).
func connKey(src, dst net.Addr) string {
	return src.Network() + " " + src.String() + " " + dst.String()
}

// trackingListener is a TCP listener, optionally serving TLS, whose
// connections conns tracks.
type trackingListener struct {
	net.Listener // TCP

	conns     *conns
	tls       *tls.Config // nil: plain TCP
	handshake time.Duration
}

// Accept returns the next connection within the cap; it closes those past
// it, and waits out errors such as running out of file descriptors rather
// than return them (pion's accept loop would end for good).
func (l *trackingListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		raw, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if err != nil {
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			l.conns.log.Warn("TURN accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &trackedConn{Conn: raw, conns: l.conns, key: connKey(raw.RemoteAddr(), raw.LocalAddr()), ip: remoteIP(raw)}
		if l.tls != nil {
			c.tls = tls.Server(raw, l.tls)
			c.Conn, c.handshake = c.tls, l.handshake
		}
		switch err := l.conns.add(c); {
		case errors.Is(err, net.ErrClosed):
			_ = raw.Close()
			return nil, err
		case err != nil:
			l.conns.log.Debug("TURN connection refused", "client", raw.RemoteAddr(), "err", err)
			if tc, ok := raw.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset: nothing kept in TIME_WAIT for it
			}
			_ = raw.Close()
			continue
		}
		return c, nil
	}
}

// trackedConn leaves conns when closed. It also hides a *tls.Conn from
// pion, which then neither forces the handshake first (with a fixed
// timeout, leaving the connection open when it fails) nor reads the
// client's certificate: the handshake happens on the first Read, within
// the handshake timeout, and Switchboard authenticates by TURN
// credentials, not certificates.
type trackedConn struct {
	net.Conn // *tls.Conn when tls is set

	conns     *conns
	key       string
	ip        netip.Addr // the client's
	tls       *tls.Conn
	handshake time.Duration // TLS handshake timeout
	shook     bool          // the handshake was attempted; Read's only (pion's one reader)
	timer     *time.Timer   // allocate timer, set by conns.add
	allocs    int           // guarded by conns.mu
	pending   bool          // counted in conns.pending; guarded by conns.mu
	once      sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.tls != nil && !c.shook {
		c.shook = true
		_ = c.tls.SetDeadline(time.Now().Add(c.handshake))
		if err := c.tls.Handshake(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.conns.timedOutOne()
				c.conns.log.Debug("TURN TLS handshake timed out", "client", c.RemoteAddr())
			}
			return 0, err // pion closes the connection
		}
		_ = c.tls.SetDeadline(time.Time{})
	}
	return c.Conn.Read(p)
}

// expire is the allocate timer: it closes the connection if it has no
// allocation.
func (c *trackedConn) expire() {
	c.conns.mu.Lock()
	idle := c.conns.open[c.key] == c && c.allocs == 0
	if idle {
		c.conns.timedOut++
	}
	c.conns.mu.Unlock()
	if idle {
		c.conns.log.Debug("TURN connection closed: no allocation within turn.allocate_timeout", "client", c.RemoteAddr())
		_ = c.Close()
	}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.conns.mu.Lock()
		if c.conns.open[c.key] == c {
			delete(c.conns.open, c.key)
			c.conns.setPending(c, false)
		}
		c.timer.Stop()
		c.conns.mu.Unlock()
	})
	return c.Conn.Close()
}

// remoteIP is the client's IP of a TCP connection.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
