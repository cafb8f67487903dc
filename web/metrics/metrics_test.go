package metrics_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
