package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// --cluster: N switchboard nodes (child processes) on one redis-server
// (a child process too, in a temporary directory, on a free loopback
// port), measured in the same invocation as one standalone switchboard
// (the same binary), which is the baseline of this mode instead of the
// relay.

const (
	maxClusterNodes = 16
	modeCluster     = "cluster"

	redisReadyTimeout = 15 * time.Second
	redisStopTimeout  = 10 * time.Second
	redisPortAttempts = 5 // a free port may be taken before redis-server binds it
)

// counters are what a run reads at the start and the end of its window.
type counters struct {
	cpu      time.Duration // the server's CPU, or the nodes' summed
	redisCPU time.Duration // redis-server's CPU (cluster only)
	redis    redisInfo     // Redis's counters (cluster only)
}

// sub returns c − o.
func (c counters) sub(o counters) counters {
	d := counters{cpu: c.cpu - o.cpu, redisCPU: c.redisCPU - o.redisCPU, redis: redisInfo{
		commands: c.redis.commands - o.redis.commands,
		reads:    c.redis.reads - o.redis.reads,
		writes:   c.redis.writes - o.redis.writes,
	}}
	for name, cs := range c.redis.cmds {
		prev := o.redis.cmds[name]
		if cs.calls == prev.calls {
			continue
		}
		if d.redis.cmds == nil {
			d.redis.cmds = map[string]cmdStat{}
		}
		d.redis.cmds[name] = cmdStat{calls: cs.calls - prev.calls, usec: cs.usec - prev.usec}
	}
	return d
}

// counters reads the server's CPU.
func (s *server) counters() (counters, error) {
	cpu, err := s.cpu()
	return counters{cpu: cpu}, err
}

// redisInfo is what the bench reads from Redis's INFO stats and
// commandstats.
type redisInfo struct {
	commands int64 // total_commands_processed
	reads    int64 // total_reads_processed: reads from client sockets
	writes   int64 // total_writes_processed: replies written to client sockets
	cmds     map[string]cmdStat
}

// cmdStat is one command's line of INFO commandstats.
type cmdStat struct {
	calls, usec int64
}

// parseRedisInfo reads the fields the bench uses from INFO's text.
func parseRedisInfo(text string) (redisInfo, error) {
	ri := redisInfo{cmds: map[string]cmdStat{}}
	found := 0
	for line := range strings.SplitSeq(text, "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if name, ok := strings.CutPrefix(key, "cmdstat_"); ok {
			var cs cmdStat
			for kv := range strings.SplitSeq(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					cs.calls = n
				case "usec":
					cs.usec = n
				}
			}
			ri.cmds[name] = cs
			continue
		}
		var dst *int64
		switch key {
		case "total_commands_processed":
			dst = &ri.commands
		case "total_reads_processed":
			dst = &ri.reads
		case "total_writes_processed":
			dst = &ri.writes
		default:
			continue
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return ri, fmt.Errorf("INFO %s: %w", key, err)
		}
		*dst = n
		found++
	}
	if found != 3 {
		return ri, errors.New("INFO lacks total_commands_processed, total_reads_processed or total_writes_processed (Redis 6 or later needed)")
	}
	return ri, nil
}

// redisServer is the cluster's redis-server child.
type redisServer struct {
	cmd   *exec.Cmd
	dir   string
	addr  string // 127.0.0.1:port
	waitc chan error
	rdb   *redis.Client // the bench's own connection, for INFO
}

// redisArgs is the server's command line: loopback only, nothing written
// outside dir, never evicting, persistence as aof says (everysec or
// always: appendonly yes with that appendfsync, as README's "Running a
// cluster" recommends; off: neither the append-only file nor snapshots).
func redisArgs(dir, port, aof string) []string {
	args := []string{
		"--bind", "127.0.0.1", "--port", port,
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"),
		"--save", "", "--daemonize", "no",
		"--maxmemory-policy", "noeviction",
	}
	if aof == "off" {
		return append(args, "--appendonly", "no")
	}
	return append(args, "--appendonly", "yes", "--appendfsync", aof)
}

// lookRedis finds the redis-server binary, with an install hint when it
// is missing.
func lookRedis(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("--cluster needs %s (%v): install Redis 6 or later, on Debian or Ubuntu: apt-get install -y redis-server, or name it with --redis-bin", bin, err)
	}
	return path, nil
}

