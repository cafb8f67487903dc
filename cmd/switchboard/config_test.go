package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/configs"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// wantDefaults is written out by hand so that a changed default is a
// deliberate, reviewed change of both the YAML and this test.
var wantDefaults = Config{
	Server: stack.ServerConfig{
		Addr:            "127.0.0.1:8080",
		TLSCert:         "",
		TLSKey:          "",
		ShutdownTimeout: 10 * time.Second,
		GCPercent:       400,
		MemoryLimitMB:   0,
		Web: web.Config{
			AllowedOrigins:    []string{},
			PingInterval:      25 * time.Second,
			PongTimeout:       60 * time.Second,
			WriteTimeout:      10 * time.Second,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxConnections:    10000,
		},
	},
	Store: stack.StoreConfig{Path: "./data/switchboard.db", CommitWait: 0, CommitBatch: 8},
	Cluster: stack.ClusterConfig{
		NodeID:        "",
		AdvertiseAddr: "",
		Redis:         redisdb.Config{Addr: "", Username: "", Password: "", DB: 0, TLS: false, CAFile: "", KeyPrefix: "switchboard:"},
		Knobs: cluster.Config{NodeTTL: 3 * time.Second, CleanupLease: 10 * time.Second, TimerPoll: 200 * time.Millisecond,
			TimerLease: 5 * time.Second, TimerBatch: 100, StreamMaxLen: 10000, StreamBatch: 100, OpTimeout: time.Second, MaxBackoff: time.Second,
			OpLanes: 2, OpGangMax: 32, OpGangWait: 50 * time.Millisecond},
	},
	Auth: web.AuthConfig{Secret: []byte{}, Dev: true, DevTokenTTL: 24 * time.Hour},
	Signaling: signaling.Config{
		DefaultTimeout:  30 * time.Second,
		MaxTimeout:      300 * time.Second,
		OfflineEventTTL: 24 * time.Hour,
	},
	Limits: stack.LimitsConfig{
		Signaling: signaling.Limits{
			MaxDataBytes:             8192,
			MaxInvitees:              100,
			MaxGroupMembers:          1000,
			MaxGroupsPerUser:         100,
			MaxOfflineEvents:         200,
			ConnectionsPerUser:       10,
			MaxGroupsAddedByOthers:   200,
			MaxPendingPerInvitee:     100,
			MaxPendingPerInviter:     50,
			MaxOfflineBytesPerSender: 1 << 20,
			MaxOfflineBytesTotal:     64 << 20,
			MaxPushInfoBytes:         4096,
			MaxStatusSubscriptions:   1000,
			MaxCustomStatusBytes:     100,
		},
		Web:                     web.Limits{MaxFrameBytes: 65536, RequestsPerSec: 50, RequestBurst: 100, SendQueue: 256, DedupWindow: 256, DedupBytes: 65536},
		Rooms:                   rooms.Config{MaxRoomsPerUser: 4, MaxParticipants: 50, RoomSeats: 8, MaxRoomSeats: 50},
		MaxTracksPerParticipant: 4,
	},
	Calls: calls.Config{BusyPolicy: "reject", SetupTimeout: 30 * time.Second, Heartbeat: 5 * time.Second},
	Media: stack.MediaConfig{
		SFU: media.Config{UDPPort: 7882, NAT1To1IPs: []string{}, IncludeLoopback: true,
			ICEDisconnectedGrace: 10 * time.Second, PLIThrottle: 500 * time.Millisecond, UDPReadBuffer: 4 << 20},
		ICEServers:     []string{},
		ConnectTimeout: 30 * time.Second,
		RejoinGrace:    15 * time.Second,
	},
	TURN: turnserver.Config{UDPPort: 3478, TCPPort: 3478, TLSPort: 5349, RelayPortMin: 30000, RelayPortMax: 40000,
		Realm: "switchboard", CredentialTTL: 24 * time.Hour, MaxConnections: 10000, AllocateTimeout: 20 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second, MaxAllocations: 10000, MaxAllocationsPerUser: 30, MaxConnectionsPerIP: 32,
		UDPRequestRate: 50, UDPRequestBurst: 200, UDPRateLimitIPs: 65536},
	Webhooks: webhook.Config{URLs: []string{}, Secret: []byte{}, Timeout: 5 * time.Second, RetryMin: time.Second,
		RetryMax: 10 * time.Minute, MaxAge: 24 * time.Hour, Workers: 4, QueueSize: 4096},
	Metrics: stack.MetricsConfig{Enabled: true, Addr: "127.0.0.1:9090"},
	Log:     stack.LogConfig{Level: "info", Format: "text"},
}

// --- helpers ---

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// setenv sets environment variables (KEY=VALUE) for the test, which must
// therefore not be parallel: viper reads the process environment.
func setenv(t *testing.T, env []string) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// yamlLeaves flattens the embedded YAML with yaml.v3 (not viper) into
// dotted key → raw value.
func yamlLeaves(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(configs.Default(), &doc); err != nil {
		t.Fatalf("embedded YAML: %v", err)
	}
	out := map[string]any{}
	var walk func(m map[string]any, prefix string)
	walk = func(m map[string]any, prefix string) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(sub, prefix+k+".")
				continue
			}
			out[prefix+k] = v
		}
	}
	walk(doc, "")
	return out
}

