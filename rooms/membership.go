package rooms

import (
	"slices"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// removeLocked takes mem out of its room once and tells everyone. It
// returns the media participant to close (outside mu), if any. mem's own
// session gets onExitRoom with exit (a session that has closed drops it).
func (m *Manager) removeLocked(mem *member, why LeaveReason, exit ExitReason) *media.Participant {
	return m.removeMemberLocked(mem, why, exit, false)
}

// removeMemberLocked is removeLocked; replacing: the same user enters the
// room again at once (Enter), so it stays the host and an emptied room
// stays for the new entry.
func (m *Manager) removeMemberLocked(mem *member, why LeaveReason, exit ExitReason, replacing bool) *media.Participant {
	if mem.gone {
		return nil
	}
	mem.gone = true
	m.stopConnectLocked(mem)
	m.stopGraceLocked(mem)
	r := m.rooms[mem.roomID]
	if r != nil && r.members[mem.user] == mem {
		delete(r.members, mem.user)
		if len(r.members) == 0 && !replacing {
			delete(m.rooms, r.id)
		}
	} else {
		r = nil
	}
	unindex(m.bySession, mem.sess, mem.roomID, mem)
	unindex(m.byUser, mem.user, mem.roomID, mem)
	now := m.clock.Now()
	if mem.connected && mem.role == RoleAnchor && r != nil {
		m.broadcastLocked(r, mem, EvRemoteUserLeaveRoom, RemoteLeaveEvent{RoomID: r.id, UserID: mem.user, Reason: int(why)})
	}
	deliver(mem.sess, EvExitRoom, ExitRoomEvent{RoomID: mem.roomID, Reason: int(exit)})
	if r != nil {
		m.leaveRoomLocked(r, mem, replacing)
	}
	wasConnected := mem.connected
	mem.connected = false
	if wasConnected {
		roomID, user := mem.roomID, mem.user
		m.notifyLocked(func(o Observer) { o.MemberLeft(roomID, user, why, now) })
	}
	return mem.part
}

func (m *Manager) broadcastLocked(r *room, from *member, name string, data any) {
	frame, err := protocol.EncodeEvent(name, data)
	if err != nil {
		m.log.Error("encode room event", "event", name, "err", err)
		return
	}
	for _, o := range r.members {
		if o != from {
			o.sess.Deliver(frame)
		}
	}
}

func deliver(s protocol.Session, name string, data any) {
	if frame, err := protocol.EncodeEvent(name, data); err == nil {
		s.Deliver(frame)
	}
}

func (m *Manager) sendSignal(mem *member, s media.Signal) {
	m.mu.Lock() // a resume may rebind mem.sess
	defer m.mu.Unlock()
	// A member that is gone says nothing more: its participant's last
	// callbacks may still run after the exitRoom reply (or a replacing
	// entry), and the client would take them for the new entry's.
	if !mem.detached && !mem.gone {
		deliver(mem.sess, EvRtcSignal, SignalArgs{RoomID: mem.roomID, Signal: s})
	}
}

func (m *Manager) onConnected(mem *member) {
	m.mu.Lock()
	if mem.gone || mem.connected {
		m.mu.Unlock()
		return
	}
	mem.connected = true
	m.stopConnectLocked(mem)
	now := m.clock.Now()
	deliver(mem.sess, EvEnterRoom, EnterRoomEvent{RoomID: mem.roomID, Elapsed: now.Sub(mem.entered).Milliseconds()})
	r := m.rooms[mem.roomID]
	if mem.role == RoleAnchor && r != nil {
		m.broadcastLocked(r, mem, EvRemoteUserEnterRoom, RemoteEnterEvent{RoomID: r.id, UserID: mem.user})
		if mem.audio() {
			m.broadcastLocked(r, mem, EvUserAudioAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: true})
		}
		if mem.video() {
			m.broadcastLocked(r, mem, EvUserVideoAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: true})
		}
	}
	roomID, user, role := mem.roomID, mem.user, mem.role
	m.notifyLocked(func(o Observer) { o.MemberConnected(roomID, user, role, now) })
	m.mu.Unlock()
}

