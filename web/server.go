// Package web is Switchboard's HTTP and WebSocket transport: the /ws
// endpoint that carries the protocol of signaling/PROTOCOL.md, the dev token
// endpoint, health checks, metrics, the JS SDK (/sdk/switchboard.js) and
// the demo pages (/).
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Config configures the transport. Every limit is a config key (README.md).
type Config struct {
	// AllowedOrigins lists the Origin values a browser may connect from;
	// empty means the request's own host only; "*" allows any.
	AllowedOrigins []string      `mapstructure:"allowed_origins"`
	PingInterval   time.Duration `mapstructure:"ping_interval"` // how often the server pings
	PongTimeout    time.Duration `mapstructure:"pong_timeout"`  // a connection silent this long is dead
	WriteTimeout   time.Duration `mapstructure:"write_timeout"` // one frame's write deadline
	RequestTimeout time.Duration `mapstructure:"-"`             // one request's processing deadline (no key)
	// MaxConnsPerUser is checked before the upgrade (429); 0: no limit. The
	// server's composition fills it from limits.connections_per_user.
	MaxConnsPerUser int `mapstructure:"-"`
	// Limits are the limits section's keys; the composition fills them.
	Limits `mapstructure:"-"`

	// HTTP server (HTTPServer, Listen).
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"` // a request's headers
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`        // a whole request with its body; not a WebSocket once upgraded
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`        // a keep-alive connection waiting for its next request
	MaxConnections    int           `mapstructure:"max_connections"`     // open TCP connections; past it, 503. 0: no cap
}

// Limits bound what one connection may use (keys of the limits section).
type Limits struct {
	MaxFrameBytes  int64   `mapstructure:"max_frame_bytes"`     // larger frames close the connection with 1009
	SendQueue      int     `mapstructure:"send_queue"`          // frames queued per connection before it is dropped
	RequestsPerSec float64 `mapstructure:"requests_per_second"` // sustained requests per connection
	RequestBurst   int     `mapstructure:"request_burst"`       // burst of requests per connection
	DedupWindow    int     `mapstructure:"dedup_window"`        // request ids remembered per connection
	DedupBytes     int     `mapstructure:"dedup_bytes"`         // bytes of remembered replies per connection
}

// DefaultConfig returns the defaults of the embedded config file (a test of
// web/stack checks that they agree).
func DefaultConfig() Config {
	return Config{
		PingInterval:   25 * time.Second,
		PongTimeout:    60 * time.Second,
		WriteTimeout:   10 * time.Second,
		RequestTimeout: 10 * time.Second,
		Limits: Limits{
			MaxFrameBytes:  64 << 10,
			SendQueue:      256,
			RequestsPerSec: 50,
			RequestBurst:   100,
			DedupWindow:    256,
			DedupBytes:     64 << 10,
		},

		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxConnections:    10000,
	}
}

// Params are the server's dependencies.
type Params struct {
	Config Config
	Auth   *Authenticator
	// DevTokens enables GET /api/dev/token.
	DevTokens   bool
	DevTokenTTL time.Duration
	Engine      *signaling.Engine
	// Ops are the protocol's ops by name: the engine's, merged with those of
	// rooms and calls by the caller. Nil: Engine.Ops().
	Ops    map[string]protocol.OpFunc
	Logger *slog.Logger
	// Metrics, when set, hears about connections and requests.
	Metrics Metrics
	// Health, when set, is asked by /healthz (503 on an error): the
	// engine's store wrapped by WatchStore.
	Health HealthChecker
	// OnSessionClosed are called, in order, when a connection has ended
	// (after the engine forgot it): rooms use it to remove its members.
	OnSessionClosed []func(protocol.Session)
}

// readBufferSize is each connection's read buffer: requests are small, and
// a larger frame is read through it in pieces.
const readBufferSize = 1024

