package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
)

// member is one node's membership and registry.
type member struct {
	id  string
	m   *cluster.Membership
	reg *cluster.Registry
}

// deadLog records the calls of the dead-node handlers of all members.
type deadLog struct {
	mu     sync.Mutex
	dead   []string // "survivor:dead", one per NodeDead call
	at     []time.Time
	events map[string][]cluster.Event
	notify chan struct{} // gets a value at each NodeDead
}

func newDeadLog() *deadLog {
	return &deadLog{events: map[string][]cluster.Event{}, notify: make(chan struct{}, 100)}
}

func (e *env) member(id string, cfg cluster.Config, dl *deadLog) *member {
	e.t.Helper()
	return e.memberOn(e.params(id, cfg), dl)
}

// memberOn is member with its own Params (another client).
func (e *env) memberOn(p cluster.Params, dl *deadLog) *member {
	e.t.Helper()
	id := p.NodeID
	reg, err := cluster.NewRegistry(cluster.RegistryParams{Params: p, Present: func(ctx context.Context, pipe redis.Pipeliner, u string) {
		pipe.SAdd(ctx, e.prefix+"present", u) // as the engine's known users
	}})
	must(e.t, err)
	mp := cluster.MembershipParams{
		Params: p, Addr: id + ".example:8080", MediaAddr: id + ".example:7000",
		Load:     func() cluster.Load { return cluster.Load{"connections": float64(len(id))} },
		Registry: reg,
	}
	if dl != nil {
		mp.DeadEvents = func(_ context.Context, node string, evs []cluster.Event) error {
			dl.mu.Lock()
			defer dl.mu.Unlock()
			dl.events[node] = append(dl.events[node], evs...)
			return nil
		}
		mp.NodeDead = func(_ context.Context, node string) error {
			dl.mu.Lock()
			dl.dead = append(dl.dead, id+":"+node)
			dl.at = append(dl.at, time.Now())
			dl.mu.Unlock()
			dl.notify <- struct{}{}
			return nil
		}
	}
	m, err := cluster.NewMembership(mp)
	must(e.t, err)
	must(e.t, m.Start(context.Background()))
	must(e.t, reg.Start())
	mb := &member{id: id, m: m, reg: reg}
	e.t.Cleanup(func() { mb.close(e.t) })
	return mb
}

func (mb *member) close(t *testing.T) {
	must(t, mb.reg.Close(context.Background()))
	must(t, mb.m.Close(context.Background()))
}

// kill stops the member as SIGKILL would: no leave, keys left to expire.
func (mb *member) kill() {
	mb.reg.Kill()
	mb.m.Kill()
}

func liveIDs(t *testing.T, m *cluster.Membership) []string {
	t.Helper()
	infos, err := m.LiveNodes(context.Background())
	must(t, err)
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestLiveNodesAndGracefulLeave: three members see each other with their
// info; one that closes is gone from LiveNodes, and its keys from Redis,
// as soon as Close returns.
func TestLiveNodesAndGracefulLeave(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	a, b, c := e.member("a", cfg, nil), e.member("b", cfg, nil), e.member("c", cfg, nil)
	ctx := context.Background()
	must(t, c.reg.Add(ctx, "u1"))
	must(t, b.reg.Add(ctx, "u1"))

	infos, err := a.m.LiveNodes(ctx)
	must(t, err)
	if len(infos) != 3 {
		t.Fatalf("LiveNodes = %+v, want 3 nodes", infos)
	}
	for _, in := range infos {
		if in.Addr != in.ID+".example:8080" || in.MediaAddr != in.ID+".example:7000" ||
			in.Load["connections"] != 1 || time.Since(in.Started) > time.Minute || time.Since(in.Heartbeat) > cfg.NodeTTL {
			t.Errorf("info %+v", in)
		}
	}
	// A load figure changes with the next heartbeat.
	c.close(t)
	if got := liveIDs(t, a.m); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("after c left, LiveNodes = %v", got)
	}
	for _, k := range e.keys() {
		if strings.HasSuffix(k, ":c") || strings.HasSuffix(k, "nodeusers:c") {
			t.Errorf("key %s left after c's Close", k)
		}
	}
	if got := hkeys(t, e.srv.Client(), e.ks().ConnKey("u1")); !slices.Equal(got, []string{"b"}) {
		t.Errorf("conn:u1 = %v after c left, want [b]", got)
	}
	if n, err := e.srv.Client().ZScore(ctx, e.prefix+"nodes", "c").Result(); err != redis.Nil {
		t.Errorf("c still in nodes (%v, %v)", n, err)
	}
}

