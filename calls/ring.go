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
	over := "" // a call to merge with whose invitation ended meanwhile
	for c == nil {
		var g *call // the call to merge with (glare)
		var inviteID string
		var creating, taken bool
		err := m.do(ctx, func(t tx) (func(), error) {
			c, busy, g, inviteID, creating, taken = nil, nil, nil, "", false, false
			if t.closed() {
				return nil, protocol.ErrShuttingDown
			}
			t.hint(hint{users: append([]string{a.UserID}, spec.Invitees...), rooms: []string{roomID}})
			// Glare: A calls B while B's call to A still rings. The call that
			// rang first wins: A accepts it (the server acts for A) instead of
			// placing a second call, and learns its callID and roomID.
			if g, inviteID, creating = m.glareLocked(t, a.UserID, spec, over); g != nil {
				return nil, nil
			}
			if t.byRoom(roomID) != nil || t.roomHosted(roomID) {
				taken = true
				return nil, nil
			}
			now := t.now()
			nc := newCall(CallRecord{CallID: id, Caller: a.UserID, GroupID: spec.GroupID, RoomID: roomID, MediaType: cd.MediaType(), CreatedAt: now},
				spec.Data)
			nc.addPart(a.UserID, RoleCaller, now)
			t.add(nc)
			t.index(nc, a.UserID)
			busy = m.addRingLocked(t, nc, id, spec.Invitees)
			c = nc
			return nil, nil
		})
		switch {
		case err != nil:
			return nil, err
		case g != nil && creating:
			// B's call is registered but its invitation not created yet:
			// accept once it is (B's reply and ring come first).
			if err := m.waitCreated(ctx, g.rec.CallID, inviteID); err != nil {
				return nil, err
			}
		case g != nil:
			err := m.answer(ctx, a, protocol.InviteIDArgs{InviteID: inviteID, Data: glareData}, signaling.ActionAccept)
			if err == nil {
				m.log.Info("glare: calls merged", "call", g.rec.CallID, "caller", g.rec.Caller, "callee", a.UserID)
				return CallResult{InviteID: inviteID, CallID: g.rec.CallID, RoomID: g.rec.RoomID, Merged: true}, nil
			}
			if !errors.Is(err, ErrCallEnded) && !errors.Is(err, protocol.ErrInvalidInviteID) {
				return nil, err // e.g. the store failed: nothing changed
			}
			over = g.rec.CallID // it ended meanwhile: look again, then place the call
		case taken:
			return nil, m.roomUnavailable(a, spec)
		}
	}

	if m.rooms != nil {
		claim, err := m.rooms.Claim(roomID)
		if err != nil {
			m.abandon(id, spec.Invitees)
			return nil, m.roomUnavailable(a, spec)
		}
		m.setClaim(id, claim)
	}
	// Until the claim is set nobody can end the call (no one is admitted to
	// its room, its IDs are not out); from here on its end releases it.
	res, err := m.createRing(ctx, a, id, id, spec, busy)
	if err != nil {
		m.abandon(id, spec.Invitees)
		return nil, err
	}
	res.CallID = id
	return res, nil
}

// errStillPlaced refuses a glare merge whose wait for the other call's
// invitation ended first.
var errStillPlaced = protocol.ErrStoreUnavailable.WithMessage("the callee's call to you is still being placed; retry")

// roomUnavailable is the refusal of a call whose room ID is not free: it
// says nothing of who holds it. A group call by a non-member is refused as
// such first.
func (m *Manager) roomUnavailable(a protocol.Actor, spec signaling.InvitationSpec) error {
	if spec.GroupID != "" && !m.eng.IsGroupMember(spec.GroupID, a.UserID) {
		return protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", spec.GroupID)
	}
	return ErrRoomUnavailable
}

// abandon forgets call id whose first invitation (also id) could not be
// created (or whose room ID could not be claimed), and frees its room ID.
func (m *Manager) abandon(id string, invitees []string) {
	ctx, cancel := bg()
	defer cancel()
	err := m.do(ctx, func(t tx) (func(), error) {
		if c := t.byInvite(id); c != nil {
			m.dropRingLocked(t, c, id, invitees)
			t.forget(c)
		}
		return nil, nil
	})
	if err != nil {
		m.log.Warn("abandoned call not forgotten", "call", id, "err", err)
	}
	m.releaseClaim(id)
}

// glareLocked finds the call that user's new one-to-one call to its
// invitee would merge with: the invitee's call to user, still ringing for
// user (call skip excepted). creating is set while that call's invitation
// is not created yet.
func (m *Manager) glareLocked(t tx, user string, spec signaling.InvitationSpec, skip string) (g *call, inviteID string, creating bool) {
	if spec.GroupID != "" || len(spec.Invitees) != 1 {
		return nil, "", false
	}
	callee := spec.Invitees[0]
	for _, c := range t.userCalls(user) {
		if c.rec.CallID != skip && !c.ended && c.rec.GroupID == "" && c.rec.Caller == callee && !c.began() {
			if id := c.pendingInviteID(user); id != "" {
				return c, id, c.creating[id]
			}
		}
	}
	return nil, "", false
}

