// Package rooms owns who is in which media room and who may enter, sends
// the TRTC room events (onEnterRoom, onRemoteUserEnterRoom,
// onUserVideoAvailable, …) and drives the media SFU.
package rooms

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/opsqueue"
	"github.com/switchboard-rtc/switchboard/signaling"
)

// Role is a participant's role in a room, as in TRTC.
type Role string

const (
	RoleAnchor   Role = "anchor"   // publishes and receives
	RoleAudience Role = "audience" // receives only; invisible to the others
)

// LeaveReason is onRemoteUserLeaveRoom's reason.
type LeaveReason int

const (
	LeaveLeft           LeaveReason = 0 // exitRoom
	LeaveConnectionLost LeaveReason = 1 // WebSocket closed or media failed past its grace period
	LeaveKicked         LeaveReason = 2 // removed by the server (another device entered, the call ended)
)

// ExitReason is onExitRoom's reason.
type ExitReason int

const (
	ExitLeft           ExitReason = 0 // the participant called exitRoom
	ExitKicked         ExitReason = 1 // removed by the server, or the same user entered from another device
	ExitDismissed      ExitReason = 2 // the room was closed (e.g. its call ended)
	ExitConnectionLost ExitReason = 3 // its media connection failed past the grace period
)

// Config bounds rooms.
type Config struct {
	MaxRoomsPerUser int `mapstructure:"max_rooms_per_user"`    // rooms one user may be in at once; 0: no limit
	MaxParticipants int `mapstructure:"max_room_participants"` // participants in one room; 0: no limit
}

// Admitter decides whether a user may enter a room without a room token.
// The calls package admits a call's inviter and the invitees who accepted.
type Admitter interface {
	Admit(userID, roomID string) bool
}

// TokenVerifier checks a room token: an HS256 JWT with sub = user and
// room = room ID, signed with the server's secret.
type TokenVerifier interface {
	VerifyRoomToken(token string) (userID, roomID string, err error)
}

// Observer learns when members' media connects and when they leave. Calls
// are begun and ended from these. Methods are called without any rooms lock
// held, in order for each member.
type Observer interface {
	MemberConnected(roomID, userID string, role Role, at time.Time)
	MemberLeft(roomID, userID string, reason LeaveReason, at time.Time)
}

// Params are the manager's dependencies.
type Params struct {
	Config Config
	SFU    *media.SFU
	Tokens TokenVerifier // nil: room tokens are refused
	Clock  signaling.Clock
	Logger *slog.Logger
}

// Manager owns rooms and their members.
//
// Concurrency: mu guards rooms, bySession, byUser, admitters and observers
// and every member's fields. It is never held across a call into media (Join,
// HandleSignal, Close), into an Admitter, or into an Observer; Session.Deliver
// (non-blocking) is called with it held so that each session sees room events
// in the order they were decided.
type Manager struct {
	cfg    Config
	sfu    *media.SFU
	tokens TokenVerifier
	clock  signaling.Clock
	log    *slog.Logger

	mu        sync.Mutex
	rooms     map[string]*room
	bySession map[signaling.Session]map[string]*member // session → roomID → member
	byUser    map[string]map[string]*member            // user → roomID → member
	admitters []Admitter
	observers []Observer
	closed    bool

	notes *opsqueue.Queue // observer calls, in decision order
}

type room struct {
	id      string
	members map[string]*member // by user ID
}

type member struct {
	user    string
	roomID  string
	role    Role
	sess    signaling.Session
	part    *media.Participant // nil while joining
	entered time.Time

	connected  bool
	audioTrack bool // a published audio track is live
	videoTrack bool
	audioMuted bool
	videoMuted bool
	gone       bool
	seq        int // orders observer calls
}

func (m *member) audio() bool { return m.audioTrack && !m.audioMuted }
func (m *member) video() bool { return m.videoTrack && !m.videoMuted }

