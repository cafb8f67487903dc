package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

type sigOptions struct {
	server   serverFlags
	users    int
	callers  int
	duration time.Duration
	warmup   time.Duration
	rate     float64
	sample   time.Duration // soak: sample the server's resources this often (0: off)
	noRelay  bool          // soak: skip the relay baseline run
	rounds   int           // relay and server windows alternated this many times

	cluster  int    // --cluster N: N nodes on one Redis against a standalone server (0: off)
	redisBin string // redis-server binary for --cluster
	redisAOF string // the Redis persistence for --cluster: everysec, always or off
	// standaloneFirst: --cluster runs the standalone baseline before the
	// cluster (to alternate the order over several invocations).
	standaloneFirst bool

	cpuProfile  string // in-process: CPU profile over the server's windows
	heapProfile string // in-process: in-use heap once the idle users are connected
	memProfile  string // in-process: allocations over the server's windows
	ringLog     string // every measured call's invite time and ring latency, per window (standalone)
}

func (o *sigOptions) flags(out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("switchboard-bench signaling", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.users, "users", 10000, "connected users in all: the callers and callees plus idle users")
	fs.IntVar(&o.callers, "callers", 200, "concurrent caller/callee pairs calling in a loop")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measurement window of each run (server, then relay)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "calls placed before the window opens, not measured")
	fs.Float64Var(&o.rate, "rate", 0, "call setups per second over all pairs; 0: as fast as the pairs go")
	fs.DurationVar(&o.sample, "sample", 0, "soak: sample the server's memory, goroutines and fds this often during the run (0: off)")
	fs.IntVar(&o.rounds, "rounds", 3, "alternate relay and server windows this many times (relay, server, relay, …), each --duration/rounds long after its own --warmup; relay_ratio_median is the median of the pairs' ratios; --cluster runs one window per side")
	fs.BoolVar(&o.noRelay, "no-relay", false, "soak: skip the relay baseline (relay figures are then 0)")
	fs.IntVar(&o.cluster, "cluster", 0, "run N (at least 2) switchboard nodes on one redis-server, each caller and its callee on different nodes, then a standalone server as the baseline (instead of the relay); 0: off")
	fs.StringVar(&o.redisBin, "redis-bin", "redis-server", "--cluster: the redis-server binary (looked up in PATH)")
	fs.BoolVar(&o.standaloneFirst, "standalone-first", false, "--cluster: run the standalone baseline before the cluster instead of after")
	fs.StringVar(&o.redisAOF, "redis-aof", "everysec", "--cluster: Redis persistence: everysec or always (appendonly yes with that appendfsync), or off (no persistence)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "in-process only: write a CPU profile from the server's first window to the end of its last to this file (samples labelled side=server|client)")
	fs.StringVar(&o.memProfile, "memprofile", "", "in-process only: write the allocation profile at the end of the server's last window to this file and at the start of its first to FILE.base (go tool pprof -base FILE.base; the relay's windows in between allocate only the clients')")
	fs.StringVar(&o.heapProfile, "heapprofile", "", "in-process only: write the in-use heap profile once the idle users are connected to this file, and before they connect to FILE.base")
	fs.StringVar(&o.ringLog, "ring-log", "", "write one line per ring to this file: side (server|relay), round, phase (window: measured; warmup), the invite's send time (unix ns) and its ring latency in ms, to line a slow window up with the server's own logs (e.g. GODEBUG=gctrace=1); not with --cluster")
	o.server.register(fs)
	return fs
}

func (o *sigOptions) validate() error {
	switch {
	case o.callers < 1:
		return errors.New("--callers must be at least 1")
	case o.users < 2*o.callers:
		return fmt.Errorf("--users (%d) must be at least 2 × --callers (%d): every pair is two connected users", o.users, o.callers)
	case o.duration <= 0 || o.warmup < 0 || o.rate < 0:
		return errors.New("--duration must be positive, --warmup and --rate not negative")
	case o.rounds < 1 || o.rounds > 100:
		return errors.New("--rounds must be 1 to 100")
	case o.duration/time.Duration(o.rounds) < 100*time.Millisecond:
		return errors.New("--duration/--rounds must be at least 100ms")
	case o.duration > time.Hour || o.warmup > time.Hour:
		return errors.New("--duration and --warmup are capped at 1h")
	case (o.cpuProfile != "" || o.heapProfile != "" || o.memProfile != "") && (o.server.childMode() || o.cluster != 0):
		return errors.New("--cpuprofile, --memprofile and --heapprofile profile the in-process server: not with --spawn, --server-bin or --cluster")
	case o.cluster == 1 || o.cluster < 0 || o.cluster > maxClusterNodes:
		return fmt.Errorf("--cluster must be 0 (off) or 2 to %d nodes", maxClusterNodes)
	case o.cluster != 0 && o.sample > 0:
		return errors.New("--sample (soak) is for one server, not with --cluster")
	case o.cluster != 0 && o.ringLog != "":
		return errors.New("--ring-log is for one server, not with --cluster")
	case o.redisAOF != "everysec" && o.redisAOF != "always" && o.redisAOF != "off":
		return fmt.Errorf("--redis-aof %q: want everysec, always or off", o.redisAOF)
	}
	return o.server.validate()
}

