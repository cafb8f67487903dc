package redisdb

import (
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"7.0.15", true},
		{"7.0.0", true},
		{"7.2.4", true},
		{"8.0.1", true},
		{"10.0", true},
		{"6.2.14", false},
		{"6.0.0", false},
		{"5.0.7", false},
		{"garbage", true}, // not refused on a guess
		{"x.y", true},
	} {
		if got := versionAtLeast(c.v, MinVersion); got != c.want {
			t.Errorf("versionAtLeast(%q, %v) = %v, want %v", c.v, MinVersion, got, c.want)
		}
	}
}

func TestInfoField(t *testing.T) {
	info := "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n"
	if v, ok := infoField(info, "redis_version"); !ok || v != "6.2.14" {
		t.Errorf("redis_version = %q, %v", v, ok)
	}
	if v, ok := infoField(info, "redis_mode"); !ok || v != "standalone" {
		t.Errorf("redis_mode = %q, %v", v, ok)
	}
	if _, ok := infoField(info, "redis"); ok {
		t.Error("a prefix of a field's name matched")
	}
}

// TestOpenRefusesOldRedis runs a real redis-server and pretends the stores
// need a later version than it is: Open refuses it and says why.
func TestOpenRefusesOldRedis(t *testing.T) {
	s := redistest.Start(t)
	prev := MinVersion
	MinVersion = [2]int{99, 0}
	defer func() { MinVersion = prev }()
	c, err := Open(t.Context(), Config{Addr: s.ConfigAddr()})
	if err == nil {
		_ = c.Close()
		t.Fatal("Open accepted a Redis older than MinVersion")
	}
	if !strings.Contains(err.Error(), "too old") || !strings.Contains(err.Error(), "99.0 or later") {
		t.Errorf("error %q does not say the version is too old and what is needed", err)
	}
	MinVersion = prev
	c, err = Open(t.Context(), Config{Addr: s.ConfigAddr()})
	if err != nil {
		t.Fatalf("Open of the same Redis at the real MinVersion: %v", err)
	}
	_ = c.Close()
}
