package main

// Configuration is read once, here, and handed down as plain structs; no
// package below cmd imports viper.
//
// The embedded configs/switchboard.yaml is the single source of defaults and
// of the key list: every leaf key in it must match a mapstructure-tagged
// field of Config (same dotted path), and its type (string, bool, int,
// float64, time.Duration, []string) comes from that field. Adding a key is
// therefore one commented YAML line plus one struct field (plus a rule in
// Validate when the value needs one); its flag, environment variable and
// --help text follow automatically.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/switchboard-rtc/switchboard/configs"
)

const (
	programName = "switchboard"
	// envPrefix starts the environment variable of every key:
	// server.addr is SWITCHBOARD_SERVER_ADDR.
	envPrefix = "SWITCHBOARD_"
	// configFlag names the flag giving the config file; it is not a key.
	configFlag = "config"
	// minSecretBytes is the shortest auth.secret accepted outside dev mode
	// (the HS256 key should be as long as its 256-bit hash).
	minSecretBytes = 32
)

// Config is the whole server configuration. Each section is a struct whose
// mapstructure tags are the keys of configs/switchboard.yaml.
type Config struct {
	Server    ServerConfig    `mapstructure:"server"`
	Store     StoreConfig     `mapstructure:"store"`
	Auth      AuthConfig      `mapstructure:"auth"`
	Signaling SignalingConfig `mapstructure:"signaling"`
	Limits    LimitsConfig    `mapstructure:"limits"`
	Calls     CallsConfig     `mapstructure:"calls"`
	Media     MediaConfig     `mapstructure:"media"`
	Metrics   MetricsConfig   `mapstructure:"metrics"`
	Log       LogConfig       `mapstructure:"log"`
}

// CallsConfig configures call sessions.
type CallsConfig struct {
	BusyPolicy          string        `mapstructure:"busy_policy"`
	BusyIncludesRinging bool          `mapstructure:"busy_includes_ringing"`
	SetupTimeout        time.Duration `mapstructure:"setup_timeout"`
	Heartbeat           time.Duration `mapstructure:"heartbeat"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	Enabled bool   `mapstructure:"enabled"`
	Addr    string `mapstructure:"addr"`
}

// MediaConfig configures the WebRTC SFU.
type MediaConfig struct {
	UDPPort              int           `mapstructure:"udp_port"`
	ListenIP             string        `mapstructure:"listen_ip"`
	NAT1To1IPs           []string      `mapstructure:"nat1to1_ips"`
	IncludeLoopback      bool          `mapstructure:"include_loopback"`
	ICEServers           []string      `mapstructure:"ice_servers"`
	ICEUsername          string        `mapstructure:"ice_username"`
	ICECredential        string        `mapstructure:"ice_credential"`
	ICEDisconnectedGrace time.Duration `mapstructure:"ice_disconnected_grace"`
	ICEFailedGrace       time.Duration `mapstructure:"ice_failed_grace"`
	PLIThrottle          time.Duration `mapstructure:"pli_throttle"`
}

// ServerConfig configures the HTTP and WebSocket listener.
type ServerConfig struct {
	Addr string `mapstructure:"addr"`
	// AllowedOrigins lists the WebSocket Origins accepted; empty means the
	// request's own Host only, "*" means any.
	AllowedOrigins  []string      `mapstructure:"allowed_origins"`
	TLSCert         string        `mapstructure:"tls_cert"`
	TLSKey          string        `mapstructure:"tls_key"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	PingInterval    time.Duration `mapstructure:"ping_interval"`
	PongTimeout     time.Duration `mapstructure:"pong_timeout"`
	WriteTimeout    time.Duration `mapstructure:"write_timeout"`
	// HTTP hardening (web.Server.HTTPServer and Listen).
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	MaxConnections    int           `mapstructure:"max_connections"`
}

// StoreConfig configures persistent storage.
type StoreConfig struct {
	Path string `mapstructure:"path"`
}

// AuthConfig configures client authentication.
type AuthConfig struct {
	// Secret is the HS256 key. Empty with Dev set means a random key per
	// start; see SigningKey.
	Secret      string        `mapstructure:"secret"`
	Dev         bool          `mapstructure:"dev"`
	DevTokenTTL time.Duration `mapstructure:"dev_token_ttl"`
}