// startRedis runs redis-server in a new temporary directory on a free
// loopback port and waits until it answers PING.
func startRedis(ctx context.Context, bin, aof string) (*redisServer, error) {
	path, err := lookRedis(bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "switchboard-bench-redis-")
	if err != nil {
		return nil, err
	}
	var errs []error
	for range redisPortAttempts {
		r, err := startRedisOnce(ctx, path, dir, aof)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(append(errs, os.RemoveAll(dir))...)
}

func startRedisOnce(ctx context.Context, bin, dir, aof string) (*redisServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	if err := l.Close(); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, redisArgs(dir, port, aof)...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r := &redisServer{cmd: cmd, dir: dir, addr: addr, waitc: make(chan error, 1)}
	go func() { r.waitc <- cmd.Wait() }()
	// redisdb.Open asks the server its version at once: first wait until
	// it listens (a loaded machine starts it in more than a moment).
	err = r.waitListening(ctx)
	var rdb *redis.Client
	if err == nil {
		rdb, err = redisdb.Open(ctx, redisdb.Config{Addr: addr})
	}
	if err == nil {
		r.rdb = rdb
		err = r.waitReady(ctx)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-r.waitc
		if rdb != nil {
			_ = rdb.Close()
		}
		return nil, fmt.Errorf("%s on %s: %w%s", bin, addr, err, logTail(filepath.Join(dir, "redis.log")))
	}
	return r, nil
}

// waitListening dials the server's port until it accepts a connection,
// the process exits or redisReadyTimeout passes.
func (r *redisServer) waitListening(ctx context.Context) error {
	return r.poll(ctx, "listening", func() error {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			err = c.Close()
		}
		return err
	})
}

// waitReady polls PING until it answers, the process exits or
// redisReadyTimeout passes.
func (r *redisServer) waitReady(ctx context.Context) error {
	return r.poll(ctx, "answering PING", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return r.rdb.Ping(pctx).Err()
	})
}

// poll runs try every 10 ms until it succeeds, the process exits or
// redisReadyTimeout passes; what names the wait in its errors.
func (r *redisServer) poll(ctx context.Context, what string, try func() error) error {
	deadline := time.Now().Add(redisReadyTimeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not %s within %v: %w", what, redisReadyTimeout, err)
		}
		select {
		case werr := <-r.waitc:
			r.waitc <- werr
			return fmt.Errorf("exited before %s (%v)", what, werr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// logTail is the end of a log file, to explain a failure.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\nredis-server log (end):\n" + strings.TrimSpace(string(b))
}

// info reads INFO stats and commandstats.
func (r *redisServer) info() (redisInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := r.rdb.Info(ctx, "stats", "commandstats").Result()
	if err != nil {
		return redisInfo{}, fmt.Errorf("redis INFO: %w", err)
	}
	return parseRedisInfo(text)
}

// stop sends SIGTERM, waits (SIGKILL after redisStopTimeout) and removes
// the directory.
func (r *redisServer) stop() error {
	_ = r.rdb.Close()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-r.waitc:
	case <-time.After(redisStopTimeout):
		_ = r.cmd.Process.Kill()
		<-r.waitc
		err = fmt.Errorf("redis-server did not stop within %v of SIGTERM; killed", redisStopTimeout)
	}
	return errors.Join(err, os.RemoveAll(r.dir))
}

// cluster is a running Redis and its nodes.
type cluster struct {
	redis *redisServer
	nodes []*server // the live nodes, in start order
	spec  clusterSpec
	// bin and secret start more nodes (addNode); started counts every
	// node ever started, for new node IDs.
	bin     string
	secret  []byte
	started int
	stderr  io.Writer
}

// clusterSpec is what startCluster needs from the flags.
type clusterSpec struct {
	nodes    int
	redisBin string
	redisAOF string
	verbose  bool
}

// startCluster starts redis-server, then n nodes of bin on it (node IDs
// bench-node1…), all with the same auth secret so that a token works on
// every node.
func startCluster(ctx context.Context, spec clusterSpec, bin string, secret []byte, stderr io.Writer) (_ *cluster, err error) {
	rs, err := startRedis(ctx, spec.redisBin, spec.redisAOF)
	if err != nil {
		return nil, err
	}
	c := &cluster{redis: rs, spec: spec, bin: bin, secret: secret, stderr: stderr}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.stop())
		}
	}()
	for range spec.nodes {
		if _, err := c.addNode(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// addNode starts one more node (ID bench-node<k>, k counting every node
// started so far) and adds it to the live nodes.
func (c *cluster) addNode(ctx context.Context) (*server, error) {
	c.started++
	id := "bench-node" + strconv.Itoa(c.started)
	n, err := runChild(ctx, c.bin, c.secret, []string{
		"--cluster.redis.addr=" + c.redis.addr,
		"--cluster.node_id=" + id,
	}, c.spec.verbose, c.stderr)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", id, err)
	}
	n.mode, n.nodeID = modeCluster, id
	c.nodes = append(c.nodes, n)
	return n, nil
}

// kill sends SIGKILL to a live node, waits for it to exit and removes it
// from the live nodes. It returns when the kill was sent.
func (c *cluster) kill(n *server) (time.Time, error) {
	i := slices.Index(c.nodes, n)
	if i < 0 {
		return time.Time{}, fmt.Errorf("node %s is not live", n.nodeID)
	}
	c.nodes = slices.Delete(c.nodes, i, i+1)
	return n.sigkill()
}

// node returns the live node with this ID, or nil.
func (c *cluster) node(id string) *server {
	for _, n := range c.nodes {
		if n.nodeID == id {
			return n
		}
	}
	return nil
}

// stop stops the nodes, then Redis.
func (c *cluster) stop() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.stop())
	}
	return errors.Join(append(errs, c.redis.stop())...)
}

