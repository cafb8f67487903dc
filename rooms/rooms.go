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
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
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
	ExitConnectionLost ExitReason = 3 // its media failed past the grace period, or never connected within Config.ConnectTimeout
)

// DefaultConnectTimeout is Config.ConnectTimeout's default
// (media.connect_timeout).
const DefaultConnectTimeout = 30 * time.Second

// Config bounds rooms.
type Config struct {
	MaxRoomsPerUser int `mapstructure:"max_rooms_per_user"`    // rooms one user may be in at once; 0: no limit
	MaxParticipants int `mapstructure:"max_room_participants"` // participants in one room; 0: no limit
	// ConnectTimeout removes a member whose media has not connected this
	// long after it entered (onExitRoom reason 3), so that a client that
	// enters and never completes ICE does not hold a place for as long as
	// its WebSocket lives (media.connect_timeout). 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration `mapstructure:"-"`
}

// DefaultConfig is the embedded config file's values for rooms.
func DefaultConfig() Config {
	return Config{MaxRoomsPerUser: 4, MaxParticipants: 50, ConnectTimeout: DefaultConnectTimeout}
}

// Admitter decides whether a user may enter a room without a room token:
// it returns the claim on roomID through which userID is admitted, or nil.
// The calls package admits a call's inviter and the invitees who accepted,
// through the call's claim on its room ID.
type Admitter interface {
	Admit(userID, roomID string) *Claim
}

// A Claim reserves a room ID for one admission path other than room
// tokens (a call). A room ID belongs to whoever created it, through one
// path: while a claim holds it, only the users its admitter admits through
// that claim may enter, and room tokens for it are refused; an unclaimed
// room ID is entered only with a room token. Claim and Release make and end
// claims.
type Claim struct {
	roomID string
}

// RoomID is the claimed room ID.
func (c *Claim) RoomID() string { return c.roomID }

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
	Clock  protocol.Clock
	Logger *slog.Logger
}

// Manager owns rooms and their members.
//
// Concurrency: mu guards rooms, claims, bySession, byUser, admitters,
// observers, closed and every member's fields (its connect timer too).
// Whether a room ID is free and its claim (Claim), and which path may enter
// it and the entry (Enter), are each decided in one critical section under
// mu. It is never held across a call into media (Join, HandleSignal, Close),
// into an Admitter, or into an Observer; Session.Deliver (non-blocking) is
// called with it held so that each session sees room events in the order
// they were decided.
type Manager struct {
	cfg    Config
	sfu    *media.SFU
	tokens TokenVerifier
	clock  protocol.Clock
	log    *slog.Logger

	mu        sync.Mutex
	rooms     map[string]*room
	claims    map[string]*Claim                       // by room ID
	bySession map[protocol.Session]map[string]*member // session → roomID → member
	byUser    map[string]map[string]*member           // user → roomID → member
	admitters []Admitter
	observers []Observer
	closed    bool
	timers    sync.WaitGroup // connect timer callbacks armed and not stopped

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
	sess    protocol.Session
	claim   *Claim             // the claim it entered through; nil: a room token
	part    *media.Participant // nil while joining
	entered time.Time

	connected  bool
	audioTrack bool // a published audio track is live
	videoTrack bool
	audioMuted bool
	videoMuted bool
	gone       bool
	seq        int // orders observer calls
	// connectBy removes the member if its media has not connected in time;
	// nil once connected or gone.
	connectBy protocol.Timer
}

func (m *member) audio() bool { return m.audioTrack && !m.audioMuted }
func (m *member) video() bool { return m.videoTrack && !m.videoMuted }

