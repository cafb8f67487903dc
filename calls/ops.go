package calls

import (
	"context"

	"github.com/switchboard-rtc/switchboard/signaling"
)

// Ops returns the complete table of the ops the calls layer owns: the
// engine's invitation and group ops, of which it wraps invite,
// inviteInGroup, accept, reject, cancel and modifyInvitation itself (a
// call's invitations go through them, and every data a client sends there
// passes ClientData), and the call ops. It shares no name with another
// layer's table: merge it with rooms' (web.MergeOps refuses duplicates).
func (m *Manager) Ops() map[string]signaling.OpFunc {
	ops := m.eng.Ops()
	for name, op := range m.ownOps() {
		ops[name] = op // the engine's op is replaced by its wrapper here, and only here
	}
	return ops
}

// ownOps returns the call ops and the wrappers of the engine's ops.
func (m *Manager) ownOps() map[string]signaling.OpFunc {
	none := func(err error) (any, error) { return nil, err }
	return map[string]signaling.OpFunc{
		signaling.OpInvite: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteArgs) (any, error) {
			if args.Invitee == "" {
				return nil, signaling.ErrInvalidParameter.WithMessage("invitee is required")
			}
			return m.invite(ctx, a, signaling.InvitationSpec{Invitees: []string{args.Invitee}, Data: args.Data,
				OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout})
		}),
		signaling.OpInviteInGroup: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteInGroupArgs) (any, error) {
			if args.GroupID == "" {
				return nil, signaling.ErrInvalidParameter.WithMessage("groupID is required")
			}
			if len(args.InviteeList) == 0 {
				return nil, signaling.ErrInvalidParameter.WithMessage("inviteeList is empty")
			}
			return m.invite(ctx, a, signaling.InvitationSpec{GroupID: args.GroupID, Invitees: args.InviteeList, Data: args.Data,
				OnlineUserOnly: args.OnlineUserOnly, Timeout: args.Timeout})
		}),
		signaling.OpAccept: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.answer(ctx, a, args, signaling.ActionAccept))
		}),
		signaling.OpReject: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.answer(ctx, a, args, signaling.ActionReject))
		}),
		signaling.OpCancel: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.cancel(ctx, a, args))
		}),
		signaling.OpModifyInvitation: signaling.Op(func(ctx context.Context, a signaling.Actor, args signaling.InviteIDArgs) (any, error) {
			if err := clientArgs(&args); err != nil {
				return nil, err
			}
			return none(m.eng.ModifyInvitation(ctx, a, args))
		}),
		OpCall: signaling.Op(func(ctx context.Context, a signaling.Actor, args CallArgs) (any, error) {
			if args.Invitee == "" {
				return nil, signaling.ErrInvalidParameter.WithMessage("invitee is required")
			}
			mt, err := mediaType(args.MediaType)
			if err != nil {
				return nil, err
			}
			data := NewCallData(mt, args.RoomID, []string{args.Invitee}, args.UserData)
			return m.startCall(ctx, a, signaling.InvitationSpec{Invitees: []string{args.Invitee}, Timeout: args.Timeout,
				Data: data}, parseOwnCallData(data), true)
		}),
		OpGroupCall: signaling.Op(func(ctx context.Context, a signaling.Actor, args GroupCallArgs) (any, error) {
			if args.GroupID == "" || len(args.InviteeList) == 0 {
				return nil, signaling.ErrInvalidParameter.WithMessage("groupID and inviteeList are required")
			}
			mt, err := mediaType(args.MediaType)
			if err != nil {
				return nil, err
			}
			data := NewCallData(mt, args.RoomID, args.InviteeList, args.UserData)
			return m.startCall(ctx, a, signaling.InvitationSpec{GroupID: args.GroupID, Invitees: args.InviteeList, Timeout: args.Timeout,
				Data: data}, parseOwnCallData(data), true)
		}),
		OpHangup: signaling.Op(func(ctx context.Context, a signaling.Actor, args CallIDArgs) (any, error) {
			return none(m.hangup(ctx, a, args))
		}),
		OpInviteUser: signaling.Op(func(ctx context.Context, a signaling.Actor, args InviteUserArgs) (any, error) {
			return m.inviteUser(ctx, a, args)
		}),
		OpJoinCall: signaling.Op(func(ctx context.Context, a signaling.Actor, args CallIDArgs) (any, error) {
			return m.joinCall(ctx, a, args)
		}),
		OpSwitchCallMediaType: signaling.Op(func(ctx context.Context, a signaling.Actor, args SwitchArgs) (any, error) {
			return none(m.switchMediaType(ctx, a, args))
		}),
		OpGetCallHistory: signaling.Op(func(ctx context.Context, a signaling.Actor, args HistoryArgs) (any, error) {
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
	return "", signaling.ErrInvalidParameter.WithMessage("mediaType must be %q or %q", MediaAudio, MediaVideo)
}

// clientArgs passes the data of an answer, cancel or modify through
// ClientData: call-end data from a client is marked as the client's.
func clientArgs(args *signaling.InviteIDArgs) error {
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
