package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// serverBinary builds cmd/switchboard once per test run.
func serverBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "switchboard")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// oneShot makes requests without keep-alive, so that no idle connection
// outlives a test (goleak).
var oneShot = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

const procSecret = "process-test-secret-0123456789abcdef"

// proc is the real server binary running as a child process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	done chan error
}

func startProc(t *testing.T, db string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--server.addr=127.0.0.1:0", "--store.path=" + db, "--media.udp_port=0",
		"--media.listen_ip=127.0.0.1", "--auth.secret=" + procSecret, "--log.format=json", "--log.level=info",
		"--server.shutdown_timeout=5s", "--metrics.addr=127.0.0.1:0"}, extra...)
	cmd := exec.Command(serverBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "switchboard serving" {
				addrc <- strings.TrimPrefix(strings.TrimPrefix(line.URL, "http://"), "https://")
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.addr = <-addrc:
	case err := <-p.done:
		t.Fatalf("server exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	return p
}

func (p *proc) url() string { return "ws://" + p.addr + "/ws" }

func (p *proc) token(user string) string {
	p.t.Helper()
	res, err := oneShot.Get("http://" + p.addr + "/api/dev/token?user=" + user)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		p.t.Fatal(err)
	}
	return out.Token
}

func (p *proc) dial(user string) *client.Client {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, p.url(), p.token(user), client.WithPingInterval(0))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = c.Close() })
	return c
}

func byID(id string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			InviteID string `json:"inviteID"`
			CallID   string `json:"callID"`
		}
		return ev.Decode(&v) == nil && (v.InviteID == id || v.CallID == id)
	}
}

// TestKillNineLosesNothing kills the real server with SIGKILL in the middle
// of a load (invitations pending, a call running): after a restart no
// stored invitation is lost, timers fire at their original deadlines, the
// running call is closed with reason server_restart and its duration up to
// the crash, and clients that reconnect get what they missed.
func TestKillNineLosesNothing(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sb.db")
	// carol has 51 invitations in progress (the default cap is 50).
	p := startProc(t, db, "--calls.heartbeat=200ms", "--limits.max_pending_per_inviter=100")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	alice, carol, erin := p.dial("alice"), p.dial("carol"), p.dial("erin")
	if _, err := alice.CreateGroup(ctx, protocol.CreateGroupArgs{GroupID: "crew", Name: "Crew", MemberList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// bob is offline: his invitation rings when he connects after the crash.
	long, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Data: "long", Timeout: ptr(6)})
	if err != nil {
		t.Fatal(err)
	}
	// dave's expires while the server is down.
	short, err := carol.Invite(ctx, protocol.InviteArgs{Invitee: "dave", Data: "short", Timeout: ptr(2)})
	if err != nil {
		t.Fatal(err)
	}
	// Many more stored invitations under load.
	var ids []string
	for i := 0; i < 50; i++ {
		id, err := carol.Invite(ctx, protocol.InviteArgs{Invitee: fmt.Sprintf("u%02d", i), Data: fmt.Sprint(i), Timeout: ptr(60)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// A running call alice ↔ erin with media.
	var call calls.CallResult
	if err := alice.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: "erin"}, &call); err != nil {
		t.Fatal(err)
	}
	pc := peer.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Audio: true, Video: true, VideoBitrate: 100_000, VideoFPS: 10}
	ra, err := roomclient.Enter(ctx, alice, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if _, err := erin.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byID(call.CallID)); err != nil {
		t.Fatal(err)
	}
	if err := erin.Accept(ctx, call.CallID, ""); err != nil {
		t.Fatal(err)
	}
	re, err := roomclient.Enter(ctx, erin, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	ev, err := alice.WaitEvent(ctx, calls.EvCallBegin, byID(call.CallID))
	if err != nil {
		t.Fatal(err)
	}
	var begin calls.BeginEvent
	_ = ev.Decode(&begin)

	time.Sleep(1200 * time.Millisecond) // the call runs for a while
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-p.done
	ra.Close()
	re.Close()
	_ = alice.Close()
	_ = carol.Close()
	_ = erin.Close()
	time.Sleep(time.Until(start.Add(2500 * time.Millisecond))) // dave's deadline passes while down

	p2 := startProc(t, db, "--calls.heartbeat=200ms")
	// bob rings for the long invitation with the time left, and it times
	// out at its original deadline.
	bob := p2.dial("bob")
	ev, err = bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byID(long))
	if err != nil {
		t.Fatal(err)
	}
	var ring protocol.NewInvitationEvent
	_ = ev.Decode(&ring)
	deadline := start.Add(6 * time.Second)
	if left := time.Duration(ring.TimeoutMs) * time.Millisecond; left > time.Until(deadline)+time.Second || left <= 0 {
		t.Fatalf("time left %v, want about %v", left, time.Until(deadline))
	}
	if _, err := bob.WaitEvent(ctx, protocol.EvInvitationTimeout, byID(long)); err != nil {
		t.Fatal(err)
	}
	if late := time.Since(deadline); late < -100*time.Millisecond || late > 400*time.Millisecond {
		t.Fatalf("timeout fired %v from the original deadline", late)
	}
	// carol missed the timeout of dave's invitation while the server was down.
	carol2 := p2.dial("carol")
	if _, err := carol2.WaitEvent(ctx, protocol.EvInvitationTimeout, byID(short)); err != nil {
		t.Fatal(err)
	}
	// Every other stored invitation survived.
	for i, id := range ids {
		u := p2.dial(fmt.Sprintf("u%02d", i))
		ev, err := u.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byID(id))
		if err != nil {
			t.Fatalf("invitation %d lost: %v", i, err)
		}
		var inv protocol.NewInvitationEvent
		_ = ev.Decode(&inv)
		if inv.Data != fmt.Sprint(i) {
			t.Fatalf("invitation %d data %q", i, inv.Data)
		}
		_ = u.Close()
	}
	if groups, err := bob.GetJoinedGroupList(ctx); err != nil || len(groups) != 1 {
		t.Fatalf("groups after the crash: %v %v", groups, err)
	}
	// The running call was closed with server_restart, its duration up to the crash.
	alice2 := p2.dial("alice")
	var h calls.HistoryResult
	if err := alice2.Do(ctx, calls.OpGetCallHistory, calls.HistoryArgs{}, &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Calls) != 1 || h.Calls[0].EndReason != "server_restart" || h.Calls[0].Result != calls.ResultCompleted {
		t.Fatalf("call after the crash: %+v", h.Calls)
	}
	want := killed.Sub(time.UnixMilli(begin.StartTime))
	got := time.Duration(h.Calls[0].DurationMs) * time.Millisecond
	if got > want || got < want-400*time.Millisecond {
		t.Fatalf("duration %v, want up to the crash (%v) within the 200 ms heartbeat", got, want)
	}
	t.Logf("killed after the call ran %v; recorded duration %v", want, got)
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.done
}