// Server serves HTTP and WebSocket connections.
type Server struct {
	cfg      Config
	auth     *Authenticator
	dev      bool
	devTTL   time.Duration
	engine   *signaling.Engine
	ops      map[string]protocol.OpFunc
	onClosed []func(protocol.Session)
	log      *slog.Logger
	metrics  reporter
	health   HealthChecker
	upgrader websocket.Upgrader
	batches  *sync.Pool // write batches of connections (batchConn)
	reads    *sync.Pool // read buffers of connections (readLoop)
	mux      *http.ServeMux
	handler  http.Handler // mux behind the security headers and the dev Host check

	writersStarted atomic.Int64 // writer goroutines started (tests: export_test.go)

	ctx    context.Context // cancelled when Shutdown's deadline passes
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection handlers

	mu      sync.Mutex // guards conns, perUser and closing
	conns   map[*conn]struct{}
	perUser map[string]int // connections of each user, from before the upgrade to their end
	closing bool
}

// New builds a Server.
func New(p Params) (*Server, error) {
	if p.Engine == nil || p.Auth == nil {
		return nil, errors.New("web: New needs an Engine and an Authenticator")
	}
	s := &Server{
		cfg: p.Config, auth: p.Auth, dev: p.DevTokens, devTTL: p.DevTokenTTL, engine: p.Engine,
		ops: p.Ops, onClosed: p.OnSessionClosed, log: p.Logger, metrics: reporter{p.Metrics}, health: p.Health, conns: make(map[*conn]struct{}),
		perUser: make(map[string]int),
	}
	if s.ops == nil {
		s.ops = p.Engine.Ops()
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.devTTL <= 0 {
		s.devTTL = 24 * time.Hour
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// A small read buffer of the connection's own (the HTTP
		// server's 4 KiB one is let go with the request), and write
		// buffers borrowed from a pool only while writing: an idle
		// connection holds no write buffer.
		ReadBufferSize:  readBufferSize,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
	}
	s.batches = newBatchPool()
	s.reads = newReadPool()
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.HandleFunc("GET /ws", s.handleWS)
	if s.dev {
		s.mux.HandleFunc("GET /api/dev/token", s.handleDevToken)
	}
	s.mountAssets()
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// contentSecurityPolicy allows the pages only their own scripts, styles
// and connections (no inline code), and no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// serveHTTP sets the security headers of every response and, in dev mode,
// refuses requests whose Host is not this server's (DNS rebinding: a page
// of evil.example whose name resolves to 127.0.0.1 would otherwise be
// same-origin with the dev server and fetch tokens for anyone).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if s.dev && !s.devHostAllowed(r.Host) {
		http.Error(w, fmt.Sprintf("misdirected request: Host %q is not this dev server's (loopback, or a host of server.allowed_origins)", r.Host),
			http.StatusMisdirectedRequest)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// devHostAllowed: dev mode listens on loopback only (cmd refuses
// otherwise), so a request's Host must name loopback ("localhost" or a
// loopback IP) or a host of server.allowed_origins ("*" does not count).
func (s *Server) devHostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if u, err := url.Parse(o); err == nil && o != "*" && strings.EqualFold(u.Hostname(), host) {
			return true
		}
	}
	return false
}

