package main

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines, then removes the server binary
// that the process tests built (35 MB in the temp dir per run otherwise).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binPath != "" {
			_ = os.RemoveAll(filepath.Dir(binPath))
		}
		os.Exit(code)
	}))
}

// TestRunServesAndShutsDown starts the real server (SQLite, SFU, rooms,
// calls, transport) on loopback, checks /healthz, and stops it cleanly.
func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	code := make(chan int, 1)
	var out, errs bytes.Buffer
	go func() {
		code <- run(ctx, []string{"--server.addr=127.0.0.1:0", "--store.path=" + filepath.Join(t.TempDir(), "sb.db"),
			"--media.udp_port=0", "--media.listen_ip=127.0.0.1", "--log.level=warn", "--metrics.addr=127.0.0.1:0"}, &out, &errs, func(a string) { addr <- a })
	}()
	var a string
	select {
	case a = <-addr:
	case c := <-code:
		t.Fatalf("exited with %d: %s", c, errs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	res, err := oneShot.Get("http://" + a + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", res, err)
	}
	res.Body.Close()
	res, err = oneShot.Get("http://" + a + "/api/dev/token?user=alice")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("dev token: %v %v", res, err)
	}
	res.Body.Close()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d: %s", c, errs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop")
	}
}

// TestRunSetsGC (issue 16): the binary tunes the garbage collector from
// server.gc_percent and server.memory_limit_mb, so that nobody has to export
// GOGC or GOMEMLIMIT.
func TestRunSetsGC(t *testing.T) {
	prevPercent := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(prevPercent)
		debug.SetMemoryLimit(prevLimit)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	code := make(chan int, 1)
	var out, errs bytes.Buffer
	go func() {
		code <- run(ctx, []string{"--server.addr=127.0.0.1:0", "--store.path=" + filepath.Join(t.TempDir(), "sb.db"),
			"--media.udp_port=0", "--media.listen_ip=127.0.0.1", "--log.level=warn", "--metrics.addr=127.0.0.1:0",
			"--server.gc_percent=250", "--server.memory_limit_mb=3000"}, &out, &errs, func(a string) { addr <- a })
	}()
	select {
	case <-addr:
	case c := <-code:
		t.Fatalf("exited with %d: %s", c, errs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	if got := debug.SetGCPercent(250); got != 250 {
		t.Errorf("GC percent %d, want server.gc_percent 250", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 3000<<20 {
		t.Errorf("memory limit %d, want server.memory_limit_mb 3000 MiB (%d)", got, 3000<<20)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d: %s", c, errs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop")
	}
}

func TestRunExitCodes(t *testing.T) {
	var out, errs bytes.Buffer
	if c := run(context.Background(), []string{"--limits.max_data_bytes=-1"}, &out, &errs, nil); c != 2 {
		t.Fatalf("invalid config: exit %d, want 2 (%s)", c, errs.String())
	}
	if !bytes.Contains(errs.Bytes(), []byte("limits.max_data_bytes")) {
		t.Fatalf("the message does not name the key: %s", errs.String())
	}
	out.Reset()
	if c := run(context.Background(), []string{"--help"}, &out, &errs, nil); c != 0 || !bytes.Contains(out.Bytes(), []byte("--server.addr")) {
		t.Fatalf("--help: exit %d, output %q", c, out.String())
	}
	errs.Reset()
	if c := run(context.Background(), []string{"--auth.dev=false", "--auth.secret=short"}, &out, &errs, nil); c != 2 {
		t.Fatalf("short secret outside dev: exit %d", c)
	}
}
