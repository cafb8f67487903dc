// Package redisdb is the Redis plumbing shared by the stores that keep
// Switchboard's state in Redis (signaling.RedisStore, calls.RedisRecords,
// ...): the connection settings, opening a checked client, and telling a
// failure of Redis from a caller that gave up. Each store keeps its own key
// layout under the configured key prefix, and its own commands; it never
// uses KEYS.
package redisdb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultKeyPrefix starts every key when Config.KeyPrefix is empty.
const DefaultKeyPrefix = "switchboard:"

// DialTimeout bounds one attempt to connect.
const DialTimeout = 2 * time.Second

// PingTimeout bounds the PING with which Open checks the connection.
const PingTimeout = 5 * time.Second

// Config is how to reach Redis.
type Config struct {
	// Addr is host:port, or "unix:" followed by the path of a Unix socket.
	Addr string `mapstructure:"addr"`
	// Username and Password authenticate (AUTH); Username is for Redis 6
	// ACL users, empty for the default user.
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// DB is the database number (SELECT).
	DB int `mapstructure:"db"`
	// TLS connects with TLS, checking the server's certificate against the
	// system's roots, or against CAFile's when it is set.
	TLS    bool   `mapstructure:"tls"`
	CAFile string `mapstructure:"ca_file"`
	// KeyPrefix starts every key that Switchboard writes, so that several
	// deployments (or tests) can share one Redis; DefaultKeyPrefix when
	// empty.
	KeyPrefix string `mapstructure:"key_prefix"`
}

// DefaultConfig has no address (no Redis) and the default key prefix.
func DefaultConfig() Config { return Config{KeyPrefix: DefaultKeyPrefix} }

// Prefix is the key prefix to use: KeyPrefix, or DefaultKeyPrefix when
// that is empty.
func (c Config) Prefix() string {
	if c.KeyPrefix == "" {
		return DefaultKeyPrefix
	}
	return c.KeyPrefix
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	network, addr := c.network()
	switch {
	case addr == "":
		errs = append(errs, errors.New("addr is empty"))
	case network == "tcp":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("addr %q is not host:port or unix:/path: %w", c.Addr, err))
		}
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("db %d is negative", c.DB))
	}
	if c.CAFile != "" && !c.TLS {
		errs = append(errs, errors.New("ca_file is set but tls is off"))
	}
	if network == "unix" && c.TLS {
		errs = append(errs, errors.New("tls over a Unix socket is not supported"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redisdb: %w", err)
	}
	return nil
}

func (c Config) network() (network, addr string) {
	if path, ok := strings.CutPrefix(c.Addr, "unix:"); ok {
		return "unix", path
	}
	return "tcp", c.Addr
}

// Options returns the go-redis options for c, reading CAFile.
func (c Config) Options() (*redis.Options, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	network, addr := c.network()
	opts := &redis.Options{
		Network:  network,
		Addr:     addr,
		Username: c.Username,
		Password: c.Password,
		DB:       c.DB,
		// While Redis is down a request fails within a few milliseconds
		// (the client answers store_unavailable) instead of retrying dials
		// for seconds; the pool keeps probing and recovers by itself.
		DialerRetries: 1,
		MaxRetries:    1,
		DialTimeout:   DialTimeout,
		// Commands end at their context's deadline (the cluster's
		// op_timeout), not only at the socket timeouts.
		ContextTimeoutEnabled: true,
		// Maintenance notifications are a Redis Enterprise/Cloud feature
		// that Redis 7 rejects; probing for them only adds a round trip.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if c.TLS {
		host, _, _ := net.SplitHostPort(addr)
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("redisdb: ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redisdb: ca_file %s holds no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	// Reads and writes without the scheduler's system-call state (rawConn).
	opts.Dialer = rawDialer(redis.NewDialer(opts))
	return opts, nil
}

// Open returns a client of the Redis that cfg names, after checking with a
// PING (bounded by PingTimeout and ctx) that it answers and accepts the
// credentials. The caller closes the client. The client reconnects by
// itself after Redis restarts; commands fail meanwhile.
func Open(ctx context.Context, cfg Config) (*redis.Client, error) {
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redisdb: cannot use redis at %s (db %d): %w", cfg.Addr, cfg.DB, err)
	}
	if err := checkVersion(pctx, c); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redisdb: cannot use redis at %s: %w", cfg.Addr, err)
	}
	return c, nil
}

// MinVersion is the oldest Redis the stores work with: the event streams'
// appends name an entry ID's first part and let Redis number the second
// (XADD key <ms>-*), which Redis 7.0 introduced.
var MinVersion = [2]int{7, 0}

// checkVersion refuses a Redis older than MinVersion, whose refusals would
// otherwise come only with the first appends. A server that does not let
// this user run INFO (an ACL without +info) is not refused: its version
// cannot be read, and its first append would say so.
func checkVersion(ctx context.Context, c *redis.Client) error {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		if strings.Contains(err.Error(), "NOPERM") {
			return nil
		}
		return fmt.Errorf("INFO server: %w", err)
	}
	v, ok := infoField(info, "redis_version")
	if !ok {
		return nil
	}
	if !versionAtLeast(v, MinVersion) {
		return fmt.Errorf("redis %s is too old: Switchboard needs Redis %d.%d or later", v, MinVersion[0], MinVersion[1])
	}
	return nil
}

