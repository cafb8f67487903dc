package signaling

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The connection an attempt of an operation runs on (signaling/CLUSTER-DESIGN.md,
// "Shared transactions").
//
// Alone, an attempt holds a connection of the pool for its WATCH, reads
// and EXEC (soloConn over go-redis's Tx). Under load most of what an
// attempt costs, on the node and in Redis, is per round trip (a write and
// a read on each side, the wake-ups), not per command; so the first
// attempt of an operation joins a shared transaction (a gang): the
// attempts that are waiting when one of the node's gang lanes is free run
// on that lane's one connection, their reads of each round in one pipeline
// (each attempt's WATCH in front of its own reads) and their writes in one
// MULTI/EXEC. Each attempt still decides alone on what it read; the EXEC
// commits all of them or none (a key any of them WATCHed changed: each
// runs again, alone).
//
// Committing several decisions at once is only as good as running them one
// after the other if none of them read what another one writes: the lane
// commits an attempt only when no key it writes was WATCHed by another
// attempt it commits, and no key it WATCHed is written by one; the others
// get redis.TxFailedErr (as if their own key had changed) and run again,
// alone, after the EXEC. Keys written by several attempts and read by none
// (a stream's XADD, a counter's HINCRBY, the deadlines' ZADD) commute: the
// EXEC applies them in the lane's order, which is as good as any order of
// concurrent operations. A command whose keys the lane cannot tell
// (gangWriteKeys) is committed only alone.
type txConn interface {
	// read runs in one round trip WATCH of watch (if any), then what f
	// queues; it returns every command it ran.
	read(ctx context.Context, watch []string, f func(redis.Pipeliner)) ([]redis.Cmder, error)
	// Pipelined reads (nothing WATCHed) in one round trip (ClusterConn).
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	// exec runs what f queues in one MULTI/EXEC, ending the WATCH:
	// redis.TxFailedErr if a WATCHed key changed.
	exec(ctx context.Context, f func(redis.Pipeliner)) ([]redis.Cmder, error)
	// unwatch ends a WATCH that no exec ended.
	unwatch(ctx context.Context)
}

// soloConn is an attempt alone on a connection of the pool.
type soloConn struct{ rtx *redis.Tx }

func (s soloConn) read(ctx context.Context, watch []string, f func(redis.Pipeliner)) ([]redis.Cmder, error) {
	return s.rtx.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(watch) > 0 {
			p.Do(ctx, watchArgs(watch)...)
		}
		f(p)
		return nil
	})
}

func (s soloConn) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return s.rtx.Pipelined(ctx, fn)
}

func (s soloConn) exec(ctx context.Context, f func(redis.Pipeliner)) ([]redis.Cmder, error) {
	return s.rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		f(p)
		return nil
	})
}

func (s soloConn) unwatch(ctx context.Context) { unwatch(ctx, s.rtx) }

func watchArgs(keys []string) []any {
	args := make([]any, 0, 1+len(keys))
	args = append(args, "watch")
	for _, k := range keys {
		args = append(args, k)
	}
	return args
}

// runScript runs s on conn (EVALSHA, then EVAL if Redis does not have it).
func runScript(ctx context.Context, conn txConn, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	_, _ = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = s.EvalSha(ctx, p, keys, args...)
		return nil
	})
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		_, _ = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = s.Eval(ctx, p, keys, args...)
			return nil
		})
	}
	return cmd
}

// GangConfig sizes the shared transactions of a node's operations
// (cluster.op_lanes, cluster.op_gang_max).
type GangConfig struct {
	// Lanes is how many shared transactions run at once, each on a
	// connection of its own; 0: every attempt runs alone.
	Lanes int
	// Max is the most attempts in one shared transaction.
	Max int
	// Wait is how long a lane waits for its attempts' next requests before
	// it goes on without the late ones (a late attempt after the EXEC runs
	// again, alone). Their decisions take microseconds; it only bounds what
	// an attempt descheduled for long, or waiting for something another
	// attempt of the lane holds, can cost the others.
	Wait time.Duration
	// SharedKey, if set, is a key whose whole-range reads (ZRANGE key 0
	// -1, not WATCHed: the cluster's live nodes) a lane makes once per
	// round for all its members, after every other read of the round
	// (sharedReads).
	SharedKey string
}

