package main

// Configuration is read once, here, with a local viper, and handed down as
// plain structs: stack.Config, made of each package's own config struct
// (mapstructure tags are the keys). No package below cmd imports viper.
//
// The embedded configs/switchboard.yaml is the single source of defaults,
// of the key list and of the help text (the comment above each key); a test
// of web/stack checks that it and stack.Config agree. Adding a key is one
// commented YAML line plus one tagged field of the owning package (plus a
// rule in validate when the value needs one); its flag and environment
// variable follow.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

const (
	programName = "switchboard"
	// configFlag names the flag giving the config file; it is not a key.
	configFlag = "config"
)

// Config is the whole server configuration.
type Config = stack.Config

// ErrInvalidConfig is matched, with errors.Is, by every error LoadConfig
// returns because of the user's configuration (bad flag, file, environment
// variable or value): main prints it and exits 2. Other errors are internal
// (a broken embedded default file).
var ErrInvalidConfig = errors.New("invalid configuration")

// ConfigError is one configuration problem (several are joined). Key is the
// offending key ("server.addr"), "config" for the --config file itself, or
// "" for command-line syntax errors; Msg names it.
type ConfigError struct{ Key, Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func configErr(key, format string, args ...any) *ConfigError {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// HelpError is returned by LoadConfig for -h or --help. It matches
// pflag.ErrHelp; main prints Usage to stdout and exits 0.
type HelpError struct{ Usage string }

func (e *HelpError) Error() string { return pflag.ErrHelp.Error() }
func (e *HelpError) Unwrap() error { return pflag.ErrHelp }

// LoadConfig builds the configuration from, lowest precedence first: the
// embedded configs/switchboard.yaml; the file named by --config (YAML, or
// JSON/TOML by extension), where an unknown key is an error; environment
// variables SWITCHBOARD_<KEY> (dots as underscores; lists comma-separated;
// variables naming no key are ignored); flags named like the keys. It then
// validates the result.
func LoadConfig(args []string) (Config, error) {
	cfg, err := loadConfig(args)
	if err != nil {
		return Config{}, err
	}
	if err := validate(cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadConfig is LoadConfig without validate.
func loadConfig(args []string) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(configs.Default())); err != nil {
		return Config{}, fmt.Errorf("embedded default config: %w", err)
	}
	known := v.AllKeys()
	keyFlags, all, err := flagSets(v)
	if err != nil {
		return Config{}, err
	}
	if err := all.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, &HelpError{Usage: usage(all)}
		}
		return Config{}, configErr(flagKey(err), "%v (see %s --help)", err, programName)
	}
	if all.NArg() > 0 {
		hint := ""
		if _, err := strconv.ParseBool(all.Arg(0)); err == nil {
			hint = "; boolean flags take their value after '=', as in --auth.dev=false"
		}
		return Config{}, configErr("", "unexpected argument %q: %s takes only flags%s (see %s --help)", all.Arg(0), programName, hint, programName)
	}
	if path, _ := all.GetString(configFlag); path != "" {
		if err := mergeFile(v, path, known); err != nil {
			return Config{}, err
		}
	}
	v.SetEnvPrefix(programName)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AllowEmptyEnv(true) // SWITCHBOARD_SERVER_ALLOWED_ORIGINS= clears the list
	v.AutomaticEnv()
	if err := v.BindPFlags(keyFlags); err != nil {
		return Config{}, err
	}
	var cfg Config
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(stack.DecodeHook()),
		func(dc *mapstructure.DecoderConfig) { dc.WeaklyTypedInput = false }); err != nil {
		return Config{}, decodeErrors(err)
	}
	return cfg, nil
}

