package web_test

import "github.com/switchboard-rtc/switchboard/signaling"

// allowPendingInvitations raises the pending-invitation caps to n.
func allowPendingInvitations(cfg *signaling.Config, n int) {
	cfg.Limits.MaxPendingPerInvitee = n
	cfg.Limits.MaxPendingPerInviter = n
}