// gangs are a node's lanes of shared transactions.
type gangs struct {
	rdb     redis.UniversalClient
	cfg     GangConfig
	join    chan *gangMember // each with its first request
	scratch sync.Pool        // redis.Pipeliner: the members' queues
	joining atomic.Int32     // attempts waiting for a lane (tests)
	done    chan struct{}
	wg      sync.WaitGroup
	closed  sync.Once
	// Counted for tests and the bench: attempts that joined a lane, EXECs
	// a lane sent, attempts a lane sent back to run alone.
	stats gangStats
}

type gangStats struct {
	mu                      sync.Mutex
	members, execs, refused int64
}

func (s *gangStats) add(members, execs, refused int64) {
	s.mu.Lock()
	s.members += members
	s.execs += execs
	s.refused += refused
	s.mu.Unlock()
}

// GangStats are a node's shared-transaction counts since it started.
type GangStats struct {
	Members int64 // attempts that ran in a lane
	Execs   int64 // MULTI/EXECs the lanes sent (each for one or more attempts)
	Refused int64 // attempts a lane sent back to run alone (a conflict in the lane, or late)
}

func (s *gangStats) get() GangStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return GangStats{s.members, s.execs, s.refused}
}

func newGangs(rdb redis.UniversalClient, cfg GangConfig) *gangs {
	g := &gangs{rdb: rdb, cfg: cfg, join: make(chan *gangMember), done: make(chan struct{})}
	for range cfg.Lanes {
		g.wg.Add(1)
		go g.lane()
	}
	return g
}

func (g *gangs) close() {
	g.closed.Do(func() { close(g.done) })
	g.wg.Wait()
}

type gangKind int

const (
	gangRead gangKind = iota
	gangExec
	gangLeave
)

// errGangRefused is a lane's answer to a member it does not commit (a
// conflict with another member, or too late): its attempt runs again,
// nothing of it written.
var errGangRefused = errors.New("signaling: not committed in the shared transaction; runs again")

// gangRetries bounds the attempts of an operation that run in a lane: once
// refused this often, it runs alone.
const gangRetries = 3

// gangReq is a member's request to its lane.
type gangReq struct {
	m     *gangMember
	kind  gangKind
	watch []string
	cmds  []redis.Cmder
}

// gangMember is an attempt's side of a lane (its txConn).
type gangMember struct {
	g       *gangs
	ctx     context.Context // its operation's (the lane's round trips carry its values)
	first   gangReq         // its first request, sent with its join
	reqs    chan<- gangReq  // its lane's, set by the lane before it answers the first request
	reply   chan error      // the lane's answer to each request
	scratch redis.Pipeliner
	watch   []string // the keys it WATCHed (read by the lane after a request)
}

// run runs body as a member of a lane. The attempt joins a lane with its
// first request (one hand-off fewer than a join answered before the first
// request), so an attempt that asks nothing never takes a lane's place.
func (g *gangs) run(ctx context.Context, body func(txConn) error) error {
	m := &gangMember{g: g, ctx: ctx, reply: make(chan error, 1)}
	if p, ok := g.scratch.Get().(redis.Pipeliner); ok {
		m.scratch = p
	} else {
		m.scratch = g.rdb.Pipeline()
	}
	defer func() {
		// Even if body panics (a recovered panic must not hold the lane).
		if m.reqs != nil {
			m.reqs <- gangReq{m: m, kind: gangLeave}
		}
		m.scratch.Discard()
		g.scratch.Put(m.scratch)
	}()
	return body(m)
}

// ask sends r and waits for the lane's answer; a failure of the round as
// a whole goes to each of r's commands that has no error of its own. The
// first request joins a lane; if none takes it before ctx ends or the node
// closes, or the lane cannot start (no connection), it fails, and so does
// every later one that would join again.
func (m *gangMember) ask(r gangReq) error {
	var err error
	if m.reqs != nil {
		m.reqs <- r
		err = <-m.reply
	} else {
		err = m.join(r)
	}
	if err != nil {
		for _, c := range r.cmds {
			if c.Err() == nil {
				c.SetErr(err)
			}
		}
	}
	return err
}

// join sends r, m's first request, with m's join, and waits for the
// lane's answer to it.
func (m *gangMember) join(r gangReq) error {
	g := m.g
	m.first = r
	g.joining.Add(1)
	select {
	case g.join <- m:
		g.joining.Add(-1)
	case <-m.ctx.Done():
		g.joining.Add(-1)
		return m.ctx.Err()
	case <-g.done:
		g.joining.Add(-1)
		return errors.New("signaling: cluster node closing")
	}
	return <-m.reply
}

