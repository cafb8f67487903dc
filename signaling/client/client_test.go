package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ---- fake server ----

// fakeServer is a minimal stand-in for the real server: it upgrades
// connections on 127.0.0.1, decodes requests with package protocol and
// hands them, in order, to handle.
type fakeServer struct {
	t      *testing.T
	srv    *httptest.Server
	token  string // required bearer token; "" accepts any
	handle func(fc *fakeConn, req protocol.Request)

	conns chan *fakeConn // every accepted connection

	mu   sync.Mutex
	open map[*fakeConn]struct{}
	wg   sync.WaitGroup // handlers and their helper goroutines
}

// fakeConn is one server-side connection. Its writes take wmu: the fake
// favours brevity over the one-writer rule of the real server.
type fakeConn struct {
	fs     *fakeServer
	ws     *websocket.Conn
	header http.Header
	wmu    sync.Mutex
	pings  atomic.Int32 // pings received from the client
	pongs  atomic.Int32 // pongs received from the client
}

func newFake(t *testing.T, handle func(fc *fakeConn, req protocol.Request)) *fakeServer {
	t.Helper()
	fs := &fakeServer{
		t:      t,
		handle: handle,
		conns:  make(chan *fakeConn, 16),
		open:   make(map[*fakeConn]struct{}),
	}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve)) // listens on 127.0.0.1
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeServer) url() string { return "ws" + strings.TrimPrefix(fs.srv.URL, "http") + "/ws" }