// field returns the (settable) field of c holding key.
func field(t *testing.T, c *Config, key string) reflect.Value {
	t.Helper()
	var out reflect.Value
	stack.EachKey(reflect.ValueOf(c).Elem(), "", func(k string, f reflect.Value) {
		if k == key {
			out = f
		}
	})
	if !out.IsValid() {
		t.Fatalf("no Config field for key %q", key)
	}
	return out
}

// configErrors returns every *stack.ConfigError in err's tree.
func configErrors(err error) []*stack.ConfigError {
	var out []*stack.ConfigError
	var walk func(error)
	walk = func(e error) {
		if ce, ok := e.(*stack.ConfigError); ok {
			out = append(out, ce)
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// requireConfigError checks that err is a configuration error naming key,
// with a *stack.ConfigError for that key and a message containing every part.
func requireConfigError(t *testing.T, err error, key string, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one about %q", key)
	}
	if !errors.Is(err, stack.ErrInvalidConfig) {
		t.Errorf("error %q does not match stack.ErrInvalidConfig", err)
	}
	if errors.Is(err, pflag.ErrHelp) {
		t.Errorf("error %q matches pflag.ErrHelp", err)
	}
	for _, p := range append([]string{key}, parts...) {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
	if !slices.ContainsFunc(configErrors(err), func(ce *stack.ConfigError) bool { return ce.Key == key }) {
		t.Errorf("error %q has no *stack.ConfigError with Key %q", err, key)
	}
}

// --- the embedded file and the struct agree ---

func TestDefaults(t *testing.T) {
	t.Parallel()
	got, err := LoadConfig(nil)
	if err != nil {
		t.Fatalf("LoadConfig(nil): %v", err)
	}
	if !reflect.DeepEqual(got, wantDefaults) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, wantDefaults)
	}
	if err := wantDefaults.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	// The stack's own decoding of the embedded file (tests, bench) agrees.
	if def, err := stack.DefaultConfig(); err != nil || !reflect.DeepEqual(def, wantDefaults) {
		t.Errorf("stack.DefaultConfig:\n got %+v, %v\nwant %+v", def, err, wantDefaults)
	}
}

// TestDefaultsEqualYAML reads every value of the embedded YAML with yaml.v3
// and compares it with the loaded field.
func TestDefaultsEqualYAML(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	for key, raw := range yamlLeaves(t) {
		f := field(t, &cfg, key)
		var want any
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			want, err = time.ParseDuration(raw.(string))
			if err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			list := []string{}
			for _, e := range raw.([]any) {
				list = append(list, e.(string))
			}
			want = list
		case f.Type() == reflect.TypeFor[[]byte]():
			want = []byte(raw.(string))
		default:
			want = reflect.ValueOf(raw).Convert(f.Type()).Interface()
		}
		if got := f.Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: loaded %#v, YAML says %#v", key, got, want)
		}
	}
}

// TestEveryKeyHasComment scans the YAML text line by line: the line
// directly above every key is a non-empty comment at the same indentation
// (it is the key's --help text).
func TestEveryKeyHasComment(t *testing.T) {
	t.Parallel()
	keyLine := regexp.MustCompile(`^( *)([a-z0-9_]+):(.*)$`)
	lines := strings.Split(string(configs.Default()), "\n")
	var sections []string // section names by indentation level (2 spaces)
	seen := map[string]bool{}
	for i, line := range lines {
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		depth := len(m[1]) / 2
		sections = append(sections[:depth], m[2])
		key := strings.Join(sections, ".")
		if strings.TrimSpace(strings.SplitN(m[3], "#", 2)[0]) == "" {
			continue // a section
		}
		seen[key] = true
		if i == 0 {
			t.Errorf("key %q on the first line has no comment above it", key)
			continue
		}
		above := lines[i-1]
		if !strings.HasPrefix(above, m[1]+"# ") || len(strings.TrimSpace(strings.TrimPrefix(above, m[1]+"#"))) < 3 {
			t.Errorf("key %q (line %d): line above is %q, want a comment", key, i+1, above)
		}
	}
	for key := range yamlLeaves(t) {
		if !seen[key] {
			t.Errorf("key %q not found by the line scanner", key)
		}
	}
}

// --- sources and precedence ---