// sigResult is the RESULT of signaling mode.
type sigResult struct {
	Mode         string  `json:"mode"`
	Server       string  `json:"server"`
	Users        int     `json:"users"`
	IdleUsers    int     `json:"idle_users"`
	Callers      int     `json:"callers"`
	DurationS    float64 `json:"duration_s"`
	WarmupS      float64 `json:"warmup_s"`
	Rate         float64 `json:"rate"`
	SetupsPerS   float64 `json:"setups_per_s"`
	RingP50      float64 `json:"ring_p50_ms"`
	RingP99      float64 `json:"ring_p99_ms"`
	AcceptP50    float64 `json:"accept_p50_ms"`
	AcceptP99    float64 `json:"accept_p99_ms"`
	Errors       int64   `json:"errors"`
	BytesPerConn float64 `json:"bytes_per_conn"`
	MemMethod    string  `json:"bytes_per_conn_method"`
	ServerCPUS   float64 `json:"server_cpu_s"`
	CPUPerSetup  float64 `json:"server_cpu_ms_per_setup"`
	CPUMethod    string  `json:"server_cpu_method"`

	RelaySetupsPerS   float64 `json:"relay_setups_per_s"`
	RelayRingP50      float64 `json:"relay_ring_p50_ms"`
	RelayRingP99      float64 `json:"relay_ring_p99_ms"`
	RelayAcceptP50    float64 `json:"relay_accept_p50_ms"`
	RelayAcceptP99    float64 `json:"relay_accept_p99_ms"`
	RelayErrors       int64   `json:"relay_errors"`
	RelayBytesPerConn float64 `json:"relay_bytes_per_conn"`
	RelayRatio        float64 `json:"relay_ratio"`

	// The alternated windows (see --rounds): the rates of each window in
	// the order run, the ratio of each (relay, server) pair of windows and
	// their median and extremes; CPU per setup of the relay, and the relay's
	// CPU per setup over the server's (pooled and per pair).
	Rounds              int       `json:"rounds"`
	WindowS             float64   `json:"window_s"`
	ServerWindows       []float64 `json:"setups_per_s_windows"`
	RelayWindows        []float64 `json:"relay_setups_per_s_windows"`
	ServerP99s          []float64 `json:"ring_p99_ms_windows"`
	RelayP99s           []float64 `json:"relay_ring_p99_ms_windows"`
	LoadStart           float64   `json:"load_start"` // 1-minute load average (/proc/loadavg), 0 if unknown
	LoadEnd             float64   `json:"load_end"`
	RelayRatios         []float64 `json:"relay_ratios"`
	RelayRatioMedian    float64   `json:"relay_ratio_median"`
	RelayRatioMin       float64   `json:"relay_ratio_min"`
	RelayRatioMax       float64   `json:"relay_ratio_max"`
	RelayCPUS           float64   `json:"relay_cpu_s"`
	RelayCPUPerSet      float64   `json:"relay_cpu_ms_per_setup"`
	RelayCPUMethod      string    `json:"relay_cpu_method"`
	RelayCPURatio       float64   `json:"relay_cpu_ratio"`
	RelayCPURatios      []float64 `json:"relay_cpu_ratios"`
	RelayCPURatioMedian float64   `json:"relay_cpu_ratio_median"`
	RelayCPURatioMin    float64   `json:"relay_cpu_ratio_min"`
	RelayCPURatioMax    float64   `json:"relay_cpu_ratio_max"`

	Soak        []soakSample `json:"soak_samples,omitempty"`
	SoakSummary *soakSummary `json:"soak,omitempty"`

	*clusterResult // --cluster only: its fields are in the same object
}

// loadResult is what one run of the call loop measured.
type loadResult struct {
	setups       int64
	ring, accept []float64 // ms, calls whose invite was sent in the window
	rings        []ringRec // every ring of the run, warmup included (for --ring-log)
	errors       int64
	firstErr     error
	window       time.Duration
	bytesPerConn float64
	cpu          time.Duration // server CPU over the window (server run only)
	delta        counters      // the counters' change over the window (server run only)
	crossSetups  int64         // setups whose caller and callee were on different nodes
	benchCPU     time.Duration // this process's CPU over the window (the pairs' clients)
}

