package stack

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/web"
)

// ErrInvalidConfig is matched, with errors.Is, by every error caused by the
// user's configuration (Validate's, and the binary's loading errors: bad
// flag, file or environment variable): the binary prints it and exits 2.
// Other errors are internal (a broken embedded default file).
var ErrInvalidConfig = errors.New("invalid configuration")

// ConfigError is one configuration problem (several are joined). Key is the
// offending key ("server.addr"), "config" for the --config file itself, or
// "" for command-line syntax errors; Msg names it.
type ConfigError struct{ Key, Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// KeyError returns a *ConfigError about key.
func KeyError(key, format string, args ...any) *ConfigError {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks every value and the relations between them, and reports
// every problem, joined; each is a *ConfigError naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, KeyError(key, "%s: %s", key, fmt.Sprintf(format, args...)))
	}
	wholeSeconds := func(key string, d time.Duration) {
		if d < time.Second || d%time.Second != 0 {
			bad(key, "must be a whole number of seconds, at least 1s, got %s", d)
		}
	}
	s, w := c.Server, c.Server.Web
	if err := checkAddr(s.Addr); err != nil {
		bad("server.addr", "want host:port such as \"127.0.0.1:8080\", got %q: %v", s.Addr, err)
	}
	for _, o := range w.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			bad("server.allowed_origins", "want \"*\" or an origin such as \"https://app.example.com\", got %q: %v", o, err)
		}
	}
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		bad("server.tls_key", "must be set when server.tls_cert is set")
	case s.TLSCert == "" && s.TLSKey != "":
		bad("server.tls_cert", "must be set when server.tls_key is set")
	}
	m := c.Media.SFU
	for _, p := range []struct {
		key string
		d   time.Duration
	}{
		{"server.shutdown_timeout", s.ShutdownTimeout}, {"server.ping_interval", w.PingInterval},
		{"server.pong_timeout", w.PongTimeout}, {"server.write_timeout", w.WriteTimeout},
		{"auth.dev_token_ttl", c.Auth.DevTokenTTL}, {"signaling.offline_event_ttl", c.Signaling.OfflineEventTTL},
		{"calls.setup_timeout", c.Calls.SetupTimeout}, {"calls.heartbeat", c.Calls.Heartbeat},
		{"media.ice_disconnected_grace", m.ICEDisconnectedGrace}, {"media.pli_throttle", m.PLIThrottle},
		{"media.connect_timeout", c.Media.ConnectTimeout}, {"server.read_header_timeout", w.ReadHeaderTimeout},
		{"server.read_timeout", w.ReadTimeout}, {"server.idle_timeout", w.IdleTimeout},
	} {
		if p.d <= 0 {
			bad(p.key, "must be a positive duration, got %s", p.d)
		}
	}
	if w.PingInterval > 0 && w.PingInterval >= w.PongTimeout {
		bad("server.ping_interval", "must be below server.pong_timeout (%s), got %s", w.PongTimeout, w.PingInterval)
	}
	if s.GCPercent < -1 || s.GCPercent == 0 {
		bad("server.gc_percent", "must be a positive percentage, or -1 (collect only at server.memory_limit_mb), got %d", s.GCPercent)
	}
	if s.MemoryLimitMB < 0 {
		bad("server.memory_limit_mb", "must not be negative, got %d", s.MemoryLimitMB)
	}
	if s.GCPercent == -1 && s.MemoryLimitMB == 0 {
		bad("server.gc_percent", "-1 turns the collector off until server.memory_limit_mb, which is 0 (no limit): set server.memory_limit_mb")
	}
	if m.UDPReadBuffer < 1 {
		bad("media.udp_read_buffer", "must be a positive number of bytes, got %d", m.UDPReadBuffer)
	}
	if w.MaxConnections < 1 {
		bad("server.max_connections", "must be a positive integer, got %d", w.MaxConnections)
	}
	if host, _, err := net.SplitHostPort(s.Addr); err == nil && c.Auth.Dev && !loopbackHost(host) {
		bad("auth.dev", "dev mode issues tokens to anyone: it may only listen on loopback, but server.addr is %q; "+
			"set server.addr to 127.0.0.1:PORT, or auth.dev=false with an auth.secret", s.Addr)
	}
	if strings.TrimSpace(c.Store.Path) == "" {
		bad("store.path", "must not be empty")
	}
	if c.Store.CommitWait < 0 || c.Store.CommitWait > time.Second {
		bad("store.commit_wait", "must be 0s (no wait) to 1s, got %v", c.Store.CommitWait)
	}
	if c.Store.CommitBatch < 2 || c.Store.CommitBatch > 256 {
		bad("store.commit_batch", "must be 2 to 256, got %d", c.Store.CommitBatch)
	}
	if !c.Auth.Dev && len(c.Auth.Secret) < web.MinSecretLen {
		bad("auth.secret", "must be at least %d bytes when auth.dev is false, got %d bytes", web.MinSecretLen, len(c.Auth.Secret))
	}
	wholeSeconds("signaling.default_timeout", c.Signaling.DefaultTimeout)
	wholeSeconds("signaling.max_timeout", c.Signaling.MaxTimeout)
	if c.Signaling.MaxTimeout < c.Signaling.DefaultTimeout {
		bad("signaling.max_timeout", "must be at least signaling.default_timeout (%s), got %s", c.Signaling.DefaultTimeout, c.Signaling.MaxTimeout)
	}
	// limits: every key, so that a new limit is checked without new code.
	EachKey(reflect.ValueOf(c.Limits), "limits.", func(key string, f reflect.Value) {
		if n := f.Convert(reflect.TypeFor[float64]()).Float(); n < 1 {
			bad(key, "must be a positive integer, got %v", n)
		}
	})
	if int64(c.Limits.Signaling.MaxDataBytes) > c.Limits.Web.MaxFrameBytes {
		bad("limits.max_data_bytes", "must not exceed limits.max_frame_bytes (%d), got %d", c.Limits.Web.MaxFrameBytes, c.Limits.Signaling.MaxDataBytes)
	}
	if r := c.Limits.Rooms; r.RoomSeats > r.MaxRoomSeats {
		bad("limits.room_seats", "must not exceed limits.max_room_seats (%d), got %d", r.MaxRoomSeats, r.RoomSeats)
	}
	if p := strings.ToLower(string(c.Calls.BusyPolicy)); p != "reject" && p != "ring" {
		bad("calls.busy_policy", "want reject or ring, got %q", c.Calls.BusyPolicy)
	}
	if m.UDPPort < 0 || m.UDPPort > 65535 {
		bad("media.udp_port", "must be 0-65535, got %d", m.UDPPort)
	}
	if m.ListenIP != "" && net.ParseIP(m.ListenIP) == nil {
		bad("media.listen_ip", "must be an IP address or empty, got %q", m.ListenIP)
	}
	for _, ip := range m.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			bad("media.nat1to1_ips", "must be IP addresses, got %q", ip)
		}
	}
	for _, u := range c.Media.ICEServers {
		if !slices.ContainsFunc([]string{"stun:", "stuns:", "turn:", "turns:"}, func(p string) bool { return strings.HasPrefix(u, p) }) {
			bad("media.ice_servers", "want stun:, stuns:, turn: or turns: URLs, got %q", u)
		}
	}
	if m.ICEFailedGrace < 0 {
		bad("media.ice_failed_grace", "must not be negative, got %s", m.ICEFailedGrace)
	}
	if c.Media.RejoinGrace < 0 {
		bad("media.rejoin_grace", "must not be negative, got %s", c.Media.RejoinGrace)
	}
	validateCluster(c, bad)
	validateTURN(c, bad)
	validateWebhooks(c, bad)
	if err := checkAddr(c.Metrics.Addr); c.Metrics.Addr != "" && err != nil {
		bad("metrics.addr", "want host:port such as \"127.0.0.1:9090\" or empty, got %q: %v", c.Metrics.Addr, err)
	}
	if _, ok := LogLevels[strings.ToLower(c.Log.Level)]; !ok {
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	if f := strings.ToLower(c.Log.Format); f != "text" && f != "json" {
		bad("log.format", "want text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// nodeIDPattern is what cluster.node_id may be: it names Redis keys and
// appears in logs.
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validateCluster checks the cluster section: the knobs always (with
// cluster.Config.Validate), the rest when cluster mode is on.
func validateCluster(c Config, bad func(key, format string, args ...any)) {
	cc := c.Cluster
	if err := cc.Knobs.Validate(); err != nil {
		// Its message names the knob first: "...: node_ttl 10ms is below 30ms".
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), cluster.ErrConfig.Error()), ": ")
		knob, _, _ := strings.Cut(msg, " ")
		bad("cluster."+knob, "%s", msg)
	}
	if !cc.Enabled() {
		return
	}
	if err := cc.Redis.Validate(); err != nil {
		// Each joined problem names its key first: "addr ...", "db ...".
		for _, line := range strings.Split(strings.TrimPrefix(err.Error(), "redisdb: "), "\n") {
			field, _, _ := strings.Cut(line, " ")
			bad("cluster.redis."+field, "%s", line)
		}
	}
	if cc.NodeID != "" && !nodeIDPattern.MatchString(cc.NodeID) {
		bad("cluster.node_id", "want 1-64 letters, digits, '.', '_' or '-', or empty for a generated one, got %q", cc.NodeID)
	}
	if cc.AdvertiseAddr != "" {
		if err := checkAddr(cc.AdvertiseAddr); err != nil {
			bad("cluster.advertise_addr", "want host:port such as \"10.0.0.5:8080\" or empty, got %q: %v", cc.AdvertiseAddr, err)
		}
	}
	if len(c.Auth.Secret) == 0 {
		bad("auth.secret", "must be set in cluster mode (cluster.redis.addr is set), the same on every node, so that each node accepts the tokens valid on the others")
	}
}

// validateTURN checks the turn section, and when turn.enabled, its
// relations with the other sections.
func validateTURN(c Config, bad func(key, format string, args ...any)) {
	tc := c.TURN
	for _, p := range []struct {
		key  string
		port int
	}{{"turn.udp_port", tc.UDPPort}, {"turn.tcp_port", tc.TCPPort}, {"turn.tls_port", tc.TLSPort}} {
		if p.port < 0 || p.port > 65535 {
			bad(p.key, "must be 0-65535, got %d", p.port)
		}
	}
	for _, p := range []struct {
		key  string
		port int
	}{{"turn.relay_port_min", tc.RelayPortMin}, {"turn.relay_port_max", tc.RelayPortMax}} {
		if p.port < 1 || p.port > 65535 {
			bad(p.key, "must be 1-65535, got %d", p.port)
		}
	}
	if tc.RelayPortMax < tc.RelayPortMin {
		bad("turn.relay_port_max", "must be at least turn.relay_port_min (%d), got %d", tc.RelayPortMin, tc.RelayPortMax)
	}
	if tc.ListenIP != "" && net.ParseIP(tc.ListenIP) == nil {
		bad("turn.listen_ip", "must be an IP address or empty, got %q", tc.ListenIP)
	}
	if ip := net.ParseIP(tc.RelayIP); tc.RelayIP != "" && (ip == nil || ip.IsUnspecified()) {
		bad("turn.relay_ip", "must be the IP address clients reach this server at, or empty, got %q", tc.RelayIP)
	}
	if tc.Host != "" && net.ParseIP(tc.Host) == nil && strings.ContainsAny(tc.Host, ":/?#@[] ") {
		bad("turn.host", "want a host name such as \"turn.example.com\" or an IP address, got %q", tc.Host)
	}
	if strings.TrimSpace(tc.Realm) == "" {
		bad("turn.realm", "must not be empty")
	}
	if tc.Secret != "" && len(tc.Secret) < web.MinSecretLen {
		bad("turn.secret", "must be empty or at least %d bytes, got %d bytes", web.MinSecretLen, len(tc.Secret))
	}
	if tc.CredentialTTL < time.Minute {
		bad("turn.credential_ttl", "must be at least 1m, got %s", tc.CredentialTTL)
	}
	for _, p := range []struct {
		key string
		n   int
	}{{"turn.max_connections", tc.MaxConnections}, {"turn.max_allocations", tc.MaxAllocations}, {"turn.max_allocations_per_user", tc.MaxAllocationsPerUser},
		{"turn.max_connections_per_ip", tc.MaxConnectionsPerIP}, {"turn.udp_request_rate", tc.UDPRequestRate}, {"turn.udp_request_burst", tc.UDPRequestBurst},
		{"turn.udp_rate_limit_ips", tc.UDPRateLimitIPs}} {
		if p.n < 1 {
			bad(p.key, "must be a positive integer, got %d", p.n)
		}
	}
	if tc.MaxAllocations >= 1 && tc.MaxAllocationsPerUser > tc.MaxAllocations {
		bad("turn.max_allocations_per_user", "must not exceed turn.max_allocations (%d), got %d", tc.MaxAllocations, tc.MaxAllocationsPerUser)
	}
	if tc.MaxConnections >= 1 && tc.MaxConnectionsPerIP > tc.MaxConnections {
		bad("turn.max_connections_per_ip", "must not exceed turn.max_connections (%d), got %d", tc.MaxConnections, tc.MaxConnectionsPerIP)
	}
	for _, p := range []struct {
		key string
		d   time.Duration
	}{{"turn.allocate_timeout", tc.AllocateTimeout}, {"turn.tls_handshake_timeout", tc.TLSHandshakeTimeout}} {
		if p.d <= 0 {
			bad(p.key, "must be a positive duration, got %s", p.d)
		}
	}
	if !tc.Enabled {
		return
	}
	if relayIP(c) == "" {
		bad("turn.relay_ip", "must be set when turn.enabled is true and neither media.nat1to1_ips nor media.listen_ip (%q) gives the address clients reach this server at",
			c.Media.SFU.ListenIP)
	}
	if tc.TLS && (c.Server.TLSCert == "" || c.Server.TLSKey == "") {
		bad("turn.tls", "needs server.tls_cert and server.tls_key (TURN over TLS uses the server's certificate)")
	}
	_, httpPort, _ := net.SplitHostPort(c.Server.Addr)
	for _, p := range []struct {
		key, other string
		port, with int
	}{
		{"turn.udp_port", "media.udp_port", tc.UDPPort, c.Media.SFU.UDPPort},
		{"turn.tcp_port", "server.addr", tc.TCPPort, atoi(httpPort)},
		{"turn.tls_port", "server.addr", tc.TLSPort, atoi(httpPort)},
		{"turn.tls_port", "turn.tcp_port", tc.TLSPort, tc.TCPPort},
	} {
		if p.port != 0 && p.port == p.with && (p.key != "turn.tls_port" || tc.TLS) {
			bad(p.key, "must differ from the port of %s (%d)", p.other, p.with)
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// validateWebhooks checks the webhooks section.
func validateWebhooks(c Config, bad func(key, format string, args ...any)) {
	wh := c.Webhooks
	for _, u := range wh.URLs {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("webhooks.urls", "want http:// or https:// URLs, got %q", u)
		}
	}
	if len(wh.URLs) > 0 && len(wh.Secret) < web.MinSecretLen {
		bad("webhooks.secret", "must be at least %d bytes when webhooks.urls is set, got %d bytes", web.MinSecretLen, len(wh.Secret))
	}
	for _, p := range []struct {
		key string
		d   time.Duration
	}{{"webhooks.timeout", wh.Timeout}, {"webhooks.retry_min", wh.RetryMin}, {"webhooks.retry_max", wh.RetryMax}, {"webhooks.max_age", wh.MaxAge}} {
		if p.d <= 0 {
			bad(p.key, "must be a positive duration, got %s", p.d)
		}
	}
	if wh.RetryMin > 0 && wh.RetryMax < wh.RetryMin {
		bad("webhooks.retry_max", "must be at least webhooks.retry_min (%s), got %s", wh.RetryMin, wh.RetryMax)
	}
	if wh.Workers < 1 {
		bad("webhooks.workers", "must be a positive integer, got %d", wh.Workers)
	}
	if wh.QueueSize < 1 {
		bad("webhooks.queue_size", "must be a positive integer, got %d", wh.QueueSize)
	}
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("scheme must be http or https")
	case u.Host == "":
		return errors.New("missing host")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("an origin is only scheme://host[:port]")
	}
	return nil
}

// loopbackHost reports whether a listen host is loopback only: a
// loopback IP or "localhost" ("" and 0.0.0.0 listen on every interface).
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EachKey calls fn with the key and the value of every field of v that has
// one, following squashed structs and skipping fields tagged "-".
func EachKey(v reflect.Value, prefix string, fn func(key string, f reflect.Value)) {
	for i := range v.NumField() {
		name, opt, _ := strings.Cut(v.Type().Field(i).Tag.Get("mapstructure"), ",")
		switch f := v.Field(i); {
		case name == "-":
		case opt == "squash":
			EachKey(f, prefix, fn)
		case f.Kind() == reflect.Struct:
			EachKey(f, prefix+name+".", fn)
		default:
			fn(prefix+name, f)
		}
	}
}
