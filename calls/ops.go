package calls

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Ops returns the complete table of the ops the calls layer owns: the
// engine's invitation and group ops, of which it wraps invite,
// inviteInGroup, accept, reject, cancel and modifyInvitation itself (a
// call's invitations go through them, and every data a client sends there
// passes ClientData), and the call ops. It shares no name with another
// layer's table: merge it with rooms' (web.MergeOps refuses duplicates).
func (m *Manager) Ops() map[string]protocol.OpFunc {
	ops := m.eng.Ops()
	for name, op := range m.ownOps() {
		ops[name] = op // the engine's op is replaced by its wrapper here, and only here
	}
	return ops
}

// ownOps returns the call ops and the wrappers of the engine's ops.
func (m *Manager) ownOps() map[string]protocol.OpFunc {
	none := func(err error) (any, error) { return nil, err }
	return map[string]protocol.OpFunc{
		protocol.OpInvite: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteArgs) (any, error) {
			if args.Invitee == "" {
				return nil, protocol.ErrInvalidParameter.WithMessage("invitee is required")
			}
			return m.invite(ctx, a, signaling.InvitationSpec{Invitees: []string{args.Invitee}, Data: args.Data,
				OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout, PushInfo: args.OfflinePushInfo})
		}),
		protocol.OpInviteInGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteInGroupArgs) (any, error) {
			if args.GroupID == "" {
				return nil, protocol.ErrInvalidParameter.WithMessage("groupID is required")
			}
			if len(args.InviteeList) == 0 {
				return nil, protocol.ErrInvalidParameter.WithMessage("inviteeList is empty")
			}
			return m.invite(ctx, a, signaling.InvitationSpec{GroupID: args.GroupID, Invitees: args.InviteeList, Data: args.Data,
				OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout, PushInfo: args.OfflinePushInfo})
		}),
		protocol.OpAccept: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.answer(ctx, a, args, signaling.ActionAccept))
		}),
		protocol.OpReject: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.answer(ctx, a, args, signaling.ActionReject))
		}),
		protocol.OpCancel: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.cancel(ctx, a, args))
		}),
		protocol.OpModifyInvitation: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.eng.ModifyInvitation(ctx, a, args))
		}),
		OpCall: protocol.Op(func(ctx context.Context, a protocol.Actor, args CallArgs) (any, error) {
			if args.Invitee == "" {
				return nil, protocol.ErrInvalidParameter.WithMessage("invitee is required")
			}
			mt, err := mediaType(args.MediaType)
			if err != nil {
				return nil, err
			}
			data := NewCallData(mt, args.RoomID, []string{args.Invitee}, args.UserData)
			return m.startCall(ctx, a, signaling.InvitationSpec{Invitees: []string{args.Invitee}, Timeout: args.Timeout,
				Data: data, PushInfo: args.OfflinePushInfo}, parseOwnCallData(data), serverData)
		}),
		OpGroupCall: protocol.Op(func(ctx context.Context, a protocol.Actor, args GroupCallArgs) (any, error) {
			if args.GroupID == "" || len(args.InviteeList) == 0 {
				return nil, protocol.ErrInvalidParameter.WithMessage("groupID and inviteeList are required")
			}
			mt, err := mediaType(args.MediaType)
			if err != nil {
				return nil, err
			}
			data := NewCallData(mt, args.RoomID, args.InviteeList, args.UserData)
			return m.startCall(ctx, a, signaling.InvitationSpec{GroupID: args.GroupID, Invitees: args.InviteeList, Timeout: args.Timeout,
				Data: data, PushInfo: args.OfflinePushInfo}, parseOwnCallData(data), serverData)
		}),
		OpHangup: protocol.Op(func(ctx context.Context, a protocol.Actor, args CallIDArgs) (any, error) {
			return none(m.hangup(ctx, a, args))
		}),
		OpInviteUser: protocol.Op(func(ctx context.Context, a protocol.Actor, args InviteUserArgs) (any, error) {
			return m.inviteUser(ctx, a, args)
		}),
		OpJoinCall: protocol.Op(func(ctx context.Context, a protocol.Actor, args CallIDArgs) (any, error) {
			return m.joinCall(ctx, a, args)
		}),
		OpSwitchCallMediaType: protocol.Op(func(ctx context.Context, a protocol.Actor, args SwitchArgs) (any, error) {
			return none(m.switchMediaType(ctx, a, args))
		}),
		OpGetCallHistory: protocol.Op(func(ctx context.Context, a protocol.Actor, args HistoryArgs) (any, error) {
			return m.history(ctx, a, args)
		}),
		OpGetGroupCalls: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (any, error) {
			return m.groupCalls(ctx, a, args)
		}),
	}
}

