// Package calls runs one-to-one and group audio/video calls on top of
// signaling (the invitations) and rooms (the media): it recognises call
// invitations by their data, tracks busy lines, admits a call's accepted
// participants to its room, records start times and durations, sends the
// call-end invitation of TRTC's step 5, and keeps durable call records.
package calls

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
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
	Engine  *signaling.Engine
	Rooms   *rooms.Manager
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
	eng   *signaling.Engine
	rooms *rooms.Manager
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
		r.EndedAt, r.EndReason, r.EndedBy = end, "server_restart", ""
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

// ---- starting calls ----

// invite is the invite and inviteInGroup op: a call when its data is a
// call's, plain signaling otherwise. The data is the client's: call-end
// data is marked as such (ClientData).
func (m *Manager) invite(ctx context.Context, a protocol.Actor, spec signaling.InvitationSpec) (any, error) {
	data, err := ClientData(spec.Data)
	if err != nil {
		return nil, err
	}
	spec.Data = data
	cd, isCall, err := ParseCallData(spec.Data)
	if err != nil {
		return nil, err
	}
	if !isCall || !cd.IsCallStart() {
		id, err := m.eng.CreateInvitation(ctx, a, spec)
		if err != nil {
			return nil, err
		}
		return protocol.InviteResult{InviteID: id}, nil
	}
	return m.startCall(ctx, a, spec, cd, false)
}

// glareData is the accept data of a call merged by glare.
const glareData = `{"businessID":"av_call","version":4,"data":{"cmd":"accept","glare":true}}`

// startCall places a call. composed says the server built the data (the
// call and groupCall ops): it then carries the call ID too; an app's own
// data is passed on as it is, but for a room_id added when it had none.
//
// The glare check and the registration of the new call with its ringing
// invitees are one critical section, so two users calling each other at
// the same instant make one call. The call then claims its room ID from
// rooms (refused when the ID is not free) before anyone rings.
func (m *Manager) startCall(ctx context.Context, a protocol.Actor, spec signaling.InvitationSpec, cd CallData, composed bool) (any, error) {
	roomID := cd.RoomID
	if roomID == "" {
		roomID = m.eng.NewID("call_")
		spec.Data = cd.WithRoomID(roomID)
		if err := m.checkData(spec.Data); err != nil {
			return nil, err
		}
	}
	if !rooms.ValidRoomID(roomID) {
		return nil, ErrBadCallData.WithMessage("room_id must be 1-64 characters of [A-Za-z0-9_-]")
	}
	id := m.eng.NewID("inv_")
	if composed {
		spec.Data = cd.WithIDs(roomID, id)
	}
	var c *call
	var busy []string
	var over *call // a call to merge with whose invitation ended meanwhile
	for c == nil {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, protocol.ErrShuttingDown
		}
		// Glare: A calls B while B's call to A still rings. The call that
		// rang first wins: A accepts it (the server acts for A) instead of
		// placing a second call, and learns its callID and roomID.
		if g, inviteID, creating := m.glareLocked(a.UserID, spec, over); g != nil {
			m.mu.Unlock()
			if creating != nil {
				// B's call is registered but its invitation not created
				// yet: accept once it is (B's reply and ring come first).
				select {
				case <-creating:
				case <-ctx.Done():
					return nil, protocol.ErrStoreUnavailable.WithMessage("the callee's call to you is still being placed; retry")
				}
				continue
			}
			err := m.answer(ctx, a, protocol.InviteIDArgs{InviteID: inviteID, Data: glareData}, signaling.ActionAccept)
			if err == nil {
				m.log.Info("glare: calls merged", "call", g.rec.CallID, "caller", g.rec.Caller, "callee", a.UserID)
				return CallResult{InviteID: inviteID, CallID: g.rec.CallID, RoomID: g.rec.RoomID, Merged: true}, nil
			}
			if !errors.Is(err, ErrCallEnded) && !errors.Is(err, protocol.ErrInvalidInviteID) {
				return nil, err // e.g. the store failed: nothing changed
			}
			over = g // it ended meanwhile: look again, then place the call
			continue
		}
		if m.byRoom[roomID] != nil {
			m.mu.Unlock()
			return nil, m.roomUnavailable(a, spec)
		}
		now := m.clock.Now()
		c = &call{
			rec:  CallRecord{CallID: id, Caller: a.UserID, GroupID: spec.GroupID, RoomID: roomID, MediaType: cd.MediaType(), CreatedAt: now},
			data: spec.Data, idx: map[string]int{}, admitted: map[string]bool{a.UserID: true}, connected: map[string]bool{},
			pending: map[string]map[string]bool{}, creating: map[string]chan struct{}{}, hungUp: map[string]bool{},
		}
		c.addPart(a.UserID, RoleCaller, now)
		m.calls[id] = c
		m.byRoom[roomID] = c
		m.indexLocked(c, a.UserID)
		busy = m.addRingLocked(c, id, spec.Invitees)
		m.mu.Unlock()
	}

	if m.rooms != nil {
		claim, err := m.rooms.Claim(roomID)
		if err != nil {
			m.abandon(c, id, spec.Invitees)
			return nil, m.roomUnavailable(a, spec)
		}
		m.mu.Lock()
		c.claim = claim
		m.mu.Unlock()
	}
	// Until the claim is set nobody can end the call (no one is admitted to
	// its room, its IDs are not out); from here on its end releases it.
	res, err := m.createRing(ctx, a, c, id, spec, busy)
	if err != nil {
		m.abandon(c, id, spec.Invitees)
		return nil, err
	}
	res.CallID = id
	return res, nil
}