func runSignaling(ctx context.Context, o sigOptions, stdout, stderr io.Writer) (*sigResult, error) {
	if o.cluster != 0 {
		return runSignalingCluster(ctx, o, stdout, stderr)
	}
	idle := o.users - 2*o.callers
	rounds := o.rounds
	if o.noRelay {
		rounds = 1
	}
	// This process holds, at most, the server's end of every connection
	// (in-process) and both ends of the active pairs; the relay's end of
	// its connections is in the relay's child process.
	if err := raiseFileLimit(uint64(o.users + 6*o.callers + 1024)); err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "signaling: starting server (%s)…\n", modeName(o.server))
	// In-process, the server's goroutines (and those they start) carry the
	// profiler label side=server, the clients' side=client.
	var srv *server
	var err error
	pprof.Do(ctx, pprof.Labels("side", "server"), func(ctx context.Context) {
		srv, err = startServer(ctx, o.server, stderr)
	})
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	defer func() {
		if srv != nil {
			if err := srv.stop(); err != nil {
				fmt.Fprintln(stderr, "signaling: server stop:", err)
			}
		}
	}()
	fmt.Fprintf(stderr, "signaling: server %s at %s; connecting %d idle users…\n", srv.mode, srv.wsURL, idle)
	var sm *sampler
	if o.sample > 0 {
		sm = startSampler(srv, o.sample)
	}
	// Both targets are set up first (the server's idle users, then the
	// relay's: each one's memory is measured while only its own connect),
	// then the windows alternate, relay first.
	var main, base *preparedTarget
	pprof.Do(ctx, pprof.Labels("side", "client"), func(ctx context.Context) {
		main, err = prepareTarget(ctx, o, idle, sigTarget{
			wsURL: srv.wsURL, secret: srv.secret, memory: srv.memory, counters: srv.counters,
			heap: o.heapProfile,
			newDriver: func(ctx context.Context, _ int, caller, callee string) (*pair, error) {
				return dialServerPair(ctx, srv, srv, caller, callee)
			},
		}, stderr)
	})
	if main != nil {
		defer main.close(stderr)
	}
	if err != nil {
		return nil, fmt.Errorf("server run: %w", err)
	}
	var rl *server
	if !o.noRelay {
		fmt.Fprintf(stderr, "signaling: relay baseline (child process); connecting %d idle users…\n", idle)
		rl, err = startRelayTarget(ctx)
		if err != nil {
			return nil, fmt.Errorf("start relay: %w", err)
		}
		defer func() {
			if err := rl.stop(); err != nil {
				fmt.Fprintln(stderr, "signaling: relay stop:", err)
			}
		}()
		base, err = prepareTarget(ctx, o, idle, sigTarget{
			wsURL: rl.wsURL, memory: rl.memory, counters: rl.counters,
			newDriver: func(ctx context.Context, _ int, caller, callee string) (*pair, error) {
				return dialRelayPair(ctx, rl.wsURL, caller, callee)
			},
		}, stderr)
		if base != nil {
			defer base.close(stderr)
		}
		if err != nil {
			return nil, fmt.Errorf("relay run: %w", err)
		}
	}

	// The windows: relay, server, relay, server, … each --duration/rounds
	// long after its own --warmup. The CPU profile spans the server's
	// windows (the relay's windows in between add only client samples, or
	// none when the relay is a child).
	wo := o
	wo.duration = o.duration / time.Duration(rounds)
	prof := &spanProfile{p: &windowProfile{cpu: o.cpuProfile, mem: o.memProfile}}
	rlog, err := openRingLog(o.ringLog)
	if err != nil {
		return nil, err
	}
	defer rlog.close(stderr)
	var sums, relaySums loadResult
	var pairRatios, pairCPURatios, srvRates, relayRates, srvP99s, relayP99s []float64
	loadStart := loadAverage()
	for r := range rounds {
		var rw *loadResult
		if base != nil {
			fmt.Fprintf(stderr, "signaling: round %d/%d: relay window, %v + %v warmup…\n", r+1, rounds, wo.duration, wo.warmup)
			rw = &loadResult{}
			if err := runLoad(ctx, wo, base.pairs, base.tg.counters, nil, rw); err != nil {
				return nil, fmt.Errorf("relay run: %w", err)
			}
			relaySums.add(rw)
			rlog.write("relay", r+1, rw)
			relayRates = append(relayRates, float64(rw.setups)/wo.duration.Seconds())
			relayP99s = append(relayP99s, round3(percentile(rw.ring, 99)))
		}
		fmt.Fprintf(stderr, "signaling: round %d/%d: server window, %v + %v warmup…\n", r+1, rounds, wo.duration, wo.warmup)
		sw := &loadResult{}
		prof.last = r == rounds-1
		err = nil
		pprof.Do(ctx, pprof.Labels("side", "client"), func(ctx context.Context) {
			err = runLoad(ctx, wo, main.pairs, main.tg.counters, prof, sw)
		})
		if err != nil {
			return nil, fmt.Errorf("server run: %w", err)
		}
		sums.add(sw)
		rlog.write("server", r+1, sw)
		srvRates = append(srvRates, float64(sw.setups)/wo.duration.Seconds())
		srvP99s = append(srvP99s, round3(percentile(sw.ring, 99)))
		if rw != nil {
			pairRatios = append(pairRatios, round3(ratio(float64(sw.setups), float64(rw.setups))))
			pairCPURatios = append(pairCPURatios, round3(ratio(perSetup(rw), perSetup(sw))))
		}
	}
	sums.bytesPerConn = main.bytesPerConn
	if base != nil {
		relaySums.bytesPerConn = base.bytesPerConn
	}
	var samples []soakSample
	if sm != nil {
		samples = sm.finish()
	}

	secs := o.duration.Seconds()
	res := &sigResult{
		Mode: "signaling", Server: srv.mode, Users: o.users, IdleUsers: idle, Callers: o.callers,
		DurationS: secs, WarmupS: o.warmup.Seconds(), Rate: o.rate,
		SetupsPerS:   round3(float64(sums.setups) / secs),
		RingP50:      round3(percentile(sums.ring, 50)),
		RingP99:      round3(percentile(sums.ring, 99)),
		AcceptP50:    round3(percentile(sums.accept, 50)),
		AcceptP99:    round3(percentile(sums.accept, 99)),
		Errors:       sums.errors,
		BytesPerConn: round3(sums.bytesPerConn),
		MemMethod:    srv.memoryMethod() + ", idle users connected from a child process",
		ServerCPUS:   round3(sums.cpu.Seconds()),
		CPUPerSetup:  round3(perSetup(&sums)),
		CPUMethod:    cpuMethod(srv),

		RelaySetupsPerS:   round3(float64(relaySums.setups) / secs),
		RelayRingP50:      round3(percentile(relaySums.ring, 50)),
		RelayRingP99:      round3(percentile(relaySums.ring, 99)),
		RelayAcceptP50:    round3(percentile(relaySums.accept, 50)),
		RelayAcceptP99:    round3(percentile(relaySums.accept, 99)),
		RelayErrors:       relaySums.errors,
		RelayBytesPerConn: round3(relaySums.bytesPerConn),

		Rounds:         rounds,
		WindowS:        wo.duration.Seconds(),
		ServerWindows:  roundAll(srvRates),
		RelayWindows:   roundAll(relayRates),
		ServerP99s:     srvP99s,
		RelayP99s:      relayP99s,
		LoadStart:      loadStart,
		LoadEnd:        loadAverage(),
		RelayRatios:    pairRatios,
		RelayCPUS:      round3(relaySums.cpu.Seconds()),
		RelayCPUPerSet: round3(perSetup(&relaySums)),
		RelayCPUMethod: "-",
		RelayCPURatios: pairCPURatios,
	}
	res.RelayRatio = round3(ratio(res.SetupsPerS, res.RelaySetupsPerS))
	res.RelayRatioMedian, res.RelayRatioMin, res.RelayRatioMax = spread(pairRatios)
	res.RelayCPURatio = round3(ratio(res.RelayCPUPerSet, res.CPUPerSetup))
	res.RelayCPURatioMedian, res.RelayCPURatioMin, res.RelayCPURatioMax = spread(pairCPURatios)
	if rl != nil {
		res.RelayCPUMethod = cpuMethod(rl)
	}
	if sm != nil {
		res.Soak = samples
		res.SoakSummary = summarize(samples, o.warmup)
	}

	fmt.Fprintf(stdout, "switchboard-bench signaling: server %s, %d users (%d idle), %d pairs, rate %s, %d rounds of (relay, server) windows of %v, each after a warmup of %v\n\n",
		srv.mode, o.users, idle, o.callers, rateName(o.rate), rounds, wo.duration, o.warmup)
	t := newTable(stdout, "figure", "switchboard", "relay", "unit")
	t.row("setups", f(res.SetupsPerS), f(res.RelaySetupsPerS), "calls/s (all windows of the side)")
	t.row("setups per window", floats(res.ServerWindows), floats(res.RelayWindows), "calls/s, in the order run")
	t.row("ring p50", f(res.RingP50), f(res.RelayRingP50), "ms (invite sent → ring at callee)")
	t.row("ring p99", f(res.RingP99), f(res.RelayRingP99), "ms")
	t.row("ring p99 per window", floats(res.ServerP99s), floats(res.RelayP99s), "ms, in the order run")
	t.row("accept p50", f(res.AcceptP50), f(res.RelayAcceptP50), "ms (accept sent → onInviteeAccepted at caller)")
	t.row("accept p99", f(res.AcceptP99), f(res.RelayAcceptP99), "ms")
	t.row("errors", fmt.Sprint(res.Errors), fmt.Sprint(res.RelayErrors), "failed or timed-out calls")
	t.row("memory per idle conn", f(res.BytesPerConn), f(res.RelayBytesPerConn), "bytes (server: "+srv.memoryMethod()+"; relay: "+relayMemoryMethod(rl)+")")
	t.row("CPU in windows", f(res.ServerCPUS), f(res.RelayCPUS), "s (server: "+res.CPUMethod+"; relay: "+res.RelayCPUMethod+")")
	t.row("CPU per setup", f(res.CPUPerSetup), f(res.RelayCPUPerSet), "ms")
	t.flush()
	fmt.Fprintf(stdout, "\nload average (1 min): %s at the first window, %s at the end\n", f(res.LoadStart), f(res.LoadEnd))
	fmt.Fprintf(stdout, "relay_ratio = setups_per_s / relay_setups_per_s = %s\n", f(res.RelayRatio))
	if len(pairRatios) > 0 {
		fmt.Fprintf(stdout, "relay_ratio per (relay, server) pair of windows: %s; median %s (min %s, max %s)\n",
			floats(pairRatios), f(res.RelayRatioMedian), f(res.RelayRatioMin), f(res.RelayRatioMax))
		fmt.Fprintf(stdout, "relay_cpu_ratio = relay CPU per setup / server CPU per setup = %s; per pair %s; median %s (min %s, max %s)\n",
			f(res.RelayCPURatio), floats(pairCPURatios), f(res.RelayCPURatioMedian), f(res.RelayCPURatioMin), f(res.RelayCPURatioMax))
	}
	if sums.firstErr != nil {
		fmt.Fprintf(stdout, "first error: %v\n", sums.firstErr)
	}
	if sm != nil {
		printSoak(stdout, samples, res.SoakSummary)
	}
	return res, nil
}