// TestPrecedence is not parallel: it sets environment variables.
func TestPrecedence(t *testing.T) {
	const file = `
server:
  addr: "127.0.0.1:9001"
  allowed_origins: ["https://file.example"]
signaling:
  default_timeout: 40s
limits:
  max_data_bytes: 1001
log:
  level: debug
`
	tests := []struct {
		name     string
		withFile bool
		env      []string
		args     []string
		want     func(*Config)
	}{
		{
			name: "defaults only",
			want: func(*Config) {},
		},
		{
			name:     "file overrides defaults",
			withFile: true,
			want: func(c *Config) {
				c.Server.Addr = "127.0.0.1:9001"
				c.Server.Web.AllowedOrigins = []string{"https://file.example"}
				c.Signaling.DefaultTimeout = 40 * time.Second
				c.Limits.Signaling.MaxDataBytes = 1001
				c.Log.Level = "debug"
			},
		},
		{
			name: "env overrides defaults",
			env: []string{
				"SWITCHBOARD_SERVER_ADDR=:9002",
				"SWITCHBOARD_AUTH_DEV=false",
				"SWITCHBOARD_AUTH_SECRET=" + strings.Repeat("s", 32),
				"SWITCHBOARD_LIMITS_MAX_DATA_BYTES=1002",
			},
			want: func(c *Config) {
				c.Server.Addr = ":9002"
				c.Auth.Dev = false
				c.Auth.Secret = []byte(strings.Repeat("s", 32))
				c.Limits.Signaling.MaxDataBytes = 1002
			},
		},
		{
			name:     "env overrides file",
			withFile: true,
			env: []string{
				"SWITCHBOARD_SERVER_ADDR=127.0.0.1:9002",
				"SWITCHBOARD_SERVER_ALLOWED_ORIGINS=https://env1.example, https://env2.example",
				"SWITCHBOARD_SIGNALING_DEFAULT_TIMEOUT=50s",
			},
			want: func(c *Config) {
				c.Server.Addr = "127.0.0.1:9002"
				c.Server.Web.AllowedOrigins = []string{"https://env1.example", "https://env2.example"}
				c.Signaling.DefaultTimeout = 50 * time.Second
				c.Limits.Signaling.MaxDataBytes = 1001
				c.Log.Level = "debug"
			},
		},
		{
			name:     "flag overrides env and file",
			withFile: true,
			env: []string{
				"SWITCHBOARD_SERVER_ADDR=127.0.0.1:9002",
				"SWITCHBOARD_LIMITS_MAX_DATA_BYTES=1002",
				"SWITCHBOARD_LOG_LEVEL=warn",
			},
			args: []string{
				"--server.addr", "127.0.0.1:9003",
				"--limits.max_data_bytes=1003",
				"--server.allowed_origins=*",
			},
			want: func(c *Config) {
				c.Server.Addr = "127.0.0.1:9003"
				c.Server.Web.AllowedOrigins = []string{"*"}
				c.Signaling.DefaultTimeout = 40 * time.Second
				c.Limits.Signaling.MaxDataBytes = 1003
				c.Log.Level = "warn"
			},
		},
		{
			name: "flag overrides env without file",
			env:  []string{"SWITCHBOARD_AUTH_DEV=false", "SWITCHBOARD_AUTH_SECRET=" + strings.Repeat("e", 40)},
			args: []string{"--auth.dev=true"},
			want: func(c *Config) {
				c.Auth.Secret = []byte(strings.Repeat("e", 40))
			},
		},
		{
			name: "foreign variables ignored",
			env: []string{
				"SWITCHBOARD_LOG_LEVEL=warn",
				"SWITCHBOARD_PORT=tcp://10.0.0.1:80", "SWITCHBOARD_SERVICE_HOST=10.0.0.1",
			},
			want: func(c *Config) { c.Log.Level = "warn" },
		},
		{
			name: "repeated list flag appends",
			args: []string{"--server.allowed_origins=https://a.example", "--server.allowed_origins", "https://b.example"},
			want: func(c *Config) { c.Server.Web.AllowedOrigins = []string{"https://a.example", "https://b.example"} },
		},
		{
			name:     "empty env list clears the file's list",
			withFile: true, env: []string{"SWITCHBOARD_SERVER_ALLOWED_ORIGINS="},
			want: func(c *Config) {
				c.Server.Addr = "127.0.0.1:9001"
				c.Server.Web.AllowedOrigins = []string{}
				c.Signaling.DefaultTimeout = 40 * time.Second
				c.Limits.Signaling.MaxDataBytes = 1001
				c.Log.Level = "debug"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, tt.env)
			args := slices.Clone(tt.args)
			if tt.withFile {
				args = append([]string{"--config", writeFile(t, "switchboard.yaml", file)}, args...)
			}
			got, err := LoadConfig(args)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			want := wantDefaults
			want.Server.Web.AllowedOrigins = slices.Clone(want.Server.Web.AllowedOrigins)
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestEveryKeyFromEveryLayer sets each key alone, to a value other than its
// default, through each layer, and checks it lands in its field. Not
// parallel: it sets environment variables.
func TestEveryKeyFromEveryLayer(t *testing.T) {
	for key, raw := range yamlLeaves(t) {
		f := field(t, &Config{}, key) // for the type only
		var (
			text   string // env and flag spelling
			inYAML string // file spelling
			want   any
		)
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			d, _ := time.ParseDuration(raw.(string))
			want = d + 3*time.Second
			text = want.(time.Duration).String()
			inYAML = text
		case f.Type() == reflect.TypeFor[[]byte]():
			want = []byte("sample-" + key)
			text, inYAML = "sample-"+key, strconv.Quote("sample-"+key)
		case f.Kind() == reflect.String:
			want = reflect.ValueOf("sample-" + key).Convert(f.Type()).Interface()
			text, inYAML = "sample-"+key, strconv.Quote("sample-"+key)
		case f.Kind() == reflect.Bool:
			want = !raw.(bool)
			text = strconv.FormatBool(want.(bool))
			inYAML = text
		case f.Kind() == reflect.Int, f.Kind() == reflect.Int64, f.Kind() == reflect.Float64:
			want = reflect.ValueOf(raw.(int) + 7).Convert(f.Type()).Interface()
			text = strconv.Itoa(raw.(int) + 7)
			inYAML = text
		case f.Kind() == reflect.Slice:
			want = []string{"https://a.example", "https://b.example"}
			text = "https://a.example,https://b.example"
			inYAML = `["https://a.example", "https://b.example"]`
		default:
			t.Fatalf("%s: no sample for type %s", key, f.Type())
		}
		section, leaf, _ := strings.Cut(key, ".")
		layers := map[string]struct {
			args, env []string
		}{
			"file": {args: []string{"--config", writeFile(t, "c.yaml", section+":\n  "+leaf+": "+inYAML+"\n")}},
			"env":  {env: []string{"SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")) + "=" + text}},
			"flag": {args: []string{"--" + key + "=" + text}},
		}
		for name, l := range layers {
			t.Run(key+"/"+name, func(t *testing.T) {
				setenv(t, l.env)
				cfg, err := loadConfig(l.args) // unvalidated: samples need not make sense
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				if got := field(t, &cfg, key).Interface(); !reflect.DeepEqual(got, want) {
					t.Errorf("got %#v, want %#v", got, want)
				}
			})
		}
	}
}

