// Command switchboard runs the Switchboard call-orchestration server.
//
//	go run ./cmd/switchboard                 # embedded defaults: 127.0.0.1:8080, ./data, dev auth
//	go run ./cmd/switchboard --config my.yaml --server.addr :8443
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the server
// cannot start or fails, 2 for an invalid configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run starts the server and serves until ctx is done. ready, when not nil,
// is called with the listening address once the server serves.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) int {
	cfg, err := LoadConfig(args)
	var help *HelpError
	switch {
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.Usage)
		return 0
	case errors.Is(err, stack.ErrInvalidConfig):
		fmt.Fprintln(stderr, "switchboard: invalid configuration:", err)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "switchboard:", err)
		return 1
	}
	log := slog.New(cfg.Log.NewHandler(stderr))
	if err := serve(ctx, cfg, log, ready); err != nil {
		log.Error("switchboard stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, ready func(string)) error {
	if cfg.Auth.Dev {
		log.Warn("dev auth is on: anyone can get a token at /api/dev/token; set auth.dev=false in production")
	}
	setGC(cfg.Server, log)
	if cfg.Cluster.Enabled() {
		stack.SetRedisLogger(log) // go-redis's one logger of the process
	}
	st, err := stack.New(ctx, stack.Params{Config: cfg, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close", "err", err)
		}
	}()
	if soft, hard, err := web.RaiseFileLimit(); err != nil {
		log.Warn("open file limit not raised", "err", err)
	} else {
		log.Info("open file limit", "soft", soft, "hard", hard, "max_connections", cfg.Server.Web.MaxConnections)
	}
	ln, err := st.Listen()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- st.Serve(ln) }()
	scheme := "http"
	if cfg.Server.TLSCert != "" {
		scheme = "https"
	}
	where := []any{"store", cfg.Store.Path}
	if st.NodeID != "" {
		where = []any{"node", st.NodeID, "redis", cfg.Cluster.Redis.Addr}
	}
	log.Info("switchboard serving", append(append([]any{"url", fmt.Sprintf("%s://%s", scheme, ln.Addr())}, where...),
		"media_udp", st.SFU.UDPAddr().String())...)
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "deadline", cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := st.Shutdown(sctx); err != nil {
		log.Warn("connections did not all close in time", "err", err)
	}
	return <-errc
}

// setGC tunes the garbage collector from server.gc_percent and
// server.memory_limit_mb, in the place of GOGC and GOMEMLIMIT.
func setGC(s stack.ServerConfig, log *slog.Logger) {
	debug.SetGCPercent(s.GCPercent)
	if s.MemoryLimitMB > 0 {
		debug.SetMemoryLimit(int64(s.MemoryLimitMB) << 20)
	}
	log.Info("garbage collector", "gc_percent", s.GCPercent, "memory_limit_mb", s.MemoryLimitMB)
}
