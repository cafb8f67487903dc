package turnserver

import (
	"net"
	"net/netip"

	"github.com/pion/turn/v5"
)

// restrictedRelay allocates UDP relays in the port range, within the
// allocation caps, whose packets may only go to the allowed addresses
// (none: anywhere). TCP allocations (RFC 6062) are refused: browsers do not
// use them, and they would let a client open TCP connections from the
// server.
type restrictedRelay struct {
	turn.RelayAddressGeneratorPortRange
	allowed []netip.AddrPort
	allocs  *allocations
}

func (r *restrictedRelay) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	release, err := r.allocs.take(c.UserID)
	if err != nil {
		return nil, nil, err
	}
	conn, addr, err := r.RelayAddressGeneratorPortRange.AllocatePacketConn(c)
	if err != nil {
		release()
		return nil, nil, err
	}
	return &restrictedConn{PacketConn: conn, allowed: r.allowed, release: release}, addr, nil
}

func (r *restrictedRelay) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (r *restrictedRelay) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelay
}

// restrictedConn drops what a client sends to an address it may not reach
// (the permission check allows the IP; this checks the port too), and
// counts its allocation out when closed.
type restrictedConn struct {
	net.PacketConn
	allowed []netip.AddrPort
	release func()
}

func (c *restrictedConn) Close() error {
	err := c.PacketConn.Close()
	c.release()
	return err
}

func (c *restrictedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if u, ok := addr.(*net.UDPAddr); ok {
		if ap := u.AddrPort(); allowed(c.allowed, ap.Addr().Unmap(), ap.Port()) {
			return c.PacketConn.WriteTo(p, addr)
		}
	}
	return len(p), nil // dropped, as a network would
}
