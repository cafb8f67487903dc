package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the children the bench starts from
// its own executable (idle users, bare forwarder).
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(m.Run())
}

// runBench runs the command and returns its RESULT, failing on a non-zero
// exit or a missing RESULT line.
func runBench(t *testing.T, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := lines[len(lines)-1]
	js, ok := strings.CutPrefix(last, "RESULT ")
	if !ok {
		t.Fatalf("last line is not RESULT: %q\nstdout:\n%s", last, stdout.String())
	}
	if n := strings.Count(stdout.String(), "RESULT "); n != 1 {
		t.Fatalf("%d RESULT lines", n)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("RESULT is not JSON: %v: %s", err, js)
	}
	t.Logf("%s", stdout.String())
	return res
}

// checkFigures fails unless every key is present, the positive ones are
// above zero and the zero ones are zero.
func checkFigures(t *testing.T, res map[string]any, positive, zero []string) {
	t.Helper()
	for _, k := range positive {
		v, ok := res[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, res[k])
		}
	}
	for _, k := range zero {
		if v, ok := res[k].(float64); !ok || v != 0 {
			t.Errorf("%s = %v, want 0", k, res[k])
		}
	}
}

func TestSignalingTiny(t *testing.T) {
	res := runBench(t, "signaling", "--users", "50", "--callers", "5", "--duration", "2s", "--warmup", "500ms")
	if res["mode"] != "signaling" || res["server"] != modeInProcess {
		t.Errorf("mode %v server %v", res["mode"], res["server"])
	}
	checkFigures(t, res,
		[]string{"setups_per_s", "ring_p50_ms", "ring_p99_ms", "accept_p50_ms", "accept_p99_ms",
			"bytes_per_conn", "relay_setups_per_s", "relay_ratio", "relay_bytes_per_conn"},
		[]string{"errors", "relay_errors"})
}

func TestMediaTiny(t *testing.T) {
	res := runBench(t, "media", "--rooms", "1", "--publishers", "1", "--subscribers", "1",
		"--bitrate", "100000", "--fps", "10", "--duration", "2s", "--warmup", "500ms", "--calls", "1")
	if res["mode"] != "media" || res["server"] != modeInProcess {
		t.Errorf("mode %v server %v", res["mode"], res["server"])
	}
	checkFigures(t, res,
		[]string{"forwarded_pps", "server_cpu_s_per_mpkt", "pps_per_core", "bare_pps_per_core", "p50_ms", "p99_ms",
			"bare_forwarded_pps", "bare_cpu_s_per_mpkt", "cpu_ratio", "first_media_ms", "first_keyframe_ms"},
		[]string{"errors", "bare_errors", "first_media_errors"})
	for _, k := range []string{"loss_pct", "bare_loss_pct"} {
		if v, ok := res[k].(float64); !ok || v > 5 {
			t.Errorf("%s = %v, want at most 5", k, res[k])
		}
	}
}

func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"signaling", "--users", "10", "--callers", "10"},
		{"media", "--rooms", "0"},
		{"media", "--spawn", "--server-bin", "/bin/true"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errOut.String())
		}
	}
}
