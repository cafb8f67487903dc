package stack

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestRedisLogger: go-redis's internal log lines (Printf, often with a
// trailing newline) become slog warnings of component redis.
func TestRedisLogger(t *testing.T) {
	var buf bytes.Buffer
	l := redisLogger{log: slog.New(slog.NewTextHandler(&buf, nil)).With("component", "redis")}
	l.Printf(context.Background(), "redis: %s: connection refused\n", "dial")
	got := buf.String()
	for _, want := range []string{"level=WARN", `msg="redis: dial: connection refused"`, "component=redis"} {
		if !strings.Contains(got, want) {
			t.Errorf("log line %q does not contain %q", got, want)
		}
	}
}