func relayMemoryMethod(rl *server) string {
	if rl == nil {
		return "-"
	}
	return rl.memoryMethod()
}

// loadAverage is the machine's 1-minute load average, 0 if unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0
	}
	return v
}

// perSetup is a window's CPU per setup in ms (0 without setups).
func perSetup(r *loadResult) float64 { return ratio(ms(r.cpu), float64(r.setups)) }

// add adds a window's figures to r.
func (r *loadResult) add(w *loadResult) {
	r.setups += w.setups
	r.ring = append(r.ring, w.ring...)
	r.accept = append(r.accept, w.accept...)
	r.errors += w.errors
	if r.firstErr == nil {
		r.firstErr = w.firstErr
	}
	r.window += w.window
	r.cpu += w.cpu
	r.crossSetups += w.crossSetups
}

// spread returns the median, min and max of vs (0s when empty).
func spread(vs []float64) (med, lo, hi float64) {
	if len(vs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return round3(med), s[0], s[n-1]
}

func roundAll(vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = round3(v)
	}
	return out
}

// floats formats vs for the table.
func floats(vs []float64) string {
	if len(vs) == 0 {
		return "-"
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = f(v)
	}
	return strings.Join(parts, " ")
}

// spanProfile runs one CPU profile over several windows: from the start of
// the first to the end of the one marked last.
type spanProfile struct {
	p       *windowProfile
	started bool
	last    bool // the next window is the last: stop ends the profile
}

