package redisdb_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDefaultConfig(t *testing.T) {
	c := redisdb.DefaultConfig()
	if c.Addr != "" || c.KeyPrefix != "switchboard:" || c.Prefix() != "switchboard:" {
		t.Errorf("DefaultConfig() = %+v, Prefix %q", c, c.Prefix())
	}
	if p := (redisdb.Config{}).Prefix(); p != redisdb.DefaultKeyPrefix {
		t.Errorf("Prefix of an empty KeyPrefix = %q, want %q", p, redisdb.DefaultKeyPrefix)
	}
	if p := (redisdb.Config{KeyPrefix: "a:"}).Prefix(); p != "a:" {
		t.Errorf("Prefix = %q, want a:", p)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  redisdb.Config
		want string // "" valid
	}{
		{redisdb.Config{Addr: "127.0.0.1:6379"}, ""},
		{redisdb.Config{Addr: "redis.internal:6380", TLS: true, CAFile: "/ca.pem", DB: 3}, ""},
		{redisdb.Config{Addr: "unix:/run/redis.sock"}, ""},
		{redisdb.Config{}, "addr is empty"},
		{redisdb.Config{Addr: "unix:"}, "addr is empty"},
		{redisdb.Config{Addr: "localhost"}, "not host:port"},
		{redisdb.Config{Addr: "h:1", DB: -1}, "db -1 is negative"},
		{redisdb.Config{Addr: "h:1", CAFile: "/ca.pem"}, "tls is off"},
		{redisdb.Config{Addr: "unix:/s", TLS: true}, "Unix socket"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("Validate(%+v) = %v, want nil", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %q", tc.cfg, err, tc.want)
		}
		if _, err := redisdb.Open(t.Context(), tc.cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", tc.cfg)
		}
	}
}

func TestOptions(t *testing.T) {
	o, err := redisdb.Config{Addr: "unix:/run/r.sock", Username: "u", Password: "p", DB: 2}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Network != "unix" || o.Addr != "/run/r.sock" || o.Username != "u" || o.Password != "p" || o.DB != 2 || o.TLSConfig != nil || !o.ContextTimeoutEnabled {
		t.Errorf("Options = %+v", o)
	}
	o, err = redisdb.Config{Addr: "cache.example:6380", TLS: true}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Network != "tcp" || o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example" || o.TLSConfig.RootCAs != nil {
		t.Errorf("TLS Options = %+v (TLS %+v)", o, o.TLSConfig)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{bad, filepath.Join(dir, "missing.pem")} {
		if _, err := (redisdb.Config{Addr: "h:1", TLS: true, CAFile: ca}).Options(); err == nil || !strings.Contains(err.Error(), "ca_file") {
			t.Errorf("Options with CA file %s: %v, want an error about ca_file", ca, err)
		}
	}
}

func TestOpen(t *testing.T) {
	for _, start := range []func(testing.TB, ...redistest.Option) *redistest.Server{redistest.Start, redistest.StartTCP} {
		s := start(t)
		c, err := redisdb.Open(t.Context(), redisdb.Config{Addr: s.ConfigAddr(), DB: 3})
		if err != nil {
			t.Fatalf("Open(%s): %v", s.ConfigAddr(), err)
		}
		// DB is selected: a key set through c is in db 3, not db 0.
		if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Client().Exists(t.Context(), "k").Result(); err != nil || n != 0 {
			t.Errorf("the key is in db 0: %d, %v", n, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestOpenFailsClearly(t *testing.T) {
	s := redistest.Start(t, redistest.Password("right"))
	if c, err := redisdb.Open(t.Context(), redisdb.Config{Addr: s.ConfigAddr(), Password: "right"}); err != nil {
		t.Errorf("Open with the password: %v", err)
	} else {
		_ = c.Close()
	}
	dead := redistest.StartTCP(t)
	dead.Kill()
	for name, cfg := range map[string]redisdb.Config{
		"wrong password": {Addr: s.ConfigAddr(), Password: "wrong"},
		"no password":    {Addr: s.ConfigAddr()},
		"no server":      {Addr: dead.ConfigAddr()},
		"no socket":      {Addr: "unix:" + filepath.Join(t.TempDir(), "none.sock")},
	} {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 2*redisdb.PingTimeout)
		c, err := redisdb.Open(ctx, cfg)
		cancel()
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), "cannot use redis at "+cfg.Addr) {
			t.Errorf("%s: error %q does not say which Redis", name, err)
		}
		t.Logf("%s: %v after %v", name, err, time.Since(start))
		// An unreachable Redis fails fast: one dial, one retry.
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: Open took %v, want it to fail fast", name, d)
		}
	}
}

func TestPack(t *testing.T) {
	for _, parts := range [][]string{nil, {""}, {"", ""}, {"a:b", "12:", "\xff\x00", strings.Repeat("x", 1000)}} {
		got, err := redisdb.Unpack(redisdb.Pack(parts...))
		if err != nil || len(got) != len(parts) {
			t.Errorf("Unpack(Pack(%q)) = %q, %v", parts, got, err)
			continue
		}
		for i := range parts {
			if got[i] != parts[i] {
				t.Errorf("Unpack(Pack(%q))[%d] = %q", parts, i, got[i])
			}
		}
		if _, err := redisdb.UnpackN(redisdb.Pack(parts...), len(parts)+1); err == nil {
			t.Errorf("UnpackN(Pack(%q), %d) succeeded", parts, len(parts)+1)
		}
	}
	for _, bad := range []string{"x", "1", "2:a", ":a", "-1:", "1:a2:b"} {
		if _, err := redisdb.Unpack(bad); err == nil {
			t.Errorf("Unpack(%q) succeeded", bad)
		}
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(redisdb.Pack("a", "", "b:c"))
	f.Add("3:abc")
	f.Fuzz(func(t *testing.T, s string) {
		parts, err := redisdb.Unpack(s)
		if err != nil {
			return
		}
		if again := redisdb.Pack(parts...); again != s {
			t.Fatalf("Pack(Unpack(%q)) = %q", s, again)
		}
	})
}

func TestTime(t *testing.T) {
	for _, tm := range []time.Time{{}, time.Date(2025, 3, 14, 15, 9, 26, 535_897_932, time.FixedZone("x", 3600)), time.Unix(0, -1)} {
		got, err := redisdb.TimeOf(redisdb.Time(tm))
		if err != nil || !got.Equal(tm) || (!tm.IsZero() && got.Location() != time.UTC) || got.IsZero() != tm.IsZero() {
			t.Errorf("TimeOf(Time(%v)) = %v, %v", tm, got, err)
		}
	}
	if redisdb.Storable(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)) || !redisdb.Storable(time.Time{}) {
		t.Error("Storable is wrong about 2300 or the zero time")
	}
	if _, err := redisdb.TimeOf("soon"); err == nil {
		t.Error("TimeOf(soon) succeeded")
	}
}
