package signaling_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// notifySession is a connection that hands each frame to a channel (the
// benchmark's waits), parsing nothing.
type notifySession struct {
	*session
	frames chan []byte
}

func (s *notifySession) Deliver(frame []byte) {
	select {
	case s.frames <- frame:
	default:
	}
}

// wait waits for a frame of event name.
func (s *notifySession) wait(b *testing.B, name string) {
	want := []byte(`"event":"` + name + `"`)
	timeout := time.After(clusterWait)
	for {
		select {
		case f := <-s.frames:
			if bytes.Contains(f, want) {
				return
			}
		case <-timeout:
			b.Fatalf("%s: no %s after %v", s.user, name, clusterWait)
		}
	}
}

// BenchmarkClusterSetup is a call setup of the bench's (invite on node A,
// ring on node B, accept there, accepted on A) in one process against a
// real redis-server: allocs/op count both nodes' (their ops, stream
// readers and loops), ns/op is its latency on loopback, one at a time;
// cpu-µs/op is this process's CPU (user + system: both nodes and the
// benchmark's waits) and redis-cpu-µs/op redis-server's, per setup.
func BenchmarkClusterSetup(b *testing.B) {
	srv := redistest.Start(b)
	h := newClusterHarnessOf(b, srv, signaling.DefaultConfig(), testLogger())
	attach := func(node, user string) *notifySession {
		s := &notifySession{session: &session{user: user}, frames: make(chan []byte, 64)}
		if err := h.nodes[node].Attach(ctx, s); err != nil {
			b.Fatal(err)
		}
		s.drain()
		return s
	}
	alice, bob := attach("A", "alice"), attach("B", "bob")
	asN := func(s *notifySession) protocol.Actor { return protocol.Actor{UserID: s.user, Session: s} }
	b.ReportAllocs()
	rc := srv.Client()
	cpu0, rcpu0 := processCPU(b), redisCPU(b, rc)
	for b.Loop() {
		id, err := h.nodes["A"].Invite(ctx, asN(alice), protocol.InviteArgs{Invitee: "bob", Timeout: secs(30)})
		if err != nil {
			b.Fatal(err)
		}
		bob.wait(b, protocol.EvReceiveNewInvitation)
		if err := h.nodes["B"].Accept(ctx, asN(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
			b.Fatal(err)
		}
		alice.wait(b, protocol.EvInviteeAccepted)
	}
	b.ReportMetric((processCPU(b)-cpu0)/float64(b.N), "cpu-µs/op")
	b.ReportMetric((redisCPU(b, rc)-rcpu0)/float64(b.N), "redis-cpu-µs/op")
}

// BenchmarkClusterSetupConcurrent is BenchmarkClusterSetup with 64 pairs
// calling at once (each caller on node A, its callee on B), so that the
// nodes' operations share transactions in their lanes as under the bench's
// load; the metrics are per setup.
func BenchmarkClusterSetupConcurrent(b *testing.B) {
	srv := redistest.Start(b)
	h := newClusterHarnessOf(b, srv, signaling.DefaultConfig(), testLogger())
	attach := func(node, user string) *notifySession {
		s := &notifySession{session: &session{user: user}, frames: make(chan []byte, 64)}
		if err := h.nodes[node].Attach(ctx, s); err != nil {
			b.Fatal(err)
		}
		s.drain()
		return s
	}
	const pairs = 64
	type pair struct{ caller, callee *notifySession }
	ps := make([]pair, pairs)
	for i := range ps {
		ps[i] = pair{attach("A", "caller"+strconv.Itoa(i)), attach("B", "callee"+strconv.Itoa(i))}
	}
	asN := func(s *notifySession) protocol.Actor { return protocol.Actor{UserID: s.user, Session: s} }
	b.ReportAllocs()
	rc := srv.Client()
	var left atomic.Int64
	left.Store(int64(b.N))
	cpu0, rcpu0 := processCPU(b), redisCPU(b, rc)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				id, err := h.nodes["A"].Invite(ctx, asN(p.caller), protocol.InviteArgs{Invitee: p.callee.user, Timeout: secs(30)})
				if err != nil {
					b.Error(err)
					return
				}
				p.callee.wait(b, protocol.EvReceiveNewInvitation)
				if err := h.nodes["B"].Accept(ctx, asN(p.callee), protocol.InviteIDArgs{InviteID: id}); err != nil {
					b.Error(err)
					return
				}
				p.caller.wait(b, protocol.EvInviteeAccepted)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric((processCPU(b)-cpu0)/float64(b.N), "cpu-µs/op")
	b.ReportMetric((redisCPU(b, rc)-rcpu0)/float64(b.N), "redis-cpu-µs/op")
}

// processCPU is this process's user + system CPU time in µs.
func processCPU(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e3
}

// redisCPU is redis-server's user + system CPU time in µs (INFO cpu).
func redisCPU(b *testing.B, c *redis.Client) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			sum += f * 1e6
		}
	}
	return sum
}
