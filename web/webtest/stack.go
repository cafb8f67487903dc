// Package webtest starts the whole Switchboard stack in-process for tests:
// signaling engine, SFU on loopback, rooms, calls, and the HTTP/WebSocket
// transport on an httptest listener, built by web/stack as cmd/switchboard
// builds it, from the embedded defaults changed by Options. It also drives
// headless Chromium for browser tests (browser.go, demo.go).
package webtest

import (
	"context"
	"log/slog"
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
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

// Secret is the HS256 key of every test stack.
var Secret = []byte("webtest-secret-0123456789abcdef-0123456789")

// Options change the stack's configuration; nil and zero values take the
// embedded defaults, except where noted.
type Options struct {
	Signaling *signaling.Config // with its Limits
	Web       *web.Config       // with its Limits; MaxConnsPerUser comes from Signaling
	Calls     *calls.Config     // nil: the defaults without heartbeat
	Rooms     rooms.Config      // zero: no room limits
	Media     media.Config      // ListenIP and IncludeLoopback are forced to loopback; zero UDPPort: any
	Store     signaling.Store   // nil: a memory store
	Records   calls.RecordStore // nil: memory records
	Clock     protocol.Clock    // nil: the system clock
	Logger    *slog.Logger
	DevTokens bool
	// DevTokenTTL is the lifetime of dev tokens; 0: the default.
	DevTokenTTL time.Duration
	// Metrics instruments the stack and serves /metrics.
	Metrics bool
	// RoomsClock is the rooms' clock (connect timeouts); nil: the system clock.
	RoomsClock protocol.Clock
	// TURN starts the embedded TURN server on loopback (free UDP and TCP
	// ports, relay IP 127.0.0.1); its credentials come with enterRoom.
	TURN bool
	// Webhooks is the webhooks section; nil: none (off).
	Webhooks *webhook.Config
	// WebhookQueue holds the webhook deliveries; nil: a memory queue.
	WebhookQueue webhook.Queue
}

// Stack is a running server.
type Stack struct {
	*stack.Stack
	T    testing.TB
	HTTP *httptest.Server
	URL  string // ws://127.0.0.1:port/ws

	stopped bool
}

// Start starts a stack that stops when the test ends.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	cfg, err := stack.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth = web.AuthConfig{Secret: Secret, Dev: o.DevTokens, DevTokenTTL: cfg.Auth.DevTokenTTL}
	if o.DevTokenTTL != 0 {
		cfg.Auth.DevTokenTTL = o.DevTokenTTL
	}
	if o.Signaling != nil {
		cfg.Signaling, cfg.Limits.Signaling = *o.Signaling, o.Signaling.Limits
	}
	if o.Web != nil {
		cfg.Server.Web, cfg.Limits.Web = *o.Web, o.Web.Limits
	}
	cfg.Calls.Heartbeat = 0
	if o.Calls != nil {
		cfg.Calls = *o.Calls
	}
	cfg.Limits.Rooms = o.Rooms
	cfg.Media = stack.MediaConfig{SFU: o.Media, ConnectTimeout: o.Rooms.ConnectTimeout, RejoinGrace: o.Rooms.RejoinGrace}
	cfg.Media.SFU.ListenIP, cfg.Media.SFU.IncludeLoopback = "127.0.0.1", true
	cfg.Limits.MaxTracksPerParticipant = o.Media.MaxTracksPerParticipant
	cfg.Metrics = stack.MetricsConfig{Enabled: o.Metrics}
	if o.TURN {
		cfg.TURN.Enabled, cfg.TURN.UDPPort, cfg.TURN.TCPPort, cfg.TURN.ListenIP = true, 0, 0, "127.0.0.1"
	}
	if o.Webhooks != nil {
		cfg.Webhooks = *o.Webhooks
	}
	if o.Store == nil {
		o.Store = signaling.NewMemoryStore()
	}
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Logger: o.Logger, Store: o.Store, Records: o.Records, Clock: o.Clock, RoomsClock: o.RoomsClock,
		WebhookQueue: o.WebhookQueue})
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{Stack: st, T: t}
	s.HTTP = httptest.NewServer(s.Handler())
	s.URL = "ws" + strings.TrimPrefix(s.HTTP.URL, "http") + "/ws"
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the stack down as cmd/switchboard does.
func (s *Stack) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
	s.HTTP.Close()
	_ = s.Close()
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
// (whose user ID is calleeID), as TRTC's steps 1-4 do: call, the caller
// enters the room, the callee rings, accepts and enters; it returns once
// the caller got onCallBegin. The rooms close when the test ends.
func (s *Stack) StartCall(caller, callee *client.Client, calleeID string) RunningCall {
	s.T.Helper()
	return s.StartCallWith(caller, callee, calleeID, PeerConfig())
}

// StartCallWith is StartCall with both participants' media configured by pc.
func (s *Stack) StartCallWith(caller, callee *client.Client, calleeID string, pc peer.Config) RunningCall {
	s.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rc RunningCall
	if err := caller.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: calleeID}, &rc.CallResult); err != nil {
		s.T.Fatalf("call: %v", err)
	}
	var err error
	if rc.Caller, err = roomclient.Enter(ctx, caller, rc.RoomID, roomclient.Options{Peer: pc}); err != nil {
		s.T.Fatalf("caller enters: %v", err)
	}
	s.T.Cleanup(rc.Caller.Close)
	ring := func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		return ev.Decode(&v) == nil && v.InviteID == rc.CallID
	}
	if _, err := callee.WaitEvent(ctx, protocol.EvReceiveNewInvitation, ring); err != nil {
		s.T.Fatalf("callee rings: %v", err)
	}
	if err := callee.Accept(ctx, rc.CallID, ""); err != nil {
		s.T.Fatalf("accept: %v", err)
	}
	if rc.Callee, err = roomclient.Enter(ctx, callee, rc.RoomID, roomclient.Options{Peer: pc}); err != nil {
		s.T.Fatalf("callee enters: %v", err)
	}
	s.T.Cleanup(rc.Callee.Close)
	if _, err := caller.WaitEvent(ctx, calls.EvCallBegin, nil); err != nil {
		s.T.Fatalf("onCallBegin: %v", err)
	}
	return rc
}