func (fs *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	if fs.token != "" && r.Header.Get("Authorization") != "Bearer "+fs.token {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	fc := &fakeConn{fs: fs, ws: ws, header: r.Header.Clone()}
	fs.mu.Lock()
	fs.open[fc] = struct{}{}
	fs.wg.Add(1)
	fs.mu.Unlock()
	defer fs.wg.Done()
	defer func() {
		fs.mu.Lock()
		delete(fs.open, fc)
		fs.mu.Unlock()
		_ = ws.Close()
	}()
	ws.SetPingHandler(func(data string) error {
		fc.pings.Add(1)
		fc.wmu.Lock()
		defer fc.wmu.Unlock()
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	ws.SetPongHandler(func(string) error { fc.pongs.Add(1); return nil })
	select {
	case fs.conns <- fc:
	default:
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		req, derr := protocol.DecodeRequest(data)
		if derr != nil {
			fc.reply(req.ID, nil, derr)
			continue
		}
		if fs.handle != nil {
			fs.handle(fc, req)
		}
	}
}

// spawn runs f on a goroutine that close waits for.
func (fs *fakeServer) spawn(f func()) {
	fs.wg.Add(1)
	go func() {
		defer fs.wg.Done()
		f()
	}()
}

func (fs *fakeServer) close() {
	fs.srv.Close()
	fs.mu.Lock()
	for fc := range fs.open {
		_ = fc.ws.Close()
	}
	fs.mu.Unlock()
	fs.wg.Wait()
}

// conn returns the next accepted connection.
func (fs *fakeServer) conn(ctx context.Context) *fakeConn {
	fs.t.Helper()
	select {
	case fc := <-fs.conns:
		return fc
	case <-ctx.Done():
		fs.t.Fatal("no connection accepted")
		return nil
	}
}

func (fc *fakeConn) write(typ int, b []byte) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = fc.ws.WriteMessage(typ, b)
}

func (fc *fakeConn) reply(id string, result any, e *protocol.Error) {
	b, err := protocol.EncodeReply(id, result, e)
	if err != nil {
		panic(err)
	}
	fc.write(websocket.TextMessage, b)
}

func (fc *fakeConn) event(name string, data any) {
	b, err := protocol.EncodeEvent(name, data)
	if err != nil {
		panic(err)
	}
	fc.write(websocket.TextMessage, b)
}

func (fc *fakeConn) closeWith(code int, text string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	_ = fc.ws.Close()
}

func (fc *fakeConn) ping() {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
}

// echo replies with the request's args as the result.
func echo(fc *fakeConn, req protocol.Request) {
	var result any = json.RawMessage(req.Args)
	if len(req.Args) == 0 {
		result = nil
	}
	fc.reply(req.ID, result, nil)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, fs *fakeServer, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(testCtx(t), fs.url(), fs.token, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func waitDone(t *testing.T, c *Client, d time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(d):
		t.Fatalf("connection did not end within %v", d)
	}
}

// ---- requests ----

func TestDoMatchesRepliesUnderConcurrency(t *testing.T) {
	var n atomic.Int64
	fs := newFake(t, nil)
	fs.handle = func(fc *fakeConn, req protocol.Request) {
		// Reply out of order, after a varying delay.
		d := time.Duration(n.Add(1)%7) * time.Millisecond
		fs.spawn(func() {
			time.Sleep(d)
			echo(fc, req)
		})
	}
	c := dial(t, fs, WithSendQueue(4))
	ctx := testCtx(t)

	const goroutines, calls = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				type payload struct{ G, I int }
				var got payload
				if err := c.Do(ctx, "echo", payload{g, i}, &got); err != nil {
					errs <- err
					return
				}
				if got != (payload{g, i}) {
					errs <- fmt.Errorf("goroutine %d call %d got %+v", g, i, got)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := c.ExpectNoEvent(ctx, 20*time.Millisecond, AnyEvent); err != nil {
		t.Errorf("stray event or reply: %v", err)
	}
}

func TestErrorReplyIsSignalingError(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		fc.reply(req.ID, nil, protocol.ErrInvalidInviteID.WithMessage("invite %q is gone", "x1"))
	})
	c := dial(t, fs)
	err := c.Cancel(testCtx(t), "x1", "")
	if !errors.Is(err, protocol.ErrInvalidInviteID) {
		t.Fatalf("errors.Is(%v, ErrInvalidInviteID) = false", err)
	}
	if errors.Is(err, protocol.ErrNoPermission) {
		t.Errorf("errors.Is(%v, ErrNoPermission) = true", err)
	}
	var se *protocol.Error
	if !errors.As(err, &se) || se.Code != 8010 || se.Reason != "invalid_invite_id" || se.Message != `invite "x1" is gone` {
		t.Errorf("got %#v", se)
	}
}

func TestTypedOps(t *testing.T) {
	members := []protocol.MemberInfo{{UserID: "u1", JoinTime: 1700000000000}}
	groups := []protocol.GroupInfo{{GroupID: "g1", Name: "G", Owner: "u1", MemberCount: 2}}
	statuses := []protocol.UserStatus{{UserID: "bob", StatusType: protocol.StatusOnline, CustomStatus: "away"}}
	// Each op's args are decoded strictly, as the server does, and echoed
	// back for the test to compare.
	type seen struct {
		op   string
		args any
	}
	got := make(chan seen, 1)
	decode := func(req protocol.Request) (any, *protocol.Error) {
		switch req.Op {
		case protocol.OpInvite:
			return protocol.DecodeArgs[protocol.InviteArgs](req.Args)
		case protocol.OpInviteInGroup:
			return protocol.DecodeArgs[protocol.InviteInGroupArgs](req.Args)
		case protocol.OpCancel, protocol.OpAccept, protocol.OpReject, protocol.OpModifyInvitation:
			return protocol.DecodeArgs[protocol.InviteIDArgs](req.Args)
		case protocol.OpCreateGroup:
			return protocol.DecodeArgs[protocol.CreateGroupArgs](req.Args)
		case protocol.OpJoinGroup, protocol.OpQuitGroup, protocol.OpDismissGroup, protocol.OpGetGroupMemberList:
			return protocol.DecodeArgs[protocol.GroupIDArgs](req.Args)
		case protocol.OpInviteUserToGroup:
			return protocol.DecodeArgs[protocol.GroupUsersArgs](req.Args)
		case protocol.OpKickGroupMember:
			return protocol.DecodeArgs[protocol.KickArgs](req.Args)
		case protocol.OpGetJoinedGroupList:
			return protocol.DecodeArgs[struct{}](req.Args)
		case protocol.OpGetUserStatus, protocol.OpSubscribeUserStatus, protocol.OpUnsubscribeUserStatus:
			return protocol.DecodeArgs[protocol.UserIDListArgs](req.Args)
		case protocol.OpSetSelfStatus:
			return protocol.DecodeArgs[protocol.SetSelfStatusArgs](req.Args)
		}
		return nil, protocol.ErrUnknownOp
	}
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		args, derr := decode(req)
		if derr != nil {
			fc.reply(req.ID, nil, derr)
			return
		}
		got <- seen{req.Op, args}
		var result any
		switch req.Op {
		case protocol.OpInvite, protocol.OpInviteInGroup:
			result = protocol.InviteResult{InviteID: "inv-1"}
		case protocol.OpCreateGroup:
			result = protocol.GroupResult{GroupID: "g-new"}
		case protocol.OpGetGroupMemberList:
			result = protocol.MemberListResult{MemberList: members}
		case protocol.OpGetJoinedGroupList:
			result = protocol.GroupListResult{GroupList: groups}
		case protocol.OpGetUserStatus, protocol.OpSubscribeUserStatus:
			result = protocol.UserStatusResult{StatusList: statuses}
		}
		fc.reply(req.ID, result, nil)
	})
	c := dial(t, fs)
	ctx := testCtx(t)
	timeout := 30

	tests := []struct {
		op       string
		call     func() (any, error)
		wantArgs any
		want     any
	}{
		{protocol.OpInvite, func() (any, error) {
			return c.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Data: "d", OnlineUserOnly: true, Timeout: &timeout})
		}, protocol.InviteArgs{Invitee: "bob", Data: "d", OnlineUserOnly: true, Timeout: &timeout}, "inv-1"},
		{protocol.OpInviteInGroup, func() (any, error) {
			return c.InviteInGroup(ctx, protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"a", "b"}})
		}, protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"a", "b"}}, "inv-1"},
		{protocol.OpCancel, func() (any, error) { return nil, c.Cancel(ctx, "i1", "c") }, protocol.InviteIDArgs{InviteID: "i1", Data: "c"}, nil},
		{protocol.OpAccept, func() (any, error) { return nil, c.Accept(ctx, "i1", "a") }, protocol.InviteIDArgs{InviteID: "i1", Data: "a"}, nil},
		{protocol.OpReject, func() (any, error) { return nil, c.Reject(ctx, "i1", "r") }, protocol.InviteIDArgs{InviteID: "i1", Data: "r"}, nil},
		{protocol.OpModifyInvitation, func() (any, error) { return nil, c.ModifyInvitation(ctx, "i1", "m") }, protocol.InviteIDArgs{InviteID: "i1", Data: "m"}, nil},
		{protocol.OpCreateGroup, func() (any, error) {
			return c.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "g-new", Name: "N", MemberList: []string{"a"}, JoinOption: "invite"})
		}, protocol.CreateGroupArgs{GroupID: "g-new", Name: "N", MemberList: []string{"a"}, JoinOption: "invite"}, "g-new"},
		{protocol.OpJoinGroup, func() (any, error) { return nil, c.JoinGroup(ctx, "g1") }, protocol.GroupIDArgs{GroupID: "g1"}, nil},
		{protocol.OpQuitGroup, func() (any, error) { return nil, c.QuitGroup(ctx, "g1") }, protocol.GroupIDArgs{GroupID: "g1"}, nil},
		{protocol.OpInviteUserToGroup, func() (any, error) { return nil, c.InviteUserToGroup(ctx, "g1", []string{"x", "y"}) }, protocol.GroupUsersArgs{GroupID: "g1", UserList: []string{"x", "y"}}, nil},
		{protocol.OpKickGroupMember, func() (any, error) { return nil, c.KickGroupMember(ctx, "g1", []string{"x"}, "spam") }, protocol.KickArgs{GroupID: "g1", MemberList: []string{"x"}, Reason: "spam"}, nil},
		{protocol.OpDismissGroup, func() (any, error) { return nil, c.DismissGroup(ctx, "g1") }, protocol.GroupIDArgs{GroupID: "g1"}, nil},
		{protocol.OpGetGroupMemberList, func() (any, error) { return c.GetGroupMemberList(ctx, "g1") }, protocol.GroupIDArgs{GroupID: "g1"}, members},
		{protocol.OpGetJoinedGroupList, func() (any, error) { return c.GetJoinedGroupList(ctx) }, struct{}{}, groups},
		{protocol.OpGetUserStatus, func() (any, error) { return c.GetUserStatus(ctx, []string{"bob"}) }, protocol.UserIDListArgs{UserIDList: []string{"bob"}}, statuses},
		{protocol.OpSubscribeUserStatus, func() (any, error) { return c.SubscribeUserStatus(ctx, []string{"bob"}) }, protocol.UserIDListArgs{UserIDList: []string{"bob"}}, statuses},
		{protocol.OpUnsubscribeUserStatus, func() (any, error) { return nil, c.UnsubscribeUserStatus(ctx, nil) }, protocol.UserIDListArgs{UserIDList: []string{}}, nil},
		{protocol.OpSetSelfStatus, func() (any, error) { return nil, c.SetSelfStatus(ctx, "away") }, protocol.SetSelfStatusArgs{CustomStatus: "away"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			res, err := tt.call()
			if err != nil {
				t.Fatalf("%s: %v", tt.op, err)
			}
			s := <-got
			if s.op != tt.op || !jsonEqual(s.args, tt.wantArgs) {
				t.Errorf("server saw %s %+v, want %s %+v", s.op, s.args, tt.op, tt.wantArgs)
			}
			if tt.want != nil && !jsonEqual(res, tt.want) {
				t.Errorf("result %+v, want %+v", res, tt.want)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestDoContextCancelledWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	fs := newFake(t, nil)
	fs.handle = func(fc *fakeConn, req protocol.Request) {
		if req.Op == "slow" {
			fs.spawn(func() {
				select {
				case <-release:
				case <-time.After(5 * time.Second):
				}
				fc.reply(req.ID, map[string]string{"late": "yes"}, nil)
			})
			return
		}
		echo(fc, req)
	}
	c := dial(t, fs)
	ctx := testCtx(t)

	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.DoRaw(short, "slow-1", "slow", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DoRaw: %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("DoRaw returned after %v", el)
	}
	// The connection is still usable.
	if err := c.Do(ctx, "echo", nil, nil); err != nil {
		t.Fatalf("Do after cancel: %v", err)
	}
	// The late reply is not lost: it arrives as an unmatched reply.
	close(release)
	res, err := c.WaitReply(ctx, "slow-1")
	if err != nil || string(res) != `{"late":"yes"}` {
		t.Fatalf("WaitReply = %s, %v", res, err)
	}

	// A context already done fails before sending.
	done, cancel2 := context.WithCancel(ctx)
	cancel2()
	if err := c.Do(done, "echo", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Do with done ctx: %v", err)
	}
}

func TestServerEndsConnectionMidRequest(t *testing.T) {
	tests := []struct {
		name     string
		end      func(fc *fakeConn)
		wantCode int
	}{
		{"close frame", func(fc *fakeConn) { fc.closeWith(4001, "kicked") }, 4001},
		{"tcp drop", func(fc *fakeConn) { _ = fc.ws.NetConn().Close() }, 1006},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hung := make(chan struct{}, 2)
			fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
				if req.Op == "end" {
					fc.event("onBye", map[string]int{"n": 1})
					tt.end(fc)
					return
				}
				hung <- struct{}{} // "hang": never replies
			})
			c := dial(t, fs)
			ctx := testCtx(t)

			errs := make(chan error, 3)
			for range 2 {
				go func() { errs <- c.Do(ctx, "hang", nil, nil) }()
			}
			<-hung // the server holds both hanging calls
			<-hung
			go func() { errs <- c.Do(ctx, "end", nil, nil) }()
			for range 3 {
				if err := <-errs; !errors.Is(err, ErrClosed) {
					t.Errorf("waiter got %v, want ErrClosed", err)
				}
			}
			waitDone(t, c, 5*time.Second)
			if err := c.Err(); !errors.Is(err, ErrClosed) || CloseCode(err) != tt.wantCode {
				t.Errorf("Err() = %v (code %d), want ErrClosed with code %d", err, CloseCode(err), tt.wantCode)
			}
			// The event sent before the end is still delivered, then Events closes.
			if ev, err := c.Next(ctx); err != nil || ev.Name != "onBye" {
				t.Errorf("Next = %v, %v", ev, err)
			}
			if _, err := c.Next(ctx); !errors.Is(err, ErrClosed) {
				t.Errorf("Next after end: %v", err)
			}
			if _, ok := <-c.Events(); ok {
				t.Error("Events not closed")
			}
			if err := c.Do(ctx, "echo", nil, nil); !errors.Is(err, ErrClosed) {
				t.Errorf("Do after end: %v", err)
			}
			if err := c.SendRaw(ctx, []byte("{}")); !errors.Is(err, ErrClosed) {
				t.Errorf("SendRaw after end: %v", err)
			}
		})
	}
}

