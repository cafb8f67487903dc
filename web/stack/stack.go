// Package stack builds the whole Switchboard server from one Config, in the
// one place where it is built: store, signaling engine, SFU, TURN, rooms, calls,
// metrics and the HTTP/WebSocket transport, and closes them in reverse
// order. The binary (cmd/switchboard), the test stack (web/webtest) and the
// bench (cmd/switchboard-bench) all call New.
//
// It sits under web because it is the top of the import graph below cmd:
// it imports web, web/webhook, calls, rooms, media and signaling, and it must be
// importable by web/webtest, which a package under cmd/internal would not
// be. No package but those three callers imports it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
	"github.com/switchboard-rtc/switchboard/rooms"
	roomcluster "github.com/switchboard-rtc/switchboard/rooms/cluster"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/metrics"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// readHeaderTimeout bounds the wait for an HTTP request's headers.
const readHeaderTimeout = 10 * time.Second

// Params are New's inputs. Only Config is required.
type Params struct {
	Config Config
	Logger *slog.Logger // nil: discard
	// Store replaces the SQLite database at store.path (tests pass a memory
	// store).
	Store signaling.Store
	// Records replaces the call records; nil: SQLite records in the store's
	// database, or memory records when Store is given.
	Records calls.RecordStore
	Clock   protocol.Clock // nil: the system clock
	// RoomsClock is the rooms' clock (media connect timeouts); nil: Clock.
	RoomsClock protocol.Clock
	// WebhookQueue replaces the webhook deliveries' table in the store's
	// database; nil: that table, or a memory queue when Store is given.
	WebhookQueue webhook.Queue
}

// Stack is a built server. Its parts are exported for tests.
type Stack struct {
	Config  Config
	Auth    *web.Authenticator
	Engine  *signaling.Engine
	SFU     *media.SFU
	TURN    *turnserver.Server // nil unless turn.enabled
	Rooms   *rooms.Manager
	Calls   *calls.Manager
	Server  *web.Server
	Metrics *metrics.Metrics // nil unless metrics.enabled
	// NodeID is this node's ID in cluster mode (cluster.node_id, or the
	// one generated); "" standalone.
	NodeID string
	// RoomRelay carries rooms across nodes in cluster mode (rooms/cluster);
	// nil standalone.
	RoomRelay *roomcluster.Relay
	// Webhooks delivers events to webhooks.urls; nil when there are none.
	Webhooks *webhook.Sender

	log        *slog.Logger
	closers    []func() error // in build order; Close runs them in reverse
	httpSrv    *http.Server
	metricsSrv *http.Server // nil unless metrics are served on metrics.addr
	metricsLn  net.Listener // its listener, opened by Listen or Serve
}

