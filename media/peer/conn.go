package peer

import (
	"net"
	"sync/atomic"
)

// cuttableConn is the peer's UDP socket. Once cut it silently drops every
// datagram in both directions, as if the network had vanished: the remote
// side sees no close, only silence.
type cuttableConn struct {
	net.PacketConn
	cut atomic.Bool
}

func (c *cuttableConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.cut.Load() {
			return n, addr, err
		}
	}
}

func (c *cuttableConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.cut.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}
