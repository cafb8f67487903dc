package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// NodeID is the node ID the configuration gives: cluster.node_id, or the
// host name (what of it a node ID may hold) and a random suffix.
func (c ClusterConfig) nodeID() string {
	if c.NodeID != "" {
		return c.NodeID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	host = regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(host, "-")
	if len(host) > 48 {
		host = host[:48]
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return host + "-" + hex.EncodeToString(b[:])
}

// advertiseAddr is cluster.advertise_addr, or server.addr.
func (c Config) advertiseAddr() string {
	if c.Cluster.AdvertiseAddr != "" {
		return c.Cluster.AdvertiseAddr
	}
	return c.Server.Addr
}

// openRedis opens the cluster's Redis, failing with a message naming the
// address and the key when it cannot be used.
func openRedis(ctx context.Context, cfg ClusterConfig) (*redis.Client, error) {
	rdb, err := redisdb.Open(ctx, cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("cluster mode (cluster.redis.addr): %w", err) // it names the address
	}
	return rdb, nil
}

// redisHealth is /healthz's checker in cluster mode: a node that cannot
// reach Redis can do nothing, so it reports unhealthy and a load balancer
// takes it out until Redis answers again.
type redisHealth struct {
	rdb     redis.UniversalClient
	addr    string
	timeout time.Duration
}

// Health implements web.HealthChecker with a PING.
func (h redisHealth) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if err := h.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s unreachable: %w", h.addr, err)
	}
	return nil
}

// redisLogger routes go-redis's internal log lines (reconnects, pool
// problems) to slog, at warn level: go-redis logs only what went wrong.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// SetRedisLogger sends go-redis's own log lines to log (component
// "redis") instead of the standard logger's stderr. go-redis has one
// logger per process: the binary calls this once at start, before New;
// tests that run several stacks in one process leave it alone.
func SetRedisLogger(log *slog.Logger) {
	redis.SetLogger(redisLogger{log: log.With("component", "redis")})
}
