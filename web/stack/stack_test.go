package stack_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/configs"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/turnserver"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
	"github.com/switchboard-rtc/switchboard/web"
	"github.com/switchboard-rtc/switchboard/web/stack"
	"github.com/switchboard-rtc/switchboard/web/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// yamlKeys lists the leaf keys of the embedded YAML, read with yaml.v3.
func yamlKeys(t *testing.T) []string {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(configs.Default(), &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(m map[string]any, prefix string)
	walk = func(m map[string]any, prefix string) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(sub, prefix+k+".")
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk(doc, "")
	slices.Sort(out)
	return out
}

// structKeys lists the keys of t's fields by their mapstructure tags,
// following squashed structs and skipping "-".
func structKeys(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		name, opt, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		switch {
		case name == "-":
		case opt == "squash":
			out = append(out, structKeys(f.Type, prefix)...)
		case f.Type.Kind() == reflect.Struct:
			out = append(out, structKeys(f.Type, prefix+name+".")...)
		case name == "":
			out = append(out, prefix+"<untagged "+f.Name+">")
		default:
			out = append(out, prefix+name)
		}
	}
	return out
}

// TestConfigMatchesYAML: every key of the embedded YAML maps to a field of
// Config, and every field has a key.
func TestConfigMatchesYAML(t *testing.T) {
	fields := structKeys(reflect.TypeFor[stack.Config](), "")
	slices.Sort(fields)
	if dup := slices.Compact(slices.Clone(fields)); len(dup) != len(fields) {
		t.Errorf("a key is declared by two fields: %v", fields)
	}
	if keys := yamlKeys(t); !slices.Equal(fields, keys) {
		for _, k := range keys {
			if !slices.Contains(fields, k) {
				t.Errorf("YAML key %q has no Config field", k)
			}
		}
		for _, f := range fields {
			if !slices.Contains(keys, f) {
				t.Errorf("Config field %q has no key in configs/switchboard.yaml", f)
			}
		}
	}
}

// TestPackageDefaultsMatchYAML: the defaults packages declare for their own
// tests are those of the embedded file, the one source of truth.
func TestPackageDefaultsMatchYAML(t *testing.T) {
	cfg, err := stack.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Signaling
	sc.Limits = cfg.Limits.Signaling
	if def := signaling.DefaultConfig(); !reflect.DeepEqual(def, sc) {
		t.Errorf("signaling.DefaultConfig() = %+v, the YAML gives %+v", def, sc)
	}
	wc := cfg.Server.Web
	wc.Limits = cfg.Limits.Web
	def := web.DefaultConfig()
	wc.RequestTimeout = def.RequestTimeout // not a key
	if def.AllowedOrigins == nil {
		def.AllowedOrigins = []string{}
	}
	if !reflect.DeepEqual(def, wc) {
		t.Errorf("web.DefaultConfig() = %+v, the YAML gives %+v", def, wc)
	}
	if def := webhook.DefaultConfig(); !reflect.DeepEqual(def, cfg.Webhooks) {
		t.Errorf("webhook.DefaultConfig() = %+v, the YAML gives %+v", def, cfg.Webhooks)
	}
	if def := calls.DefaultConfig(); def != cfg.Calls {
		t.Errorf("calls.DefaultConfig() = %+v, the YAML gives %+v", def, cfg.Calls)
	}
	rc := cfg.Limits.Rooms
	rc.ConnectTimeout = cfg.Media.ConnectTimeout
	rc.RejoinGrace = cfg.Media.RejoinGrace
	if def := rooms.DefaultConfig(); def != rc {
		t.Errorf("rooms.DefaultConfig() = %+v, the YAML gives %+v", def, rc)
	}
	if def := cluster.DefaultConfig(); def != cfg.Cluster.Knobs {
		t.Errorf("cluster.DefaultConfig() = %+v, the YAML gives %+v", def, cfg.Cluster.Knobs)
	}
	if def := redisdb.DefaultConfig(); def != cfg.Cluster.Redis {
		t.Errorf("redisdb.DefaultConfig() = %+v, the YAML gives %+v", def, cfg.Cluster.Redis)
	}
	if def := turnserver.DefaultConfig(); !reflect.DeepEqual(def, cfg.TURN) {
		t.Errorf("turnserver.DefaultConfig() = %+v, the YAML gives %+v", def, cfg.TURN)
	}
	m := cfg.Media.SFU
	for name, got := range map[string][2]any{
		"ICEDisconnectedGrace":    {media.DefaultICEDisconnectedGrace, m.ICEDisconnectedGrace},
		"ICEFailedGrace":          {time.Duration(media.DefaultICEFailedGrace), m.ICEFailedGrace},
		"PLIThrottle":             {media.DefaultPLIThrottle, m.PLIThrottle},
		"UDPReadBuffer":           {media.DefaultUDPReadBuffer, m.UDPReadBuffer},
		"MaxTracksPerParticipant": {media.DefaultMaxTracksPerParticipant, cfg.Limits.MaxTracksPerParticipant},
	} {
		if got[0] != got[1] {
			t.Errorf("media default %s = %v, the YAML gives %v", name, got[0], got[1])
		}
	}
}

