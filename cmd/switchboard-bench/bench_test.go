package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
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

// TestSignalingRingLog: --ring-log writes one line per ring of both sides'
// windows and warmups, with the invite's send time inside the run; every
// measured setup rang inside its window, so each side has at least as many
// "window" lines as it counted setups.
func TestSignalingRingLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rings.txt")
	start := time.Now()
	res := runBench(t, "signaling", "--users", "40", "--callers", "4", "--duration", "1s", "--warmup", "300ms", "--rounds", "2", "--ring-log", path)
	end := time.Now()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[string]int{}
	phases := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 5 {
			t.Fatalf("line %q: want 5 fields", line)
		}
		side, round, phase := f[0], f[1], f[2]
		at, err1 := strconv.ParseInt(f[3], 10, 64)
		ms, err2 := strconv.ParseFloat(f[4], 64)
		switch {
		case side != "server" && side != "relay", round != "1" && round != "2", phase != "window" && phase != "warmup", err1 != nil, err2 != nil:
			t.Fatalf("line %q: bad field", line)
		case time.Unix(0, at).Before(start) || time.Unix(0, at).After(end), ms < 0:
			t.Fatalf("line %q: send time or latency out of the run", line)
		}
		phases[phase] = true
		if phase == "window" {
			measured[side]++
		}
	}
	for side, key := range map[string]string{"server": "setups_per_s", "relay": "relay_setups_per_s"} {
		setups := int(res[key].(float64) + 0.5) // --duration 1s: setups per second is the count
		if setups == 0 || measured[side] < setups {
			t.Errorf("%s: %d measured rings logged for %d setups", side, measured[side], setups)
		}
	}
	if !phases["warmup"] {
		t.Error("no warmup rings logged")
	}
}

// TestSignalingRoundsSpawn alternates relay and server windows with both in
// child processes: every window has setups, each (relay, server) pair has
// its ratios, and the relay's CPU is measured like the server's.
func TestSignalingRoundsSpawn(t *testing.T) {
	res := runBench(t, "signaling", "--spawn", "--users", "30", "--callers", "3", "--duration", "1500ms", "--warmup", "200ms", "--rounds", "3")
	if res["server"] != modeChild || res["rounds"] != 3.0 || res["window_s"] != 0.5 {
		t.Errorf("server %v rounds %v window_s %v", res["server"], res["rounds"], res["window_s"])
	}
	for _, k := range []string{"setups_per_s_windows", "relay_setups_per_s_windows", "relay_ratios", "relay_cpu_ratios"} {
		vs, ok := res[k].([]any)
		if !ok || len(vs) != 3 {
			t.Errorf("%s = %v, want 3 values", k, res[k])
			continue
		}
		for _, v := range vs {
			if x, ok := v.(float64); !ok || x <= 0 {
				t.Errorf("%s = %v, want positive values", k, res[k])
			}
		}
	}
	checkFigures(t, res,
		[]string{"server_cpu_ms_per_setup", "relay_cpu_ms_per_setup", "relay_cpu_ratio", "relay_cpu_ratio_median",
			"relay_ratio", "relay_ratio_median", "relay_ratio_min", "relay_ratio_max"},
		[]string{"errors", "relay_errors"})
	if lo, med, hi := res["relay_ratio_min"].(float64), res["relay_ratio_median"].(float64), res["relay_ratio_max"].(float64); lo > med || med > hi {
		t.Errorf("relay_ratio min %v median %v max %v", lo, med, hi)
	}
	if m := res["relay_cpu_method"].(string); !strings.Contains(m, "/proc") {
		t.Errorf("relay_cpu_method %q: want the child's /proc figures", m)
	}
}

