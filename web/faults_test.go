package web_test

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// cutProxy forwards one TCP connection on loopback until cut, after which
// it silently drops everything in both directions without closing: a
// network cut, as a phone that loses coverage.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		if p.cut.Load() {
			continue // dropped on the floor
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestVanishedClientEndsItsCall: a client whose network is cut (no close,
// no FIN) is detected within the pong timeout; the other side is told, and
// the call it was in ends with its duration.
func TestVanishedClientEndsItsCall(t *testing.T) {
	wc := web.DefaultConfig()
	wc.PingInterval, wc.PongTimeout = 100*time.Millisecond, 600*time.Millisecond
	s := webtest.Start(t, webtest.Options{Web: &wc})
	ctx := testCtx(t)
	alice := s.Dial("alice")
	proxy := newCutProxy(t, strings.TrimPrefix(s.HTTP.URL, "http://"))
	bob, err := client.Dial(ctx, "ws://"+proxy.ln.Addr().String()+"/ws", s.Token("bob"), client.WithPingInterval(0), client.WithReadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	// The call is up once media flows both ways: bob is a connected member
	// of its room when his network goes.
	call := s.StartCall(alice, bob, "bob")
	waitMedia(t, call.Caller, "bob")
	waitMedia(t, call.Callee, "alice")

	cut := time.Now()
	proxy.cut.Store(true) // bob's phone loses the network: nothing closes
	ev := waitFor(t, alice, rooms.EvRemoteUserLeaveRoom, nil)
	detected := time.Since(cut)
	var leave rooms.RemoteLeaveEvent
	_ = ev.Decode(&leave)
	if leave.UserID != "bob" || leave.Reason != int(rooms.LeaveConnectionLost) {
		t.Fatalf("leave %+v", leave)
	}
	if detected > wc.PongTimeout+wc.PingInterval+500*time.Millisecond {
		t.Fatalf("detected after %v; the pong timeout is %v", detected, wc.PongTimeout)
	}
	ev = waitFor(t, alice, calls.EvCallEnd, nil)
	var end calls.EndEvent
	_ = ev.Decode(&end)
	if end.Reason != "connection_lost" || end.EndedBy != "bob" || end.DurationMs <= 0 || end.Result != calls.ResultCompleted {
		t.Fatalf("end %+v", end)
	}
	t.Logf("cut detected after %v (pong timeout %v); call lasted %d ms", detected, wc.PongTimeout, end.DurationMs)
}

// TestStalledReaderDoesNotSlowOthers: one client that never reads is
// flooded while many others make calls; their latency stays that of a run
// without the stalled client, and the stalled one is dropped.
func TestStalledReaderDoesNotSlowOthers(t *testing.T) {
	wc := web.DefaultConfig()
	wc.SendQueue = 16
	wc.RequestsPerSec, wc.RequestBurst = 1e6, 1e6
	sc := signaling.DefaultConfig()
	sc.Limits.MaxDataBytes = 60000
	sc.Limits.MaxPendingPerInviter = 0 // the flood's invitations stay live until they time out
	s := webtest.Start(t, webtest.Options{Web: &wc, Signaling: &sc})
	ctx := testCtx(t)
	const pairs = 10
	const rounds = 20
	callers := make([]*client.Client, pairs)
	callees := make([]*client.Client, pairs)
	for i := range pairs {
		callers[i] = s.Dial("caller" + string(rune('a'+i)))
		callees[i] = s.Dial("callee" + string(rune('a'+i)))
	}
	measure := func() []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for i := range pairs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				callee := "callee" + string(rune('a'+i))
				for range rounds {
					sent := time.Now()
					id, err := callers[i].Invite(ctx, protocol.InviteArgs{Invitee: callee, Timeout: ptr(0)})
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := callees[i].WaitEvent(ctx, protocol.EvReceiveNewInvitation, byInvite(id)); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(sent))
					mu.Unlock()
					if err := callees[i].Accept(ctx, id, ""); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		slices.Sort(lat)
		return lat
	}
	base := measure()

	// The stalled reader: a raw socket with tiny buffers that never reads.
	d := websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 256}
	stalled, _, err := d.Dial(s.URL, http.Header{"Authorization": {"Bearer " + s.Token("stalled")}})
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	waitAttached(t, s.Engine, "stalled") // the upgrade completes before the engine knows the session
	flooder := s.Dial("flooder")
	stop := make(chan struct{})
	var fl sync.WaitGroup
	fl.Add(1)
	go func() {
		defer fl.Done()
		big := strings.Repeat("z", 50000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := flooder.Invite(ctx, protocol.InviteArgs{Invitee: "stalled", Data: big, OnlineUserOnly: true, Timeout: ptr(1)}); err != nil {
				return
			}
		}
	}()
	if s.Engine.Online("stalled") == 0 {
		t.Fatal("the stalled reader was dropped before the measurement")
	}
	withStall := measure()
	// Keep flooding until its queue overflows and the server drops it.
	deadline := time.Now().Add(15 * time.Second)
	for s.Engine.Online("stalled") != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	fl.Wait()
	p := func(l []time.Duration, q float64) time.Duration { return l[int(q*float64(len(l)-1))] }
	t.Logf("ring latency without / with a stalled reader: p50 %v / %v, p99 %v / %v (%d samples each)",
		p(base, .5), p(withStall, .5), p(base, .99), p(withStall, .99), len(base))
	if s.Engine.Online("stalled") != 0 {
		t.Fatal("the stalled reader was never dropped")
	}
	// Bounded, not timed: the others' worst case stays far from the
	// stalled peer's write timeout (10 s), which is what a blocking fan-out
	// would cost them.
	if worst := withStall[len(withStall)-1]; worst > 2*time.Second {
		t.Fatalf("worst ring latency %v with a stalled reader among the clients", worst)
	}
}

// TestStoreFailureGivesErrorReplies: when the store fails, requests get
// store_unavailable (9500), the connection stays, nothing changes; when
// the store recovers, the same request id succeeds.
func TestStoreFailureGivesErrorReplies(t *testing.T) {
	st := signaling.NewMemoryStore()
	s := webtest.Start(t, webtest.Options{Store: st})
	ctx := testCtx(t)
	a, b := s.Dial("alice"), s.Dial("bob")
	// A reply means the connection is attached: its first attach wrote
	// the user as known before the failure is injected.
	for _, c := range []*client.Client{a, b} {
		if _, err := c.GetJoinedGroupList(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st.FailNext(1)
	_, err := a.DoRaw(ctx, "req-1", protocol.OpInvite, []byte(`{"invitee":"bob","data":"x"}`))
	if !errors.Is(err, protocol.ErrStoreUnavailable) {
		t.Fatalf("got %v, want store_unavailable", err)
	}
	if err := b.ExpectNoEvent(ctx, 100*time.Millisecond, protocol.EvReceiveNewInvitation); err != nil {
		t.Fatalf("bob rang for an invitation that was not stored: %v", err)
	}
	// The same id is retried once the store works again.
	if _, err := a.DoRaw(ctx, "req-1", protocol.OpInvite, []byte(`{"invitee":"bob","data":"x"}`)); err != nil {
		t.Fatalf("retry after recovery: %v", err)
	}
	if _, err := b.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
}
