package web_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
)

// Transport hot-path benchmarks: one request through a real server over
// loopback (read, decode, perform, encode, queue, write), and one complete
// call setup. The engine runs on a MemoryStore so that the figures are the
// transport's and the engine's, not SQLite's; cmd/switchboard-bench measures
// the whole server under load.

type benchStack struct {
	engine *signaling.Engine
	srv    *web.Server
	http   *httptest.Server
	auth   *web.Authenticator
}

func newBenchStack(b *testing.B) *benchStack {
	b.Helper()
	quietLog := slog.New(slog.DiscardHandler)
	auth, err := web.NewAuthenticator(web.AuthConfig{Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	engine, err := signaling.NewEngine(context.Background(), signaling.Params{
		Config: signaling.DefaultConfig(), Store: signaling.NewMemoryStore(), Logger: quietLog,
	})
	if err != nil {
		b.Fatal(err)
	}
	cfg := web.DefaultConfig()
	cfg.RequestsPerSec, cfg.RequestBurst = 1e9, 1e9 // the limiter is policy, not cost
	srv, err := web.New(web.Params{Config: cfg, Auth: auth, Engine: engine, Logger: quietLog})
	if err != nil {
		engine.Close()
		b.Fatal(err)
	}
	st := &benchStack{engine: engine, srv: srv, http: httptest.NewServer(srv.Handler()), auth: auth}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		st.http.Close()
		engine.Close()
	})
	return st
}

func (st *benchStack) dial(b *testing.B, user string) *websocket.Conn {
	b.Helper()
	tok, _, err := st.auth.Issue(user, "", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	u := "ws" + strings.TrimPrefix(st.http.URL, "http") + "/ws"
	c, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// benchFrame is any server frame, decoded as far as the benchmarks need.
type benchFrame struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Error *protocol.Error `json:"error"`
	Data  struct {
		InviteID string `json:"inviteID"`
	} `json:"data"`
}

// readUntil reads frames until match returns true.
func readUntil(b *testing.B, c *websocket.Conn, match func(benchFrame) bool) benchFrame {
	b.Helper()
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		var f benchFrame
		if err := json.Unmarshal(data, &f); err != nil {
			b.Fatal(err)
		}
		if f.Error != nil {
			b.Fatalf("error reply: %v", f.Error)
		}
		if match(f) {
			return f
		}
	}
}

func send(b *testing.B, c *websocket.Conn, frame string) {
	b.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRequestReply is one request and its reply over a real
// connection: getJoinedGroupList, an op with no store write.
func BenchmarkRequestReply(b *testing.B) {
	st := newBenchStack(b)
	c := st.dial(b, "alice")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := strconv.Itoa(i)
		send(b, c, `{"id":"`+id+`","op":"getJoinedGroupList"}`)
		readUntil(b, c, func(f benchFrame) bool { return f.ID == id })
	}
}

// BenchmarkCallSetup is a complete call setup over two real connections:
// invite, ring at the callee, accept, onInviteeAccepted at the caller (and
// both replies).
func BenchmarkCallSetup(b *testing.B) {
	st := newBenchStack(b)
	caller, callee := st.dial(b, "caller"), st.dial(b, "callee")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := strconv.Itoa(i)
		send(b, caller, `{"id":"`+id+`","op":"invite","args":{"invitee":"callee","data":"{\"bench\":1}","timeout":30}}`)
		ring := readUntil(b, callee, func(f benchFrame) bool { return f.Event == protocol.EvReceiveNewInvitation })
		send(b, callee, `{"id":"`+id+`","op":"accept","args":{"inviteID":"`+ring.Data.InviteID+`"}}`)
		readUntil(b, callee, func(f benchFrame) bool { return f.ID == id })
		readUntil(b, caller, func(f benchFrame) bool { return f.Event == protocol.EvInviteeAccepted })
	}
}