// ---- dialing ----

func TestDialUnauthorized(t *testing.T) {
	fs := newFake(t, echo)
	fs.token = "secret"
	ctx := testCtx(t)

	for _, tok := range []string{"", "wrong"} {
		c, err := Dial(ctx, fs.url(), tok)
		if c != nil {
			c.Close()
		}
		var de *DialError
		if !errors.As(err, &de) || de.Status != http.StatusUnauthorized || !strings.Contains(de.Body, "bad token") {
			t.Errorf("token %q: Dial error %v, want DialError 401", tok, err)
		}
	}

	c := dial(t, fs) // with fs.token
	if err := c.Do(ctx, "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDialSendsHeaders(t *testing.T) {
	fs := newFake(t, echo)
	fs.token = "tok"
	ctx := testCtx(t)
	dial(t, fs, WithHeader(http.Header{"Origin": {"http://example.test"}}), WithHandshakeTimeout(time.Second))
	fc := fs.conn(ctx)
	if got := fc.header.Get("Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization = %q", got)
	}
	if got := fc.header.Get("Origin"); got != "http://example.test" {
		t.Errorf("Origin = %q", got)
	}
}

func TestDialNetworkError(t *testing.T) {
	fs := newFake(t, nil)
	url := fs.url()
	fs.close()
	_, err := Dial(testCtx(t), url, "")
	var de *DialError
	if err == nil || errors.As(err, &de) {
		t.Fatalf("Dial to a closed server: %v", err)
	}
}

