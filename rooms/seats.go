package rooms

import (
	"context"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Live rooms: a host, seats and role switches (ROOMS.md, "Live rooms").
//
// Every room has a host (its creator; handed on when it leaves) and a fixed
// number of seats. Every anchor but the host sits on a seat: entering as
// anchor, switchRole to anchor and takeSeat take one, and a member who has
// none cannot become an anchor (11011 no_seat). Whether a seat is free and
// taking it are one critical section under mu, so two members racing for
// the last seat never both get it. In a room of SeatApply mode only the host
// puts audience members on a seat (GrantSeat: a mic request the host
// accepted, or the host's mic invitation the member accepted).

// SeatMode says who may put an audience member on a seat.
type SeatMode string

const (
	// SeatFree: anyone takes a free seat (entering as anchor, switchRole,
	// takeSeat). A call's room is of this mode.
	SeatFree SeatMode = "free"
	// SeatApply: only the host puts an audience member on a seat
	// (GrantSeat); entering as anchor, switchRole and takeSeat by anyone
	// else get 11012 needs_approval.
	SeatApply SeatMode = "apply"
)

const noSeat = -1

// seatArgs checks enterRoom's seats and seatMode.
func (m *Manager) seatArgs(args EnterArgs) (int, SeatMode, error) {
	n := args.Seats
	if n < 0 || n > m.cfg.MaxRoomSeats {
		return 0, "", protocol.ErrInvalidParameter.WithMessage("seats must be 0 (the default, %d) to %d", m.cfg.RoomSeats, m.cfg.MaxRoomSeats)
	}
	mode := SeatMode(args.SeatMode)
	switch mode {
	case "":
		mode = SeatFree
	case SeatFree, SeatApply:
	default:
		return 0, "", protocol.ErrInvalidParameter.WithMessage("seatMode must be %q or %q", SeatFree, SeatApply)
	}
	return n, mode, nil
}

// newRoomLocked creates a room whose host is its creator. A call's room
// (entered through a claim) has limits.max_room_seats seats unless its
// creator gave a number.
func (m *Manager) newRoomLocked(id, creator string, seats int, mode SeatMode, claimed bool) *room {
	if seats == 0 {
		seats = m.cfg.RoomSeats
		if claimed {
			seats = m.cfg.MaxRoomSeats
		}
	}
	r := &room{id: id, members: map[string]*member{}, host: creator, seats: make([]string, seats), seatMode: mode}
	m.rooms[id] = r
	return r
}

func (r *room) seatOf(user string) int {
	for i, u := range r.seats {
		if u == user {
			return i
		}
	}
	return noSeat
}

func (r *room) freeSeat() int { return r.seatOf("") }

func (r *room) seatList() []Seat {
	out := make([]Seat, len(r.seats))
	for i, u := range r.seats {
		out[i] = Seat{Index: i, UserID: u}
	}
	return out
}

func (r *room) info() RoomInfo {
	in := RoomInfo{RoomID: r.id, Host: r.host, SeatMode: r.seatMode, Seats: r.seatList(), Anchors: []string{}, Audience: []string{}}
	if h := r.members[r.host]; h != nil && h.role == RoleAnchor {
		in.Anchors = append(in.Anchors, h.user)
	}
	for _, mem := range sortedMembers(r) {
		switch {
		case mem.role == RoleAudience:
			in.Audience = append(in.Audience, mem.user)
		case mem.user != r.host:
			in.Anchors = append(in.Anchors, mem.user)
		}
	}
	return in
}

// seatCheckLocked reports why user could not become an anchor of r now
// (nil: it may). The host needs no seat; approved is set for the host's
// own decisions (GrantSeat), which a SeatApply room requires.
func (r *room) seatCheckLocked(user string, idx int, approved bool) error {
	if user == r.host || r.seatOf(user) != noSeat {
		return nil
	}
	if r.seatMode == SeatApply && !approved {
		return ErrNeedsApproval
	}
	if idx == noSeat {
		if r.freeSeat() == noSeat {
			return ErrNoSeat.WithMessage("all %d seats of room %q are taken", len(r.seats), r.id)
		}
		return nil
	}
	if idx < 0 || idx >= len(r.seats) {
		return protocol.ErrInvalidParameter.WithMessage("index must be 0 to %d", len(r.seats)-1)
	}
	if r.seats[idx] != "" {
		return ErrNoSeat.WithMessage("seat %d of room %q is taken", idx, r.id)
	}
	return nil
}

// sitLocked seats user (checked by seatCheckLocked) and tells every member.
// It returns the seat, noSeat for the host.
func (m *Manager) sitLocked(r *room, user string, idx int) int {
	if user == r.host {
		return noSeat
	}
	if i := r.seatOf(user); i != noSeat {
		return i
	}
	if idx == noSeat {
		idx = r.freeSeat()
	}
	r.seats[idx] = user
	m.broadcastLocked(r, nil, EvAnchorEnterSeat, SeatEvent{RoomID: r.id, Index: idx, UserID: user})
	m.broadcastLocked(r, nil, EvSeatListChange, SeatListEvent{RoomID: r.id, Seats: r.seatList()})
	return idx
}

// standLocked frees user's seat, if any, and tells every member.
func (m *Manager) standLocked(r *room, user string, reason int) {
	i := r.seatOf(user)
	if i == noSeat {
		return
	}
	r.seats[i] = ""
	m.broadcastLocked(r, nil, EvAnchorLeaveSeat, SeatEvent{RoomID: r.id, Index: i, UserID: user, Reason: reason})
	m.broadcastLocked(r, nil, EvSeatListChange, SeatListEvent{RoomID: r.id, Seats: r.seatList()})
}

// audienceChangedLocked tells the host who the audience is.
func (m *Manager) audienceChangedLocked(r *room) {
	if h := r.members[r.host]; h != nil && !h.detached {
		deliver(h.sess, EvAudienceListChange, AudienceEvent{RoomID: r.id, Audience: r.info().Audience})
	}
}

// toAnchorLocked switches mem, an audience member, to anchor on seat idx
// (noSeat: the lowest free one), after seatCheckLocked allowed it. The
// others see it enter (onRemoteUserEnterRoom) if its media is connected.
func (m *Manager) toAnchorLocked(r *room, mem *member, idx int) int {
	seat := m.sitLocked(r, mem.user, idx)
	mem.role = RoleAnchor
	mem.audioMuted, mem.videoMuted = false, false
	if mem.connected {
		m.broadcastLocked(r, mem, EvRemoteUserEnterRoom, RemoteEnterEvent{RoomID: r.id, UserID: mem.user})
	}
	m.audienceChangedLocked(r)
	return seat
}

// toAudienceLocked switches mem, an anchor, to audience: the others see its
// audio and video become unavailable and it leave their view (reason 3);
// its seat is freed. Its published tracks end once syncPublish took its
// publisher connection away.
func (m *Manager) toAudienceLocked(r *room, mem *member, seatReason int) {
	if mem.connected {
		if mem.audio() {
			m.broadcastLocked(r, mem, EvUserAudioAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: false})
		}
		if mem.video() {
			m.broadcastLocked(r, mem, EvUserVideoAvailable, AvailableEvent{RoomID: r.id, UserID: mem.user, Available: false})
		}
		m.broadcastLocked(r, mem, EvRemoteUserLeaveRoom, RemoteLeaveEvent{RoomID: r.id, UserID: mem.user, Reason: int(LeaveSwitchedRole)})
	}
	mem.role = RoleAudience
	m.standLocked(r, mem.user, seatReason)
	m.audienceChangedLocked(r)
}

