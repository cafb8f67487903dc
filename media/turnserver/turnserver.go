// Package turnserver is Switchboard's embedded TURN server (RFC 8656, built
// on pion/turn): it relays the media of clients that cannot reach the SFU's
// UDP port directly (UDP blocked, strict NAT, a proxy that only lets TCP or
// TLS out) and hands out per-participant credentials that expire.
//
// # Credentials
//
// Credentials follow the TURN REST API scheme (draft-uberti-behave-turn-rest,
// as coturn's use-auth-secret): the username is "EXPIRY:USERID", EXPIRY a
// Unix time in seconds, and the password is
// base64(HMAC-SHA1(secret, username)). The server recomputes the password
// from the username, so nothing is stored per user, and refuses a username
// whose EXPIRY has passed (Allocate and Refresh answer 401). An allocation
// made before the expiry lives until its next refresh after it (at most
// 10 minutes).
//
// # Where relays may send
//
// The server exists to reach this server's SFU, not to be an open relay into
// the network it runs in: when Config.RelayTo is set (web/stack sets it to
// the SFU's UDP port on each of its addresses), a permission for any other
// IP is refused (403) and a packet to any other port is dropped.
//
// # Limits
//
// One user (the USERID of the username) has at most
// Config.MaxAllocationsPerUser allocations alive, one more being refused with
// 486 (Allocation Quota Reached); the server at most Config.MaxAllocations,
// one more being refused with 508 (Insufficient Capacity). At most
// Config.MaxConnections TCP and TLS connections are open, one more being
// closed as soon as it is accepted; one without an allocation for
// Config.AllocateTimeout, or whose TLS handshake takes longer than
// Config.TLSHandshakeTimeout, is closed. Stats counts what is open and what
// was refused.
//
// Per source IP: at most Config.MaxConnectionsPerIP TCP and TLS connections
// of one IP without an allocation, one more being closed as soon as it is
// accepted (one with an allocation is held to MaxAllocationsPerUser
// instead); on the UDP port, a token bucket (Config.UDPRequestRate,
// UDPRequestBurst) for the datagrams of an IP's addresses without an
// allocation, the excess dropped before pion reads it (see limiter).
//
// Dependencies: like media it imports nothing of Switchboard but media.
package turnserver

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/internal/pionlog"
)

// Defaults applied by New to zero Config fields (a test of web/stack checks
// that they agree with the embedded config file).
const (
	DefaultRealm         = "switchboard"
	DefaultCredentialTTL = 24 * time.Hour
	DefaultRelayPortMin  = 30000
	DefaultRelayPortMax  = 40000

	DefaultMaxConnections        = 10000
	DefaultAllocateTimeout       = 20 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultMaxAllocations        = 10000
	DefaultMaxAllocationsPerUser = 30
	DefaultMaxConnectionsPerIP   = 32
	DefaultUDPRequestRate        = 50
	DefaultUDPRequestBurst       = 200
	DefaultUDPRateLimitIPs       = 65536
)

// ErrInvalidConfig is returned by New when Config fails validation.
var ErrInvalidConfig = errors.New("turnserver: invalid config")

