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
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run starts the server and serves until ctx is done. ready, when not nil,
// is called with the listening address once the server serves.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer, ready func(addr string)) int {
	cfg, err := LoadConfig(args, env)
	var help *HelpError
	switch {
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.Usage)
		return 0
	case errors.Is(err, ErrInvalidConfig):
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
	key, err := cfg.Auth.SigningKey()
	if err != nil {
		return err
	}
	if cfg.Auth.Dev {
		log.Warn("dev auth is on: anyone can get a token at /api/dev/token; set auth.dev=false in production")
	}
	auth, err := web.NewAuthenticator(web.AuthConfig{Secret: key, Dev: cfg.Auth.Dev, DevTokenTTL: cfg.Auth.DevTokenTTL})
	if err != nil {
		return err
	}

	var metrics *web.Metrics
	if cfg.Metrics.Enabled {
		metrics = web.NewMetrics()
	}
	store, err := signaling.OpenSQLite(ctx, cfg.Store.Path, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()

	health := web.WatchStore(store) // /healthz answers 503 while store writes fail
	engine, err := signaling.NewEngine(ctx, signaling.Params{Config: signalingConfig(cfg), Store: metrics.InstrumentStore(health), Logger: log})
	if err != nil {
		return err
	}
	defer engine.Close()

	sfu, err := media.New(mediaConfig(cfg), log) // media tags its own lines
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	defer func() {
		if err := sfu.Close(); err != nil {
			log.Warn("close media", "err", err)
		}
	}()
	roomMgr := rooms.NewManager(rooms.Params{
		Config: rooms.Config{MaxRoomsPerUser: cfg.Limits.MaxRoomsPerUser, MaxParticipants: cfg.Limits.MaxRoomParticipants},
		SFU:    sfu, Tokens: auth, Logger: log.With("component", "rooms"),
	})
	defer roomMgr.Close()

	records, err := calls.NewSQLiteRecords(ctx, store.DB())
	if err != nil {
		return fmt.Errorf("call records: %w", err)
	}
	callParams := calls.Params{
		Config: calls.Config{
			BusyPolicy:          calls.BusyPolicy(strings.ToLower(cfg.Calls.BusyPolicy)),
			BusyIncludesRinging: cfg.Calls.BusyIncludesRinging,
			SetupTimeout:        cfg.Calls.SetupTimeout,
			Heartbeat:           cfg.Calls.Heartbeat,
		},
		Engine: engine, Rooms: roomMgr, Records: records, Logger: log.With("component", "calls"),
	}
	if metrics != nil {
		callParams.Metrics = metrics
	}
	callMgr, err := calls.NewManager(ctx, callParams)
	if err != nil {
		return err
	}
	defer callMgr.Close()
	if metrics != nil {
		engine.AddObserver(metrics)
		metrics.Watch(callMgr, roomMgr, sfu)
	}

	// The calls layer takes over invite, inviteInGroup, accept, reject and
	// cancel (a call's invitations go through it); rooms add theirs.
	ops := engine.Ops()
	maps.Copy(ops, callMgr.Ops())
	ops, err = web.MergeOps(ops, roomMgr.Ops())
	if err != nil {
		return err
	}
	srv, err := web.New(web.Params{
		Config:          webConfig(cfg),
		Auth:            auth,
		DevTokens:       cfg.Auth.Dev,
		DevTokenTTL:     cfg.Auth.DevTokenTTL,
		Engine:          engine,
		Ops:             ops,
		OnSessionClosed: []func(signaling.Session){roomMgr.SessionClosed},
		Logger:          log,
		Health:          health,
		Metrics:         metrics,
		ServeMetrics:    metrics != nil && cfg.Metrics.Addr == "",
	})
	if err != nil {
		return err
	}

	if soft, hard, err := web.RaiseFileLimit(); err != nil {
		log.Warn("open file limit not raised", "err", err)
	} else {
		log.Info("open file limit", "soft", soft, "hard", hard, "max_connections", cfg.Server.MaxConnections)
	}
	ln, err := srv.Listen(cfg.Server.Addr, cfg.Server.TLSCert, cfg.Server.TLSKey)
	if err != nil {
		return err
	}
	httpSrv := srv.HTTPServer()
	errc := make(chan error, 2)
	if metrics != nil && cfg.Metrics.Addr != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := msrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		defer msrv.Close()
		log.Info("metrics serving", "url", fmt.Sprintf("http://%s/metrics", mln.Addr()))
	}
	go func() { errc <- httpSrv.Serve(ln) }()
	scheme := "http"
	if cfg.Server.TLSCert != "" {
		scheme = "https"
	}
	log.Info("switchboard serving", "url", fmt.Sprintf("%s://%s", scheme, ln.Addr()), "store", cfg.Store.Path,
		"media_udp", sfu.UDPAddr().String())
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
	// Calls first: a call running at shutdown is ended with reason
	// server_restart at the next start (its record stops at the last
	// heartbeat, written now), not by its participants' connections closing.
	callMgr.Close()
	// WebSockets next (close 1001 after flushing), then the HTTP server.
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("connections did not all close in time", "err", err)
	}
	if err := httpSrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
		_ = httpSrv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func signalingConfig(cfg Config) signaling.Config {
	return signaling.Config{
		DefaultTimeout:  cfg.Signaling.DefaultTimeout,
		MaxTimeout:      cfg.Signaling.MaxTimeout,
		OfflineEventTTL: cfg.Signaling.OfflineEventTTL,
		Limits: signaling.Limits{
			MaxDataBytes:       cfg.Limits.MaxDataBytes,
			MaxInvitees:        cfg.Limits.MaxInvitees,
			MaxGroupMembers:    cfg.Limits.MaxGroupMembers,
			MaxGroupsPerUser:   cfg.Limits.MaxGroupsPerUser,
			MaxOfflineEvents:   cfg.Limits.MaxOfflineEvents,
			ConnectionsPerUser: cfg.Limits.ConnectionsPerUser,
		},
	}
}

