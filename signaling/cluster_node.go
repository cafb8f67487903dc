package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// ClusterParams put the engine in cluster mode (Params.Cluster): its state
// is in Redis, shared with the other nodes of the cluster, and decided
// there by the Redis backend of the tx (tx_redis.go).
//
// Phases 2a and 2b: invitations (invite, inviteInGroup, accept, reject,
// cancel, modify, timeouts), groups, custom status, delivery across nodes,
// the outbox of known users with no connection (and of those whose
// connection closed, or whose node died, before an event reached it), the
// replay on attach (of the kept events by one connection of the user at a
// time, cluster-wide); the read-only views and presence (subscriptions,
// status changes to the subscribers on any node) from Redis
// (cluster_views.go).
type ClusterParams struct {
	Client redis.UniversalClient // one Redis (standalone or Sentinel); owned by the caller
	Prefix string                // of every key (RedisStore's and the cluster's)
	NodeID string                // unique in the cluster
	Addr   string                // advertised signaling address (membership)
	Config cluster.Config
	// Load, if set, gives the load figures of this node's heartbeat
	// (cluster.Info.Load): rooms/cluster places new rooms by
	// Load["members"].
	Load func() cluster.Load
}

// clusterNode is the engine's part in a cluster: the Redis backend of its
// tx, its membership, connection registry, event stream reader and timer
// poller.
type clusterNode struct {
	e     *Engine
	rdb   redis.UniversalClient
	loops func() error // closes the loops' own client (cluster.LoopClient)
	k     redisKeys
	ks    cluster.Keyspace
	node  string
	store *RedisStore

	members *cluster.Membership
	reg     *cluster.Registry
	reader  *cluster.Reader
	poller  *cluster.Poller

	parties  partiesHint  // the parties of invitations this node rang or created
	gangs    *gangs       // the lanes of shared transactions; nil: every attempt alone
	inflight atomic.Int32 // operations in doPeek (with gangs)

	conflicts  atomic.Int64 // attempts that lost a race for a watched key
	lastRounds atomic.Int64 // round trips of the last committed op

	cfg       cluster.Config
	done      chan struct{} // closed by close: the node's background work ends
	closeOnce sync.Once

	counted map[Conn]bool // connections counted in the registry; guarded by Engine.mu

	mu      sync.Mutex // guards excepts, next; taken after Engine.mu, never before
	excepts map[uint64]protocol.Session
	next    uint64
}

func newClusterNode(ctx context.Context, e *Engine, p ClusterParams) (_ *clusterNode, err error) {
	store, err := NewRedisStore(p.Client, p.Prefix, e.log)
	if err != nil {
		return nil, err
	}
	c := &clusterNode{e: e, rdb: p.Client, k: redisKeys{p.Prefix}, ks: cluster.NewKeyspace(p.Prefix, p.Config),
		node: p.NodeID, store: store, cfg: p.Config, done: make(chan struct{}), excepts: map[uint64]protocol.Session{}, counted: map[Conn]bool{},
		parties: newPartiesHint()}
	// The loops (membership, registry writer, stream reader, timer poller)
	// on a client of their own: never queued behind the ops' connections.
	loops, closeLoops := cluster.LoopClient(p.Client)
	closeLoops = sync.OnceValue(closeLoops)
	c.loops = closeLoops
	defer func() {
		if err != nil {
			_ = closeLoops()
		}
	}()
	cp := cluster.Params{Client: loops, Prefix: p.Prefix, NodeID: p.NodeID, Logger: e.log, Config: p.Config}
	// A connected user is known: written with their registry entry, before
	// it (attach writes nothing else), and again with it after a restart of
	// Redis that lost the data.
	present := func(ctx context.Context, pipe redis.Pipeliner, user string) { pipe.SAdd(ctx, c.k.users(), user) }
	if c.reg, err = cluster.NewRegistry(cluster.RegistryParams{Params: cp, Present: present}); err != nil {
		return nil, err
	}
	if c.members, err = cluster.NewMembership(cluster.MembershipParams{Params: cp, Addr: p.Addr, Load: p.Load, Registry: c.reg, DeadEvents: c.deadEvents}); err != nil {
		return nil, err
	}
	if c.reader, err = cluster.NewReader(cluster.ReaderParams{Params: cp, Handle: c.handle, Lost: c.lost}); err != nil {
		return nil, err
	}
	if c.poller, err = cluster.NewPoller(cluster.PollerParams{Params: cp, Fire: c.fire}); err != nil {
		return nil, err
	}
	if err := c.members.Start(ctx); err != nil {
		return nil, err
	}
	if p.Config.OpLanes > 0 {
		c.gangs = newGangs(p.Client, GangConfig{Lanes: p.Config.OpLanes, Max: p.Config.OpGangMax, Wait: p.Config.OpGangWait, SharedKey: c.ks.NodesKey()})
	}
	for _, start := range []func() error{c.reg.Start, c.reader.Start, c.poller.Start} {
		if err = start(); err != nil {
			c.close() // closes the loops' client too
			return nil, err
		}
	}
	return c, nil
}