func TestConfigFileFormats(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, content string }{
		{"c.yaml", "server:\n  addr: \":7000\"\nlimits:\n  send_queue: 7\n"},
		{"c.yml", "server:\n  addr: \":7000\"\nlimits:\n  send_queue: 7\n"},
		{"c.conf", "server:\n  addr: \":7000\"\nlimits:\n  send_queue: 7\n"}, // unknown extension: YAML
		{"c.json", `{"server": {"addr": ":7000"}, "limits": {"send_queue": 7}}`},
		{"c.toml", "[server]\naddr = \":7000\"\n[limits]\nsend_queue = 7\n"},
		{"dotted.yaml", "server.addr: \":7000\"\nlimits.send_queue: 7\n"},
		{"empty-section.yaml", "server:\n  addr: \":7000\"\nlimits:\n  send_queue: 7\nlog:\n"},
		{"case.yaml", "Server:\n  Addr: \":7000\"\nLIMITS:\n  send_queue: 7\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// ":7000" is every interface, which dev mode may not use.
			cfg, err := LoadConfig([]string{"--config=" + writeFile(t, tt.name, tt.content), "--auth.dev=false", "--auth.secret=" + strings.Repeat("x", 32)})
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if cfg.Server.Addr != ":7000" || cfg.Limits.Web.SendQueue != 7 {
				t.Errorf("addr %q send_queue %d, want \":7000\" 7", cfg.Server.Addr, cfg.Limits.Web.SendQueue)
			}
			if cfg.Log != wantDefaults.Log {
				t.Errorf("log %+v, want defaults %+v", cfg.Log, wantDefaults.Log)
			}
		})
	}
	t.Run("empty file", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig([]string{"--config", writeFile(t, "empty.yaml", "")})
		if err != nil || !reflect.DeepEqual(cfg, wantDefaults) {
			t.Errorf("got %+v, %v; want defaults", cfg, err)
		}
	})
}

// --- errors ---

func TestUnknownKeyInFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content, key, suggestion string
	}{
		{"typo", "server:\n  adr: \":1\"\n", "server.adr", "server.addr"},
		{"unknown section", "bogus:\n  x: 1\n", "bogus.x", ""},
		{"top-level scalar", "verbose: true\n", "verbose", ""},
		{"section given a value", "server: 8080\n", "server", ""},
		{"key under a leaf", "limits:\n  max_data_bytes:\n    soft: 1\n", "limits.max_data_bytes.soft", "limits.max_data_bytes"},
		{"wrong section", "server:\n  path: x.db\n", "server.path", "store.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "bad.yaml", tt.content)
			_, err := LoadConfig([]string{"--config", path})
			requireConfigError(t, err, tt.key, `unknown config key "`+tt.key+`" in `+path)
			if tt.suggestion != "" && !strings.Contains(err.Error(), `did you mean "`+tt.suggestion+`"`) {
				t.Errorf("error %q does not suggest %q", err, tt.suggestion)
			}
		})
	}
	t.Run("all unknown keys reported", func(t *testing.T) {
		t.Parallel()
		_, err := LoadConfig([]string{"--config", writeFile(t, "bad.yaml", "a: 1\nb: 2\n")})
		requireConfigError(t, err, "a", `"a"`, `"b"`)
	})
}

