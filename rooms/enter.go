package rooms

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Enter puts the actor's session into a room and starts its media. The
// server's subscriber offer (onRtcSignal) may reach the client before the
// reply.
func (m *Manager) Enter(ctx context.Context, a protocol.Actor, args EnterArgs) (EnterResult, error) {
	if a.Session == nil {
		return EnterResult{}, protocol.ErrInvalidParameter.WithMessage("enterRoom needs a connection")
	}
	if !ValidRoomID(args.RoomID) {
		return EnterResult{}, protocol.ErrInvalidParameter.WithMessage("roomID must be 1-64 characters of [A-Za-z0-9_-]")
	}
	role := Role(args.Role)
	switch role {
	case "":
		role = RoleAnchor
	case RoleAnchor, RoleAudience:
	default:
		return EnterResult{}, protocol.ErrInvalidParameter.WithMessage("role must be %q or %q", RoleAnchor, RoleAudience)
	}
	seats, mode, err := m.seatArgs(args)
	if err != nil {
		return EnterResult{}, err
	}
	if args.ResumeToken != "" {
		if res, ok := m.resume(a, args); ok {
			return res, nil
		}
	}
	adm, err := m.admission(a.UserID, args.RoomID, args.RoomToken)
	if err != nil {
		return EnterResult{}, err
	}

	ice := m.iceServers(a.UserID)
	now := m.clock.Now()
	mem := &member{user: a.UserID, roomID: args.RoomID, role: role, sess: a.Session, entered: now, resumeToken: newResumeToken()}
	m.mu.Lock()
	if mem.claim, err = m.pathLocked(args.RoomID, adm); err != nil {
		m.mu.Unlock()
		return EnterResult{}, err
	}
	r := m.rooms[args.RoomID]
	var old *member
	if r != nil {
		old = r.members[a.UserID]
	}
	inRooms := len(m.byUser[a.UserID])
	if old != nil {
		inRooms--
	}
	if lim := m.cfg.MaxRoomsPerUser; lim > 0 && inRooms >= lim {
		m.mu.Unlock()
		return EnterResult{}, ErrTooManyRooms.WithMessage("already in %d rooms; the limit is %d", inRooms, lim)
	}
	if r != nil && old == nil {
		if lim := m.cfg.MaxParticipants; lim > 0 && len(r.members) >= lim {
			m.mu.Unlock()
			return EnterResult{}, ErrRoomFull.WithMessage("room %q has %d participants; the limit is %d", r.id, len(r.members), lim)
		}
	}
	if r != nil && role == RoleAnchor {
		// A seat for the new anchor, the one the replaced entry holds
		// counting as free for it (checked before anything changes).
		check := r.seatCheckLocked(mem.user, noSeat, false)
		if old != nil && r.seatOf(old.user) != noSeat {
			check = nil
		}
		if check != nil {
			m.mu.Unlock()
			return EnterResult{}, check
		}
	}
	var oldPart *media.Participant
	if old != nil {
		// The same user entering again (another device, or a reload):
		// the earlier entry is replaced.
		oldPart = m.removeMemberLocked(old, LeaveLeft, ExitKicked, true)
	}
	if r = m.rooms[args.RoomID]; r == nil {
		r = m.newRoomLocked(args.RoomID, mem.user, seats, mode, mem.claim != nil)
	}
	r.members[mem.user] = mem
	index(m.bySession, a.Session, r.id, mem)
	index(m.byUser, mem.user, r.id, mem)
	seat := noSeat
	if role == RoleAnchor {
		seat = m.sitLocked(r, mem.user, noSeat)
	} else {
		m.audienceChangedLocked(r)
	}
	m.armConnectLocked(mem)
	res := EnterResult{Participants: m.othersLocked(r, mem), ICEServers: ice, ResumeToken: mem.resumeToken,
		Role: role, SeatIndex: seat, Room: r.info()}
	m.mu.Unlock()
	if oldPart != nil {
		oldPart.Close()
	}

	part, err := m.join(ctx, mem, media.JoinOptions{
		CanPublish:  role == RoleAnchor,
		Send:        func(s media.Signal) { m.sendSignal(mem, s) },
		OnConnected: func() { m.onConnected(mem) },
		OnTrack:     func(kind string, on bool) { m.onTrack(mem, kind, on) },
		OnGone:      func(reason media.LeaveReason) { m.onGone(mem, reason) },
	})
	if err != nil {
		m.log.Warn("media join failed", "room", args.RoomID, "user", a.UserID, "err", err)
		m.mu.Lock()
		m.removeLocked(mem, LeaveLeft, ExitLeft)
		m.mu.Unlock()
		return EnterResult{}, ErrMediaUnavailable
	}
	m.mu.Lock()
	gone := mem.gone
	if !gone {
		mem.part = part
	}
	switched := mem.role != role
	m.mu.Unlock()
	if gone { // exitRoom or the session's end raced the join
		part.Close()
		return EnterResult{}, ErrNotInRoom.WithMessage("left room %q while entering", args.RoomID)
	}
	if switched { // a role switch (kickSeat, GrantSeat) raced the join
		m.syncPublish(mem)
	}
	return res, nil
}

