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
	// Seats grants seats for accepted mic invitations (seats.go); nil:
	// Rooms, if it is a SeatGranter. In cluster mode the room relay, which
	// reaches the room's media node.
	Seats SeatGranter

	// Cluster puts the manager in cluster mode (nil: standalone): the
	// calls' state is in Redis, shared with the managers of the other nodes
	// (see ClusterParams). Engine must then be in cluster mode on the same
	// Redis, and Records a *RedisRecords on it.
	Cluster *ClusterParams
}

// Manager owns the calls.
//
// Concurrency: mu guards calls, byInvite, byRoom, byUser, closed, claims,
// setups, losts, waiters and every call's fields. It is never held across a call
// into the engine, rooms, the record store or Redis: operations decide
// under mu (the memory backend of the tx, state.go) and return the work to
// do after unlocking (a func), which runs in order in the calling
// goroutine. In cluster mode (cl) the calls' state is in Redis, and the
// maps calls, byInvite, byRoom and byUser stay empty; claims (this node's
// claims on call rooms) are node-local in both modes.
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
	claims   map[string]*rooms.Claim   // this node's claims on call rooms, by call ID
	setups   map[string]protocol.Timer // setup timers by call ID (standalone)
	losts    map[string]protocol.Timer // lost deadlines by call ID (standalone)
	waiters  map[string]chan struct{}  // glare merges waiting for an invitation's creation, by invite ID (standalone)
	hbTimer  protocol.Timer
	wg       sync.WaitGroup // timer callbacks

	cl   *clusterCalls // nil: standalone
	node string        // this node's ID in cluster mode ("" standalone)
}

// call is one call's state: in standalone mode the live value in the
// manager's maps, in cluster mode a copy read from Redis for one decision
// (encoded as callState, state_redis.go).
type call struct {
	rec       CallRecord
	data      string                     // the call data of the first invitation (room_id set)
	idx       map[string]int             // user → index in rec.Participants
	admitted  map[string]bool            // may enter the room: caller, accepted invitees, joiners
	connected map[string]string          // media connected in the room now: user → the node of that room ("" standalone)
	pending   map[string]map[string]bool // inviteID → invitees still ringing
	// creating holds the invitations registered but not yet created in the
	// engine (their ring not yet sent): a glare merge waits until they are
	// settled before accepting.
	creating   map[string]bool
	ended      bool
	hungUp     map[string]bool // users who hung up (the next leave is a hangup)
	setupArmed bool            // the setup timer runs (Config.SetupTimeout)
	// lost are the participants whose room's media node let them go
	// (rooms.LeaveMediaNodeLost: it shut down or lost the room) and who
	// are expected back, by when that was: a connection lost pending
	// their return (lostLocked). The lost deadline runs while it is not
	// empty.
	lost  map[string]time.Time
	nodes []string // cluster mode: the nodes that changed it, sorted (the Redis backend keeps it)
}

func newCall(rec CallRecord, data string) *call {
	return &call{rec: rec, data: data, idx: map[string]int{}, admitted: map[string]bool{rec.Caller: true}, connected: map[string]string{},
		pending: map[string]map[string]bool{}, creating: map[string]bool{}, hungUp: map[string]bool{}, lost: map[string]time.Time{}}
}

// on reports whether user's media is connected in the call's room.
func (c *call) on(user string) bool {
	_, ok := c.connected[user]
	return ok
}

// isLost reports whether user's media node let them go and they are not
// back yet (call.lost).
func (c *call) isLost(user string) bool {
	_, ok := c.lost[user]
	return ok
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
		calls: map[string]*call{}, byInvite: map[string]*call{}, byRoom: map[string]*call{}, byUser: map[string]map[*call]bool{},
		claims: map[string]*rooms.Claim{}, setups: map[string]protocol.Timer{}, losts: map[string]protocol.Timer{}, waiters: map[string]chan struct{}{}}
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
	if p.Cluster != nil {
		cl, err := newClusterCalls(m, *p.Cluster)
		if err != nil {
			return nil, err
		}
		m.cl, m.node = cl, p.Cluster.NodeID
		if err := cl.recoverOpenCalls(ctx); err != nil {
			cl.close() // its poller's client
			return nil, err
		}
	} else if err := m.recoverOpenCalls(ctx); err != nil {
		return nil, err
	}
	m.saves = newSaveQueue(m.rec, m.log)
	if m.rooms != nil {
		m.rooms.AddAdmitter(m)
		m.rooms.AddObserver(m)
	}
	m.eng.AddObserver(m)
	if g, ok := m.rooms.(SeatGranter); ok || p.Seats != nil { // live rooms' mic requests and invitations (seats.go)
		if p.Seats != nil {
			g = p.Seats
		}
		m.eng.AddObserver(seatInvitations{rooms: g, log: m.log})
	}
	m.mu.Lock()
	m.heartbeatLocked()
	m.mu.Unlock()
	if m.cl != nil {
		if err := m.cl.start(); err != nil {
			m.Close()
			return nil, err
		}
	}
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
		endAtRestart(&r, last)
		if err := m.rec.SaveCall(ctx, r); err != nil {
			return err
		}
		m.log.Info("call ended by server restart", "call", r.CallID, "duration", r.Duration)
	}
	return nil
}

