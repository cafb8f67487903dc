package signaling

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// laneOp is a test attempt on a lane: WATCH and GET of its read keys,
// then (after pause) SET of its write keys to its name, and whether that
// committed.
type laneOp struct {
	name   string
	reads  []string
	writes []string
	pause  time.Duration
}

func (o laneOp) body(ctx context.Context, conn txConn) error {
	if _, err := conn.read(ctx, o.reads, func(p redis.Pipeliner) {
		for _, k := range o.reads {
			p.Get(ctx, k)
		}
	}); err != nil {
		return err
	}
	time.Sleep(o.pause)
	cmds, err := conn.exec(ctx, func(p redis.Pipeliner) {
		for _, k := range o.writes {
			p.Set(ctx, k, o.name, 0)
		}
	})
	return pipelineErr(cmds, err)
}

// runLane runs ops in one shared transaction of g (which has one lane):
// it holds the lane with an attempt of its own until every op waits for
// it, so that the lane takes them all at once; it returns each one's
// error.
func runLane(t *testing.T, g *gangs, ops []laneOp) []error {
	t.Helper()
	hold, held := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = g.run(context.Background(), func(conn txConn) error {
			// An attempt joins a lane with its first request.
			if _, err := conn.Pipelined(context.Background(), func(p redis.Pipeliner) error {
				p.Ping(context.Background())
				return nil
			}); err != nil {
				t.Errorf("the holder's read: %v", err)
			}
			close(held)
			<-hold
			return nil
		})
	})
	<-held
	errs := make([]error, len(ops))
	for i, o := range ops {
		wg.Go(func() {
			errs[i] = g.run(context.Background(), func(conn txConn) error { return o.body(context.Background(), conn) })
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for int(g.joining.Load()) < len(ops) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d ops wait for the lane", g.joining.Load(), len(ops))
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	return errs
}

// TestLaneSharesOneTransaction: attempts waiting for a lane share its
// round trips: several commit in one EXEC, and what each wrote is there.
func TestLaneSharesOneTransaction(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	g := newGangs(rdb, GangConfig{Lanes: 1, Max: 64, Wait: time.Second})
	defer g.close()
	var ops []laneOp
	for i := range 40 {
		k := fmt.Sprintf("lane:share:%d", i)
		ops = append(ops, laneOp{name: fmt.Sprint(i), reads: []string{k}, writes: []string{k, "lane:share:log"}})
	}
	for i, err := range runLane(t, g, ops) {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	for i := range 40 {
		if v := rdb.Get(context.Background(), fmt.Sprintf("lane:share:%d", i)).Val(); v != fmt.Sprint(i) {
			t.Fatalf("op %d's write: %q", i, v)
		}
	}
	st := g.stats.get()
	t.Logf("%+v", st)
	if st.Members != 41 || st.Refused != 0 || st.Execs != 1 {
		t.Fatalf("stats %+v: want the holder and 40 members, one EXEC for the 40, none refused (the key they share is only written)", st)
	}
}

// TestLaneRefusesWhatAnotherReads: of attempts in one lane, one that
// writes a key another one WATCHed (or the other way round) is not
// committed with it: it gets errGangRefused and nothing of it is written;
// a counter read and written by all of them (the classic lost update)
// ends where running them one after the other would leave it.
func TestLaneRefusesWhatAnotherReads(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	g := newGangs(rdb, GangConfig{Lanes: 1, Max: 64, Wait: time.Second})
	defer g.close()
	ctx := context.Background()
	const n = 20
	// Each op reads the counter and writes counter+1, through the lane
	// until refused, then alone (as doPeek does).
	incr := func(conn txConn) error {
		var get *redis.StringCmd
		if _, err := conn.read(ctx, []string{"lane:ctr"}, func(p redis.Pipeliner) { get = p.Get(ctx, "lane:ctr") }); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		v, _ := get.Int()
		cmds, err := conn.exec(ctx, func(p redis.Pipeliner) { p.Set(ctx, "lane:ctr", v+1, 0) })
		return pipelineErr(cmds, err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var mu sync.Mutex
	refused := 0
	for range n {
		wg.Go(func() {
			<-start
			for {
				err := g.run(ctx, incr)
				if errors.Is(err, errGangRefused) || errors.Is(err, redis.TxFailedErr) {
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		})
	}
	close(start)
	wg.Wait()
	if v, _ := rdb.Get(ctx, "lane:ctr").Int(); v != n {
		t.Fatalf("counter %d after %d increments (%d refused): a lane committed decisions on a stale read", v, n, refused)
	}
	if refused == 0 {
		t.Fatalf("no increment was refused: they never shared a lane (stats %+v)", g.stats.get())
	}
	// Reads of one against writes of another, in both directions.
	errs := runLane(t, g, []laneOp{
		{name: "a", reads: []string{"lane:x"}, writes: []string{"lane:a"}},
		{name: "b", reads: []string{"lane:b0"}, writes: []string{"lane:x"}},
		{name: "c", reads: []string{"lane:a"}, writes: []string{"lane:c"}},
		{name: "d", reads: []string{"lane:d"}, writes: []string{"lane:d"}},
	})
	got := map[string]bool{}
	for i, err := range errs {
		switch {
		case err == nil:
			got[string(rune('a'+i))] = true
		case !errors.Is(err, errGangRefused):
			t.Fatalf("op %c: %v", 'a'+i, err)
		}
	}
	if !got["d"] || got["a"] == got["b"] || (got["a"] && got["c"]) {
		t.Fatalf("committed %v: want d, and of a (reads x, writes a), b (writes x) and c (reads a) either a alone or b (with c)", got)
	}
	for _, k := range []string{"lane:x", "lane:c", "lane:a"} {
		owner := string(k[len(k)-1])
		if k == "lane:x" {
			owner = "b"
		}
		v := rdb.Get(ctx, k).Val()
		if got[owner] != (v == owner) {
			t.Fatalf("%s = %q, but %s committed: %v", k, v, owner, got[owner])
		}
	}
}

// TestLaneGoesOnWithoutALateAttempt: an attempt that takes longer than the
// lane's wait between its read and its EXEC does not hold the others: they
// commit, it is refused (errGangRefused) with nothing written.
func TestLaneGoesOnWithoutALateAttempt(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	g := newGangs(rdb, GangConfig{Lanes: 1, Max: 64, Wait: 20 * time.Millisecond})
	defer g.close()
	ops := []laneOp{{name: "slow", reads: []string{"lane:slow"}, writes: []string{"lane:slow"}, pause: 300 * time.Millisecond}}
	for i := range 5 {
		k := fmt.Sprintf("lane:quick:%d", i)
		ops = append(ops, laneOp{name: "quick", reads: []string{k}, writes: []string{k}})
	}
	started := time.Now()
	errs := runLane(t, g, ops)
	if !errors.Is(errs[0], errGangRefused) {
		t.Fatalf("the late attempt: %v, want errGangRefused", errs[0])
	}
	if rdb.Exists(context.Background(), "lane:slow").Val() != 0 {
		t.Fatal("the refused attempt's write is there")
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("quick %d: %v", i, err)
		}
	}
	t.Logf("all done in %v; %+v", time.Since(started), g.stats.get())
}

// TestGangWriteKeys: the keys of the commands an EXEC queues; a command the
// lane does not know is reported, so that its attempt commits only alone.
func TestGangWriteKeys(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: nothing is sent
	defer c.Close()
	p := c.Pipeline()
	p.HSet(ctx, "h", "f", "v")
	p.Del(ctx, "d1", "d2")
	p.ZAdd(ctx, "z", redis.Z{Score: 1, Member: "m"})
	p.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []any{"p", "x"}})
	p.HIncrBy(ctx, "k", "f", 1)
	redis.NewScript("return 1").Eval(ctx, p, []string{"e1", "e2"}, "arg")
	keys, known := gangWriteKeys(p.Cmds())
	if want := []string{"h", "d1", "d2", "z", "s", "k", "e1", "e2"}; !known || !slices.Equal(keys, want) {
		t.Fatalf("keys %v (known %v), want %v", keys, known, want)
	}
	p.Discard()
	p.Do(ctx, "sunionstore", "dst", "a", "b")
	if _, known := gangWriteKeys(p.Cmds()); known {
		t.Fatal("SUNIONSTORE's keys reported as known")
	}
}

// TestLaneJoinsWithFirstRequest: an attempt joins a lane with its first
// request, not before: one that asks nothing runs at once while the only
// lane is busy, and one whose context ends while it waits for a lane gets
// the context's error on its first request's commands, sends no leave, and
// the lane serves the next attempts.
func TestLaneJoinsWithFirstRequest(t *testing.T) {
	srv := redistest.Start(t)
	g := newGangs(srv.Client(), GangConfig{Lanes: 1, Max: 8, Wait: time.Second})
	defer g.close()
	hold, held := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	defer release() // before g.close, if the test fails while the lane is held
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- g.run(context.Background(), func(conn txConn) error {
			_, err := conn.Pipelined(context.Background(), func(p redis.Pipeliner) error {
				p.Ping(context.Background())
				return nil
			})
			close(held)
			<-hold
			return err
		})
	}()
	<-held

	idle := make(chan error, 1)
	go func() { idle <- g.run(context.Background(), func(txConn) error { return nil }) }()
	select {
	case err := <-idle:
		if err != nil {
			t.Fatalf("an attempt that asks nothing: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an attempt that asks nothing waited for the busy lane")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var cmds []redis.Cmder
	late := make(chan error, 1)
	go func() {
		late <- g.run(ctx, func(conn txConn) error {
			var err error
			cmds, err = conn.read(ctx, []string{"lane:join:k"}, func(p redis.Pipeliner) { p.Get(ctx, "lane:join:k") })
			return err
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for g.joining.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the attempt does not wait for the lane")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-late; !errors.Is(err, context.Canceled) {
		t.Fatalf("an attempt whose context ended before a lane took it: %v", err)
	}
	for _, c := range cmds {
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("its command %v: %v, want the context's error", c.Args(), c.Err())
		}
	}

	release()
	if err := <-holderDone; err != nil {
		t.Fatalf("holder: %v", err)
	}
	if err := runLane(t, g, []laneOp{{name: "a", reads: []string{"lane:join:a"}, writes: []string{"lane:join:a"}}}); err[0] != nil {
		t.Fatalf("the lane after: %v", err[0])
	}
	if v := srv.Client().Get(context.Background(), "lane:join:a").Val(); v != "a" {
		t.Fatalf("the write after: %q", v)
	}
	if st := g.stats.get(); st.Members != 3 {
		t.Errorf("stats %+v: want 3 members (the holder, runLane's holder and op), not the idle or the cancelled attempt", st)
	}
}

// TestLaneSharesTheNodesRead: the members of a lane that read the whole
// shared key (the live nodes) in one round get one ZRANGE's reply between
// them, each a copy of its own, and its error when it fails; their other
// reads run as before, and a range that is not the whole key is not
// shared.
func TestLaneSharesTheNodesRead(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	g := newGangs(rdb, GangConfig{Lanes: 1, Max: 64, Wait: time.Second, SharedKey: "lane:nodes"})
	defer g.close()
	if err := rdb.ZAdd(ctx, "lane:nodes", redis.Z{Score: 1, Member: "n1"}, redis.Z{Score: 2, Member: "n2"}).Err(); err != nil {
		t.Fatal(err)
	}
	zrangeCalls := func() int {
		info, err := rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "cmdstat_zrange:calls="); ok {
				n, _ = strconv.Atoi(v[:strings.IndexByte(v, ',')])
			}
		}
		return n
	}
	const n = 12
	got := make([][]string, n)
	part := make([][]string, n)
	gets := make([]string, n)
	run := func(key string) []error {
		var ops []func(txConn) error
		for i := range n {
			ops = append(ops, func(conn txConn) error {
				var whole, some *redis.StringSliceCmd
				var get *redis.StringCmd
				if _, err := conn.read(ctx, []string{fmt.Sprintf("lane:w:%d", i)}, func(p redis.Pipeliner) {
					whole = p.ZRange(ctx, key, 0, -1)
					get = p.Get(ctx, fmt.Sprintf("lane:v:%d", i))
					some = p.ZRange(ctx, key, 0, 0)
				}); err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				if err := whole.Err(); err != nil {
					return err
				}
				got[i], part[i], gets[i] = whole.Val(), some.Val(), get.Val()
				return nil
			})
		}
		return runLaneBodies(t, g, ops)
	}
	for i := range n {
		rdb.Set(ctx, fmt.Sprintf("lane:v:%d", i), fmt.Sprint(i), 0)
	}
	before := zrangeCalls()
	for i, err := range run("lane:nodes") {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	// One whole-range read for the round, and each member's own partial one.
	if calls := zrangeCalls() - before; calls != 1+n {
		t.Fatalf("%d ZRANGE calls for %d members: want 1 shared and %d partial", calls, n, n)
	}
	for i := range n {
		if !slices.Equal(got[i], []string{"n1", "n2"}) || !slices.Equal(part[i], []string{"n1"}) || gets[i] != fmt.Sprint(i) {
			t.Fatalf("op %d read %v, %v, %q", i, got[i], part[i], gets[i])
		}
	}
	got[0][0] = "changed"
	if got[1][0] != "n1" {
		t.Fatal("the members share one slice")
	}
	// Another key's whole range is each member's own.
	rdb.ZAdd(ctx, "lane:other", redis.Z{Score: 1, Member: "x"})
	before = zrangeCalls()
	for i, err := range run("lane:other") {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	if calls := zrangeCalls() - before; calls != 2*n {
		t.Fatalf("%d ZRANGE calls of another key for %d members: want %d", calls, n, 2*n)
	}
	// The shared read's error is every member's.
	rdb.Del(ctx, "lane:nodes")
	rdb.Set(ctx, "lane:nodes", "not a sorted set", 0)
	for i, err := range run("lane:nodes") {
		if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Fatalf("op %d: %v, want WRONGTYPE", i, err)
		}
	}
}

// runLaneBodies is runLane for bodies of any shape.
func runLaneBodies(t *testing.T, g *gangs, bodies []func(txConn) error) []error {
	t.Helper()
	hold, held := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = g.run(context.Background(), func(conn txConn) error {
			if _, err := conn.Pipelined(context.Background(), func(p redis.Pipeliner) error {
				p.Ping(context.Background())
				return nil
			}); err != nil {
				t.Errorf("the holder's read: %v", err)
			}
			close(held)
			<-hold
			return nil
		})
	})
	<-held
	errs := make([]error, len(bodies))
	for i, body := range bodies {
		wg.Go(func() { errs[i] = g.run(context.Background(), body) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for int(g.joining.Load()) < len(bodies) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d ops wait for the lane", g.joining.Load(), len(bodies))
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	return errs
}