// TURNCredentials hands out the embedded TURN server's per-participant
// credentials (media/turnserver.Server).
type TURNCredentials interface {
	// ICEServers returns userID's TURN server entries, with credentials
	// that expire.
	ICEServers(userID string) []media.ICEServer
}

// iceServers are enterRoom's iceServers for userID: the configured
// media.ice_servers, then the embedded TURN server with userID's own
// credentials.
// joinWait bounds how long join waits for the SFU to let go of the same
// user's previous participant in the room.
const joinWait = 5 * time.Second

// join joins mem's media participant. The SFU admits one participant per
// user and room; when this user's previous member has just left (exitRoom,
// a closed connection, the end of a rejoin grace), its participant is closed
// outside mu and may still be in the SFU for an instant: a duplicate is
// therefore that one going away, and join tries again until it has gone.
func (m *Manager) join(ctx context.Context, mem *member, opts media.JoinOptions) (*media.Participant, error) {
	deadline := time.Now().Add(joinWait)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		part, err := m.sfu.Join(mem.roomID, mem.user, opts)
		if !errors.Is(err, media.ErrDuplicateParticipant) || time.Now().After(deadline) {
			return part, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func (m *Manager) iceServers(userID string) []media.ICEServer {
	s := m.sfu.ICEServers()
	if m.turn != nil {
		s = append(s, m.turn.ICEServers(userID)...)
	}
	if s == nil {
		s = []media.ICEServer{}
	}
	return s
}

// Exit takes the actor's session out of a room.
func (m *Manager) Exit(_ context.Context, a protocol.Actor, args RoomArgs) error {
	m.mu.Lock()
	mem := m.bySession[a.Session][args.RoomID]
	if mem == nil {
		m.mu.Unlock()
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	part := m.removeLocked(mem, LeaveLeft, ExitLeft)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return nil
}

// Signal relays a client's WebRTC negotiation message to its media session.
func (m *Manager) Signal(_ context.Context, a protocol.Actor, args SignalArgs) error {
	m.mu.Lock()
	mem := m.bySession[a.Session][args.RoomID]
	var part *media.Participant
	audience := false
	if mem != nil {
		part, audience = mem.part, mem.role != RoleAnchor
	}
	m.mu.Unlock()
	if part == nil {
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	if audience && args.Target == media.TargetPublisher {
		return ErrCannotPublish
	}
	err := part.HandleSignal(args.Signal)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, media.ErrCannotPublish):
		return ErrCannotPublish
	case errors.Is(err, media.ErrTooManyTracks):
		return ErrTooManyTracks.WithMessage("%v", err)
	case errors.Is(err, media.ErrBadSignal):
		var se *media.SignalError
		if errors.As(err, &se) && se.Field != "" {
			return ErrBadSignal.WithMessage("args.%s %s", se.Field, se.Problem)
		}
		if errors.As(err, &se) {
			return ErrBadSignal.WithMessage("%s", se.Problem)
		}
		return ErrBadSignal.WithMessage("%v", err)
	case errors.Is(err, media.ErrUnexpectedSignal):
		return ErrUnexpected.WithMessage("%v", err)
	case errors.Is(err, media.ErrNegotiation):
		return ErrNegotiation.WithMessage("%v", err)
	case errors.Is(err, media.ErrClosed):
		return ErrNotInRoom.WithMessage("left room %q", args.RoomID)
	}
	return ErrNegotiation.WithMessage("%v", err)
}

// Mute sets the actor's audio or video mute in a room.
func (m *Manager) Mute(_ context.Context, a protocol.Actor, args MuteArgs, kind string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.bySession[a.Session][args.RoomID]
	if mem == nil {
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	if mem.role != RoleAnchor {
		return ErrCannotPublish
	}
	before := [2]bool{mem.audio(), mem.video()}
	if kind == media.KindAudio {
		mem.audioMuted = args.Mute
	} else {
		mem.videoMuted = args.Mute
	}
	m.availabilityChangedLocked(mem, before)
	return nil
}

// SessionClosed removes every room member of a closed connection: the
// others get onRemoteUserLeaveRoom with reason 1 (connection lost). With a
// rejoin grace, the members keep their places that long instead (rejoin.go).
func (m *Manager) SessionClosed(s protocol.Session) {
	m.mu.Lock()
	var parts []*media.Participant
	for _, mem := range m.bySession[s] {
		if m.detachLocked(mem) {
			continue
		}
		if p := m.removeLocked(mem, LeaveConnectionLost, ExitConnectionLost); p != nil {
			parts = append(parts, p)
		}
	}
	m.mu.Unlock()
	for _, p := range parts {
		p.Close()
	}
}

// Leave takes a user out of a room as if they had called exitRoom (the
// calls layer's hangup); it reports whether they were in it.
func (m *Manager) Leave(roomID, userID string) bool {
	return m.remove(roomID, userID, LeaveLeft, ExitLeft)
}

// Kick removes a user from a room (reason 2); it reports whether they were in it.
func (m *Manager) Kick(roomID, userID string) bool {
	return m.remove(roomID, userID, LeaveKicked, ExitKicked)
}

func (m *Manager) remove(roomID, userID string, why LeaveReason, exit ExitReason) bool {
	m.mu.Lock()
	r := m.rooms[roomID]
	var mem *member
	if r != nil {
		mem = r.members[userID]
	}
	if mem == nil {
		m.mu.Unlock()
		return false
	}
	part := m.removeLocked(mem, why, exit)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return true
}

// Dismiss closes a room: every member gets onExitRoom with reason 2.
func (m *Manager) Dismiss(roomID string) { m.dismiss(roomID, LeaveKicked, ExitDismissed) }

// DismissLost closes a room whose media may no longer be here (cluster
// mode: this node lost its ownership, or shuts down): every member gets
// onExitRoom with reason 4 (ExitMediaNodeLost) and enters again; the
// others and the observers see it leave with LeaveMediaNodeLost (not
// kicked: it is coming back).
func (m *Manager) DismissLost(roomID string) {
	m.dismiss(roomID, LeaveMediaNodeLost, ExitMediaNodeLost)
}

func (m *Manager) dismiss(roomID string, why LeaveReason, exit ExitReason) {
	m.mu.Lock()
	var parts []*media.Participant
	if r := m.rooms[roomID]; r != nil {
		for _, mem := range sortedMembers(r) {
			if p := m.removeLocked(mem, why, exit); p != nil {
				parts = append(parts, p)
			}
		}
	}
	m.mu.Unlock()
	for _, p := range parts {
		p.Close()
	}
}