func webConfig(cfg Config) web.Config {
	return web.Config{
		AllowedOrigins:  cfg.Server.AllowedOrigins,
		PingInterval:    cfg.Server.PingInterval,
		PongTimeout:     cfg.Server.PongTimeout,
		WriteTimeout:    cfg.Server.WriteTimeout,
		RequestTimeout:  10 * time.Second,
		MaxFrameBytes:   int64(cfg.Limits.MaxFrameBytes),
		SendQueue:       cfg.Limits.SendQueue,
		RequestsPerSec:  float64(cfg.Limits.RequestsPerSecond),
		RequestBurst:    cfg.Limits.RequestBurst,
		DedupWindow:     cfg.Limits.DedupWindow,
		DedupBytes:      cfg.Limits.DedupBytes,
		MaxConnsPerUser: cfg.Limits.ConnectionsPerUser,

		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		MaxConnections:    cfg.Server.MaxConnections,
	}
}

func mediaConfig(cfg Config) media.Config {
	mc := media.Config{
		UDPPort:                 cfg.Media.UDPPort,
		ListenIP:                cfg.Media.ListenIP,
		NAT1To1IPs:              cfg.Media.NAT1To1IPs,
		IncludeLoopback:         cfg.Media.IncludeLoopback,
		ICEDisconnectedGrace:    cfg.Media.ICEDisconnectedGrace,
		ICEFailedGrace:          cfg.Media.ICEFailedGrace,
		PLIThrottle:             cfg.Media.PLIThrottle,
		MaxTracksPerParticipant: cfg.Limits.MaxTracksPerParticipant,
	}
	if len(cfg.Media.ICEServers) > 0 {
		mc.ICEServers = []media.ICEServer{{URLs: cfg.Media.ICEServers, Username: cfg.Media.ICEUsername, Credential: cfg.Media.ICECredential}}
	}
	return mc
}
