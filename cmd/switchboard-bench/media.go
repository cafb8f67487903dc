package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

type mediaOptions struct {
	server      serverFlags
	rooms       int
	publishers  int
	subscribers int
	bitrate     int
	fps         int
	duration    time.Duration
	warmup      time.Duration
	calls       int
	cpuProfile  string
	memProfile  string

	cluster  int    // --cluster N: calls and failover on N nodes on one Redis against a standalone server (0: off)
	redisBin string // redis-server binary for --cluster
	redisAOF string // the Redis persistence for --cluster
	failover int    // --cluster: calls whose media node is killed
	// standaloneFirst: --cluster runs the standalone calls before the
	// cluster's.
	standaloneFirst bool
}

func (o *mediaOptions) flags(out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("switchboard-bench media", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.rooms, "rooms", 4, "rooms")
	fs.IntVar(&o.publishers, "publishers", 2, "publishers per room (video and audio; they also receive each other)")
	fs.IntVar(&o.subscribers, "subscribers", 2, "receive-only audience members per room")
	fs.IntVar(&o.bitrate, "bitrate", 500_000, "video bit/s per publisher")
	fs.IntVar(&o.fps, "fps", 30, "video frames per second per publisher")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measurement window of each run (server, then bare forwarder)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "time the load flows before the window opens")
	fs.IntVar(&o.calls, "calls", 5, "real calls (call, accept, enterRoom) timed for first_media_ms; 0 skips them")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "in-process only: write a CPU profile of the server run's window to this file, the bare run's to FILE.bare (samples labelled side=server|client)")
	fs.StringVar(&o.memProfile, "memprofile", "", "in-process only: write the allocation profile at the end of the server run's window to this file and at its start to FILE.base (bare run: FILE.bare, FILE.bare.base)")
	fs.IntVar(&o.cluster, "cluster", 0, "run N (at least 2) switchboard nodes on one redis-server: time --calls calls whose caller and callee are on different nodes, "+
		"then --failover media-node kills (on at least 3 nodes: more are started when N is less), then the same calls on a standalone server; "+
		"the media load and the bare forwarder are not run; 0: off")
	fs.StringVar(&o.redisBin, "redis-bin", "redis-server", "--cluster: the redis-server binary (looked up in PATH)")
	fs.StringVar(&o.redisAOF, "redis-aof", "everysec", "--cluster: Redis persistence: everysec or always (appendonly yes with that appendfsync), or off")
	fs.BoolVar(&o.standaloneFirst, "standalone-first", false, "--cluster: run the standalone calls before the cluster instead of after")
	fs.IntVar(&o.failover, "failover", 5, "--cluster: calls to time from a SIGKILL of their room's media node (neither party's node) to media flowing again; 0 skips it")
	o.server.register(fs)
	return fs
}

func (o *mediaOptions) validate() error {
	switch {
	case o.rooms < 1 || o.publishers < 1 || o.subscribers < 0:
		return errors.New("--rooms and --publishers must be at least 1, --subscribers not negative")
	case o.publishers+o.subscribers > 50:
		return errors.New("a room holds at most 50 participants (limits.max_room_participants)")
	case o.publishers+o.subscribers < 2:
		return errors.New("a room needs a receiver: --publishers 2, or --subscribers 1")
	case o.bitrate < 8_000 || o.bitrate > 50_000_000 || o.fps < 1 || o.fps > 120:
		return errors.New("--bitrate must be 8000..50000000 and --fps 1..120")
	case o.duration <= 0 || o.warmup < 0 || o.calls < 0:
		return errors.New("--duration must be positive, --warmup and --calls not negative")
	case o.duration > time.Hour || o.warmup > time.Hour || o.calls > 1000:
		return errors.New("--duration and --warmup are capped at 1h, --calls at 1000")
	case (o.cpuProfile != "" || o.memProfile != "") && (o.server.childMode() || o.cluster != 0):
		return errors.New("--cpuprofile and --memprofile profile the in-process server: not with --spawn, --server-bin or --cluster")
	case o.cluster == 1 || o.cluster < 0 || o.cluster > maxClusterNodes:
		return fmt.Errorf("--cluster must be 0 (off) or 2 to %d nodes", maxClusterNodes)
	case o.cluster != 0 && o.calls < 1:
		return errors.New("--cluster times calls: --calls must be at least 1")
	case o.failover < 0 || o.failover > 100:
		return errors.New("--failover must be 0..100")
	case o.redisAOF != "everysec" && o.redisAOF != "always" && o.redisAOF != "off":
		return fmt.Errorf("--redis-aof %q: want everysec, always or off", o.redisAOF)
	}
	return o.server.validate()
}