// SignalingConfig configures invitations and event delivery.
type SignalingConfig struct {
	DefaultTimeout  time.Duration `mapstructure:"default_timeout"`
	MaxTimeout      time.Duration `mapstructure:"max_timeout"`
	OfflineEventTTL time.Duration `mapstructure:"offline_event_ttl"`
}

// LimitsConfig bounds what one request, connection or user may use. Every
// field must be a positive int (Validate checks them all by reflection).
type LimitsConfig struct {
	MaxFrameBytes           int `mapstructure:"max_frame_bytes"`
	MaxDataBytes            int `mapstructure:"max_data_bytes"`
	MaxInvitees             int `mapstructure:"max_invitees"`
	MaxGroupMembers         int `mapstructure:"max_group_members"`
	MaxGroupsPerUser        int `mapstructure:"max_groups_per_user"`
	MaxOfflineEvents        int `mapstructure:"max_offline_events"`
	ConnectionsPerUser      int `mapstructure:"connections_per_user"`
	RequestsPerSecond       int `mapstructure:"requests_per_second"`
	RequestBurst            int `mapstructure:"request_burst"`
	SendQueue               int `mapstructure:"send_queue"`
	DedupWindow             int `mapstructure:"dedup_window"`
	DedupBytes              int `mapstructure:"dedup_bytes"`
	MaxRoomsPerUser         int `mapstructure:"max_rooms_per_user"`
	MaxRoomParticipants     int `mapstructure:"max_room_participants"`
	MaxTracksPerParticipant int `mapstructure:"max_tracks_per_participant"`
}

// LogConfig configures the process logger.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn or error
	Format string `mapstructure:"format"` // text or json
}

// ErrInvalidConfig is matched, with errors.Is, by every error LoadConfig and
// Validate return because of the user's configuration (bad flag, file,
// environment variable or value): main should print it and exit 2.
// Other LoadConfig errors are internal (a broken embedded default file).
var ErrInvalidConfig = errors.New("invalid configuration")

// ConfigError is one configuration problem. Several are joined with
// errors.Join when more than one is found.
type ConfigError struct {
	// Key is the offending key ("server.addr"), or "config" for problems
	// with the --config file itself, or "" for command-line syntax errors.
	Key string
	// Msg is the complete message; it names Key and, when known, where the
	// value came from (file path, environment variable, flag).
	Msg string
}

func (e *ConfigError) Error() string { return e.Msg }

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func configErr(key, format string, args ...any) *ConfigError {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// HelpError is returned by LoadConfig for -h or --help. It matches
// pflag.ErrHelp with errors.Is; main should print Usage to stdout and exit 0.
type HelpError struct {
	Usage string
}

func (e *HelpError) Error() string { return pflag.ErrHelp.Error() }
func (e *HelpError) Unwrap() error { return pflag.ErrHelp }

// LoadConfig builds the configuration from, lowest precedence first:
//
//  1. the embedded configs/switchboard.yaml (viper defaults for every key);
//  2. the file named by --config PATH (YAML, or JSON/TOML by extension),
//     where an unknown key is an error;
//  3. environment variables SWITCHBOARD_<KEY>, the key upper-cased with dots
//     replaced by underscores (SWITCHBOARD_LIMITS_MAX_DATA_BYTES); lists are
//     comma-separated;
//  4. flags named like the keys (--server.addr, --auth.dev=false).
//
// env is an os.Environ()-style list. viper's AutomaticEnv is not used because
// it reads the process environment through os.Getenv; instead env is scanned
// here, each value is parsed by its key's type (so the error names the
// variable) and applied with viper's Set, before the flags are applied the
// same way, which gives flags the last word. SWITCHBOARD_* variables that
// name no key are ignored (Kubernetes, for instance, injects SWITCHBOARD_PORT
// for a service called switchboard); if a variable appears twice the last
// one wins.
//
// The result is validated. Errors match ErrInvalidConfig, except for -h and
// --help, which return a *HelpError matching pflag.ErrHelp.
func LoadConfig(args []string, env []string) (Config, error) {
	cfg, err := loadConfig(args, env)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadConfig is LoadConfig without Validate.
func loadConfig(args []string, env []string) (Config, error) {
	s, err := newSchema(configs.Default())
	if err != nil {
		return Config{}, err
	}

	fs, configPath := s.flagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, &HelpError{Usage: s.usage(fs)}
		}
		return Config{}, configErr(flagKey(err), "%v (see %s --help)", err, programName)
	}
	if fs.NArg() > 0 {
		hint := ""
		if _, err := strconv.ParseBool(fs.Arg(0)); err == nil {
			hint = "; boolean flags take their value after '=', as in --auth.dev=false"
		}
		return Config{}, configErr("", "unexpected argument %q: %s takes only flags%s (see %s --help)", fs.Arg(0), programName, hint, programName)
	}

	v := viper.New()
	for _, ks := range s.keys {
		v.SetDefault(ks.key, ks.def)
	}
	if *configPath != "" {
		m, err := s.readFile(*configPath)
		if err != nil {
			return Config{}, err
		}
		if err := v.MergeConfigMap(m); err != nil {
			return Config{}, configErr(configFlag, "config file %s: %v", *configPath, err)
		}
	}
	envVals, err := s.envValues(env)
	if err != nil {
		return Config{}, err
	}
	for _, kv := range envVals {
		v.Set(kv.key, kv.val)
	}
	var flagErr error
	fs.Visit(func(f *pflag.Flag) {
		if f.Name == configFlag {
			return
		}
		val, err := s.flagValue(fs, f.Name)
		if err != nil {
			flagErr = errors.Join(flagErr, err)
			return
		}
		v.Set(f.Name, val)
	})
	if flagErr != nil {
		return Config{}, flagErr
	}

	var cfg Config
	err = v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		// Values are already typed; anything else is a bug, not a guess.
		dc.WeaklyTypedInput = false
		dc.ErrorUnused = true
		dc.ErrorUnset = true
	})
	if err != nil {
		return Config{}, fmt.Errorf("decoding configuration: %w", err)
	}
	return cfg, nil
}