func (s *spanProfile) start() error {
	if s.started {
		return nil
	}
	s.started = true
	return s.p.start()
}

func (s *spanProfile) stop() error {
	if !s.last {
		return nil
	}
	return s.p.stop()
}

func modeName(f serverFlags) string {
	if f.childMode() {
		return modeChild
	}
	return modeInProcess
}

func rateName(r float64) string {
	if r == 0 {
		return "max"
	}
	return fmt.Sprintf("%g/s", r)
}

func cpuMethod(s *server) string {
	if s.pid != 0 {
		return "child /proc/<pid>/stat utime+stime"
	}
	return "getrusage(RUSAGE_SELF): includes the bench's clients"
}

// sigTarget is what the call loop runs against: the server, a cluster or
// the relay.
type sigTarget struct {
	wsURL    string
	wsURLs   []string // a cluster's nodes, over which idle users are spread (nil: wsURL)
	secret   []byte   // nil: the relay (?user=)
	memory   func() (uint64, error)
	counters func() (counters, error) // nil: not measured
	prof     windowHooks              // nil: no CPU profile of the window
	heap     string                   // "": no heap profiles around the idle users' connection
	// settle, if set, returns once the server finished the work the idle
	// users' connections started (a cluster's attach continues on Redis
	// after the WebSocket handshake), so that the window measures setups,
	// not the tail of the connection storm.
	settle    func(ctx context.Context, stderr io.Writer) error
	newDriver func(ctx context.Context, i int, caller, callee string) (*pair, error)
}

// Timeouts of the call loop: every wait is bounded.
const (
	pairDialTimeout = 30 * time.Second
	callStepTimeout = 10 * time.Second
	pairDialers     = 16
)

// runTarget measures one target: memory per idle connection, then the call
// loop.
func runTarget(ctx context.Context, o sigOptions, idle int, tg sigTarget, stderr io.Writer) (*loadResult, error) {
	pt, err := prepareTarget(ctx, o, idle, tg, stderr)
	if pt != nil {
		defer pt.close(stderr)
	}
	if err != nil {
		return nil, err
	}
	res := &loadResult{bytesPerConn: pt.bytesPerConn}
	fmt.Fprintf(stderr, "signaling: calling for %v + %v warmup…\n", o.duration, o.warmup)
	err = runLoad(ctx, o, pt.pairs, tg.counters, tg.prof, res)
	return res, err
}

