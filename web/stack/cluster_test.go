package stack_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

const clusterSecret = "stack-cluster-test-secret-0123456789"

// clusterConfig is testConfig in cluster mode on srv, as node.
func clusterConfig(t *testing.T, srv *redistest.Server, node string) stack.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Store.Path = "/nonexistent/never-opened.db" // cluster mode opens no SQLite
	cfg.Auth.Secret = []byte(clusterSecret)
	cfg.Cluster.NodeID = node
	cfg.Cluster.Redis.Addr = srv.ConfigAddr()
	cfg.Cluster.Redis.KeyPrefix = "st{" + t.Name() + "}:"
	cfg.Webhooks.URLs = []string{"http://127.0.0.1:9/hook"} // the queue in Redis
	cfg.Webhooks.Secret = []byte(clusterSecret)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// logSink is a log sink safe for the stack's goroutines.
type logSink struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newLogSink() *logSink { return &logSink{mu: make(chan struct{}, 1)} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.String()
}

// TestClusterStack: with cluster.redis.addr set, New builds a node on
// Redis (no SQLite: store.path is not opened), logs its node ID, keeps
// the signaling state, the call records and the webhook queue in Redis,
// and /healthz follows Redis's reachability (503 naming the address while
// it is down, 200 again once it is back). Close stops everything
// (goleak) and leaves the cluster.
func TestClusterStack(t *testing.T) {
	srv := redistest.Start(t)
	cfg := clusterConfig(t, srv, "n1")
	logs := newLogSink()
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.NodeID != "n1" || !strings.Contains(logs.String(), "node=n1") {
		t.Errorf("node ID %q, logs:\n%s", st.NodeID, logs)
	}
	if st.RoomRelay == nil || st.RoomRelay.NodeID() != "n1" {
		t.Errorf("cluster mode without the room relay (rooms/cluster)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- st.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	health := func() (int, string) {
		t.Helper()
		res, err := hc.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := health(); code != http.StatusOK {
		t.Fatalf("healthz with Redis up: %d %q", code, body)
	}

	// The state is in Redis: an invitation made through this node is read
	// by a second engine on the same Redis (another node).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, _, err := st.Auth.Issue("alice", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := client.Dial(ctx, "ws://"+ln.Addr().String()+"/ws", tok, client.WithPingInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Timeout: ptr(60)})
	if err != nil {
		t.Fatal(err)
	}
	// The node counts its shared transactions (cluster.op_lanes) in its
	// metrics (an operation alone, as this invite, runs in none).
	if st.Metrics == nil {
		t.Fatal("metrics off in the cluster config")
	}
	rec := httptest.NewRecorder()
	st.Metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, m := range []string{"switchboard_cluster_shared_tx_ops_total", "switchboard_cluster_shared_tx_execs_total"} {
		if !regexp.MustCompile(`(?m)^` + m + ` [0-9]`).MatchString(rec.Body.String()) {
			t.Errorf("%s not in the metrics:\n%s", m, grepLines(rec.Body.String(), "shared_tx"))
		}
	}
	other, err := signaling.NewEngine(ctx, signaling.Params{Config: cfg.Signaling, Logger: slog.New(slog.DiscardHandler),
		Cluster: &signaling.ClusterParams{Client: srv.Client(), Prefix: cfg.Cluster.Redis.KeyPrefix, NodeID: "n2", Config: cfg.Cluster.Knobs}})
	if err != nil {
		t.Fatal(err)
	}
	info, ok := other.Invitation(id)
	other.Close()
	if !ok || info.Inviter != "alice" {
		t.Fatalf("node n2 sees invitation %q as %+v, %v", id, info, ok)
	}
	// The calls' heartbeat (RedisRecords, per node) and the webhook
	// delivery of the invitation (RedisQueue; its URL refuses) land in
	// Redis.
	rdb := srv.Client()
	waitFor(t, "the node's call heartbeat in Redis", func() bool {
		return rdb.HGet(ctx, cfg.Cluster.Redis.KeyPrefix+"calls:hb", "n1").Val() != ""
	})
	waitFor(t, "a webhook delivery in Redis", func() bool {
		keys, err := redistest.Keys(ctx, rdb, cfg.Cluster.Redis.KeyPrefix+"wh:")
		return err == nil && len(keys) > 0
	})

	// Redis down: unhealthy, naming the address; back: healthy again.
	srv.Kill()
	code, body := health()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, srv.ConfigAddr()) {
		t.Errorf("healthz with Redis down: %d %q, want 503 naming %s", code, body, srv.ConfigAddr())
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for code, body = health(); code != http.StatusOK; code, body = health() {
		if time.Now().After(deadline) {
			t.Fatalf("healthz after Redis came back: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	_ = alice.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := st.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestClusterStackRedisDown: a node whose Redis does not answer fails to
// start with an error naming the address and the key, and leaves nothing
// running (goleak).
func TestClusterStackRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	cfg := clusterConfig(t, srv, "n1")
	srv.Kill()
	st, err := stack.New(context.Background(), stack.Params{Config: cfg})
	if err == nil {
		_ = st.Close()
		t.Fatal("New succeeded with Redis down")
	}
	for _, want := range []string{srv.ConfigAddr(), "cluster.redis.addr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestClusterStackGeneratedNodeID: with cluster.node_id empty each start
// gets a fresh ID, the host name and a random suffix.
func TestClusterStackGeneratedNodeID(t *testing.T) {
	srv := redistest.Start(t)
	cfg := clusterConfig(t, srv, "")
	var ids []string
	for range 2 {
		st, err := stack.New(context.Background(), stack.Params{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, st.NodeID)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if ids[0] == "" || ids[0] == ids[1] {
		t.Errorf("generated node IDs %q", ids)
	}
}

// TestClusterStackRefusesStore: a test store cannot stand in for Redis.
func TestClusterStackRefusesStore(t *testing.T) {
	srv := redistest.Start(t)
	cfg := clusterConfig(t, srv, "n1")
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Store: signaling.NewMemoryStore()})
	if err == nil {
		_ = st.Close()
		t.Fatal("New accepted a Store in cluster mode")
	}
}

func ptr[T any](v T) *T { return &v }

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