// flagSets returns a flag for every key, typed and documented from the
// embedded YAML, and the command line's flags: those and --config.
func flagSets(v *viper.Viper) (keys, all *pflag.FlagSet, err error) {
	docs, err := keyComments(configs.Default())
	if err != nil {
		return nil, nil, fmt.Errorf("embedded default config: %w", err)
	}
	keys = pflag.NewFlagSet(programName, pflag.ContinueOnError)
	for _, key := range v.AllKeys() {
		switch def := v.Get(key).(type) {
		case bool:
			keys.Bool(key, def, docs[key])
		case int:
			keys.Int(key, def, docs[key])
		case float64:
			keys.Float64(key, def, docs[key])
		case []any:
			list := make([]string, len(def))
			for i, e := range def {
				list[i] = fmt.Sprint(e)
			}
			keys.StringSlice(key, list, docs[key])
		case string:
			if d, err := time.ParseDuration(def); err == nil {
				keys.Duration(key, d, docs[key])
			} else {
				keys.String(key, def, docs[key])
			}
		default:
			return nil, nil, fmt.Errorf("embedded default config: key %q has unsupported default %v", key, def)
		}
	}
	all = pflag.NewFlagSet(programName, pflag.ContinueOnError)
	all.SetOutput(io.Discard) // LoadConfig returns errors and usage instead
	all.Usage = func() {}
	all.String(configFlag, "", "config file (YAML; .json and .toml by extension) overriding the defaults; unknown keys are an error")
	all.AddFlagSet(keys)
	return keys, all, nil
}

// keyComments maps each leaf key of a YAML document to the last line of the
// comment above it.
func keyComments(doc []byte) (map[string]string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil || len(root.Content) == 0 {
		return nil, fmt.Errorf("no YAML document: %v", err)
	}
	out := map[string]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if val.Kind == yaml.MappingNode {
				walk(val, prefix+k.Value+".")
				continue
			}
			lines := strings.Split(k.HeadComment, "\n")
			out[prefix+k.Value] = strings.TrimSpace(strings.TrimPrefix(lines[len(lines)-1], "#"))
		}
	}
	walk(root.Content[0], "")
	return out, nil
}

func usage(fs *pflag.FlagSet) string {
	return fmt.Sprintf("Usage: %s [flags]\n\n", programName) +
		"Runs the Switchboard server. Settings come from, lowest precedence first:\n" +
		"built-in defaults (configs/switchboard.yaml), the --config file, environment\n" +
		"variables SWITCHBOARD_<KEY> (dots as underscores: SWITCHBOARD_SERVER_ADDR), flags.\n" +
		"Lists are comma-separated; durations look like 300ms, 30s, 5m, 24h.\n\nFlags:\n" + fs.FlagUsages()
}

// flagKey returns the key of the flag a parse error is about, if any.
func flagKey(err error) string {
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		return invalid.GetFlag().Name
	}
	if required := (*pflag.ValueRequiredError)(nil); errors.As(err, &required) {
		return required.GetFlag().Name
	}
	return ""
}

// mergeFile merges the --config file into v after checking that it names
// only known keys.
func mergeFile(v *viper.Viper, path string, known []string) error {
	typ := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	if !slices.Contains([]string{"json", "toml", "yaml", "yml"}, typ) {
		typ = "yaml"
	}
	fv := viper.New()
	fv.SetConfigFile(path)
	fv.SetConfigType(typ)
	if err := fv.ReadInConfig(); err != nil {
		return configErr(configFlag, "config file %s: %v", path, err)
	}
	var errs []error
	for _, key := range fv.AllKeys() {
		switch {
		case slices.Contains(known, key) && fv.Get(key) == nil:
			errs = append(errs, configErr(key, "config key %q in %s: want a value, got nothing", key, path))
			continue
		case slices.Contains(known, key), fv.Get(key) == nil && slices.ContainsFunc(known, func(k string) bool { return strings.HasPrefix(k, key+".") }):
			continue // a key, or a section with every key commented out
		}
		msg := fmt.Sprintf("unknown config key %q in %s", key, path)
		if near := suggest(key, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", near)
		}
		errs = append(errs, configErr(key, "%s", msg))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	v.SetConfigFile(path)
	v.SetConfigType(typ)
	if err := v.MergeInConfig(); err != nil {
		return configErr(configFlag, "config file %s: %v", path, err)
	}
	return nil
}

// suggest returns the known key an unknown one was probably meant to be: a
// key it nests under, one with the same name in another section, or the one
// of its section sharing the longest start (at least 2 characters).
func suggest(key string, known []string) string {
	section, leaf, _ := strings.Cut(key, ".")
	best, bestLen := "", 1
	for _, k := range known {
		ks, kl, _ := strings.Cut(k, ".")
		if strings.HasPrefix(key, k+".") || leaf != "" && kl == leaf {
			return k
		}
		n := 0
		for n < min(len(leaf), len(kl)) && leaf[n] == kl[n] {
			n++
		}
		if ks == section && n > bestLen {
			best, bestLen = k, n
		}
	}
	return best
}

// decodeErrors turns viper's decoding errors into ConfigErrors naming the
// key (and the environment variable, when one is set for it).
func decodeErrors(err error) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case *mapstructure.DecodeError:
			key, _, _ := strings.Cut(u.Name(), "[")
			msg := fmt.Sprintf("%s: invalid value: %v", key, u.Unwrap())
			if env := envName(key); os.Getenv(env) != "" {
				msg += " (from environment variable " + env + ")"
			}
			out = append(out, configErr(key, "%s", msg))
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			out = append(out, configErr("", "%v", e))
		}
	}
	walk(err)
	return errors.Join(out...)
}