// flagKey returns the key of the flag a parse error is about, if any.
func flagKey(err error) string {
	var invalid *pflag.InvalidValueError
	var required *pflag.ValueRequiredError
	switch {
	case errors.As(err, &invalid):
		return invalid.GetFlag().Name
	case errors.As(err, &required):
		return required.GetFlag().Name
	}
	return ""
}

// Validate checks every value and the relations between them. It reports all
// problems at once, joined; each is a *ConfigError naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, configErr(key, "%s: %s", key, fmt.Sprintf(format, args...)))
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	wholeSeconds := func(key string, d time.Duration) {
		if d < time.Second || d%time.Second != 0 {
			bad(key, "must be a whole number of seconds, at least 1s, got %s", d)
		}
	}

	// server
	if err := checkAddr(c.Server.Addr); err != nil {
		bad("server.addr", "want host:port such as \"127.0.0.1:8080\", got %q: %v", c.Server.Addr, err)
	}
	for _, o := range c.Server.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			bad("server.allowed_origins", "want \"*\" or an origin such as \"https://app.example.com\", got %q: %v", o, err)
		}
	}
	switch {
	case c.Server.TLSCert != "" && c.Server.TLSKey == "":
		bad("server.tls_key", "must be set when server.tls_cert is set")
	case c.Server.TLSCert == "" && c.Server.TLSKey != "":
		bad("server.tls_cert", "must be set when server.tls_key is set")
	}
	positive("server.shutdown_timeout", c.Server.ShutdownTimeout)
	positive("server.ping_interval", c.Server.PingInterval)
	positive("server.pong_timeout", c.Server.PongTimeout)
	positive("server.write_timeout", c.Server.WriteTimeout)
	positive("server.read_header_timeout", c.Server.ReadHeaderTimeout)
	positive("server.read_timeout", c.Server.ReadTimeout)
	positive("server.idle_timeout", c.Server.IdleTimeout)
	if c.Server.MaxConnections < 1 {
		bad("server.max_connections", "must be a positive integer, got %d", c.Server.MaxConnections)
	}
	if c.Server.PingInterval > 0 && c.Server.PingInterval >= c.Server.PongTimeout {
		bad("server.ping_interval", "must be below server.pong_timeout (%s), got %s", c.Server.PongTimeout, c.Server.PingInterval)
	}

	// store
	if strings.TrimSpace(c.Store.Path) == "" {
		bad("store.path", "must not be empty")
	}

	// auth
	if !c.Auth.Dev && len(c.Auth.Secret) < minSecretBytes {
		bad("auth.secret", "must be at least %d bytes when auth.dev is false, got %d bytes", minSecretBytes, len(c.Auth.Secret))
	}
	positive("auth.dev_token_ttl", c.Auth.DevTokenTTL)
	if host, _, err := net.SplitHostPort(c.Server.Addr); err == nil && c.Auth.Dev && !loopbackHost(host) {
		bad("auth.dev", "dev mode issues tokens to anyone: it may only listen on loopback, but server.addr is %q; "+
			"set server.addr to 127.0.0.1:PORT, or auth.dev=false with an auth.secret", c.Server.Addr)
	}

	// signaling
	wholeSeconds("signaling.default_timeout", c.Signaling.DefaultTimeout)
	wholeSeconds("signaling.max_timeout", c.Signaling.MaxTimeout)
	if c.Signaling.MaxTimeout < c.Signaling.DefaultTimeout {
		bad("signaling.max_timeout", "must be at least signaling.default_timeout (%s), got %s", c.Signaling.DefaultTimeout, c.Signaling.MaxTimeout)
	}
	positive("signaling.offline_event_ttl", c.Signaling.OfflineEventTTL)

	// limits: every field, so that a new limit is checked without new code.
	lv := reflect.ValueOf(c.Limits)
	for i := range lv.NumField() {
		key := "limits." + tagName(lv.Type().Field(i))
		if n := lv.Field(i).Int(); n < 1 {
			bad(key, "must be a positive integer, got %d", n)
		}
	}
	if c.Limits.MaxDataBytes > c.Limits.MaxFrameBytes {
		bad("limits.max_data_bytes", "must not exceed limits.max_frame_bytes (%d), got %d", c.Limits.MaxFrameBytes, c.Limits.MaxDataBytes)
	}

	// calls
	if p := strings.ToLower(c.Calls.BusyPolicy); p != "reject" && p != "ring" {
		bad("calls.busy_policy", "want reject or ring, got %q", c.Calls.BusyPolicy)
	}
	positive("calls.setup_timeout", c.Calls.SetupTimeout)
	positive("calls.heartbeat", c.Calls.Heartbeat)

	// media
	if c.Media.UDPPort < 0 || c.Media.UDPPort > 65535 {
		bad("media.udp_port", "must be 0-65535, got %d", c.Media.UDPPort)
	}
	if c.Media.ListenIP != "" && net.ParseIP(c.Media.ListenIP) == nil {
		bad("media.listen_ip", "must be an IP address or empty, got %q", c.Media.ListenIP)
	}
	for _, ip := range c.Media.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			bad("media.nat1to1_ips", "must be IP addresses, got %q", ip)
		}
	}
	for _, u := range c.Media.ICEServers {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			bad("media.ice_servers", "want stun:, stuns:, turn: or turns: URLs, got %q", u)
		}
	}
	positive("media.ice_disconnected_grace", c.Media.ICEDisconnectedGrace)
	if c.Media.ICEFailedGrace < 0 {
		bad("media.ice_failed_grace", "must not be negative, got %s", c.Media.ICEFailedGrace)
	}
	positive("media.pli_throttle", c.Media.PLIThrottle)

	// metrics
	if c.Metrics.Addr != "" {
		if err := checkAddr(c.Metrics.Addr); err != nil {
			bad("metrics.addr", "want host:port such as \"127.0.0.1:9090\" or empty, got %q: %v", c.Metrics.Addr, err)
		}
	}

	// log
	if _, ok := logLevels[strings.ToLower(c.Log.Level)]; !ok {
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	if f := strings.ToLower(c.Log.Format); f != "text" && f != "json" {
		bad("log.format", "want text or json, got %q", c.Log.Format)
	}

	return errors.Join(errs...)
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// SlogLevel returns the slog level named by Level (info if unknown; Validate
// rejects unknown levels).
func (l LogConfig) SlogLevel() slog.Level {
	return logLevels[strings.ToLower(l.Level)] // zero value is LevelInfo
}

// NewHandler returns a text or JSON slog handler writing to w at the
// configured level.
func (l LogConfig) NewHandler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: l.SlogLevel()}
	if strings.EqualFold(l.Format, "json") {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// SigningKey returns the HS256 key: Secret, or, when Secret is empty in dev
// mode, 32 fresh random bytes. Call it once per start: each call in that case
// returns a different key.
func (a AuthConfig) SigningKey() ([]byte, error) {
	if a.Secret != "" || !a.Dev {
		return []byte(a.Secret), nil
	}
	key := make([]byte, minSecretBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating dev signing key: %w", err)
	}
	return key, nil
}

// Redacted returns a copy of c safe to log: the secret is masked.
func (c Config) Redacted() Config {
	if c.Auth.Secret != "" {
		c.Auth.Secret = "[redacted]"
	}
	c.Server.AllowedOrigins = slices.Clone(c.Server.AllowedOrigins)
	return c
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > math.MaxUint16 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
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

func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("scheme must be http or https")
	case u.Host == "":
		return errors.New("missing host")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("an origin is only scheme://host[:port]")
	}
	return nil
}