// counters sums the nodes' CPU, and reads Redis's CPU and INFO.
func (c *cluster) counters() (counters, error) {
	var out counters
	for _, n := range c.nodes {
		cpu, err := procCPU(n.pid)
		if err != nil {
			return out, err
		}
		out.cpu += cpu
	}
	var err error
	if out.redisCPU, err = procCPU(c.redis.cmd.Process.Pid); err != nil {
		return out, err
	}
	out.redis, err = c.redis.info()
	return out, err
}

// The cluster has settled after the idle users connected when Redis
// processes fewer than idleSettleQuiet commands in an idleSettlePeriod (the nodes'
// loops alone make a few dozen a second); the bench waits at most
// idleSettleTimeout for it.
const (
	idleSettlePeriod  = 500 * time.Millisecond
	idleSettleQuiet   = 250
	idleSettleTimeout = 60 * time.Second
)

// settle waits until Redis is quiet (see idleSettleQuiet): the attach of a
// connection continues on Redis after its handshake (its registry entry,
// presence, replay), and without the wait the first seconds of the window
// measured the tail of the idle users' connection storm.
func (r *redisServer) settle(ctx context.Context, stderr io.Writer) error {
	start := time.Now()
	prev, err := r.info()
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(idleSettlePeriod):
		}
		cur, err := r.info()
		if err != nil {
			return err
		}
		n := cur.commands - prev.commands
		prev = cur
		if n < idleSettleQuiet {
			fmt.Fprintf(stderr, "signaling: cluster settled %v after the idle users connected (%d Redis commands in the last %v)\n", time.Since(start).Round(100*time.Millisecond), n, idleSettlePeriod)
			return nil
		}
		if time.Since(start) > idleSettleTimeout {
			fmt.Fprintf(stderr, "signaling: cluster not settled after %v (%d Redis commands in the last %v); measuring anyway\n", idleSettleTimeout, n, idleSettlePeriod)
			return nil
		}
	}
}

// memory sums the nodes' resident set sizes.
func (c *cluster) memory() (uint64, error) {
	var sum uint64
	for _, n := range c.nodes {
		m, err := procRSS(n.pid)
		if err != nil {
			return 0, err
		}
		sum += m
	}
	return sum, nil
}

func (c *cluster) urls() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.wsURL)
	}
	return out
}

