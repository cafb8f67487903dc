package turnserver

import (
	"net"
	"net/netip"

	"github.com/pion/turn/v5"
)

// restrictedRelay allocates UDP relays in the port range whose packets may
// only go to the allowed addresses (none: anywhere). TCP allocations
// (RFC 6062) are refused: browsers do not use them, and they would let a
// client open TCP connections from the server.
type restrictedRelay struct {
	turn.RelayAddressGeneratorPortRange
	allowed []netip.AddrPort
}

func (r *restrictedRelay) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	conn, addr, err := r.RelayAddressGeneratorPortRange.AllocatePacketConn(c)
	if err != nil || len(r.allowed) == 0 {
		return conn, addr, err
	}
	return &restrictedConn{PacketConn: conn, allowed: r.allowed}, addr, nil
}

func (r *restrictedRelay) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (r *restrictedRelay) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelay
}

// restrictedConn drops what a client sends to an address it may not reach
// (the permission check allows the IP; this checks the port too).
type restrictedConn struct {
	net.PacketConn
	allowed []netip.AddrPort
}

func (c *restrictedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if u, ok := addr.(*net.UDPAddr); ok {
		if ap := u.AddrPort(); allowed(c.allowed, ap.Addr().Unmap(), ap.Port()) {
			return c.PacketConn.WriteTo(p, addr)
		}
	}
	return len(p), nil // dropped, as a network would
}
