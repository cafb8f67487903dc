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
	MaxGroupsPerUser   int `mapstructure:"max_groups_per_user"`  // groups one user created or joined by themselves
	MaxOfflineEvents   int `mapstructure:"max_offline_events"`   // events kept per offline user (oldest dropped first)
	ConnectionsPerUser int `mapstructure:"connections_per_user"` // open connections (devices) per user

	// MaxGroupsAddedByOthers bounds the groups that others added one user
	// to (createGroup's memberList, inviteUserToGroup); they do not count
	// against MaxGroupsPerUser.
	MaxGroupsAddedByOthers int `mapstructure:"max_groups_added_by_others"`
	// MaxPendingPerInvitee bounds the stored invitations ringing for one
	// user at once (all of them ring again on each connect).
	MaxPendingPerInvitee int `mapstructure:"max_pending_per_invitee"`
	// MaxPendingPerInviter bounds the live invitations one user has sent.
	MaxPendingPerInviter int `mapstructure:"max_pending_per_inviter"`
	// MaxOfflineBytesPerSender bounds the bytes of the events kept for
	// offline users that one user's operations caused (each copy counts,
	// with a fixed overhead per event).
	MaxOfflineBytesPerSender int `mapstructure:"max_offline_bytes_per_sender"`
	// MaxOfflineBytesTotal bounds the bytes of all kept events.
	MaxOfflineBytesTotal int `mapstructure:"max_offline_bytes_total"`
	// MaxPushInfoBytes bounds an invitation's offlinePushInfo (the bytes of
	// its fields).
	MaxPushInfoBytes int `mapstructure:"max_push_info_bytes"`
	// MaxStatusSubscriptions bounds the users one user may subscribe to
	// (subscribeUserStatus) at once, over all their devices.
	MaxStatusSubscriptions int `mapstructure:"max_status_subscriptions"`
	// MaxCustomStatusBytes bounds the custom status text of setSelfStatus.
	MaxCustomStatusBytes int `mapstructure:"max_custom_status_bytes"`
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

			MaxGroupsAddedByOthers:   200,
			MaxPendingPerInvitee:     100,
			MaxPendingPerInviter:     50,
			MaxOfflineBytesPerSender: 1 << 20,
			MaxOfflineBytesTotal:     64 << 20,
			MaxPushInfoBytes:         4 << 10,
			MaxStatusSubscriptions:   1000,
			MaxCustomStatusBytes:     100,
		},
	}
}
