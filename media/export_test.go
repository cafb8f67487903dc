package media

import (
	"errors"
	"net"
)

// BatchedDatagrams counts the datagrams s sent through fan-out batches.
func BatchedDatagrams(s *SFU) uint64 {
	if s.batch == nil {
		return 0
	}
	return s.batch.batched.Load()
}

// BatchStreams counts the SSRCs registered with s's batches: one per bound
// subscriber track.
func BatchStreams(s *SFU) int {
	if s.batch == nil {
		return 0
	}
	return len(*s.batch.streams.Load())
}

// RxStreams counts the SSRCs registered with s's fast receive path.
func RxStreams(s *SFU) int {
	if s.batch == nil {
		return 0
	}
	return len(*s.batch.rx.Load())
}

// PublisherState is the state of p's publisher connection as the SFU sees
// it ("none" without one).
func PublisherState(p *Participant) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub == nil {
		return "none"
	}
	return p.pub.ConnectionState().String()
}

// ReadBuffer is the receive buffer the kernel gave s's UDP socket.
func ReadBuffer(s *SFU) (int, error) {
	udp, ok := s.conn.(*net.UDPConn)
	if !ok {
		return 0, errors.New("not a UDP socket")
	}
	raw, err := udp.SyscallConn()
	if err != nil {
		return 0, err
	}
	var size int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		size, serr = getReadBuffer(fd)
	}); err != nil {
		return 0, err
	}
	return size, serr
}