// roomUnavailable is the refusal of a call whose room ID is not free: it
// says nothing of who holds it. A group call by a non-member is refused as
// such first.
func (m *Manager) roomUnavailable(a protocol.Actor, spec signaling.InvitationSpec) error {
	if spec.GroupID != "" && !m.eng.IsGroupMember(spec.GroupID, a.UserID) {
		return protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", spec.GroupID)
	}
	return ErrRoomUnavailable
}

// abandon forgets a call whose first invitation could not be created (or
// whose room ID could not be claimed), and frees its room ID.
func (m *Manager) abandon(c *call, id string, invitees []string) {
	m.mu.Lock()
	m.dropRingLocked(c, id, invitees)
	m.forgetLocked(c)
	claim := c.claim
	m.mu.Unlock()
	if claim != nil {
		m.rooms.Release(claim)
	}
}

// glareLocked finds the call that user's new one-to-one call to its
// invitee would merge with: the invitee's call to user, still ringing for
// user (skip excepted). creating is set while that call's invitation is not
// created yet.
func (m *Manager) glareLocked(user string, spec signaling.InvitationSpec, skip *call) (g *call, inviteID string, creating <-chan struct{}) {
	if spec.GroupID != "" || len(spec.Invitees) != 1 {
		return nil, "", nil
	}
	callee := spec.Invitees[0]
	for c := range m.byUser[user] {
		if c != skip && !c.ended && c.rec.GroupID == "" && c.rec.Caller == callee && !c.began() {
			if id := c.pendingInviteID(user); id != "" {
				if ch := c.creating[id]; ch != nil {
					return c, id, ch
				}
				return c, id, nil
			}
		}
	}
	return nil, "", nil
}

// ring creates invitation id of call c (registered first, so that answers
// racing the reply find it), applying the busy policy.
func (m *Manager) ring(ctx context.Context, a protocol.Actor, c *call, id string, spec signaling.InvitationSpec) (CallResult, error) {
	m.mu.Lock()
	busy := m.addRingLocked(c, id, spec.Invitees)
	m.mu.Unlock()
	res, err := m.createRing(ctx, a, c, id, spec, busy)
	if err != nil {
		m.mu.Lock()
		m.dropRingLocked(c, id, spec.Invitees)
		m.mu.Unlock()
	}
	return res, err
}

