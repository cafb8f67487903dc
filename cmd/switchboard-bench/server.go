package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

// Server modes, as printed and put in RESULT.
const (
	modeInProcess = "in-process"
	modeChild     = "child-process"
)

// benchLimits are the only configuration values the bench changes from the
// embedded defaults: the per-connection request limiter (50/s, burst 100) is
// a policy, not a cost, and a fast caller/callee pair would hit it.
const (
	benchRequestsPerSecond = 1_000_000
	benchRequestBurst      = 1_000_000
)

// server is a running Switchboard under test, in this process or a child.
type server struct {
	mode  string
	wsURL string // ws://127.0.0.1:port/ws
	auth  *web.Authenticator
	// secret is the HS256 key, for child processes of the bench that issue
	// their own tokens.
	secret []byte
	sfu    *media.SFU // in-process only
	pid    int        // child only
	nodeID string     // cluster node only: its cluster.node_id

	stop func() error
	// sigkill (child only) sends SIGKILL, returns when it was sent, after
	// the process exited, and removes its directory; stop does nothing
	// after it.
	sigkill func() (time.Time, error)
}

// cpu returns the CPU time the server has used so far: the child's user+system
// time from /proc, or this whole process's rusage in-process (which includes
// the bench's own clients).
func (s *server) cpu() (time.Duration, error) {
	if s.pid != 0 {
		return procCPU(s.pid)
	}
	return selfCPU()
}

// memory returns the server's memory now: in-process, HeapInuse+StackInuse
// after a GC (the bench's clients must live elsewhere for it to be the
// server's); in a child, its resident set size.
func (s *server) memory() (uint64, error) {
	if s.pid != 0 {
		return procRSS(s.pid)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse, nil
}

// memoryMethod names what memory measures, for the output.
func (s *server) memoryMethod() string {
	if s.pid != 0 {
		return "child RSS (/proc/<pid>/status VmRSS)"
	}
	return "runtime.MemStats HeapInuse+StackInuse after GC"
}

func newSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	// Hex, so that the same bytes can be passed on a command line.
	return []byte(hex.EncodeToString(b)), nil
}

// startServer starts Switchboard as the flags say.
func startServer(ctx context.Context, f serverFlags, stderr io.Writer) (*server, error) {
	if f.childMode() {
		return startChild(ctx, f, stderr)
	}
	return startInProcess(ctx, f, stderr)
}

// startInProcess builds the server with web/stack, as cmd/switchboard does,
// from the embedded defaults, on 127.0.0.1 with a temporary SQLite store.
func startInProcess(ctx context.Context, f serverFlags, stderr io.Writer) (_ *server, err error) {
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "switchboard-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	cfg, err := stack.DefaultConfig()
	if err != nil {
		return nil, err
	}
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Store.Path = filepath.Join(dir, "switchboard.db")
	cfg.Auth = web.AuthConfig{Secret: secret, DevTokenTTL: cfg.Auth.DevTokenTTL}
	cfg.Media.SFU.UDPPort, cfg.Media.SFU.ListenIP, cfg.Media.SFU.IncludeLoopback = 0, "127.0.0.1", true
	cfg.Limits.Web.RequestsPerSec, cfg.Limits.Web.RequestBurst = benchRequestsPerSecond, benchRequestBurst
	cfg.Metrics.Enabled = false
	st, err := stack.New(ctx, stack.Params{Config: cfg, Logger: benchLogger(f.verbose, stderr)})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Server.Addr)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	errc := make(chan error, 1)
	go func() { errc <- st.Serve(ln) }()
	return &server{
		mode:   modeInProcess,
		wsURL:  "ws://" + ln.Addr().String() + "/ws",
		auth:   st.Auth,
		secret: secret,
		sfu:    st.SFU,
		stop: func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := st.Shutdown(sctx)
			return errors.Join(err, <-errc, st.Close(), os.RemoveAll(dir))
		},
	}, nil
}

