package cluster_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

func TestConfigValidate(t *testing.T) {
	if err := cluster.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*cluster.Config)
	}{
		{"node_ttl", func(c *cluster.Config) { c.NodeTTL = 0 }},
		{"op_timeout", func(c *cluster.Config) { c.OpTimeout = 2 * time.Second }},
		{"op_timeout", func(c *cluster.Config) { c.OpTimeout = 0 }},
		{"cleanup_lease", func(c *cluster.Config) { c.CleanupLease = time.Millisecond }},
		{"timer_poll", func(c *cluster.Config) { c.TimerPoll = 0 }},
		{"timer_lease", func(c *cluster.Config) { c.TimerLease = time.Millisecond }},
		{"timer_batch", func(c *cluster.Config) { c.TimerBatch = 0 }},
		{"stream_max_len", func(c *cluster.Config) { c.StreamMaxLen = 0 }},
		{"stream_batch", func(c *cluster.Config) { c.StreamBatch = 0 }},
		{"max_backoff", func(c *cluster.Config) { c.MaxBackoff = time.Millisecond }},
	} {
		c := cluster.DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, cluster.ErrConfig) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
}

// TestConfigDocumented: every key of Config is in the package doc's table,
// with the default DefaultConfig gives.
func TestConfigDocumented(t *testing.T) {
	b, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]string{} // key → default, from lines "//\tkey  default  meaning"
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(strings.TrimPrefix(line, "//")); len(f) >= 3 && strings.HasPrefix(line, "//\t") {
			table[f[0]] = f[1]
		}
	}
	def := reflect.ValueOf(cluster.DefaultConfig())
	for i := range def.NumField() {
		key := def.Type().Field(i).Tag.Get("mapstructure")
		want := fmt.Sprint(def.Field(i).Interface()) // a time.Duration prints as 3s, 200ms
		if got, ok := table[key]; !ok {
			t.Errorf("config key %s is not in the package doc", key)
		} else if got != want {
			t.Errorf("the package doc gives %s = %s, DefaultConfig %s", key, got, want)
		}
	}
}
