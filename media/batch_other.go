//go:build !linux

package media

import (
	"net/netip"
	"syscall"
)

// mmsgState: no sendmmsg on this system; flush writes datagram by datagram.
type mmsgState struct{}

func (m *mmsgState) init(*sendBatch) {}

func (m *mmsgState) send(int) int { return 0 }

// rawReader: reads go through net.UDPConn on this system.
type rawReader struct{}

func (r *rawReader) read(syscall.RawConn, []byte, bool) (int, netip.AddrPort, bool, error) {
	return 0, netip.AddrPort{}, false, nil
}

// writeRaw: writes go through net.UDPConn on this system.
func writeRaw(syscall.RawConn, []byte, netip.AddrPort) (int, bool, error) {
	return 0, false, nil
}

// openSideSocket: no side socket on this system.
func openSideSocket(syscall.RawConn) (syscall.RawConn, func() error) { return nil, nil }
