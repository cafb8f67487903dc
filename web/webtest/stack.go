// Package webtest starts the whole Switchboard stack in-process for tests:
// signaling engine, SFU on loopback, rooms, calls, and the HTTP/WebSocket
// transport on an httptest listener, wired as cmd/switchboard wires them.
package webtest

import (
	"context"
	"log/slog"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/web"
)

// Secret is the HS256 key of every test stack.
var Secret = []byte("webtest-secret-0123456789abcdef-0123456789")

// Options change the stack's configuration; zero values take the defaults.
type Options struct {
	Signaling *signaling.Config
	Web       *web.Config
	Calls     *calls.Config
	Rooms     rooms.Config
	Media     media.Config // ListenIP and IncludeLoopback are forced to loopback
	Store     signaling.Store
	Records   calls.RecordStore
	Clock     signaling.Clock // for calls; nil: the system clock
	Logger    *slog.Logger
	DevTokens bool
	// DevTokenTTL is the lifetime of dev tokens (web.Params.DevTokenTTL);
	// 0: the server's default.
	DevTokenTTL time.Duration
	// Metrics instruments the stack and serves /metrics.
	Metrics bool
}

// Stack is a running server.
type Stack struct {
	T       testing.TB
	Auth    *web.Authenticator
	Engine  *signaling.Engine
	SFU     *media.SFU
	Rooms   *rooms.Manager
	Calls   *calls.Manager
	Server  *web.Server
	Metrics *web.Metrics // nil unless Options.Metrics
	HTTP    *httptest.Server
	URL     string // ws://127.0.0.1:port/ws

	stopped bool
}

// Start starts a stack that stops when the test ends.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sigCfg := signaling.DefaultConfig()
	if o.Signaling != nil {
		sigCfg = *o.Signaling
	}
	webCfg := web.DefaultConfig()
	webCfg.MaxConnsPerUser = sigCfg.Limits.ConnectionsPerUser
	if o.Web != nil {
		webCfg = *o.Web
	}
	callCfg := calls.DefaultConfig()
	callCfg.Heartbeat = 0
	if o.Calls != nil {
		callCfg = *o.Calls
	}
	if o.Store == nil {
		o.Store = signaling.NewMemoryStore()
	}
	if o.Records == nil {
		o.Records = calls.NewMemoryRecords()
	}
	s := &Stack{T: t}
	var err error
	if s.Auth, err = web.NewAuthenticator(web.AuthConfig{Secret: Secret, Dev: o.DevTokens}); err != nil {
		t.Fatal(err)
	}
	health := web.WatchStore(o.Store)
	o.Store = health
	if o.Metrics {
		s.Metrics = web.NewMetrics()
		o.Store = s.Metrics.InstrumentStore(o.Store)
	}
	if s.Engine, err = signaling.NewEngine(context.Background(), signaling.Params{Config: sigCfg, Store: o.Store, Logger: log}); err != nil {
		t.Fatal(err)
	}
	o.Media.ListenIP, o.Media.IncludeLoopback = "127.0.0.1", true
	if s.SFU, err = media.New(o.Media, log); err != nil {
		t.Fatal(err)
	}
	s.Rooms = rooms.NewManager(rooms.Params{Config: o.Rooms, SFU: s.SFU, Tokens: s.Auth, Logger: log})
	cp := calls.Params{Config: callCfg, Engine: s.Engine, Rooms: s.Rooms, Records: o.Records, Clock: o.Clock, Logger: log}
	if s.Metrics != nil {
		cp.Metrics = s.Metrics
	}
	if s.Calls, err = calls.NewManager(context.Background(), cp); err != nil {
		t.Fatal(err)
	}
	if s.Metrics != nil {
		s.Engine.AddObserver(s.Metrics)
		s.Metrics.Watch(s.Calls, s.Rooms, s.SFU)
	}
	ops := s.Engine.Ops()
	maps.Copy(ops, s.Calls.Ops())
	if ops, err = web.MergeOps(ops, s.Rooms.Ops()); err != nil {
		t.Fatal(err)
	}
	if s.Server, err = web.New(web.Params{Config: webCfg, Auth: s.Auth, DevTokens: o.DevTokens, DevTokenTTL: o.DevTokenTTL, Engine: s.Engine, Ops: ops,
		OnSessionClosed: []func(signaling.Session){s.Rooms.SessionClosed}, Logger: log, Health: health,
		Metrics: s.Metrics, ServeMetrics: s.Metrics != nil}); err != nil {
		t.Fatal(err)
	}
	s.HTTP = httptest.NewServer(s.Server.Handler())
	s.URL = "ws" + strings.TrimPrefix(s.HTTP.URL, "http") + "/ws"
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the stack down in the order cmd/switchboard does.
func (s *Stack) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Calls.Close()
	_ = s.Server.Shutdown(ctx)
	s.HTTP.Close()
	s.Rooms.Close()
	_ = s.SFU.Close()
	s.Engine.Close()
}

