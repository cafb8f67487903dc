package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// soakSample is one reading of the server's resources during a run.
type soakSample struct {
	AtS        float64 `json:"t_s"`
	MemBytes   uint64  `json:"mem_bytes"`
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`
}

// sampler reads the server's memory, goroutines and open file descriptors
// every interval until stopped: for a soak run (--sample), to show that they
// stay flat after warm-up. In a child process: RSS, go_goroutines from its
// /metrics, and /proc/<pid>/fd. In-process the goroutines and descriptors
// include the bench's own active clients (idle users live in a child).
type sampler struct {
	s       *server
	every   time.Duration
	start   time.Time
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	samples []soakSample
	errs    int
}

func startSampler(s *server, every time.Duration) *sampler {
	sm := &sampler{s: s, every: every, start: time.Now(), stop: make(chan struct{})}
	sm.done.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			sm.take()
			select {
			case <-sm.stop:
				return
			case <-t.C:
			}
		}
	})
	return sm
}

func (sm *sampler) take() {
	mem, err1 := sm.s.memory()
	g, err2 := sm.s.goroutines()
	fds, err3 := sm.s.fds()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err1 != nil || err2 != nil || err3 != nil {
		sm.errs++
		return
	}
	sm.samples = append(sm.samples, soakSample{AtS: round3(time.Since(sm.start).Seconds()), MemBytes: mem, Goroutines: g, FDs: fds})
}

func (sm *sampler) finish() []soakSample {
	close(sm.stop)
	sm.done.Wait()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.samples
}

// goroutines returns the server's goroutine count.
func (s *server) goroutines() (int, error) {
	if s.pid == 0 {
		return runtime.NumGoroutine(), nil
	}
	base := strings.TrimSuffix(strings.Replace(s.wsURL, "ws://", "http://", 1), "/ws")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			return int(n), err
		}
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return 0, fmt.Errorf("no go_goroutines in %s/metrics", base)
}

// fds returns how many file descriptors the server has open.
func (s *server) fds() (int, error) {
	dir := "/proc/self/fd"
	if s.pid != 0 {
		dir = fmt.Sprintf("/proc/%d/fd", s.pid)
	}
	ents, err := os.ReadDir(dir)
	return len(ents), err
}

// soakSummary compares the first sample after warm-up with the last and
// with the largest.
type soakSummary struct {
	Samples         int     `json:"samples"`
	MemFirstBytes   uint64  `json:"mem_first_bytes"`
	MemLastBytes    uint64  `json:"mem_last_bytes"`
	MemMaxBytes     uint64  `json:"mem_max_bytes"`
	GoroutinesFirst int     `json:"goroutines_first"`
	GoroutinesLast  int     `json:"goroutines_last"`
	GoroutinesMax   int     `json:"goroutines_max"`
	FDsFirst        int     `json:"fds_first"`
	FDsLast         int     `json:"fds_last"`
	FDsMax          int     `json:"fds_max"`
	MemGrowthPct    float64 `json:"mem_growth_pct"` // last vs first
}

func summarize(samples []soakSample, warmup time.Duration) *soakSummary {
	var after []soakSample
	for _, s := range samples {
		if s.AtS >= warmup.Seconds() {
			after = append(after, s)
		}
	}
	if len(after) == 0 {
		return nil
	}
	first, last := after[0], after[len(after)-1]
	sum := &soakSummary{Samples: len(after), MemFirstBytes: first.MemBytes, MemLastBytes: last.MemBytes,
		GoroutinesFirst: first.Goroutines, GoroutinesLast: last.Goroutines, FDsFirst: first.FDs, FDsLast: last.FDs}
	for _, s := range after {
		sum.MemMaxBytes = max(sum.MemMaxBytes, s.MemBytes)
		sum.GoroutinesMax = max(sum.GoroutinesMax, s.Goroutines)
		sum.FDsMax = max(sum.FDsMax, s.FDs)
	}
	if first.MemBytes > 0 {
		sum.MemGrowthPct = round3(100 * (float64(last.MemBytes) - float64(first.MemBytes)) / float64(first.MemBytes))
	}
	return sum
}

func printSoak(w io.Writer, samples []soakSample, sum *soakSummary) {
	fmt.Fprintf(w, "\nsoak samples (server resources during the run):\n")
	t := newTable(w, "t (s)", "memory (bytes)", "goroutines", "fds")
	for _, s := range samples {
		t.row(f(s.AtS), fmt.Sprint(s.MemBytes), fmt.Sprint(s.Goroutines), fmt.Sprint(s.FDs))
	}
	t.flush()
	if sum != nil {
		fmt.Fprintf(w, "after warm-up: memory %d → %d bytes (%+.1f%%, max %d); goroutines %d → %d (max %d); fds %d → %d (max %d)\n",
			sum.MemFirstBytes, sum.MemLastBytes, sum.MemGrowthPct, sum.MemMaxBytes,
			sum.GoroutinesFirst, sum.GoroutinesLast, sum.GoroutinesMax, sum.FDsFirst, sum.FDsLast, sum.FDsMax)
	}
}