// ---- events ----

func TestEventsInOrder(t *testing.T) {
	const n = 300 // more than the event buffer: the reader waits, nothing is lost
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		fc.reply(req.ID, nil, nil)
		for i := range n {
			fc.event("onTick", map[string]int{"i": i})
		}
	})
	c := dial(t, fs, WithEventBuffer(16))
	ctx := testCtx(t)
	if err := c.Do(ctx, "burst", nil, nil); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		var ev Event
		select {
		case ev = <-c.Events():
		case <-ctx.Done():
			t.Fatalf("event %d not delivered", i)
		}
		var d struct{ I int }
		if err := ev.Decode(&d); err != nil || ev.Name != "onTick" || d.I != i {
			t.Fatalf("event %d: %v %+v %v", i, ev, d, err)
		}
	}
}

func TestFullEventBufferHoldsReplies(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		if req.Op == "burst" {
			for i := range 3 {
				fc.event("onTick", map[string]int{"i": i})
			}
		}
		fc.reply(req.ID, nil, nil)
	})
	c := dial(t, fs, WithEventBuffer(1))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() { done <- c.Do(ctx, "burst", nil, nil) }()
	select {
	case err := <-done:
		t.Fatalf("Do returned %v while the events before its reply were not drained", err)
	case <-time.After(100 * time.Millisecond):
	}
	for i := range 3 {
		if ev, err := c.Next(ctx); err != nil || ev.Name != "onTick" {
			t.Fatalf("Next %d: %v %v", i, ev, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWaitEventBacklog(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		fc.reply(req.ID, nil, nil)
		fc.event("onA", map[string]int{"n": 1})
		fc.event("onB", map[string]int{"n": 1})
		fc.event("onA", map[string]int{"n": 2})
		fc.event("onB", map[string]int{"n": 2})
		fc.event("onC", map[string]int{"n": 1})
	})
	c := dial(t, fs)
	ctx := testCtx(t)
	if err := c.Do(ctx, "go", nil, nil); err != nil {
		t.Fatal(err)
	}
	n := func(ev Event) int {
		var d struct{ N int }
		if err := ev.Decode(&d); err != nil {
			t.Fatal(err)
		}
		return d.N
	}

	// Skip ahead: onB n=2 (onA 1, onB 1, onA 2 go to the backlog).
	ev, err := c.WaitEvent(ctx, "onB", func(e Event) bool { return n(e) == 2 })
	if err != nil || n(ev) != 2 {
		t.Fatalf("WaitEvent onB n=2: %v %v", ev, err)
	}
	// The backlog is searched first.
	if ev, err := c.WaitEvent(ctx, "onA", func(e Event) bool { return n(e) == 2 }); err != nil || n(ev) != 2 {
		t.Fatalf("WaitEvent onA n=2: %v %v", ev, err)
	}
	// Absent event: fails on ctx, naming the backlog.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = c.WaitEvent(short, "onZ", nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "onA") {
		t.Fatalf("WaitEvent onZ: %v", err)
	}
	// ExpectNoEvent sees the backlog and new events, and keeps them.
	if err := c.ExpectNoEvent(ctx, 30*time.Millisecond, "onZ"); err != nil {
		t.Errorf("ExpectNoEvent onZ: %v", err)
	}
	if err := c.ExpectNoEvent(ctx, 30*time.Millisecond, "onA"); err == nil {
		t.Errorf("ExpectNoEvent onA: no error with onA in the backlog")
	}
	if err := c.ExpectNoEvent(ctx, 30*time.Millisecond, UnmatchedReply); err != nil {
		t.Errorf("ExpectNoEvent replies: %v", err)
	}
	// Next returns what is left, in wire order.
	var rest []string
	for range 3 {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, fmt.Sprintf("%s%d", ev.Name, n(ev)))
	}
	if got := strings.Join(rest, " "); got != "onA1 onB1 onC1" {
		t.Errorf("rest = %s", got)
	}
	if err := c.ExpectNoEvent(ctx, 30*time.Millisecond, AnyEvent); err != nil {
		t.Errorf("ExpectNoEvent any: %v", err)
	}
}