// close stops the node's loops and leaves the cluster (reverse order of
// start): its deadlines are fired by the others from now on.
func (c *clusterNode) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.closeOnce.Do(func() { close(c.done) })
	if c.gangs != nil {
		c.gangs.close()
	}
	c.poller.Close()
	c.reader.Close()
	if err := c.reg.Close(ctx); err != nil {
		c.e.log.Warn("cluster registry not cleared", "err", err)
	}
	if err := c.members.Close(ctx); err != nil {
		c.e.log.Warn("cluster leave failed", "err", err)
	}
	_ = c.loops()
	_ = c.store.Close()
}

// ---- the except token: the actor's connection gets a reply, not the event ----

// exceptToken registers the actor's connection of evs for the stream entry
// this node will read; the reader drops it once handled.
func (c *clusterNode) exceptToken(evs []*outgoing) uint64 {
	var s protocol.Session
	for _, ev := range evs {
		if ev.except != nil {
			s = ev.except
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	c.excepts[c.next] = s
	return c.next
}

func (c *clusterNode) dropExcept(token uint64) {
	c.mu.Lock()
	delete(c.excepts, token)
	c.mu.Unlock()
}

// onlySession reports whether s is its user's only connection on this
// node.
func (e *Engine) onlySession(s protocol.Session) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	set := e.sessions[s.UserID()]
	return len(set) == 1 && set[0] == s
}

// ---- the parties hint ----

// partiesHintSize is how many invitations a generation of partiesHint
// holds: it remembers between one and two of these.
const partiesHintSize = 4096

// partiesHint remembers the parties (inviter and invitees) of the
// invitations this node rang (a ring entry carries them) or created, so
// that an answer, cancel or modify of one reads its parties' connections
// in the pipeline that reads the invitation: one round trip fewer than
// reading the invitation first (redisTx.load). A hint, never an
// authority: the op decides on the invitation it read and reads the
// parties the hint missed, and a wrong guess only adds keys to the
// WATCH. Two generations bound it: when the current one is full it
// becomes the old one and the old one is dropped.
type partiesHint struct {
	mu       sync.Mutex // guards cur, old; a leaf: nothing is locked while it is held
	cur, old map[string][]string
}

func newPartiesHint() partiesHint {
	return partiesHint{cur: map[string][]string{}}
}

func (h *partiesHint) put(id string, users []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.cur) >= partiesHintSize {
		h.old, h.cur = h.cur, make(map[string][]string, partiesHintSize)
	}
	h.cur[id] = users
}

func (h *partiesHint) get(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u, ok := h.cur[id]; ok {
		return u
	}
	return h.old[id]
}

// ---- stream entries ----

// streamBatch is the payload of one stream entry: the events of one
// operation for the users of one node, in order.
type streamBatch struct {
	Items []streamItem `json:"i"`
}

type streamItem struct {
	Users  []string        `json:"u"`
	Frame  json.RawMessage `json:"f"`
	Except uint64          `json:"x,omitempty"` // this node's token of the actor's connection
	Ring   string          `json:"r,omitempty"` // an onReceiveNewInvitation's invite ID
	// Parties are the ring's invitation's inviter and invitees: a hint
	// (clusterNode.parties) for the node where the invitee answers.
	Parties []string    `json:"p,omitempty"`
	Keep    *streamKeep `json:"k,omitempty"` // the event is kept for recipients gone before its delivery
}

// streamKeep is what a node needs to keep an event for a recipient who
// has no connection left there when it reads the entry (or for the
// recipients of a dead node's unread entries): as on one node
// (Engine.deliverLocked), it is kept, without a quota check but charged
// to Sender, unless the user has a connection on another node the event
// went to. The data kept is the frame's.
type streamKeep struct {
	ID     string              `json:"id"`          // the event's, the same on every node (kept once per user)
	Sender string              `json:"s,omitempty"` // whose kept bytes the copy counts against
	Actor  string              `json:"a,omitempty"` // the actor's user: not kept for them
	Nodes  map[string][]string `json:"n"`           // recipient (of this entry) → the nodes the event went to for them
}