// syncPublish makes mem's media participant match its role: a publisher
// connection for an anchor, none for an audience member. Called after a
// switch, outside mu; pubSync orders the calls of one member, and each
// applies the role of the moment, so the last one leaves them in step.
func (m *Manager) syncPublish(mem *member) {
	mem.pubSync.Lock()
	defer mem.pubSync.Unlock()
	m.mu.Lock()
	part, want, gone := mem.part, mem.role == RoleAnchor, mem.gone
	m.mu.Unlock()
	if part == nil || gone {
		return // Enter syncs once the participant exists
	}
	if err := part.SetCanPublish(want); err != nil {
		m.log.Debug("role switch: media", "room", mem.roomID, "user", mem.user, "err", err)
	}
}

// finishSwitch syncs mem's media, then tells it its new role (onSwitchRole)
// if that is still its role: the client may publish once it has the event.
func (m *Manager) finishSwitch(mem *member, role Role, reason string) SwitchRoleResult {
	m.syncPublish(mem)
	m.mu.Lock()
	defer m.mu.Unlock()
	seat := noSeat
	if r := m.rooms[mem.roomID]; r != nil {
		seat = r.seatOf(mem.user)
	}
	res := SwitchRoleResult{RoomID: mem.roomID, Role: mem.role, SeatIndex: seat}
	if !mem.gone && !mem.detached && mem.role == role {
		deliver(mem.sess, EvSwitchRole, SwitchRoleEvent{RoomID: mem.roomID, Role: role, SeatIndex: seat, Reason: reason})
	}
	return res
}

