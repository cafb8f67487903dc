package metrics_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMetricsEndpoint: /metrics serves every documented metric with values
// that follow what happened.
func TestMetricsEndpoint(t *testing.T) {
	s := webtest.Start(t, webtest.Options{Metrics: true})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	alice, bob := s.Dial("alice"), s.Dial("bob")
	s.StartCall(alice, bob, "bob")
	_ = alice.Do(ctx, "nope", nil, nil)

	res, err := http.Get(s.HTTP.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	out := string(body)
	for _, want := range []string{
		"switchboard_connections 2",
		`switchboard_requests_total{op="call",result="ok"} 1`,
		`switchboard_requests_total{op="unknown",result="unknown_op"} 1`,
		`switchboard_invitations_total{outcome="created"} 1`,
		`switchboard_invitations_total{outcome="accepted"} 1`,
		"switchboard_active_calls 1",
		"switchboard_call_setup_seconds_count 1",
		"switchboard_rooms 1",
		"switchboard_room_participants 2",
		"switchboard_forwarded_packets_total",
		"switchboard_forwarded_bytes_total",
		"switchboard_send_queue_overflows_total 0",
		`switchboard_store_apply_seconds_count{outcome="ok"}`,
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestTURNMetrics: with the TURN server on, /metrics reports its
// allocations and TCP connections, and its refusals by reason.
func TestTURNMetrics(t *testing.T) {
	s := webtest.Start(t, webtest.Options{Metrics: true, TURN: true})
	ice := s.TURN.ICEServers("alice")[0]
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: s.TURN.UDPAddr().String(), TURNServerAddr: s.TURN.UDPAddr().String(),
		Conn: conn, Username: ice.Username, Password: ice.Credential, Realm: s.Config.TURN.Realm})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	tcp, err := net.DialTimeout("tcp4", s.TURN.TCPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()

	want := []string{
		"switchboard_turn_allocations 1",
		`switchboard_turn_allocations_refused_total{reason="user_quota"} 0`,
		`switchboard_turn_allocations_refused_total{reason="server_cap"} 0`,
		"switchboard_turn_connections 1",
		"switchboard_turn_connections_refused_total 0",
		"switchboard_turn_connections_timed_out_total 0",
		"switchboard_turn_connections_refused_per_ip_total 0",
		"switchboard_turn_udp_rate_limited_total 0",
		"switchboard_turn_udp_rate_limit_ips 1",
		"switchboard_turn_udp_rate_limit_evictions_total 0",
	}
	var out string
	for deadline := time.Now().Add(5 * time.Second); ; { // the TCP connection counts once accepted
		res, err := http.Get(s.HTTP.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if out = string(body); strings.Contains(out, "switchboard_turn_connections 1") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	http.DefaultClient.CloseIdleConnections()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}
