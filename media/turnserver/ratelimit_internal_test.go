package turnserver

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestLimiterBucketsAndEviction: each source IP has its own bucket of
// burst tokens refilled at rate; a client address with an allocation is
// not counted; at most UDPRateLimitIPs buckets are kept, the least
// recently seen one forgotten past the cap.
func TestLimiterBucketsAndEviction(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newLimiter(Config{UDPRequestRate: 2, UDPRequestBurst: 3, UDPRateLimitIPs: 2})
	l.now = func() time.Time { return now }
	a, b, c := netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.2:1000"), netip.MustParseAddrPort("192.0.2.3:1000")
	passed := func(src netip.AddrPort, n int) int {
		got := 0
		for range n {
			if l.allow(src) {
				got++
			}
		}
		return got
	}
	if got := passed(a, 10); got != 3 {
		t.Errorf("a: %d of 10 passed, want its burst of 3", got)
	}
	if got := passed(netip.AddrPortFrom(a.Addr(), 2000), 1); got != 0 {
		t.Errorf("a from another port: %d passed, want 0 (the bucket is per IP)", got)
	}
	if got := passed(b, 1); got != 1 {
		t.Errorf("b while a is out of tokens: %d passed, want 1", got)
	}
	now = now.Add(time.Second) // a gets 2 tokens back
	if got := passed(a, 10); got != 2 {
		t.Errorf("a a second later: %d passed, want 2", got)
	}
	// An allocated client address passes uncounted; its IP's other
	// addresses do not.
	l.allocation(net.UDPAddrFromAddrPort(a), 1)
	if got := passed(a, 10); got != 10 {
		t.Errorf("a with an allocation: %d of 10 passed, want all", got)
	}
	if got := passed(netip.AddrPortFrom(a.Addr(), 2000), 1); got != 0 {
		t.Errorf("a's IP from another port: %d passed, want 0", got)
	}
	l.allocation(net.UDPAddrFromAddrPort(a), -1)
	if got := passed(a, 1); got != 0 {
		t.Errorf("a after its allocation ended: %d passed, want 0", got)
	}
	// a was seen last: c's bucket takes b's place.
	if got := passed(c, 1); got != 1 {
		t.Errorf("c: %d passed, want 1", got)
	}
	if dropped, ips, evicted := l.stats(); dropped != 18 || ips != 2 || evicted != 1 {
		t.Errorf("stats: %d dropped, %d IPs, %d evicted; want 18, 2, 1", dropped, ips, evicted)
	}
	if _, kept := l.buckets[b.Addr()]; kept {
		t.Error("b, the least recently seen, is still kept")
	}
	if got := passed(a, 1); got != 0 {
		t.Errorf("a, kept: %d passed, want 0 (still out of tokens)", got)
	}
	if len(l.allocated) != 0 {
		t.Errorf("allocated addresses left: %v", l.allocated)
	}
}