// --- schema: keys, types, defaults and docs, from Config and the YAML ---

// kind is the type of a key's value, taken from its Config field.
type kind int

const (
	kindString kind = iota + 1
	kindBool
	kindInt
	kindFloat
	kindDuration
	kindStrings
)

func (k kind) want() string {
	switch k {
	case kindString:
		return "a string"
	case kindBool:
		return "true or false"
	case kindInt:
		return "an integer"
	case kindFloat:
		return "a number"
	case kindDuration:
		return `a duration such as "30s"`
	case kindStrings:
		return "a list of strings"
	}
	return "a value"
}

var durationType = reflect.TypeFor[time.Duration]()

func kindOf(t reflect.Type) (kind, bool) {
	switch {
	case t == durationType:
		return kindDuration, true
	case t.Kind() == reflect.String:
		return kindString, true
	case t.Kind() == reflect.Bool:
		return kindBool, true
	case t.Kind() == reflect.Int:
		return kindInt, true
	case t.Kind() == reflect.Float64:
		return kindFloat, true
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return kindStrings, true
	}
	return 0, false
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

// structKeys adds to out the dotted key and kind of every leaf field of t.
func structKeys(t reflect.Type, prefix string, out map[string]kind) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if name == "" || name == "-" {
			return fmt.Errorf("config field %s%s has no mapstructure tag", prefix, f.Name)
		}
		key := prefix + name
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			if err := structKeys(f.Type, key+".", out); err != nil {
				return err
			}
			continue
		}
		k, ok := kindOf(f.Type)
		if !ok {
			return fmt.Errorf("config key %q: unsupported field type %s", key, f.Type)
		}
		out[key] = k
	}
	return nil
}