// preparedTarget is a target with its idle users connected and its pairs
// dialed, ready for windows of the call loop.
type preparedTarget struct {
	tg           sigTarget
	idle         *idleUsers
	pairs        []*pair
	bytesPerConn float64
}

// close hangs up the pairs and the idle users.
func (pt *preparedTarget) close(stderr io.Writer) {
	for _, p := range pt.pairs {
		p.close()
	}
	if pt.idle != nil {
		if err := pt.idle.stop(); err != nil {
			fmt.Fprintln(stderr, "signaling: idle users:", err)
		}
	}
}

// prepareTarget connects the idle users (measuring the memory they cost),
// then the pairs. On error the returned target, if not nil, must still be
// closed.
func prepareTarget(ctx context.Context, o sigOptions, idle int, tg sigTarget, stderr io.Writer) (*preparedTarget, error) {
	pt := &preparedTarget{tg: tg}
	if idle > 0 {
		before, err := tg.memory()
		if err != nil {
			return nil, err
		}
		if err := writeHeap(suffixed(tg.heap, ".base")); err != nil {
			return nil, err
		}
		urls := tg.wsURLs
		if urls == nil {
			urls = []string{tg.wsURL}
		}
		iu, rep, err := startIdleUsers(ctx, urls, tg.secret, idle)
		if err != nil {
			return nil, err
		}
		pt.idle = iu
		if rep.Failed > 0 {
			return pt, fmt.Errorf("%d of %d idle users failed to connect; first error: %s", rep.Failed, idle, rep.FirstErr)
		}
		time.Sleep(500 * time.Millisecond) // let the handlers settle
		if tg.settle != nil {
			if err := tg.settle(ctx, stderr); err != nil {
				return pt, err
			}
		}
		after, err := tg.memory()
		if err != nil {
			return pt, err
		}
		pt.bytesPerConn = (float64(after) - float64(before)) / float64(idle)
		if err := writeHeap(tg.heap); err != nil {
			return pt, err
		}
	}

	fmt.Fprintf(stderr, "signaling: connecting %d caller/callee pairs…\n", o.callers)
	pairs, err := dialPairs(ctx, o.callers, tg.newDriver)
	pt.pairs = pairs
	return pt, err
}

// writeHeap writes the in-use heap profile, after a GC, to path ("": none).
func writeHeap(path string) error {
	if path == "" {
		return nil
	}
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	return errors.Join(err, f.Close())
}

func dialPairs(ctx context.Context, n int, dial func(ctx context.Context, i int, caller, callee string) (*pair, error)) ([]*pair, error) {
	pairs := make([]*pair, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	dctx, cancel := context.WithTimeout(ctx, pairDialTimeout)
	defer cancel()
	for range pairDialers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				p, err := dial(dctx, i, fmt.Sprintf("caller%05d", i), fmt.Sprintf("callee%05d", i))
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				pairs[i] = p
			}
		})
	}
	wg.Wait()
	var out []*pair
	for _, p := range pairs {
		if p != nil {
			out = append(out, p)
		}
	}
	if firstErr != nil {
		return out, fmt.Errorf("connecting pairs: %w", firstErr)
	}
	return out, nil
}

// pair is one caller and one callee and how they talk: the server's
// protocol or the relay's frames. Both use signaling/client.
type pair struct {
	caller, callee     *client.Client
	callerID, calleeID string
	// crossNode: caller and callee are connected to different nodes of a
	// cluster.
	crossNode bool
	// invite sends the call; for the server it waits for the reply.
	invite func(ctx context.Context, seq int) (inviteID string, err error)
	// accept answers the ring.
	accept func(ctx context.Context, inviteID string) error

	inviteAt atomic.Int64 // unix ns: when the current invite was sent
	acceptAt atomic.Int64 // unix ns: when the current accept was sent

	// Written by the caller goroutine only, kept over windows.
	seq int

	// Written by the callee goroutine only.
	ring  []float64
	rings []ringRec // every ring, warmup included (for --ring-log)
	// Written by the caller goroutine only.
	accepted []float64
	setups   int64
	errors   int64
	firstErr error
}

// reset clears the figures of the last window.
func (p *pair) reset() {
	p.ring, p.rings, p.accepted = nil, nil, nil
	p.setups, p.errors, p.firstErr = 0, 0, nil
}

func (p *pair) close() {
	_ = p.caller.Close()
	_ = p.callee.Close()
}

