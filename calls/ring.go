package calls

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Starting calls: ringing, glare and the busy line.

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
	return m.startCall(ctx, a, spec, cd, appData)
}

// glareData is the accept data of a call merged by glare.
const glareData = `{"businessID":"av_call","version":4,"data":{"cmd":"accept","glare":true}}`

// dataOrigin says who wrote a new call's data.
type dataOrigin int

const (
	// appData is the app's own data (invite and inviteInGroup): passed on
	// as it is, but for a room_id added when it had none.
	appData dataOrigin = iota
	// serverData is data the server composed (the call and groupCall ops):
	// it carries the call ID too.
	serverData
)

// startCall places a call whose data origin wrote.
//
// The glare check and the registration of the new call with its ringing
// invitees are one critical section, so two users calling each other at
// the same instant make one call. The call then claims its room ID from
// rooms (refused when the ID is not free) before anyone rings.
func (m *Manager) startCall(ctx context.Context, a protocol.Actor, spec signaling.InvitationSpec, cd CallData, origin dataOrigin) (any, error) {
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
	if origin == serverData {
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