func (m *gangMember) queue(f func(redis.Pipeliner)) []redis.Cmder {
	f(m.scratch)
	cmds := slices.Clone(m.scratch.Cmds())
	m.scratch.Discard()
	return cmds
}

func (m *gangMember) read(ctx context.Context, watch []string, f func(redis.Pipeliner)) ([]redis.Cmder, error) {
	cmds := m.queue(func(p redis.Pipeliner) {
		if len(watch) > 0 {
			p.Do(ctx, watchArgs(watch)...)
		}
		f(p)
	})
	m.watch = append(m.watch, watch...)
	return cmds, m.ask(gangReq{m: m, kind: gangRead, watch: watch, cmds: cmds})
}

func (m *gangMember) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	var ferr error
	cmds := m.queue(func(p redis.Pipeliner) { ferr = fn(p) })
	if ferr != nil {
		return nil, ferr
	}
	if err := m.ask(gangReq{m: m, kind: gangRead, cmds: cmds}); err != nil {
		return cmds, err
	}
	return cmds, pipelineErr(cmds, nil)
}

func (m *gangMember) exec(_ context.Context, f func(redis.Pipeliner)) ([]redis.Cmder, error) {
	cmds := m.queue(f)
	return cmds, m.ask(gangReq{m: m, kind: gangExec, cmds: cmds})
}

// unwatch does nothing: the lane ends the WATCH once its members are done.
func (m *gangMember) unwatch(context.Context) {}

// laneScratch is what a lane reuses from one shared transaction and round
// to the next.
type laneScratch struct {
	pending, reads, execReqs []gangReq
	adm                      admitScratch
	shared                   sharedReads
}

// lane runs shared transactions one after the other until the node closes.
func (g *gangs) lane() {
	defer g.wg.Done()
	reqs := make(chan gangReq, g.cfg.Max)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	sc := &laneScratch{}
	for {
		var first *gangMember
		select {
		case first = <-g.join:
		case <-g.done:
			return
		}
		members := []*gangMember{first}
	more:
		for len(members) < g.cfg.Max {
			select {
			case m := <-g.join:
				members = append(members, m)
			default:
				break more
			}
		}
		g.gang(members, reqs, timer, sc)
	}
}

// gang runs one shared transaction of members (see txConn).
func (g *gangs) gang(members []*gangMember, reqs chan gangReq, timer *time.Timer, sc *laneScratch) {
	// The first member's values, and the latest of the members' deadlines
	// (none if one has none, as alone: then the connection's timeouts
	// bound each round trip); not their ends: a member whose context ends
	// still gets the lane's answers, and the others' rounds go on.
	base := context.WithoutCancel(members[0].ctx)
	ctx, cancel := context.WithCancel(base)
	if dl, ok := latestDeadline(members); ok {
		cancel()
		ctx, cancel = context.WithDeadline(base, dl)
	}
	defer cancel()
	var execs, refused int64
	defer func() { g.stats.add(int64(len(members)), execs, refused) }()
	err := g.rdb.Watch(ctx, func(rtx *redis.Tx) error {
		pending := sc.pending[:0]
		defer func() { sc.pending = clear0(pending) }()
		for _, m := range members {
			m.reqs = reqs
			pending = append(pending, m.first)
			m.first = gangReq{}
		}
		active := len(members)
		armed := false // a WATCH sent since the last EXEC
		spent := false // the EXEC ran: every later request is refused
		for active > 0 {
			// Wait until every active member asked something, or g.cfg.Wait
			// passed with at least one request pending.
			waiting := false
		wait:
			for len(pending) < active {
				var r gangReq
				if len(pending) == 0 {
					r = <-reqs
				} else {
					if !waiting {
						timer.Reset(g.cfg.Wait)
						waiting = true
					}
					select {
					case r = <-reqs:
					case <-timer.C:
						waiting = false
						break wait
					}
				}
				switch {
				case r.kind == gangLeave:
					active--
				case spent:
					refused++
					r.m.reply <- errGangRefused
				default:
					pending = append(pending, r)
				}
			}
			if waiting {
				timer.Stop() // Go 1.23 timers: no stale tick to drain
			}
			if len(pending) == 0 {
				continue
			}
			reads, execReqs := sc.reads[:0], sc.execReqs[:0]
			for _, r := range pending {
				if r.kind == gangRead {
					reads = append(reads, r)
				} else {
					execReqs = append(execReqs, r)
				}
			}
			if len(reads) > 0 {
				p := rtx.Pipeline()
				sh := &sc.shared
				sh.reset(g.cfg.SharedKey)
				for _, r := range reads {
					sh.add(ctx, p, r.cmds)
					armed = armed || len(r.watch) > 0
				}
				sh.queue(ctx, p)
				_, err := p.Exec(ctx)
				sh.copy()
				for _, r := range reads {
					r.m.reply <- roundErr(r.cmds, err)
				}
				// The EXEC requests go on in pending (reused: reads and
				// execReqs are the scratch's).
				pending = append(pending[:0], execReqs...)
				sc.reads, sc.execReqs = clear0(reads), clear0(execReqs)
				continue
			}
			sc.reads, sc.execReqs = reads, clear0(execReqs)
			// Only EXECs pending: every member still active asked for one
			// (or was too late, and will be refused).
			in, out := sc.adm.admit(pending)
			if len(in) > 0 {
				tp := rtx.TxPipeline()
				for _, r := range in {
					_ = tp.BatchProcess(ctx, r.cmds...)
				}
				_, err := tp.Exec(ctx)
				execs++
				armed = false
				for _, r := range in {
					r.m.reply <- roundErr(r.cmds, err)
				}
			}
			for _, r := range out {
				refused++
				r.m.reply <- errGangRefused
			}
			spent = true
			pending = pending[:0]
		}
		if armed {
			unwatch(ctx, rtx)
		}
		return nil
	})
	if err != nil {
		// Only before the function ran (it returns nil): nobody started,
		// and their first requests fail (m.reqs stays nil: no leave).
		for _, m := range members {
			r := m.first
			m.first = gangReq{}
			m.reply <- roundErr(r.cmds, err)
		}
	}
}