// dialServerPair connects a pair to Switchboard with signed tokens: the
// caller to callerSrv, the callee to calleeSrv (the same server, or two
// nodes of a cluster).
func dialServerPair(ctx context.Context, callerSrv, calleeSrv *server, caller, callee string) (*pair, error) {
	dial := func(s *server, user string) (*client.Client, error) {
		tok, _, err := s.auth.Issue(user, "", 24*time.Hour)
		if err != nil {
			return nil, err
		}
		return client.Dial(ctx, s.wsURL, tok)
	}
	cr, err := dial(callerSrv, caller)
	if err != nil {
		return nil, err
	}
	ce, err := dial(calleeSrv, callee)
	if err != nil {
		_ = cr.Close()
		return nil, err
	}
	timeout := 30
	p := &pair{caller: cr, callee: ce, callerID: caller, calleeID: callee, crossNode: callerSrv != calleeSrv}
	p.invite = func(ctx context.Context, _ int) (string, error) {
		return cr.Invite(ctx, protocol.InviteArgs{Invitee: callee, Data: `{"bench":1}`, Timeout: &timeout})
	}
	p.accept = func(ctx context.Context, inviteID string) error {
		return ce.Accept(ctx, inviteID, "")
	}
	return p, nil
}

// relayFrame is the relay's frame: an event frame of the server's shape
// with a "to" member that the relay routes on.
type relayFrame struct {
	To    string `json:"to"`
	Event string `json:"event"`
	Data  any    `json:"data"`
}

// dialRelayPair connects a pair to the relay. The caller pushes the same
// onReceiveNewInvitation the server would send the callee, and the callee
// the onInviteeAccepted the server would send the caller.
func dialRelayPair(ctx context.Context, relayURL, caller, callee string) (*pair, error) {
	dial := func(user string) (*client.Client, error) {
		return client.Dial(ctx, relayURL+"?user="+url.QueryEscape(user), "")
	}
	cr, err := dial(caller)
	if err != nil {
		return nil, err
	}
	ce, err := dial(callee)
	if err != nil {
		_ = cr.Close()
		return nil, err
	}
	p := &pair{caller: cr, callee: ce, callerID: caller, calleeID: callee}
	p.invite = func(ctx context.Context, seq int) (string, error) {
		id := fmt.Sprintf("%s-%d", caller, seq)
		frame, err := json.Marshal(relayFrame{To: callee, Event: protocol.EvReceiveNewInvitation, Data: protocol.NewInvitationEvent{
			InviteID: id, Inviter: caller, InviteeList: []string{callee}, Data: `{"bench":1}`, Timeout: 30, TimeoutMs: 30000,
		}})
		if err != nil {
			return "", err
		}
		return id, cr.SendRaw(ctx, frame)
	}
	p.accept = func(ctx context.Context, inviteID string) error {
		frame, err := json.Marshal(relayFrame{To: caller, Event: protocol.EvInviteeAccepted, Data: protocol.InviteeEvent{
			InviteID: inviteID, Invitee: callee,
		}})
		if err != nil {
			return err
		}
		return ce.SendRaw(ctx, frame)
	}
	return p, nil
}

// windowHooks start and stop what runs over a window (a CPU profile).
type windowHooks interface {
	start() error
	stop() error
}