// clusterResult holds the RESULT fields of --cluster (the fields of
// sigResult hold the cluster's run; relay figures are 0).
type clusterResult struct {
	Nodes            int           `json:"cluster_nodes"`
	RedisAOF         string        `json:"redis_aof"`
	StandaloneFirst  bool          `json:"standalone_first"`
	CrossNodeSetups  int64         `json:"cross_node_setups"`
	Setups           int64         `json:"setups"`
	NodeCPUS         float64       `json:"node_cpu_s"`
	NodeCPUPerSetup  float64       `json:"node_cpu_ms_per_setup"`
	RedisCPUS        float64       `json:"redis_cpu_s"`
	RedisCPUPerSetup float64       `json:"redis_cpu_ms_per_setup"`
	RedisCmdsPerSet  float64       `json:"redis_cmds_per_setup"`
	RedisRTPerSetup  float64       `json:"redis_round_trips_per_setup"`
	RedisReadsPerSet float64       `json:"redis_reads_per_setup"`
	RedisCmdStats    []cmdPerSetup `json:"redis_commandstats"`

	StandaloneSetupsPerS  float64 `json:"standalone_setups_per_s"`
	StandaloneRingP50     float64 `json:"standalone_ring_p50_ms"`
	StandaloneRingP99     float64 `json:"standalone_ring_p99_ms"`
	StandaloneAcceptP50   float64 `json:"standalone_accept_p50_ms"`
	StandaloneAcceptP99   float64 `json:"standalone_accept_p99_ms"`
	StandaloneErrors      int64   `json:"standalone_errors"`
	StandaloneBytesPerCon float64 `json:"standalone_bytes_per_conn"`
	StandaloneCPUS        float64 `json:"standalone_cpu_s"`
	StandaloneCPUPerSetup float64 `json:"standalone_cpu_ms_per_setup"`
	// The bench's own CPU (its pairs' clients, in this process) per setup
	// in each window: both runs share the machine with it.
	BenchCPUPerSetup           float64 `json:"bench_cpu_ms_per_setup"`
	StandaloneBenchCPUPerSetup float64 `json:"standalone_bench_cpu_ms_per_setup"`
	ClusterRatio               float64 `json:"cluster_ratio"`
}

// cmdPerSetup is one Redis command's calls and time per setup in the
// window.
type cmdPerSetup struct {
	Command       string  `json:"cmd"`
	CallsPerSetup float64 `json:"calls_per_setup"`
	UsecPerSetup  float64 `json:"usec_per_setup"`
}