func testConfig(t *testing.T) stack.Config {
	t.Helper()
	cfg, err := stack.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(t.TempDir(), "sb.db")
	cfg.Media.SFU.UDPPort, cfg.Media.SFU.ListenIP = 0, "127.0.0.1"
	return cfg
}

// TestServeAndClose builds the real server (SQLite, SFU, rooms, calls,
// metrics on their own listener), serves, and shuts it down; goleak checks
// that Close leaves nothing running.
func TestServeAndClose(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics.Addr = "127.0.0.1:0"
	st, err := stack.New(context.Background(), stack.Params{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if st.RoomRelay != nil {
		t.Error("standalone with a room relay")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- st.Serve(ln) }()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("healthz: %d %q", res.StatusCode, body)
	}
	// metrics.addr is set: /metrics is not on the main listener.
	if res, err := client.Get("http://" + ln.Addr().String() + "/metrics"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Error("/metrics served on server.addr although metrics.addr is set")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestNewFailureClosesWhatWasBuilt: a part that cannot be built (the SFU,
// after the store and the engine) fails New, and what was built is closed
// (goleak).
func TestNewFailureClosesWhatWasBuilt(t *testing.T) {
	cfg := testConfig(t)
	cfg.Media.SFU.ListenIP = "not-an-ip"
	if st, err := stack.New(context.Background(), stack.Params{Config: cfg}); err == nil {
		_ = st.Close()
		t.Fatal("New succeeded with an invalid media.listen_ip")
	}
}

// TestTURNBuiltAndClosed: with turn.enabled the stack starts the TURN
// server with the relay IP from media.listen_ip and a secret derived from
// auth.secret, restricted to the SFU's port; an allocation made with the
// credentials rooms hand out is ended by Close (goleak checks that nothing
// is left running). A TURN port already taken fails New, and what was built
// is closed.
func TestTURNBuiltAndClosed(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Enabled, cfg.TURN.UDPPort, cfg.TURN.TCPPort, cfg.TURN.ListenIP = true, 0, 0, "127.0.0.1"
	cfg.Auth.Secret = []byte("stack-test-secret-0123456789abcdef")
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Store: signaling.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ice := st.TURN.ICEServers("alice")[0]
	if ice.URLs[0] != "turn:"+st.TURN.UDPAddr().String()+"?transport=udp" {
		t.Errorf("URLs %v, want the relay IP 127.0.0.1 and the bound ports", ice.URLs)
	}
	if want := turnserver.Password(turnserver.DeriveSecret(cfg.Auth.Secret), ice.Username); ice.Credential != want {
		t.Errorf("credential %q, want the one of the secret derived from auth.secret", ice.Credential)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: st.TURN.UDPAddr().String(), TURNServerAddr: st.TURN.UDPAddr().String(),
		Conn: conn, Username: ice.Username, Password: ice.Credential, Realm: cfg.TURN.Realm})
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
	// Relays reach the SFU's port only.
	if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: st.SFU.UDPAddr().Port}); err == nil {
		t.Error("permission for 127.0.0.2 granted: relays are not restricted to the SFU's addresses")
	}
	if n := st.TURN.AllocationCount(); n != 1 {
		t.Errorf("%d allocations, want 1", n)
	}

	taken := testConfig(t)
	taken.TURN = cfg.TURN
	taken.TURN.UDPPort = st.TURN.UDPAddr().Port
	if st2, err := stack.New(context.Background(), stack.Params{Config: taken, Store: signaling.NewMemoryStore()}); err == nil {
		_ = st2.Close()
		t.Error("New succeeded with a TURN port in use")
	}
}

// TestOpTablesMergeOnce: the calls table carries every engine op (wrapping
// the invitation ones) and shares no name with rooms', so the one merge
// that refuses duplicates accepts them; merging the engine's table again
// is refused.
func TestOpTablesMergeOnce(t *testing.T) {
	cfg := testConfig(t)
	st, err := stack.New(context.Background(), stack.Params{Config: cfg, Store: signaling.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	callOps, roomOps := st.Calls.Ops(), st.Rooms.Ops()
	merged, err := web.MergeOps(callOps, roomOps)
	if err != nil {
		t.Fatal(err)
	}
	for name := range st.Engine.Ops() {
		if _, ok := callOps[name]; !ok {
			t.Errorf("engine op %q is missing from the calls table", name)
		}
	}
	for _, name := range []string{protocol.OpInvite, protocol.OpAccept, calls.OpCall, calls.OpHangup} {
		if _, ok := merged[name]; !ok {
			t.Errorf("op %q is missing from the merged table", name)
		}
	}
	if len(merged) != len(callOps)+len(roomOps) {
		t.Errorf("merged %d ops from %d + %d", len(merged), len(callOps), len(roomOps))
	}
	if _, err := web.MergeOps(st.Engine.Ops(), callOps); err == nil {
		t.Error("MergeOps accepted the engine's invite next to the calls wrapper")
	}
}