func TestWaitEventConcurrentWaiters(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		fc.reply(req.ID, nil, nil)
		for _, name := range []string{"onX", "onY", "onZ"} {
			fc.event(name, struct{}{})
		}
	})
	c := dial(t, fs)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for _, name := range []string{"onZ", "onY", "onX"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.WaitEvent(ctx, name, nil); err != nil {
				t.Errorf("WaitEvent %s: %v", name, err)
			}
		}()
	}
	if err := c.Do(ctx, "go", nil, nil); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// ---- raw frames and repeated ids ----

func TestSendRawUnmatchedReplies(t *testing.T) {
	fs := newFake(t, echo)
	c := dial(t, fs)
	ctx := testCtx(t)

	// Malformed JSON: the server cannot read an id and replies with "".
	if err := c.SendRaw(ctx, []byte(`{"id":`)); err != nil {
		t.Fatal(err)
	}
	_, err := c.WaitReply(ctx, "")
	if !errors.Is(err, protocol.ErrMalformedRequest) {
		t.Fatalf("reply to malformed frame: %v", err)
	}
	// A well-formed frame sent raw: its reply is unmatched too.
	if err := c.SendRaw(ctx, []byte(`{"id":"r1","op":"echo","args":{"k":1}}`)); err != nil {
		t.Fatal(err)
	}
	ev, err := c.WaitEvent(ctx, UnmatchedReply, nil)
	if err != nil || !ev.Reply || ev.ID != "r1" || ev.Err != nil || string(ev.Data) != `{"k":1}` {
		t.Fatalf("unmatched reply: %+v %v", ev, err)
	}
	var d struct{ K int }
	if err := ev.Decode(&d); err != nil || d.K != 1 {
		t.Errorf("Decode: %+v %v", d, err)
	}
	// DoRaw with an empty id still gets its reply.
	if _, err := c.DoRaw(ctx, "", "echo", nil); !errors.Is(err, protocol.ErrMalformedRequest) {
		t.Errorf("DoRaw with empty id: %v", err)
	}
}