// runLoad runs every pair's caller and callee loops for warmup + duration
// and gathers the figures of the calls inside the window.
func runLoad(ctx context.Context, o sigOptions, pairs []*pair, read func() (counters, error), prof windowHooks, res *loadResult) error {
	if prof == nil {
		prof = (*windowProfile)(nil)
	}
	for _, p := range pairs {
		p.reset()
	}
	start := time.Now()
	winStart := start.Add(o.warmup)
	winEnd := winStart.Add(o.duration)
	lctx, cancel := context.WithDeadline(ctx, winEnd.Add(callStepTimeout))
	defer cancel()

	var tokens <-chan struct{}
	if o.rate > 0 {
		tokens = pace(lctx, o.rate, len(pairs))
	}
	var cStart, cEnd counters
	var bStart, bEnd time.Duration
	var profErr error
	var cpuWG sync.WaitGroup
	cpuWG.Go(func() {
		if !sleepUntil(lctx, winStart) {
			return
		}
		var err error
		if read != nil {
			cStart, err = read()
		}
		bStart, _ = selfCPU()
		profErr = errors.Join(err, prof.start())
		sleepUntil(lctx, winEnd)
		bEnd, _ = selfCPU()
		if read != nil && lctx.Err() == nil {
			cEnd, err = read()
			profErr = errors.Join(profErr, err)
		}
		profErr = errors.Join(profErr, prof.stop())
	})

	var callers, callees sync.WaitGroup
	calleeCtx, stopCallees := context.WithCancel(lctx)
	defer stopCallees()
	for _, p := range pairs {
		callees.Go(func() { p.calleeLoop(calleeCtx, winStart, winEnd) })
		callers.Go(func() { p.callerLoop(lctx, tokens, winStart, winEnd) })
	}
	callers.Wait()
	stopCallees()
	callees.Wait()
	cpuWG.Wait()

	res.window = o.duration
	res.delta = cEnd.sub(cStart)
	res.cpu = res.delta.cpu
	res.benchCPU = bEnd - bStart
	for _, p := range pairs {
		res.setups += p.setups
		if p.crossNode {
			res.crossSetups += p.setups
		}
		res.errors += p.errors
		res.ring = append(res.ring, p.ring...)
		res.rings = append(res.rings, p.rings...)
		res.accept = append(res.accept, p.accepted...)
		if res.firstErr == nil && p.firstErr != nil {
			res.firstErr = p.firstErr
		}
	}
	return profErr
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pace hands out rate tokens per second; at most burst wait unclaimed, so a
// pair that falls behind does not build an unbounded backlog.
func pace(ctx context.Context, rate float64, burst int) <-chan struct{} {
	ch := make(chan struct{}, burst)
	go func() {
		const tick = time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		var issued float64
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				due := now.Sub(start).Seconds() * rate
				for ; issued+1 <= due; issued++ {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return ch
}

func (p *pair) fail(err error) {
	p.errors++
	if p.firstErr == nil {
		p.firstErr = err
	}
}

// callerLoop places calls one after the other until the window closes: send
// the invite, wait for onInviteeAccepted.
func (p *pair) callerLoop(ctx context.Context, tokens <-chan struct{}, winStart, winEnd time.Time) {
	for {
		p.seq++ // the ids of a relay's calls stay unique over windows
		seq := p.seq
		if tokens != nil {
			select {
			case <-tokens:
			case <-ctx.Done():
				return
			}
		}
		sent := time.Now()
		if !sent.Before(winEnd) || ctx.Err() != nil {
			return
		}
		inWindow := !sent.Before(winStart)
		p.inviteAt.Store(sent.UnixNano())
		sctx, cancel := context.WithTimeout(ctx, callStepTimeout)
		id, err := p.invite(sctx, seq)
		if err == nil {
			err = p.waitAccepted(sctx, id)
		}
		cancel()
		done := time.Now()
		if err != nil {
			if inWindow && ctx.Err() == nil {
				p.fail(fmt.Errorf("%s call %d: %w", p.callerID, seq, err))
			}
			continue
		}
		if inWindow && !done.After(winEnd) {
			p.setups++
			p.accepted = append(p.accepted, ms(done.Sub(time.Unix(0, p.acceptAt.Load()))))
		}
	}
}

// waitAccepted reads the caller's events until onInviteeAccepted for id;
// events of earlier calls are skipped.
func (p *pair) waitAccepted(ctx context.Context, id string) error {
	for {
		ev, err := p.caller.Next(ctx)
		if err != nil {
			return err
		}
		if ev.Reply || ev.Name != protocol.EvInviteeAccepted {
			continue
		}
		var d protocol.InviteeEvent
		if err := ev.Decode(&d); err != nil {
			return err
		}
		if d.InviteID == id {
			return nil
		}
	}
}

// calleeLoop answers every ring with accept until ctx ends.
func (p *pair) calleeLoop(ctx context.Context, winStart, winEnd time.Time) {
	for {
		ev, err := p.callee.Next(ctx)
		if err != nil {
			return
		}
		if ev.Reply || ev.Name != protocol.EvReceiveNewInvitation {
			continue
		}
		now := time.Now()
		sent := time.Unix(0, p.inviteAt.Load())
		var d protocol.NewInvitationEvent
		if err := ev.Decode(&d); err != nil {
			continue
		}
		inWindow := !sent.Before(winStart) && sent.Before(winEnd)
		if inWindow {
			p.ring = append(p.ring, ms(now.Sub(sent)))
		}
		p.rings = append(p.rings, ringRec{at: sent.UnixNano(), ms: ms(now.Sub(sent)), measured: inWindow})
		p.acceptAt.Store(time.Now().UnixNano())
		actx, cancel := context.WithTimeout(ctx, callStepTimeout)
		// A failed accept fails the caller's wait, which counts the error.
		_ = p.accept(actx, d.InviteID)
		cancel()
	}
}

// ringRec is one ring as --ring-log writes it.
type ringRec struct {
	at       int64   // unix ns: when its invite was sent
	ms       float64 // ring latency
	measured bool    // sent inside the window (else in its warmup or after)
}

// ringLog is --ring-log's file: one line per ring, "side round phase
// sent_unix_ns ring_ms", phase "window" (measured) or "warmup" (nil: no
// log). The first write error is kept and
// reported at close; later lines are dropped.
type ringLog struct {
	f   *os.File
	w   *bufio.Writer
	err error
}

func openRingLog(path string) (*ringLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--ring-log: %w", err)
	}
	return &ringLog{f: f, w: bufio.NewWriter(f)}, nil
}

func (l *ringLog) write(side string, window int, r *loadResult) {
	if l == nil || l.err != nil {
		return
	}
	for _, rr := range r.rings {
		phase := "warmup"
		if rr.measured {
			phase = "window"
		}
		if _, err := fmt.Fprintf(l.w, "%s %d %s %d %.3f\n", side, window, phase, rr.at, rr.ms); err != nil {
			l.err = err
			return
		}
	}
}

func (l *ringLog) close(stderr io.Writer) {
	if l == nil {
		return
	}
	if err := errors.Join(l.err, l.w.Flush(), l.f.Close()); err != nil {
		fmt.Fprintln(stderr, "signaling: --ring-log:", err)
	}
}
