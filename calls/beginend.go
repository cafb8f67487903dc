package calls

import (
	"context"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
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
		if _, ok := c.lost[user]; ok {
			// Back after their media node let them go: the call goes on.
			delete(c.lost, user)
			m.lostChangedLocked(t, c)
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
// side leaves; a group call when fewer than two remain. A member whose
// media node let them go (rooms.LeaveMediaNodeLost) has not left: they are
// coming back (lostLocked).
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
		if reason == rooms.LeaveMediaNodeLost && !c.hungUp[user] && m.cfg.SetupTimeout > 0 {
			m.lostLocked(t, c, user)
			return nil, nil
		}
		return m.leftLocked(t, c, user, reason), nil
	})
	if err != nil {
		m.log.Error("call media departure not recorded", "room", roomID, "user", user, "err", err)
	}
}

// lostLocked is user's media node letting them go (it shut down, or lost
// the room to another node: rooms.LeaveMediaNodeLost). Their client got
// onExitRoom reason 4 and enters the room again, wherever it is placed
// now: their connection is lost pending their return. The call goes on;
// their entering again (MemberConnected, on any node) keeps them in it;
// if they are not back within Config.SetupTimeout, they have left with
// their connection lost at the time they were lost (lostFired).
func (m *Manager) lostLocked(t tx, c *call, user string) {
	now := t.now()
	delete(c.connected, user)
	if p := c.part(user); p != nil {
		p.LeftAt = now
	}
	c.lost[user] = now
	m.lostChangedLocked(t, c)
	t.save(c)
}

// lostChangedLocked keeps c's lost deadline at the earliest time one of
// c.lost is due back (its loss plus Config.SetupTimeout); none: stopped.
func (m *Manager) lostChangedLocked(t tx, c *call) {
	if len(c.lost) == 0 {
		t.stopLost(c)
		return
	}
	var first time.Time
	for _, at := range c.lost {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	t.armLost(c, first.Add(m.cfg.SetupTimeout))
}

// lostFired acts on call callID's lost deadline (the memory timer's
// callback; in cluster mode the poller's, with due, so that it happens
// once cluster-wide): the participants it lost that are not back within
// Config.SetupTimeout have left with their connection lost (leftLocked),
// in the order they were lost, in one step dated when the first of them
// was lost. A one-to-one call ends (connection_lost, ended by that
// participant, its duration up to then); a group call loses them.
func (m *Manager) lostFired(ctx context.Context, callID string, due *cluster.Due) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := m.clock.Now()
	var at time.Time
	err := m.view(ctx, func(t tx) {
		at = time.Time{}
		if c := t.running(callID); c != nil {
			if at = firstLost(c, now.Add(-m.cfg.SetupTimeout)); !at.IsZero() {
				// Not before what the call recorded (the nodes' clocks differ).
				at = latest(at, c.rec.CreatedAt, c.rec.BeganAt)
			}
		}
	})
	if err != nil {
		m.log.Warn("call's lost participants not read (in a cluster the deadline fires again after the lease)", "call", callID, "err", err)
		return
	}
	var gone []string
	err = m.doAt(ctx, at, func(t tx) (func(), error) {
		gone = nil
		c := t.running(callID)
		if c == nil {
			return nil, nil // ended meanwhile: only the deadline's Done
		}
		due := now.Add(-m.cfg.SetupTimeout)
		users := sortedSet(c.lost)
		slices.SortStableFunc(users, func(a, b string) int { return c.lost[a].Compare(c.lost[b]) })
		var works []func()
		for _, u := range users {
			if c.ended || c.lost[u].After(due) {
				continue
			}
			gone = append(gone, u)
			if w := m.leftLocked(t, c, u, rooms.LeaveConnectionLost); w != nil {
				works = append(works, w)
			}
		}
		if !c.ended {
			m.lostChangedLocked(t, c) // the next one due, if any
		}
		return func() {
			for _, w := range works {
				w()
			}
		}, nil
	}, due)
	if err != nil {
		m.log.Warn("call's lost participants not committed (in a cluster the deadline fires again after the lease)", "call", callID, "err", err)
		return
	}
	if len(gone) > 0 {
		m.log.Info("call participants not back after their media node let them go: connection lost", "call", callID, "users", gone)
	}
}

// firstLost is when the first of c's lost participants due by due was lost
// (zero: none is due).
func firstLost(c *call, due time.Time) time.Time {
	var first time.Time
	for _, at := range c.lost {
		if !at.After(due) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// leftLocked is user's media leaving call c's room for reason: a
// one-to-one call that began ends, a group call when fewer than two
// remain, a call not begun when its caller leaves.
func (m *Manager) leftLocked(t tx, c *call, user string, reason rooms.LeaveReason) func() {
	now := t.now()
	delete(c.connected, user)
	left := now
	if at, ok := c.lost[user]; ok {
		left = at // their media went with their media node then
		delete(c.lost, user)
		m.lostChangedLocked(t, c)
	}
	if p := c.part(user); p != nil {
		p.LeftAt = left
	}
	why := EndHangup
	switch {
	case c.hungUp[user]:
	case reason == rooms.LeaveConnectionLost, reason == rooms.LeaveMediaNodeLost:
		why = EndConnectionLost
	case reason == rooms.LeaveKicked:
		why = EndKicked
	}
	t.save(c)
	switch {
	case c.began() && c.rec.GroupID == "":
		return m.endLocked(t, c, why, user)
	case c.began() && len(c.connected)+len(c.lost) < 2:
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
	if len(c.lost) > 0 {
		clear(c.lost) // their LeftAt is when they were lost
		t.stopLost(c)
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
