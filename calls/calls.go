// Package calls runs one-to-one and group audio/video calls on top of
// signaling (the invitations) and rooms (the media): it recognises call
// invitations by their data, tracks busy lines, admits a call's accepted
// participants to its room, records start times and durations, sends the
// call-end invitation of TRTC's step 5, and keeps durable call records.
package calls

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// BusyPolicy says what happens to a call invitation to a busy user.
type BusyPolicy string

const (
	BusyReject BusyPolicy = "reject" // the server rejects at once with line_busy data
	BusyRing   BusyPolicy = "ring"   // delivered anyway; the app may reject with line_busy itself
)

// Config configures calls.
type Config struct {
	BusyPolicy BusyPolicy `mapstructure:"busy_policy"`
	// BusyIncludesRinging makes a caller busy while their outgoing call
	// still rings.
	BusyIncludesRinging bool `mapstructure:"busy_includes_ringing"`
	// SetupTimeout ends a call that was accepted but whose media never
	// connected (result failed).
	SetupTimeout time.Duration `mapstructure:"setup_timeout"`
	// Heartbeat is how often the server records that it is alive, so that
	// calls running at a crash end at the last heartbeat after a restart.
	Heartbeat time.Duration `mapstructure:"heartbeat"`
}

// DefaultConfig is the embedded config file's calls section (a test of
// web/stack checks that they agree).
func DefaultConfig() Config {
	return Config{BusyPolicy: BusyReject, SetupTimeout: 30 * time.Second, Heartbeat: 5 * time.Second}
}

// Metrics receives call figures (the transport exports them to
// Prometheus). Methods must not block.
type Metrics interface {
	// CallBegan reports a call that began, setup being the time from the
	// first ring to the second participant's media connecting.
	CallBegan(setup time.Duration)
	// CallEnded reports a call's end and result.
	CallEnded(result Result)
}

type noMetrics struct{}

func (noMetrics) CallBegan(time.Duration) {}
func (noMetrics) CallEnded(Result)        {}

// Params are the manager's dependencies.
type Params struct {
	Metrics Metrics // nil: none
	Config  Config
	Engine  Invitations // the signaling engine
	Rooms   Rooms       // nil: calls without rooms (tests)
	Records RecordStore
	Clock   protocol.Clock
	Logger  *slog.Logger

	Observer Observer // nil: none
}

// Manager owns the calls.
//
// Concurrency: mu guards calls, byInvite, byRoom, byUser, closed and every
// call's fields. It is never held across a call into the engine, rooms or
// the record store: operations decide under mu and return the work to do
// after unlocking (a func), which runs in order in the calling goroutine.
// Lock order: none is held while taking another package's lock.
type Manager struct {
	cfg   Config
	eng   Invitations
	rooms Rooms
	rec   RecordStore
	clock protocol.Clock
	log   *slog.Logger
	saves *saveQueue
	stats Metrics
	obs   Observer // nil: none

	mu       sync.Mutex
	closed   bool
	calls    map[string]*call          // running calls by call ID
	byInvite map[string]*call          // every live invitation of a call, running or ended
	byRoom   map[string]*call          // running calls by room ID
	byUser   map[string]map[*call]bool // running calls by participant
	hbTimer  protocol.Timer
	wg       sync.WaitGroup // timer callbacks
}

type call struct {
	rec       CallRecord
	data      string                     // the call data of the first invitation (room_id set)
	idx       map[string]int             // user → index in rec.Participants
	admitted  map[string]bool            // may enter the room: caller, accepted invitees, joiners
	connected map[string]bool            // media connected in the room now
	pending   map[string]map[string]bool // inviteID → invitees still ringing
	// creating holds, for each invitation registered but not yet created
	// in the engine (its ring not yet sent), a channel closed when that is
	// settled: a glare merge waits for it before accepting.
	creating map[string]chan struct{}
	claim    *rooms.Claim // the call's room ID; nil without rooms
	ended    bool
	hungUp   map[string]bool // users who hung up (the next leave is a hangup)
	setup    protocol.Timer
}

func (c *call) began() bool { return !c.rec.BeganAt.IsZero() }

func (c *call) part(user string) *ParticipantRecord {
	if i, ok := c.idx[user]; ok {
		return &c.rec.Participants[i]
	}
	return nil
}

func (c *call) addPart(user string, role Role, at time.Time) *ParticipantRecord {
	if p := c.part(user); p != nil {
		return p
	}
	c.idx[user] = len(c.rec.Participants)
	c.rec.Participants = append(c.rec.Participants, ParticipantRecord{UserID: user, Role: role, InvitedAt: at})
	return &c.rec.Participants[len(c.rec.Participants)-1]
}

func (c *call) ringing() bool {
	for _, m := range c.pending {
		if len(m) > 0 {
			return true
		}
	}
	return false
}

// pendingInviteID returns the ID of the invitation user is still being rung
// by, or "" if none is.
func (c *call) pendingInviteID(user string) string {
	for id, m := range c.pending {
		if m[user] {
			return id
		}
	}
	return ""
}

// anyAnswered reports whether an invitee accepted or a member joined.
func (c *call) anyAnswered() bool {
	for u := range c.admitted {
		if u != c.rec.Caller {
			return true
		}
	}
	return false
}