// TestDeadNodeCleanedUpOnce: with the default config, a member that stops
// heartbeating without leaving (as on SIGKILL) is noticed by the two
// survivors within NodeTTL + one heartbeat; exactly one of them cleans it
// up: its users' conn entries, its unread events (handed over in order),
// its keys.
func TestDeadNodeCleanedUpOnce(t *testing.T) {
	e := newEnv(t)
	cfg := cluster.DefaultConfig()
	dl := newDeadLog()
	a, b, c := e.member("a", cfg, dl), e.member("b", cfg, dl), e.member("c", cfg, dl)
	ctx := context.Background()
	must(t, c.reg.Add(ctx, "u1"))
	must(t, c.reg.Add(ctx, "u2"))
	must(t, a.reg.Add(ctx, "u2"))
	// Events for c's users that c will never read.
	ks := e.ks()
	for i := range 5 {
		_, err := e.srv.Client().TxPipelined(ctx, func(p redis.Pipeliner) error {
			ks.Append(ctx, p, "c", []byte(fmt.Sprintf("ev%d", i)))
			return nil
		})
		must(t, err)
	}

	c.kill()
	killed, last := time.Now(), c.m.LastHeartbeat()
	select {
	case <-dl.notify:
	case <-time.After(3 * cfg.NodeTTL):
		t.Fatalf("c not found dead within %v", 3*cfg.NodeTTL)
	}
	dl.mu.Lock()
	detected := dl.at[0]
	dl.mu.Unlock()
	fromBeat, fromKill := detected.Sub(last), detected.Sub(killed)
	t.Logf("detection: %v after c's last heartbeat, %v after the kill (node_ttl %v, heartbeat %v; bound %v)",
		fromBeat.Round(time.Millisecond), fromKill.Round(time.Millisecond), cfg.NodeTTL, cfg.NodeTTL/3, cfg.NodeTTL+cfg.NodeTTL/3)
	if bound := cfg.NodeTTL + cfg.NodeTTL/3 + 500*time.Millisecond; fromBeat > bound {
		t.Errorf("detected %v after the last heartbeat, want <= %v", fromBeat, bound)
	}

	// Both survivors look twice more: nobody cleans c again.
	sa, sb := a.m.Sweeps(), b.m.Sweeps()
	eventually(t, 3*cfg.NodeTTL, func() string {
		if a.m.Sweeps() < sa+2 || b.m.Sweeps() < sb+2 {
			return "survivors did not look again"
		}
		return ""
	})
	dl.mu.Lock()
	if len(dl.dead) != 1 || !strings.HasSuffix(dl.dead[0], ":c") {
		t.Errorf("NodeDead calls %v, want one for c", dl.dead)
	}
	var got []string
	for _, ev := range dl.events["c"] {
		got = append(got, fmt.Sprintf("%d:%s", ev.Seq, ev.Payload))
	}
	dl.mu.Unlock()
	if want := []string{"1:ev0", "2:ev1", "3:ev2", "4:ev3", "5:ev4"}; !slices.Equal(got, want) {
		t.Errorf("handed-over events %v, want %v", got, want)
	}
	if n := a.m.Cleanups() + b.m.Cleanups(); n != 1 {
		t.Errorf("cleanups %d, want 1", n)
	}
	nodes, err := a.reg.Nodes(ctx, "u1", "u2")
	must(t, err)
	if len(nodes) != 1 || !slices.Equal(nodes["u2"], []string{"a"}) {
		t.Errorf("Nodes(u1, u2) = %v, want u2 on a only", nodes)
	}
	if got := hkeys(t, e.srv.Client(), ks.ConnKey("u2")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("conn:u2 = %v, want [a]", got)
	}
	for _, k := range e.keys() {
		if strings.HasSuffix(k, ":c") {
			if k != "cleanup:c" {
				t.Errorf("key %s left after c's cleanup", k)
			}
		}
	}
	if got := liveIDs(t, a.m); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("LiveNodes = %v", got)
	}
}