// mediaResult is the RESULT of media mode.
type mediaResult struct {
	Mode        string  `json:"mode"`
	Server      string  `json:"server"`
	Rooms       int     `json:"rooms"`
	Publishers  int     `json:"publishers"`
	Subscribers int     `json:"subscribers"`
	Bitrate     int     `json:"bitrate"`
	FPS         int     `json:"fps"`
	DurationS   float64 `json:"duration_s"`
	WarmupS     float64 `json:"warmup_s"`

	ForwardedPPS   float64 `json:"forwarded_pps"`
	SFUPacketsOut  float64 `json:"sfu_packets_out_per_s"`      // in-process only: SFU.Stats()
	SFUFastOut     float64 `json:"sfu_packets_out_fast_per_s"` // in-process only: of which through the fast path
	ServerCPUS     float64 `json:"server_cpu_s"`
	BenchCPUS      float64 `json:"bench_cpu_s"` // the bench process: the clients alone in child mode
	ServerCPUPerM  float64 `json:"server_cpu_s_per_mpkt"`
	PPSPerCore     float64 `json:"pps_per_core"` // forwarded packets per second per server core: 10⁶ / server_cpu_s_per_mpkt
	CPUMethod      string  `json:"cpu_method"`
	LossPct        float64 `json:"loss_pct"`
	P50            float64 `json:"p50_ms"`
	P99            float64 `json:"p99_ms"`
	Errors         int     `json:"errors"`
	BareForwarded  float64 `json:"bare_forwarded_pps"`
	BareCPUS       float64 `json:"bare_cpu_s"`
	BareBenchCPUS  float64 `json:"bare_bench_cpu_s"`
	BareCPUPerM    float64 `json:"bare_cpu_s_per_mpkt"`
	BarePPSPerCore float64 `json:"bare_pps_per_core"`
	BareLossPct    float64 `json:"bare_loss_pct"`
	BareP50        float64 `json:"bare_p50_ms"`
	BareP99        float64 `json:"bare_p99_ms"`
	BareErrors     int     `json:"bare_errors"`
	CPURatio       float64 `json:"cpu_ratio"`
	Calls          int     `json:"calls"`
	FirstMedia     float64 `json:"first_media_ms"`
	FirstKeyframe  float64 `json:"first_keyframe_ms"`
	FirstMediaMax  float64 `json:"first_media_max_ms"`
	FirstMediaErrs int     `json:"first_media_errors"`
}

// mediaRun is what one run of the media load measured.
type mediaRun struct {
	expected, received int64
	latencies          []float64
	cpu                time.Duration
	benchCPU           time.Duration // this process in the window
	sfuOut             uint64
	sfuOutFast         uint64
	errs               []error
}

func (r *mediaRun) pps(d time.Duration) float64 { return float64(r.received) / d.Seconds() }

func (r *mediaRun) loss() float64 {
	if r.expected == 0 {
		return 0
	}
	return 100 * (1 - float64(r.received)/float64(r.expected))
}

func (r *mediaRun) cpuPerM() float64 {
	return ratio(r.cpu.Seconds(), float64(r.received)/1e6)
}

// ppsPerCore is the forwarded packets per second one core of the server
// would sustain at this cost per packet: received packets per CPU second.
func (r *mediaRun) ppsPerCore() float64 {
	return ratio(float64(r.received), r.cpu.Seconds())
}

