package signaling

import (
	"context"
	"encoding/json"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Presence (PROTOCOL.md, "Presence"): a user is online while any of their
// connections is open. A user may see the status of themselves and of the
// users they share a group with; anyone else is "unknown" to them
// (getUserStatus) and cannot be subscribed to (status_not_visible). A
// subscription lasts until it is cancelled or the subscriber's last
// connection closes; an onUserStatusChanged goes to the connections of the
// subscribers who may see the user when the status changes (its online
// state, or its custom text). Custom texts are stored: they survive
// restarts.
//
// The state below is guarded by Engine.mu, except that statusWrite
// serializes setSelfStatus across its store write (lock order: statusWrite,
// then mu).
type presence struct {
	subs   map[string]map[string]struct{} // subscriber → the users they subscribed to
	watch  map[string]map[string]struct{} // user → their subscribers
	custom map[string]string              // user → custom status text
}

func newPresence() presence {
	return presence{subs: map[string]map[string]struct{}{}, watch: map[string]map[string]struct{}{}, custom: map[string]string{}}
}

// canSeeLocked reports whether viewer may see user's status: themselves, or
// a user they share a group with.
func (e *Engine) canSeeLocked(viewer, user string) bool {
	if viewer == user {
		return true
	}
	a, b := e.userGroups[viewer], e.userGroups[user]
	if len(b) < len(a) {
		a, b = b, a
	}
	for g := range a {
		if _, ok := b[g]; ok {
			return true
		}
	}
	return false
}

// statusLocked is user's status as viewer sees it.
func (e *Engine) statusLocked(viewer, user string) protocol.UserStatus {
	if !e.canSeeLocked(viewer, user) {
		return protocol.UserStatus{UserID: user, StatusType: protocol.StatusUnknown}
	}
	st := protocol.UserStatus{UserID: user, StatusType: protocol.StatusOffline, CustomStatus: e.presence.custom[user]}
	if len(e.sessions[user]) > 0 {
		st.StatusType = protocol.StatusOnline
	}
	return st
}

// statusChangedLocked delivers user's status to the open connections of
// their subscribers who may see it, and, when self, to user's own
// connections but skip (a custom text set on another device). Deliver is a
// non-blocking enqueue: a subscriber that does not read is closed by its
// transport, nobody else waits.
func (e *Engine) statusChangedLocked(user string, self bool, skip protocol.Session) {
	watchers := e.presence.watch[user]
	if len(watchers) == 0 && !self {
		return
	}
	var frame []byte
	send := func(to string) {
		if frame == nil {
			data, err := json.Marshal(protocol.UserStatusResult{StatusList: []protocol.UserStatus{e.statusLocked(to, user)}})
			if err == nil {
				frame, err = json.Marshal(protocol.EventFrame{Event: protocol.EvUserStatusChanged, Data: json.RawMessage(data)})
			}
			if err != nil {
				e.log.Error("encode status event", "user", user, "err", err)
				return
			}
		}
		for _, s := range e.sessions[to] {
			if s != skip {
				s.Deliver(frame)
			}
		}
	}
	for w := range watchers {
		if w != user && e.canSeeLocked(w, user) {
			send(w)
		}
	}
	if self {
		send(user)
	}
}

// dropSubscriptionsLocked removes every subscription of subscriber (their
// last connection closed).
func (e *Engine) dropSubscriptionsLocked(subscriber string) {
	for u := range e.presence.subs[subscriber] {
		e.unwatchLocked(subscriber, u)
	}
	delete(e.presence.subs, subscriber)
}

func (e *Engine) unwatchLocked(subscriber, user string) {
	if w := e.presence.watch[user]; w != nil {
		delete(w, subscriber)
		if len(w) == 0 {
			delete(e.presence.watch, user)
		}
	}
}

// checkStatusList validates the userIDList of a presence op: 1 to
// limits.max_group_members distinct valid user IDs (empty allowed when
// allowEmpty).
func (e *Engine) checkStatusList(users []string, allowEmpty bool) error {
	if len(users) == 0 && !allowEmpty {
		return protocol.ErrInvalidParameter.WithMessage("args.userIDList must list at least one user")
	}
	return e.checkUserList("args.userIDList", users)
}

// GetUserStatus returns the status of each listed user as a sees it, in the
// order listed ("unknown" for users a may not see).
func (e *Engine) GetUserStatus(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) (protocol.UserStatusResult, error) {
	if err := e.checkStatusList(args.UserIDList, false); err != nil {
		return protocol.UserStatusResult{}, err
	}
	if e.cl != nil {
		return e.cl.statusList(ctx, a.UserID, args.UserIDList)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.statusListLocked(a.UserID, args.UserIDList), nil
}

func (e *Engine) statusListLocked(viewer string, users []string) protocol.UserStatusResult {
	out := protocol.UserStatusResult{StatusList: make([]protocol.UserStatus, 0, len(users))}
	for _, u := range users {
		out.StatusList = append(out.StatusList, e.statusLocked(viewer, u))
	}
	return out
}

// SubscribeUserStatus subscribes a's user to the listed users' status
// changes and returns their statuses now. Every listed user must be visible
// to a (status_not_visible, naming the first who is not), and a's user may
// have at most limits.max_status_subscriptions subscriptions
// (too_many_status_subscriptions); on an error nothing is subscribed.
func (e *Engine) SubscribeUserStatus(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) (protocol.UserStatusResult, error) {
	if err := e.checkStatusList(args.UserIDList, false); err != nil {
		return protocol.UserStatusResult{}, err
	}
	me := a.UserID
	e.mu.Lock()
	if len(e.sessions[me]) == 0 {
		e.mu.Unlock()
		// The connection closed meanwhile: its subscriptions would outlive it.
		return protocol.UserStatusResult{}, protocol.ErrNotLoggedIn.WithMessage("no open connection of %s", me)
	}
	if e.cl != nil {
		e.mu.Unlock()
		return e.cl.subscribe(ctx, me, args.UserIDList)
	}
	defer e.mu.Unlock()
	mine := e.presence.subs[me]
	added := 0
	for _, u := range args.UserIDList {
		if !e.canSeeLocked(me, u) {
			return protocol.UserStatusResult{}, protocol.ErrStatusNotVisible.WithMessage("you may not see the status of %s: you share no group", u)
		}
		if _, ok := mine[u]; !ok {
			added++
		}
	}
	if lim := e.cfg.Limits.MaxStatusSubscriptions; lim > 0 && len(mine)+added > lim {
		return protocol.UserStatusResult{}, protocol.ErrTooManyStatusSubs.WithMessage(
			"you would have %d status subscriptions; the limit is %d", len(mine)+added, lim)
	}
	if mine == nil {
		mine = make(map[string]struct{}, added)
		e.presence.subs[me] = mine
	}
	for _, u := range args.UserIDList {
		mine[u] = struct{}{}
		w := e.presence.watch[u]
		if w == nil {
			w = make(map[string]struct{})
			e.presence.watch[u] = w
		}
		w[me] = struct{}{}
	}
	return e.statusListLocked(me, args.UserIDList), nil
}

// UnsubscribeUserStatus cancels a's user's subscriptions to the listed
// users (users not subscribed to are skipped); an empty list cancels all.
func (e *Engine) UnsubscribeUserStatus(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) error {
	if err := e.checkStatusList(args.UserIDList, true); err != nil {
		return err
	}
	if e.cl != nil {
		return e.cl.unsubscribe(ctx, a.UserID, args.UserIDList)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(args.UserIDList) == 0 {
		e.dropSubscriptionsLocked(a.UserID)
		return nil
	}
	mine := e.presence.subs[a.UserID]
	for _, u := range args.UserIDList {
		if _, ok := mine[u]; ok {
			delete(mine, u)
			e.unwatchLocked(a.UserID, u)
		}
	}
	if len(mine) == 0 {
		delete(e.presence.subs, a.UserID)
	}
	return nil
}

// SetSelfStatus sets a's user's custom status text (at most
// limits.max_custom_status_bytes; "" clears it) and stores it; their
// subscribers and their other connections get onUserStatusChanged. Setting
// the text it already has changes nothing and sends nothing.
func (e *Engine) SetSelfStatus(ctx context.Context, a protocol.Actor, args protocol.SetSelfStatusArgs) error {
	if lim := e.cfg.Limits.MaxCustomStatusBytes; lim > 0 && len(args.CustomStatus) > lim {
		return protocol.ErrDataTooLarge.WithMessage("args.customStatus has %d bytes; the limit is %d", len(args.CustomStatus), lim)
	}
	e.statusWrite.Lock()
	defer e.statusWrite.Unlock()
	return e.do(ctx, func(t tx) error { return setSelfStatus(t, a, args.CustomStatus) })
}

// setSelfStatus decides a's user's new custom status text.
func setSelfStatus(t tx, a protocol.Actor, text string) error {
	if t.customStatus(a.UserID) == text {
		return nil
	}
	t.apply(SetCustomStatus{UserID: a.UserID, Text: text})
	t.statusChanged(a.UserID, a.Session)
	return nil
}

// setCustomLocked sets user's custom status text ("" removes it).
func (e *Engine) setCustomLocked(user, text string) {
	if text == "" {
		delete(e.presence.custom, user)
	} else {
		e.presence.custom[user] = text
	}
}

// presenceOps are the presence ops, merged into Ops.
func (e *Engine) presenceOps() map[string]protocol.OpFunc {
	return map[string]protocol.OpFunc{
		protocol.OpGetUserStatus: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) (any, error) {
			return e.GetUserStatus(ctx, a, args)
		}),
		protocol.OpSubscribeUserStatus: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) (any, error) {
			return e.SubscribeUserStatus(ctx, a, args)
		}),
		protocol.OpUnsubscribeUserStatus: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.UserIDListArgs) (any, error) {
			return none(e.UnsubscribeUserStatus(ctx, a, args))
		}),
		protocol.OpSetSelfStatus: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.SetSelfStatusArgs) (any, error) {
			return none(e.SetSelfStatus(ctx, a, args))
		}),
	}
}
