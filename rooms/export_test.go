package rooms

import "github.com/switchboard-rtc/switchboard/media"

// SignalSenderForTest returns the Send callback that user's current
// membership of roomID gave its media participant (nil when not a member):
// it can be called after the membership ended, as a late Pion callback
// would.
func (m *Manager) SignalSenderForTest(roomID, user string) func(media.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.byUser[user][roomID]
	if mem == nil {
		return nil
	}
	return func(s media.Signal) { m.sendSignal(mem, s) }
}