// infoField returns the value of name in the text of an INFO reply.
func infoField(info, name string) (string, bool) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), name+":"); ok {
			return v, true
		}
	}
	return "", false
}

// versionAtLeast reports whether the dotted version v (e.g. "7.0.15") is at
// least min's major.minor. A version that does not parse passes: servers
// that speak the protocol under another numbering are not refused on a
// guess.
func versionAtLeast(v string, min [2]int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return true
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return true
	}
	return major > min[0] || (major == min[0] && minor >= min[1])
}

// Canceled reports whether err comes from a context that ended (the caller
// gave up or its deadline passed), as opposed to Redis failing.
func Canceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Pack packs parts into one string, each as its decimal length, a colon
// and its bytes, so that any bytes survive (JSON would replace invalid
// UTF-8). Stores use it for records kept in one hash value or string.
func Pack(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// Unpack is the inverse of Pack.
func Unpack(s string) ([]string, error) {
	var parts []string
	for len(s) > 0 {
		i := strings.IndexByte(s, ':')
		if i <= 0 {
			return nil, errors.New("redisdb: bad packed value")
		}
		l, err := strconv.Atoi(s[:i])
		// Only the form Pack writes: no sign, no leading zero.
		if err != nil || l < 0 || l > len(s)-i-1 || s[:i] != strconv.Itoa(l) {
			return nil, errors.New("redisdb: bad packed value")
		}
		parts = append(parts, s[i+1:i+1+l])
		s = s[i+1+l:]
	}
	return parts, nil
}

// UnpackN is Unpack that fails unless s holds exactly n parts.
func UnpackN(s string, n int) ([]string, error) {
	parts, err := Unpack(s)
	if err != nil {
		return nil, err
	}
	if len(parts) != n {
		return nil, fmt.Errorf("redisdb: packed value has %d parts, want %d", len(parts), n)
	}
	return parts, nil
}

// Time encodes t as decimal unix nanoseconds, "" for the zero time. Times
// outside the years 1678-2262 do not survive (see Storable).
func Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// TimeOf decodes Time, in UTC.
func TimeOf(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisdb: bad time %q", s)
	}
	return time.Unix(0, n).UTC(), nil
}

// Storable reports whether t survives Time: the zero time, or a time in
// the years 1678-2262.
func Storable(t time.Time) bool {
	return t.IsZero() || time.Unix(0, t.UnixNano()).Equal(t)
}