// endAtRestart ends r, running when its server(s) stopped, at the last
// heartbeat (not before it was created or began), with reason
// server_restart.
func endAtRestart(r *CallRecord, last time.Time) {
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
			p.Result = participantResult(*r, p)
		}
	}
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
// In cluster mode the setup deadlines armed here fire on the other nodes.
func (m *Manager) Close() {
	if m.cl != nil {
		m.cl.close()
	}
	m.mu.Lock()
	m.closed = true
	if m.hbTimer != nil && m.hbTimer.Stop() {
		m.wg.Done()
	}
	for _, timers := range []map[string]protocol.Timer{m.setups, m.losts} {
		for id, tm := range timers {
			delete(timers, id)
			if tm.Stop() {
				m.wg.Done()
			}
		}
	}
	m.saves.heartbeat(m.clock.Now())
	m.mu.Unlock()
	m.wg.Wait()
	m.saves.close()
}

// bg is the context of the work the manager does on its own (not for a
// request), bounded.
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// ---- admission and lookups ----

// Admit implements rooms.Admitter: a running call's caller, accepted
// invitees and joiners may enter its room, through the call's claim (in
// cluster mode this node's claim, made on first use: the participant may
// have accepted on another node).
func (m *Manager) Admit(user, roomID string) *rooms.Claim {
	ctx, cancel := bg()
	defer cancel()
	callID := ""
	err := m.view(ctx, func(t tx) {
		callID = ""
		if c := t.byRoom(roomID); c != nil && !c.ended && c.admitted[user] {
			callID = c.rec.CallID
		}
	})
	if err != nil || callID == "" {
		return nil
	}
	if m.cl != nil {
		return m.cl.localClaim(callID, roomID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.claims[callID]
}

// setClaim records this node's claim on call callID's room.
func (m *Manager) setClaim(callID string, claim *rooms.Claim) {
	m.mu.Lock()
	m.claims[callID] = claim
	m.mu.Unlock()
}

// releaseClaim ends this node's claim on call callID's room, if it has one:
// the members who entered through it leave the room.
func (m *Manager) releaseClaim(callID string) {
	m.mu.Lock()
	claim := m.claims[callID]
	delete(m.claims, callID)
	m.mu.Unlock()
	if claim != nil {
		m.rooms.Release(claim)
	}
}

// leaveRoom takes user out of call callID's room on this node (a hangup).
func (m *Manager) leaveRoom(callID, user string) {
	m.mu.Lock()
	claim := m.claims[callID]
	m.mu.Unlock()
	if claim != nil {
		m.rooms.LeaveClaim(claim, user)
	}
}

// Busy reports whether user is busy: in a call that has begun or is being
// set up (accepted, not ended), or — with BusyIncludesRinging — placing a
// call that still rings.
func (m *Manager) Busy(user string) bool {
	ctx, cancel := bg()
	defer cancel()
	busy := false
	_ = m.view(ctx, func(t tx) {
		busy = m.busyLocked(t, user) != nil
	})
	return busy
}

func (m *Manager) busyLocked(t tx, user string) *call {
	for _, c := range t.userCalls(user) {
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

// Active returns how many calls are running (ringing or begun): in cluster
// mode, in the whole cluster (-1 when Redis cannot tell).
func (m *Manager) Active() int {
	if m.cl != nil {
		return m.cl.active()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

// Call returns a copy of a call's record (running or not yet forgotten).
func (m *Manager) Call(callID string) (CallRecord, bool) {
	ctx, cancel := bg()
	defer cancel()
	var rec CallRecord
	found := false
	_ = m.view(ctx, func(t tx) {
		c := t.running(callID)
		if c == nil {
			c = t.byInvite(callID)
		}
		found = c != nil
		if found {
			rec = copyRecord(c.rec)
		}
	})
	return rec, found
}

func copyRecord(r CallRecord) CallRecord {
	r.Participants = slices.Clone(r.Participants)
	return r
}