// TestSignalingClusterTiny runs --cluster 2 (a real redis-server and two
// switchboard nodes built from this tree) and the standalone baseline at
// tiny scale: calls must complete, every one across nodes, with Redis
// doing the work.
func TestSignalingClusterTiny(t *testing.T) {
	if _, err := lookRedis("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	res := runBench(t, "signaling", "--cluster", "2", "--users", "40", "--callers", "4",
		"--duration", "2s", "--warmup", "500ms")
	if res["mode"] != "signaling" || res["server"] != modeCluster || res["cluster_nodes"] != 2.0 || res["redis_aof"] != "everysec" {
		t.Errorf("mode %v server %v cluster_nodes %v redis_aof %v", res["mode"], res["server"], res["cluster_nodes"], res["redis_aof"])
	}
	checkFigures(t, res,
		[]string{"setups", "setups_per_s", "ring_p50_ms", "ring_p99_ms", "accept_p50_ms", "accept_p99_ms",
			"bytes_per_conn", "node_cpu_ms_per_setup", "server_cpu_ms_per_setup",
			"redis_cmds_per_setup", "redis_round_trips_per_setup",
			"standalone_setups_per_s", "standalone_ring_p99_ms", "standalone_cpu_ms_per_setup", "cluster_ratio"},
		[]string{"errors", "standalone_errors", "relay_setups_per_s"})
	if res["cross_node_setups"] != res["setups"] {
		t.Errorf("cross_node_setups %v of %v setups: every caller and callee must be on different nodes", res["cross_node_setups"], res["setups"])
	}
	// The calls went through Redis: each setup is at least two optimistic
	// transactions (invite, accept) with the events appended to the
	// nodes' streams.
	perSetup := map[string]float64{}
	stats, _ := res["redis_commandstats"].([]any)
	for _, c := range stats {
		m, _ := c.(map[string]any)
		name, _ := m["cmd"].(string)
		perSetup[name], _ = m["calls_per_setup"].(float64)
	}
	for _, cmd := range []string{"exec", "xadd", "xread"} {
		if perSetup[cmd] < 1 {
			t.Errorf("redis %s calls per setup = %v, want at least 1 (commandstats %v)", cmd, perSetup[cmd], perSetup)
		}
	}
}

func TestParseRedisInfo(t *testing.T) {
	text := "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:120\r\n" +
		"total_reads_processed:40\r\ntotal_writes_processed:38\r\n\r\n# Commandstats\r\n" +
		"cmdstat_exec:calls=10,usec=200,usec_per_call=20.00,rejected_calls=0,failed_calls=1\r\n" +
		"cmdstat_xadd:calls=5,usec=15,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n"
	ri, err := parseRedisInfo(text)
	if err != nil {
		t.Fatal(err)
	}
	if ri.commands != 120 || ri.reads != 40 || ri.writes != 38 ||
		ri.cmds["exec"] != (cmdStat{calls: 10, usec: 200}) || ri.cmds["xadd"] != (cmdStat{calls: 5, usec: 15}) || len(ri.cmds) != 2 {
		t.Errorf("parsed %+v", ri)
	}
	before := redisInfo{commands: 100, reads: 30, writes: 30, cmds: map[string]cmdStat{"exec": {calls: 4, usec: 80}, "xadd": {calls: 5, usec: 15}}}
	d := counters{redis: ri}.sub(counters{redis: before}).redis
	if d.commands != 20 || d.reads != 10 || d.writes != 8 || len(d.cmds) != 1 || d.cmds["exec"] != (cmdStat{calls: 6, usec: 120}) {
		t.Errorf("delta %+v", d)
	}
	if _, err := parseRedisInfo("# Stats\r\ntotal_commands_processed:1\r\n"); err == nil {
		t.Error("INFO without the read and write counters parsed without error")
	}
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
		{"signaling", "--cluster", "1"},
		{"signaling", "--rounds", "0"},
		{"signaling", "--rounds", "10", "--duration", "500ms"},
		{"signaling", "--cluster", "2", "--redis-aof", "sometimes"},
		{"signaling", "--cluster", "2", "--sample", "1s"},
		{"signaling", "--cluster", "2", "--cpuprofile", "x"},
		{"signaling", "--cluster", "2", "--ring-log", "x"},
		{"media", "--cluster", "1"},
		{"media", "--cluster", "2", "--calls", "0"},
		{"media", "--cluster", "2", "--failover", "-1"},
		{"media", "--cluster", "2", "--redis-aof", "sometimes"},
		{"media", "--cluster", "2", "--memprofile", "x"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errOut.String())
		}
	}
}