// runSignalingCluster is signaling mode with --cluster: the cluster run,
// then the standalone run of the same binary.
func runSignalingCluster(ctx context.Context, o sigOptions, stdout, stderr io.Writer) (*sigResult, error) {
	idle := o.users - 2*o.callers
	if err := raiseFileLimit(uint64(o.users + 4*o.callers + 1024)); err != nil {
		return nil, err
	}
	if _, err := lookRedis(o.redisBin); err != nil {
		return nil, err
	}
	bin, removeBin, err := serverBinary(ctx, o.server.serverBin, "signaling", stderr)
	if err != nil {
		return nil, err
	}
	defer removeBin()
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}

	var main, base *loadResult
	n := o.cluster
	runCluster := func() error {
		fmt.Fprintf(stderr, "signaling: starting redis-server (aof %s) and %d nodes…\n", o.redisAOF, o.cluster)
		cl, err := startCluster(ctx, clusterSpec{nodes: o.cluster, redisBin: o.redisBin, redisAOF: o.redisAOF, verbose: o.server.verbose}, bin, secret, stderr)
		if err != nil {
			return fmt.Errorf("start cluster: %w", err)
		}
		fmt.Fprintf(stderr, "signaling: redis at %s, nodes at %s; connecting %d idle users…\n", cl.redis.addr, strings.Join(cl.urls(), " "), idle)
		main, err = runTarget(ctx, o, idle, sigTarget{
			wsURL: cl.nodes[0].wsURL, wsURLs: cl.urls(), secret: secret, memory: cl.memory, counters: cl.counters, settle: cl.redis.settle,
			newDriver: func(ctx context.Context, i int, caller, callee string) (*pair, error) {
				// The callee is on the node after the caller's: every ring
				// crosses nodes, and every node has callers and callees.
				return dialServerPair(ctx, cl.nodes[i%n], cl.nodes[(i+1)%n], caller, callee)
			},
		}, stderr)
		if serr := cl.stop(); serr != nil && err == nil {
			fmt.Fprintln(stderr, "signaling: cluster stop:", serr)
		}
		if err != nil {
			return fmt.Errorf("cluster run: %w", err)
		}
		return nil
	}
	runStandalone := func() error {
		fmt.Fprintln(stderr, "signaling: standalone baseline (the same binary)…")
		srv, err := runChild(ctx, bin, secret, nil, o.server.verbose, stderr)
		if err != nil {
			return fmt.Errorf("start standalone server: %w", err)
		}
		base, err = runTarget(ctx, o, idle, sigTarget{
			wsURL: srv.wsURL, secret: secret, memory: srv.memory, counters: srv.counters,
			newDriver: func(ctx context.Context, _ int, caller, callee string) (*pair, error) {
				return dialServerPair(ctx, srv, srv, caller, callee)
			},
		}, stderr)
		if serr := srv.stop(); serr != nil && err == nil {
			fmt.Fprintln(stderr, "signaling: standalone stop:", serr)
		}
		if err != nil {
			return fmt.Errorf("standalone run: %w", err)
		}
		return nil
	}
	order := []func() error{runCluster, runStandalone}
	if o.standaloneFirst {
		order = []func() error{runStandalone, runCluster}
	}
	for _, step := range order {
		if err := step(); err != nil {
			return nil, err
		}
	}

	secs := o.duration.Seconds()
	setups := float64(main.setups)
	d := main.delta
	perSetup := func(v float64) float64 { return round3(ratio(v, setups)) }
	res := &sigResult{
		Mode: "signaling", Server: modeCluster, Users: o.users, IdleUsers: idle, Callers: o.callers,
		DurationS: secs, WarmupS: o.warmup.Seconds(), Rate: o.rate,
		SetupsPerS:   round3(setups / secs),
		RingP50:      round3(percentile(main.ring, 50)),
		RingP99:      round3(percentile(main.ring, 99)),
		AcceptP50:    round3(percentile(main.accept, 50)),
		AcceptP99:    round3(percentile(main.accept, 99)),
		Errors:       main.errors,
		BytesPerConn: round3(main.bytesPerConn),
		MemMethod:    "sum of the nodes' RSS (/proc/<pid>/status VmRSS), idle users spread over the nodes from a child process",
		ServerCPUS:   round3((d.cpu + d.redisCPU).Seconds()),
		CPUPerSetup:  perSetup(ms(d.cpu + d.redisCPU)),
		CPUMethod:    "nodes' and redis-server's /proc/<pid>/stat utime+stime, summed",
		clusterResult: &clusterResult{
			Nodes: n, RedisAOF: o.redisAOF, StandaloneFirst: o.standaloneFirst, CrossNodeSetups: main.crossSetups, Setups: main.setups,
			NodeCPUS:         round3(d.cpu.Seconds()),
			NodeCPUPerSetup:  perSetup(ms(d.cpu)),
			RedisCPUS:        round3(d.redisCPU.Seconds()),
			RedisCPUPerSetup: perSetup(ms(d.redisCPU)),
			RedisCmdsPerSet:  perSetup(float64(d.redis.commands)),
			RedisRTPerSetup:  perSetup(float64(d.redis.writes)),
			RedisReadsPerSet: perSetup(float64(d.redis.reads)),
			RedisCmdStats:    cmdStats(d.redis.cmds, setups),

			StandaloneSetupsPerS:       round3(float64(base.setups) / secs),
			StandaloneRingP50:          round3(percentile(base.ring, 50)),
			StandaloneRingP99:          round3(percentile(base.ring, 99)),
			StandaloneAcceptP50:        round3(percentile(base.accept, 50)),
			StandaloneAcceptP99:        round3(percentile(base.accept, 99)),
			StandaloneErrors:           base.errors,
			StandaloneBytesPerCon:      round3(base.bytesPerConn),
			StandaloneCPUS:             round3(base.cpu.Seconds()),
			StandaloneCPUPerSetup:      round3(ratio(ms(base.cpu), float64(base.setups))),
			BenchCPUPerSetup:           perSetup(ms(main.benchCPU)),
			StandaloneBenchCPUPerSetup: round3(ratio(ms(base.benchCPU), float64(base.setups))),
		},
	}
	cr := res.clusterResult
	cr.ClusterRatio = round3(ratio(res.SetupsPerS, cr.StandaloneSetupsPerS))

	first := "cluster first"
	if o.standaloneFirst {
		first = "standalone first"
	}
	fmt.Fprintf(stdout, "switchboard-bench signaling: %d-node cluster on redis-server (aof %s) vs standalone (%s), child processes, %d users (%d idle), %d pairs (caller and callee on different nodes), rate %s, warmup %v, window %v\n\n",
		n, o.redisAOF, first, o.users, idle, o.callers, rateName(o.rate), o.warmup, o.duration)
	t := newTable(stdout, "figure", "cluster", "standalone", "unit")
	t.row("setups", f(res.SetupsPerS), f(cr.StandaloneSetupsPerS), "calls/s")
	t.row("ring p50", f(res.RingP50), f(cr.StandaloneRingP50), "ms (invite sent → ring at callee)")
	t.row("ring p99", f(res.RingP99), f(cr.StandaloneRingP99), "ms")
	t.row("accept p50", f(res.AcceptP50), f(cr.StandaloneAcceptP50), "ms (accept sent → onInviteeAccepted at caller)")
	t.row("accept p99", f(res.AcceptP99), f(cr.StandaloneAcceptP99), "ms")
	t.row("errors", fmt.Sprint(res.Errors), fmt.Sprint(cr.StandaloneErrors), "failed or timed-out calls")
	t.row("cross-node setups", fmt.Sprint(cr.CrossNodeSetups), "-", fmt.Sprintf("of %d in the window", main.setups))
	t.row("memory per idle conn", f(res.BytesPerConn), f(cr.StandaloneBytesPerCon), "bytes (RSS; cluster: the nodes' summed)")
	t.row("node CPU per setup", f(cr.NodeCPUPerSetup), f(cr.StandaloneCPUPerSetup), "ms (cluster: the nodes' summed)")
	t.row("redis CPU per setup", f(cr.RedisCPUPerSetup), "-", "ms")
	t.row("server CPU per setup", f(res.CPUPerSetup), f(cr.StandaloneCPUPerSetup), "ms (nodes + redis)")
	t.row("server CPU in window", f(res.ServerCPUS), f(cr.StandaloneCPUS), "s")
	t.row("bench CPU per setup", f(cr.BenchCPUPerSetup), f(cr.StandaloneBenchCPUPerSetup), "ms (this process: the pairs' clients)")
	t.row("redis commands per setup", f(cr.RedisCmdsPerSet), "-", "total_commands_processed")
	t.row("redis round trips per setup", f(cr.RedisRTPerSetup), "-", "total_writes_processed: replies written")
	t.flush()
	fmt.Fprintf(stdout, "\ncluster_ratio = setups_per_s / standalone_setups_per_s = %s\n", f(cr.ClusterRatio))
	if len(cr.RedisCmdStats) > 0 {
		fmt.Fprintln(stdout, "\nRedis commandstats in the window, per setup:")
		t := newTable(stdout, "command", "calls", "µs")
		for _, c := range cr.RedisCmdStats {
			t.row(c.Command, f(c.CallsPerSetup), f(c.UsecPerSetup))
		}
		t.flush()
	}
	if main.firstErr != nil {
		fmt.Fprintf(stdout, "first error (cluster): %v\n", main.firstErr)
	}
	if base.firstErr != nil {
		fmt.Fprintf(stdout, "first error (standalone): %v\n", base.firstErr)
	}
	return res, nil
}

// cmdStats is the commandstats delta per setup, the most time first.
func cmdStats(cmds map[string]cmdStat, setups float64) []cmdPerSetup {
	var out []cmdPerSetup
	for name, cs := range cmds {
		out = append(out, cmdPerSetup{Command: name,
			CallsPerSetup: round3(ratio(float64(cs.calls), setups)),
			UsecPerSetup:  round3(ratio(float64(cs.usec), setups))})
	}
	slices.SortFunc(out, func(a, b cmdPerSetup) int {
		if a.UsecPerSetup != b.UsecPerSetup {
			if a.UsecPerSetup > b.UsecPerSetup {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Command, b.Command)
	})
	return out
}