// Token issues a session token for user.
func (s *Stack) Token(user string) string {
	tok, _, err := s.Auth.Issue(user, "", time.Hour)
	if err != nil {
		s.T.Fatal(err)
	}
	return tok
}

// RoomToken issues a room token.
func (s *Stack) RoomToken(user, room string) string {
	tok, _, err := s.Auth.Issue(user, room, time.Hour)
	if err != nil {
		s.T.Fatal(err)
	}
	return tok
}

// Dial connects user; the client closes when the test ends.
func (s *Stack) Dial(user string, opts ...client.Option) *client.Client {
	s.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.URL, s.Token(user), append([]client.Option{client.WithPingInterval(0)}, opts...)...)
	if err != nil {
		s.T.Fatalf("dial %s: %v", user, err)
	}
	s.T.Cleanup(func() { _ = c.Close() })
	return c
}

// PeerConfig is a light synthetic media participant on loopback.
func PeerConfig() peer.Config {
	return peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true, VideoBitrate: 100_000, VideoFPS: 10}
}

// RunningCall is a one-to-one call set up by StartCall.
type RunningCall struct {
	calls.CallResult
	Caller, Callee *roomclient.Room // both in the call's room, media flowing
}

// StartCall sets up a running one-to-one video call from caller to callee
// (whose user ID is calleeID), as the seed's steps 1-4 do: call, the caller
// enters the room, the callee rings, accepts and enters; it returns once
// the caller got onCallBegin. The rooms close when the test ends.
func (s *Stack) StartCall(caller, callee *client.Client, calleeID string) RunningCall {
	s.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rc RunningCall
	if err := caller.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: calleeID}, &rc.CallResult); err != nil {
		s.T.Fatalf("call: %v", err)
	}
	var err error
	if rc.Caller, err = roomclient.Enter(ctx, caller, rc.RoomID, roomclient.Options{Peer: PeerConfig()}); err != nil {
		s.T.Fatalf("caller enters: %v", err)
	}
	s.T.Cleanup(rc.Caller.Close)
	ring := func(ev client.Event) bool {
		var v signaling.NewInvitationEvent
		return ev.Decode(&v) == nil && v.InviteID == rc.CallID
	}
	if _, err := callee.WaitEvent(ctx, signaling.EvReceiveNewInvitation, ring); err != nil {
		s.T.Fatalf("callee rings: %v", err)
	}
	if err := callee.Accept(ctx, rc.CallID, ""); err != nil {
		s.T.Fatalf("accept: %v", err)
	}
	if rc.Callee, err = roomclient.Enter(ctx, callee, rc.RoomID, roomclient.Options{Peer: PeerConfig()}); err != nil {
		s.T.Fatalf("callee enters: %v", err)
	}
	s.T.Cleanup(rc.Callee.Close)
	if _, err := caller.WaitEvent(ctx, calls.EvCallBegin, nil); err != nil {
		s.T.Fatalf("onCallBegin: %v", err)
	}
	return rc
}