func mediaType(s string) (string, error) {
	switch s {
	case "", MediaVideo:
		return MediaVideo, nil
	case MediaAudio:
		return MediaAudio, nil
	}
	return "", protocol.ErrInvalidParameter.WithMessage("mediaType must be %q or %q", MediaAudio, MediaVideo)
}

// clientArgs passes the data of an answer, cancel or modify through
// ClientData: call-end data from a client is marked as the client's.
func clientArgs(args *protocol.InviteIDArgs) error {
	data, err := ClientData(args.Data)
	if err != nil {
		return err
	}
	args.Data = data
	return nil
}

// parseOwnCallData parses call data that NewCallData just composed, which
// is always a well-formed call's, so there is no error to handle.
func parseOwnCallData(data string) CallData {
	d, _, _ := ParseCallData(data)
	return d
}

// ---- the call ops ----

// hangup leaves a call: before it begins, the caller cancels and an invitee
// rejects; once it runs, the user leaves its room (a one-to-one call then
// ends, a group call goes on while two remain).
func (m *Manager) hangup(ctx context.Context, a protocol.Actor, args CallIDArgs) error {
	var pendingID, pendingData string
	var connected, cancelRings bool
	var ids []string
	err := m.do(ctx, func(t tx) (func(), error) {
		pendingID, pendingData, connected, cancelRings, ids = "", "", false, false, nil
		c := t.running(args.CallID)
		if c == nil {
			return nil, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
		}
		if c.part(a.UserID) == nil {
			return nil, ErrNotInCall
		}
		if id := c.pendingInviteID(a.UserID); id != "" {
			pendingID, pendingData = id, hangupData(c.rec.CallID, c.rec.RoomID, c.rec.MediaType, 0)
			return nil, nil
		}
		c.hungUp[a.UserID] = true
		connected = c.on(a.UserID)
		switch {
		case connected:
			// rooms tells MemberLeft, which ends or continues the call (in
			// cluster mode the node of the user's room does, when it sees
			// the hangup: clusterCalls.reconcile).
		case c.isLost(a.UserID):
			// Their media node let them go and they hang up instead of
			// entering again: they leave now.
			return m.leftLocked(t, c, a.UserID, rooms.LeaveLeft), nil
		case a.UserID == c.rec.Caller && !c.began() && !c.anyAnswered():
			for id, pend := range c.pending {
				if len(pend) > 0 {
					ids = append(ids, id)
				}
			}
			slices.Sort(ids)
			cancelRings = true
		case !c.began() && (c.rec.GroupID == "" || a.UserID == c.rec.Caller):
			return m.endLocked(t, c, EndHangup, a.UserID), nil
		default:
			delete(c.admitted, a.UserID)
			return m.evaluateLocked(t, c, a.UserID), nil
		}
		return nil, nil
	})
	switch {
	case err != nil:
		return err
	case pendingID != "":
		return m.answer(ctx, a, protocol.InviteIDArgs{InviteID: pendingID, Data: pendingData}, signaling.ActionReject)
	case connected:
		m.leaveRoom(args.CallID, a.UserID)
	case cancelRings:
		for _, id := range ids {
			if err := m.cancel(ctx, a, protocol.InviteIDArgs{InviteID: id}); err != nil && !errors.Is(err, protocol.ErrInvalidInviteID) {
				return err
			}
		}
		return m.do(ctx, func(t tx) (func(), error) {
			if c := t.running(args.CallID); c != nil {
				return m.endLocked(t, c, EndCancelled, a.UserID), nil
			}
			return nil, nil
		})
	}
	return nil
}

