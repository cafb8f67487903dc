package web

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// TestReplyCacheBounds: whatever the sizes, the cache keeps at most n ids
// and at most maxBytes of bodies, remembers every one of the last n ids,
// and drops bodies oldest first (a body larger than maxBytes is never kept).
func TestReplyCacheBounds(t *testing.T) {
	const n, maxBytes = 16, 1000
	r := newReplyCache(n, maxBytes)
	rng := rand.New(rand.NewPCG(1, 2))
	size := map[int]int{}
	for i := range 2000 {
		size[i] = rng.IntN(1200)
		r.put(fmt.Sprint("id-", i), make([]byte, size[i]))
		bytes := 0
		for id, k := range r.m {
			if r.ring[k].id != id {
				t.Fatalf("after %d puts: %s maps to the entry of %s", i+1, id, r.ring[k].id)
			}
			bytes += len(r.ring[k].frame)
		}
		if len(r.m) > n || len(r.ring) > n || bytes > maxBytes || bytes != r.bytes {
			t.Fatalf("after %d puts: %d ids, %d bytes (counted %d)", i+1, len(r.m), bytes, r.bytes)
		}
		oldestKept := -1
		for j := max(0, i-n+1); j <= i; j++ {
			f, known := r.get(fmt.Sprint("id-", j))
			switch {
			case !known:
				t.Fatalf("after %d puts: id-%d forgotten", i+1, j)
			case f != nil && oldestKept < 0:
				oldestKept = j
			case f == nil && oldestKept >= 0 && size[j] <= maxBytes:
				t.Fatalf("after %d puts: id-%d lost its body before the older id-%d", i+1, j, oldestKept)
			}
		}
	}
}

// TestBatchConnAbortOutlastsBatch (issue 16): the write deadline of a
// batch is set on the socket at its flush; the slow consumer's abort,
// coming while a batch is open, is not undone by that flush.
func TestBatchConnAbortOutlastsBatch(t *testing.T) {
	server, client := net.Pipe() // writes block until the other end reads
	defer client.Close()
	defer server.Close()
	b := &batchConn{Conn: server, pool: newBatchPool()}

	b.begin()
	_ = b.SetWriteDeadline(time.Now().Add(time.Minute)) // as gorilla does before each frame
	_, _ = b.Write([]byte("frame"))
	b.abortWrites()
	_ = b.SetWriteDeadline(time.Now().Add(time.Minute)) // a later frame of the batch
	done := make(chan error, 1)
	go func() { done <- b.flush() }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("flush after abort = %v, want the deadline exceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the flush after the abort waited for a reader that never reads")
	}

	// Without an abort, the batch's deadline is the one set at flush.
	s2, c2 := net.Pipe()
	defer c2.Close()
	defer s2.Close()
	b2 := &batchConn{Conn: s2, pool: newBatchPool()}
	_ = b2.SetWriteDeadline(time.Now()) // outside a batch: set at once
	b2.begin()
	_ = b2.SetWriteDeadline(time.Now().Add(time.Minute))
	_, _ = b2.Write([]byte("frame"))
	go func() { done <- b2.flush() }()
	buf := make([]byte, 16)
	if n, err := c2.Read(buf); err != nil || string(buf[:n]) != "frame" {
		t.Fatalf("read %q, %v; want the batch", buf[:n], err)
	}
	if err := <-done; err != nil {
		t.Fatalf("flush = %v", err)
	}
}

// BenchmarkReplyCache: a request's look-up and record in the duplicate-id
// cache, over many connections' caches (cold in the CPU's caches, as on a
// server of many connections), each past its window of 256 ids.
func BenchmarkReplyCache(b *testing.B) {
	const caches, window = 4096, 256
	ids := make([]string, 1<<14)
	for i := range ids {
		ids[i] = fmt.Sprintf("req-%d", i)
	}
	cs := make([]*replyCache, caches)
	seq := make([]int, caches)
	frame := make([]byte, 120)
	for i := range cs {
		cs[i] = newReplyCache(window, 64<<10)
		for range window {
			cs[i].put(ids[seq[i]%len(ids)], frame)
			seq[i]++
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := (i * 1031) % caches
		id := ids[seq[c]%len(ids)]
		seq[c]++
		if _, known := cs[c].get(id); known {
			b.Fatal("a new id is known")
		}
		cs[c].put(id, frame)
	}
}
