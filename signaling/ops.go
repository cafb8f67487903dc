package signaling

import (
	"context"
	"maps"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func none(err error) (any, error) { return nil, err }

// Ops returns the engine's ops by name; the transport merges them with the
// ops of rooms and calls.
func (e *Engine) Ops() map[string]protocol.OpFunc {
	ops := map[string]protocol.OpFunc{
		protocol.OpInvite: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteArgs) (any, error) {
			id, err := e.Invite(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return protocol.InviteResult{InviteID: id}, nil
		}),
		protocol.OpInviteInGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteInGroupArgs) (any, error) {
			id, err := e.InviteInGroup(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return protocol.InviteResult{InviteID: id}, nil
		}),
		protocol.OpCancel: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			return none(e.Cancel(ctx, a, args))
		}),
		protocol.OpAccept: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			return none(e.Accept(ctx, a, args))
		}),
		protocol.OpReject: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			return none(e.Reject(ctx, a, args))
		}),
		protocol.OpModifyInvitation: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs) (any, error) {
			return none(e.ModifyInvitation(ctx, a, args))
		}),
		protocol.OpCreateGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.CreateGroupArgs) (any, error) {
			id, err := e.CreateGroup(ctx, a, args)
			if err != nil {
				return nil, err
			}
			return protocol.GroupResult{GroupID: id}, nil
		}),
		protocol.OpJoinGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (any, error) {
			return none(e.JoinGroup(ctx, a, args))
		}),
		protocol.OpQuitGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (any, error) {
			return none(e.QuitGroup(ctx, a, args))
		}),
		protocol.OpInviteUserToGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupUsersArgs) (any, error) {
			return none(e.InviteUserToGroup(ctx, a, args))
		}),
		protocol.OpKickGroupMember: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.KickArgs) (any, error) {
			return none(e.KickGroupMember(ctx, a, args))
		}),
		protocol.OpDismissGroup: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (any, error) {
			return none(e.DismissGroup(ctx, a, args))
		}),
		protocol.OpGetGroupMemberList: protocol.Op(func(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (any, error) {
			return e.GetGroupMemberList(ctx, a, args)
		}),
		protocol.OpGetJoinedGroupList: protocol.Op(func(ctx context.Context, a protocol.Actor, _ struct{}) (any, error) {
			return e.GetJoinedGroupList(ctx, a)
		}),
	}
	maps.Copy(ops, e.presenceOps())
	return ops
}
