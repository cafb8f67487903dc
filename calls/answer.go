package calls

import (
	"context"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Answers: accept, reject, cancel and timeouts; the setup timer.

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
			work := m.endLocked(c, EndCancelled, a.UserID)
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
	if state == signaling.StateAccepted {
		// An accept always admits, also a member rung in again after they
		// had accepted (or joined) and hung up; the record keeps its first
		// accept.
		c.admitted[user] = true
		delete(c.hungUp, user)
		m.armSetupLocked(c)
	}
	if p.Answer == AnswerNone || p.Answer == AnswerNoAnswer || p.Answer == AnswerRejected {
		p.AnsweredAt = now
		switch state {
		case signaling.StateAccepted:
			p.Answer = AnswerAccepted
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
	reason := EndNoAnswer
	counts := map[Answer]int{}
	for _, p := range c.rec.Participants {
		if p.Role != RoleCaller {
			counts[p.Answer]++
		}
	}
	switch {
	case counts[AnswerCancelled] > 0:
		reason, by = EndCancelled, c.rec.Caller
	case counts[AnswerNoAnswer] > 0:
		reason, by = EndNoAnswer, ""
	case counts[AnswerRejected] > 0:
		reason = EndRejected
	case counts[AnswerBusy] > 0:
		reason = EndBusy
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
		work := m.endLocked(c, EndFailed, "")
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