// addRingLocked registers invitation id of call c as ringing for
// invitees, not yet created, and returns the busy invitees (busy policy
// reject) who will not ring.
func (m *Manager) addRingLocked(c *call, id string, invitees []string) []string {
	var busy []string
	pend := map[string]bool{}
	for _, u := range invitees {
		if m.cfg.BusyPolicy == BusyReject && m.busyLocked(u) != nil {
			busy = append(busy, u)
		}
		pend[u] = true
		m.indexLocked(c, u)
	}
	c.pending[id] = pend
	c.creating[id] = make(chan struct{})
	m.byInvite[id] = c
	return busy
}

// dropRingLocked undoes addRingLocked for an invitation that was not
// created.
func (m *Manager) dropRingLocked(c *call, id string, invitees []string) {
	delete(c.pending, id)
	delete(m.byInvite, id)
	for _, u := range invitees {
		if c.part(u) == nil {
			m.unindexLocked(c, u)
		}
	}
	m.settleLocked(c, id)
}

// settleLocked marks invitation id as created or abandoned: a glare merge
// waiting for it goes on.
func (m *Manager) settleLocked(c *call, id string) {
	if ch := c.creating[id]; ch != nil {
		close(ch)
		delete(c.creating, id)
	}
}

// createRing creates registered invitation id in the engine (the ring).
// On failure the caller undoes the registration.
func (m *Manager) createRing(ctx context.Context, a protocol.Actor, c *call, id string, spec signaling.InvitationSpec, busy []string) (CallResult, error) {
	now := m.clock.Now()
	spec.ID, spec.NoRing = id, busy
	if _, err := m.eng.CreateInvitation(ctx, a, spec); err != nil {
		return CallResult{}, err
	}
	m.mu.Lock()
	for _, u := range spec.Invitees {
		role := RoleInvitee
		p := c.addPart(u, role, now)
		p.InvitedAt = now
	}
	m.settleLocked(c, id)
	m.mu.Unlock()
	m.saves.save(m.snapshot(c))
	res := CallResult{InviteID: id, RoomID: c.rec.RoomID}
	if len(busy) > 0 {
		res.after = func() { m.rejectBusy(c, id, busy) }
	}
	return res, nil
}

// rejectBusy rejects a call for busy invitees, on their behalf: the caller
// gets onInviteeRejected with line_busy data; the busy users' devices get
// onCallMissed instead of a ring.
func (m *Manager) rejectBusy(c *call, inviteID string, busy []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range busy {
		err := m.eng.Reject(ctx, protocol.Actor{UserID: u, Silent: true}, protocol.InviteIDArgs{InviteID: inviteID, Data: LineBusy})
		if err != nil {
			m.log.Warn("busy rejection failed", "call", c.rec.CallID, "user", u, "err", err)
			continue
		}
		m.applyAnswer(c, inviteID, u, signaling.StateRejected, LineBusy)
		ev := MissedEvent{CallID: c.rec.CallID, Caller: c.rec.Caller, GroupID: c.rec.GroupID, MediaType: c.rec.MediaType,
			Reason: "line_busy", Time: m.clock.Now().UnixMilli()}
		if err := m.eng.SendEvent(ctx, []string{u}, EvCallMissed, ev, true); err != nil {
			m.log.Warn("missed-call event not sent", "user", u, "err", err)
		}
	}
}

func (m *Manager) checkData(data string) error {
	// The engine enforces its own limit; this only gives the error before
	// a room ID is committed.
	if len(data) > 64<<10 {
		return protocol.ErrDataTooLarge
	}
	return nil
}

// ---- answers ----

// answer is the accept and reject ops (and the server's own answers):
// answers to an ended call are refused; others update the call.
func (m *Manager) answer(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, action signaling.Action) error {
	m.mu.Lock()
	c := m.byInvite[args.InviteID]
	ended := c != nil && c.ended
	m.mu.Unlock()
	if ended {
		return ErrCallEnded.WithMessage("call %s has ended", c.rec.CallID)
	}
	var err error
	state := signaling.StateAccepted
	if action == signaling.ActionAccept {
		err = m.eng.Accept(ctx, a, args)
	} else {
		state = signaling.StateRejected
		err = m.eng.Reject(ctx, a, args)
	}
	if err == nil && c != nil {
		m.applyAnswer(c, args.InviteID, a.UserID, state, args.Data)
	}
	return err
}