// Config configures the TURN server. The mapstructure tags are the keys of
// the turn section of the config file; fields tagged "-" are filled by the
// server's composition (web/stack) or by tests.
type Config struct {
	// Enabled starts the server; off, New is not called.
	Enabled bool `mapstructure:"enabled"`
	// UDPPort and TCPPort are the TURN ports (plain TURN over UDP and over
	// TCP); 0 picks a free port (Server.UDPAddr, TCPAddr report it).
	UDPPort int `mapstructure:"udp_port"`
	TCPPort int `mapstructure:"tcp_port"`
	// TLS also serves TURN over TLS (turns:) on TLSPort, with CertFile and
	// KeyFile; 0 picks a free port.
	TLS     bool `mapstructure:"tls"`
	TLSPort int  `mapstructure:"tls_port"`
	// ListenIP is the address the ports and the relay sockets bind; empty
	// binds every interface.
	ListenIP string `mapstructure:"listen_ip"`
	// RelayIP is the address clients reach the server at: it is in the
	// URLs handed out and in every relayed address. Required by New; the
	// composition derives it from the media section when the key is empty.
	RelayIP string `mapstructure:"relay_ip"`
	// Host is the name in the URLs handed out (the name of the TLS
	// certificate for turns:); empty: RelayIP.
	Host string `mapstructure:"host"`
	// RelayPortMin and RelayPortMax bound the relay sockets' UDP ports
	// (inclusive). 0: the defaults.
	RelayPortMin int `mapstructure:"relay_port_min"`
	RelayPortMax int `mapstructure:"relay_port_max"`
	// Realm is the TURN realm (part of the long-term credential key).
	Realm string `mapstructure:"realm"`
	// Secret is the shared key of the credentials. Required by New; the
	// composition derives one when the key is empty (DeriveSecret).
	Secret string `mapstructure:"secret"`
	// CredentialTTL is how long handed-out credentials are valid.
	CredentialTTL time.Duration `mapstructure:"credential_ttl"`

	// MaxConnections caps the TCP and TLS connections open at once (both
	// ports together); one more is closed as soon as it is accepted.
	MaxConnections int `mapstructure:"max_connections"`
	// MaxConnectionsPerIP caps the TCP and TLS connections of one source
	// IP that have no allocation (not yet authenticated, or whose
	// allocation ended); one more from that IP is closed as soon as it is
	// accepted. A connection with an allocation does not count: it is
	// held to MaxAllocationsPerUser instead.
	MaxConnectionsPerIP int `mapstructure:"max_connections_per_ip"`
	// AllocateTimeout is how long a TCP or TLS connection may go without an
	// allocation (after connecting, or after its allocation ended) before
	// it is closed: a client that never authenticates holds nothing long.
	AllocateTimeout time.Duration `mapstructure:"allocate_timeout"`
	// TLSHandshakeTimeout bounds a TLS connection's handshake.
	TLSHandshakeTimeout time.Duration `mapstructure:"tls_handshake_timeout"`
	// MaxAllocations caps the allocations alive on the server; one more is
	// refused with 508 (Insufficient Capacity).
	MaxAllocations int `mapstructure:"max_allocations"`
	// MaxAllocationsPerUser caps one user's allocations alive (the user is
	// the USERID of the credentials' username); one more is refused with
	// 486 (Allocation Quota Reached).
	MaxAllocationsPerUser int `mapstructure:"max_allocations_per_user"`
	// UDPRequestRate and UDPRequestBurst are the token bucket of one
	// source IP on the UDP port: the datagrams per second it may send, and
	// at once, from addresses that have no allocation (Binding, Allocate
	// with or without credentials, garbage). The excess is dropped before
	// pion parses it. Datagrams from a client address with an allocation
	// (authenticated) are not counted.
	UDPRequestRate  int `mapstructure:"udp_request_rate"`
	UDPRequestBurst int `mapstructure:"udp_request_burst"`
	// UDPRateLimitIPs caps the source IPs whose buckets are kept; past it
	// the least recently seen one is forgotten (and starts again with a
	// full bucket).
	UDPRateLimitIPs int `mapstructure:"udp_rate_limit_ips"`

	// CertFile and KeyFile are the PEM certificate and key for TLS
	// (server.tls_cert and server.tls_key).
	CertFile string `mapstructure:"-"`
	KeyFile  string `mapstructure:"-"`
	// RelayTo, when not empty, are the only addresses relays may send to.
	RelayTo []netip.AddrPort `mapstructure:"-"`
	// Now is the clock of credential expiry; nil: time.Now.
	Now func() time.Time `mapstructure:"-"`
}

