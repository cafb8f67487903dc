package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// TestMetricsOffThePublicPort is issue #11 item 5: /metrics is served on
// its own loopback listener by default, not on server.addr.
func TestMetricsOffThePublicPort(t *testing.T) {
	cfg, err := LoadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(cfg.Metrics.Addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Fatalf("default metrics.addr %q: not a loopback address (%v)", cfg.Metrics.Addr, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	code := make(chan int, 1)
	var logs webtest.LogBuffer
	go func() {
		// Port 0 rather than the default port: tests and instances must not collide.
		code <- run(ctx, []string{"--server.addr=127.0.0.1:0", "--store.path=" + filepath.Join(t.TempDir(), "sb.db"), "--media.udp_port=0",
			"--media.listen_ip=127.0.0.1", "--log.format=json", "--metrics.addr=127.0.0.1:0"}, &logs, &logs, func(a string) { addr <- a })
	}()
	var a string
	select {
	case a = <-addr:
	case c := <-code:
		t.Fatalf("exited with %d: %s", c, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	var metricsURL string
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct{ Msg, URL string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "metrics serving" {
			metricsURL = line.URL
		}
	}
	if metricsURL == "" {
		t.Fatalf("no metrics listener logged:\n%s", logs.String())
	}
	res, err := oneShot.Get("http://" + a + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("/metrics on the public port: %d, want 404", res.StatusCode)
	}
	res, err = oneShot.Get(metricsURL)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("/metrics on %s: %v %v", metricsURL, res, err)
	}
	res.Body.Close()
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d", c)
	}
}