// handle delivers one entry of this node's stream to the local
// connections of its users, in stream (commit) order.
func (c *clusterNode) handle(ctx context.Context, ev cluster.Event) {
	b, err := decodeStreamBatch(ev.Payload)
	if err != nil {
		c.e.log.Error("cluster event unreadable; dropped", "id", ev.ID, "err", err)
		return
	}
	e := c.e
	var tokens []uint64
	var gone []keepJob
	e.mu.Lock()
	for _, it := range b.Items {
		var skip protocol.Session
		if it.Except != 0 {
			c.mu.Lock()
			skip = c.excepts[it.Except]
			c.mu.Unlock()
			tokens = append(tokens, it.Except)
		}
		if it.Ring != "" && len(it.Parties) > 0 {
			c.parties.put(it.Ring, it.Parties)
		}
		for _, u := range it.Users {
			if it.Keep != nil && len(e.sessions[u]) == 0 {
				gone = append(gone, keepJob{user: u, it: it})
			}
			for _, s := range e.sessions[u] {
				if s == skip {
					continue
				}
				if it.Ring != "" && !e.ringLiveLocked(s, it.Ring) {
					continue
				}
				s.Deliver(it.Frame)
			}
		}
	}
	e.mu.Unlock()
	for _, t := range tokens {
		c.dropExcept(t)
	}
	for _, j := range gone {
		if err := c.keep(context.WithoutCancel(ctx), c.node, j.user, j.it); err != nil {
			e.log.Warn("event for a user gone before its delivery not kept", "user", j.user, "err", err)
		}
	}
}

type keepJob struct {
	user string
	it   streamItem
}