func runMedia(ctx context.Context, o mediaOptions, stdout, stderr io.Writer) (*mediaResult, error) {
	if err := raiseFileLimit(4096); err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "media: starting server (%s)…\n", modeName(o.server))
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
			_ = srv.stop()
		}
	}()

	fmt.Fprintf(stderr, "media: server %s; %d rooms × (%d publishers + %d subscribers)…\n", srv.mode, o.rooms, o.publishers, o.subscribers)
	prof := &windowProfile{cpu: o.cpuProfile, mem: o.memProfile}
	var main *mediaRun
	pprof.Do(ctx, pprof.Labels("side", "client"), func(ctx context.Context) {
		main, err = runMediaLoad(ctx, o, sfuJoiner(srv), srv.cpu, srv.sfu, prof, stderr)
	})
	if err != nil {
		return nil, fmt.Errorf("server run: %w", err)
	}
	var fm firstMediaResult
	if o.calls > 0 {
		fmt.Fprintf(stderr, "media: %d calls for first_media_ms…\n", o.calls)
		fm = firstMedia(ctx, srv, o)
	}
	if err := srv.stop(); err != nil {
		fmt.Fprintln(stderr, "media: server stop:", err)
	}
	srv = nil

	fmt.Fprintln(stderr, "media: bare forwarder baseline…")
	var bare *bareTarget
	pprof.Do(ctx, pprof.Labels("side", "server"), func(ctx context.Context) {
		bare, err = startBare(ctx, o.server.childMode())
	})
	if err != nil {
		return nil, fmt.Errorf("start bare forwarder: %w", err)
	}
	bareProf := &windowProfile{cpu: suffixed(o.cpuProfile, ".bare"), mem: suffixed(o.memProfile, ".bare")}
	var base *mediaRun
	pprof.Do(ctx, pprof.Labels("side", "client"), func(ctx context.Context) {
		base, err = runMediaLoad(ctx, o, bareJoiner(bare.url), bare.cpu, nil, bareProf, stderr)
	})
	if serr := bare.stop(); serr != nil {
		fmt.Fprintln(stderr, "media: bare forwarder stop:", serr)
	}
	if err != nil {
		return nil, fmt.Errorf("bare forwarder run: %w", err)
	}

	cpuM := "child /proc/<pid>/stat utime+stime (server and bare forwarder each in a child process)"
	if !o.server.childMode() {
		cpuM = "getrusage(RUSAGE_SELF): server or bare forwarder PLUS the bench's own Pion clients (use --spawn for the server's share alone)"
	}
	secs := o.duration.Seconds()
	res := &mediaResult{
		Mode: "media", Server: modeName(o.server), Rooms: o.rooms, Publishers: o.publishers, Subscribers: o.subscribers,
		Bitrate: o.bitrate, FPS: o.fps, DurationS: secs, WarmupS: o.warmup.Seconds(),
		ForwardedPPS:   round3(main.pps(o.duration)),
		SFUPacketsOut:  round3(float64(main.sfuOut) / secs),
		SFUFastOut:     round3(float64(main.sfuOutFast) / secs),
		ServerCPUS:     round3(main.cpu.Seconds()),
		BenchCPUS:      round3(main.benchCPU.Seconds()),
		ServerCPUPerM:  round3(main.cpuPerM()),
		PPSPerCore:     round3(main.ppsPerCore()),
		CPUMethod:      cpuM,
		LossPct:        round3(main.loss()),
		P50:            round3(percentile(main.latencies, 50)),
		P99:            round3(percentile(main.latencies, 99)),
		Errors:         len(main.errs),
		BareForwarded:  round3(base.pps(o.duration)),
		BareCPUS:       round3(base.cpu.Seconds()),
		BareBenchCPUS:  round3(base.benchCPU.Seconds()),
		BareCPUPerM:    round3(base.cpuPerM()),
		BarePPSPerCore: round3(base.ppsPerCore()),
		BareLossPct:    round3(base.loss()),
		BareP50:        round3(percentile(base.latencies, 50)),
		BareP99:        round3(percentile(base.latencies, 99)),
		BareErrors:     len(base.errs),
		Calls:          o.calls,
		FirstMedia:     round3(percentile(fm.packet, 50)),
		FirstKeyframe:  round3(percentile(fm.keyframe, 50)),
		FirstMediaMax:  round3(percentile(fm.packet, 100)),
		FirstMediaErrs: len(fm.errs),
	}
	res.CPURatio = round3(ratio(res.ServerCPUPerM, res.BareCPUPerM))

	fmt.Fprintf(stdout, "switchboard-bench media: server %s, %d rooms × (%d publishers + %d subscribers), %d bit/s at %d fps, warmup %v, window %v\n\n",
		res.Server, o.rooms, o.publishers, o.subscribers, o.bitrate, o.fps, o.warmup, o.duration)
	t := newTable(stdout, "figure", "switchboard", "bare pion", "unit")
	t.row("forwarded", f(res.ForwardedPPS), f(res.BareForwarded), "packets/s received by all receivers")
	t.row("CPU in window", f(res.ServerCPUS), f(res.BareCPUS), "s")
	t.row("CPU per Mpkt", f(res.ServerCPUPerM), f(res.BareCPUPerM), "CPU s per million forwarded packets")
	t.row("pps per core", f(res.PPSPerCore), f(res.BarePPSPerCore), "forwarded packets/s per server core (10⁶ / CPU per Mpkt)")
	t.row("bench CPU", f(res.BenchCPUS), f(res.BareBenchCPUS), "s in window, bench process (clients; in-process also the server)")
	t.row("loss", f(res.LossPct), f(res.BareLossPct), "% of sent × fan-out")
	t.row("latency p50", f(res.P50), f(res.BareP50), "ms one way, publisher write → subscriber read")
	t.row("latency p99", f(res.P99), f(res.BareP99), "ms")
	t.row("errors", fmt.Sprint(res.Errors), fmt.Sprint(res.BareErrors), "negotiation errors")
	t.flush()
	fmt.Fprintf(stdout, "\ncpu_ratio = server_cpu_s_per_mpkt / bare_cpu_s_per_mpkt = %s\n", f(res.CPURatio))
	fmt.Fprintf(stdout, "CPU method: %s\n", cpuM)
	if srvOut := res.SFUPacketsOut; srvOut > 0 {
		fmt.Fprintf(stdout, "SFU.Stats() packets out: %s/s (fast path: %s/s)\n", f(srvOut), f(res.SFUFastOut))
	}
	if o.calls > 0 {
		fmt.Fprintf(stdout, "first media after accept (%d calls): first video packet p50 %s ms (max %s), first keyframe p50 %s ms, %d failed\n",
			o.calls, f(res.FirstMedia), f(res.FirstMediaMax), f(res.FirstKeyframe), res.FirstMediaErrs)
		for _, e := range fm.errs {
			fmt.Fprintln(stdout, "  call error:", e)
		}
	}
	for _, e := range append(main.errs, base.errs...) {
		fmt.Fprintln(stdout, "error:", e)
	}
	return res, nil
}

