// Package redistest runs real redis-server processes for tests: one per
// call of Start (or StartTCP), in its own temporary directory, stopped when
// the test ends. A mock (miniredis) is no substitute for the contract tests:
// they need Redis's own MULTI/EXEC, WATCH and persistence.
//
// The server listens on a Unix socket in its directory (Start), which
// avoids port races, or on a free loopback TCP port (StartTCP), for
// harnesses whose child processes need an address. It runs with
// appendonly yes, so Kill (SIGKILL) and Restart give back what was
// written, unless started with NoPersistence (then a restart loses all).
//
// When redis-server is not installed the test is skipped, saying how to
// install it, except when the environment variable CI is "true": then it
// fails, so that CI cannot pass by skipping.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Binary is the program Start runs, looked up in PATH.
const Binary = "redis-server"

// Timeouts of the server's life cycle. They bound waits on events (the
// server answering PING, the process exiting); none is a sleep.
const (
	readyTimeout = 15 * time.Second // from start to PING answered (covers loading the AOF)
	stopTimeout  = 10 * time.Second // from SIGTERM to exit, then SIGKILL
	pollInterval = 5 * time.Millisecond
	tcpAttempts  = 5 // ports tried by StartTCP before giving up (another process may take a free port)
)

// Option changes how the server runs.
type Option func(*config)

type config struct {
	fsync    string // appendfsync policy
	password string
	volatile bool // appendonly no: a restart starts empty
}

// FsyncAlways makes the server fsync its append-only file before answering
// each write (appendfsync always) instead of once a second. A SIGKILL loses
// nothing either way once a write was answered (Redis writes the file
// before replying); always also covers a crash of the machine.
func FsyncAlways() Option { return func(c *config) { c.fsync = "always" } }

// NoPersistence runs the server without its append-only file (appendonly
// no; snapshots are off anyway): after Kill or Stop, Restart starts it
// empty, as a Redis run without persistence comes back after a crash.
func NoPersistence() Option { return func(c *config) { c.volatile = true } }

// Password makes the server require password (requirepass).
func Password(password string) Option { return func(c *config) { c.password = password } }

// Server is one redis-server process, and its directory and address, which
// stay the same across Kill, Stop and Restart. Its methods are safe for
// concurrent use; they fail the test that started the server.
type Server struct {
	t       testing.TB
	cfg     config
	dir     string // data directory: the append-only files, the log, the socket
	network string // "unix" or "tcp"
	addr    string // the socket path, or host:port

	mu   sync.Mutex // guards proc; held while starting or stopping
	proc *process   // nil while stopped
}

// process is one run of the server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been waited for
	err  error         // Wait's result, set before done is closed
}

// Start starts a redis-server listening on a Unix socket in a new
// directory, and waits until it answers PING. It is killed, and its
// directory removed, when t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts)
	s.network, s.addr = "unix", filepath.Join(s.dir, "redis.sock")
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return s
}

// StartTCP is Start with the server listening on 127.0.0.1 on a port that
// was free, for processes that need a TCP address.
func StartTCP(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts)
	s.network = "tcp"
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range tcpAttempts {
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.startLocked(); err == nil {
			return s
		}
		// The port may have been taken between closing our listener and
		// the server binding it: try another.
	}
	t.Fatalf("redistest: %v", err)
	return nil
}