// cancel is the cancel op.
func (m *Manager) cancel(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	m.mu.Lock()
	c := m.byInvite[args.InviteID]
	m.mu.Unlock()
	if err := m.eng.Cancel(ctx, a, args); err != nil {
		return err
	}
	if c != nil {
		m.mu.Lock()
		var users []string
		for u := range c.pending[args.InviteID] {
			users = append(users, u)
		}
		m.mu.Unlock()
		slices.Sort(users)
		for _, u := range users {
			m.applyAnswer(c, args.InviteID, u, signaling.StateCancelled, args.Data)
		}
		m.mu.Lock()
		if !c.ended && !c.began() && !c.anyAnswered() && !c.ringing() {
			work := m.endLocked(c, "cancelled", a.UserID)
			m.mu.Unlock()
			work()
			return nil
		}
		m.mu.Unlock()
	}
	return nil
}

// applyAnswer records an invitee's new state and ends the call when no one
// is left to take part.
func (m *Manager) applyAnswer(c *call, inviteID, user string, state signaling.InviteeState, data string) {
	m.mu.Lock()
	now := m.clock.Now()
	if pend := c.pending[inviteID]; pend != nil {
		delete(pend, user)
	}
	p := c.part(user)
	if p == nil || c.ended {
		m.mu.Unlock()
		return
	}
	if p.Answer == AnswerNone || p.Answer == AnswerNoAnswer || p.Answer == AnswerRejected {
		p.AnsweredAt = now
		switch state {
		case signaling.StateAccepted:
			p.Answer = AnswerAccepted
			c.admitted[user] = true
			delete(c.hungUp, user)
			m.armSetupLocked(c)
		case signaling.StateRejected:
			p.Answer = AnswerRejected
			if cd, ok, _ := ParseCallData(data); ok && cd.LineBusy {
				p.Answer = AnswerBusy
			}
		case signaling.StateTimedOut:
			p.Answer, p.AnsweredAt = AnswerNoAnswer, time.Time{}
		case signaling.StateCancelled:
			if p.Answer == AnswerNone {
				p.Answer, p.AnsweredAt = AnswerCancelled, time.Time{}
			}
		}
	}
	work := m.evaluateLocked(c, user)
	snap := copyRecord(c.rec)
	m.mu.Unlock()
	m.saves.save(snap)
	work()
}

// evaluateLocked ends a call that has not begun when nobody can take part
// any more: no invitee is ringing and none accepted.
func (m *Manager) evaluateLocked(c *call, by string) func() {
	if c.ended || c.began() || c.ringing() || c.anyAnswered() {
		return func() {}
	}
	reason := "no_answer"
	counts := map[Answer]int{}
	for _, p := range c.rec.Participants {
		if p.Role != RoleCaller {
			counts[p.Answer]++
		}
	}
	switch {
	case counts[AnswerCancelled] > 0:
		reason, by = "cancelled", c.rec.Caller
	case counts[AnswerNoAnswer] > 0:
		reason, by = "no_answer", ""
	case counts[AnswerRejected] > 0:
		reason = "rejected"
	case counts[AnswerBusy] > 0:
		reason = "busy"
	}
	return m.endLocked(c, reason, by)
}

// armSetupLocked starts the timer that fails an accepted call whose media
// never connects.
func (m *Manager) armSetupLocked(c *call) {
	if c.setup != nil || c.began() || m.cfg.SetupTimeout <= 0 || m.closed {
		return
	}
	m.wg.Add(1)
	c.setup = m.clock.AfterFunc(m.cfg.SetupTimeout, func() {
		defer m.wg.Done()
		m.mu.Lock()
		c.setup = nil
		if c.ended || c.began() {
			m.mu.Unlock()
			return
		}
		work := m.endLocked(c, "failed", "")
		m.mu.Unlock()
		work()
	})
}

// InvitationNote implements signaling.Observer: timeouts of call
// invitations (the answers and cancels came through the ops).
func (m *Manager) InvitationNote(n signaling.InvitationNote) {
	m.mu.Lock()
	c := m.byInvite[n.InviteID]
	if c != nil && n.Ended && c.ended {
		delete(m.byInvite, n.InviteID)
	}
	m.mu.Unlock()
	if c == nil {
		return
	}
	for _, ch := range n.Changes {
		if ch.State == signaling.StateTimedOut {
			m.applyAnswer(c, n.InviteID, ch.UserID, ch.State, "")
		}
	}
}