// inviteUser rings more group members into a call; those already in it or
// ringing are skipped.
func (m *Manager) inviteUser(ctx context.Context, a protocol.Actor, args InviteUserArgs) (InviteUserResult, error) {
	var users []string
	var spec signaling.InvitationSpec
	err := m.do(ctx, func(t tx) (func(), error) {
		users = nil
		c := t.running(args.CallID)
		if c == nil {
			return nil, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
		}
		if c.rec.GroupID == "" {
			return nil, ErrNotGroupCall
		}
		if !c.admitted[a.UserID] {
			return nil, ErrNotInCall
		}
		for _, u := range args.UserList {
			if !c.admitted[u] && c.pendingInviteID(u) == "" && !slices.Contains(users, u) {
				users = append(users, u)
			}
		}
		cd, _, _ := ParseCallData(c.data)
		spec = signaling.InvitationSpec{GroupID: c.rec.GroupID, Invitees: users, Data: cd.WithIDs(c.rec.RoomID, c.rec.CallID), Timeout: args.Timeout}
		return nil, nil
	})
	if err != nil {
		return InviteUserResult{}, err
	}
	if len(users) == 0 {
		return InviteUserResult{UserList: []string{}}, nil
	}
	id := m.eng.NewID("inv_")
	res, err := m.ring(ctx, a, args.CallID, id, spec)
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
	var res JoinResult
	var group, pendingID string
	var already bool
	err := m.do(ctx, func(t tx) (func(), error) {
		c := t.running(args.CallID)
		if c == nil {
			return nil, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
		}
		res = JoinResult{CallID: c.rec.CallID, RoomID: c.rec.RoomID, MediaType: c.rec.MediaType, StartTime: ms(c.rec.BeganAt)}
		group, pendingID, already = c.rec.GroupID, c.pendingInviteID(a.UserID), c.admitted[a.UserID]
		return nil, nil
	})
	if err != nil {
		return JoinResult{}, err
	}
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
	err = m.do(ctx, func(t tx) (func(), error) {
		c := t.running(args.CallID)
		if c == nil {
			return nil, ErrCallEnded
		}
		now := t.now()
		p := c.addPart(a.UserID, RoleJoiner, now)
		if p.Role != RoleJoiner {
			p.Answer, p.AnsweredAt = AnswerAccepted, now
		}
		c.admitted[a.UserID] = true
		delete(c.hungUp, a.UserID)
		t.index(c, a.UserID)
		t.save(c)
		return nil, nil
	})
	if err != nil {
		return JoinResult{}, err
	}
	return res, nil
}

// groupCalls lists a group's running calls for one of its members, so that
// a member who was not rung (or declined) can find one and joinCall it.
func (m *Manager) groupCalls(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (GroupCallsResult, error) {
	if args.GroupID == "" {
		return GroupCallsResult{}, protocol.ErrInvalidParameter.WithMessage("groupID is required")
	}
	if !m.eng.IsGroupMember(args.GroupID, a.UserID) {
		return GroupCallsResult{}, protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", args.GroupID)
	}
	var out GroupCallsResult
	err := m.view(ctx, func(t tx) {
		out = GroupCallsResult{Calls: []GroupCallInfo{}}
		for _, c := range t.allRunning() {
			if c.ended || c.rec.GroupID != args.GroupID {
				continue
			}
			in := []string{}
			for _, p := range c.rec.Participants {
				if c.admitted[p.UserID] && !c.hungUp[p.UserID] {
					in = append(in, p.UserID)
				}
			}
			out.Calls = append(out.Calls, GroupCallInfo{CallID: c.rec.CallID, RoomID: c.rec.RoomID, Caller: c.rec.Caller, MediaType: c.rec.MediaType,
				CreatedAt: ms(c.rec.CreatedAt), StartTime: ms(c.rec.BeganAt), Participants: in})
		}
	})
	if err != nil {
		return GroupCallsResult{}, err
	}
	slices.SortFunc(out.Calls, func(x, y GroupCallInfo) int {
		return cmp.Or(cmp.Compare(x.CreatedAt, y.CreatedAt), cmp.Compare(x.CallID, y.CallID))
	})
	return out, nil
}

// switchMediaType switches a call between video and audio.
func (m *Manager) switchMediaType(ctx context.Context, a protocol.Actor, args SwitchArgs) error {
	if args.MediaType != MediaAudio && args.MediaType != MediaVideo {
		return protocol.ErrInvalidParameter.WithMessage("mediaType must be %q or %q", MediaAudio, MediaVideo)
	}
	var to []string
	err := m.do(ctx, func(t tx) (func(), error) {
		c := t.running(args.CallID)
		if c == nil {
			return nil, ErrCallNotFound.WithMessage("no running call %q", args.CallID)
		}
		if !c.admitted[a.UserID] {
			return nil, ErrNotInCall
		}
		c.rec.MediaType = args.MediaType
		to = slices.DeleteFunc(m.participantsLocked(c), func(u string) bool { return u == a.UserID })
		t.save(c)
		return nil, nil
	})
	if err != nil {
		return err
	}
	return m.eng.SendEvent(ctx, to, EvCallMediaTypeChanged, MediaTypeEvent{CallID: args.CallID, MediaType: args.MediaType, UserID: a.UserID}, false)
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
