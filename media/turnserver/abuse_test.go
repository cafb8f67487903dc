package turnserver_test

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/switchboard-rtc/switchboard/media/turnserver"
)

// The tests below use two source addresses of the loopback network, which
// Linux routes whole (127.0.0.0/8) to lo: the abuser's and everyone
// else's.
const (
	abuserIP = "127.0.0.2"
	otherIP  = "127.0.0.1"
)

// dialFrom opens a TCP connection to the server's TCP port from ip; nil if
// the server reset it before the connect returned.
func dialFrom(t *testing.T, s *turnserver.Server, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp4", s.TCPAddr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// refusedFrom checks that a new connection from ip is closed by the server
// at once.
func refusedFrom(t *testing.T, s *turnserver.Server, ip, what string) {
	t.Helper()
	if conn := dialFrom(t, s, ip); conn != nil {
		waitClosed(t, conn, what)
	}
}

// silentFrom opens n connections from ip that send nothing, and waits until
// the server counts them open.
func silentFrom(t *testing.T, s *turnserver.Server, ip string, n int) {
	t.Helper()
	want := s.Stats().Connections + n
	for range n {
		if dialFrom(t, s, ip) == nil {
			t.Fatalf("a connection from %s within its cap was reset", ip)
		}
	}
	eventually(t, "the silent connections are counted open", func() bool { return s.Stats().Connections == want })
}

// TestConnectionCapPerIP: one address opening connections that never
// allocate holds at most MaxConnectionsPerIP of them, the next ones being
// closed as soon as they are accepted, and so cannot fill MaxConnections:
// another address still connects and allocates.
func TestConnectionCapPerIP(t *testing.T) {
	s := start(t, turnserver.Config{MaxConnections: 4, MaxConnectionsPerIP: 2, AllocateTimeout: time.Minute})
	silentFrom(t, s, abuserIP, 2)
	for range 2 { // without the per-IP cap, these two would take the server's last slots
		refusedFrom(t, s, abuserIP, "the abuser's connection past its per-IP cap")
	}
	conn := dialFrom(t, s, otherIP)
	if conn == nil {
		t.Fatal("the other address's connection was reset")
	}
	relay, err := tcpClient(t, s, conn, "alice").Allocate()
	if err != nil {
		t.Fatalf("the other address's allocation while the abuser is at its cap: %v", err)
	}
	defer relay.Close()
	if st := s.Stats(); st.Connections != 3 || st.ConnectionsRefusedIP != 2 || st.ConnectionsRefused != 0 {
		t.Errorf("stats %+v, want 3 connections open, 2 refused by the per-IP cap, none by the server's", st)
	}
}

// TestConnectionCapPerIPCountsUnallocated: connections with an allocation
// do not count against their address's cap (they are held to
// MaxAllocationsPerUser), so users behind one NAT are not limited by it;
// a connection whose allocation ends counts again.
func TestConnectionCapPerIPCountsUnallocated(t *testing.T) {
	s := start(t, turnserver.Config{MaxConnectionsPerIP: 2, AllocateTimeout: time.Minute})
	var relays []net.PacketConn
	for _, user := range []string{"alice", "bob", "carol"} { // three allocations from one address, over the cap of 2
		conn := dialFrom(t, s, abuserIP)
		if conn == nil {
			t.Fatalf("%s's connection was reset", user)
		}
		relay, err := tcpClient(t, s, conn, user).Allocate()
		if err != nil {
			t.Fatalf("%s's allocation: %v", user, err)
		}
		relays = append(relays, relay)
	}
	silentFrom(t, s, abuserIP, 2) // the address's cap of connections without an allocation
	refusedFrom(t, s, abuserIP, "a third connection without an allocation")
	_ = relays[0].Close() // alice's connection has no allocation any more
	eventually(t, "alice's allocation ends", func() bool { return s.Stats().Allocations == 2 })
	refusedFrom(t, s, abuserIP, "a connection while alice's counts again")
	if st := s.Stats(); st.Connections != 5 || st.ConnectionsRefusedIP != 2 {
		t.Errorf("stats %+v, want 5 connections open and 2 refused by the per-IP cap", st)
	}
	for _, r := range relays[1:] {
		_ = r.Close()
	}
}

// badAllocate is an Allocate request with a well-formed, unexpired
// username, the server's nonce and a wrong password: the server has to
// look the key up and check the MESSAGE-INTEGRITY to refuse it.
func badAllocate(t *testing.T, nonce string) []byte {
	t.Helper()
	username := turnserver.Username("mallory", time.Now().Add(time.Hour))
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
		stun.NewUsername(username), stun.NewRealm(turnserver.DefaultRealm), stun.NewNonce(nonce),
		stun.NewLongTermIntegrity(username, turnserver.DefaultRealm, "wrong password"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// serverNonce sends an Allocate without credentials from conn and returns
// the nonce of the server's 401.
func serverNonce(t *testing.T, s *turnserver.Server, conn net.PacketConn) string {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(m.Raw, s.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the 401 to an Allocate without credentials: %v", err)
	}
	res := &stun.Message{Raw: buf[:n]}
	var nonce stun.Nonce
	if err := res.Decode(); err != nil {
		t.Fatal(err)
	}
	if err := nonce.GetFrom(res); err != nil {
		t.Fatalf("no nonce in %v: %v", res, err)
	}
	return nonce.String()
}

// TestUDPFloodRateLimited: one address flooding the UDP port with
// Allocates with a wrong password and garbage gets at most its bucket's
// worth of them handled (answered), the rest dropped and counted, while
// another address allocates and relays both ways within the deadline.
func TestUDPFloodRateLimited(t *testing.T) {
	const rate, burst = 10, 20
	s := start(t, turnserver.Config{UDPRequestRate: rate, UDPRequestBurst: burst})
	flood, err := net.ListenPacket("udp4", abuserIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	began := time.Now()
	bad, garbage := badAllocate(t, serverNonce(t, s, flood)), []byte("\x00\x01\x00\x00 not quite a STUN message")

	// The flooder sends until the other address is done (at most 20000
	// datagrams) and counts the answers it gets.
	var sent, answers atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := bad
			if i%4 == 3 {
				p = garbage
			}
			if _, err := flood.WriteTo(p, s.UDPAddr()); err == nil {
				sent.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := flood.ReadFrom(buf); err != nil {
				return // the deadline set once the flood is over
			}
			answers.Add(1)
		}
	}()
	eventually(t, "the flood is under way", func() bool { return sent.Load() >= 1000 })

	ice := s.ICEServers("alice")[0]
	relay, err := allocateFrom(t, s, otherIP, ice.Username, ice.Credential)
	if err != nil {
		t.Fatalf("the other address's allocation during the flood: %v", err)
	}
	peer, err := net.ListenPacket("udp4", otherIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// The flood fills the server's socket buffer, so the kernel may drop
	// any one datagram (the other address's too, before the rate limit
	// sees it): what must hold is that the other address gets through,
	// sending again as an application over UDP does.
	from := deliver(t, "to the peer", peer, func() error {
		_, err := relay.WriteTo([]byte("to the peer"), peer.LocalAddr())
		return err
	})
	deliver(t, "to the client", relay, func() error {
		_, err := peer.WriteTo([]byte("to the client"), from)
		return err
	})
	close(stop)
	// Answers still on their way arrive well within this.
	_ = flood.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	wg.Wait()

	elapsed := time.Since(began)
	allowed := int64(burst + rate*elapsed.Seconds() + 1) // +1: rounding
	st := s.Stats()
	t.Logf("in %s the flooder sent %d datagrams and got %d answers (bucket allows %d); %d dropped by the rate limit",
		elapsed.Round(time.Millisecond), sent.Load(), answers.Load(), allowed, st.UDPRateLimited)
	if got := answers.Load() + 1; got > allowed { // +1: the nonce request's answer
		t.Errorf("the flooder got %d answers, more than its bucket allows (%d)", got, allowed)
	}
	if st.UDPRateLimited < 100 || int64(st.UDPRateLimited) > sent.Load() {
		t.Errorf("%d datagrams counted as dropped by the rate limit, want most of the %d sent", st.UDPRateLimited, sent.Load())
	}
	if st.UDPRateLimitIPs != 2 {
		t.Errorf("%d source IPs tracked, want 2", st.UDPRateLimitIPs)
	}
}

// deliver calls send every 200 ms until recv reads want, for at most 5 s,
// and returns the address want came from.
func deliver(t *testing.T, want string, recv net.PacketConn, send func() error) net.Addr {
	t.Helper()
	buf := make([]byte, 100)
	var last error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err := send(); err != nil {
			t.Fatalf("sending %q during the flood: %v", want, err)
		}
		_ = recv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := recv.ReadFrom(buf)
		if err == nil && string(buf[:n]) == want {
			return from
		}
		last = err
	}
	t.Fatalf("%q did not arrive in 5 s during the flood (last read: %v)", want, last)
	return nil
}

// allocateFrom is allocate from a client socket on ip.
func allocateFrom(t *testing.T, s *turnserver.Server, ip, username, password string) (net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", ip+":0")
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

// TestUDPRateLimitSparesAllocations: once a client address has an
// allocation, what it sends (permissions, relayed data) is not counted
// against its IP's bucket, however small.
func TestUDPRateLimitSparesAllocations(t *testing.T) {
	s := start(t, turnserver.Config{UDPRequestRate: 1, UDPRequestBurst: 4})
	ice := s.ICEServers("alice")[0]
	relay, err := allocateFrom(t, s, otherIP, ice.Username, ice.Credential)
	if err != nil {
		t.Fatalf("allocation within the bucket: %v", err)
	}
	peer, err := net.ListenPacket("udp4", otherIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	const packets = 50
	buf := make([]byte, 100)
	for i := range packets { // one at a time: loopback loses none
		if _, err := relay.WriteTo([]byte{byte(i)}, peer.LocalAddr()); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := peer.ReadFrom(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("packet %d: the peer got %v, %v", i, buf[:n], err)
		}
	}
	if st := s.Stats(); st.UDPRateLimited != 0 {
		t.Errorf("%d datagrams of an allocated client dropped by the rate limit, want none", st.UDPRateLimited)
	}
}