// switchLocked switches mem to role on seat idx (to anchor; noSeat: any).
// approved marks the host's decision (GrantSeat). changed is false when mem
// already had the role.
func (m *Manager) switchLocked(mem *member, role Role, idx int, approved bool, seatReason int) (changed bool, err error) {
	r := m.rooms[mem.roomID]
	if r == nil || mem.gone {
		return false, ErrNotInRoom.WithMessage("not in room %q", mem.roomID)
	}
	if mem.role == role {
		return false, nil
	}
	if role == RoleAnchor {
		if err := r.seatCheckLocked(mem.user, idx, approved); err != nil {
			return false, err
		}
		m.toAnchorLocked(r, mem, idx)
		return true, nil
	}
	m.toAudienceLocked(r, mem, seatReason)
	return true, nil
}

// SwitchRole switches the actor's role in a room (switchRole, leaveSeat):
// to anchor it takes the lowest free seat, which a SeatApply room refuses
// to anyone but its host; to audience it frees the seat and ends the
// member's published tracks at everyone.
func (m *Manager) SwitchRole(_ context.Context, a protocol.Actor, args SwitchRoleArgs) (SwitchRoleResult, error) {
	role := Role(args.Role)
	if role != RoleAnchor && role != RoleAudience {
		return SwitchRoleResult{}, protocol.ErrInvalidParameter.WithMessage("role must be %q or %q", RoleAnchor, RoleAudience)
	}
	return m.switchSelf(a, args.RoomID, role, noSeat)
}

// TakeSeat switches the actor to anchor on a seat (takeSeat): the one it
// names, or the lowest free one.
func (m *Manager) TakeSeat(_ context.Context, a protocol.Actor, args TakeSeatArgs) (SwitchRoleResult, error) {
	idx := noSeat
	if args.Index != nil {
		if *args.Index < 0 {
			return SwitchRoleResult{}, protocol.ErrInvalidParameter.WithMessage("index must be 0 or more")
		}
		idx = *args.Index
	}
	return m.switchSelf(a, args.RoomID, RoleAnchor, idx)
}

func (m *Manager) switchSelf(a protocol.Actor, roomID string, role Role, idx int) (SwitchRoleResult, error) {
	m.mu.Lock()
	mem := m.bySession[a.Session][roomID]
	if mem == nil {
		m.mu.Unlock()
		return SwitchRoleResult{}, ErrNotInRoom.WithMessage("not in room %q", roomID)
	}
	changed, err := m.switchLocked(mem, role, idx, false, SeatLeft)
	m.mu.Unlock()
	if err != nil {
		return SwitchRoleResult{}, err
	}
	if !changed {
		m.syncPublish(mem)
		m.mu.Lock()
		defer m.mu.Unlock()
		return SwitchRoleResult{RoomID: roomID, Role: mem.role, SeatIndex: m.seatLocked(mem)}, nil
	}
	return m.finishSwitch(mem, role, SwitchBySelf), nil
}

func (m *Manager) seatLocked(mem *member) int {
	if r := m.rooms[mem.roomID]; r != nil {
		return r.seatOf(mem.user)
	}
	return noSeat
}