// deadEvents is Membership's DeadEvents: the unread entries of node (dead,
// or this node leaving) go to their recipients' outboxes, as handle keeps
// them for a recipient gone before the delivery.
func (c *clusterNode) deadEvents(ctx context.Context, node string, events []cluster.Event) error {
	for _, ev := range events {
		b, err := decodeStreamBatch(ev.Payload)
		if err != nil {
			c.e.log.Error("dead node's event unreadable; dropped", "node", node, "id", ev.ID, "err", err)
			continue
		}
		for _, it := range b.Items {
			if it.Keep == nil {
				continue
			}
			for _, u := range it.Users {
				if err := c.keep(ctx, node, u, it); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (k redisKeys) keptOnce(id string) string { return k.p + "sig:kd:" + id }

// keepScript keeps an event for a user who had a connection on node self
// when it was decided and has none there now: unless the user is not
// known, the event was kept for them already (by another node the event
// went to), or one of those nodes is alive and still holds a connection of
// theirs. If the user has connections on other nodes in `nodes` that the
// event did not go to (they connected there after it was decided: the
// user whose node died reconnected elsewhere before its cleanup), it is
// not kept but forwarded to those nodes' streams, for their live
// connections, which read the outbox before (their registry entry is
// written before their replay reads it). It returns the outbox Seq, -1
// when forwarded, or 0 when neither.
// KEYS: conn:<user>, sig:kd:<event>, sig:obseq, sig:ob, sig:obexp,
// sig:obu:<user>, sig:kept, sig:users, nodes.
// ARGV: node key prefix, self, routed nodes ("\n"-separated), user,
// sender, event, data, created, expires, expiry score, outbox entry key
// prefix, marker ttl ms, cost, total field, stream key prefix, the
// stream entry ID to append with (cluster.StreamAppendID), stream max
// length, the forwarded entry's payload before and after its JSON list of
// the nodes it goes to.
var keepScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[8], ARGV[4]) == 0 then return 0 end
local routed = {}
for n in string.gmatch(ARGV[3], '[^\n]+') do routed[n] = true end
local h = redis.call('HGETALL', KEYS[1])
local fwd = {}
for i = 1, #h, 2 do
  local n = h[i]
  if n ~= ARGV[2] and tonumber(h[i + 1]) > 0 then
    if routed[n] then
      if redis.call('EXISTS', ARGV[1] .. n) == 1 then return 0 end
    elseif redis.call('ZSCORE', KEYS[9], n) then
      table.insert(fwd, n)
    end
  end
end
if redis.call('SADD', KEYS[2], ARGV[4]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[12])
if #fwd > 0 then
  table.sort(fwd)
  local payload = ARGV[18] .. cjson.encode(fwd) .. ARGV[19]
  for _, n in ipairs(fwd) do
    redis.call('XADD', ARGV[15] .. n, 'MAXLEN', '=', ARGV[17], ARGV[16], 'p', payload)
  end
  return -1
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', ARGV[11] .. seq, 'user', ARGV[4], 'sender', ARGV[5], 'event', ARGV[6], 'data', ARGV[7],
  'created', ARGV[8], 'expires', ARGV[9])
redis.call('ZADD', KEYS[6], seq, seq)
redis.call('ZADD', KEYS[4], seq, seq)
redis.call('ZADD', KEYS[5], ARGV[10], seq)
redis.call('HINCRBY', KEYS[7], ARGV[5], ARGV[13])
redis.call('HINCRBY', KEYS[7], ARGV[14], ARGV[13])
return seq
`)

// keep keeps it for user, who had a connection on node self when it was
// decided, or forwards it to the nodes where user connected since (see
// keepScript).
func (c *clusterNode) keep(ctx context.Context, self, user string, it streamItem) error {
	k := it.Keep
	if user == k.Actor {
		return nil
	}
	e := c.e
	now := e.clock.Now()
	ent := e.outboxEntry(user, 0, k.Sender, frameEvent(it.Frame), eventData(it.Frame), now)
	if ent.Event == "" {
		return dataErr("kept event without a name")
	}
	var routed []byte
	for _, n := range k.Nodes[user] {
		routed = append(append(routed, n...), '\n')
	}
	before, after := forwardPayload(user, it)
	ttl := max(e.cfg.OfflineEventTTL, time.Minute)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return keepScript.Run(ctx, c.rdb,
		[]string{c.ks.ConnKey(user), c.k.keptOnce(k.ID), c.k.obSeq(), c.k.ob(), c.k.obExp(), c.k.obUser(user), c.k.kept(), c.k.users(), c.ks.NodesKey()},
		c.ks.NodeKey(""), self, string(routed), user, ent.Sender, ent.Event, string(ent.Data),
		redisdb.Time(ent.CreatedAt), redisdb.Time(ent.ExpiresAt), expScore(ent.ExpiresAt), c.k.obEntryOf(""),
		ttl.Milliseconds(), keptCost(ent.Bytes()), keptTotalField,
		c.ks.StreamKey(""), cluster.StreamAppendID(), c.cfg.StreamMaxLen, before, after).Err()
}

// forwardedMark marks the list of nodes in a forwarded entry's template.
const forwardedMark = "\x00"

// forwardPayload is the stream entry that forwards it to user's
// connections on other nodes (keepScript), split around the JSON list of
// those nodes, which the script fills in: the event for user alone, with
// its ring and keep rules (a fresh keep ID: the forward is an event of its
// own, kept once if it finds no connection there in turn), without the
// actor's token (its node's).
func forwardPayload(user string, it streamItem) (before, after string) {
	k := *it.Keep
	k.ID += ">"
	k.Nodes = map[string][]string{user: {forwardedMark}}
	b := streamBatch{Items: []streamItem{{Users: []string{user}, Frame: it.Frame, Ring: it.Ring, Keep: &k}}}
	tmpl := string(b.encode())
	mark, _ := json.Marshal([]string{forwardedMark})
	// The list is the payload's last value (the frame, which might hold
	// the same text, comes before it).
	i := strings.LastIndex(tmpl, string(mark))
	return tmpl[:i], tmpl[i+len(mark):]
}

// frameEvent is the name of an encoded event frame.
func frameEvent(frame []byte) string {
	var f struct {
		Event string `json:"event"`
	}
	_ = json.Unmarshal(frame, &f)
	return f.Event
}

// ringLiveLocked reports whether a live ring of invitation id goes to s:
// not if s's replay rang it already; if its replay is yet to ring it, the
// live one replaces it.
func (e *Engine) ringLiveLocked(s Conn, id string) bool {
	r := e.replays[s]
	if r == nil || r.rung == nil {
		return true
	}
	if r.rung[id] {
		return false
	}
	r.rung[id] = true
	r.invites = slices.DeleteFunc(r.invites, func(x string) bool { return x == id })
	return true
}

func (c *clusterNode) lost(_ context.Context, n int64) {
	c.e.log.Error("cluster events lost (stream overflowed or was lost)", "count", n)
}

// ---- timers ----

// fire is the poller's: the timeout decision through the tx, with the
// deadline's Done in its EXEC. A late or duplicate fire finds the
// invitation gone or its invitees answered, and changes nothing.
func (c *clusterNode) fire(ctx context.Context, d cluster.Due) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := d.ID
	t, err := c.do(ctx, txHint{invs: []string{id}}, func(t tx) error { return c.e.rules.timeout(t, id) },
		func(ctx context.Context, p redis.Pipeliner) { c.ks.Done(ctx, p, d) })
	if err != nil {
		c.e.log.Warn("invitation timeout not committed; it fires again after the lease", "invite", id, "err", err)
		return
	}
	c.after(t)
}

// after runs, once an op committed, what stays on this node: the
// observers' note. (Status events went with the others: statusEvents.)
func (c *clusterNode) after(t *redisTx) {
	if t == nil || t.n == nil {
		return
	}
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	n := *t.n
	n.At = e.clock.Now()
	e.notifyLocked(n)
}

// ---- connections ----

// attach registers s here and in the registry. Its replay is started at
// once (so that live events wait behind it) and reads, once the registry
// has the connection, what the user missed: kept events and the
// invitations ringing for them.
func (c *clusterNode) attach(ctx context.Context, s Conn) error {
	e := c.e
	user := s.UserID()
	ready := make(chan struct{})
	e.mu.Lock()
	n, err := e.addSessionLocked(s)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	r := &Replay{e: e, s: s, user: user, cl: c, ready: ready, rung: map[string]bool{}}
	e.replays[s] = r
	s.StartReplay(r)
	e.mu.Unlock()

	// The user becomes known (sig:users) in the registry's write of the
	// connection, before its entry (Present): no round trip of its own.
	// Counted even if Add fails (see Registry.Add): Detach uncounts it.
	e.mu.Lock()
	c.counted[s] = true
	e.mu.Unlock()
	err = c.reg.Add(ctx, user)
	if err != nil {
		e.Detach(s)
		close(ready)
		e.log.Warn("cluster attach failed", "user", user, "err", err)
		return protocol.ErrStoreUnavailable
	}
	close(ready)
	if n == 1 {
		c.announce(ctx, user, true)
	}
	return nil
}

// detach uncounts a connection that Detach removed; last: the user has
// no connection left on this node.
func (c *clusterNode) detach(user string, last bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.reg.Remove(ctx, user)
	if err != nil && !errors.Is(err, cluster.ErrClosed) && ctx.Err() == nil {
		// One write failed (a timeout on a loaded Redis): the writer
		// retries it. The user's last connection here is announced gone
		// only once Redis has the removal (announce reads the registry):
		// returning now would lose the "offline" for good. At most
		// node_ttl more (past it this node's own key is gone too: an
		// outage, during which a closing connection is let go soon).
		fctx, cancel := context.WithTimeout(ctx, c.cfg.NodeTTL)
		err = c.reg.Flush(fctx)
		cancel()
	}
	if err != nil {
		if !errors.Is(err, cluster.ErrClosed) {
			c.e.log.Warn("cluster registry: connection removal not confirmed (retried in the background)", "user", user, "err", err)
		}
		return
	}
	if last {
		c.announce(context.Background(), user, false)
	}
}

// The replay claim: each kept event is replayed to one connection. A
// connection's replay reads the user's outbox only if it takes the user's
// claim sig:replay:<user> (SET NX with a lease of node_ttl, the claim's
// value a fresh token), which it renews every node_ttl/3 while it replays
// and releases (if still its own) once the entries it wrote are deleted:
// a device that attaches meanwhile, on any node, gets no kept events, as
// on one node (Engine.register); one that attaches later finds them
// deleted. A claimer whose node dies loses the claim after node_ttl; what
// it did not write stays kept.

func (k redisKeys) replayClaim(user string) string { return k.p + "sig:replay:" + user }

// renewClaimSrc extends a claim if it is still the token's.
// KEYS: sig:replay:<user>. ARGV: token, lease ms.
var renewClaimScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// releaseClaimSrc (EVAL: it runs in a pipeline) deletes a claim if it is
// still the token's. KEYS: sig:replay:<user>. ARGV: token.
const releaseClaimSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`

// missed reads what user missed: their kept Seqs, if token takes their
// replay claim (claimed), and the invitations ringing for them, oldest
// first.
func (c *clusterNode) missed(ctx context.Context, user, token string) (seqs []int64, invites []string, claimed bool, err error) {
	var claim *redis.BoolCmd
	var ob, ring *redis.StringSliceCmd
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		claim = p.SetNX(ctx, c.k.replayClaim(user), token, c.cfg.NodeTTL)
		ob = p.ZRange(ctx, c.k.obUser(user), 0, -1)
		ring = p.ZRange(ctx, c.k.ringing(user), 0, -1)
		return nil
	})
	if err != nil {
		return nil, nil, false, err
	}
	if claimed = claim.Val(); claimed {
		for _, m := range ob.Val() {
			n, err := strconv.ParseInt(m, 10, 64)
			if err != nil {
				return nil, nil, true, dataErr("outbox of %q holds %q", user, m)
			}
			seqs = append(seqs, n)
		}
		slices.Sort(seqs)
	}
	return seqs, ring.Val(), claimed, nil
}