// New builds the server described by p.Config. On error, what was built is
// closed again.
func New(ctx context.Context, p Params) (_ *Stack, err error) {
	cfg := p.Config
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{Config: cfg, log: log}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	if s.Auth, err = web.NewAuthenticator(cfg.Auth); err != nil {
		return nil, err
	}
	if cfg.Metrics.Enabled {
		s.Metrics = metrics.New()
	}
	store, records, whQueue := p.Store, p.Records, p.WebhookQueue
	var clusterP *signaling.ClusterParams // cluster mode; nil: standalone
	relayLoad := &loadOf{}                // the heartbeat's load, once the relay exists
	var health web.HealthChecker          // what /healthz asks
	switch {
	case cfg.Cluster.Enabled():
		// Cluster mode: the signaling state, the call records and the
		// webhook deliveries are in Redis, shared with the other nodes; no
		// SQLite. A room lives on one node, its media node, and the room
		// relay (rooms/cluster) carries the ops and events of members
		// connected elsewhere.
		if store != nil {
			return nil, errors.New("stack: Params.Store is for standalone mode, but cluster.redis.addr is set")
		}
		s.NodeID = cfg.Cluster.nodeID()
		rdb, err := openRedis(ctx, cfg.Cluster)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, rdb.Close) // closed last: everything below uses it
		prefix := cfg.Cluster.Redis.Prefix()
		log.Info("cluster node", "node", s.NodeID, "redis", cfg.Cluster.Redis.Addr, "db", cfg.Cluster.Redis.DB,
			"key_prefix", prefix, "advertise_addr", cfg.advertiseAddr())
		if records == nil {
			if records, err = calls.NewRedisRecords(rdb, prefix, s.NodeID); err != nil {
				return nil, fmt.Errorf("call records: %w", err)
			}
		}
		if whQueue == nil && len(cfg.Webhooks.URLs) > 0 {
			if whQueue, err = webhook.NewRedisQueue(rdb, prefix); err != nil {
				return nil, fmt.Errorf("webhook queue: %w", err)
			}
		}
		clusterP = &signaling.ClusterParams{Client: rdb, Prefix: prefix, NodeID: s.NodeID,
			Addr: cfg.advertiseAddr(), Config: cfg.Cluster.Knobs, Load: relayLoad.load}
		health = redisHealth{rdb: rdb, addr: cfg.Cluster.Redis.Addr, timeout: cfg.Cluster.Knobs.OpTimeout}
	case store == nil:
		db, err := signaling.OpenSQLiteWith(ctx, cfg.Store.Path, log, signaling.SQLiteOptions{
			CommitWait: cfg.Store.CommitWait, CommitBatch: cfg.Store.CommitBatch,
		})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.closers = append(s.closers, db.Close)
		store = db
		if records == nil {
			if records, err = calls.NewSQLiteRecords(ctx, db.DB()); err != nil {
				return nil, fmt.Errorf("call records: %w", err)
			}
		}
		if whQueue == nil && len(cfg.Webhooks.URLs) > 0 {
			if whQueue, err = webhook.NewSQLiteQueue(ctx, db.DB()); err != nil {
				return nil, fmt.Errorf("webhook queue: %w", err)
			}
		}
	}
	if records == nil {
		records = calls.NewMemoryRecords()
	}

	// Webhooks: the sender is built before the engine, so that it hears of
	// the invitations timed out at start, and closed after everything that
	// publishes to it.
	var notifier *webhook.Notifier
	if len(cfg.Webhooks.URLs) > 0 {
		if whQueue == nil {
			whQueue = webhook.NewMemoryQueue()
		}
		wp := webhook.Params{Config: cfg.Webhooks, Queue: whQueue, Logger: log.With("component", "webhooks")}
		if s.Metrics != nil {
			wp.Metrics = s.Metrics // not a typed nil in the interface
		}
		if s.Webhooks, err = webhook.New(wp); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.Webhooks.Close)
		notifier = webhook.NewNotifier(s.Webhooks)
	}

	sc := cfg.Signaling
	sc.Limits = cfg.Limits.Signaling
	ep := signaling.Params{Config: sc, Logger: log, Cluster: clusterP}
	if clusterP == nil {
		sh := web.WatchStore(store) // /healthz answers 503 while store writes fail
		ep.Store, health = s.Metrics.InstrumentStore(sh), sh
	}
	if notifier != nil {
		ep.Observers = []signaling.Observer{notifier}
	}
	if s.Engine, err = signaling.NewEngine(ctx, ep); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.Engine.Close(); return nil })

	mc := cfg.Media.SFU
	mc.MaxTracksPerParticipant = cfg.Limits.MaxTracksPerParticipant
	if len(cfg.Media.ICEServers) > 0 {
		mc.ICEServers = []media.ICEServer{{URLs: cfg.Media.ICEServers, Username: cfg.Media.ICEUsername, Credential: cfg.Media.ICECredential}}
	}
	if s.SFU, err = media.New(mc, log); err != nil { // media tags its own lines
		return nil, fmt.Errorf("media: %w", err)
	}
	s.closers = append(s.closers, s.SFU.Close)

	if cfg.TURN.Enabled {
		tc, err := turnConfig(cfg, s.SFU.UDPAddr().Port)
		if err != nil {
			return nil, err
		}
		if s.TURN, err = turnserver.New(tc, log.With("component", "turn")); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.TURN.Close)
	}

	rc, roomsClock := cfg.Limits.Rooms, p.RoomsClock
	rc.ConnectTimeout = cfg.Media.ConnectTimeout
	rc.RejoinGrace = cfg.Media.RejoinGrace
	if roomsClock == nil {
		roomsClock = p.Clock
	}
	rp := rooms.Params{Config: rc, SFU: s.SFU, Tokens: s.Auth, Clock: roomsClock, Logger: log.With("component", "rooms")}
	if s.TURN != nil {
		rp.TURN = s.TURN // not a typed nil in the interface
	}
	s.Rooms = rooms.NewManager(rp)
	s.closers = append(s.closers, func() error { s.Rooms.Close(); return nil })
	if clusterP != nil {
		// Cluster mode: each room lives on one node, its media node; the
		// relay places rooms and carries the requests, replies and events
		// of members connected to other nodes (rooms/cluster). It closes
		// before the rooms (dismissing them with reason 4: their members
		// enter again elsewhere).
		relay, err := roomcluster.New(roomcluster.Params{Client: clusterP.Client, Prefix: clusterP.Prefix, NodeID: clusterP.NodeID,
			Config: clusterP.Config, Rooms: s.Rooms, MaxRoomsPerUser: rc.MaxRoomsPerUser, RequestTimeout: requestTimeout(cfg),
			Metrics: relayMetrics(s.Metrics), Logger: log})
		if err != nil {
			return nil, err
		}
		s.RoomRelay = relay
		relayLoad.r.Store(relay)
		s.closers = append(s.closers, func() error { relay.Close(); return nil })
	}

	cc := cfg.Calls
	cc.BusyPolicy = calls.BusyPolicy(strings.ToLower(string(cc.BusyPolicy)))
	cp := calls.Params{Config: cc, Engine: s.Engine, Rooms: s.Rooms, Records: records, Clock: p.Clock,
		Logger: log.With("component", "calls")}
	if clusterP != nil {
		// Cluster mode: the calls' state (busy lines, glare, answers,
		// hangups, records) is on the engine's Redis, under its prefix and
		// node ID (calls.ClusterParams).
		cp.Cluster = &calls.ClusterParams{Client: clusterP.Client, Prefix: clusterP.Prefix,
			NodeID: clusterP.NodeID, Config: clusterP.Config}
	}
	if s.Metrics != nil {
		cp.Metrics = s.Metrics // not a typed nil in the interface
	}
	if notifier != nil {
		cp.Observer = notifier
		s.Rooms.AddObserver(notifier)
	}
	if s.RoomRelay != nil {
		cp.Seats = s.RoomRelay // live rooms' seat grants reach the room's media node
	}
	if s.Calls, err = calls.NewManager(ctx, cp); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.Calls.Close(); return nil })
	if s.Metrics != nil {
		s.Engine.AddObserver(s.Metrics)
		s.Metrics.Watch(s.Calls, s.Rooms, s.SFU)
		if s.Webhooks != nil {
			s.Metrics.WatchWebhooks(s.Webhooks)
		}
		s.Metrics.WatchTURN(s.TURN)
		if _, on := s.Engine.SharedTxStats(); on {
			s.Metrics.WatchSharedTx(func() (members, execs, refused int64) {
				st, _ := s.Engine.SharedTxStats()
				return st.Members, st.Execs, st.Refused
			})
		}
	}

	// Each layer publishes the complete table of the ops it owns (calls
	// wraps the engine's invitation ops itself); one merge refuses a name
	// defined twice.
	roomOps := s.Rooms.Ops()
	closed := []func(protocol.Session){s.Rooms.SessionClosed}
	if s.RoomRelay != nil {
		roomOps = s.RoomRelay.Ops(roomOps)
		closed = append(closed, s.RoomRelay.SessionClosed)
	}
	ops, err := web.MergeOps(s.Calls.Ops(), roomOps)
	if err != nil {
		return nil, err
	}
	wc := cfg.Server.Web
	wc.Limits = cfg.Limits.Web
	wc.MaxConnsPerUser = cfg.Limits.Signaling.ConnectionsPerUser
	if wc.RequestTimeout == 0 {
		wc.RequestTimeout = web.DefaultConfig().RequestTimeout
	}
	wp := web.Params{
		Config: wc, Auth: s.Auth, DevTokens: cfg.Auth.Dev, DevTokenTTL: cfg.Auth.DevTokenTTL,
		Engine: s.Engine, Ops: ops, OnSessionClosed: closed,
		Logger: log, Health: health,
	}
	if s.Metrics != nil {
		wp.Metrics = s.Metrics // not a typed nil in the interface
	}
	if s.Server, err = web.New(wp); err != nil {
		return nil, err
	}
	if s.Metrics != nil && cfg.Metrics.Addr == "" {
		s.Server.Mux().Handle("GET /metrics", s.Metrics.Handler())
	}
	s.httpSrv = s.Server.HTTPServer()
	if s.RoomRelay != nil {
		if err := s.RoomRelay.Start(); err != nil {
			return nil, err
		}
	}
	if s.Metrics != nil && cfg.Metrics.Addr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.Metrics.Handler())
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	}
	return s, nil
}

