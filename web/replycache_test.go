package web

import (
	"fmt"
	"math/rand/v2"
	"testing"
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
		for _, f := range r.m {
			bytes += len(f)
		}
		if len(r.m) > n || bytes > maxBytes || bytes != r.bytes {
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