// ---- media: begin and end ----

// MemberConnected implements rooms.Observer: a call begins when a second
// participant's media is connected in its room.
func (m *Manager) MemberConnected(roomID, user string, _ rooms.Role, _ time.Time) {
	m.mu.Lock()
	c := m.byRoom[roomID]
	if c == nil || c.ended || !c.admitted[user] {
		m.mu.Unlock()
		return
	}
	now := m.clock.Now()
	c.connected[user] = true
	if p := c.part(user); p != nil {
		if p.JoinedAt.IsZero() {
			p.JoinedAt = now
		}
		p.LeftAt = time.Time{}
	}
	var begin *BeginEvent
	var to []string
	if !c.began() && len(c.connected) >= 2 {
		c.rec.BeganAt = now
		if c.setup != nil && c.setup.Stop() {
			m.wg.Done()
		}
		c.setup = nil
		begin = &BeginEvent{CallID: c.rec.CallID, RoomID: c.rec.RoomID, MediaType: c.rec.MediaType, StartTime: now.UnixMilli()}
		m.stats.CallBegan(now.Sub(c.rec.CreatedAt))
		to = m.participantsLocked(c)
	}
	snap := copyRecord(c.rec)
	if begin != nil && m.obs != nil {
		m.obs.CallBegan(snap)
	}
	m.mu.Unlock()
	m.saves.save(snap)
	if begin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.eng.SendEvent(ctx, to, EvCallBegin, *begin, false); err != nil {
			m.log.Warn("onCallBegin not sent", "call", begin.CallID, "err", err)
		}
	}
}

// MemberLeft implements rooms.Observer: a one-to-one call ends when either
// side leaves; a group call when fewer than two remain.
func (m *Manager) MemberLeft(roomID, user string, reason rooms.LeaveReason, _ time.Time) {
	m.mu.Lock()
	c := m.byRoom[roomID]
	if c == nil || c.ended || !c.connected[user] {
		m.mu.Unlock()
		return
	}
	now := m.clock.Now()
	delete(c.connected, user)
	if p := c.part(user); p != nil {
		p.LeftAt = now
	}
	why := "hangup"
	switch {
	case c.hungUp[user]:
	case reason == rooms.LeaveConnectionLost:
		why = "connection_lost"
	case reason == rooms.LeaveKicked:
		why = "kicked"
	}
	work := func() {}
	switch {
	case c.began() && c.rec.GroupID == "":
		work = m.endLocked(c, why, user)
	case c.began() && len(c.connected) < 2:
		work = m.endLocked(c, "all_left", user)
	case !c.began() && user == c.rec.Caller:
		// The caller gave up before anyone's media connected.
		work = m.endLocked(c, "cancelled", user)
	default:
		c.admitted[user] = c.admitted[user] && !c.hungUp[user]
	}
	snap := copyRecord(c.rec)
	m.mu.Unlock()
	m.saves.save(snap)
	work()
}

// participantsLocked lists who hears a call's events: everyone admitted
// (caller, accepted invitees, joiners).
func (m *Manager) participantsLocked(c *call) []string {
	var out []string
	for _, p := range c.rec.Participants {
		if c.admitted[p.UserID] || !p.JoinedAt.IsZero() {
			out = append(out, p.UserID)
		}
	}
	return out
}

