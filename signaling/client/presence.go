package client

import (
	"context"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Typed wrappers of the presence ops (PROTOCOL.md "Presence"). Changes come
// as protocol.EvUserStatusChanged events (data protocol.UserStatusResult):
// wait for them with WaitEvent. Subscriptions end when the user's last
// connection closes; after a reconnect, subscribe again.

// GetUserStatus sends getUserStatus and returns the listed users' statuses,
// in the order listed.
func (c *Client) GetUserStatus(ctx context.Context, userIDs []string) ([]protocol.UserStatus, error) {
	var r protocol.UserStatusResult
	if err := c.Do(ctx, protocol.OpGetUserStatus, protocol.UserIDListArgs{UserIDList: userIDs}, &r); err != nil {
		return nil, err
	}
	return r.StatusList, nil
}

// SubscribeUserStatus sends subscribeUserStatus and returns the listed
// users' statuses now.
func (c *Client) SubscribeUserStatus(ctx context.Context, userIDs []string) ([]protocol.UserStatus, error) {
	var r protocol.UserStatusResult
	if err := c.Do(ctx, protocol.OpSubscribeUserStatus, protocol.UserIDListArgs{UserIDList: userIDs}, &r); err != nil {
		return nil, err
	}
	return r.StatusList, nil
}

// UnsubscribeUserStatus sends unsubscribeUserStatus; no users: every
// subscription.
func (c *Client) UnsubscribeUserStatus(ctx context.Context, userIDs []string) error {
	if userIDs == nil {
		userIDs = []string{}
	}
	return c.Do(ctx, protocol.OpUnsubscribeUserStatus, protocol.UserIDListArgs{UserIDList: userIDs}, nil)
}

// SetSelfStatus sends setSelfStatus with the user's custom status text (""
// clears it).
func (c *Client) SetSelfStatus(ctx context.Context, customStatus string) error {
	return c.Do(ctx, protocol.OpSetSelfStatus, protocol.SetSelfStatusArgs{CustomStatus: customStatus}, nil)
}