// TestDeadNodesRounds: rounds of five members of which two die at once,
// with a short TTL: each dead node is cleaned up by exactly one survivor.
func TestDeadNodesRounds(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	// A dead node is found within NodeTTL + NodeTTL/3 of its last
	// heartbeat; a survivor whose call failed meanwhile (a timeout on a
	// loaded machine does) waits outageGrace (NodeTTL + 1 s) more before
	// it declares anyone dead, by design. Twice that bound: a loaded
	// machine's stalls (seen: 2 s without a log line) delay it all.
	wait := 2 * (cfg.NodeTTL + cfg.NodeTTL/3 + cfg.NodeTTL + time.Second)
	const rounds = 5
	for r := range rounds {
		dl := newDeadLog()
		var ms []*member
		for i := range 5 {
			ms = append(ms, e.member(fmt.Sprintf("r%d-n%d", r, i), cfg, dl))
		}
		ms[0].kill()
		ms[1].kill()
		for range 2 {
			select {
			case <-dl.notify:
			case <-time.After(wait):
				t.Fatalf("round %d: dead nodes not found within %v", r, wait)
			}
		}
		var before []int64
		for _, m := range ms[2:] {
			before = append(before, m.m.Sweeps())
		}
		eventually(t, wait, func() string {
			for i, m := range ms[2:] {
				if m.m.Sweeps() < before[i]+2 {
					return "survivors did not look again"
				}
			}
			return ""
		})
		dl.mu.Lock()
		dead := map[string]int{}
		for _, d := range dl.dead {
			_, node, _ := strings.Cut(d, ":")
			dead[node]++
		}
		dl.mu.Unlock()
		if dead[ms[0].id] != 1 || dead[ms[1].id] != 1 {
			t.Fatalf("round %d: NodeDead calls %v", r, dl.dead)
		}
		// A survivor not scheduled for NodeTTL (a loaded machine) is dead
		// for the others, rightly: cleaned up once too, and its next
		// heartbeat finds its key gone. Any other NodeDead is a bug.
		for _, m := range ms[2:] {
			if n := dead[m.id]; n > 1 || (n == 1 && e.logs.count("node key was gone", "node="+m.id+" ") == 0) {
				t.Fatalf("round %d: live node %s cleaned up %d times (its key never expired): NodeDead calls %v", r, m.id, n, dl.dead)
			}
		}
		for _, m := range ms[2:] {
			m.close(t)
		}
	}
}

// TestReassertAfterRedisLoss: when Redis loses the data (FLUSHALL, or a
// restart without its append-only file), the node registers again and
// writes every local user's entry (with the registry's Present writes) at
// its next heartbeat; an outage is
// logged once, and its end once.
func TestReassertAfterRedisLoss(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	a := e.member("a", cfg, nil)
	ctx := context.Background()
	for _, u := range []string{"u1", "u2", "u3"} {
		must(t, a.reg.Add(ctx, u))
	}
	must(t, a.reg.Add(ctx, "u1"))
	ks, admin := e.ks(), e.srv.Client()
	back := func() string {
		if n, err := admin.Exists(ctx, ks.NodeKey("a")).Result(); err != nil || n != 1 {
			return fmt.Sprintf("node key: %v %v", n, err)
		}
		for u, want := range map[string]string{"u1": "2", "u2": "1", "u3": "1"} {
			if got, err := admin.HGet(ctx, ks.ConnKey(u), "a").Result(); err != nil || got != want {
				return fmt.Sprintf("conn:%s[a] = %q, %v; want %s", u, got, err, want)
			}
		}
		return ""
	}
	must(t, admin.FlushAll(ctx).Err())
	eventually(t, 2*cfg.NodeTTL, back)
	if got := liveIDs(t, a.m); !slices.Equal(got, []string{"a"}) {
		t.Errorf("LiveNodes after FLUSHALL = %v", got)
	}

	// A restart that lost the data, with changes made during the outage.
	e.srv.Kill()
	eventually(t, 2*cfg.NodeTTL, func() string {
		if e.logs.count("redis unavailable", "loop=heartbeat") == 0 {
			return "the heartbeat did not notice the outage"
		}
		return ""
	})
	actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if err := a.reg.Remove(actx, "u2"); err == nil {
		t.Error("Remove during the outage succeeded")
	}
	cancel()
	must(t, removeAll(e.srv.Dir()+"/appendonlydir"))
	e.srv.Restart()
	eventually(t, 3*cfg.NodeTTL, func() string {
		if got := hkeys(t, admin, ks.ConnKey("u2")); len(got) != 0 {
			return fmt.Sprintf("conn:u2 = %v", got)
		}
		if n, _ := admin.HGet(ctx, ks.ConnKey("u1"), "a").Result(); n != "2" {
			return "conn:u1 not back"
		}
		if n, _ := admin.HGet(ctx, ks.ConnKey("u3"), "a").Result(); n != "1" {
			return "conn:u3 not back"
		}
		if n, _ := admin.Exists(ctx, ks.NodeKey("a")).Result(); n != 1 {
			return "node key not back"
		}
		// The registry's Present writes too.
		got, _ := admin.SMembers(ctx, e.prefix+"present").Result()
		if slices.Sort(got); !slices.Equal(got, []string{"u1", "u3"}) {
			return fmt.Sprintf("present = %v, want [u1 u3]", got)
		}
		return ""
	})
	if n := e.logs.count("redis unavailable", "loop=heartbeat"); n != 1 {
		t.Errorf("heartbeat logged the outage %d times, want 1", n)
	}
	eventually(t, 2*cfg.NodeTTL, func() string {
		if n := e.logs.count("redis available again", "loop=heartbeat"); n != 1 {
			return fmt.Sprintf("heartbeat logged the recovery %d times, want 1", n)
		}
		return ""
	})
}