// endLocked ends a call once: it fixes the record and returns the work to
// do outside mu: save the record, cancel what still rings, send the
// call-end invitation (a call that began) and onCallEnd, and close the room.
func (m *Manager) endLocked(c *call, reason, endedBy string) func() {
	if c.ended {
		return func() {}
	}
	c.ended = true
	now := m.clock.Now()
	if c.setup != nil && c.setup.Stop() {
		m.wg.Done()
	}
	c.setup = nil
	r := &c.rec
	r.EndedAt, r.EndReason, r.EndedBy = now, reason, endedBy
	if c.began() {
		r.Result, r.Duration = ResultCompleted, now.Sub(r.BeganAt)
	} else {
		r.Result = map[string]Result{"cancelled": ResultCancelled, "rejected": ResultRejected, "busy": ResultBusy,
			"no_answer": ResultNoAnswer}[reason]
		if r.Result == "" {
			r.Result = ResultFailed
		}
	}
	for i := range r.Participants {
		p := &r.Participants[i]
		if !p.JoinedAt.IsZero() && p.LeftAt.IsZero() {
			p.LeftAt = now
		}
		p.Result = participantResult(*r, p)
	}
	m.stats.CallEnded(r.Result)
	to := m.participantsLocked(c)
	var stillRinging []string
	for id, pend := range c.pending {
		if len(pend) > 0 {
			stillRinging = append(stillRinging, id)
		} else {
			delete(m.byInvite, id)
		}
	}
	m.forgetLocked(c)
	snap := copyRecord(c.rec)
	if m.obs != nil {
		m.obs.CallEnded(snap)
	}
	began := c.began()
	claim := c.claim
	stayer := ""
	for _, u := range to {
		if u != endedBy && (stayer == "" || c.connected[u]) {
			stayer = u
		}
	}
	return func() {
		m.saves.save(snap)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, id := range stillRinging {
			// Stop the ring: possible while nobody answered that invitation.
			_ = m.eng.Cancel(ctx, protocol.Actor{UserID: snap.Caller}, protocol.InviteIDArgs{InviteID: id, Data: hangupData(snap.CallID, snap.RoomID, snap.MediaType, 0)})
		}
		if began && stayer != "" && endedBy != "" {
			// TRTC's step 5: the party that stayed sends the party that
			// left an invitation carrying the call-end event and duration.
			secs := int64(snap.Duration / time.Second)
			if _, err := m.eng.Notify(ctx, protocol.Actor{UserID: stayer}, []string{endedBy}, snap.GroupID,
				hangupData(snap.CallID, snap.RoomID, snap.MediaType, secs)); err != nil {
				m.log.Warn("call-end invitation not sent", "call", snap.CallID, "err", err)
			}
		}
		ev := EndEvent{CallID: snap.CallID, RoomID: snap.RoomID, Duration: int64(snap.Duration / time.Second),
			DurationMs: snap.Duration.Milliseconds(), Reason: snap.EndReason, EndedBy: snap.EndedBy, Result: snap.Result}
		if err := m.eng.SendEvent(ctx, to, EvCallEnd, ev, true); err != nil {
			m.log.Warn("onCallEnd not sent", "call", snap.CallID, "err", err)
		}
		if claim != nil {
			// Ends the call's membership of its room, and only that.
			m.rooms.Release(claim)
		}
	}
}