// NewManager returns a Manager, ending with reason server_restart the calls
// that were running when the server last stopped.
func NewManager(ctx context.Context, p Params) (*Manager, error) {
	m := &Manager{cfg: p.Config, eng: p.Engine, rooms: p.Rooms, rec: p.Records, clock: p.Clock, log: p.Logger, stats: p.Metrics, obs: p.Observer,
		calls: map[string]*call{}, byInvite: map[string]*call{}, byRoom: map[string]*call{}, byUser: map[string]map[*call]bool{}}
	if m.clock == nil {
		m.clock = protocol.SystemClock{}
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.cfg.BusyPolicy == "" {
		m.cfg.BusyPolicy = BusyReject
	}
	if m.stats == nil {
		m.stats = noMetrics{}
	}
	if err := m.recoverOpenCalls(ctx); err != nil {
		return nil, err
	}
	m.saves = newSaveQueue(m.rec, m.log)
	if m.rooms != nil {
		m.rooms.AddAdmitter(m)
		m.rooms.AddObserver(m)
	}
	m.eng.AddObserver(m)
	if g, ok := m.rooms.(SeatGranter); ok { // live rooms' mic requests and invitations (seats.go)
		m.eng.AddObserver(seatInvitations{rooms: g, log: m.log})
	}
	m.mu.Lock()
	m.heartbeatLocked()
	m.mu.Unlock()
	return m, nil
}

// recoverOpenCalls ends the calls left running by a crash or stop at the
// last heartbeat, with reason server_restart.
func (m *Manager) recoverOpenCalls(ctx context.Context) error {
	open, err := m.rec.OpenCalls(ctx)
	if err != nil {
		return err
	}
	last, err := m.rec.LastHeartbeat(ctx)
	if err != nil {
		return err
	}
	for _, r := range open {
		end := last
		if end.Before(r.CreatedAt) {
			end = r.CreatedAt
		}
		if !r.BeganAt.IsZero() && end.Before(r.BeganAt) {
			end = r.BeganAt
		}
		r.EndedAt, r.EndReason, r.EndedBy = end, EndServerRestart, ""
		if r.BeganAt.IsZero() {
			r.Result = ResultFailed
		} else {
			r.Result, r.Duration = ResultCompleted, end.Sub(r.BeganAt)
		}
		for i := range r.Participants {
			p := &r.Participants[i]
			if !p.JoinedAt.IsZero() && p.LeftAt.IsZero() {
				p.LeftAt = end
			}
			if p.Result == "" {
				p.Result = participantResult(r, p)
			}
		}
		if err := m.rec.SaveCall(ctx, r); err != nil {
			return err
		}
		m.log.Info("call ended by server restart", "call", r.CallID, "duration", r.Duration)
	}
	return nil
}

func (m *Manager) heartbeatLocked() {
	if m.closed || m.cfg.Heartbeat <= 0 {
		return
	}
	now := m.clock.Now()
	m.saves.heartbeat(now)
	m.wg.Add(1)
	m.hbTimer = m.clock.AfterFunc(m.cfg.Heartbeat, func() {
		defer m.wg.Done()
		m.mu.Lock()
		m.heartbeatLocked()
		m.mu.Unlock()
	})
}

// Close stops the timers and flushes the records, with a last heartbeat.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	if m.hbTimer != nil && m.hbTimer.Stop() {
		m.wg.Done()
	}
	for _, c := range m.calls {
		if c.setup != nil && c.setup.Stop() {
			m.wg.Done()
		}
	}
	m.saves.heartbeat(m.clock.Now())
	m.mu.Unlock()
	m.wg.Wait()
	m.saves.close()
}

// ---- admission and lookups ----

// Admit implements rooms.Admitter: a running call's caller, accepted
// invitees and joiners may enter its room, through the call's claim.
func (m *Manager) Admit(user, roomID string) *rooms.Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.byRoom[roomID]; c != nil && !c.ended && c.admitted[user] {
		return c.claim
	}
	return nil
}

// Busy reports whether user is busy: in a call that has begun or is being
// set up (accepted, not ended), or — with BusyIncludesRinging — placing a
// call that still rings.
func (m *Manager) Busy(user string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busyLocked(user) != nil
}

func (m *Manager) busyLocked(user string) *call {
	for c := range m.byUser[user] {
		if c.ended || !c.admitted[user] || c.hungUp[user] {
			continue
		}
		if user == c.rec.Caller && !c.began() && !c.anyAnswered() && !m.cfg.BusyIncludesRinging {
			continue
		}
		return c
	}
	return nil
}

// Active returns how many calls are running (ringing or begun).
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

// Call returns a copy of a call's record (running or not yet forgotten).
func (m *Manager) Call(callID string) (CallRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[callID]
	if c == nil {
		c = m.byInvite[callID]
	}
	if c == nil {
		return CallRecord{}, false
	}
	return copyRecord(c.rec), true
}

func (m *Manager) indexLocked(c *call, user string) {
	s := m.byUser[user]
	if s == nil {
		s = map[*call]bool{}
		m.byUser[user] = s
	}
	s[c] = true
}

func (m *Manager) unindexLocked(c *call, user string) {
	if s := m.byUser[user]; s != nil {
		delete(s, c)
		if len(s) == 0 {
			delete(m.byUser, user)
		}
	}
}

// forgetLocked removes a call from the running indexes (byInvite entries of
// invitations still ringing stay until they end).
func (m *Manager) forgetLocked(c *call) {
	delete(m.calls, c.rec.CallID)
	if m.byRoom[c.rec.RoomID] == c {
		delete(m.byRoom, c.rec.RoomID)
	}
	for _, p := range c.rec.Participants {
		m.unindexLocked(c, p.UserID)
	}
	if !c.ended {
		for id := range c.pending {
			delete(m.byInvite, id)
		}
	}
}

func (m *Manager) snapshot(c *call) CallRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copyRecord(c.rec)
}

func copyRecord(r CallRecord) CallRecord {
	r.Participants = slices.Clone(r.Participants)
	return r
}
