package stack

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
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
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// Config is the whole server configuration. Its mapstructure tags are the
// keys of configs/switchboard.yaml (the only place that gives defaults).
// Each package owns the struct of its keys; a section whose keys several
// packages use squashes their structs. Package fields tagged "-" take their
// value from another section and are filled by New.
type Config struct {
	Server    ServerConfig      `mapstructure:"server"`
	Store     StoreConfig       `mapstructure:"store"`
	Cluster   ClusterConfig     `mapstructure:"cluster"`
	Auth      web.AuthConfig    `mapstructure:"auth"`
	Signaling signaling.Config  `mapstructure:"signaling"`
	Limits    LimitsConfig      `mapstructure:"limits"`
	Calls     calls.Config      `mapstructure:"calls"`
	Media     MediaConfig       `mapstructure:"media"`
	TURN      turnserver.Config `mapstructure:"turn"`
	Webhooks  webhook.Config    `mapstructure:"webhooks"`
	Metrics   MetricsConfig     `mapstructure:"metrics"`
	Log       LogConfig         `mapstructure:"log"`
}

// ServerConfig is the server section: the listener, and web's connection
// settings.
type ServerConfig struct {
	Addr            string        `mapstructure:"addr"`
	TLSCert         string        `mapstructure:"tls_cert"`
	TLSKey          string        `mapstructure:"tls_key"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// GCPercent and MemoryLimitMB tune the Go garbage collector of the
	// process (runtime/debug SetGCPercent and SetMemoryLimit); the binary
	// sets them at start, in the place of GOGC and GOMEMLIMIT.
	GCPercent     int        `mapstructure:"gc_percent"`      // heap growth between collections, in %; -1: only the memory limit collects
	MemoryLimitMB int        `mapstructure:"memory_limit_mb"` // soft limit of the process's Go memory, MiB; 0: none
	Web           web.Config `mapstructure:",squash"`
}

// StoreConfig is the store section.
type StoreConfig struct {
	Path string `mapstructure:"path"` // SQLite database file
	// CommitWait and CommitBatch are the SQLite writer's group-commit wait
	// (signaling.SQLiteOptions): under load, a transaction of fewer than
	// CommitBatch calls waits up to CommitWait for more. 0: none.
	CommitWait  time.Duration `mapstructure:"commit_wait"`
	CommitBatch int           `mapstructure:"commit_batch"`
}

// ClusterConfig is the cluster section: cluster.redis.addr empty runs one
// standalone server on SQLite (store.path); set, the server is a node of a
// cluster whose state is in that Redis (signaling/CLUSTER-DESIGN.md).
type ClusterConfig struct {
	// NodeID names this node in the cluster (its keys, its event stream,
	// its call heartbeats); unique per node. "": the host name and a random
	// suffix, new at each start.
	NodeID string `mapstructure:"node_id"`
	// AdvertiseAddr is the signaling address this node advertises to the
	// other nodes and operators; "": server.addr.
	AdvertiseAddr string         `mapstructure:"advertise_addr"`
	Redis         redisdb.Config `mapstructure:"redis"`
	// Knobs are the cluster primitives' timings and batch sizes.
	Knobs cluster.Config `mapstructure:",squash"`
}

// Enabled reports whether the server runs as a node of a cluster.
func (c ClusterConfig) Enabled() bool { return c.Redis.Addr != "" }

// LimitsConfig is the limits section, made of the limits of each package.
type LimitsConfig struct {
	Signaling signaling.Limits `mapstructure:",squash"`
	Web       web.Limits       `mapstructure:",squash"`
	Rooms     rooms.Config     `mapstructure:",squash"`
	// MaxTracksPerParticipant is media.Config's field of the same name.
	MaxTracksPerParticipant int `mapstructure:"max_tracks_per_participant"`
}

// MediaConfig is the media section: the SFU's settings, and the ICE servers
// handed to clients (one STUN/TURN server entry with these URLs).
type MediaConfig struct {
	SFU           media.Config `mapstructure:",squash"`
	ICEServers    []string     `mapstructure:"ice_servers"`
	ICEUsername   string       `mapstructure:"ice_username"`
	ICECredential string       `mapstructure:"ice_credential"`
	// ConnectTimeout is rooms.Config's field of the same name.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// RejoinGrace is rooms.Config's field of the same name.
	RejoinGrace time.Duration `mapstructure:"rejoin_grace"`
}

// MetricsConfig is the metrics section.
type MetricsConfig struct {
	Enabled bool   `mapstructure:"enabled"`
	Addr    string `mapstructure:"addr"` // separate /metrics listener; "": on server.addr
}

// LogConfig is the log section.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn or error
	Format string `mapstructure:"format"` // text or json
}

// LogLevels are the values of log.level.
var LogLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

// NewHandler returns a text or JSON slog handler writing to w at the
// configured level (case-insensitive; unknown levels log at info).
func (l LogConfig) NewHandler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: LogLevels[strings.ToLower(l.Level)]}
	if strings.EqualFold(l.Format, "json") {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// DecodeHook converts configuration values to their fields' types, for
// mapstructure with WeaklyTypedInput off: strings (environment variables,
// YAML) to durations (Go syntax), numbers and booleans; comma-separated strings to
// lists, items trimmed and empty ones dropped; strings to []byte. It refuses
// what mapstructure would otherwise accept silently: a bare number as a
// duration, a fraction as an integer.
func DecodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		strictHook,
		listHook,
		mapstructure.StringToBasicTypeHookFunc(),
	)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	stringsType  = reflect.TypeFor[[]string]()
	bytesType    = reflect.TypeFor[[]byte]()
)

func strictHook(from, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType && from.Kind() == reflect.String:
		d, err := time.ParseDuration(strings.TrimSpace(data.(string)))
		if err != nil {
			return nil, fmt.Errorf(`want a duration such as "30s", got %q`, data)
		}
		return d, nil
	case to == durationType && from != durationType:
		return nil, fmt.Errorf(`want a duration such as "30s", got %v`, data)
	case to.Kind() == reflect.Int || to.Kind() == reflect.Int64:
		if f, ok := data.(float64); ok && (f != math.Trunc(f) || math.IsInf(f, 0)) {
			return nil, fmt.Errorf("want an integer, got %v", f)
		}
	case to == bytesType && from.Kind() == reflect.String:
		return []byte(data.(string)), nil
	}
	return data, nil
}

func listHook(from, to reflect.Type, data any) (any, error) {
	if to != stringsType {
		return data, nil
	}
	var items []string
	switch v := data.(type) {
	case string:
		items = strings.Split(v, ",")
	case []string:
		items = v
	default:
		return data, nil
	}
	out := []string{}
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out, nil
}

// DefaultConfig decodes the embedded configs/switchboard.yaml, as cmd does
// before applying the user's file, environment and flags. Tests and the
// bench start from it; it fails only if the embedded file is broken (which
// this package's tests catch).
func DefaultConfig() (Config, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(configs.Default(), &raw); err != nil {
		return Config{}, fmt.Errorf("embedded config: %w", err)
	}
	var cfg Config
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: DecodeHook(), ErrorUnused: true, Result: &cfg,
	})
	if err != nil {
		return Config{}, err
	}
	if err := dec.Decode(raw); err != nil {
		return Config{}, fmt.Errorf("embedded config: %w", err)
	}
	return cfg, nil
}