// participantResult is how the call turned out for one participant.
func participantResult(r CallRecord, p *ParticipantRecord) Result {
	if !p.JoinedAt.IsZero() && !r.BeganAt.IsZero() {
		return ResultCompleted
	}
	if p.Role == RoleCaller {
		if r.Result == ResultCompleted {
			return ResultCompleted
		}
		return r.Result
	}
	switch p.Answer {
	case AnswerBusy:
		return ResultBusy
	case AnswerRejected:
		return ResultRejected
	case AnswerAccepted:
		if r.BeganAt.IsZero() {
			return ResultFailed
		}
		return ResultMissed // accepted but never joined a call that ran
	}
	return ResultMissed // never answered: cancelled, timed out, or still ringing at the end
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

// ---- the other ops ----

// hangup leaves a call: before it begins, the caller cancels and an invitee
// rejects; once it runs, the user leaves its room (a one-to-one call then
// ends, a group call goes on while two remain).
func (m *Manager) hangup(ctx context.Context, a protocol.Actor, args CallIDArgs) error {
	m.mu.Lock()
	c := m.calls[args.CallID]
	if c == nil {
		m.mu.Unlock()
		return ErrCallNotFound.WithMessage("no running call %q", args.CallID)
	}
	p := c.part(a.UserID)
	if p == nil {
		m.mu.Unlock()
		return ErrNotInCall
	}
	if pendingID := c.pendingInviteID(a.UserID); pendingID != "" {
		m.mu.Unlock()
		return m.answer(ctx, a, protocol.InviteIDArgs{InviteID: pendingID, Data: hangupData(c.rec.CallID, c.rec.RoomID, c.rec.MediaType, 0)}, signaling.ActionReject)
	}
	c.hungUp[a.UserID] = true
	connected := c.connected[a.UserID]
	claim := c.claim
	var work func()
	switch {
	case connected:
		// rooms tells MemberLeft, which ends or continues the call.
	case a.UserID == c.rec.Caller && !c.began() && !c.anyAnswered():
		ids := make([]string, 0, len(c.pending))
		for id, pend := range c.pending {
			if len(pend) > 0 {
				ids = append(ids, id)
			}
		}
		m.mu.Unlock()
		for _, id := range ids {
			if err := m.cancel(ctx, a, protocol.InviteIDArgs{InviteID: id}); err != nil && !errors.Is(err, protocol.ErrInvalidInviteID) {
				return err
			}
		}
		m.mu.Lock()
		work = m.endLocked(c, "cancelled", a.UserID)
	case !c.began() && (c.rec.GroupID == "" || a.UserID == c.rec.Caller):
		work = m.endLocked(c, "hangup", a.UserID)
	default:
		delete(c.admitted, a.UserID)
		work = m.evaluateLocked(c, a.UserID)
	}
	m.mu.Unlock()
	if connected && claim != nil {
		m.rooms.LeaveClaim(claim, a.UserID)
	}
	if work != nil {
		work()
	}
	return nil
}

// inviteUser rings more group members into a call; those already in it or
// ringing are skipped.
func (m *Manager) inviteUser(ctx context.Context, a protocol.Actor, args InviteUserArgs) (InviteUserResult, error) {
	m.mu.Lock()
	c := m.calls[args.CallID]
	if c == nil {
		m.mu.Unlock()
		return InviteUserResult{}, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
	}
	if c.rec.GroupID == "" {
		m.mu.Unlock()
		return InviteUserResult{}, ErrNotGroupCall
	}
	if !c.admitted[a.UserID] {
		m.mu.Unlock()
		return InviteUserResult{}, ErrNotInCall
	}
	var users []string
	for _, u := range args.UserList {
		if !c.admitted[u] && c.pendingInviteID(u) == "" && !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	cd, _, _ := ParseCallData(c.data)
	spec := signaling.InvitationSpec{GroupID: c.rec.GroupID, Invitees: users, Data: cd.WithIDs(c.rec.RoomID, c.rec.CallID), Timeout: args.Timeout}
	m.mu.Unlock()
	if len(users) == 0 {
		return InviteUserResult{UserList: []string{}}, nil
	}
	id := m.eng.NewID("inv_")
	res, err := m.ring(ctx, a, c, id, spec)
	if err != nil {
		return InviteUserResult{}, err
	}
	if res.after != nil {
		res.after()
	}
	return InviteUserResult{InviteID: id, UserList: users}, nil
}

// joinCall lets a group member into a running group call without a ring
// (or answers the ring they have).
func (m *Manager) joinCall(ctx context.Context, a protocol.Actor, args CallIDArgs) (JoinResult, error) {
	m.mu.Lock()
	c := m.calls[args.CallID]
	if c == nil {
		m.mu.Unlock()
		return JoinResult{}, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
	}
	res := JoinResult{CallID: c.rec.CallID, RoomID: c.rec.RoomID, MediaType: c.rec.MediaType, StartTime: ms(c.rec.BeganAt)}
	group := c.rec.GroupID
	pendingID := c.pendingInviteID(a.UserID)
	already := c.admitted[a.UserID]
	m.mu.Unlock()
	if group == "" {
		return JoinResult{}, ErrNotGroupCall
	}
	if already {
		return res, nil
	}
	if !m.eng.IsGroupMember(group, a.UserID) {
		return JoinResult{}, protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", group)
	}
	if pendingID != "" {
		return res, m.answer(ctx, a, protocol.InviteIDArgs{InviteID: pendingID}, signaling.ActionAccept)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.ended {
		return JoinResult{}, ErrCallEnded
	}
	p := c.addPart(a.UserID, RoleJoiner, m.clock.Now())
	if p.Role != RoleJoiner {
		p.Answer, p.AnsweredAt = AnswerAccepted, m.clock.Now()
	}
	c.admitted[a.UserID] = true
	delete(c.hungUp, a.UserID)
	m.indexLocked(c, a.UserID)
	m.saves.save(copyRecord(c.rec))
	return res, nil
}

// switchMediaType switches a call between video and audio.
func (m *Manager) switchMediaType(ctx context.Context, a protocol.Actor, args SwitchArgs) error {
	if args.MediaType != MediaAudio && args.MediaType != MediaVideo {
		return protocol.ErrInvalidParameter.WithMessage("mediaType must be %q or %q", MediaAudio, MediaVideo)
	}
	m.mu.Lock()
	c := m.calls[args.CallID]
	if c == nil {
		m.mu.Unlock()
		return ErrCallNotFound.WithMessage("no running call %q", args.CallID)
	}
	if !c.admitted[a.UserID] {
		m.mu.Unlock()
		return ErrNotInCall
	}
	c.rec.MediaType = args.MediaType
	to := slices.DeleteFunc(m.participantsLocked(c), func(u string) bool { return u == a.UserID })
	snap := copyRecord(c.rec)
	m.mu.Unlock()
	m.saves.save(snap)
	return m.eng.SendEvent(ctx, to, EvCallMediaTypeChanged, MediaTypeEvent{CallID: snap.CallID, MediaType: args.MediaType, UserID: a.UserID}, false)
}

// history is getCallHistory.
func (m *Manager) history(ctx context.Context, a protocol.Actor, args HistoryArgs) (HistoryResult, error) {
	f := HistoryFilter(args.Filter)
	switch f {
	case "":
		f = FilterAll
	case FilterAll, FilterMissed, FilterIncoming, FilterOutgoing:
	default:
		return HistoryResult{}, protocol.ErrInvalidParameter.WithMessage("filter must be all, missed, incoming or outgoing")
	}
	if args.Limit < 0 || args.Limit > 100 {
		return HistoryResult{}, protocol.ErrInvalidParameter.WithMessage("limit must be 0-100 (0: 20)")
	}
	m.saves.flush()
	recs, next, err := m.rec.History(ctx, a.UserID, f, args.Limit, args.Cursor)
	if err != nil {
		if errors.Is(err, ErrBadCursor) {
			return HistoryResult{}, protocol.ErrInvalidParameter.WithMessage("invalid cursor")
		}
		m.log.Error("call history", "err", err)
		return HistoryResult{}, protocol.ErrStoreUnavailable
	}
	out := HistoryResult{Calls: make([]CallInfo, 0, len(recs)), NextCursor: next}
	for _, r := range recs {
		out.Calls = append(out.Calls, callInfo(r, a.UserID))
	}
	return out, nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func callInfo(r CallRecord, user string) CallInfo {
	ci := CallInfo{CallID: r.CallID, Caller: r.Caller, GroupID: r.GroupID, RoomID: r.RoomID, MediaType: r.MediaType,
		Direction: "incoming", CallResult: r.Result, EndReason: r.EndReason, EndedBy: r.EndedBy,
		CreatedAt: ms(r.CreatedAt), BeganAt: ms(r.BeganAt), EndedAt: ms(r.EndedAt),
		Duration: int64(r.Duration / time.Second), DurationMs: r.Duration.Milliseconds(), Members: []ParticipantInfo{}}
	if r.Caller == user {
		ci.Direction = "outgoing"
	}
	for _, p := range r.Participants {
		if p.UserID == user {
			ci.Result = p.Result
		}
		ci.Members = append(ci.Members, ParticipantInfo{UserID: p.UserID, Role: p.Role, Answer: p.Answer, Result: p.Result,
			JoinedAt: ms(p.JoinedAt), LeftAt: ms(p.LeftAt)})
	}
	return ci
}