// TestInvalidValues is not parallel: some cases set environment variables.
func TestInvalidValues(t *testing.T) {
	longSecret := strings.Repeat("k", 32)
	tests := []struct {
		name string
		file string // YAML for --config, if any
		env  []string
		args []string
		key  string
		msg  string // expected in the message besides the key
	}{
		// type errors, from each source
		{name: "file duration", file: "server:\n  ping_interval: soon\n", key: "server.ping_interval", msg: `want a duration such as "30s", got "soon"`},
		{name: "file bare number duration", file: "signaling:\n  default_timeout: 30\n", key: "signaling.default_timeout", msg: "want a duration"},
		{name: "file int", file: "limits:\n  max_invitees: many\n", key: "limits.max_invitees", msg: "invalid value"},
		{name: "file float int", file: "limits:\n  max_invitees: 1.5\n", key: "limits.max_invitees", msg: "want an integer"},
		{name: "file bool", file: "auth:\n  dev: yes\n", key: "auth.dev", msg: "invalid value"},
		{name: "file string", file: "server:\n  addr: 8080\n", key: "server.addr", msg: "invalid value"},
		{name: "file list", file: "server:\n  allowed_origins: [1]\n", key: "server.allowed_origins", msg: "invalid value"},
		{name: "file null", file: "log:\n  level:\n", key: "log.level", msg: "got nothing"},
		{name: "env duration", env: []string{"SWITCHBOARD_SERVER_PONG_TIMEOUT=1 minute"}, key: "server.pong_timeout", msg: "SWITCHBOARD_SERVER_PONG_TIMEOUT"},
		{name: "env int", env: []string{"SWITCHBOARD_LIMITS_MAX_DATA_BYTES=8k"}, key: "limits.max_data_bytes", msg: "SWITCHBOARD_LIMITS_MAX_DATA_BYTES"},
		{name: "env bool", env: []string{"SWITCHBOARD_AUTH_DEV=maybe"}, key: "auth.dev", msg: "SWITCHBOARD_AUTH_DEV"},
		{name: "flag duration", args: []string{"--server.write_timeout=fast"}, key: "server.write_timeout", msg: "invalid argument"},
		{name: "flag int", args: []string{"--limits.send_queue", "x"}, key: "limits.send_queue", msg: "invalid argument"},
		{name: "flag without value", args: []string{"--store.path"}, key: "store.path", msg: "needs an argument"},

		// value rules (validate)
		{name: "negative limit", file: "limits:\n  max_invitees: -1\n", key: "limits.max_invitees", msg: "must be a positive integer, got -1"},
		{name: "zero limit", env: []string{"SWITCHBOARD_LIMITS_SEND_QUEUE=0"}, key: "limits.send_queue", msg: "positive"},
		{name: "data above frame", args: []string{"--limits.max_data_bytes=70000"}, key: "limits.max_data_bytes", msg: "limits.max_frame_bytes"},
		{name: "seats above max", args: []string{"--limits.room_seats=51"}, key: "limits.room_seats", msg: "limits.max_room_seats"},
		{name: "addr without port", args: []string{"--server.addr=localhost"}, key: "server.addr", msg: "host:port"},
		{name: "addr bad port", args: []string{"--server.addr=:http"}, key: "server.addr", msg: "port"},
		{name: "addr port too big", args: []string{"--server.addr=:70000"}, key: "server.addr", msg: "0 to 65535"},
		{name: "origin with path", args: []string{"--server.allowed_origins=https://a.example/app"}, key: "server.allowed_origins", msg: "https://a.example/app"},
		{name: "origin without scheme", args: []string{"--server.allowed_origins=a.example"}, key: "server.allowed_origins", msg: "scheme"},
		{name: "tls cert without key", args: []string{"--server.tls_cert=c.pem"}, key: "server.tls_key", msg: "server.tls_cert"},
		{name: "tls key without cert", args: []string{"--server.tls_key=k.pem"}, key: "server.tls_cert", msg: "server.tls_key"},
		{name: "gc percent zero", args: []string{"--server.gc_percent=0"}, key: "server.gc_percent", msg: "got 0"},
		{name: "gc off without limit", args: []string{"--server.gc_percent=-1"}, key: "server.gc_percent", msg: "server.memory_limit_mb"},
		{name: "negative memory limit", args: []string{"--server.memory_limit_mb=-5"}, key: "server.memory_limit_mb", msg: "got -5"},
		{name: "zero shutdown", args: []string{"--server.shutdown_timeout=0s"}, key: "server.shutdown_timeout", msg: "positive"},
		{name: "negative write timeout", args: []string{"--server.write_timeout=-1s"}, key: "server.write_timeout", msg: "positive"},
		{name: "ping not below pong", args: []string{"--server.ping_interval=60s"}, key: "server.ping_interval", msg: "server.pong_timeout"},
		{name: "empty store path", env: []string{"SWITCHBOARD_STORE_PATH= "}, key: "store.path", msg: "empty"},
		{name: "negative commit wait", args: []string{"--store.commit_wait=-1ms"}, key: "store.commit_wait", msg: "got -1ms"},
		{name: "commit batch of one", args: []string{"--store.commit_batch=1"}, key: "store.commit_batch", msg: "got 1"},
		{name: "webhook url scheme", args: []string{"--webhooks.urls=ftp://x.example/h", "--webhooks.secret=" + longSecret}, key: "webhooks.urls", msg: "ftp://x.example/h"},
		{name: "webhook without secret", args: []string{"--webhooks.urls=https://x.example/h"}, key: "webhooks.secret", msg: "at least 32 bytes"},
		{name: "webhook retry max below min", args: []string{"--webhooks.retry_min=10s", "--webhooks.retry_max=5s"}, key: "webhooks.retry_max", msg: "webhooks.retry_min"},
		{name: "webhook zero timeout", args: []string{"--webhooks.timeout=0s"}, key: "webhooks.timeout", msg: "positive"},
		{name: "webhook zero workers", args: []string{"--webhooks.workers=0"}, key: "webhooks.workers", msg: "positive"},
		{name: "webhook zero queue", args: []string{"--webhooks.queue_size=0"}, key: "webhooks.queue_size", msg: "positive"},
		{name: "no secret outside dev", args: []string{"--auth.dev=false"}, key: "auth.secret", msg: "at least 32 bytes"},
		{name: "short secret outside dev", args: []string{"--auth.dev=false", "--auth.secret=" + longSecret[:31]}, key: "auth.secret", msg: "got 31"},
		{name: "zero dev token ttl", args: []string{"--auth.dev_token_ttl=0s"}, key: "auth.dev_token_ttl", msg: "positive"},
		{name: "fractional default timeout", args: []string{"--signaling.default_timeout=1500ms"}, key: "signaling.default_timeout", msg: "whole number of seconds"},
		{name: "sub-second max timeout", file: "signaling:\n  max_timeout: 500ms\n", key: "signaling.max_timeout", msg: "whole number of seconds"},
		{name: "zero default timeout", args: []string{"--signaling.default_timeout=0s"}, key: "signaling.default_timeout", msg: "at least 1s"},
		{name: "max below default", args: []string{"--signaling.max_timeout=20s"}, key: "signaling.max_timeout", msg: "signaling.default_timeout (30s)"},
		{name: "zero offline ttl", args: []string{"--signaling.offline_event_ttl=0s"}, key: "signaling.offline_event_ttl", msg: "positive"},
		{name: "zero connect timeout", args: []string{"--media.connect_timeout=0s"}, key: "media.connect_timeout", msg: "positive"},
		{name: "negative rejoin grace", args: []string{"--media.rejoin_grace=-1s"}, key: "media.rejoin_grace", msg: "not be negative"},
		{name: "unknown busy policy", args: []string{"--calls.busy_policy=queue"}, key: "calls.busy_policy", msg: "reject or ring"},
		{name: "bad nat ip", args: []string{"--media.nat1to1_ips=1.2.3"}, key: "media.nat1to1_ips", msg: "IP addresses"},
		{name: "bad ice server", args: []string{"--media.ice_servers=http://x"}, key: "media.ice_servers", msg: "stun:"},
		{name: "turn port out of range", args: []string{"--turn.udp_port=70000"}, key: "turn.udp_port", msg: "0-65535"},
		{name: "turn relay range reversed", args: []string{"--turn.relay_port_min=40000", "--turn.relay_port_max=30000"}, key: "turn.relay_port_max", msg: "turn.relay_port_min (40000)"},
		{name: "turn zero relay port", args: []string{"--turn.relay_port_min=0"}, key: "turn.relay_port_min", msg: "1-65535"},
		{name: "turn bad listen ip", args: []string{"--turn.listen_ip=localhost"}, key: "turn.listen_ip", msg: "IP address"},
		{name: "turn unspecified relay ip", args: []string{"--turn.relay_ip=0.0.0.0"}, key: "turn.relay_ip", msg: "reach"},
		{name: "turn host with port", args: []string{"--turn.host=turn.example.com:3478"}, key: "turn.host", msg: "host name"},
		{name: "turn empty realm", args: []string{"--turn.realm= "}, key: "turn.realm", msg: "empty"},
		{name: "turn short secret", args: []string{"--turn.secret=short"}, key: "turn.secret", msg: "got 5 bytes"},
		{name: "turn short ttl", args: []string{"--turn.credential_ttl=30s"}, key: "turn.credential_ttl", msg: "at least 1m"},
		{name: "turn zero max connections", args: []string{"--turn.max_connections=0"}, key: "turn.max_connections", msg: "positive integer"},
		{name: "turn zero max allocations", args: []string{"--turn.max_allocations=0"}, key: "turn.max_allocations", msg: "positive integer"},
		{name: "turn zero user quota", args: []string{"--turn.max_allocations_per_user=0"}, key: "turn.max_allocations_per_user", msg: "positive integer"},
		{name: "turn user quota above cap", args: []string{"--turn.max_allocations=10", "--turn.max_allocations_per_user=11"}, key: "turn.max_allocations_per_user", msg: "turn.max_allocations (10)"},
		{name: "turn zero per-IP connections", args: []string{"--turn.max_connections_per_ip=0"}, key: "turn.max_connections_per_ip", msg: "positive integer"},
		{name: "turn per-IP connections above cap", args: []string{"--turn.max_connections=10", "--turn.max_connections_per_ip=11"}, key: "turn.max_connections_per_ip", msg: "turn.max_connections (10)"},
		{name: "turn zero UDP rate", args: []string{"--turn.udp_request_rate=0"}, key: "turn.udp_request_rate", msg: "positive integer"},
		{name: "turn negative UDP burst", args: []string{"--turn.udp_request_burst=-1"}, key: "turn.udp_request_burst", msg: "positive integer"},
		{name: "turn zero rate-limited IPs", args: []string{"--turn.udp_rate_limit_ips=0"}, key: "turn.udp_rate_limit_ips", msg: "positive integer"},
		{name: "turn zero allocate timeout", args: []string{"--turn.allocate_timeout=0s"}, key: "turn.allocate_timeout", msg: "positive duration"},
		{name: "turn negative handshake timeout", args: []string{"--turn.tls_handshake_timeout=-1s"}, key: "turn.tls_handshake_timeout", msg: "positive duration"},
		{name: "turn without relay ip", args: []string{"--turn.enabled=true"}, key: "turn.relay_ip", msg: "media.listen_ip"},
		{name: "turn tls without cert", args: []string{"--turn.enabled=true", "--turn.relay_ip=127.0.0.1", "--turn.tls=true"}, key: "turn.tls", msg: "server.tls_cert"},
		{name: "turn udp port of media", args: []string{"--turn.enabled=true", "--turn.relay_ip=127.0.0.1", "--turn.udp_port=7882"}, key: "turn.udp_port", msg: "media.udp_port (7882)"},
		{name: "turn tcp port of server", args: []string{"--turn.enabled=true", "--turn.relay_ip=127.0.0.1", "--turn.tcp_port=8080"}, key: "turn.tcp_port", msg: "server.addr (8080)"},
		{name: "unknown log level", env: []string{"SWITCHBOARD_LOG_LEVEL=verbose"}, key: "log.level", msg: `"verbose"`},
		{name: "unknown log format", args: []string{"--log.format=xml"}, key: "log.format", msg: "text or json"},

		// cluster section
		{name: "cluster node ttl too short", args: []string{"--cluster.node_ttl=10ms"}, key: "cluster.node_ttl", msg: "below 30ms"},
		{name: "cluster op timeout above ttl/3", args: []string{"--cluster.op_timeout=2s"}, key: "cluster.op_timeout", msg: "node_ttl/3"},
		{name: "cluster timer lease below poll", args: []string{"--cluster.timer_lease=100ms"}, key: "cluster.timer_lease", msg: "timer_poll"},
		{name: "cluster zero stream batch", args: []string{"--cluster.stream_batch=0"}, key: "cluster.stream_batch", msg: "at least 1"},
		{name: "cluster without secret", args: []string{"--cluster.redis.addr=127.0.0.1:6379"}, key: "auth.secret", msg: "cluster mode"},
		{name: "cluster redis addr without port", args: []string{"--cluster.redis.addr=redis.internal", "--auth.secret=" + longSecret}, key: "cluster.redis.addr", msg: "host:port"},
		{name: "cluster redis negative db", args: []string{"--cluster.redis.addr=127.0.0.1:6379", "--cluster.redis.db=-1", "--auth.secret=" + longSecret}, key: "cluster.redis.db", msg: "negative"},
		{name: "cluster redis ca without tls", args: []string{"--cluster.redis.addr=127.0.0.1:6379", "--cluster.redis.ca_file=ca.pem", "--auth.secret=" + longSecret}, key: "cluster.redis.ca_file", msg: "tls is off"},
		{name: "cluster redis tls over unix", args: []string{"--cluster.redis.addr=unix:/run/redis.sock", "--cluster.redis.tls=true", "--auth.secret=" + longSecret}, key: "cluster.redis.tls", msg: "Unix socket"},
		{name: "cluster bad node id", args: []string{"--cluster.redis.addr=127.0.0.1:6379", "--cluster.node_id=node 1", "--auth.secret=" + longSecret}, key: "cluster.node_id", msg: `"node 1"`},
		{name: "cluster bad advertise addr", args: []string{"--cluster.redis.addr=127.0.0.1:6379", "--cluster.advertise_addr=10.0.0.5", "--auth.secret=" + longSecret}, key: "cluster.advertise_addr", msg: "host:port"},

		// the config file itself
		{name: "missing file", args: []string{"--config", "/nonexistent/switchboard.yaml"}, key: "config", msg: "/nonexistent/switchboard.yaml"},
		{name: "malformed file", file: "server: [unclosed\n", key: "config", msg: "config file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, tt.env)
			args := slices.Clone(tt.args)
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "bad.yaml", tt.file))
			}
			cfg, err := LoadConfig(args)
			requireConfigError(t, err, tt.key, tt.msg)
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("config returned with an error: %+v", cfg)
			}
		})
	}
}

