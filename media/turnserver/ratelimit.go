package turnserver

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// limiter is the per-source-IP token bucket of the UDP port
// (Config.UDPRequestRate, UDPRequestBurst). A datagram from a client
// address with an allocation passes uncounted: that client proved its
// credentials to make it and is held to MaxAllocationsPerUser. Any other
// (Binding, Allocate with or without credentials, garbage) takes a token
// of its source IP's bucket or is dropped.
//
// Memory is bounded: at most Config.UDPRateLimitIPs buckets are kept, in
// least-recently-seen order; past the cap the least recently seen is
// forgotten, and that IP starts again with a full bucket when it comes
// back. A bucket idle for burst/rate seconds is full again anyway, so
// forgetting it loses nothing; the cap bounds the memory, not the rate
// of a sender with more source addresses than it.
type limiter struct {
	rate, burst float64 // tokens per second, tokens
	maxIPs      int
	now         func() time.Time

	mu        sync.Mutex // guards the fields below
	buckets   map[netip.Addr]*list.Element
	lru       list.List // of *bucket, the most recently seen first
	allocated map[netip.AddrPort]int
	dropped   uint64
	evicted   uint64
}

type bucket struct {
	ip     netip.Addr
	tokens float64
	last   time.Time // of the last refill
}

func newLimiter(cfg Config) *limiter {
	return &limiter{rate: float64(cfg.UDPRequestRate), burst: float64(cfg.UDPRequestBurst), maxIPs: cfg.UDPRateLimitIPs,
		now: time.Now, buckets: map[netip.Addr]*list.Element{}, allocated: map[netip.AddrPort]int{}}
}

// allow reports whether a datagram from src may be handled, taking a token
// of its IP's bucket unless src has an allocation.
func (l *limiter) allow(src netip.AddrPort) bool {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.allocated[src] > 0 {
		return true
	}
	var b *bucket
	if e := l.buckets[src.Addr()]; e != nil {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		b.tokens = min(l.burst, b.tokens+l.rate*now.Sub(b.last).Seconds())
		b.last = now
	} else {
		if len(l.buckets) >= l.maxIPs {
			oldest := l.lru.Back()
			delete(l.buckets, l.lru.Remove(oldest).(*bucket).ip)
			l.evicted++
		}
		b = &bucket{ip: src.Addr(), tokens: l.burst, last: now}
		l.buckets[b.ip] = l.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	l.dropped++
	return false
}

// allocation is called when an allocation of the UDP client address src
// begins (delta 1) or ends (-1). Allocations over TCP and TLS are not the
// limiter's.
func (l *limiter) allocation(src net.Addr, delta int) {
	u, ok := src.(*net.UDPAddr)
	if !ok {
		return
	}
	ap := u.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.allocated[ap] += delta; l.allocated[ap] <= 0 {
		delete(l.allocated, ap)
	}
}

func (l *limiter) stats() (dropped uint64, ips int, evicted uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped, len(l.buckets), l.evicted
}

// limitedConn is the UDP port as pion's server reads it: datagrams over
// their source's rate are read and dropped here, before pion parses them,
// looks up a key or checks a MESSAGE-INTEGRITY, and before it answers.
type limitedConn struct {
	*net.UDPConn
	lim *limiter
}

func (c *limitedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, src, err := c.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		if c.lim.allow(src) {
			return n, net.UDPAddrFromAddrPort(src), nil
		}
	}
}