func TestRepeatedIDs(t *testing.T) {
	var inFlight sync.Map
	received := make(chan struct{}, 4)
	release := make(chan struct{})
	fs := newFake(t, nil)
	fs.handle = func(fc *fakeConn, req protocol.Request) {
		_, dup := inFlight.LoadOrStore(req.ID, true)
		received <- struct{}{} // after deciding, so release cannot race the check
		if dup {
			fc.reply(req.ID, nil, protocol.ErrDuplicateID)
			return
		}
		fs.spawn(func() {
			<-release
			inFlight.Delete(req.ID)
			fc.reply(req.ID, map[string]string{"op": req.Op}, nil)
		})
	}
	c := dial(t, fs)
	ctx := testCtx(t)

	type res struct {
		raw json.RawMessage
		err error
	}
	results := make(chan res, 2)
	for range 2 {
		go func() {
			raw, err := c.DoRaw(ctx, "same", "work", json.RawMessage(`{}`))
			results <- res{raw, err}
		}()
	}
	<-received
	<-received
	close(release)
	var ok, dup int
	for range 2 {
		r := <-results
		switch {
		case r.err == nil && string(r.raw) == `{"op":"work"}`:
			ok++
		case errors.Is(r.err, protocol.ErrDuplicateID):
			dup++
		default:
			t.Errorf("unexpected result %s %v", r.raw, r.err)
		}
	}
	if ok != 1 || dup != 1 {
		t.Errorf("ok=%d dup=%d, want 1 and 1", ok, dup)
	}
	// Once answered, the id may be used again.
	if raw, err := c.DoRaw(ctx, "same", "work", nil); err != nil || string(raw) != `{"op":"work"}` {
		t.Errorf("reused id: %s %v", raw, err)
	}
}

