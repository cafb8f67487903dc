package media

import (
	"fmt"
	"net"
	"time"
)

// Defaults applied by New to zero Config fields (a test of web/stack checks
// that they agree with the embedded config file).
const (
	DefaultICEDisconnectedGrace    = 10 * time.Second
	DefaultICEFailedGrace          = 0
	DefaultPLIThrottle             = 500 * time.Millisecond
	DefaultMaxTracksPerParticipant = 4
	DefaultUDPReadBuffer           = 4 << 20
)

// ICEServer is a STUN or TURN server handed to clients. The SFU itself never
// uses it: it has a public address (or NAT1To1IPs) and needs no relay.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Config configures an SFU. It is read once by New. The mapstructure tags
// are the keys of the media section of the config file; fields tagged "-"
// are filled by the server's composition (or by tests).
type Config struct {
	// UDPPort is the one UDP port that carries the media of every peer (ICE
	// UDP mux). 0 picks an ephemeral port; SFU.UDPAddr reports it.
	UDPPort int `mapstructure:"udp_port"`
	// ListenIP is the address the UDP port is bound to, e.g. "127.0.0.1".
	// Empty binds all addresses and advertises every interface address.
	ListenIP string `mapstructure:"listen_ip"`
	// NAT1To1IPs, when set, replace the host candidate addresses the SFU
	// advertises (deployment behind a 1:1 NAT such as a cloud public IP).
	NAT1To1IPs []string `mapstructure:"nat1to1_ips"`
	// IncludeLoopback lets the SFU advertise loopback candidates. Needed when
	// the peers are on this machine and loopback is the only shared network.
	IncludeLoopback bool `mapstructure:"include_loopback"`
	// ICEServers are handed to clients (SFU.ICEServers) for their own
	// gathering; the SFU does not use them.
	// The composition builds them from media.ice_servers, ice_username and
	// ice_credential.
	ICEServers []ICEServer `mapstructure:"-"`

	// ICEDisconnectedGrace is how long a participant's connection may stay
	// disconnected before the participant is removed with ConnectionLost.
	// 0 means DefaultICEDisconnectedGrace.
	ICEDisconnectedGrace time.Duration `mapstructure:"ice_disconnected_grace"`
	// ICEFailedGrace is how long a participant's connection may stay failed
	// before it is removed; 0 removes it as soon as ICE fails.
	ICEFailedGrace time.Duration `mapstructure:"ice_failed_grace"`
	// ICEDisconnectedTimeout, ICEFailedTimeout and ICEKeepaliveInterval are
	// Pion's ICE timers (no traffic for this long: disconnected; for this long
	// more: failed). 0 keeps Pion's defaults (5 s, 25 s, 2 s). Tests shorten
	// them to notice a vanished peer quickly.
	ICEDisconnectedTimeout time.Duration `mapstructure:"-"`
	ICEFailedTimeout       time.Duration `mapstructure:"-"`
	ICEKeepaliveInterval   time.Duration `mapstructure:"-"`

	// PLIThrottle is the minimum interval between two keyframe requests sent
	// to one published track. Requests inside the interval are merged into
	// one sent when it ends. 0 means DefaultPLIThrottle.
	PLIThrottle time.Duration `mapstructure:"pli_throttle"`
	// MaxTracksPerParticipant caps the audio and video tracks one participant
	// may publish at once. 0 means DefaultMaxTracksPerParticipant. The
	// composition fills it from limits.max_tracks_per_participant.
	MaxTracksPerParticipant int `mapstructure:"-"`
	// UDPReadBuffer is the receive buffer the SFU asks the kernel for on
	// its UDP port, in bytes (SO_RCVBUF; Linux caps it at
	// net.core.rmem_max). The fast receive path forwards in the socket's
	// reader goroutine, so a moment without CPU is absorbed here, where
	// Pion's path had its own buffers between goroutines. 0 means
	// DefaultUDPReadBuffer.
	UDPReadBuffer int `mapstructure:"udp_read_buffer"`
	// WrapPacketConn, when set, wraps the UDP socket before the SFU uses
	// it. Tests use it to cut the network under browsers, whose sockets
	// DevTools network emulation does not reach.
	WrapPacketConn func(net.PacketConn) net.PacketConn `mapstructure:"-"`
}

// withDefaults returns c with zero fields replaced by defaults, or an error
// wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	if c.UDPPort < 0 || c.UDPPort > 65535 {
		return c, fmt.Errorf("%w: UDPPort %d out of range", ErrInvalidConfig, c.UDPPort)
	}
	if c.ListenIP != "" && net.ParseIP(c.ListenIP) == nil {
		return c, fmt.Errorf("%w: ListenIP %q is not an IP address", ErrInvalidConfig, c.ListenIP)
	}
	for _, ip := range c.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			return c, fmt.Errorf("%w: NAT1To1IPs entry %q is not an IP address", ErrInvalidConfig, ip)
		}
	}
	for _, s := range c.ICEServers {
		if len(s.URLs) == 0 {
			return c, fmt.Errorf("%w: ICE server without URLs", ErrInvalidConfig)
		}
	}
	for name, d := range map[string]time.Duration{
		"ICEDisconnectedGrace":   c.ICEDisconnectedGrace,
		"ICEFailedGrace":         c.ICEFailedGrace,
		"ICEDisconnectedTimeout": c.ICEDisconnectedTimeout,
		"ICEFailedTimeout":       c.ICEFailedTimeout,
		"ICEKeepaliveInterval":   c.ICEKeepaliveInterval,
		"PLIThrottle":            c.PLIThrottle,
	} {
		if d < 0 {
			return c, fmt.Errorf("%w: %s is negative", ErrInvalidConfig, name)
		}
	}
	if c.MaxTracksPerParticipant < 0 {
		return c, fmt.Errorf("%w: MaxTracksPerParticipant is negative", ErrInvalidConfig)
	}
	if c.UDPReadBuffer < 0 {
		return c, fmt.Errorf("%w: UDPReadBuffer is negative", ErrInvalidConfig)
	}
	if c.UDPReadBuffer == 0 {
		c.UDPReadBuffer = DefaultUDPReadBuffer
	}
	if c.ICEDisconnectedGrace == 0 {
		c.ICEDisconnectedGrace = DefaultICEDisconnectedGrace
	}
	if c.PLIThrottle == 0 {
		c.PLIThrottle = DefaultPLIThrottle
	}
	if c.MaxTracksPerParticipant == 0 {
		c.MaxTracksPerParticipant = DefaultMaxTracksPerParticipant
	}
	return c, nil
}