// ring creates invitation id of running call callID (registered first, so
// that answers racing the reply find it), applying the busy policy.
func (m *Manager) ring(ctx context.Context, a protocol.Actor, callID, id string, spec signaling.InvitationSpec) (CallResult, error) {
	var busy []string
	err := m.do(ctx, func(t tx) (func(), error) {
		busy = nil
		c := t.running(callID)
		if c == nil {
			return nil, ErrCallNotFound.WithMessage("no running call %q", callID)
		}
		busy = m.addRingLocked(t, c, id, spec.Invitees)
		return nil, nil
	})
	if err != nil {
		return CallResult{}, err
	}
	res, err := m.createRing(ctx, a, callID, id, spec, busy)
	if err != nil {
		ctx, cancel := bg()
		defer cancel()
		if err := m.do(ctx, func(t tx) (func(), error) {
			if c := t.byInvite(id); c != nil {
				m.dropRingLocked(t, c, id, spec.Invitees)
			}
			return nil, nil
		}); err != nil {
			m.log.Warn("invitation not created, not forgotten", "invite", id, "err", err)
		}
	}
	return res, err
}

// addRingLocked registers invitation id of call c as ringing for
// invitees, not yet created, and returns the busy invitees (busy policy
// reject) who will not ring.
func (m *Manager) addRingLocked(t tx, c *call, id string, invitees []string) []string {
	var busy []string
	pend := map[string]bool{}
	for _, u := range invitees {
		if m.cfg.BusyPolicy == BusyReject && m.busyLocked(t, u) != nil {
			busy = append(busy, u)
		}
		pend[u] = true
		t.index(c, u)
	}
	c.pending[id] = pend
	c.creating[id] = true
	t.creating(c, id)
	t.setInvite(id, c)
	return busy
}

// dropRingLocked undoes addRingLocked for an invitation that was not
// created.
func (m *Manager) dropRingLocked(t tx, c *call, id string, invitees []string) {
	delete(c.pending, id)
	t.dropInvite(id)
	for _, u := range invitees {
		if c.part(u) == nil {
			t.unindex(c, u)
		}
	}
	m.settleLocked(t, c, id)
}

// settleLocked marks invitation id as created or abandoned: a glare merge
// waiting for it goes on.
func (m *Manager) settleLocked(t tx, c *call, id string) {
	if c.creating[id] {
		delete(c.creating, id)
		t.settled(c, id)
	}
}

// createRing creates registered invitation id in the engine (the ring).
// On failure the caller undoes the registration.
func (m *Manager) createRing(ctx context.Context, a protocol.Actor, callID, id string, spec signaling.InvitationSpec, busy []string) (CallResult, error) {
	now := m.clock.Now()
	spec.ID, spec.NoRing = id, busy
	if _, err := m.eng.CreateInvitation(ctx, a, spec); err != nil {
		return CallResult{}, err
	}
	var roomID string
	// The invitation rings: what follows is done even if the request's ctx
	// ends.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := m.do(bctx, func(t tx) (func(), error) {
		t.hint(hint{invites: []string{id}, calls: []string{callID}, records: []string{callID}})
		c := t.byInvite(id)
		if c == nil {
			return nil, nil
		}
		for _, u := range spec.Invitees {
			p := c.addPart(u, RoleInvitee, now)
			p.InvitedAt = now
		}
		m.settleLocked(t, c, id)
		t.save(c)
		roomID = c.rec.RoomID
		return nil, nil
	})
	if err != nil {
		// The invitation rings; its answers still find the call.
		m.log.Error("call invitation created but not recorded", "invite", id, "err", err)
	}
	res := CallResult{InviteID: id, RoomID: roomID}
	if len(busy) > 0 {
		res.after = func() { m.rejectBusy(id, busy) }
	}
	return res, nil
}

// rejectBusy rejects a call for busy invitees, on their behalf: the caller
// gets onInviteeRejected with line_busy data; the busy users' devices get
// onCallMissed instead of a ring.
func (m *Manager) rejectBusy(inviteID string, busy []string) {
	ctx, cancel := bg()
	defer cancel()
	rec, ok := m.recordOf(ctx, inviteID)
	if !ok {
		return
	}
	for _, u := range busy {
		err := m.eng.Reject(ctx, protocol.Actor{UserID: u, Silent: true}, protocol.InviteIDArgs{InviteID: inviteID, Data: LineBusy})
		if err != nil {
			m.log.Warn("busy rejection failed", "call", rec.CallID, "user", u, "err", err)
			continue
		}
		m.applyAnswer(ctx, rec.CallID, inviteID, u, signaling.StateRejected, LineBusy)
		ev := MissedEvent{CallID: rec.CallID, Caller: rec.Caller, GroupID: rec.GroupID, MediaType: rec.MediaType,
			Reason: "line_busy", Time: m.clock.Now().UnixMilli()}
		if err := m.eng.SendEvent(ctx, []string{u}, EvCallMissed, ev, true); err != nil {
			m.log.Warn("missed-call event not sent", "user", u, "err", err)
		}
	}
}

// recordOf returns a copy of the record of the call of invitation
// inviteID.
func (m *Manager) recordOf(ctx context.Context, inviteID string) (CallRecord, bool) {
	var rec CallRecord
	found := false
	err := m.view(ctx, func(t tx) {
		c := t.byInvite(inviteID)
		if found = c != nil; found {
			rec = copyRecord(c.rec)
		}
	})
	return rec, err == nil && found
}

func (m *Manager) checkData(data string) error {
	// The engine enforces its own limit; this only gives the error before
	// a room ID is committed.
	if len(data) > 64<<10 {
		return protocol.ErrDataTooLarge
	}
	return nil
}
