package opsqueue

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 5 * time.Second

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestOrder: ops run in push order, one at a time, also when several
// goroutines push (each one's ops keep their order).
func TestOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := New()
	q.Start()
	const pushers, each = 8, 200
	var (
		mu      sync.Mutex
		got     [pushers][]int
		running atomic.Int32
		overlap atomic.Bool
	)
	var wg sync.WaitGroup
	for p := range pushers {
		wg.Go(func() {
			for i := range each {
				q.Push(func() {
					if running.Add(1) != 1 {
						overlap.Store(true)
					}
					mu.Lock()
					got[p] = append(got[p], i)
					mu.Unlock()
					running.Add(-1)
				})
			}
		})
	}
	wg.Wait()
	q.Close()
	if overlap.Load() {
		t.Error("two ops ran at the same time")
	}
	for p := range pushers {
		if len(got[p]) != each || !slices.IsSorted(got[p]) {
			t.Errorf("pusher %d: ops ran as %v, want 0..%d in order", p, got[p], each-1)
		}
	}
}

// TestPushDoesNotWait: Push returns while an earlier op is still running,
// and the op it queued runs after that one.
func TestPushDoesNotWait(t *testing.T) {
	q := New()
	q.Start()
	defer q.Close()
	gate, started := make(chan struct{}), make(chan struct{})
	var order []string
	q.Push(func() { close(started); <-gate; order = append(order, "first") })
	wait(t, started, "the first op")
	pushed := make(chan struct{})
	go func() {
		q.Push(func() { order = append(order, "second") })
		close(pushed)
	}()
	wait(t, pushed, "Push while an op runs")
	close(gate)
	q.Close()
	if !slices.Equal(order, []string{"first", "second"}) {
		t.Errorf("ran %v, want first, second", order)
	}
}

// TestCloseDrains: Close runs every op accepted before it, including the
// ops they push before the queue stops, then returns with the goroutine
// gone.
func TestCloseDrains(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := New()
	q.Start()
	gate, started := make(chan struct{}), make(chan struct{})
	var ran atomic.Int32
	q.Push(func() {
		q.Push(func() { ran.Add(1) }) // pushed by an op before Stop: runs
		close(started)
		<-gate
	})
	wait(t, started, "the first op")
	for range 10 {
		q.Push(func() { ran.Add(1) })
	}
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while an op was still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	wait(t, closed, "Close")
	if n := ran.Load(); n != 11 {
		t.Errorf("%d of 11 queued ops ran before Close returned", n)
	}
	select {
	case <-q.Done():
	default:
		t.Error("Done is not closed after Close")
	}
}

// TestPushAfterStop: once stopped, Push drops the op and says so, also from
// an op that runs during the drain; Stop and Close may be repeated.
func TestPushAfterStop(t *testing.T) {
	q := New()
	q.Start()
	var late atomic.Bool
	var accepted atomic.Bool
	gate, started := make(chan struct{}), make(chan struct{})
	q.Push(func() {
		close(started)
		<-gate
		accepted.Store(q.Push(func() { late.Store(true) }))
	})
	wait(t, started, "the first op")
	q.Stop()
	if q.Push(func() { late.Store(true) }) {
		t.Error("Push after Stop returned true")
	}
	close(gate)
	q.Close()
	q.Stop()
	q.Close()
	if accepted.Load() || late.Load() {
		t.Errorf("an op pushed after Stop was accepted (%v) or ran (%v)", accepted.Load(), late.Load())
	}
}

// TestNotStarted: without Run nothing runs; Stop does not wait.
func TestNotStarted(t *testing.T) {
	q := New()
	ran := false
	if !q.Push(func() { ran = true }) {
		t.Fatal("Push before Run refused")
	}
	q.Stop()
	select {
	case <-q.Done():
		t.Error("Done closed though Run never ran")
	default:
	}
	if ran {
		t.Error("an op ran without Run")
	}
}

// TestRunOnCallerGoroutine: Run blocks the caller until the queue is stopped
// and drained, so its owner can count it in a WaitGroup.
func TestRunOnCallerGoroutine(t *testing.T) {
	q := New()
	var ran atomic.Int32
	q.Push(func() { ran.Add(1) })
	var wg sync.WaitGroup
	wg.Go(q.Run)
	q.Push(func() { ran.Add(1) })
	q.Push(q.Stop) // an op may stop its own queue
	wg.Wait()
	if n := ran.Load(); n != 2 {
		t.Errorf("%d of 2 ops ran", n)
	}
}

// TestPanicEndsProcess: a panicking op is not recovered; it ends the
// process, as a panic on any goroutine does. The test runs itself in a
// child process that panics.
func TestPanicEndsProcess(t *testing.T) {
	if os.Getenv("OPSQUEUE_PANIC_CHILD") == "1" {
		q := New()
		q.Start()
		q.Push(func() { panic("op exploded") })
		q.Close() // never returns: the panic ends the process
		os.Exit(0)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPanicEndsProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OPSQUEUE_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the child survived a panicking op:\n%s", out)
	}
	if !strings.Contains(string(out), "panic: op exploded") {
		t.Errorf("the child ended without the op's panic (%v):\n%s", err, out)
	}
}

// TestStandardLibraryOnly: the package doc promises that media (and so
// everyone) may import opsqueue; that holds while it imports only the
// standard library.
func TestStandardLibraryOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s, not in the standard library", name, path)
			}
		}
	}
}