type keySpec struct {
	key  string
	kind kind
	def  any    // typed default from the embedded YAML
	doc  string // the comment line above the key in the embedded YAML
	env  string // SWITCHBOARD_...
}

type schema struct {
	keys     []keySpec // sorted by key
	byKey    map[string]int
	byEnv    map[string]int
	sections map[string]bool // every proper prefix of a key: "server", ...
}

func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// newSchema reads the default YAML and checks it against Config: the same
// keys on both sides, defaults of the right type, a comment on every key.
// Failures are bugs in the embedded file or the struct, not user errors.
func newSchema(defaultYAML []byte) (*schema, error) {
	fields := map[string]kind{}
	if err := structKeys(reflect.TypeFor[Config](), "", fields); err != nil {
		return nil, err
	}
	dv := viper.New()
	dv.SetConfigType("yaml")
	if err := dv.ReadConfig(bytes.NewReader(defaultYAML)); err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}
	docs, err := keyComments(defaultYAML)
	if err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}

	s := &schema{byKey: map[string]int{}, byEnv: map[string]int{}, sections: map[string]bool{}}
	var errs []error
	keys := dv.AllKeys()
	slices.Sort(keys)
	for _, key := range keys {
		k, ok := fields[key]
		if !ok {
			errs = append(errs, fmt.Errorf("key %q has no field in Config", key))
			continue
		}
		def, err := coerce(k, dv.Get(key))
		if err != nil {
			errs = append(errs, fmt.Errorf("key %q: %w", key, err))
			continue
		}
		if docs[key] == "" {
			errs = append(errs, fmt.Errorf("key %q has no one-line comment directly above it", key))
		}
		env := envName(key)
		if other, dup := s.byEnv[env]; dup {
			errs = append(errs, fmt.Errorf("keys %q and %q share environment variable %s", s.keys[other].key, key, env))
		}
		s.byKey[key] = len(s.keys)
		s.byEnv[env] = len(s.keys)
		s.keys = append(s.keys, keySpec{key: key, kind: k, def: def, doc: docs[key], env: env})
		for i := range len(key) {
			if key[i] == '.' {
				s.sections[key[:i]] = true
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		if _, ok := s.byKey[key]; !ok {
			errs = append(errs, fmt.Errorf("key %q of Config has no default in configs/switchboard.yaml", key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("embedded default config does not match Config:\n%w", err)
	}
	return s, nil
}

// keyComments maps each leaf key of a YAML document to the text of the
// comment line directly above it ("" when there is none).
func keyComments(doc []byte) (map[string]string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	lines := strings.Split(string(doc), "\n")
	out := map[string]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, val := n.Content[i], n.Content[i+1]
				key := prefix + strings.ToLower(k.Value)
				if val.Kind == yaml.MappingNode {
					walk(val, key+".")
					continue
				}
				out[key] = ""
				if k.Line >= 2 {
					if above := strings.TrimSpace(lines[k.Line-2]); strings.HasPrefix(above, "#") {
						out[key] = strings.TrimSpace(strings.TrimLeft(above, "#"))
					}
				}
			}
		}
	}
	walk(&root, "")
	return out, nil
}

// coerce checks a value decoded from a config file (or the defaults) against
// its key's kind and returns it with the Go type of the Config field.
func coerce(k kind, raw any) (any, error) {
	switch k {
	case kindString:
		if s, ok := raw.(string); ok {
			return s, nil
		}
	case kindBool:
		if b, ok := raw.(bool); ok {
			return b, nil
		}
	case kindInt:
		switch n := raw.(type) {
		case int:
			return n, nil
		case int64:
			if n >= math.MinInt && n <= math.MaxInt {
				return int(n), nil
			}
		case uint64:
			if n <= math.MaxInt {
				return int(n), nil
			}
		case float64: // JSON numbers
			if n == math.Trunc(n) && n >= math.MinInt && n < math.MaxInt {
				return int(n), nil
			}
		}
	case kindFloat:
		switch n := raw.(type) {
		case float64:
			return n, nil
		case int:
			return float64(n), nil
		case int64:
			return float64(n), nil
		}
	case kindDuration:
		switch d := raw.(type) {
		case time.Duration:
			return d, nil
		case string:
			if parsed, err := time.ParseDuration(d); err == nil {
				return parsed, nil
			}
		}
	case kindStrings:
		switch l := raw.(type) {
		case []string:
			return slices.Clone(l), nil
		case string:
			return splitList(l), nil
		case []any:
			out := make([]string, 0, len(l))
			for _, e := range l {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("want %s, got element %s", k.want(), describe(e))
				}
				out = append(out, s)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("want %s, got %s", k.want(), describe(raw))
}

// parseText parses an environment variable's value by its key's kind.
func parseText(k kind, s string) (any, error) {
	t := strings.TrimSpace(s)
	var (
		v   any
		err error
	)
	switch k {
	case kindString:
		return s, nil
	case kindStrings:
		return splitList(s), nil
	case kindBool:
		v, err = strconv.ParseBool(t)
	case kindInt:
		v, err = strconv.Atoi(t)
	case kindFloat:
		v, err = strconv.ParseFloat(t, 64)
	case kindDuration:
		v, err = time.ParseDuration(t)
	}
	if err != nil {
		return nil, fmt.Errorf("want %s, got %q", k.want(), s)
	}
	return v, nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items; "" is the empty list.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(v)
	case map[string]any, map[any]any:
		return "a section"
	case []any:
		return "a list"
	}
	return fmt.Sprint(v)
}

func (s *schema) flagSet() (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(programName, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // LoadConfig returns errors and usage instead
	fs.Usage = func() {}
	configPath := fs.String(configFlag, "", "config file (YAML; .json and .toml by extension) overriding the defaults; unknown keys are an error")
	for _, ks := range s.keys {
		switch ks.kind {
		case kindString:
			fs.String(ks.key, ks.def.(string), ks.doc)
		case kindBool:
			fs.Bool(ks.key, ks.def.(bool), ks.doc)
		case kindInt:
			fs.Int(ks.key, ks.def.(int), ks.doc)
		case kindFloat:
			fs.Float64(ks.key, ks.def.(float64), ks.doc)
		case kindDuration:
			fs.Duration(ks.key, ks.def.(time.Duration), ks.doc)
		case kindStrings:
			fs.StringSlice(ks.key, slices.Clone(ks.def.([]string)), ks.doc)
		}
	}
	return fs, configPath
}

func (s *schema) flagValue(fs *pflag.FlagSet, key string) (any, error) {
	var (
		v   any
		err error
	)
	switch s.keys[s.byKey[key]].kind {
	case kindString:
		v, err = fs.GetString(key)
	case kindBool:
		v, err = fs.GetBool(key)
	case kindInt:
		v, err = fs.GetInt(key)
	case kindFloat:
		v, err = fs.GetFloat64(key)
	case kindDuration:
		v, err = fs.GetDuration(key)
	case kindStrings:
		var l []string
		l, err = fs.GetStringSlice(key)
		v = splitList(strings.Join(l, ",")) // trim and drop empty items, as for env
	}
	if err != nil {
		return nil, configErr(key, "flag --%s: %v", key, err)
	}
	return v, nil
}

func (s *schema) usage(fs *pflag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n", programName)
	b.WriteString("Runs the Switchboard server. Settings come from, lowest precedence first:\n" +
		"built-in defaults (configs/switchboard.yaml), the --config file, environment\n" +
		"variables SWITCHBOARD_<KEY> (dots as underscores: SWITCHBOARD_SERVER_ADDR), flags.\n" +
		"Lists are comma-separated; durations look like 300ms, 30s, 5m, 24h.\n\nFlags:\n")
	b.WriteString(fs.FlagUsages())
	return b.String()
}

// configType picks the viper decoder for a config file from its extension.
func configType(path string) string {
	switch ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), ".")); ext {
	case "json", "toml", "yaml", "yml":
		return ext
	}
	return "yaml"
}