// renewClaimLocked renews the replay claim token of user every
// node_ttl/3 until stop is closed or the node closes.
func (c *clusterNode) renewClaimLocked(user, token string, stop <-chan struct{}) {
	e := c.e
	if e.closed {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		tick := time.NewTicker(c.cfg.NodeTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-c.done:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.OpTimeout)
			ok, err := renewClaimScript.Run(ctx, c.rdb, []string{c.k.replayClaim(user)}, token, c.cfg.NodeTTL.Milliseconds()).Bool()
			cancel()
			if err == nil && !ok {
				e.log.Warn("replay claim lost (Redis unavailable past node_ttl?); another connection may replay the same kept events", "user", user)
				return
			}
		}
	}()
}

// ringFrames renders the rings of the invitations ids that still ring for
// user (read from Redis now, with the time left now).
func (c *clusterNode) ringFrames(ctx context.Context, user string, ids []string) ([]string, [][]byte, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, c.k.inv(id))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	now := c.e.clock.Now()
	var rung []string
	var frames [][]byte
	for i, id := range ids {
		h := cmds[i].Val()
		if len(h) == 0 {
			continue
		}
		rec, err := decodeInvitation(id, h)
		if err != nil {
			return nil, nil, dataErr("invitation %q: %w", id, err)
		}
		inv := invitationFromRecord(rec)
		if inv.stateOf(user) != StatePending || inv.noRing(user) {
			continue
		}
		if frame, err := protocol.EncodeEvent(protocol.EvReceiveNewInvitation, inv.newInvitationEvent(now)); err == nil {
			rung = append(rung, id)
			frames = append(frames, frame)
		}
	}
	return rung, frames, nil
}