// requestTimeout is the server's request deadline (web's default when
// unset).
func requestTimeout(cfg Config) time.Duration {
	if t := cfg.Server.Web.RequestTimeout; t > 0 {
		return t
	}
	return web.DefaultConfig().RequestTimeout
}

// relayMetrics is m as the relay's Metrics (nil, not a typed nil, when
// metrics are off).
func relayMetrics(m *metrics.Metrics) roomcluster.Metrics {
	if m == nil {
		return nil
	}
	return m
}

// loadOf is the load a node's heartbeat publishes: the room relay's, once
// it is built (the engine, built first, starts the heartbeat).
type loadOf struct {
	r atomic.Pointer[roomcluster.Relay]
}

func (l *loadOf) load() cluster.Load {
	if r := l.r.Load(); r != nil {
		return r.Load()
	}
	return nil
}

// turnConfig completes the turn section with what other sections give: the
// relay IP when turn.relay_ip is empty (the first media.nat1to1_ips, else
// media.listen_ip), the secret when turn.secret is empty (derived from
// auth.secret, else random), the TLS certificate (server.tls_cert and
// tls_key), and the only addresses relays may send to: the SFU's UDP port
// (sfuPort) on each address the SFU advertises.
func turnConfig(cfg Config, sfuPort int) (turnserver.Config, error) {
	tc, m := cfg.TURN, cfg.Media.SFU
	if tc.RelayIP == "" {
		tc.RelayIP = relayIP(cfg)
		if tc.RelayIP == "" {
			return tc, errors.New("turn: turn.relay_ip is empty and neither media.nat1to1_ips nor media.listen_ip gives an address")
		}
	}
	if tc.Secret == "" {
		tc.Secret = turnserver.DeriveSecret(cfg.Auth.Secret)
	}
	tc.CertFile, tc.KeyFile = cfg.Server.TLSCert, cfg.Server.TLSKey
	var ips []string
	if ip := net.ParseIP(m.ListenIP); ip != nil && !ip.IsUnspecified() {
		ips = append(ips, m.ListenIP)
	} else {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return tc, fmt.Errorf("turn: interface addresses: %w", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips = append(ips, n.IP.String())
			}
		}
	}
	for _, ip := range append(ips, m.NAT1To1IPs...) {
		if a, err := netip.ParseAddr(ip); err == nil {
			tc.RelayTo = append(tc.RelayTo, netip.AddrPortFrom(a.Unmap(), uint16(sfuPort)))
		}
	}
	return tc, nil
}