// readFile reads a --config file into a nested map of typed values. Unknown
// keys and values of the wrong type are errors naming the key and the file.
func (s *schema) readFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr(configFlag, "config file: %v", err)
	}
	fv := viper.New()
	fv.SetConfigType(configType(path))
	if err := fv.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, configErr(configFlag, "config file %s: %v", path, err)
	}
	out := map[string]any{}
	var errs []error
	keys := fv.AllKeys()
	slices.Sort(keys)
	for _, key := range keys {
		raw := fv.Get(key)
		i, ok := s.byKey[key]
		if !ok {
			if raw == nil && s.sections[key] {
				continue // "server:" with every key commented out
			}
			msg := fmt.Sprintf("unknown config key %q in %s", key, path)
			if near := s.suggest(key); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			errs = append(errs, configErr(key, "%s", msg))
			continue
		}
		val, err := coerce(s.keys[i].kind, raw)
		if err != nil {
			errs = append(errs, configErr(key, "config key %q in %s: %v", key, path, err))
			continue
		}
		setNested(out, key, val)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = val
}

// suggest returns the known key an unknown one was probably meant to be: a
// key it nests under, else the closest within 3 edits, else one with the
// same last part in another section; "" if none.
func (s *schema) suggest(key string) string {
	best, bestDist := "", 4
	for _, ks := range s.keys {
		if strings.HasPrefix(key, ks.key+".") {
			return ks.key
		}
		if d := editDistance(key, ks.key); d < bestDist {
			best, bestDist = ks.key, d
		}
	}
	if best != "" {
		return best
	}
	_, leaf, _ := strings.Cut(key, ".")
	for _, ks := range s.keys {
		if _, kl, _ := strings.Cut(ks.key, "."); leaf != "" && kl == leaf {
			return ks.key
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

type keyValue struct {
	key string
	val any
}

// envValues returns the typed values of the SWITCHBOARD_* variables in env
// that name a key, in key order.
func (s *schema) envValues(env []string) ([]keyValue, error) {
	vals := map[int]any{}
	var errs []error
	for _, entry := range env {
		name, raw, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		i, ok := s.byEnv[name]
		if !ok {
			continue // not ours; see LoadConfig
		}
		ks := s.keys[i]
		val, err := parseText(ks.kind, raw)
		if err != nil {
			errs = append(errs, configErr(ks.key, "environment variable %s (key %q): %v", name, ks.key, err))
			continue
		}
		vals[i] = val
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]keyValue, 0, len(vals))
	for _, i := range slices.Sorted(maps.Keys(vals)) {
		out = append(out, keyValue{key: s.keys[i].key, val: vals[i]})
	}
	return out, nil
}