// keptDeleteSrc (EVAL: it runs in a pipeline) deletes a kept entry if it is there and gives its bytes
// back to its sender's and the total count. KEYS: obe:<seq>, obu:<user>,
// ob, obexp, kept. ARGV: seq, sender, cost, total field.
const keptDeleteSrc = `
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[2], -tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[5], ARGV[4], -tonumber(ARGV[3]))
return 1
`

// keptCostOf is what a kept entry read back counts for.
type keptCostOf struct {
	sender string
	cost   int64
}

// finishReplayLocked deletes user's replayed entries, then releases
// their replay claim token, in the background, in one pipeline (in
// order: no other connection claims them before they are gone).
func (e *Engine) finishReplayLocked(user, token string, seqs []int64, costs map[int64]keptCostOf) {
	if e.closed || (len(seqs) == 0 && token == "") {
		return
	}
	c := e.cl
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, seq := range seqs {
				kc := costs[seq]
				p.Eval(ctx, keptDeleteSrc, []string{c.k.obEntry(seq), c.k.obUser(user), c.k.ob(), c.k.obExp(), c.k.kept()},
					seqMember(seq), kc.sender, kc.cost, keptTotalField)
			}
			if token != "" {
				p.Eval(ctx, releaseClaimSrc, []string{c.k.replayClaim(user)}, token)
			}
			return nil
		})
		if err != nil {
			e.log.Warn("replayed kept events not deleted, or replay claim not released (it expires)", "user", user, "n", len(seqs), "err", err)
		}
	}()
}

// invitation reads a live invitation from Redis (Engine.Invitation).
func (c *clusterNode) invitation(id string) (*invitation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := c.rdb.HGetAll(ctx, c.k.inv(id)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, nil
	}
	r, err := decodeInvitation(id, h)
	if err != nil {
		return nil, fmt.Errorf("invitation %q: %w", id, err)
	}
	return invitationFromRecord(r), nil
}
