package calls

import (
	"context"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Media: a call begins when a second participant's media connects in its
// room, and ends when they leave; endLocked ends a call once.

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
	why := EndHangup
	switch {
	case c.hungUp[user]:
	case reason == rooms.LeaveConnectionLost:
		why = EndConnectionLost
	case reason == rooms.LeaveKicked:
		why = EndKicked
	}
	work := func() {}
	switch {
	case c.began() && c.rec.GroupID == "":
		work = m.endLocked(c, why, user)
	case c.began() && len(c.connected) < 2:
		work = m.endLocked(c, EndAllLeft, user)
	case !c.began() && user == c.rec.Caller:
		// The caller gave up before anyone's media connected.
		work = m.endLocked(c, EndCancelled, user)
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
func (m *Manager) endLocked(c *call, reason EndReason, endedBy string) func() {
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
