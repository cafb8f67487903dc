package signaling

import "time"

// Config is the engine's configuration, filled by cmd from the config file.
type Config struct {
	// DefaultTimeout applies when an invite names no timeout.
	DefaultTimeout time.Duration
	// MaxTimeout is the largest timeout an invite may ask for.
	MaxTimeout time.Duration
	// OfflineEventTTL is how long an event is kept for a user who was offline.
	OfflineEventTTL time.Duration
	Limits          Limits
}

// Limits bound what one request or one user may use.
type Limits struct {
	MaxDataBytes       int // size of an invitation's data string
	MaxInvitees        int // inviteeList length
	MaxGroupMembers    int // members of one group, and list sizes of group ops
	MaxGroupsPerUser   int // groups one user created or joined by themselves
	MaxOfflineEvents   int // events kept per offline user (oldest dropped first)
	ConnectionsPerUser int // open connections (devices) per user

	// MaxGroupsAddedByOthers bounds the groups that others added one user
	// to (createGroup's memberList, inviteUserToGroup); they do not count
	// against MaxGroupsPerUser.
	MaxGroupsAddedByOthers int
	// MaxPendingPerInvitee bounds the stored invitations ringing for one
	// user at once (all of them ring again on each connect).
	MaxPendingPerInvitee int
	// MaxPendingPerInviter bounds the live invitations one user has sent.
	MaxPendingPerInviter int
	// MaxOfflineBytesPerSender bounds the bytes of the events kept for
	// offline users that one user's operations caused (each copy counts,
	// with a fixed overhead per event).
	MaxOfflineBytesPerSender int
	// MaxOfflineBytesTotal bounds the bytes of all kept events.
	MaxOfflineBytesTotal int
}

// DefaultConfig is the configuration the embedded config file gives; tests use it.
func DefaultConfig() Config {
	return Config{
		DefaultTimeout:  30 * time.Second,
		MaxTimeout:      300 * time.Second,
		OfflineEventTTL: 24 * time.Hour,
		Limits: Limits{
			MaxDataBytes:       8 << 10,
			MaxInvitees:        100,
			MaxGroupMembers:    1000,
			MaxGroupsPerUser:   100,
			MaxOfflineEvents:   200,
			ConnectionsPerUser: 10,

			MaxGroupsAddedByOthers:   200,
			MaxPendingPerInvitee:     100,
			MaxPendingPerInviter:     50,
			MaxOfflineBytesPerSender: 1 << 20,
			MaxOfflineBytesTotal:     64 << 20,
		},
	}
}