// relayIP is the TURN relay IP the configuration gives: turn.relay_ip, else
// the first media.nat1to1_ips, else media.listen_ip unless it is
// unspecified; "" if none.
func relayIP(cfg Config) string {
	if cfg.TURN.RelayIP != "" {
		return cfg.TURN.RelayIP
	}
	if len(cfg.Media.SFU.NAT1To1IPs) > 0 {
		return cfg.Media.SFU.NAT1To1IPs[0]
	}
	if ip := net.ParseIP(cfg.Media.SFU.ListenIP); ip != nil && !ip.IsUnspecified() {
		return cfg.Media.SFU.ListenIP
	}
	return ""
}

// Handler is the HTTP handler of the server, for callers that serve it
// themselves (httptest).
func (s *Stack) Handler() http.Handler { return s.Server.Handler() }

// Listen listens on server.addr: TLS when server.tls_cert is set, at most
// server.max_connections connections open (web.Server.Listen). When
// metrics.addr is set it also opens the /metrics listener, so that both
// are bound (and logged) before the caller reports the server ready.
func (s *Stack) Listen() (net.Listener, error) {
	ln, err := s.Server.Listen(s.Config.Server.Addr, s.Config.Server.TLSCert, s.Config.Server.TLSKey)
	if err != nil {
		return nil, err
	}
	if s.metricsSrv != nil && s.metricsLn == nil {
		if s.metricsLn, err = net.Listen("tcp", s.Config.Metrics.Addr); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		s.log.Info("metrics serving", "url", fmt.Sprintf("http://%s/metrics", s.metricsLn.Addr()))
	}
	return ln, nil
}