// DefaultConfig is the embedded config file's values for the turn section.
func DefaultConfig() Config {
	return Config{UDPPort: 3478, TCPPort: 3478, TLSPort: 5349, RelayPortMin: DefaultRelayPortMin, RelayPortMax: DefaultRelayPortMax,
		Realm: DefaultRealm, CredentialTTL: DefaultCredentialTTL,
		MaxConnections: DefaultMaxConnections, AllocateTimeout: DefaultAllocateTimeout, TLSHandshakeTimeout: DefaultTLSHandshakeTimeout,
		MaxAllocations: DefaultMaxAllocations, MaxAllocationsPerUser: DefaultMaxAllocationsPerUser,
		MaxConnectionsPerIP: DefaultMaxConnectionsPerIP, UDPRequestRate: DefaultUDPRequestRate, UDPRequestBurst: DefaultUDPRequestBurst,
		UDPRateLimitIPs: DefaultUDPRateLimitIPs}
}

func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	for name, p := range map[string]int{"UDPPort": c.UDPPort, "TCPPort": c.TCPPort, "TLSPort": c.TLSPort,
		"RelayPortMin": c.RelayPortMin, "RelayPortMax": c.RelayPortMax} {
		if p < 0 || p > 65535 {
			return bad("%s %d out of range", name, p)
		}
	}
	if c.RelayPortMin == 0 {
		c.RelayPortMin = DefaultRelayPortMin
	}
	if c.RelayPortMax == 0 {
		c.RelayPortMax = DefaultRelayPortMax
	}
	if c.RelayPortMin > c.RelayPortMax {
		return bad("RelayPortMin %d above RelayPortMax %d", c.RelayPortMin, c.RelayPortMax)
	}
	if c.ListenIP != "" && net.ParseIP(c.ListenIP) == nil {
		return bad("ListenIP %q is not an IP address", c.ListenIP)
	}
	if net.ParseIP(c.RelayIP) == nil {
		return bad("RelayIP %q is not an IP address", c.RelayIP)
	}
	if c.Secret == "" {
		return bad("no Secret")
	}
	if c.TLS && (c.CertFile == "" || c.KeyFile == "") {
		return bad("TLS needs CertFile and KeyFile")
	}
	if c.CredentialTTL < 0 {
		return bad("CredentialTTL is negative")
	}
	if c.CredentialTTL == 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	for name, v := range map[string]int64{"MaxConnections": int64(c.MaxConnections), "AllocateTimeout": int64(c.AllocateTimeout),
		"TLSHandshakeTimeout": int64(c.TLSHandshakeTimeout), "MaxAllocations": int64(c.MaxAllocations), "MaxAllocationsPerUser": int64(c.MaxAllocationsPerUser),
		"MaxConnectionsPerIP": int64(c.MaxConnectionsPerIP), "UDPRequestRate": int64(c.UDPRequestRate), "UDPRequestBurst": int64(c.UDPRequestBurst),
		"UDPRateLimitIPs": int64(c.UDPRateLimitIPs)} {
		if v < 0 {
			return bad("%s is negative", name)
		}
	}
	c.MaxConnections = cmp.Or(c.MaxConnections, DefaultMaxConnections)
	c.AllocateTimeout = cmp.Or(c.AllocateTimeout, DefaultAllocateTimeout)
	c.TLSHandshakeTimeout = cmp.Or(c.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	c.MaxAllocations = cmp.Or(c.MaxAllocations, DefaultMaxAllocations)
	c.MaxAllocationsPerUser = cmp.Or(c.MaxAllocationsPerUser, DefaultMaxAllocationsPerUser)
	c.MaxConnectionsPerIP = cmp.Or(c.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	c.UDPRequestRate = cmp.Or(c.UDPRequestRate, DefaultUDPRequestRate)
	c.UDPRequestBurst = cmp.Or(c.UDPRequestBurst, DefaultUDPRequestBurst)
	c.UDPRateLimitIPs = cmp.Or(c.UDPRateLimitIPs, DefaultUDPRateLimitIPs)
	if c.Host == "" {
		c.Host = c.RelayIP
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Server is a running TURN server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	turn *turn.Server

	udp       *net.UDPConn
	tcp, tls  *trackingListener // tls is nil unless Config.TLS
	conns     *conns            // of tcp and tls
	allocs    *allocations
	limiter   *limiter // of udp
	closeOnce sync.Once
	closeErr  error
}

// New starts a TURN server on the configured ports. log may be nil.
func New(cfg Config, log *slog.Logger) (_ *Server, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, conns: newConns(cfg, log), allocs: newAllocations(cfg), limiter: newLimiter(cfg)}
	var listeners []net.Listener
	defer func() {
		if err != nil {
			if s.udp != nil {
				_ = s.udp.Close()
			}
			for _, l := range listeners {
				_ = l.Close()
			}
		}
	}()
	bind := cfg.ListenIP
	if bind == "" {
		bind = "0.0.0.0"
	}
	var tlsConf *tls.Config
	if cfg.TLS {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("turnserver: TLS certificate: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	udpAddr, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(bind, strconv.Itoa(cfg.UDPPort)))
	if err != nil {
		return nil, fmt.Errorf("turnserver: listen udp: %w", err)
	}
	if s.udp, err = net.ListenUDP("udp4", udpAddr); err != nil {
		return nil, fmt.Errorf("turnserver: listen udp: %w", err)
	}
	tcp, err := net.Listen("tcp4", net.JoinHostPort(bind, strconv.Itoa(cfg.TCPPort)))
	if err != nil {
		return nil, fmt.Errorf("turnserver: listen tcp: %w", err)
	}
	listeners = append(listeners, tcp)
	s.tcp = &trackingListener{Listener: tcp, conns: s.conns}
	if tlsConf != nil {
		l, err := net.Listen("tcp4", net.JoinHostPort(bind, strconv.Itoa(cfg.TLSPort)))
		if err != nil {
			return nil, fmt.Errorf("turnserver: listen tls: %w", err)
		}
		listeners = append(listeners, l)
		s.tls = &trackingListener{Listener: l, conns: s.conns, tls: tlsConf, handshake: cfg.TLSHandshakeTimeout}
	}

	relay := func() turn.RelayAddressGenerator {
		return &restrictedRelay{
			RelayAddressGeneratorPortRange: turn.RelayAddressGeneratorPortRange{
				RelayAddress: net.ParseIP(cfg.RelayIP), Address: bind,
				MinPort: uint16(cfg.RelayPortMin), MaxPort: uint16(cfg.RelayPortMax),
			},
			allowed: cfg.RelayTo,
			allocs:  s.allocs,
		}
	}
	permit := s.permit
	sc := turn.ServerConfig{
		Realm:        cfg.Realm,
		AuthHandler:  s.authenticate,
		QuotaHandler: s.allocs.admit,
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(src, dst net.Addr, _, _, _ string, _ net.Addr, _ int) { s.allocation(src, dst, 1) },
			OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) { s.allocation(src, dst, -1) },
		},
		LoggerFactory: pionlog.Factory(log, slog.LevelError),
		PacketConnConfigs: []turn.PacketConnConfig{
			{PacketConn: &limitedConn{UDPConn: s.udp, lim: s.limiter}, RelayAddressGenerator: relay(), PermissionHandler: permit},
		},
		ListenerConfigs: []turn.ListenerConfig{
			{Listener: s.tcp, RelayAddressGenerator: relay(), PermissionHandler: permit},
		},
	}
	if s.tls != nil {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: s.tls, RelayAddressGenerator: relay(), PermissionHandler: permit})
	}
	if s.turn, err = turn.NewServer(sc); err != nil {
		return nil, fmt.Errorf("turnserver: %w", err)
	}
	log.Info("TURN serving", "udp", s.UDPAddr(), "tcp", s.TCPAddr(), "tls", s.TLSAddr(), "relay_ip", cfg.RelayIP,
		"relay_ports", fmt.Sprintf("%d-%d", cfg.RelayPortMin, cfg.RelayPortMax))
	return s, nil
}

