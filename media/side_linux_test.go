package media

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The batches leave through the side socket, from the port's own address;
// every datagram that arrives at the port (from many sources, which the
// SO_REUSEPORT group would otherwise spread over both sockets) reaches the
// port's own socket, none the side socket; Close closes both.
func TestSideSocketSendsBatchesReceivesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		ip      net.IP
	}{
		{"ipv4 socket", "udp4", net.IPv4(127, 0, 0, 1)},
		{"dual-stack socket", "udp", net.IPv6unspecified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestBatchConn(t, tc.network, tc.ip)
			if c.side == nil {
				t.Fatal("no side socket")
			}
			port := c.LocalAddr().(*net.UDPAddr).Port
			subs := udpReceivers(t, 3)
			b := c.newBatch()
			c.register(1111, b)
			b.begin()
			for i, s := range subs {
				if _, err := c.WriteToAddrPort(rtpDatagram(1111, uint16(i), 200), addrOf(s)); err != nil {
					t.Fatal(err)
				}
			}
			b.flush()
			if got := c.sideSent.Load(); got != uint64(len(subs)) {
				t.Errorf("%d datagrams through the side socket, want %d", got, len(subs))
			}
			for i, s := range subs {
				_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, from, err := s.ReadFromUDPAddrPort(make([]byte, 1500))
				if err != nil {
					t.Fatalf("subscriber %d: %v", i, err)
				}
				if int(from.Port()) != port {
					t.Errorf("subscriber %d: datagram from port %d, want the SFU's %d", i, from.Port(), port)
				}
			}

			// 64 sources: each datagram reaches the port's own socket.
			const sources = 64
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
			for i, s := range udpReceivers(t, sources) {
				if _, err := s.WriteToUDP(rtpDatagram(5555, uint16(i), 100), to); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 1500)
			for i := range sources {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, _, err := c.UDPConn.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatalf("port's socket got %d of %d datagrams: %v", i, sources, err)
				}
			}
			var recvErr error
			if err := c.side.Read(func(fd uintptr) bool {
				_, _, recvErr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if !errors.Is(recvErr, unix.EAGAIN) {
				t.Errorf("side socket received a datagram (err %v)", recvErr)
			}

			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.side.Control(func(uintptr) {}); err == nil {
				t.Error("side socket still open after Close")
			}
		})
	}
}