// TestEveryLimitValidated makes sure a limit added later is checked too.
func TestEveryLimitValidated(t *testing.T) {
	t.Parallel()
	n := 0
	stack.EachKey(reflect.ValueOf(&wantDefaults).Elem(), "", func(key string, _ reflect.Value) {
		if !strings.HasPrefix(key, "limits.") {
			return
		}
		n++
		for _, bad := range []int{0, -5} {
			c := wantDefaults
			f := field(t, &c, key)
			f.Set(reflect.ValueOf(bad).Convert(f.Type()))
			requireConfigError(t, c.Validate(), key, "must be a positive integer")
		}
	})
	if want := len(slices.DeleteFunc(slices.Collect(func(yield func(string) bool) {
		for k := range yamlLeaves(t) {
			if !yield(k) {
				return
			}
		}
	}), func(k string) bool { return !strings.HasPrefix(k, "limits.") })); n != want {
		t.Errorf("%d limits checked, the YAML has %d", n, want)
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	t.Parallel()
	c := wantDefaults
	c.Server.Addr = "nope"
	c.Log.Level = "loud"
	c.Limits.Web.SendQueue = -1
	err := c.Validate()
	var keys []string
	for _, ce := range configErrors(err) {
		keys = append(keys, ce.Key)
	}
	slices.Sort(keys)
	if want := []string{"limits.send_queue", "log.level", "server.addr"}; !slices.Equal(keys, want) {
		t.Errorf("keys %v, want %v (error %q)", keys, want, err)
	}
}

func TestValidValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"any interface", []string{"--server.addr=:8080", "--auth.dev=false", "--auth.secret=" + strings.Repeat("x", 32)}},
		{"ipv6", []string{"--server.addr=[::1]:0"}},
		{"origins", []string{"--server.allowed_origins=*,https://a.example:8443,http://localhost:3000/"}},
		{"tls pair", []string{"--server.tls_cert=c.pem", "--server.tls_key=k.pem"}},
		{"production secret", []string{"--auth.dev=false", "--auth.secret=" + strings.Repeat("x", 32)}},
		{"max equals default", []string{"--signaling.max_timeout=30s"}},
		{"upper-case level", []string{"--log.level=WARN", "--log.format=JSON"}},
		{"upper-case busy policy", []string{"--calls.busy_policy=RING"}},
		{"stun and turn", []string{"--media.ice_servers=stun:stun.example.com:3478,turns:turn.example.com"}},
		{"turn on loopback", []string{"--turn.enabled=true", "--media.listen_ip=127.0.0.1"}},
		{"cluster node", []string{"--cluster.redis.addr=127.0.0.1:6379", "--cluster.node_id=n1", "--cluster.advertise_addr=10.0.0.5:8080", "--auth.secret=" + strings.Repeat("x", 32)}},
		{"cluster on a unix socket with dev tokens", []string{"--cluster.redis.addr=unix:/run/redis/redis.sock", "--auth.secret=" + strings.Repeat("x", 32)}},
		{"cluster over tls", []string{"--cluster.redis.addr=redis.example:6380", "--cluster.redis.tls=true", "--cluster.redis.ca_file=ca.pem", "--auth.secret=" + strings.Repeat("x", 32)}},
		{"cluster knobs unused standalone", []string{"--cluster.redis.db=-1"}},
		{"turn behind nat", []string{"--turn.enabled=true", "--media.nat1to1_ips=203.0.113.7", "--turn.host=turn.example.com",
			"--turn.tls=true", "--server.tls_cert=c.pem", "--server.tls_key=k.pem", "--turn.secret=" + strings.Repeat("s", 32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := LoadConfig(tt.args); err != nil {
				t.Errorf("LoadConfig(%q): %v", tt.args, err)
			}
		})
	}
}

