package signaling

import "time"

// Config is the engine's configuration: the signaling section of the config
// file (mapstructure tags are its keys).
type Config struct {
	// DefaultTimeout applies when an invite names no timeout.
	DefaultTimeout time.Duration `mapstructure:"default_timeout"`
	// MaxTimeout is the largest timeout an invite may ask for.
	MaxTimeout time.Duration `mapstructure:"max_timeout"`
	// OfflineEventTTL is how long an event is kept for a user who was offline.
	OfflineEventTTL time.Duration `mapstructure:"offline_event_ttl"`
	// Limits are keys of the limits section; the composition fills them.
	Limits Limits `mapstructure:"-"`
}

// Limits bound what one request or one user may use.
type Limits struct {
	MaxDataBytes       int `mapstructure:"max_data_bytes"`       // size of an invitation's data string
	MaxInvitees        int `mapstructure:"max_invitees"`         // inviteeList length
	MaxGroupMembers    int `mapstructure:"max_group_members"`    // members of one group, and list sizes of group ops
	MaxGroupsPerUser   int `mapstructure:"max_groups_per_user"`  // groups one user may belong to
	MaxOfflineEvents   int `mapstructure:"max_offline_events"`   // events kept per offline user (oldest dropped first)
	ConnectionsPerUser int `mapstructure:"connections_per_user"` // open connections (devices) per user
}

// DefaultConfig is the configuration the embedded config file gives (a test
// of web/stack checks that they agree); tests use it.
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