// TestSIGTERMGracefulShutdown: SIGTERM stops accepting, closes clients with
// 1001 after flushing, flushes the store and exits 0 within the deadline.
func TestSIGTERMGracefulShutdown(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sb.db")
	p := startProc(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := p.dial("alice")
	id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Timeout: ptr(120)})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-alice.Done():
	case <-ctx.Done():
		t.Fatal("client not closed")
	}
	if code := client.CloseCode(alice.Err()); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d (%v), want 1001", code, alice.Err())
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit within the shutdown deadline")
	}
	t.Logf("SIGTERM to exit: %v", time.Since(sent))
	p2 := startProc(t, db)
	bob := p2.dial("bob")
	if _, err := bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, byID(id)); err != nil {
		t.Fatalf("invitation lost across a graceful restart: %v", err)
	}
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.done
}

// TestTLS serves HTTPS and WSS with server.tls_cert and server.tls_key.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--server.addr=127.0.0.1:0", "--store.path=" + filepath.Join(dir, "sb.db"), "--media.udp_port=0",
			"--media.listen_ip=127.0.0.1", "--log.level=error", "--server.tls_cert=" + certFile, "--server.tls_key=" + keyFile, "--metrics.addr=127.0.0.1:0"},
			io.Discard, io.Discard, func(a string) { addr <- a })
	}()
	a := <-addr
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	tr := &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	res, err := hc.Get("https://" + a + "/api/dev/token?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Token string `json:"token"`
	}
	_ = json.NewDecoder(res.Body).Decode(&out)
	res.Body.Close()
	d := &websocket.Dialer{TLSClientConfig: tlsCfg}
	c, err := client.Dial(ctx, "wss://"+a+"/ws", out.Token, client.WithDialer(d))
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	if _, err := c.GetJoinedGroupList(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Plain HTTP to the TLS port is refused.
	if res, err := oneShot.Get("http://" + a + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d", c)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func ptr[T any](v T) *T { return &v }
