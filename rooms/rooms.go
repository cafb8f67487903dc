// Package rooms owns who is in which media room and who may enter, sends
// the TRTC room events (onEnterRoom, onRemoteUserEnterRoom,
// onUserVideoAvailable, …) and drives the media SFU.
package rooms

import (
	"log/slog"
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
	LeaveSwitchedRole   LeaveReason = 3 // switched to audience: still in the room, no longer seen (TRTC's reason 3)
	// LeaveMediaNodeLost: cluster mode, the room's media node let the
	// member go (it shut down, or lost the room's ownership: DismissLost);
	// the member got onExitRoom reason 4 and enters the room again, maybe
	// on another node. Not a departure: calls keep the call going for
	// calls.setup_timeout while the member comes back.
	LeaveMediaNodeLost LeaveReason = 4
)

// ExitReason is onExitRoom's reason.
type ExitReason int

const (
	ExitLeft           ExitReason = 0 // the participant called exitRoom
	ExitKicked         ExitReason = 1 // removed by the server, or the same user entered from another device
	ExitDismissed      ExitReason = 2 // the room was closed (e.g. its call ended)
	ExitConnectionLost ExitReason = 3 // its media failed past the grace period, or never connected within Config.ConnectTimeout
	// ExitMediaNodeLost: cluster mode, the room's media node was lost (or
	// lost the room's ownership): enter the room again (ROOMS.md, "Cluster
	// mode").
	ExitMediaNodeLost ExitReason = 4
)

// DefaultConnectTimeout is Config.ConnectTimeout's default
// (media.connect_timeout).
const DefaultConnectTimeout = 30 * time.Second

// DefaultRoomSeats and DefaultMaxRoomSeats are Config.RoomSeats' and
// Config.MaxRoomSeats' defaults (limits.room_seats, limits.max_room_seats).
const (
	DefaultRoomSeats    = 8
	DefaultMaxRoomSeats = 50
)

// DefaultRejoinGrace is Config.RejoinGrace's value in the embedded config
// file (media.rejoin_grace).
const DefaultRejoinGrace = 15 * time.Second

// Config bounds rooms.
type Config struct {
	MaxRoomsPerUser int `mapstructure:"max_rooms_per_user"`    // rooms one user may be in at once; 0: no limit
	MaxParticipants int `mapstructure:"max_room_participants"` // participants in one room; 0: no limit
	// RoomSeats is the number of seats of a room whose creator gives none
	// in enterRoom (limits.room_seats): anchors besides the host at once.
	RoomSeats int `mapstructure:"room_seats"`
	// MaxRoomSeats is the most seats a creator may ask for, and the seats
	// of a call's room (limits.max_room_seats).
	MaxRoomSeats int `mapstructure:"max_room_seats"`
	// ConnectTimeout removes a member whose media has not connected this
	// long after it entered (onExitRoom reason 3), so that a client that
	// enters and never completes ICE does not hold a place for as long as
	// its WebSocket lives (media.connect_timeout). 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration `mapstructure:"-"`
	// RejoinGrace is how long a member whose WebSocket closed keeps its
	// place (its media, no event to the others) waiting for its client to
	// enter again with its resumeToken (media.rejoin_grace). 0: no grace,
	// the member leaves when its connection closes.
	RejoinGrace time.Duration `mapstructure:"-"`
}

// DefaultConfig is the embedded config file's values for rooms.
func DefaultConfig() Config {
	return Config{MaxRoomsPerUser: 4, MaxParticipants: 50, RoomSeats: DefaultRoomSeats, MaxRoomSeats: DefaultMaxRoomSeats, ConnectTimeout: DefaultConnectTimeout, RejoinGrace: DefaultRejoinGrace}
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
	Tokens TokenVerifier   // nil: room tokens are refused
	TURN   TURNCredentials // nil: no embedded TURN server
	Clock  protocol.Clock
	Logger *slog.Logger
}

// Manager owns rooms and their members.
//
// Concurrency: mu guards rooms, claims, bySession, byUser, admitters,
// observers, closed and every member's fields (its connect and rejoin grace
// timers and its session too: a resume rebinds a member to a new session).
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
	turn   TURNCredentials
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
	// host is the user ID of the room's host: its creator, then whom it
	// was handed to (seats.go). The host never sits on a seat.
	host string
	// seats holds the user ID on each seat, "" for a free one. Every
	// anchor but the host sits on one.
	seats    []string
	seatMode SeatMode
}

type member struct {
	user    string
	roomID  string
	role    Role
	sess    protocol.Session
	claim   *Claim             // the claim it entered through; nil: a room token
	part    *media.Participant // nil while joining
	entered time.Time
	// resumeToken is the secret of the enterRoom reply with which the
	// member's client resumes it from a new connection (rejoin.go).
	resumeToken string
	// detached: sess closed and the member waits out its rejoin grace
	// (graceBy pending); it is in no bySession entry meanwhile.
	detached bool
	graceBy  protocol.Timer
	graceGen int // tells a stale grace timer from the current one

	// pubSync orders the media changes of this member's role switches
	// (syncPublish); taken without mu, never while holding it.
	pubSync sync.Mutex

	connected  bool
	audioTrack bool // a published audio track is live
	videoTrack bool
	audioMuted bool
	videoMuted bool
	gone       bool
	// connectBy removes the member if its media has not connected in time;
	// nil once connected or gone.
	connectBy protocol.Timer
}

func (m *member) audio() bool { return m.audioTrack && !m.audioMuted }
func (m *member) video() bool { return m.videoTrack && !m.videoMuted }

// NewManager returns a Manager.
func NewManager(p Params) *Manager {
	m := &Manager{cfg: p.Config, sfu: p.SFU, tokens: p.Tokens, turn: p.TURN, clock: p.Clock, log: p.Logger,
		rooms: map[string]*room{}, claims: map[string]*Claim{}, bySession: map[protocol.Session]map[string]*member{},
		byUser: map[string]map[string]*member{}, notes: opsqueue.New()}
	m.notes.Start()
	if m.clock == nil {
		m.clock = protocol.SystemClock{}
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.cfg.RoomSeats <= 0 {
		m.cfg.RoomSeats = DefaultRoomSeats
	}
	if m.cfg.MaxRoomSeats <= 0 {
		m.cfg.MaxRoomSeats = DefaultMaxRoomSeats
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

// HasRoom reports whether roomID has a room here (members, even joining).
func (m *Manager) HasRoom(roomID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[roomID] != nil
}

// InRoom reports whether userID is a member of roomID here (even joining
// or detached).
func (m *Manager) InRoom(roomID, userID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[roomID]
	return r != nil && r.members[userID] != nil
}

// Memberships returns, for each room here, the user IDs of its members
// (joining and detached ones too).
func (m *Manager) Memberships() map[string][]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]string, len(m.rooms))
	for id, r := range m.rooms {
		users := make([]string, 0, len(r.members))
		for u := range r.members {
			users = append(users, u)
		}
		out[id] = users
	}
	return out
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
			m.stopGraceLocked(mem)
		}
	}
	m.mu.Unlock()
	m.timers.Wait()
	m.notes.Close()
}
