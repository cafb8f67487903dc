package calls

import (
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Media: a call begins when a second participant's media connects in its
// room, and ends when they leave; endLocked ends a call once.

// MemberConnected implements rooms.Observer: a call begins when a second
// participant's media is connected in its room.
func (m *Manager) MemberConnected(roomID, user string, _ rooms.Role, _ time.Time) {
	ctx, cancel := bg()
	defer cancel()
	var begin *BeginEvent
	var to []string
	err := m.do(ctx, func(t tx) (func(), error) {
		begin, to = nil, nil
		c := t.byRoom(roomID)
		if c == nil || c.ended || !c.admitted[user] {
			return nil, nil
		}
		now := t.now()
		c.connected[user] = m.node
		if p := c.part(user); p != nil {
			if p.JoinedAt.IsZero() {
				p.JoinedAt = now
			}
			p.LeftAt = time.Time{}
		}
		if !c.began() && len(c.connected) >= 2 {
			c.rec.BeganAt = now
			if c.setupArmed {
				c.setupArmed = false
				t.stopSetup(c)
			}
			begin = &BeginEvent{CallID: c.rec.CallID, RoomID: c.rec.RoomID, MediaType: c.rec.MediaType, StartTime: now.UnixMilli()}
			setup, snap := now.Sub(c.rec.CreatedAt), copyRecord(c.rec)
			t.once(func() {
				m.stats.CallBegan(setup)
				if m.obs != nil {
					m.obs.CallBegan(snap)
				}
			})
			to = m.participantsLocked(c)
		}
		t.save(c)
		return nil, nil
	})
	if err != nil {
		m.log.Error("call media connection not recorded", "room", roomID, "user", user, "err", err)
		return
	}
	if begin != nil {
		if err := m.eng.SendEvent(ctx, to, EvCallBegin, *begin, false); err != nil {
			m.log.Warn("onCallBegin not sent", "call", begin.CallID, "err", err)
		}
	}
}

// MemberLeft implements rooms.Observer: a one-to-one call ends when either
// side leaves; a group call when fewer than two remain.
func (m *Manager) MemberLeft(roomID, user string, reason rooms.LeaveReason, _ time.Time) {
	ctx, cancel := bg()
	defer cancel()
	err := m.do(ctx, func(t tx) (func(), error) {
		c := t.byRoom(roomID)
		if c == nil || c.ended {
			return nil, nil
		}
		if node, ok := c.connected[user]; !ok || node != m.node {
			return nil, nil // not connected, or in this call's room on another node
		}
		return m.leftLocked(t, c, user, reason), nil
	})
	if err != nil {
		m.log.Error("call media departure not recorded", "room", roomID, "user", user, "err", err)
	}
}

// leftLocked is user's media leaving call c's room for reason: a
// one-to-one call that began ends, a group call when fewer than two
// remain, a call not begun when its caller leaves.
func (m *Manager) leftLocked(t tx, c *call, user string, reason rooms.LeaveReason) func() {
	now := t.now()
	delete(c.connected, user)
	if p := c.part(user); p != nil {
		p.LeftAt = now
	}
	why := EndHangup
	switch {
	case c.hungUp[user]:
	case reason == rooms.LeaveConnectionLost:
		why = EndConnectionLost
	case reason == rooms.LeaveKicked:
		why = EndKicked
	}
	t.save(c)
	switch {
	case c.began() && c.rec.GroupID == "":
		return m.endLocked(t, c, why, user)
	case c.began() && len(c.connected) < 2:
		return m.endLocked(t, c, EndAllLeft, user)
	case !c.began() && user == c.rec.Caller:
		// The caller gave up before anyone's media connected.
		return m.endLocked(t, c, EndCancelled, user)
	}
	c.admitted[user] = c.admitted[user] && !c.hungUp[user]
	return nil
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
// do once committed: cancel what still rings, send the call-end invitation
// (a call that began) and onCallEnd, and close the room (this node's claim;
// in cluster mode the other nodes release theirs when they see the call
// ended, clusterCalls.reconcile).
func (m *Manager) endLocked(t tx, c *call, reason EndReason, endedBy string) func() {
	if c.ended {
		return nil
	}
	c.ended = true
	now := t.now()
	if c.setupArmed {
		c.setupArmed = false
		t.stopSetup(c)
	}
	r := &c.rec
	r.EndedAt, r.EndReason, r.EndedBy = now, reason, endedBy
	if c.began() {
		r.Result, r.Duration = ResultCompleted, now.Sub(r.BeganAt)
	} else {
		r.Result = map[EndReason]Result{EndCancelled: ResultCancelled, EndRejected: ResultRejected, EndBusy: ResultBusy,
			EndNoAnswer: ResultNoAnswer}[reason]
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
	to := m.participantsLocked(c)
	var stillRinging []string
	for id, pend := range c.pending {
		if len(pend) > 0 {
			stillRinging = append(stillRinging, id)
		} else {
			t.dropInvite(id)
		}
	}
	slices.Sort(stillRinging)
	t.forget(c)
	t.save(c)
	snap := copyRecord(c.rec)
	t.once(func() {
		m.stats.CallEnded(snap.Result)
		if m.obs != nil {
			m.obs.CallEnded(copyRecord(snap))
		}
	})
	began := c.began()
	stayer := ""
	for _, u := range to {
		if u != endedBy && (stayer == "" || c.on(u)) {
			stayer = u
		}
	}
	return func() {
		ctx, cancel := bg()
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
		if m.rooms != nil {
			// Ends the call's membership of its room, and only that.
			m.releaseClaim(snap.CallID)
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