func envName(key string) string {
	return strings.ToUpper(programName + "_" + strings.ReplaceAll(key, ".", "_"))
}

// eachKey calls fn with the key and the value of every field of v that has
// one, following squashed structs and skipping fields tagged "-".
func eachKey(v reflect.Value, prefix string, fn func(key string, f reflect.Value)) {
	for i := range v.NumField() {
		name, opt, _ := strings.Cut(v.Type().Field(i).Tag.Get("mapstructure"), ",")
		switch f := v.Field(i); {
		case name == "-":
		case opt == "squash":
			eachKey(f, prefix, fn)
		case f.Kind() == reflect.Struct:
			eachKey(f, prefix+name+".", fn)
		default:
			fn(prefix+name, f)
		}
	}
}

// validate checks every value and the relations between them, and reports
// every problem, joined; each is a *ConfigError naming its key.
func validate(c Config) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, configErr(key, "%s: %s", key, fmt.Sprintf(format, args...)))
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
	if !c.Auth.Dev && len(c.Auth.Secret) < web.MinSecretLen {
		bad("auth.secret", "must be at least %d bytes when auth.dev is false, got %d bytes", web.MinSecretLen, len(c.Auth.Secret))
	}
	wholeSeconds("signaling.default_timeout", c.Signaling.DefaultTimeout)
	wholeSeconds("signaling.max_timeout", c.Signaling.MaxTimeout)
	if c.Signaling.MaxTimeout < c.Signaling.DefaultTimeout {
		bad("signaling.max_timeout", "must be at least signaling.default_timeout (%s), got %s", c.Signaling.DefaultTimeout, c.Signaling.MaxTimeout)
	}
	// limits: every key, so that a new limit is checked without new code.
	eachKey(reflect.ValueOf(c.Limits), "limits.", func(key string, f reflect.Value) {
		if n := f.Convert(reflect.TypeFor[float64]()).Float(); n < 1 {
			bad(key, "must be a positive integer, got %v", n)
		}
	})
	if int64(c.Limits.Signaling.MaxDataBytes) > c.Limits.Web.MaxFrameBytes {
		bad("limits.max_data_bytes", "must not exceed limits.max_frame_bytes (%d), got %d", c.Limits.Web.MaxFrameBytes, c.Limits.Signaling.MaxDataBytes)
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
	if err := checkAddr(c.Metrics.Addr); c.Metrics.Addr != "" && err != nil {
		bad("metrics.addr", "want host:port such as \"127.0.0.1:9090\" or empty, got %q: %v", c.Metrics.Addr, err)
	}
	if _, ok := stack.LogLevels[strings.ToLower(c.Log.Level)]; !ok {
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	if f := strings.ToLower(c.Log.Format); f != "text" && f != "json" {
		bad("log.format", "want text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
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
