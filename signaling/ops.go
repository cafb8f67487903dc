package signaling

import (
	"context"
	"encoding/json"
)

// OpFunc performs one op of the wire protocol for actor with the request's
// raw args and returns the reply's result.
type OpFunc func(ctx context.Context, a Actor, args json.RawMessage) (any, error)

// Op adapts a typed operation to an OpFunc that decodes its args strictly.
func Op[T any](f func(ctx context.Context, a Actor, args T) (any, error)) OpFunc {
	return func(ctx context.Context, a Actor, raw json.RawMessage) (any, error) {
		args, derr := DecodeArgs[T](raw)
		if derr != nil {
			return nil, derr
		}
		return f(ctx, a, args)
	}
}

func none(err error) (any, error) { return nil, err }

// Ops returns the engine's ops by name; the transport merges them with the
// ops of rooms and calls.
func (e *Engine) Ops() map[string]OpFunc {
	return map[string]OpFunc{
		OpInvite: Op(func(ctx context.Context, a Actor, args InviteArgs) (any, error) {
			id, err := e.Invite(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return InviteResult{InviteID: id}, nil
		}),
		OpInviteInGroup: Op(func(ctx context.Context, a Actor, args InviteInGroupArgs) (any, error) {
			id, err := e.InviteInGroup(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return InviteResult{InviteID: id}, nil
		}),
		OpCancel: Op(func(ctx context.Context, a Actor, args InviteIDArgs) (any, error) {
			return none(e.Cancel(ctx, a, args))
		}),
		OpAccept: Op(func(ctx context.Context, a Actor, args InviteIDArgs) (any, error) {
			return none(e.Accept(ctx, a, args))
		}),
		OpReject: Op(func(ctx context.Context, a Actor, args InviteIDArgs) (any, error) {
			return none(e.Reject(ctx, a, args))
		}),
		OpModifyInvitation: Op(func(ctx context.Context, a Actor, args InviteIDArgs) (any, error) {
			return none(e.ModifyInvitation(ctx, a, args))
		}),
		OpCreateGroup: Op(func(ctx context.Context, a Actor, args CreateGroupArgs) (any, error) {
			id, err := e.CreateGroup(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return GroupResult{GroupID: id}, nil
		}),
		OpJoinGroup: Op(func(ctx context.Context, a Actor, args GroupIDArgs) (any, error) {
			return none(e.JoinGroup(ctx, a, args))
		}),
		OpQuitGroup: Op(func(ctx context.Context, a Actor, args GroupIDArgs) (any, error) {
			return none(e.QuitGroup(ctx, a, args))
		}),
		OpInviteUserToGroup: Op(func(ctx context.Context, a Actor, args GroupUsersArgs) (any, error) {
			return none(e.InviteUserToGroup(ctx, a, args))
		}),
		OpKickGroupMember: Op(func(ctx context.Context, a Actor, args KickArgs) (any, error) {
			return none(e.KickGroupMember(ctx, a, args))
		}),
		OpDismissGroup: Op(func(ctx context.Context, a Actor, args GroupIDArgs) (any, error) {
			return none(e.DismissGroup(ctx, a, args))
		}),
		OpGetGroupMemberList: Op(func(ctx context.Context, a Actor, args GroupIDArgs) (any, error) {
			return e.GetGroupMemberList(ctx, a, args)
		}),
		OpGetJoinedGroupList: Op(func(ctx context.Context, a Actor, _ struct{}) (any, error) {
			return e.GetJoinedGroupList(ctx, a)
		}),
	}
}