// NewManager returns a Manager.
func NewManager(p Params) *Manager {
	m := &Manager{cfg: p.Config, sfu: p.SFU, tokens: p.Tokens, clock: p.Clock, log: p.Logger,
		rooms: map[string]*room{}, claims: map[string]*Claim{}, bySession: map[protocol.Session]map[string]*member{},
		byUser: map[string]map[string]*member{}, notes: opsqueue.New()}
	m.notes.Start()
	if m.clock == nil {
		m.clock = protocol.SystemClock{}
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.cfg.ConnectTimeout <= 0 {
		m.cfg.ConnectTimeout = DefaultConnectTimeout
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

// admission is what may let a user into a room: a valid room token, or a
// claim an admitter admits them through. Enter checks it against the room
// ID's claim under mu (pathLocked).
type admission struct {
	token bool
	claim *Claim
}

var errNotAdmitted = ErrNotAdmitted.WithMessage("not admitted to this room: accept the call or present a room token")

// admission finds how user could enter roomID (outside mu: it calls the
// admitters).
func (m *Manager) admission(user, roomID, token string) (admission, error) {
	var adm admission
	var tokenErr error
	if token != "" {
		tokenErr = m.checkToken(user, roomID, token)
		adm.token = tokenErr == nil
	}
	m.mu.Lock()
	admitters := slices.Clone(m.admitters)
	m.mu.Unlock()
	for _, a := range admitters {
		if c := a.Admit(user, roomID); c != nil && c.roomID == roomID {
			adm.claim = c
			break
		}
	}
	if !adm.token && adm.claim == nil {
		if tokenErr != nil {
			return adm, tokenErr
		}
		return adm, errNotAdmitted
	}
	return adm, nil
}

func (m *Manager) checkToken(user, roomID, token string) error {
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

// pathLocked is the rule of one admission path per room ID: a claimed room
// ID is entered only through its claim, an unclaimed one only with a room
// token. It returns the claim entered through (nil: the token).
func (m *Manager) pathLocked(roomID string, adm admission) (*Claim, error) {
	if c := m.claims[roomID]; c != nil {
		if adm.claim == c {
			return c, nil
		}
		return nil, errNotAdmitted
	}
	if adm.token {
		return nil, nil
	}
	return nil, errNotAdmitted
}

// Claim reserves roomID for a new admission path (a call). It fails with
// ErrRoomTaken when the ID has a room (any member, even one still joining)
// or another claim; the check and the reservation are one critical section,
// so a concurrent room-token entry and a claim never both get the ID.
func (m *Manager) Claim(roomID string) (*Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[roomID] != nil || m.claims[roomID] != nil {
		return nil, ErrRoomTaken
	}
	c := &Claim{roomID: roomID}
	m.claims[roomID] = c
	return c, nil
}

// Release ends a claim: the members who entered through it leave as when
// a room is dismissed (onExitRoom reason 2), and the room ID is free again.
// It does nothing for a claim already released.
func (m *Manager) Release(c *Claim) {
	m.mu.Lock()
	if m.claims[c.roomID] != c {
		m.mu.Unlock()
		return
	}
	delete(m.claims, c.roomID)
	var parts []*media.Participant
	if r := m.rooms[c.roomID]; r != nil {
		for _, mem := range sortedMembers(r) {
			if mem.claim != c {
				continue
			}
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

// LeaveClaim takes a user who entered through claim c out of its room as
// if they had called exitRoom (the calls layer's hangup); it reports
// whether they were in it. A member who entered otherwise stays.
func (m *Manager) LeaveClaim(c *Claim, userID string) bool {
	m.mu.Lock()
	var mem *member
	if r := m.rooms[c.roomID]; r != nil {
		mem = r.members[userID]
	}
	if mem == nil || mem.claim != c {
		m.mu.Unlock()
		return false
	}
	part := m.removeLocked(mem, LeaveLeft, ExitLeft, false)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return true
}

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
	adm, err := m.admission(a.UserID, args.RoomID, args.RoomToken)
	if err != nil {
		return EnterResult{}, err
	}

	now := m.clock.Now()
	mem := &member{user: a.UserID, roomID: args.RoomID, role: role, sess: a.Session, entered: now}
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
	m.armConnectLocked(mem)
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
func (m *Manager) Exit(_ context.Context, a protocol.Actor, args RoomArgs) error {
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
func (m *Manager) Signal(_ context.Context, a protocol.Actor, args SignalArgs) error {
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
// others get onRemoteUserLeaveRoom with reason 1 (connection lost).
func (m *Manager) SessionClosed(s protocol.Session) {
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
// ExitConnectionLost and tell is false); tell is set when mem was replaced by
// another connection, or its connection lives on (its media never connected).
func (m *Manager) removeLocked(mem *member, why LeaveReason, exit ExitReason, tell bool) *media.Participant {
	if mem.gone {
		return nil
	}
	mem.gone = true
	m.stopConnectLocked(mem)
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
	if exit != ExitConnectionLost || tell {
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
	deliver(mem.sess, EvRtcSignal, SignalArgs{RoomID: mem.roomID, Signal: s})
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
	for _, r := range m.rooms { // members who entered while the rooms were dismissed
		for _, mem := range r.members {
			m.stopConnectLocked(mem)
		}
	}
	m.mu.Unlock()
	m.timers.Wait()
	m.notes.Close()
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
	part := m.removeLocked(mem, LeaveConnectionLost, ExitConnectionLost, true)
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
	m.removeLocked(mem, why, exit, true)
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
