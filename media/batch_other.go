//go:build !linux

package media

// mmsgState: no sendmmsg on this system; flush writes datagram by datagram.
type mmsgState struct{}

func (m *mmsgState) init(*sendBatch) {}

func (m *mmsgState) send(int) int { return 0 }