// benchLogger shows the server's warnings when verbose, else nothing.
func benchLogger(verbose bool, stderr io.Writer) *slog.Logger {
	if !verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// childReadyTimeout bounds the wait for a child server's "serving" line.
const childReadyTimeout = 60 * time.Second

// startChild runs the switchboard binary (built first with --spawn) as a
// child process on 127.0.0.1 with a temporary store, and waits until it
// serves.
func startChild(ctx context.Context, f serverFlags, stderr io.Writer) (_ *server, err error) {
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	bin, cleanup := f.serverBin, func() error { return nil }
	if f.spawn {
		if bin, cleanup, err = buildSwitchboard(ctx); err != nil {
			return nil, err
		}
	}
	s, err := runChild(ctx, bin, secret, nil, f.verbose, stderr)
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	stop := s.stop
	s.stop = func() error { return errors.Join(stop(), cleanup()) }
	return s, nil
}

// serverBinary returns bin, or a switchboard binary built for this run when
// bin is empty; done removes what was built (a failure is logged to stderr
// under mode).
func serverBinary(ctx context.Context, bin, mode string, stderr io.Writer) (path string, done func(), err error) {
	if bin != "" {
		return bin, func() {}, nil
	}
	fmt.Fprintf(stderr, "%s: go build ./cmd/switchboard…\n", mode)
	b, cleanup, err := buildSwitchboard(ctx)
	if err != nil {
		return "", nil, err
	}
	return b, func() {
		if err := cleanup(); err != nil {
			fmt.Fprintln(stderr, mode+":", err)
		}
	}, nil
}

// buildSwitchboard runs go build of ./cmd/switchboard into a new temporary
// directory, and returns the binary and what removes the directory.
func buildSwitchboard(ctx context.Context) (bin string, cleanup func() error, err error) {
	dir, err := os.MkdirTemp("", "switchboard-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() error { return os.RemoveAll(dir) }
	bin = filepath.Join(dir, "switchboard")
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, berr := exec.CommandContext(bctx, "go", "build", "-o", bin, "github.com/switchboard-rtc/switchboard/cmd/switchboard").CombinedOutput()
	if berr != nil {
		return "", nil, errors.Join(fmt.Errorf("go build ./cmd/switchboard: %w\n%s", berr, out), cleanup())
	}
	return bin, cleanup, nil
}

// runChild runs bin as a child process on 127.0.0.1 port 0 with a store in
// a new temporary directory, the bench's flags, then extra, and waits
// until it serves. Its stop sends SIGTERM and removes the directory.
func runChild(ctx context.Context, bin string, secret []byte, extra []string, verbose bool, stderr io.Writer) (_ *server, err error) {
	dir, err := os.MkdirTemp("", "switchboard-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	auth, err := web.NewAuthenticator(web.AuthConfig{Secret: secret})
	if err != nil {
		return nil, err
	}
	args := []string{
		"--server.addr=127.0.0.1:0",
		"--store.path=" + filepath.Join(dir, "switchboard.db"),
		"--auth.dev=false",
		"--auth.secret=" + string(secret),
		"--media.udp_port=0",
		"--media.listen_ip=127.0.0.1",
		"--media.include_loopback=true",
		"--limits.requests_per_second=" + strconv.Itoa(benchRequestsPerSecond),
		"--limits.request_burst=" + strconv.Itoa(benchRequestBurst),
		"--log.format=json",
		"--log.level=info",
		"--metrics.addr=",                  // /metrics on the server's own port: goroutines() reads it there
		"--server.max_connections=1000000", // the bench's users are all connected at once
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Env = os.Environ()
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	waitc := make(chan error, 1)
	urlc := make(chan string, 1)
	var lastErr []byte // the child's last ERROR line, read after waitc
	go func() {
		sc := bufio.NewScanner(errPipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
				URL   string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Msg == "switchboard serving" {
				select {
				case urlc <- line.URL:
				default:
				}
			}
			if line.Level == "ERROR" {
				lastErr = append(lastErr[:0], sc.Bytes()...)
			}
			if verbose && (line.Level == "WARN" || line.Level == "ERROR") {
				fmt.Fprintf(stderr, "server: %s\n", sc.Bytes())
			}
		}
		waitc <- cmd.Wait()
	}()
	kill := func() {
		_ = cmd.Process.Kill()
		<-waitc
	}
	var u string
	select {
	case u = <-urlc:
	case werr := <-waitc:
		return nil, fmt.Errorf("%s exited before serving: %v; its last error: %s", bin, werr, lastErr)
	case <-time.After(childReadyTimeout):
		kill()
		return nil, fmt.Errorf("%s did not serve within %v", bin, childReadyTimeout)
	case <-ctx.Done():
		kill()
		return nil, ctx.Err()
	}
	host, ok := strings.CutPrefix(u, "http://")
	if !ok {
		kill()
		return nil, fmt.Errorf("unexpected serving url %q", u)
	}
	pid := cmd.Process.Pid
	var stopped atomic.Bool // by stop or sigkill
	return &server{
		mode:   modeChild,
		wsURL:  "ws://" + host + "/ws",
		auth:   auth,
		secret: secret,
		pid:    pid,
		stop: func() error {
			if stopped.Swap(true) {
				return nil
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			var werr error
			select {
			case werr = <-waitc:
			case <-time.After(20 * time.Second):
				kill()
				werr = errors.New("server did not stop within 20s after SIGTERM; killed")
			}
			return errors.Join(werr, os.RemoveAll(dir))
		},
		sigkill: func() (time.Time, error) {
			if stopped.Swap(true) {
				return time.Time{}, errors.New("already stopped")
			}
			at := time.Now()
			err := cmd.Process.Signal(syscall.SIGKILL)
			<-waitc // the exit status of a killed process is an error: expected
			return at, errors.Join(err, os.RemoveAll(dir))
		},
	}, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU returns user+system CPU time of pid from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is the state (field 3); utime is field 14, stime 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseUint(fields[11], 10, 64)
	st, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procRSS returns the resident set size of pid from /proc/<pid>/status.
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// raiseFileLimit makes sure this process may open at least need files,
// raising RLIMIT_NOFILE (and its hard limit when allowed) if needed.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := lim
	want.Cur = need
	if want.Max < need {
		want.Max = need
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("need %d open files but RLIMIT_NOFILE is %d (hard %d) and raising it failed: %w; "+
			"raise it (ulimit -n, or run as root) or lower --users", need, lim.Cur, lim.Max, err)
	}
	return nil
}