// Serve serves HTTP on ln (from Listen, which terminates TLS) and, when
// metrics.addr is set, /metrics on a listener of its own, until Shutdown,
// after which it returns nil; otherwise it returns the first serving error.
func (s *Stack) Serve(ln net.Listener) error {
	errc := make(chan error, 2)
	if s.metricsSrv != nil {
		if s.metricsLn == nil { // ln did not come from Listen
			mln, err := net.Listen("tcp", s.Config.Metrics.Addr)
			if err != nil {
				_ = ln.Close()
				return fmt.Errorf("metrics listener: %w", err)
			}
			s.log.Info("metrics serving", "url", fmt.Sprintf("http://%s/metrics", mln.Addr()))
			s.metricsLn = mln
		}
		go func() { errc <- s.metricsSrv.Serve(s.metricsLn) }()
	}
	go func() { errc <- s.httpSrv.Serve(ln) }()
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops serving gracefully, within ctx: calls first (a call running
// now is ended with reason server_restart at the next start, its record
// stopping at the last heartbeat, written now), not by its participants'
// connections closing; then the WebSockets (close 1001 after flushing);
// then the HTTP listeners. Close releases the rest.
func (s *Stack) Shutdown(ctx context.Context) error {
	s.Calls.Close()
	err := s.Server.Shutdown(ctx)
	if herr := s.httpSrv.Shutdown(ctx); herr != nil {
		_ = s.httpSrv.Close()
		err = errors.Join(err, fmt.Errorf("http shutdown: %w", herr))
	}
	if s.metricsSrv != nil {
		_ = s.metricsSrv.Close()
	}
	if s.metricsLn != nil {
		_ = s.metricsLn.Close() // opened by Listen, possibly never served
	}
	return err
}

// Close releases everything New built, in reverse order: calls, rooms,
// SFU, engine (in cluster mode it leaves the cluster: its deadlines fire
// from the other nodes), webhooks, then the store (SQLite) or the Redis
// client. Call Shutdown first for a graceful stop; Close ends
// the WebSockets at once if it was not called.
func (s *Stack) Close() error {
	var errs []error
	if s.Server != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(ctx) // after Shutdown, a no-op; else it closes the connections at once
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}
