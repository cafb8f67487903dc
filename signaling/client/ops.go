package client

import (
	"context"

	"github.com/switchboard-rtc/switchboard/signaling"
)

// Typed wrappers of the invitation and group ops. Later ops (rooms, calls)
// add theirs in their own files on top of Do.

// Invite sends invite and returns the invitation's id.
func (c *Client) Invite(ctx context.Context, args signaling.InviteArgs) (string, error) {
	var r signaling.InviteResult
	if err := c.Do(ctx, signaling.OpInvite, args, &r); err != nil {
		return "", err
	}
	return r.InviteID, nil
}

// InviteInGroup sends inviteInGroup and returns the invitation's id.
func (c *Client) InviteInGroup(ctx context.Context, args signaling.InviteInGroupArgs) (string, error) {
	var r signaling.InviteResult
	if err := c.Do(ctx, signaling.OpInviteInGroup, args, &r); err != nil {
		return "", err
	}
	return r.InviteID, nil
}

// Cancel sends cancel.
func (c *Client) Cancel(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, signaling.OpCancel, signaling.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// Accept sends accept.
func (c *Client) Accept(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, signaling.OpAccept, signaling.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// Reject sends reject.
func (c *Client) Reject(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, signaling.OpReject, signaling.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// ModifyInvitation sends modifyInvitation.
func (c *Client) ModifyInvitation(ctx context.Context, inviteID, data string) error {
	return c.Do(ctx, signaling.OpModifyInvitation, signaling.InviteIDArgs{InviteID: inviteID, Data: data}, nil)
}

// CreateGroup sends createGroup and returns the group's id from the result.
func (c *Client) CreateGroup(ctx context.Context, args signaling.CreateGroupArgs) (string, error) {
	var r signaling.GroupResult
	if err := c.Do(ctx, signaling.OpCreateGroup, args, &r); err != nil {
		return "", err
	}
	return r.GroupID, nil
}

// JoinGroup sends joinGroup.
func (c *Client) JoinGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, signaling.OpJoinGroup, signaling.GroupIDArgs{GroupID: groupID}, nil)
}

// QuitGroup sends quitGroup.
func (c *Client) QuitGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, signaling.OpQuitGroup, signaling.GroupIDArgs{GroupID: groupID}, nil)
}

// InviteUserToGroup sends inviteUserToGroup.
func (c *Client) InviteUserToGroup(ctx context.Context, groupID string, users []string) error {
	return c.Do(ctx, signaling.OpInviteUserToGroup, signaling.GroupUsersArgs{GroupID: groupID, UserList: users}, nil)
}

// KickGroupMember sends kickGroupMember.
func (c *Client) KickGroupMember(ctx context.Context, groupID string, members []string, reason string) error {
	return c.Do(ctx, signaling.OpKickGroupMember, signaling.KickArgs{GroupID: groupID, MemberList: members, Reason: reason}, nil)
}

// DismissGroup sends dismissGroup.
func (c *Client) DismissGroup(ctx context.Context, groupID string) error {
	return c.Do(ctx, signaling.OpDismissGroup, signaling.GroupIDArgs{GroupID: groupID}, nil)
}

// GetGroupMemberList sends getGroupMemberList.
func (c *Client) GetGroupMemberList(ctx context.Context, groupID string) ([]signaling.MemberInfo, error) {
	var r signaling.MemberListResult
	if err := c.Do(ctx, signaling.OpGetGroupMemberList, signaling.GroupIDArgs{GroupID: groupID}, &r); err != nil {
		return nil, err
	}
	return r.MemberList, nil
}

// GetJoinedGroupList sends getJoinedGroupList.
func (c *Client) GetJoinedGroupList(ctx context.Context) ([]signaling.GroupInfo, error) {
	var r signaling.GroupListResult
	if err := c.Do(ctx, signaling.OpGetJoinedGroupList, nil, &r); err != nil {
		return nil, err
	}
	return r.GroupList, nil
}