// KickSeat takes an anchor off its seat (kickSeat): only the host may; the
// anchor becomes audience and its tracks end at everyone.
func (m *Manager) KickSeat(_ context.Context, a protocol.Actor, args KickSeatArgs) error {
	m.mu.Lock()
	host := m.bySession[a.Session][args.RoomID]
	if host == nil {
		m.mu.Unlock()
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	r := m.rooms[args.RoomID]
	if r == nil || r.host != host.user {
		m.mu.Unlock()
		return ErrNotHost
	}
	mem := r.members[args.UserID]
	if mem == nil || mem == host || r.seatOf(mem.user) == noSeat {
		m.mu.Unlock()
		return ErrNotOnSeat.WithMessage("%q is not on a seat of room %q", args.UserID, args.RoomID)
	}
	_, err := m.switchLocked(mem, RoleAudience, noSeat, true, SeatKicked)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.finishSwitch(mem, RoleAudience, SwitchByKick)
	return nil
}

// RoomInfo returns the room's host, seats, anchors and audience
// (getRoomInfo); any member may ask.
func (m *Manager) RoomInfo(_ context.Context, a protocol.Actor, args RoomArgs) (RoomInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.bySession[a.Session][args.RoomID]
	r := m.rooms[args.RoomID]
	if mem == nil || r == nil {
		return RoomInfo{}, ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	return r.info(), nil
}

// Info returns a room's host, seats, anchors and audience; ok is false when
// there is no such room.
func (m *Manager) Info(roomID string) (RoomInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.rooms[roomID]; r != nil {
		return r.info(), true
	}
	return RoomInfo{}, false
}

// GrantSeat puts userID, a member of roomID, on a seat by its host's
// decision: the host accepted userID's mic request, or userID accepted the
// host's mic invitation (the calls package recognises both invitations).
// host must be the room's host. userID is told the outcome by onSwitchRole
// (with the error's code when it failed, e.g. no free seat) and can publish
// once it has it. via is SwitchByRequest or SwitchByInvitation.
func (m *Manager) GrantSeat(roomID, host, userID, via string) error {
	m.mu.Lock()
	r := m.rooms[roomID]
	var mem *member
	if r != nil {
		mem = r.members[userID]
	}
	var err error
	switch {
	case mem == nil || mem.gone:
		err = ErrNotInRoom.WithMessage("%q is not in room %q", userID, roomID)
	case r.host != host:
		err = ErrNotHost.WithMessage("%q is not the host of room %q", host, roomID)
	default:
		_, err = m.switchLocked(mem, RoleAnchor, noSeat, true, SeatLeft)
	}
	if err != nil {
		if mem != nil && !mem.gone && !mem.detached {
			code, msg := 0, err.Error()
			if pe, ok := err.(*protocol.Error); ok {
				code, msg = pe.Code, pe.Message
			}
			deliver(mem.sess, EvSwitchRole, SwitchRoleEvent{RoomID: roomID, Role: mem.role, SeatIndex: r.seatOf(userID),
				Reason: via, Code: code, Message: msg})
		}
		m.mu.Unlock()
		return err
	}
	m.mu.Unlock()
	m.finishSwitch(mem, RoleAnchor, via)
	return nil
}

// leaveRoomLocked updates r's seats and host for mem, who is leaving it
// (already out of r.members). A host who leaves hands the room to the anchor
// on the lowest seat, who leaves its seat; with no anchor left the room is
// closed: every other member gets onExitRoom reason 2. replacing: the same
// user enters again at once (another device, a reload): the host stays.
func (m *Manager) leaveRoomLocked(r *room, mem *member, replacing bool) {
	m.standLocked(r, mem.user, SeatExited)
	if mem.role == RoleAudience {
		m.audienceChangedLocked(r)
	}
	if r.host != mem.user || replacing || len(r.members) == 0 {
		return
	}
	next := ""
	for _, u := range r.seats {
		if u != "" {
			next = u
			break
		}
	}
	if next == "" {
		m.log.Info("host left and no anchor is on a seat: room closed", "room", r.id, "host", mem.user)
		r.host = ""
		for _, o := range sortedMembers(r) {
			if p := m.removeLocked(o, LeaveKicked, ExitDismissed); p != nil {
				m.closeLater(p)
			}
		}
		return
	}
	r.host = next
	m.log.Info("host left: room handed on", "room", r.id, "from", mem.user, "to", next)
	m.standLocked(r, next, SeatToHost)
	m.broadcastLocked(r, nil, EvRoomHostChanged, HostEvent{RoomID: r.id, Host: next})
	m.audienceChangedLocked(r)
}

// closeLater closes p in a goroutine that Close waits for (a participant of
// a room closed under mu).
func (m *Manager) closeLater(p *media.Participant) {
	m.timers.Add(1)
	go func() {
		defer m.timers.Done()
		p.Close()
	}()
}