// latestDeadline is the latest deadline of members' contexts, if they all
// have one.
func latestDeadline(members []*gangMember) (time.Time, bool) {
	var latest time.Time
	for _, m := range members {
		dl, ok := m.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return latest, true
}

// roundErr is what a member's commands of a round got: the round's error
// when it failed as a whole (the connection), else nil (each command
// carries its own).
func roundErr(cmds []redis.Cmder, err error) error {
	if err == nil {
		return nil
	}
	var re redis.Error
	if errors.As(err, &re) || errors.Is(err, redis.Nil) {
		return pipelineErr(cmds, nil)
	}
	return err
}

// clear0 empties s, dropping what its elements held, and keeps its
// array.
func clear0[T any](s []T) []T {
	clear(s)
	return s[:0]
}

// sharedReads makes the whole-range reads of a lane's shared key (see
// GangConfig.SharedKey) once per round: the first member's command goes at
// the end of the round's pipeline, after every member's WATCH and other
// reads, and the others' get its reply. Not WATCHed, such a read only has
// to come after what its member read before it in the round (the nodes'
// registry entries before the live nodes: a node is in `nodes` before any
// entry names it), which the end of the round is; Redis may run other
// clients' commands between those of one pipeline anyway.
type sharedReads struct {
	key     string
	lead    *redis.StringSliceCmd
	follows []*redis.StringSliceCmd
}

func (s *sharedReads) reset(key string) {
	s.key, s.lead = key, nil
	s.follows = clear0(s.follows)
}

// add queues cmds on p but the shared reads among them.
func (s *sharedReads) add(ctx context.Context, p redis.Pipeliner, cmds []redis.Cmder) {
	from := 0
	for i, c := range cmds {
		sc, ok := s.shared(c)
		if !ok {
			continue
		}
		if from < i {
			_ = p.BatchProcess(ctx, cmds[from:i]...)
		}
		from = i + 1
		if s.lead == nil {
			s.lead = sc
		} else {
			s.follows = append(s.follows, sc)
		}
	}
	if from < len(cmds) {
		_ = p.BatchProcess(ctx, cmds[from:]...)
	}
}

// shared tells whether c is a whole-range read of the shared key.
func (s *sharedReads) shared(c redis.Cmder) (*redis.StringSliceCmd, bool) {
	if s.key == "" {
		return nil, false
	}
	sc, ok := c.(*redis.StringSliceCmd)
	if !ok {
		return nil, false
	}
	args := sc.Args()
	if len(args) != 4 {
		return nil, false
	}
	if name, _ := args[0].(string); name != "zrange" {
		return nil, false
	}
	if key, _ := args[1].(string); key != s.key {
		return nil, false
	}
	start, ok1 := intArg(args[2])
	stop, ok2 := intArg(args[3])
	return sc, ok1 && ok2 && start == 0 && stop == -1
}

// queue queues the round's one shared read, last.
func (s *sharedReads) queue(ctx context.Context, p redis.Pipeliner) {
	if s.lead != nil {
		_ = p.BatchProcess(ctx, s.lead)
	}
}

// copy gives every other member's command the shared read's reply (or
// error), once the round ran.
func (s *sharedReads) copy() {
	if s.lead == nil {
		return
	}
	val, err := s.lead.Val(), s.lead.Err()
	for _, f := range s.follows {
		f.SetVal(slices.Clone(val))
		f.SetErr(err)
	}
	s.lead = nil
	s.follows = clear0(s.follows)
}

// admitScratch is admit's key sets, reused by a lane.
type admitScratch struct {
	reads, writes map[string]bool
	keys          []string
	in, out       []gangReq // the last answer (valid until the next call)
}

// admit splits the EXEC requests of a lane into those committed together
// and those sent back: in lane order, a request is admitted when no key
// it writes was WATCHed by an admitted one and none it WATCHed is written
// by one; a request with a command whose keys are unknown only alone.
// Its answer is valid until its next call (the arrays are reused).
func (a *admitScratch) admit(reqs []gangReq) (in, out []gangReq) {
	clear(a.reads)
	clear(a.writes)
	in, out = clear0(a.in), clear0(a.out)
	alone := false
	for _, r := range reqs {
		w, known := gangWriteKeysTo(a.keys[:0], r.cmds)
		a.keys = w
		ok := !alone && (known || len(in) == 0)
		for _, k := range w {
			if !ok {
				break
			}
			ok = !a.reads[k]
		}
		for _, k := range r.m.watch {
			if !ok {
				break
			}
			ok = !a.writes[k]
		}
		if !ok {
			out = append(out, r)
			continue
		}
		in = append(in, r)
		alone = !known
		for _, k := range r.m.watch {
			put(&a.reads, k, true)
		}
		for _, k := range w {
			put(&a.writes, k, true)
		}
	}
	clear(a.keys)
	a.in, a.out = in, out
	return in, out
}

// gangWriteKeys are the keys cmds name (every key, whether the command
// writes it or not: more keys only send more attempts back), and whether
// every command's keys are known.
func gangWriteKeys(cmds []redis.Cmder) ([]string, bool) {
	return gangWriteKeysTo(nil, cmds)
}

// gangWriteKeysTo is gangWriteKeys appending to keys.
func gangWriteKeysTo(keys []string, cmds []redis.Cmder) ([]string, bool) {
	for _, c := range cmds {
		args := c.Args()
		if len(args) < 2 {
			continue
		}
		name, _ := args[0].(string)
		switch strings.ToLower(name) {
		case "del", "unlink", "exists", "touch":
			for _, a := range args[1:] {
				k, ok := a.(string)
				if !ok {
					return keys, false
				}
				keys = append(keys, k)
			}
		case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
			if len(args) < 3 {
				return keys, false
			}
			n, ok := intArg(args[2])
			if !ok || n < 0 || 3+n > len(args) {
				return keys, false
			}
			for _, a := range args[3 : 3+n] {
				k, ok := a.(string)
				if !ok {
					return keys, false
				}
				keys = append(keys, k)
			}
		case "set", "setnx", "setex", "psetex", "getdel", "incr", "incrby", "decr", "decrby",
			"expire", "pexpire", "expireat", "pexpireat", "persist",
			"hset", "hsetnx", "hmset", "hdel", "hincrby",
			"sadd", "srem",
			"zadd", "zrem", "zincrby", "zremrangebyscore", "zremrangebyrank",
			"lpush", "rpush", "ltrim", "lrem",
			"xadd", "xtrim", "xdel":
			k, ok := args[1].(string)
			if !ok {
				return keys, false
			}
			keys = append(keys, k)
		default:
			return keys, false
		}
	}
	return keys, true
}

func intArg(a any) (int, bool) {
	switch v := a.(type) {
	case int:
		return v, true
	case int64:
		return int(v), true
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil
	}
	return 0, false
}

// SharedTxStats are the counts of this node's shared transactions, and
// whether it runs any (cluster mode with cluster.op_lanes > 0).
func (e *Engine) SharedTxStats() (GangStats, bool) {
	if e.cl == nil || e.cl.gangs == nil {
		return GangStats{}, false
	}
	return e.cl.gangs.stats.get(), true
}
