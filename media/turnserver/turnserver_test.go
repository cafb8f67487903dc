package turnserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/media/turnserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "turnserver-test-secret-0123456789"

// clock is a settable clock for credential expiry.
type clock struct{ unix atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(c.unix.Load(), 0) }
func (c *clock) set(t time.Time)     { c.unix.Store(t.Unix()) }
func newClock(t time.Time) *clock    { c := &clock{}; c.set(t); return c }
func (c *clock) add(d time.Duration) { c.unix.Add(int64(d / time.Second)) }

func start(t *testing.T, cfg turnserver.Config) *turnserver.Server {
	t.Helper()
	cfg.UDPPort, cfg.TCPPort, cfg.TLSPort, cfg.ListenIP, cfg.RelayIP = 0, 0, 0, "127.0.0.1", "127.0.0.1"
	if cfg.Secret == "" {
		cfg.Secret = secret
	}
	s, err := turnserver.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// allocate makes a pion TURN client allocation over UDP with the given
// credentials; the relay closes when the test ends.
func allocate(t *testing.T, s *turnserver.Server, username, password string) (net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: s.UDPAddr().String(), TURNServerAddr: s.UDPAddr().String(),
		Conn: conn, Username: username, Password: password, Realm: turnserver.DefaultRealm,
		RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	t.Cleanup(func() {
		if relay != nil {
			_ = relay.Close()
		}
		c.Close()
		_ = conn.Close()
	})
	return relay, err
}

// TestCredentialsFormat: the handed-out username is "EXPIRY:USER" and the
// password is pion's TURN REST API password of that username.
func TestCredentialsFormat(t *testing.T) {
	clk := newClock(time.Unix(1_800_000_000, 0))
	s := start(t, turnserver.Config{CredentialTTL: time.Hour, Now: clk.now})
	ice := s.ICEServers("alice")
	if len(ice) != 1 {
		t.Fatalf("ICEServers: %+v", ice)
	}
	if want := "1800003600:alice"; ice[0].Username != want {
		t.Errorf("username %q, want %q", ice[0].Username, want)
	}
	user, pass, err := turn.GenerateLongTermTURNRESTCredentials(secret, "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := turnserver.Password(secret, user); got != pass {
		t.Errorf("Password(%q) = %q, pion computes %q", user, got, pass)
	}
	if got := turnserver.Password(secret, ice[0].Username); got != ice[0].Credential {
		t.Errorf("credential %q, want %q", ice[0].Credential, got)
	}
	want := []string{"turn:127.0.0.1:" + itoa(s.UDPAddr().Port) + "?transport=udp", "turn:127.0.0.1:" + itoa(s.TCPAddr().Port) + "?transport=tcp"}
	if strings.Join(ice[0].URLs, " ") != strings.Join(want, " ") {
		t.Errorf("URLs %v, want %v", ice[0].URLs, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestExpiredCredentialsRefused: an allocation with credentials the server
// handed out succeeds; the same credentials after their expiry, one that
// expired before, a wrong password and a malformed username are refused.
func TestExpiredCredentialsRefused(t *testing.T) {
	clk := newClock(time.Now())
	s := start(t, turnserver.Config{CredentialTTL: time.Minute, Now: clk.now})
	ice := s.ICEServers("alice")[0]
	if _, err := allocate(t, s, ice.Username, ice.Credential); err != nil {
		t.Fatalf("fresh credentials: %v", err)
	}
	clk.add(time.Minute + time.Second)
	if _, err := allocate(t, s, ice.Username, ice.Credential); err == nil {
		t.Error("credentials past their expiry: allocation succeeded")
	} else {
		t.Logf("expired credentials: %v", err)
	}
	old := turnserver.Username("bob", clk.now().Add(-time.Hour))
	if _, err := allocate(t, s, old, turnserver.Password(secret, old)); err == nil {
		t.Error("credentials expired an hour ago: allocation succeeded")
	}
	fresh := turnserver.Username("bob", clk.now().Add(time.Hour))
	if _, err := allocate(t, s, fresh, turnserver.Password("another secret", fresh)); err == nil {
		t.Error("password of another secret: allocation succeeded")
	}
	if _, err := allocate(t, s, "bob", turnserver.Password(secret, "bob")); err == nil {
		t.Error("username without expiry: allocation succeeded")
	}
	if n := s.AllocationCount(); n != 1 {
		t.Errorf("%d allocations, want the 1 that was allowed", n)
	}
}

// TestRelayOnlyToAllowed: with RelayTo set, a relay reaches the allowed
// address, a permission for another IP is refused, and a packet to another
// port of the allowed IP is dropped.
func TestRelayOnlyToAllowed(t *testing.T) {
	listen := func(addr string) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	sfu, other := listen("127.0.0.1:0"), listen("127.0.0.1:0")
	s := start(t, turnserver.Config{RelayTo: []netip.AddrPort{sfu.LocalAddr().(*net.UDPAddr).AddrPort()}})
	ice := s.ICEServers("alice")[0]
	relay, err := allocate(t, s, ice.Username, ice.Credential)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 9}); err == nil {
		t.Error("permission for 127.0.0.2 granted")
	}
	if _, err := relay.WriteTo([]byte("to other"), other.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.WriteTo([]byte("to sfu"), sfu.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = sfu.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := sfu.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "to sfu" {
		t.Fatalf("allowed address got %q, %v", buf[:n], err)
	}
	if from.Port < turnserver.DefaultRelayPortMin || from.Port > turnserver.DefaultRelayPortMax {
		t.Errorf("relay port %d outside %d-%d", from.Port, turnserver.DefaultRelayPortMin, turnserver.DefaultRelayPortMax)
	}
	// "to other" was sent first, on the same socket: had it been sent it
	// would be waiting already.
	_ = other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if n, _, err := other.ReadFromUDP(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("another port of the allowed IP got %q (%v)", buf[:n], err)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files and returns their paths and the certificate.
func writeCert(t *testing.T) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turn.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// TestTCPAndTLSAllocations: clients allocate over TURN/TCP and TURN/TLS
// (turns:, the server's certificate verified), the URLs name all three
// ports, and Close ends the connections the clients keep open (goleak
// checks that pion's per-connection goroutines are gone).
func TestTCPAndTLSAllocations(t *testing.T) {
	certFile, keyFile, cert := writeCert(t)
	s, err := turnserver.New(turnserver.Config{ListenIP: "127.0.0.1", RelayIP: "127.0.0.1", Secret: secret,
		TLS: true, CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ice := s.ICEServers("alice")[0]
	if want := "turns:127.0.0.1:" + itoa(s.TLSAddr().Port) + "?transport=tcp"; len(ice.URLs) != 3 || ice.URLs[2] != want {
		t.Errorf("URLs %v, want a third one %q", ice.URLs, want)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	dials := map[string]func() (net.Conn, error){
		"tcp": func() (net.Conn, error) { return net.DialTimeout("tcp4", s.TCPAddr().String(), 5*time.Second) },
		"tls": func() (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
			return d.DialContext(context.Background(), "tcp4", s.TLSAddr().String())
		},
	}
	for name, dial := range dials {
		conn, err := dial()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: conn.RemoteAddr().String(), TURNServerAddr: conn.RemoteAddr().String(),
			Conn: turn.NewSTUNConn(conn), Username: ice.Username, Password: ice.Credential, Realm: turnserver.DefaultRealm})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("%s allocation: %v", name, err)
		}
		t.Logf("%s: relayed address %s", name, relay.LocalAddr())
		defer func() { _ = relay.Close(); c.Close(); _ = conn.Close() }() // after the server's Close below
	}
	if n := s.AllocationCount(); n != 2 {
		t.Errorf("%d allocations, want 2", n)
	}
	// A connection that never says anything is ended by Close too.
	idle, err := net.DialTimeout("tcp4", s.TCPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte{0}); err != nil { // accepted once the server reads it
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("idle connection after Close: %v, want it closed by the server", err)
	}
}