// TestOutageDeclaresNoNodeDead: Redis is down for longer than node_ttl, so
// every node key expires; when it is back, node a reaches it at once and
// node b only a while later (its own link to Redis still down). a does not
// declare b dead meanwhile. A node that did die during the outage is
// declared dead once the grace after the outage is over.
func TestOutageDeclaresNoNodeDead(t *testing.T) {
	e := newEnv(t)
	cfg := fastConfig()
	dl := newDeadLog()
	// b's client dials through a link that the test cuts; its pool is big
	// enough that go-redis never stops dialing (its dial breaker would add
	// up to a second).
	var cut atomic.Bool
	opts := e.srv.Options()
	opts.ContextTimeoutEnabled = true
	opts.DialTimeout = 200 * time.Millisecond
	opts.PoolSize = 10000
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if cut.Load() {
			return nil, errors.New("link to Redis cut by the test")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	bc := redis.NewClient(opts)
	t.Cleanup(func() { _ = bc.Close() })
	pb := e.params("b", cfg)
	pb.Client = bc
	a, b := e.member("a", cfg, dl), e.memberOn(pb, dl)
	c := e.member("c", cfg, dl)
	ctx := context.Background()
	must(t, b.reg.Add(ctx, "u1"))

	cut.Store(true)
	e.srv.Kill()
	c.kill() // dies during the outage
	killed := time.Now()
	eventually(t, 5*cfg.NodeTTL, func() string {
		if time.Since(killed) < 2*cfg.NodeTTL {
			return "outage too short"
		}
		if n := e.logs.count("redis unavailable", "node=a", "dead-node watch"); n == 0 {
			return "a's watch did not notice the outage"
		}
		return ""
	})
	e.srv.Restart()
	eventually(t, 5*cfg.NodeTTL, func() string {
		if n := e.logs.count("redis available again", "node=a", "dead-node watch"); n == 0 {
			return "a's watch is not back"
		}
		return ""
	})
	// a has run sweeps while b's key is still gone.
	from := a.m.Sweeps()
	eventually(t, 5*cfg.NodeTTL, func() string {
		if a.m.Sweeps() < from+2 {
			return "a did not look for dead nodes"
		}
		return ""
	})
	if n, _ := e.srv.Client().Exists(ctx, e.ks().NodeKey("b")).Result(); n != 0 {
		t.Fatal("b's key is back before its link: the test cannot tell")
	}
	cut.Store(false)
	eventually(t, 5*cfg.NodeTTL, func() string {
		if got := liveIDs(t, a.m); !slices.Equal(got, []string{"a", "b"}) {
			return fmt.Sprintf("live nodes %v, want [a b]", got)
		}
		if got := hkeys(t, e.srv.Client(), e.ks().ConnKey("u1")); !slices.Equal(got, []string{"b"}) {
			return fmt.Sprintf("conn:u1 = %v, want [b]", got)
		}
		return ""
	})
	// c, dead, is cleaned up once the grace is over; a and b never are.
	select {
	case <-dl.notify:
	case <-time.After(5 * cfg.NodeTTL):
		t.Fatal("c, dead during the outage, was not declared dead after it")
	}
	from = a.m.Sweeps()
	eventually(t, 5*cfg.NodeTTL, func() string {
		if a.m.Sweeps() < from+3 {
			return "a did not look for dead nodes"
		}
		return ""
	})
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for _, d := range dl.dead {
		if !strings.HasSuffix(d, ":c") {
			t.Errorf("declared dead: %s (only c died)", d)
		}
	}
	if len(dl.dead) != 1 {
		t.Errorf("dead-node calls %v, want one for c", dl.dead)
	}
}
