package calls

import (
	"context"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Answers: accept, reject, cancel and timeouts; the setup timer.

// inviteCall reports whether invitation inviteID is a call's, and whether
// that call has ended.
func (m *Manager) inviteCall(ctx context.Context, inviteID string) (callID string, ended bool, err error) {
	err = m.view(ctx, func(t tx) {
		callID, ended = "", false
		if c := t.byInvite(inviteID); c != nil {
			callID, ended = c.rec.CallID, c.ended
		}
	})
	return callID, ended, err
}

// hasInvite reports whether inviteID is a live invitation of a call
// (standalone only: the cluster's calls are in Redis).
func (m *Manager) hasInvite(inviteID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.byInvite[inviteID]
	return ok
}

// answer is the accept and reject ops (and the server's own answers):
// answers to an ended call are refused; others update the call.
func (m *Manager) answer(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, action signaling.Action) error {
	state := signaling.StateAccepted
	if action == signaling.ActionReject {
		state = signaling.StateRejected
	}
	var callID string
	var err error
	if g, ok := m.gated(); ok {
		// Cluster mode: the look at the call goes with the engine's
		// first read (clusterCalls.gate).
		err = g.AnswerGated(ctx, a, args, action, m.cl.gate(args.InviteID, func(t tx) error {
			callID = ""
			if c := t.byInvite(args.InviteID); c != nil {
				if c.ended {
					return ErrCallEnded.WithMessage("call %s has ended", c.rec.CallID)
				}
				callID = c.rec.CallID
			}
			return nil
		}))
	} else {
		var ended bool
		if callID, ended, err = m.inviteCall(ctx, args.InviteID); err != nil {
			return err
		}
		if ended {
			return ErrCallEnded.WithMessage("call %s has ended", callID)
		}
		if action == signaling.ActionAccept {
			err = m.eng.Accept(ctx, a, args)
		} else {
			err = m.eng.Reject(ctx, a, args)
		}
	}
	if err == nil && callID != "" {
		m.applyAnswer(ctx, callID, args.InviteID, a.UserID, state, args.Data)
	}
	return err
}

// cancel is the cancel op.
func (m *Manager) cancel(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) error {
	var callID string
	if g, ok := m.gated(); ok {
		if err := g.CancelGated(ctx, a, args, m.cl.gate(args.InviteID, func(t tx) error {
			callID = ""
			if c := t.byInvite(args.InviteID); c != nil {
				callID = c.rec.CallID
			}
			return nil
		})); err != nil {
			return err
		}
	} else {
		var err error
		if callID, _, err = m.inviteCall(ctx, args.InviteID); err != nil {
			return err
		}
		if err := m.eng.Cancel(ctx, a, args); err != nil {
			return err
		}
	}
	if callID == "" {
		return nil
	}
	// The invitation is cancelled: what follows is the server's own work,
	// done even if the request's ctx ends.
	ctx, done := bg()
	defer done()
	var users []string
	if err := m.view(ctx, func(t tx) {
		users = nil
		if c := t.byInvite(args.InviteID); c != nil {
			for u := range c.pending[args.InviteID] {
				users = append(users, u)
			}
		}
	}); err != nil {
		m.log.Error("cancelled call invitation not recorded", "invite", args.InviteID, "err", err)
		return nil
	}
	slices.Sort(users)
	for _, u := range users {
		m.applyAnswer(ctx, callID, args.InviteID, u, signaling.StateCancelled, args.Data)
	}
	if err := m.do(ctx, func(t tx) (func(), error) {
		c := t.running(callID)
		if c != nil && !c.ended && !c.began() && !c.anyAnswered() && !c.ringing() {
			return m.endLocked(t, c, EndCancelled, a.UserID), nil
		}
		return nil, nil
	}); err != nil {
		m.log.Error("cancelled call not ended", "call", callID, "err", err)
	}
	return nil
}

// applyAnswer records an invitee's new state in the call of invitation
// inviteID (call callID, a hint: the invitation says which) and ends the call when no one is left to take part.
func (m *Manager) applyAnswer(ctx context.Context, callID, inviteID, user string, state signaling.InviteeState, data string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := m.do(ctx, func(t tx) (func(), error) {
		t.hint(hint{invites: []string{inviteID}, calls: []string{callID}, records: []string{callID}})
		c := t.byInvite(inviteID)
		if c == nil {
			return nil, nil
		}
		now := t.now()
		if pend := c.pending[inviteID]; pend != nil {
			delete(pend, user)
		}
		p := c.part(user)
		if p == nil || c.ended {
			return nil, nil
		}
		if state == signaling.StateAccepted {
			// An accept always admits, also a member rung in again after they
			// had accepted (or joined) and hung up; the record keeps its first
			// accept.
			c.admitted[user] = true
			delete(c.hungUp, user)
			m.armSetupLocked(t, c)
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
		t.save(c)
		return m.evaluateLocked(t, c, user), nil
	})
	if err != nil {
		m.log.Error("call invitation answer not recorded", "invite", inviteID, "user", user, "state", state, "err", err)
	}
}

// evaluateLocked ends a call that has not begun when nobody can take part
// any more: no invitee is ringing and none accepted.
func (m *Manager) evaluateLocked(t tx, c *call, by string) func() {
	if c.ended || c.began() || c.ringing() || c.anyAnswered() {
		return nil
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
	return m.endLocked(t, c, reason, by)
}

// armSetupLocked starts the timer that fails an accepted call whose media
// never connects.
func (m *Manager) armSetupLocked(t tx, c *call) {
	if c.setupArmed || c.began() || m.cfg.SetupTimeout <= 0 || t.closed() {
		return
	}
	c.setupArmed = true
	t.armSetup(c)
}

// setupFired ends call callID as failed if its setup timer still runs (the
// memory timer's callback; in cluster mode the poller's, with due).
func (m *Manager) setupFired(ctx context.Context, callID string, due *cluster.Due) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	decide := func(t tx) (func(), error) {
		c := t.running(callID)
		if c == nil || !c.setupArmed || c.began() {
			return nil, nil
		}
		return m.endLocked(t, c, EndFailed, ""), nil
	}
	var err error
	if m.cl != nil {
		err = m.cl.do(ctx, decide, due)
	} else {
		err = m.do(ctx, decide)
	}
	if err != nil {
		m.log.Warn("setup timeout not committed (in a cluster it fires again after the lease)", "call", callID, "err", err)
	}
}

// InvitationNote implements signaling.Observer: timeouts of call
// invitations (the answers and cancels came through the ops).
func (m *Manager) InvitationNote(n signaling.InvitationNote) {
	if !n.Ended && !slices.ContainsFunc(n.Changes, func(ch signaling.InviteeChange) bool { return ch.State == signaling.StateTimedOut }) {
		return // nothing to do (in cluster mode: no Redis step for every new invitation)
	}
	if m.cl != nil && m.cl.plain.has(n.InviteID) {
		return // no call's (cluster mode: its answer or cancel here found none)
	}
	if m.cl == nil && !m.hasInvite(n.InviteID) {
		// Standalone: no call's invitation (a call registers its
		// invitation before creating it); the common case of plain
		// signaling, which needs no transaction.
		return
	}
	ctx, cancel := bg()
	defer cancel()
	callID := ""
	err := m.do(ctx, func(t tx) (func(), error) {
		callID = ""
		c := t.byInvite(n.InviteID)
		if c == nil {
			return nil, nil
		}
		callID = c.rec.CallID
		if n.Ended && c.ended {
			t.dropInvite(n.InviteID)
		}
		return nil, nil
	})
	if err != nil {
		m.log.Error("call invitation note not handled", "invite", n.InviteID, "err", err)
		return
	}
	if callID == "" {
		return
	}
	for _, ch := range n.Changes {
		if ch.State == signaling.StateTimedOut {
			m.applyAnswer(ctx, callID, n.InviteID, ch.UserID, ch.State, "")
		}
	}
}
