package client

import (
	"context"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Typed wrappers of the invitation and group ops. Later ops (rooms, calls)
// add theirs in their own files on top of Do.

// Invite sends invite and returns the invitation's id.
func (c *Client) Invite(ctx context.Context, args protocol.InviteArgs) (string, error) {
	var r protocol.InviteResult
	if err := c.Do(ctx, protocol.OpInvite, args, &r); err != nil {
		return "", err
	}
	return r.InviteID, nil
}

// InviteInGroup sends inviteInGroup and returns the invitation's id.
func (c *Client) InviteInGroup(ctx context.Context, args protocol.InviteInGroupArgs) (string, error) {
	var r protocol.InviteResult
	if err := c.Do(ctx, protocol.OpInviteInGroup, args, &r); err != nil {
		return "", err
	}
	return r.InviteID, nil
}

// Cancel sends cancel.
func (c *Client) Cancel(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, protocol.OpCancel, protocol.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// Accept sends accept.
func (c *Client) Accept(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, protocol.OpAccept, protocol.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// Reject sends reject.
func (c *Client) Reject(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, protocol.OpReject, protocol.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// ModifyInvitation sends modifyInvitation.
func (c *Client) ModifyInvitation(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, protocol.OpModifyInvitation, protocol.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// CreateGroup sends createGroup and returns the group's id from the result.
func (c *Client) CreateGroup(ctx context.Context, args protocol.CreateGroupArgs) (string, error) {
	var r protocol.GroupResult
	if err := c.Do(ctx, protocol.OpCreateGroup, args, &r); err != nil {
		return "", err
	}
	return r.GroupID, nil
}

// JoinGroup sends joinGroup.
func (c *Client) JoinGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, protocol.OpJoinGroup, protocol.GroupIDArgs{GroupID: groupID}, nil)
}

// QuitGroup sends quitGroup.
func (c *Client) QuitGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, protocol.OpQuitGroup, protocol.GroupIDArgs{GroupID: groupID}, nil)
}

// InviteUserToGroup sends inviteUserToGroup.
func (c *Client) InviteUserToGroup(ctx context.Context, groupID string, users []string) error {
	return c.Do(ctx, protocol.OpInviteUserToGroup, protocol.GroupUsersArgs{GroupID: groupID, UserList: users}, nil)
}

// KickGroupMember sends kickGroupMember.
func (c *Client) KickGroupMember(ctx context.Context, groupID string, members []string, reason string) error {
	return c.Do(ctx, protocol.OpKickGroupMember, protocol.KickArgs{GroupID: groupID, MemberList: members, Reason: reason}, nil)
}

// DismissGroup sends dismissGroup.
func (c *Client) DismissGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, protocol.OpDismissGroup, protocol.GroupIDArgs{GroupID: groupID}, nil)
}

// GetGroupMemberList sends getGroupMemberList.
func (c *Client) GetGroupMemberList(ctx context.Context, groupID string) ([]protocol.MemberInfo, error) {
	var r protocol.MemberListResult
	if err := c.Do(ctx, protocol.OpGetGroupMemberList, protocol.GroupIDArgs{GroupID: groupID}, &r); err != nil {
		return nil, err
	}
	return r.MemberList, nil
}

// GetJoinedGroupList sends getJoinedGroupList.
func (c *Client) GetJoinedGroupList(ctx context.Context) ([]protocol.GroupInfo, error) {
	var r protocol.GroupListResult
	if err := c.Do(ctx, protocol.OpGetJoinedGroupList, nil, &r); err != nil {
		return nil, err
	}
	return r.GroupList, nil
}