// NewManager returns a Manager.
func NewManager(p Params) *Manager {
	m := &Manager{cfg: p.Config, sfu: p.SFU, tokens: p.Tokens, clock: p.Clock, log: p.Logger,
		rooms: map[string]*room{}, bySession: map[signaling.Session]map[string]*member{},
		byUser: map[string]map[string]*member{}, notes: opsqueue.New()}
	m.notes.Start()
	if m.clock == nil {
		m.clock = signaling.SystemClock{}
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	return m
}

// AddAdmitter adds a way to be admitted without a room token.
func (m *Manager) AddAdmitter(a Admitter) {
	m.mu.Lock()
	m.admitters = append(m.admitters, a)
	m.mu.Unlock()
}

// AddObserver adds an observer of members connecting and leaving.
func (m *Manager) AddObserver(o Observer) {
	m.mu.Lock()
	m.observers = append(m.observers, o)
	m.mu.Unlock()
}

// ValidRoomID reports whether s is 1-64 characters of [A-Za-z0-9_-].
func ValidRoomID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// admitted says whether user may enter roomID, with or without a token.
func (m *Manager) admitted(user, roomID, token string) error {
	if token != "" {
		if m.tokens == nil {
			return ErrNotAdmitted.WithMessage("room tokens are not accepted by this server")
		}
		u, r, err := m.tokens.VerifyRoomToken(token)
		if err != nil {
			return ErrNotAdmitted.WithMessage("invalid room token")
		}
		if u != user || r != roomID {
			return ErrNotAdmitted.WithMessage("the room token is for another user or room")
		}
		return nil
	}
	m.mu.Lock()
	admitters := slices.Clone(m.admitters)
	m.mu.Unlock()
	for _, a := range admitters {
		if a.Admit(user, roomID) {
			return nil
		}
	}
	return ErrNotAdmitted.WithMessage("not admitted to room %q: accept the call or present a room token", roomID)
}

// Enter puts the actor's session into a room and starts its media. The
// server's subscriber offer (onRtcSignal) may reach the client before the
// reply.
func (m *Manager) Enter(ctx context.Context, a signaling.Actor, args EnterArgs) (EnterResult, error) {
	if a.Session == nil {
		return EnterResult{}, signaling.ErrInvalidParameter.WithMessage("enterRoom needs a connection")
	}
	if !ValidRoomID(args.RoomID) {
		return EnterResult{}, signaling.ErrInvalidParameter.WithMessage("roomID must be 1-64 characters of [A-Za-z0-9_-]")
	}
	role := Role(args.Role)
	switch role {
	case "":
		role = RoleAnchor
	case RoleAnchor, RoleAudience:
	default:
		return EnterResult{}, signaling.ErrInvalidParameter.WithMessage("role must be %q or %q", RoleAnchor, RoleAudience)
	}
	if err := m.admitted(a.UserID, args.RoomID, args.RoomToken); err != nil {
		return EnterResult{}, err
	}

	now := m.clock.Now()
	mem := &member{user: a.UserID, roomID: args.RoomID, role: role, sess: a.Session, entered: now}
	m.mu.Lock()
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
	var oldPart *media.Participant
	if old != nil {
		// The same user entering again (another device, or a reload):
		// the earlier entry is replaced.
		oldPart = m.removeLocked(old, LeaveLeft, ExitKicked, true)
	}
	if r = m.rooms[args.RoomID]; r == nil {
		r = &room{id: args.RoomID, members: map[string]*member{}}
		m.rooms[r.id] = r
	}
	r.members[mem.user] = mem
	index(m.bySession, a.Session, r.id, mem)
	index(m.byUser, mem.user, r.id, mem)
	res := EnterResult{Participants: []ParticipantInfo{}, ICEServers: m.iceServers()}
	for _, o := range sortedMembers(r) {
		if o != mem && o.connected && o.role == RoleAnchor {
			res.Participants = append(res.Participants, ParticipantInfo{UserID: o.user, Audio: o.audio(), Video: o.video()})
		}
	}
	m.mu.Unlock()
	if oldPart != nil {
		oldPart.Close()
	}

	part, err := m.sfu.Join(args.RoomID, a.UserID, media.JoinOptions{
		CanPublish:  role == RoleAnchor,
		Send:        func(s media.Signal) { m.sendSignal(mem, s) },
		OnConnected: func() { m.onConnected(mem) },
		OnTrack:     func(kind string, on bool) { m.onTrack(mem, kind, on) },
		OnGone:      func(reason media.LeaveReason) { m.onGone(mem, reason) },
	})
	if err != nil {
		m.log.Warn("media join failed", "room", args.RoomID, "user", a.UserID, "err", err)
		m.mu.Lock()
		m.removeLocked(mem, LeaveLeft, ExitLeft, false)
		m.mu.Unlock()
		return EnterResult{}, ErrMediaUnavailable
	}
	m.mu.Lock()
	gone := mem.gone
	if !gone {
		mem.part = part
	}
	m.mu.Unlock()
	if gone { // exitRoom or the session's end raced the join
		part.Close()
		return EnterResult{}, ErrNotInRoom.WithMessage("left room %q while entering", args.RoomID)
	}
	return res, nil
}

func (m *Manager) iceServers() []media.ICEServer {
	s := m.sfu.ICEServers()
	if s == nil {
		s = []media.ICEServer{}
	}
	return s
}

// Exit takes the actor's session out of a room.
func (m *Manager) Exit(_ context.Context, a signaling.Actor, args RoomArgs) error {
	m.mu.Lock()
	mem := m.bySession[a.Session][args.RoomID]
	if mem == nil {
		m.mu.Unlock()
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
	}
	part := m.removeLocked(mem, LeaveLeft, ExitLeft, false)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return nil
}

// Signal relays a client's WebRTC negotiation message to its media session.
func (m *Manager) Signal(_ context.Context, a signaling.Actor, args SignalArgs) error {
	m.mu.Lock()
	mem := m.bySession[a.Session][args.RoomID]
	var part *media.Participant
	if mem != nil {
		part = mem.part
	}
	m.mu.Unlock()
	if part == nil {
		return ErrNotInRoom.WithMessage("not in room %q", args.RoomID)
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
func (m *Manager) Mute(_ context.Context, a signaling.Actor, args MuteArgs, kind string) error {
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
// others get onRemoteUserLeaveRoom with reason 1 (connection lost).
func (m *Manager) SessionClosed(s signaling.Session) {
	m.mu.Lock()
	var parts []*media.Participant
	for _, mem := range m.bySession[s] {
		if p := m.removeLocked(mem, LeaveConnectionLost, ExitConnectionLost, true); p != nil {
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
	part := m.removeLocked(mem, why, exit, false)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return true
}

// Dismiss closes a room: every member gets onExitRoom with reason 2.
func (m *Manager) Dismiss(roomID string) {
	m.mu.Lock()
	var parts []*media.Participant
	if r := m.rooms[roomID]; r != nil {
		for _, mem := range sortedMembers(r) {
			if p := m.removeLocked(mem, LeaveKicked, ExitDismissed, false); p != nil {
				parts = append(parts, p)
			}
		}
	}
	m.mu.Unlock()
	for _, p := range parts {
		p.Close()
	}
}

// Members lists a room's members whose media is connected.
func (m *Manager) Members(roomID string) []ParticipantInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ParticipantInfo
	if r := m.rooms[roomID]; r != nil {
		for _, mem := range sortedMembers(r) {
			if mem.connected {
				out = append(out, ParticipantInfo{UserID: mem.user, Audio: mem.audio(), Video: mem.video()})
			}
		}
	}
	return out
}

// Counts returns how many rooms and members exist.
func (m *Manager) Counts() (rooms, members int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rooms {
		members += len(r.members)
	}
	return len(m.rooms), members
}

// RoomCount returns how many rooms exist.
func (m *Manager) RoomCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rooms)
}

// ---- internals ----

// removeLocked takes mem out of its room once and tells everyone. It
// returns the media participant to close (outside mu), if any. mem's own
// session gets onExitRoom unless its connection is gone (exit is
// ExitConnectionLost and mem was not replaced by another connection).
func (m *Manager) removeLocked(mem *member, why LeaveReason, exit ExitReason, replaced bool) *media.Participant {
	if mem.gone {
		return nil
	}
	mem.gone = true
	r := m.rooms[mem.roomID]
	if r != nil && r.members[mem.user] == mem {
		delete(r.members, mem.user)
		if len(r.members) == 0 {
			delete(m.rooms, r.id)
		}
	}
	unindex(m.bySession, mem.sess, mem.roomID, mem)
	unindex(m.byUser, mem.user, mem.roomID, mem)
	now := m.clock.Now()
	if mem.connected && mem.role == RoleAnchor && r != nil {
		m.broadcastLocked(r, mem, EvRemoteUserLeaveRoom, RemoteLeaveEvent{RoomID: r.id, UserID: mem.user, Reason: int(why)})
	}
	if exit != ExitConnectionLost || replaced {
		deliver(mem.sess, EvExitRoom, ExitRoomEvent{RoomID: mem.roomID, Reason: int(exit)})
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
	frame, err := signaling.EncodeEvent(name, data)
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

func deliver(s signaling.Session, name string, data any) {
	if frame, err := signaling.EncodeEvent(name, data); err == nil {
		s.Deliver(frame)
	}
}

func (m *Manager) sendSignal(mem *member, s media.Signal) {
	deliver(mem.sess, EvRtcSignal, SignalArgs{RoomID: mem.roomID, Signal: s})
}

func (m *Manager) onConnected(mem *member) {
	m.mu.Lock()
	if mem.gone || mem.connected {
		m.mu.Unlock()
		return
	}
	mem.connected = true
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

// Close removes every member (onExitRoom reason 2), then stops the
// observer goroutine after it delivered what was queued. The SFU is not
// closed: it belongs to the caller.
func (m *Manager) Close() {
	m.mu.Lock()
	ids := make([]string, 0, len(m.rooms))
	for id := range m.rooms {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.Dismiss(id)
	}
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.notes.Close()
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
	m.removeLocked(mem, why, exit, false)
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