// UDPAddr is the address of the TURN UDP port.
func (s *Server) UDPAddr() *net.UDPAddr {
	a, _ := s.udp.LocalAddr().(*net.UDPAddr)
	return a
}

// TCPAddr is the address of the TURN TCP port.
func (s *Server) TCPAddr() *net.TCPAddr {
	a, _ := s.tcp.Addr().(*net.TCPAddr)
	return a
}

// TLSAddr is the address of the TURN TLS port; nil without TLS.
func (s *Server) TLSAddr() *net.TCPAddr {
	if s.tls == nil {
		return nil
	}
	a, _ := s.tls.Addr().(*net.TCPAddr)
	return a
}

// allocation is called by pion when an allocation of the client address src
// on the server address dst begins (delta 1) or ends (-1).
func (s *Server) allocation(src, dst net.Addr, delta int) {
	s.conns.allocation(src, dst, delta)
	s.limiter.allocation(src, delta)
}

// AllocationCount is the number of allocations alive.
func (s *Server) AllocationCount() int { return s.turn.AllocationCount() }

// URLs are the server's turn: (and turns:) URLs, with the ports actually
// bound.
func (s *Server) URLs() []string {
	hp := func(port int) string { return net.JoinHostPort(s.cfg.Host, strconv.Itoa(port)) }
	urls := []string{
		"turn:" + hp(s.UDPAddr().Port) + "?transport=udp",
		"turn:" + hp(s.TCPAddr().Port) + "?transport=tcp",
	}
	if a := s.TLSAddr(); a != nil {
		urls = append(urls, "turns:"+hp(a.Port)+"?transport=tcp")
	}
	return urls
}