// newServer checks that the binary exists and makes the directory.
func newServer(t testing.TB, opts []Option) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		msg := fmt.Sprintf("redistest: %s not found in PATH (%v); install Redis 7 to run the Redis tests, "+
			"on Debian or Ubuntu: apt-get install -y redis-server", Binary, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: not skipping)")
		}
		t.Skip(msg)
	}
	cfg := config{fsync: "everysec"}
	for _, o := range opts {
		o(&cfg)
	}
	// Not t.TempDir: a Unix socket path must fit in 108 bytes, and test
	// names make TempDir paths long.
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{t: t, cfg: cfg, dir: dir}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.proc != nil {
			s.killLocked()
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("redistest: remove %s: %v", dir, err)
		}
	})
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// args are the server's command line: no snapshots, the append-only file
// (unless NoPersistence) in dir, the log in dir.
func (s *Server) args() []string {
	appendonly := "yes"
	if s.cfg.volatile {
		appendonly = "no"
	}
	args := []string{
		"--dir", s.dir,
		"--logfile", s.logPath(),
		"--save", "",
		"--appendonly", appendonly,
		"--appendfsync", s.cfg.fsync,
		"--daemonize", "no",
	}
	if s.network == "unix" {
		args = append(args, "--port", "0", "--unixsocket", s.addr, "--unixsocketperm", "700")
	} else {
		host, port, _ := net.SplitHostPort(s.addr)
		args = append(args, "--bind", host, "--port", port)
	}
	if s.cfg.password != "" {
		args = append(args, "--requirepass", s.cfg.password)
	}
	return args
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

// startLocked runs the server and waits until it answers PING.
func (s *Server) startLocked() error {
	cmd := exec.Command(Binary, s.args()...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	if err := s.waitReady(p); err != nil {
		s.killLocked()
		return fmt.Errorf("%s on %s %s: %w%s", Binary, s.network, s.addr, err, s.logTail())
	}
	return nil
}

// waitReady polls PING until it answers PONG, the process exits, or
// readyTimeout passes. A server loading its append-only file answers
// -LOADING until it is done.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if last = s.ping(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering PING (%v)", p.err)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %v: %w", readyTimeout, last)
		}
	}
}

// ping sends PING (after AUTH if a password is set) on a new connection.
func (s *Server) ping() error {
	c, err := net.DialTimeout(s.network, s.addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	if s.cfg.password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", s.cfg.password); err != nil {
			return err
		}
		if line, err := r.ReadString('\n'); err != nil {
			return err
		} else if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("AUTH: %s", strings.TrimSpace(line))
		}
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %s", strings.TrimSpace(line))
	}
	return nil
}

// logTail returns the end of the server's log, to explain a failure.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\nredis-server log (end):\n" + string(bytes.TrimSpace(b))
}

// killLocked sends SIGKILL and waits for the process to end.
func (s *Server) killLocked() {
	p := s.proc
	s.proc = nil
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // fails only if it has exited already
	<-p.done
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to end. What it answered before is in its append-only file.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatal("redistest: Kill: the server is not running")
	}
	s.killLocked()
}

// Stop stops the server with SIGTERM (it flushes its append-only file and
// exits) and waits for it to end; after stopTimeout it is killed.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		s.t.Fatal("redistest: Stop: the server is not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Errorf("redistest: Stop: %v", err)
	}
	select {
	case <-p.done:
		s.proc = nil
	case <-time.After(stopTimeout):
		s.killLocked()
		s.t.Errorf("redistest: Stop: the server did not exit within %v of SIGTERM; killed it%s", stopTimeout, s.logTail())
	}
}

// Restart starts the server again, after Kill or Stop, on the same
// address and directory, and waits until it answers PING (its data loaded
// from the append-only file; empty with NoPersistence).
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.t.Fatal("redistest: Restart: the server is running; Kill or Stop it first")
	}
	if err := s.startLocked(); err != nil {
		s.t.Fatalf("redistest: Restart: %v", err)
	}
}

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// PID is the server process's ID, 0 while stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Network is "unix" or "tcp".
func (s *Server) Network() string { return s.network }

// Addr is the socket path (Unix) or host:port (TCP), as go-redis takes it
// with Network.
func (s *Server) Addr() string { return s.addr }

// ConfigAddr is the address in the form redisdb.Config.Addr takes:
// host:port, or unix: followed by the socket path.
func (s *Server) ConfigAddr() string {
	if s.network == "unix" {
		return "unix:" + s.addr
	}
	return s.addr
}

// Dir is the server's data directory.
func (s *Server) Dir() string { return s.dir }

// Options returns new go-redis options for the server. Maintenance
// notifications (a Redis Enterprise feature that Redis 7 rejects) are off.
func (s *Server) Options() *redis.Options {
	return &redis.Options{
		Network:                  s.network,
		Addr:                     s.addr,
		Password:                 s.cfg.password,
		DialerRetries:            1, // as redisdb.Config.Options: fail fast while the server is down
		MaxRetries:               1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(s.Options())
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Keys returns the keys that start with prefix, found with SCAN (never
// KEYS), sorted.
func Keys(ctx context.Context, c redis.UniversalClient, prefix string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, EscapeGlob(prefix)+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redistest: scan %q: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// EscapeGlob escapes the characters that a Redis glob pattern (SCAN
// MATCH) treats specially.
func EscapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
