package calls

import (
	"context"

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
				Data: data, PushInfo: args.OfflinePushInfo}, parseOwnCallData(data), true)
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
				Data: data, PushInfo: args.OfflinePushInfo}, parseOwnCallData(data), true)
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