// loadPeer is one participant of the media load.
type loadPeer struct {
	peer    *benchPeer
	expect  int // remote tracks it must receive
	publish bool
	close   func()
	errs    func() []error
	// subscribeIn takes the bare forwarder's subscriber offer.
	subscribeIn *peer.SignalQueue
}

// joiner makes participants against one target; subscribe is called once
// every publisher of the room exists (the bare forwarder needs it; the SFU
// does it by itself).
type joiner struct {
	join      func(ctx context.Context, room, id string, publish bool, cfg peerConfig) (*loadPeer, error)
	subscribe func(ctx context.Context, lp *loadPeer, room, id string, publishers []string) error
}

// loadSetupTimeout bounds joining and the wait for every track to flow.
const loadSetupTimeout = 60 * time.Second

// runMediaLoad joins every room's publishers then subscribers, waits until
// every receiver gets every track, then measures one window.
func runMediaLoad(ctx context.Context, o mediaOptions, j joiner, cpu func() (time.Duration, error), sfu *media.SFU, prof *windowProfile, stderr io.Writer) (*mediaRun, error) {
	win := &window{}
	cfg := peerConfig{bitrate: o.bitrate, fps: o.fps, win: win}
	var all []*loadPeer
	defer func() {
		var wg sync.WaitGroup
		for _, lp := range all {
			wg.Go(lp.close)
		}
		wg.Wait()
	}()
	sctx, cancel := context.WithTimeout(ctx, loadSetupTimeout)
	defer cancel()
	type roomPeers struct {
		pubs, subs []*loadPeer
	}
	rms := make([]roomPeers, o.rooms)
	for r := range o.rooms {
		room := fmt.Sprintf("bench-room-%d", r)
		var pubIDs []string
		for i := range o.publishers {
			id := fmt.Sprintf("r%d-pub%d", r, i)
			lp, err := j.join(sctx, room, id, true, cfg)
			if err != nil {
				return nil, fmt.Errorf("publisher %s: %w", id, err)
			}
			lp.expect = 2 * (o.publishers - 1)
			all = append(all, lp)
			rms[r].pubs = append(rms[r].pubs, lp)
			pubIDs = append(pubIDs, id)
		}
		for i := range o.subscribers {
			id := fmt.Sprintf("r%d-sub%d", r, i)
			lp, err := j.join(sctx, room, id, false, cfg)
			if err != nil {
				return nil, fmt.Errorf("subscriber %s: %w", id, err)
			}
			lp.expect = 2 * o.publishers
			all = append(all, lp)
			rms[r].subs = append(rms[r].subs, lp)
		}
		if j.subscribe != nil {
			for i, lp := range rms[r].pubs {
				others := append(append([]string(nil), pubIDs[:i]...), pubIDs[i+1:]...)
				if len(others) == 0 {
					continue
				}
				if err := j.subscribe(sctx, lp, room, pubIDs[i], others); err != nil {
					return nil, err
				}
			}
			for i, lp := range rms[r].subs {
				if err := j.subscribe(sctx, lp, room, fmt.Sprintf("r%d-sub%d", r, i), pubIDs); err != nil {
					return nil, err
				}
			}
		}
	}
	// Wait until every receiver has every track.
	for {
		missing := 0
		for _, lp := range all {
			if lp.peer.receiving() < lp.expect {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if sctx.Err() != nil {
			var errs []error
			for _, lp := range all {
				errs = append(errs, lp.errs()...)
			}
			return nil, fmt.Errorf("%d of %d participants still miss tracks after %v; errors: %v", missing, len(all), loadSetupTimeout, errors.Join(errs...))
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(stderr, "media: %d participants flowing; warmup %v, window %v…\n", len(all), o.warmup, o.duration)

	start := time.Now().Add(o.warmup)
	end := start.Add(o.duration)
	win.end.Store(end.UnixNano())
	win.start.Store(start.UnixNano())
	run := &mediaRun{}
	if !sleepUntil(ctx, start) {
		return nil, ctx.Err()
	}
	if err := prof.start(); err != nil {
		return nil, err
	}
	defer func() { _ = prof.stop() }() // on an early return; stop is idempotent
	cpu0, err := cpu()
	if err != nil {
		return nil, err
	}
	self0, err := selfCPU()
	if err != nil {
		return nil, err
	}
	var st0 media.Stats
	if sfu != nil {
		st0 = sfu.Stats()
	}
	if !sleepUntil(ctx, end) {
		return nil, ctx.Err()
	}
	cpu1, err := cpu()
	if err != nil {
		return nil, err
	}
	self1, err := selfCPU()
	if err != nil {
		return nil, err
	}
	if err := prof.stop(); err != nil {
		return nil, err
	}
	if sfu != nil {
		st1 := sfu.Stats()
		run.sfuOut = st1.PacketsOut - st0.PacketsOut
		run.sfuOutFast = st1.PacketsOutFast - st0.PacketsOutFast
	}
	run.cpu = cpu1 - cpu0
	run.benchCPU = self1 - self0
	time.Sleep(time.Second) // packets sent at the end of the window arrive
	for _, rp := range rms {
		var sent int64
		for _, lp := range rp.pubs {
			sent += lp.peer.sentInWindow.Load()
		}
		run.expected += sent * int64(o.publishers-1+o.subscribers)
	}
	for _, lp := range all {
		n, lat := lp.peer.figures()
		run.received += n
		run.latencies = append(run.latencies, lat...)
		run.errs = append(run.errs, lp.errs()...)
	}
	return run, nil
}

// windowProfile writes the profiles asked for by --cpuprofile and
// --memprofile over one measurement window. A nil or empty one does nothing.
type windowProfile struct {
	cpu, mem string
	cpuFile  *os.File
}

func (p *windowProfile) start() error {
	if p == nil {
		return nil
	}
	if p.mem != "" {
		if err := writeAllocs(p.mem + ".base"); err != nil {
			return err
		}
	}
	if p.cpu == "" {
		return nil
	}
	f, err := os.Create(p.cpu)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	p.cpuFile = f
	return nil
}

// stop ends the profiles; calling it again does nothing.
func (p *windowProfile) stop() error {
	if p == nil {
		return nil
	}
	var err error
	if p.cpuFile != nil {
		pprof.StopCPUProfile()
		err = p.cpuFile.Close()
		p.cpuFile = nil
	}
	if p.mem != "" {
		err = errors.Join(err, writeAllocs(p.mem))
		p.mem = ""
	}
	return err
}

// suffixed returns path+suffix, or "" for no path.
func suffixed(path, suffix string) string {
	if path == "" {
		return ""
	}
	return path + suffix
}

// writeAllocs writes the allocation profile (cumulative since the process
// started) to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	return errors.Join(err, f.Close())
}

// errList collects errors from several goroutines.
type errList struct {
	mu   sync.Mutex
	errs []error
}

func (l *errList) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *errList) list() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

const tokenTTL = 24 * time.Hour

// sfuJoiner enters participants into Switchboard rooms with room tokens
// over signaling/client, negotiating through rtcSignal.
func sfuJoiner(srv *server) joiner {
	return joiner{join: func(ctx context.Context, room, id string, publish bool, cfg peerConfig) (*loadPeer, error) {
		tok, _, err := srv.auth.Issue(id, "", tokenTTL)
		if err != nil {
			return nil, err
		}
		roomTok, _, err := srv.auth.Issue(id, room, tokenTTL)
		if err != nil {
			return nil, err
		}
		c, err := client.Dial(ctx, srv.wsURL, tok)
		if err != nil {
			return nil, err
		}
		in, out := peer.NewSignalQueue(), peer.NewSignalQueue()
		c.Handle(rooms.EvRtcSignal, func(ev client.Event) {
			var s rooms.SignalArgs
			if ev.Decode(&s) == nil && s.RoomID == room {
				in.Push(s.Signal)
			}
		})
		var wg sync.WaitGroup
		wg.Go(func() {
			for range c.Events() { // room events: not needed here
			}
		})
		role := rooms.RoleAudience
		if publish {
			role = rooms.RoleAnchor
		}
		if err := c.Do(ctx, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: room, Role: string(role), RoomToken: roomTok}, nil); err != nil {
			_ = c.Close()
			wg.Wait()
			return nil, fmt.Errorf("enterRoom: %w", err)
		}
		cfg.publish = publish
		p, err := newBenchPeer(cfg, out.Push)
		if err != nil {
			_ = c.Close()
			wg.Wait()
			return nil, err
		}
		var errs errList
		wg.Go(func() {
			for {
				s, ok := in.Pop()
				if !ok {
					return
				}
				if err := p.HandleSignal(s); err != nil {
					errs.add(fmt.Errorf("%s: %s %s: %w", id, s.Target, s.Type, err))
				}
			}
		})
		wg.Go(func() {
			for {
				s, ok := out.Pop()
				if !ok {
					return
				}
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.Do(sctx, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: room, Signal: s}, nil)
				cancel()
				if err != nil && !errors.Is(err, client.ErrClosed) {
					errs.add(fmt.Errorf("%s: rtcSignal %s %s: %w", id, s.Target, s.Type, err))
				}
			}
		})
		return &loadPeer{peer: p, publish: publish, errs: errs.list, close: func() {
			in.Close()
			out.Close()
			_ = p.Close()
			_ = c.Close()
			wg.Wait()
		}}, nil
	}}
}

