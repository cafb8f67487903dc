package signaling

import (
	"fmt"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// InviteeState is the state of one invitee within an invitation. The zero
// value is StateUnknown so that an unset state is never mistaken for a real
// one. Pending is the only non-final state: every transition goes from
// Pending to one of the final states and never back.
type InviteeState int

const (
	StateUnknown InviteeState = iota
	StatePending
	StateAccepted
	StateRejected
	StateTimedOut
	StateCancelled
)

var stateNames = [...]string{"unknown", "pending", "accepted", "rejected", "timed_out", "cancelled"}

func (s InviteeState) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("InviteeState(%d)", int(s))
	}
	return stateNames[s]
}

// ParseInviteeState is the inverse of String, for stores.
func ParseInviteeState(s string) (InviteeState, error) {
	for i, n := range stateNames {
		if n == s && i != int(StateUnknown) {
			return InviteeState(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("signaling: unknown invitee state %q", s)
}

// Final reports whether no further transition is possible.
func (s InviteeState) Final() bool { return s >= StateAccepted && s <= StateCancelled }

// Action is what happens to an invitee: an answer by the invitee, a cancel
// by the inviter, or the server's timer.
type Action int

const (
	ActionUnknown Action = iota
	ActionAccept
	ActionReject
	ActionTimeout
	ActionCancel
)

var actionNames = [...]string{"unknown", "accept", "reject", "timeout", "cancel"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return fmt.Sprintf("Action(%d)", int(a))
	}
	return actionNames[a]
}

// NextState is the one pure transition function of the invitee state
// machine. It returns the state after applying a to an invitee in state s,
// or ErrInvalidInviteID (carrying the current state in its message) when the
// invitee has already reached a final state: the loser of a race learns what
// the outcome was.
func NextState(s InviteeState, a Action) (InviteeState, error) {
	if s != StatePending {
		return s, protocol.ErrInvalidInviteID.WithMessage("invitation already processed for this invitee: %s", s)
	}
	switch a {
	case ActionAccept:
		return StateAccepted, nil
	case ActionReject:
		return StateRejected, nil
	case ActionTimeout:
		return StateTimedOut, nil
	case ActionCancel:
		return StateCancelled, nil
	}
	return s, protocol.ErrInvalidParameter.WithMessage("unknown action %d", int(a))
}