// TestMediaClusterTiny runs media --cluster 2 (a real redis-server and
// switchboard nodes built from this tree; a third node for failover) and
// the standalone baseline with two timed calls each and one failover:
// every call must bring media to both parties, across nodes, with rooms
// relayed, and media must flow again after the media node's SIGKILL.
func TestMediaClusterTiny(t *testing.T) {
	if _, err := lookRedis("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	res := runBench(t, "media", "--cluster", "2", "--calls", "2", "--failover", "1", "--bitrate", "100000", "--fps", "10")
	if res["mode"] != "media" || res["server"] != modeCluster || res["cluster_nodes"] != 2.0 || res["failover_nodes"] != 3.0 {
		t.Errorf("mode %v server %v cluster_nodes %v failover_nodes %v", res["mode"], res["server"], res["cluster_nodes"], res["failover_nodes"])
	}
	checkFigures(t, res,
		[]string{"first_media_p50_ms", "first_media_max_ms", "standalone_first_media_p50_ms", "first_media_ratio",
			"relay_messages_per_call", "requests_per_call", "standalone_requests_per_call", "ws_frames_per_call", "standalone_ws_frames_per_call",
			"failover_p50_ms", "failover_exit_p50_ms", "failover_reentered_p50_ms", "failover_kills"},
		[]string{"first_media_errors", "standalone_first_media_errors", "failover_errors", "room_node_unknown"})
	if res["calls_done"] != 2.0 || res["cross_node_calls"] != 2.0 || res["standalone_calls_done"] != 2.0 || res["failover_calls"] != 1.0 {
		t.Errorf("calls_done %v cross_node_calls %v standalone_calls_done %v failover_calls %v, want 2, 2, 2, 1",
			res["calls_done"], res["cross_node_calls"], res["standalone_calls_done"], res["failover_calls"])
	}
	if res["relay_metric_present"] != true {
		t.Error("no node exposes " + metricRelay)
	}
	// The relay's traffic ran in the window of the timed calls; the
	// standalone server's WebSocket traffic for the same calls is no more
	// than the cluster's (the same client operations).
	if c, s := res["ws_frames_per_call"].(float64), res["standalone_ws_frames_per_call"].(float64); c < s/2 {
		t.Errorf("ws_frames_per_call %v against standalone %v: the cluster's calls lost messages", c, s)
	}
}

// TestParseMetrics reads the text format's sample lines and sums by labels.
func TestParseMetrics(t *testing.T) {
	text := "# HELP x y\n# TYPE switchboard_requests_total counter\n" +
		`switchboard_requests_total{op="call",result="ok"} 3` + "\n" +
		`switchboard_requests_total{op="enterRoom",result="ok"} 4` + "\n" +
		`switchboard_room_relay_messages_total{dir="sent",kind="request"} 5` + "\n" +
		`switchboard_room_relay_messages_total{dir="received",kind="request"} 5` + "\n" +
		`switchboard_room_relay_messages_total{dir="sent",kind="event"} 7` + "\n" +
		"go_goroutines 12\n"
	sc, err := parseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if got := sc.sum(metricRequests, nil); got != 7 {
		t.Errorf("requests %v, want 7", got)
	}
	if got := sc.sum(metricRelay, map[string]string{"dir": "sent"}); got != 12 {
		t.Errorf("relay sent %v, want 12", got)
	}
	if got := sc.labelValues(metricRelay, "kind"); !slices.Equal(got, []string{"event", "request"}) {
		t.Errorf("kinds %v", got)
	}
	if !sc.has("go_goroutines") || sc.has("nope") || sc.sum("go_goroutines", nil) != 12 {
		t.Errorf("go_goroutines: %+v", sc)
	}
	if _, err := parseMetrics("switchboard_x{a=\"b\"}\n"); err == nil {
		t.Error("a line without a value parsed")
	}
}

// TestFrameParser counts the data frames of a WebSocket stream after its
// HTTP head, whatever the chunks the stream arrives in: short, 16-bit and
// 64-bit lengths, masked or not, control frames not counted.
func TestFrameParser(t *testing.T) {
	frame := func(opcode byte, masked bool, n int) []byte {
		b := []byte{0x80 | opcode}
		m := byte(0)
		if masked {
			m = 0x80
		}
		switch {
		case n < 126:
			b = append(b, m|byte(n))
		case n < 1<<16:
			b = append(b, m|126, byte(n>>8), byte(n))
		default:
			b = append(b, m|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		}
		if masked {
			b = append(b, 1, 2, 3, 4)
		}
		return append(b, bytes.Repeat([]byte{'\r'}, n)...) // payload bytes that look like the head's end
	}
	var stream []byte
	stream = append(stream, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"...)
	stream = append(stream, frame(0x1, false, 5)...)
	stream = append(stream, frame(0x9, false, 0)...) // ping: not counted
	stream = append(stream, frame(0x1, true, 300)...)
	stream = append(stream, frame(0x2, false, 70000)...)
	stream = append(stream, frame(0x0, true, 1)...) // continuation
	stream = append(stream, frame(0x8, true, 2)...) // close: not counted
	for _, chunk := range []int{1, 3, 7, 64, 1 << 20} {
		var n atomic.Int64
		p := frameParser{n: &n}
		for b := stream; len(b) > 0; {
			k := min(chunk, len(b))
			p.feed(b[:k])
			b = b[k:]
		}
		if n.Load() != 4 {
			t.Errorf("chunks of %d: %d data frames, want 4", chunk, n.Load())
		}
	}
}
