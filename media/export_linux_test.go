package media

import "golang.org/x/sys/unix"

func getReadBuffer(fd uintptr) (int, error) {
	return unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
}