// notifyLocked queues a call to every observer. One goroutine makes the
// calls, in the order they were queued (the order in which mu decided
// them), without any rooms lock held.
func (m *Manager) notifyLocked(call func(Observer)) {
	if len(m.observers) == 0 || m.closed {
		return
	}
	obs := slices.Clone(m.observers)
	m.notes.Push(func() {
		for _, o := range obs {
			call(o)
		}
	})
}

// armConnectLocked starts mem's connect timer: a member whose media has
// not connected within ConnectTimeout is removed with onExitRoom reason 3.
func (m *Manager) armConnectLocked(mem *member) {
	if m.closed {
		return
	}
	m.timers.Add(1)
	mem.connectBy = m.clock.AfterFunc(m.cfg.ConnectTimeout, func() {
		defer m.timers.Done()
		m.connectTimedOut(mem)
	})
}

// stopConnectLocked stops mem's connect timer, if it is still pending.
func (m *Manager) stopConnectLocked(mem *member) {
	if mem.connectBy != nil && mem.connectBy.Stop() {
		m.timers.Done()
	}
	mem.connectBy = nil
}

// connectTimedOut removes mem if its media never connected. The others
// never saw it enter (onRemoteUserEnterRoom follows the connection), so
// only mem's own session hears of it: onExitRoom with reason 3.
func (m *Manager) connectTimedOut(mem *member) {
	m.mu.Lock()
	mem.connectBy = nil
	if mem.gone || mem.connected {
		m.mu.Unlock()
		return
	}
	m.log.Info("media never connected: removed from the room", "room", mem.roomID, "user", mem.user, "after", m.cfg.ConnectTimeout)
	part := m.removeLocked(mem, LeaveConnectionLost, ExitConnectionLost)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
}

func (m *Manager) onTrack(mem *member, kind string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mem.gone {
		return
	}
	before := [2]bool{mem.audio(), mem.video()}
	if kind == media.KindAudio {
		mem.audioTrack = on
	} else {
		mem.videoTrack = on
	}
	m.availabilityChangedLocked(mem, before)
}

// availabilityChangedLocked tells the others what changed in mem's audio and
// video availability. Before mem's media is connected the others do not know
// it yet: onConnected announces the state then.
func (m *Manager) availabilityChangedLocked(mem *member, before [2]bool) {
	r := m.rooms[mem.roomID]
	if r == nil || !mem.connected || mem.role != RoleAnchor {
		return
	}
	if a := mem.audio(); a != before[0] {
		m.broadcastLocked(r, mem, EvUserAudioAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: a})
	}
	if v := mem.video(); v != before[1] {
		m.broadcastLocked(r, mem, EvUserVideoAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: v})
	}
}

func (m *Manager) onGone(mem *member, reason media.LeaveReason) {
	m.mu.Lock()
	var why LeaveReason
	var exit ExitReason
	if reason == media.ConnectionLost {
		why, exit = LeaveConnectionLost, ExitConnectionLost
	}
	// The member's session has not closed (SessionClosed would have
	// removed it first): it is told it is out, as when it never connected.
	m.removeLocked(mem, why, exit)
	m.mu.Unlock()
}

func sortedMembers(r *room) []*member {
	out := make([]*member, 0, len(r.members))
	for _, mem := range r.members {
		out = append(out, mem)
	}
	slices.SortFunc(out, func(a, b *member) int { return a.entered.Compare(b.entered) })
	return out
}

func index[K comparable](idx map[K]map[string]*member, k K, roomID string, mem *member) {
	m := idx[k]
	if m == nil {
		m = map[string]*member{}
		idx[k] = m
	}
	m[roomID] = mem
}

func unindex[K comparable](idx map[K]map[string]*member, k K, roomID string, mem *member) {
	if m := idx[k]; m != nil && m[roomID] == mem {
		delete(m, roomID)
		if len(m) == 0 {
			delete(idx, k)
		}
	}
}
