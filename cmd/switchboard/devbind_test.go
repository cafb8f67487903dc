package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/stack"
)

// TestDevModeRefusedOffLoopback is issue #11 item 5: dev mode issues
// tokens to anyone, so it must not listen beyond loopback. The server
// refuses to start (exit 2) with a message naming both keys.
func TestDevModeRefusedOffLoopback(t *testing.T) {
	for _, addr := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "192.168.1.10:8080", "example.com:8080"} {
		_, err := LoadConfig([]string{"--server.addr=" + addr, "--auth.dev=true"})
		if !errors.Is(err, stack.ErrInvalidConfig) {
			t.Errorf("dev mode on %s: %v, want an invalid configuration", addr, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "auth.dev") || !strings.Contains(msg, "server.addr") {
			t.Errorf("dev mode on %s: the message does not name both keys: %s", addr, msg)
		}
	}
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "localhost:8080"} {
		if _, err := LoadConfig([]string{"--server.addr=" + addr, "--auth.dev=true"}); err != nil {
			t.Errorf("dev mode on loopback %s: %v", addr, err)
		}
	}
	if _, err := LoadConfig([]string{"--server.addr=:8080", "--auth.dev=false", "--auth.secret=" + strings.Repeat("x", 32)}); err != nil {
		t.Errorf("production mode on every interface: %v", err)
	}
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a server that starts is stopped
	defer cancel()
	if c := run(ctx, []string{"--server.addr=0.0.0.0:0", "--auth.dev=true", "--media.udp_port=0", "--media.listen_ip=127.0.0.1",
		"--store.path=" + filepath.Join(t.TempDir(), "sb.db"), "--metrics.addr=127.0.0.1:0"}, &out, &errs, nil); c != 2 {
		t.Fatalf("dev mode on 0.0.0.0: exit %d, want 2 (%s)", c, errs.String())
	}
	if !strings.Contains(errs.String(), "auth.dev") || !strings.Contains(errs.String(), "server.addr") {
		t.Fatalf("the message does not name the keys: %s", errs.String())
	}
}