// ---- liveness ----

func TestReadTimeoutDetectsSilentServer(t *testing.T) {
	fs := newFake(t, nil) // never writes, never pings
	c := dial(t, fs, WithReadTimeout(150*time.Millisecond), WithPingInterval(0))
	waitDone(t, c, 5*time.Second)
	err := c.Err()
	var ne net.Error
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrReadTimeout) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Err() = %v, want ErrClosed and a deadline", err)
	}
}

func TestServerPingsKeepConnectionAlive(t *testing.T) {
	fs := newFake(t, echo)
	// Silence longer than the read timeout, but a ping every tenth of it.
	c := dial(t, fs, WithReadTimeout(500*time.Millisecond), WithPingInterval(0))
	ctx := testCtx(t)
	fc := fs.conn(ctx)
	for range 25 {
		fc.ping()
		time.Sleep(50 * time.Millisecond) // the test's clock
	}
	if err := c.Do(ctx, "echo", nil, nil); err != nil {
		t.Fatalf("connection died despite pings: %v", err)
	}
	if fc.pongs.Load() == 0 {
		t.Error("client never answered a ping")
	}
}

func TestClientPingsKeepConnectionAlive(t *testing.T) {
	fs := newFake(t, echo)
	c := dial(t, fs, WithReadTimeout(500*time.Millisecond), WithPingInterval(50*time.Millisecond))
	ctx := testCtx(t)
	fc := fs.conn(ctx)
	select {
	case <-c.Done():
		t.Fatalf("connection died: %v", c.Err())
	case <-time.After(1200 * time.Millisecond):
	}
	if err := c.Do(ctx, "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := fc.pings.Load(); n < 3 {
		t.Errorf("server saw %d pings", n)
	}
}

// ---- protocol errors ----

