package media

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
)

// rtpDatagram is a minimal RTP packet of ssrc with seq, padded to size.
func rtpDatagram(ssrc uint32, seq uint16, size int) []byte {
	b := make([]byte, size)
	b[0], b[1] = 0x80, 96
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	for i := 12; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

// udpReceivers opens n loopback sockets.
func udpReceivers(t testing.TB, n int) []*net.UDPConn {
	t.Helper()
	out := make([]*net.UDPConn, n)
	for i := range out {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		out[i] = c
	}
	return out
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// pending reports whether a datagram arrives at c within wait.
func pending(t *testing.T, c *net.UDPConn, wait time.Duration) ([]byte, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

func newTestBatchConn(t *testing.T, network string, ip net.IP) *batchConn {
	t.Helper()
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Skipf("listen %s %v: %v", network, ip, err)
	}
	c := newBatchConn(conn)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The datagrams of a registered stream written while its batch is open
// leave together when it is flushed, unchanged and each to its own
// destination; anything else is written at once.
func TestBatchConnHoldsFanOutUntilFlush(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		ip      net.IP
	}{
		{"ipv4 socket", "udp4", net.IPv4(127, 0, 0, 1)},
		{"dual-stack socket", "udp", net.IPv6unspecified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestBatchConn(t, tc.network, tc.ip)
			subs := udpReceivers(t, 3)
			b := c.newBatch()
			c.register(1111, b)
			c.register(2222, b)

			b.begin()
			want := make([][]byte, len(subs))
			for i, s := range subs {
				want[i] = rtpDatagram(1111, uint16(i), 200+i)
				if n, err := c.WriteToAddrPort(want[i], addrOf(s)); err != nil || n != len(want[i]) {
					t.Fatalf("write %d: %d, %v", i, n, err)
				}
			}
			// Not RTP of a registered stream: written at once.
			others := [][]byte{
				rtpDatagram(3333, 1, 100),                      // unregistered SSRC
				append([]byte{0x80, 200}, make([]byte, 26)...), // RTCP sender report
				{0x00, 0x01, 0x00, 0x00},                       // STUN
				{22, 0xfe, 0xfd},                               // DTLS
			}
			for _, o := range others {
				if _, err := c.WriteToAddrPort(o, addrOf(subs[0])); err != nil {
					t.Fatal(err)
				}
				got, ok := pending(t, subs[0], 2*time.Second)
				if !ok || !bytes.Equal(got, o) {
					t.Fatalf("datagram % x not written at once (got % x)", o[:2], got)
				}
			}
			// Written with RawSyscall (not through net.UDPConn, whose
			// system call entry wakes the runtime's sysmon).
			if got, want := c.rawWritten.Load(), uint64(len(others)); runtime.GOOS == "linux" && got != want {
				t.Errorf("%d datagrams written raw, want %d", got, want)
			}
			for i, s := range subs {
				if got, ok := pending(t, s, 50*time.Millisecond); ok {
					t.Fatalf("subscriber %d got % x before the flush", i, got[:12])
				}
			}
			b.flush()
			for i, s := range subs {
				got, ok := pending(t, s, 2*time.Second)
				if !ok || !bytes.Equal(got, want[i]) {
					t.Errorf("subscriber %d: got %d bytes (ok %v), want the %d written", i, len(got), ok, len(want[i]))
				}
			}

			// Closed: the stream's datagrams (a NACK resend) go at once.
			resend := rtpDatagram(2222, 9, 300)
			if _, err := c.WriteToAddrPort(resend, addrOf(subs[1])); err != nil {
				t.Fatal(err)
			}
			if got, ok := pending(t, subs[1], 2*time.Second); !ok || !bytes.Equal(got, resend) {
				t.Errorf("write outside a fan-out not sent at once")
			}

			// Unregistered: no longer batched.
			c.unregister(1111, b)
			b.begin()
			d := rtpDatagram(1111, 10, 120)
			if _, err := c.WriteToAddrPort(d, addrOf(subs[2])); err != nil {
				t.Fatal(err)
			}
			if got, ok := pending(t, subs[2], 2*time.Second); !ok || !bytes.Equal(got, d) {
				t.Errorf("unregistered stream still batched")
			}
			b.flush()
		})
	}
}

// A fan-out to more subscribers than a batch holds sends the rest one by
// one: nothing is lost.
func TestBatchConnOverflowWritesDirectly(t *testing.T) {
	c := newTestBatchConn(t, "udp4", net.IPv4(127, 0, 0, 1))
	sub := udpReceivers(t, 1)[0]
	b := c.newBatch()
	c.register(7, b)
	b.begin()
	for i := range maxBatch + 5 {
		if _, err := c.WriteToAddrPort(rtpDatagram(7, uint16(i), 100), addrOf(sub)); err != nil {
			t.Fatal(err)
		}
	}
	b.flush()
	seen := make(map[uint16]bool)
	for range maxBatch + 5 {
		got, ok := pending(t, sub, 2*time.Second)
		if !ok {
			break
		}
		seen[binary.BigEndian.Uint16(got[2:])] = true
	}
	if len(seen) != maxBatch+5 {
		t.Errorf("%d distinct datagrams arrived, want %d", len(seen), maxBatch+5)
	}
}

// BenchmarkSendBatch compares one packet's fan-out to N subscribers sent
// as N sendto calls with the same sent as one batch (sendmmsg), through
// batchConn.WriteToAddrPort as Pion's ICE mux calls it. Receivers drain
// their sockets.
func BenchmarkSendBatch(b *testing.B) {
	for _, n := range []int{1, 20, 49} {
		for _, batched := range []bool{false, true} {
			b.Run(fmt.Sprintf("subscribers=%d/batched=%v", n, batched), func(b *testing.B) {
				conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				c := newBatchConn(conn)
				defer c.Close()
				subs := udpReceivers(b, n)
				done := make(chan struct{})
				for _, s := range subs {
					go func() {
						buf := make([]byte, 1500)
						for {
							if _, err := s.Read(buf); err != nil {
								done <- struct{}{}
								return
							}
						}
					}()
				}
				batch := c.newBatch()
				if batched {
					c.register(42, batch)
				}
				pkt := rtpDatagram(42, 0, 1100)
				addrs := make([]netip.AddrPort, n)
				for i, s := range subs {
					addrs[i] = addrOf(s)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					batch.begin()
					for _, a := range addrs {
						if _, err := c.WriteToAddrPort(pkt, a); err != nil {
							b.Fatal(err)
						}
					}
					batch.flush()
				}
				b.StopTimer()
				for _, s := range subs {
					_ = s.Close()
					<-done
				}
			})
		}
	}
}

// ReadFromAddrPort returns each datagram and its sender as net.UDPConn
// does, and honours the read deadline.
func TestBatchConnReadsDatagrams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		ip      net.IP
	}{
		{"ipv4 socket", "udp4", net.IPv4(127, 0, 0, 1)},
		{"dual-stack socket", "udp", net.IPv6unspecified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestBatchConn(t, tc.network, tc.ip)
			port := c.LocalAddr().(*net.UDPAddr).Port
			sender := udpReceivers(t, 1)[0]
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
			buf := make([]byte, 1500)
			for i := range 3 {
				want := rtpDatagram(5, uint16(i), 100+i)
				if _, err := sender.WriteTo(want, to); err != nil {
					t.Fatal(err)
				}
				if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
					t.Fatal(err)
				}
				n, from, err := c.ReadFromAddrPort(buf)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], want) {
					t.Errorf("read %d: %d bytes, want the %d sent", i, n, len(want))
				}
				if got, sent := from.Addr().Unmap(), addrOf(sender); got != sent.Addr() || from.Port() != sent.Port() {
					t.Errorf("read %d: from %v, want %v", i, from, sent)
				}
			}
			if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadFromAddrPort(buf); !os.IsTimeout(err) {
				t.Errorf("read with nothing sent: %v, want a timeout", err)
			}
		})
	}
}
