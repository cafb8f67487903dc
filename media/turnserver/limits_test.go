package turnserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/switchboard-rtc/switchboard/media/turnserver"
)

// tcpClient is a pion TURN client on conn (TCP or TLS) with userID's
// credentials; it and conn close when the test ends.
func tcpClient(t *testing.T, s *turnserver.Server, conn net.Conn, userID string) *turn.Client {
	t.Helper()
	ice := s.ICEServers(userID)[0]
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: conn.RemoteAddr().String(), TURNServerAddr: conn.RemoteAddr().String(),
		Conn: turn.NewSTUNConn(conn), Username: ice.Username, Password: ice.Credential, Realm: turnserver.DefaultRealm})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	return c
}

func dialTCP(t *testing.T, s *turnserver.Server) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp4", s.TCPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// allocateTCP allocates over a new TCP connection; it returns the
// connection and the relay.
func allocateTCP(t *testing.T, s *turnserver.Server, userID string) (net.Conn, net.PacketConn) {
	t.Helper()
	conn := dialTCP(t, s)
	relay, err := tcpClient(t, s, conn, userID).Allocate()
	if err != nil {
		t.Fatalf("%s: TCP allocation: %v", userID, err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	return conn, relay
}

// waitClosed waits (at most 5s) for the server to close conn, from which
// the test expects nothing.
func waitClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 512))
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: read %d bytes, %v; want it closed by the server", what, n, err)
	}
}

// eventually waits (at most 5s) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// turnCode is the TURN error code of err, 0 if it is none.
func turnCode(err error) stun.ErrorCode {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return te.ErrorCodeAttr.Code
	}
	return 0
}

// TestConnectionCap: with MaxConnections open, the next TCP connection is
// closed as soon as it is accepted and the open ones keep working; once
// one closes, a new connection is served again.
func TestConnectionCap(t *testing.T) {
	s := start(t, turnserver.Config{MaxConnections: 2, AllocateTimeout: time.Minute})
	a, _ := allocateTCP(t, s, "alice")
	_, bobRelay := allocateTCP(t, s, "bob")
	// Refused at once: the reset may even reach the client before its
	// connect returns.
	if over, err := net.DialTimeout("tcp4", s.TCPAddr().String(), 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
		if err != nil {
			t.Fatal(err)
		}
		defer over.Close()
		waitClosed(t, over, "connection past the cap")
	}
	if st := s.Stats(); st.Connections != 2 || st.ConnectionsRefused != 1 {
		t.Errorf("stats %+v, want 2 connections open and 1 refused", st)
	}
	// The two below the cap still work: a permission is a round trip.
	if _, err := bobRelay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
		t.Errorf("bob's connection after the refusal: %v", err)
	}
	_ = a.Close()
	eventually(t, "alice's connection leaves the count", func() bool { return s.Stats().Connections == 1 })
	allocateTCP(t, s, "carol")
	if st := s.Stats(); st.Connections != 2 || st.ConnectionsRefused != 1 {
		t.Errorf("stats %+v, want 2 connections open and still 1 refused", st)
	}
}

// TestSilentConnectionTimesOut: a TCP connection that sends nothing is
// closed after AllocateTimeout, one with an allocation is not, and once
// its allocation ends it is closed in turn.
func TestSilentConnectionTimesOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := start(t, turnserver.Config{AllocateTimeout: timeout})
	_, relay := allocateTCP(t, s, "alice") // accepted before the silent one: its timer would fire first
	silent := dialTCP(t, s)
	began := time.Now()
	waitClosed(t, silent, "silent connection")
	if d := time.Since(began); d < timeout-50*time.Millisecond {
		t.Errorf("silent connection closed after %s, before the %s timeout", d, timeout)
	}
	if st := s.Stats(); st.Connections != 1 || st.ConnectionsTimedOut != 1 {
		t.Errorf("stats %+v, want alice's connection open and 1 timed out", st)
	}
	if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
		t.Errorf("connection with an allocation after the timeout: %v", err)
	}
	_ = relay.Close() // Refresh with lifetime 0: the allocation ends, the connection stays open
	eventually(t, "the connection whose allocation ended is closed", func() bool {
		st := s.Stats()
		return st.Connections == 0 && st.ConnectionsTimedOut == 2
	})
}

// TestTLSHandshakeTimeout: a TLS connection that never completes its
// handshake is closed after TLSHandshakeTimeout, long before
// AllocateTimeout; a client that completes it allocates.
func TestTLSHandshakeTimeout(t *testing.T) {
	certFile, keyFile, cert := writeCert(t)
	s := start(t, turnserver.Config{TLS: true, TLSPort: 0, CertFile: certFile, KeyFile: keyFile,
		AllocateTimeout: time.Minute, TLSHandshakeTimeout: 300 * time.Millisecond})
	raw, err := net.DialTimeout("tcp4", s.TLSAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte{0x16, 0x03, 0x01}); err != nil { // the start of a record, no more
		t.Fatal(err)
	}
	waitClosed(t, raw, "TLS connection stuck in its handshake")
	if st := s.Stats(); st.ConnectionsTimedOut != 1 {
		t.Errorf("stats %+v, want 1 timed out", st)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(context.Background(), "tcp4", s.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	relay, err := tcpClient(t, s, conn, "alice").Allocate()
	if err != nil {
		t.Fatalf("TLS allocation: %v", err)
	}
	_ = relay.Close()
}

// TestAllocationQuota: a user's allocations past MaxAllocationsPerUser are
// refused with 486 while another user still allocates; past
// MaxAllocations anyone is refused with 508; an allocation that ends frees
// its place in both.
func TestAllocationQuota(t *testing.T) {
	s := start(t, turnserver.Config{MaxAllocationsPerUser: 2, MaxAllocations: 3})
	allocateAs := func(user string) (net.PacketConn, error) { // fresh credentials each time
		ice := s.ICEServers(user)[0]
		return allocate(t, s, ice.Username, ice.Credential)
	}
	var alice []net.PacketConn
	for range 2 {
		relay, err := allocateAs("alice")
		if err != nil {
			t.Fatalf("alice's allocation within her quota: %v", err)
		}
		alice = append(alice, relay)
	}
	if _, err := allocateAs("alice"); turnCode(err) != stun.CodeAllocQuotaReached {
		t.Errorf("alice's third allocation: %v, want error 486", err)
	}
	// Fresh credentials, the same user: the quota is per user.
	if _, err := allocateAs("alice"); turnCode(err) != stun.CodeAllocQuotaReached {
		t.Errorf("alice's third allocation with new credentials: %v, want error 486", err)
	}
	if _, err := allocateAs("bob"); err != nil {
		t.Errorf("bob's allocation while alice is at her quota: %v", err)
	}
	if _, err := allocateAs("carol"); turnCode(err) != stun.CodeInsufficientCapacity {
		t.Errorf("an allocation past the server's cap: %v, want error 508", err)
	}
	if st := s.Stats(); st.Allocations != 3 || st.AllocationsRefusedUser != 2 || st.AllocationsRefusedServer != 1 {
		t.Errorf("stats %+v, want 3 allocations, 2 refused by the user quota and 1 by the server cap", st)
	}
	_ = alice[0].Close()
	eventually(t, "alice's closed allocation leaves the count", func() bool { return s.Stats().Allocations == 2 })
	if _, err := allocateAs("alice"); err != nil {
		t.Errorf("alice's allocation after closing one: %v", err)
	}
}
