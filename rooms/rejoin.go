package rooms

import (
	"crypto/rand"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Rejoin: a member whose WebSocket closes keeps its place for
// Config.RejoinGrace (media.rejoin_grace). Its media participant stays (the
// media may well be flowing: only the signaling connection broke), the
// others are told nothing, and the calls layer sees no MemberLeft. When the
// same user enters the same room again within the grace, from any
// connection, presenting the resumeToken of its enterRoom reply, the member
// is bound to the new connection (resume): same participant, same
// PeerConnections, no event to the others. Past the grace it leaves as on a
// closed connection without grace (reason 1).

// newResumeToken returns the secret a member's client presents to resume it.
func newResumeToken() string { return rand.Text() }

// resume binds the member of a.UserID in args.RoomID to a.Session when
// args.ResumeToken is its token (whatever role args ask: the member keeps
// the role it has now, which a switch may have changed); ok is false when
// there is no such member (gone, or never entered): the caller then enters
// anew. The member may be detached (its connection closed, in its grace) or
// still bound to a connection the server has not seen close yet: either way
// only the client that entered knows the token.
func (m *Manager) resume(a protocol.Actor, args EnterArgs) (EnterResult, bool) {
	m.mu.Lock()
	r := m.rooms[args.RoomID]
	var mem *member
	if r != nil {
		mem = r.members[a.UserID]
	}
	if mem == nil || mem.gone || mem.resumeToken == "" || mem.resumeToken != args.ResumeToken {
		m.mu.Unlock()
		return EnterResult{}, false
	}
	m.stopGraceLocked(mem)
	mem.detached = false
	if mem.sess != a.Session {
		unindex(m.bySession, mem.sess, mem.roomID, mem)
		mem.sess = a.Session
		index(m.bySession, a.Session, mem.roomID, mem)
	}
	res := EnterResult{Participants: m.othersLocked(r, mem), ICEServers: m.iceServers(a.UserID), ResumeToken: mem.resumeToken, Resumed: true,
		Role: mem.role, SeatIndex: r.seatOf(mem.user), Room: r.info()}
	part := mem.part
	m.mu.Unlock()
	m.log.Info("member resumed on a new connection", "room", args.RoomID, "user", a.UserID)
	if part != nil {
		part.Resume()
	}
	return res, true
}

// othersLocked lists the anchors of r other than mem whose media is connected.
func (m *Manager) othersLocked(r *room, mem *member) []ParticipantInfo {
	out := []ParticipantInfo{}
	for _, o := range sortedMembers(r) {
		if o != mem && o.connected && o.role == RoleAnchor {
			out = append(out, ParticipantInfo{UserID: o.user, Audio: o.audio(), Video: o.video()})
		}
	}
	return out
}

// detachLocked keeps mem, whose connection closed, in its room for the
// rejoin grace; it reports false when there is no grace (RejoinGrace 0, or
// the manager is closing), and the caller removes mem at once.
func (m *Manager) detachLocked(mem *member) bool {
	if m.cfg.RejoinGrace <= 0 || m.closed || mem.gone {
		return false
	}
	unindex(m.bySession, mem.sess, mem.roomID, mem)
	mem.detached = true
	m.stopGraceLocked(mem)
	m.timers.Add(1)
	mem.graceGen++
	gen := mem.graceGen
	mem.graceBy = m.clock.AfterFunc(m.cfg.RejoinGrace, func() {
		defer m.timers.Done()
		m.graceEnded(mem, gen)
	})
	m.log.Info("connection closed: member keeps its place for the rejoin grace", "room", mem.roomID, "user", mem.user, "grace", m.cfg.RejoinGrace)
	return true
}

// stopGraceLocked stops mem's rejoin grace timer, if it is still pending.
func (m *Manager) stopGraceLocked(mem *member) {
	if mem.graceBy != nil && mem.graceBy.Stop() {
		m.timers.Done()
	}
	mem.graceBy = nil
}

// graceEnded removes mem if it is still detached under the grace gen: the
// others get onRemoteUserLeaveRoom reason 1, as without a grace.
func (m *Manager) graceEnded(mem *member, gen int) {
	m.mu.Lock()
	if mem.graceGen != gen || mem.gone || !mem.detached {
		m.mu.Unlock()
		return
	}
	mem.graceBy = nil
	m.log.Info("rejoin grace over: member removed", "room", mem.roomID, "user", mem.user)
	part := m.removeLocked(mem, LeaveConnectionLost, ExitConnectionLost)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
}