// ICEServers returns the entry to hand userID in enterRoom: the server's
// URLs with fresh credentials valid for Config.CredentialTTL.
func (s *Server) ICEServers(userID string) []media.ICEServer {
	username := Username(userID, s.cfg.Now().Add(s.cfg.CredentialTTL))
	return []media.ICEServer{{URLs: s.URLs(), Username: username, Credential: Password(s.cfg.Secret, username)}}
}

// Close stops the server: its ports, every TCP and TLS connection, and with
// them every allocation. Pion's goroutines end shortly after.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.turn.Close()
		s.conns.closeAll()
	})
	return s.closeErr
}

// permit is pion's PermissionHandler: with RelayTo set, only its IPs.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok || allowed(s.cfg.RelayTo, ip.Unmap(), 0) {
		return ok
	}
	s.log.Debug("TURN permission refused", "client", client, "peer", peer)
	return false
}

// allowed reports whether the relay may reach ip:port (port 0: any port of
// ip) under the list (empty: anywhere).
func allowed(list []netip.AddrPort, ip netip.Addr, port uint16) bool {
	if len(list) == 0 {
		return true
	}
	for _, a := range list {
		if a.Addr().Unmap() == ip && (port == 0 || a.Port() == port) {
			return true
		}
	}
	return false
}

var errTCPRelay = errors.New("turnserver: TCP relays are not offered")

// Stats are the server's counters, for metrics.
type Stats struct {
	Allocations int // alive
	// AllocationsRefusedUser and AllocationsRefusedServer count the
	// allocations refused by MaxAllocationsPerUser and by MaxAllocations.
	AllocationsRefusedUser, AllocationsRefusedServer uint64
	Connections                                      int // TCP and TLS connections open
	// ConnectionsRefused counts the connections closed at once because
	// MaxConnections were open; ConnectionsTimedOut those closed by
	// AllocateTimeout or TLSHandshakeTimeout.
	ConnectionsRefused, ConnectionsTimedOut uint64
	// ConnectionsRefusedIP counts the connections closed at once because
	// their source IP had MaxConnectionsPerIP without an allocation.
	ConnectionsRefusedIP uint64
	// UDPRateLimited counts the UDP datagrams dropped by the per-IP rate
	// limit; UDPRateLimitIPs is the number of source IPs tracked, and
	// UDPRateLimitEvictions those forgotten at the UDPRateLimitIPs cap.
	UDPRateLimited        uint64
	UDPRateLimitIPs       int
	UDPRateLimitEvictions uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	var st Stats
	st.Allocations, st.AllocationsRefusedUser, st.AllocationsRefusedServer = s.allocs.stats()
	st.Connections, st.ConnectionsRefused, st.ConnectionsRefusedIP, st.ConnectionsTimedOut = s.conns.stats()
	st.UDPRateLimited, st.UDPRateLimitIPs, st.UDPRateLimitEvictions = s.limiter.stats()
	return st
}