// bareJoiner connects participants to a bare forwarder over its HTTP
// signaling.
func bareJoiner(base string) joiner {
	bc := bareClient{base: base, http: &http.Client{Timeout: 30 * time.Second}}
	return joiner{
		join: func(ctx context.Context, room, id string, publish bool, cfg peerConfig) (*loadPeer, error) {
			in, out := peer.NewSignalQueue(), peer.NewSignalQueue()
			cfg.publish = publish
			p, err := newBenchPeer(cfg, out.Push)
			if err != nil {
				return nil, err
			}
			var errs errList
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					s, ok := in.Pop()
					if !ok {
						return
					}
					if err := p.HandleSignal(s); err != nil {
						errs.add(fmt.Errorf("%s: %s %s: %w", id, s.Target, s.Type, err))
					}
				}
			})
			wg.Go(func() {
				for {
					s, ok := out.Pop()
					if !ok {
						return
					}
					sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					switch {
					case s.Target == media.TargetPublisher && s.Type == media.SignalOffer:
						rep, err := bc.post(sctx, "/publish", bareRequest{Room: room, ID: id, SDP: s.SDP})
						if err != nil {
							errs.add(fmt.Errorf("%s: publish: %w", id, err))
						} else {
							in.Push(media.Signal{Target: media.TargetPublisher, Type: media.SignalAnswer, SDP: rep.SDP})
						}
					case s.Target == media.TargetSubscriber && s.Type == media.SignalAnswer:
						if _, err := bc.post(sctx, "/answer", bareRequest{Room: room, ID: id, SDP: s.SDP}); err != nil {
							errs.add(fmt.Errorf("%s: answer: %w", id, err))
						}
					}
					cancel()
				}
			})
			return &loadPeer{peer: p, publish: publish, errs: errs.list, close: func() {
				in.Close()
				out.Close()
				_ = p.Close()
				wg.Wait()
			}, subscribeIn: in}, nil
		},
		subscribe: func(ctx context.Context, lp *loadPeer, room, id string, publishers []string) error {
			rep, err := bc.post(ctx, "/subscribe", bareRequest{Room: room, ID: id, Publishers: publishers})
			if err != nil {
				return fmt.Errorf("%s: subscribe: %w", id, err)
			}
			lp.subscribeIn.Push(media.Signal{Target: media.TargetSubscriber, Type: media.SignalOffer, SDP: rep.SDP})
			return nil
		},
	}
}

