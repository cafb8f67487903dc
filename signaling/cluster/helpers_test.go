package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// logBuf collects the log lines of a test, safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns the number of lines that contain all of subs.
func (b *logBuf) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// env is one Redis and what the tests build on it.
type env struct {
	t      *testing.T
	srv    *redistest.Server
	prefix string
	logs   *logBuf
	log    *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	logs := &logBuf{}
	e := &env{
		t: t, srv: redistest.Start(t), prefix: "t{" + t.Name() + "}:", logs: logs,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return e
}

// client returns a new client (with context deadlines honoured, as the
// primitives expect), closed when the test ends.
func (e *env) client() *redis.Client {
	opts := e.srv.Options()
	opts.ContextTimeoutEnabled = true
	opts.DialTimeout = 200 * time.Millisecond
	c := redis.NewClient(opts)
	e.t.Cleanup(func() { _ = c.Close() })
	// One connection open before the test's first call: that call (a
	// member's registration, which must succeed within op_timeout) does
	// not also pay the dial and handshake, which on a loaded machine take
	// longer than the tests' short op_timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		e.t.Fatalf("redis: %v", err)
	}
	return c
}

func (e *env) params(node string, cfg cluster.Config) cluster.Params {
	return cluster.Params{Client: e.client(), Prefix: e.prefix, NodeID: node, Logger: e.log, Config: cfg}
}

func (e *env) ks() cluster.Keyspace { return cluster.NewKeyspace(e.prefix, cluster.DefaultConfig()) }

// keys lists the test's keys (SCAN), without the prefix.
func (e *env) keys() []string {
	e.t.Helper()
	ks, err := redistest.Keys(context.Background(), e.srv.Client(), e.prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range ks {
		ks[i] = strings.TrimPrefix(ks[i], e.prefix)
	}
	return ks
}

// eventually polls cond every 10 ms until it returns "" or d passes.
func eventually(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fastConfig is a config with short periods for tests.
func fastConfig() cluster.Config {
	c := cluster.DefaultConfig()
	c.NodeTTL = 600 * time.Millisecond
	c.OpTimeout = 200 * time.Millisecond
	c.CleanupLease = 2 * time.Second
	c.TimerPoll = 50 * time.Millisecond
	c.TimerLease = time.Second
	c.MaxBackoff = 200 * time.Millisecond
	return c
}

// roundTrips counts the round trips of a client: one per command or
// pipeline sent, leaving out a new connection's handshake (HELLO, CLIENT
// SETINFO).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "client" {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// percentiles returns p50, p99 and max of ds.
func percentiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return
	}
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func hkeys(t *testing.T, c redis.UniversalClient, key string) []string {
	t.Helper()
	ks, err := c.HKeys(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ks)
	return ks
}

var _ = fmt.Sprint

func removeAll(dir string) error { return os.RemoveAll(dir) }
