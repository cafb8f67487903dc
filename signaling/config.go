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
	MaxGroupsPerUser   int // groups one user may belong to
	MaxOfflineEvents   int // events kept per offline user (oldest dropped first)
	ConnectionsPerUser int // open connections (devices) per user
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
		},
	}
}
