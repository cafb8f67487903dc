package peer

import (
	"net"
	"sync/atomic"
)

// CuttableConn is a UDP socket (the peer's own, or a server's in tests)
// that, once cut, silently drops every datagram in both directions, as if
// the network had vanished: the remote side sees no close, only silence.
type CuttableConn struct {
	net.PacketConn
	cut atomic.Bool
}

// NewCuttableConn wraps pc; it starts uncut.
func NewCuttableConn(pc net.PacketConn) *CuttableConn { return &CuttableConn{PacketConn: pc} }

// SetCut cuts the network (true) or brings it back (false).
func (c *CuttableConn) SetCut(cut bool) { c.cut.Store(cut) }

func (c *CuttableConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.cut.Load() {
			return n, addr, err
		}
	}
}

func (c *CuttableConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.cut.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}