func TestServerProtocolErrors(t *testing.T) {
	tests := []struct {
		name  string
		typ   int
		frame string
	}{
		{"not json", websocket.TextMessage, "hello"},
		{"neither reply nor event", websocket.TextMessage, `{"foo":1}`},
		{"binary", websocket.BinaryMessage, `{"event":"onA","data":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
				fc.write(tt.typ, []byte(tt.frame))
			})
			c := dial(t, fs)
			err := c.Do(testCtx(t), "x", nil, nil)
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("Do: %v", err)
			}
			var pe *ProtocolError
			if !errors.As(c.Err(), &pe) {
				t.Errorf("Err() = %v, want a ProtocolError", c.Err())
			}
		})
	}
}

// ---- closing ----

func TestCloseIsIdempotentAndEndsEverything(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		fc.reply(req.ID, nil, nil)
		for range 10 {
			fc.event("onTick", struct{}{})
		}
	})
	// A full event buffer nobody drains must not stop Close.
	c := dial(t, fs, WithEventBuffer(1))
	ctx := testCtx(t)
	if err := c.SendRaw(ctx, []byte(`{"id":"x","op":"go"}`)); err != nil {
		t.Fatal(err)
	}
	for len(c.Events()) < cap(c.Events()) { // the reader is now stuck on the next event
		if ctx.Err() != nil {
			t.Fatal("event buffer never filled")
		}
		time.Sleep(time.Millisecond)
	}

	hang := make(chan error, 1)
	go func() { hang <- c.Do(ctx, "never", nil, nil) }()

	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v", el)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := c.Err(); err != ErrClosed {
		t.Errorf("Err() = %v, want ErrClosed", err)
	}
	if err := <-hang; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Do: %v", err)
	}
	if err := c.Do(ctx, "echo", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
}

func TestCloseWithUnresponsiveServer(t *testing.T) {
	// A raw TCP listener that accepts the upgrade but never reads again.
	stop := make(chan struct{})
	fs := newFake(t, nil)
	fs.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		<-stop
	})
	defer close(stop)
	c := dial(t, fs, WithCloseTimeout(100*time.Millisecond))
	start := time.Now()
	_ = c.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v", el)
	}
	if err := c.Err(); err != ErrClosed {
		t.Errorf("Err() = %v", err)
	}
}

// ---- decoding ----

func TestParseFrame(t *testing.T) {
	tests := []struct {
		in      string
		want    Event
		isReply bool
		bad     bool
	}{
		{`{"event":"onA","data":{"x":1}}`, Event{Name: "onA", Data: json.RawMessage(`{"x":1}`)}, false, false},
		{`{"id":"1","result":{"k":2}}`, Event{Reply: true, ID: "1", Data: json.RawMessage(`{"k":2}`)}, true, false},
		{`{"id":"2","error":{"code":8010,"reason":"invalid_invite_id","message":"m"}}`,
			Event{Reply: true, ID: "2", Err: &protocol.Error{Code: 8010, Reason: "invalid_invite_id", Message: "m"}}, true, false},
		{`{"id":"3"}`, Event{Reply: true, ID: "3"}, true, false},
		{`{"id":"4","result":{},"error":{"code":1}}`, Event{}, false, true},
		{`{"id":"5","event":"onA"}`, Event{}, false, true},
		{`{"id":5,"result":{}}`, Event{}, false, true},
		{`[]`, Event{}, false, true},
		{`{}`, Event{}, false, true},
	}
	for _, tt := range tests {
		ev, isReply, perr := parseFrame([]byte(tt.in))
		if (perr != nil) != tt.bad {
			t.Errorf("%s: error %v, want bad=%v", tt.in, perr, tt.bad)
			continue
		}
		if tt.bad {
			continue
		}
		if isReply != tt.isReply || ev.String() != tt.want.String() || ev.Name != tt.want.Name || !errors.Is(ev.Err, tt.want.Err) && (ev.Err != nil || tt.want.Err != nil) {
			t.Errorf("%s: got %+v reply=%v, want %+v", tt.in, ev, isReply, tt.want)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"event":"onA","data":{}}`, `{"id":"1","result":{}}`, `{"id":"1","error":{"code":1,"reason":"r","message":"m"}}`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, isReply, perr := parseFrame(data)
		if perr != nil {
			if len(perr.Frame) > 256 {
				t.Errorf("frame not truncated: %d bytes", len(perr.Frame))
			}
			return
		}
		if isReply != ev.Reply || (isReply && ev.Name != UnmatchedReply) {
			t.Errorf("inconsistent %+v reply=%v", ev, isReply)
		}
		if ev.Err != nil && ev.Data != nil {
			t.Errorf("reply with both error and data: %+v", ev)
		}
	})
}

// TestObserveSeesEventsThatGoOn: observers of a name see each of its events
// in order, before the event goes on to its route or to Events; a removed
// observer sees no more, the others still do.
func TestObserveSeesEventsThatGoOn(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn, req protocol.Request) {
		var n struct{ N int }
		_ = json.Unmarshal(req.Args, &n)
		for i := range n.N {
			fc.event("onTick", map[string]int{"i": i})
			fc.event("onRouted", map[string]int{"i": i})
		}
		fc.reply(req.ID, nil, nil)
	})
	c := dial(t, fs)
	ctx := testCtx(t)
	var mu sync.Mutex
	var first, second, routed []int
	rec := func(to *[]int) func(Event) {
		return func(ev Event) {
			var d struct{ I int }
			_ = ev.Decode(&d)
			mu.Lock()
			*to = append(*to, d.I)
			mu.Unlock()
		}
	}
	removeFirst := c.Observe("onTick", rec(&first))
	c.Observe("onTick", rec(&second))
	c.Observe("onRouted", rec(&routed))
	c.Handle("onRouted", func(Event) {})
	if err := c.Do(ctx, "burst", map[string]int{"n": 3}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ev, err := c.WaitEvent(ctx, "onTick", nil)
		var d struct{ I int }
		if err != nil || ev.Decode(&d) != nil || d.I != i {
			t.Fatalf("onTick %d on Events: %v %v", i, ev, err)
		}
	}
	removeFirst()
	if err := c.Do(ctx, "burst", map[string]int{"n": 2}, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(first, []int{0, 1, 2}) || !slices.Equal(second, []int{0, 1, 2, 0, 1}) || !slices.Equal(routed, []int{0, 1, 2, 0, 1}) {
		t.Fatalf("observed: first %v, second %v, routed %v", first, second, routed)
	}
	if err := c.ExpectNoEvent(ctx, 0, "onRouted"); err != nil {
		t.Fatalf("a routed event reached Events: %v", err)
	}
}
