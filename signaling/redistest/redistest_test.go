package redistest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitUp retries PING through c until it answers or the deadline passes:
// go-redis reconnects by itself, after its own dial back-off.
func waitUp(t *testing.T, c *redis.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if err = c.Ping(ctx).Err(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("the client did not reconnect: %v", err)
}

func TestUnixServerKillRestart(t *testing.T) {
	s := redistest.Start(t)
	if s.Network() != "unix" || s.ConfigAddr() != "unix:"+s.Addr() {
		t.Fatalf("Network %q, Addr %q, ConfigAddr %q", s.Network(), s.Addr(), s.ConfigAddr())
	}
	c := s.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	pid := s.PID()
	s.Kill()
	if s.Running() {
		t.Fatal("Running after Kill")
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after Kill")
	}
	// The process is gone, not just unreachable.
	if p, err := os.FindProcess(pid); err == nil {
		if err := p.Signal(nil); err == nil {
			t.Fatalf("process %d still exists after Kill", pid)
		}
	}
	s.Restart()
	if s.PID() == pid {
		t.Errorf("Restart kept PID %d", pid)
	}
	// The same client gets the value back: same socket, data from the AOF.
	waitUp(t, c)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET after kill and restart = %q, %v; want v", v, err)
	}
}

func TestTCPServerStopRestart(t *testing.T) {
	s := redistest.StartTCP(t, redistest.FsyncAlways())
	if s.Network() != "tcp" || s.ConfigAddr() != s.Addr() {
		t.Fatalf("Network %q, Addr %q, ConfigAddr %q", s.Network(), s.Addr(), s.ConfigAddr())
	}
	c := s.Client()
	ctx := t.Context()
	if err := c.RPush(ctx, "list", "a", "b").Err(); err != nil {
		t.Fatalf("RPUSH: %v", err)
	}
	s.Stop()
	s.Restart()
	waitUp(t, c)
	if v, err := c.LRange(ctx, "list", 0, -1).Result(); err != nil || !slices.Equal(v, []string{"a", "b"}) {
		t.Fatalf("LRANGE after stop and restart = %q, %v", v, err)
	}
}

// TestNoPersistence: a server without persistence comes back empty after
// a kill, on the same address.
func TestNoPersistence(t *testing.T) {
	s := redistest.Start(t, redistest.NoPersistence())
	c := s.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Kill()
	s.Restart()
	waitUp(t, c)
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after kill and restart: %v, want redis.Nil (nothing kept)", err)
	}
}

func TestPassword(t *testing.T) {
	s := redistest.Start(t, redistest.Password("s3cret"))
	if err := s.Client().Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING with the password: %v", err)
	}
	opts := s.Options()
	opts.Password = "wrong"
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err == nil {
		t.Fatal("PING with a wrong password succeeded")
	}
}

// TestServersAreSeparate: two servers of one test share nothing, and Keys
// finds a prefix's keys (escaping glob characters) and no others.
func TestServersAreSeparate(t *testing.T) {
	a, b := redistest.Start(t).Client(), redistest.Start(t).Client()
	ctx := t.Context()
	for _, k := range []string{"p*[x]:1", "p*[x]:2", "p*[y]:1", "px:1"} {
		if err := a.Set(ctx, k, "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := redistest.Keys(ctx, a, "p*[x]:")
	if err != nil || !slices.Equal(got, []string{"p*[x]:1", "p*[x]:2"}) {
		t.Errorf("Keys(p*[x]:) = %q, %v", got, err)
	}
	if got, err := redistest.Keys(ctx, b, ""); err != nil || len(got) != 0 {
		t.Errorf("the other server holds %q, %v", got, err)
	}
	if err := b.Get(ctx, "px:1").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET on the other server: %v, want redis.Nil", err)
	}
}

// TestCleanupKillsServer: a server started by a subtest is gone, and its
// directory removed, when the subtest ends.
func TestCleanupKillsServer(t *testing.T) {
	var pid int
	var dir string
	t.Run("sub", func(t *testing.T) {
		s := redistest.Start(t)
		pid, dir = s.PID(), s.Dir()
	})
	if p, err := os.FindProcess(pid); err == nil {
		if err := p.Signal(nil); err == nil {
			t.Errorf("process %d still exists after its test ended", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists (%v)", dir, err)
	}
}

// TestMissingBinary runs TestStartInChild in a child process whose PATH
// has no redis-server: without CI it skips saying how to install Redis,
// with CI=true it fails.
func TestMissingBinary(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{"", false, "--- SKIP: TestStartInChild"},
		{"true", true, "--- FAIL: TestStartInChild"},
	} {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestStartInChild$", "-test.v")
		cmd.Env = append(os.Environ(), "REDISTEST_CHILD=1", "PATH="+t.TempDir(), "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("CI=%q: child failed: %v, want %v\n%s", tc.ci, err, tc.wantFail, out)
		}
		for _, want := range []string{tc.want, "apt-get install -y redis-server"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("CI=%q: child output lacks %q:\n%s", tc.ci, want, out)
			}
		}
	}
}

func TestStartInChild(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") != "1" {
		t.Skip("run by TestMissingBinary")
	}
	redistest.Start(t)
	t.Error("Start returned without redis-server in PATH")
}