// Mux returns the router so that other packages' handlers can be added.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// MergeOps returns the union of op tables; a name defined twice is an error.
func MergeOps(tables ...map[string]protocol.OpFunc) (map[string]protocol.OpFunc, error) {
	out := make(map[string]protocol.OpFunc)
	for _, t := range tables {
		for name := range t {
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("web: op %q defined twice", name)
			}
		}
		maps.Copy(out, t)
	}
	return out, nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if s.health != nil {
		if err := s.health.Health(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) handleDevToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	room := r.URL.Query().Get("room")
	if !protocol.ValidUserID(user) {
		writeJSONError(w, http.StatusBadRequest, protocol.ErrInvalidParameter.WithMessage("user must be 1-64 characters of [A-Za-z0-9_.@-]"))
		return
	}
	if room != "" && !rooms.ValidRoomID(room) {
		writeJSONError(w, http.StatusBadRequest, protocol.ErrInvalidParameter.WithMessage("room must be 1-64 characters of [A-Za-z0-9_-]"))
		return
	}
	tok, exp, err := s.auth.Issue(user, room, s.devTTL)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, &protocol.Error{Code: 9599, Reason: "internal_error", Message: "could not sign a token"})
		return
	}
	out := map[string]any{"token": tok, "userID": user, "expiresAt": exp.UnixMilli()}
	if room != "" {
		out["roomID"] = room
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

func writeJSONError(w http.ResponseWriter, status int, e *protocol.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

// checkOrigin allows requests without Origin (non-browser clients), the
// request's own origin (scheme and host), and the configured origins.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Scheme, requestScheme(r)) && strings.EqualFold(u.Host, r.Host)
}

// requestScheme is "https" when the request came over TLS, or through a
// TLS-terminating proxy that says so in X-Forwarded-Proto, else "http".
// (A browser page cannot set that header on a WebSocket handshake.)
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(p), "https") {
		return "https"
	}
	return "http"
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	claims, err := s.auth.Verify(tokenFromRequest(r))
	if err != nil {
		reason := "invalid_token"
		switch {
		case errors.Is(err, ErrNoToken):
			reason = "missing_token"
		case errors.Is(err, ErrTokenExpired):
			reason = "token_expired"
		}
		writeJSONError(w, http.StatusUnauthorized, protocol.ErrNotLoggedIn.WithMessage("%s", reason))
		return
	}
	if claims.Room != "" {
		writeJSONError(w, http.StatusUnauthorized, protocol.ErrNotLoggedIn.WithMessage("a room token cannot open a session"))
		return
	}
	user := claims.Subject
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	// The check and the reservation of a place are one step: two
	// connections racing for a user's last place cannot both upgrade.
	if lim := s.cfg.MaxConnsPerUser; lim > 0 && s.perUser[user] >= lim {
		s.mu.Unlock()
		writeJSONError(w, http.StatusTooManyRequests, protocol.ErrTooManyConnections.WithMessage("user already has %d connections", lim))
		return
	}
	s.perUser[user]++
	s.wg.Add(1)
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if s.perUser[user]--; s.perUser[user] <= 0 {
			delete(s.perUser, user)
		}
		s.mu.Unlock()
		s.wg.Done()
	}

	hj := &hijackConn{ResponseWriter: w, pool: s.batches}
	ws, err := s.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		release()
		return // the upgrader has replied
	}
	c := &conn{
		srv: s, ws: ws, out: hj.out, user: claims.Subject,
		send:     newFrameQueue(s.cfg.SendQueue),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		limiter:  rate.NewLimiter(rate.Limit(s.cfg.RequestsPerSec), s.cfg.RequestBurst),
		dedup:    newReplyCache(s.cfg.DedupWindow, s.cfg.DedupBytes),
	}
	if claims.ExpiresAt != nil {
		c.exp = claims.ExpiresAt.Time
	}
	c.armPing()
	// The connection's reader runs in a goroutine of its own, so that this
	// handler returns and the HTTP server lets go of what it held for the
	// request (its buffers, the request itself).
	go func() {
		defer release()
		s.serve(c)
	}()
}

// serve runs a connection until it ends: the reader in this goroutine, a
// writer whenever there is something to write.
func (s *Server) serve(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	closing := s.closing
	s.mu.Unlock()
	s.metrics.connOpened()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.metrics.connClosed()
	}()
	// The writer closes the socket, which also ends the reader, once
	// stopped; the connection has ended when it has.
	defer func() { <-c.finished }()

	if closing {
		c.stop(CloseGoingAway, "server shutting down")
		return
	}
	var expiry *time.Timer
	if !c.exp.IsZero() {
		expiry = time.AfterFunc(time.Until(c.exp), func() { c.stopAfterQueued(CloseTokenExpired, "token expired") })
		defer expiry.Stop()
	}
	if err := s.engine.Attach(s.ctx, c); err != nil {
		e := protocol.AsError(err)
		c.stop(ClosePolicyViolation, e.Reason)
		return
	}
	defer func() {
		s.engine.Detach(c)
		for _, f := range s.onClosed {
			f(c)
		}
	}()
	s.log.Debug("connected", "user", c.user, "remote", c.ws.RemoteAddr().String())
	c.readLoop(s.ctx)
	c.stop(websocket.CloseAbnormalClosure, "")
	s.log.Debug("disconnected", "user", c.user)
}

// Shutdown stops accepting connections, closes every open one with 1001
// (going away) after flushing what was queued for it, and waits for them
// to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stopAfterQueued(CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		<-done
		return ctx.Err()
	}
}