// --- command line ---

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--server.addr=:1", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(args)
			if !errors.Is(err, pflag.ErrHelp) {
				t.Fatalf("got %v, want pflag.ErrHelp", err)
			}
			if errors.Is(err, stack.ErrInvalidConfig) {
				t.Errorf("help matches stack.ErrInvalidConfig")
			}
			var help *HelpError
			if !errors.As(err, &help) {
				t.Fatalf("got %T, want *HelpError", err)
			}
			docs, err := keyComments(configs.Default())
			if err != nil {
				t.Fatal(err)
			}
			for key := range yamlLeaves(t) {
				if !strings.Contains(help.Usage, "--"+key+" ") && !strings.Contains(help.Usage, "--"+key+"[") {
					t.Errorf("usage does not list --%s", key)
				}
				if docs[key] == "" || !strings.Contains(help.Usage, docs[key]) {
					t.Errorf("usage does not show the comment of %s (%q)", key, docs[key])
				}
			}
			for _, s := range []string{"Usage: switchboard", "--config", "SWITCHBOARD_SERVER_ADDR", `(default "127.0.0.1:8080")`, "Listen address"} {
				if !strings.Contains(help.Usage, s) {
					t.Errorf("usage does not contain %q:\n%s", s, help.Usage)
				}
			}
		})
	}
}

func TestBadCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown flag", []string{"--server.adr=:1"}, "unknown flag: --server.adr"},
		{"positional argument", []string{"serve"}, `unexpected argument "serve"`},
		{"bool with space", []string{"--auth.dev", "false"}, "--auth.dev=false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(tt.args)
			if !errors.Is(err, stack.ErrInvalidConfig) || errors.Is(err, pflag.ErrHelp) {
				t.Fatalf("got %v, want an stack.ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

// --- helpers for main ---

func TestLogConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg    stack.LogConfig
		level  slog.Level
		prefix string
	}{
		{stack.LogConfig{Level: "debug", Format: "text"}, slog.LevelDebug, "time="},
		{stack.LogConfig{Level: "info", Format: "json"}, slog.LevelInfo, "{"},
		{stack.LogConfig{Level: "WARN", Format: "JSON"}, slog.LevelWarn, "{"},
		{stack.LogConfig{Level: "error", Format: "text"}, slog.LevelError, "time="},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		h := tt.cfg.NewHandler(&buf)
		if h.Enabled(context.Background(), tt.level-1) || !h.Enabled(context.Background(), tt.level) {
			t.Errorf("%+v: not enabled from level %v exactly", tt.cfg, tt.level)
		}
		slog.New(h).Error("hello", "k", "v")
		if !strings.HasPrefix(buf.String(), tt.prefix) {
			t.Errorf("%+v: output %q, want prefix %q", tt.cfg, buf.String(), tt.prefix)
		}
	}
}

// TestClusterNodeConfigs: the three example node configs in configs/ load
// and validate, run in cluster mode on one Redis with one auth secret, and
// differ in node ID and in every port a node binds.
func TestClusterNodeConfigs(t *testing.T) {
	t.Parallel()
	seen := map[string]string{} // a value that must be unique → the file that has it
	var redis, secret string
	for i := 1; i <= 3; i++ {
		path := filepath.Join("..", "..", "configs", "cluster-node"+strconv.Itoa(i)+".yaml")
		cfg, err := LoadConfig([]string{"--config", path})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !cfg.Cluster.Enabled() || cfg.Cluster.NodeID == "" {
			t.Errorf("%s: not a cluster node: %+v", path, cfg.Cluster)
		}
		if i == 1 {
			redis, secret = cfg.Cluster.Redis.Addr, string(cfg.Auth.Secret)
		} else if cfg.Cluster.Redis.Addr != redis || string(cfg.Auth.Secret) != secret {
			t.Errorf("%s: Redis %q and secret differ from node 1's %q", path, cfg.Cluster.Redis.Addr, redis)
		}
		for _, v := range []string{"node " + cfg.Cluster.NodeID, "addr " + cfg.Server.Addr,
			"udp " + strconv.Itoa(cfg.Media.SFU.UDPPort), "addr " + cfg.Metrics.Addr} {
			if other, ok := seen[v]; ok {
				t.Errorf("%s: %s is also %s's", path, v, other)
			}
			seen[v] = path
		}
	}
}