// firstMediaResult holds the first-media timings of the real calls.
type firstMediaResult struct {
	packet, keyframe []float64 // ms from the callee's accept
	errs             []error
}

// firstMediaTimeout bounds one timed call.
const firstMediaTimeout = 30 * time.Second

// firstMedia runs o.calls real calls one after the other: the caller sends
// call and enters the room (roomclient, publishing synthetic VP8 and Opus);
// once the caller's media is connected the callee, which was ringing,
// accepts and enters; the figure is the time from sending accept to the
// callee's first packet, and first keyframe, of the caller's video.
func firstMedia(ctx context.Context, srv *server, o mediaOptions) firstMediaResult {
	var res firstMediaResult
	for i := range o.calls {
		pkt, key, err := oneCall(ctx, srv, o, i)
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("call %d: %w", i, err))
			continue
		}
		res.packet = append(res.packet, pkt)
		res.keyframe = append(res.keyframe, key)
	}
	return res
}

func oneCall(ctx context.Context, srv *server, o mediaOptions, i int) (packetMs, keyMs float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, firstMediaTimeout)
	defer cancel()
	callerID, calleeID := fmt.Sprintf("fm-caller-%d", i), fmt.Sprintf("fm-callee-%d", i)
	dial := func(user string) (*client.Client, error) {
		tok, _, err := srv.auth.Issue(user, "", tokenTTL)
		if err != nil {
			return nil, err
		}
		return client.Dial(ctx, srv.wsURL, tok)
	}
	cr, err := dial(callerID)
	if err != nil {
		return 0, 0, err
	}
	defer cr.Close()
	ce, err := dial(calleeID)
	if err != nil {
		return 0, 0, err
	}
	defer ce.Close()

	var call calls.CallResult
	if err := cr.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: calleeID, MediaType: calls.MediaVideo}, &call); err != nil {
		return 0, 0, fmt.Errorf("call: %w", err)
	}
	pc := peer.Config{Audio: true, Video: true, IncludeLoopback: true, VideoBitrate: o.bitrate, VideoFPS: o.fps}
	crRoom, err := roomclient.Enter(ctx, cr, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		return 0, 0, fmt.Errorf("caller enterRoom: %w", err)
	}
	defer crRoom.Close()
	if _, err := cr.WaitEvent(ctx, rooms.EvEnterRoom, nil); err != nil {
		return 0, 0, fmt.Errorf("caller media: %w", err)
	}
	ev, err := ce.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("ring: %w", err)
	}
	var inv protocol.NewInvitationEvent
	if err := ev.Decode(&inv); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := ce.Accept(ctx, inv.InviteID, ""); err != nil {
		return 0, 0, fmt.Errorf("accept: %w", err)
	}
	ceRoom, err := roomclient.Enter(ctx, ce, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		return 0, 0, fmt.Errorf("callee enterRoom: %w", err)
	}
	defer ceRoom.Close()
	key := peer.TrackKey{StreamID: callerID, Kind: "video"}
	for {
		st, ok := ceRoom.Received()[key]
		if ok && !st.FirstKeyframe.IsZero() {
			packetMs, keyMs = ms(st.FirstPacket.Sub(t0)), ms(st.FirstKeyframe.Sub(t0))
			break
		}
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("no keyframe of the caller's video at the callee within %v (tracks: %v, errors: %v)",
				firstMediaTimeout, ceRoom.Received(), ceRoom.Errors())
		}
		time.Sleep(2 * time.Millisecond)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = cr.Do(hctx, calls.OpHangup, calls.CallIDArgs{CallID: call.CallID}, nil)
	return packetMs, keyMs, nil
}
