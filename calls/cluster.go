package calls

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// ClusterParams put a Manager in cluster mode (Params.Cluster): every
// call's state is in Redis, decided there by the Redis backend of the
// calls' tx (state_redis.go), so that busy lines, glare, answers, hangups,
// the call-end invitation and the records behave across the nodes as on
// one. The engine (Params.Engine) must be in cluster mode on the same Redis
// with the same Prefix and NodeID (signaling.ClusterParams), and
// Params.Records a *RedisRecords on that Redis.
//
// A call's room lives on one node, its media node (rooms/cluster, issue
// 13): that node claims the call's room ID for itself when a participant
// enters it there (Admit), and releases the claim when it sees the call
// ended, wherever that was decided (clusterCalls.reconcile).
type ClusterParams struct {
	Client redis.UniversalClient // owned by the caller
	Prefix string                // of every key: the engine's (node liveness is read under it)
	NodeID string                // this node's, unique in the cluster: the engine's
	Config cluster.Config        // the engine's: timer_poll, timer_lease, op_timeout...
}

// clusterCalls is the manager's part in a cluster: the Redis backend of its
// tx, the setup deadlines' poller and the loop that reconciles this node's
// room claims with the calls' state.
type clusterCalls struct {
	m    *Manager
	rdb  redis.UniversalClient
	p    string
	node string
	cfg  cluster.Config
	ks   cluster.Keyspace // the setup deadlines: calls:deadlines
	live cluster.Keyspace // the engine's: node liveness
	rec  *RedisRecords

	poller *cluster.Poller
	loops  func() error // closes the poller's own client (cluster.LoopClient)
	obsMu  sync.Mutex   // the onces (observers, metrics) of committed steps, in order on this node
	plain  plainInvites // invitations the gate found no call for

	stop      chan struct{}
	loop      sync.WaitGroup
	closeOnce sync.Once
}

func newClusterCalls(m *Manager, p ClusterParams) (*clusterCalls, error) {
	rec, ok := m.rec.(*RedisRecords)
	if !ok {
		return nil, fmt.Errorf("calls: cluster mode needs Records to be a *RedisRecords, not %T", m.rec)
	}
	if p.Client == nil || p.Prefix == "" || p.NodeID == "" {
		return nil, errors.New("calls: cluster mode needs a Redis client, a key prefix and a node ID")
	}
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("calls: cluster: %w", err)
	}
	cl := &clusterCalls{m: m, rdb: p.Client, p: p.Prefix, node: p.NodeID, cfg: p.Config, rec: rec,
		ks: cluster.NewKeyspace(p.Prefix+"calls:", p.Config), live: cluster.NewKeyspace(p.Prefix, p.Config), stop: make(chan struct{})}
	// The poller on a client of its own, as the engine's loops: never
	// queued behind the ops' connections.
	loops, closeLoops := cluster.LoopClient(p.Client)
	poller, err := cluster.NewPoller(cluster.PollerParams{
		Params: cluster.Params{Client: loops, Prefix: p.Prefix + "calls:", NodeID: p.NodeID, Logger: m.log, Config: p.Config},
		Fire: func(ctx context.Context, d cluster.Due) {
			if inviteID, ok := strings.CutPrefix(d.ID, creationPrefix); ok {
				cl.creationExpired(ctx, inviteID, d)
				return
			}
			if callID, ok := strings.CutPrefix(d.ID, lostPrefix); ok {
				m.lostFired(ctx, callID, &d)
				return
			}
			m.setupFired(ctx, d.ID, &d)
		},
	})
	if err != nil {
		_ = closeLoops()
		return nil, err
	}
	cl.poller, cl.loops = poller, closeLoops
	return cl, nil
}

// start starts the poller and the reconcile loop.
func (cl *clusterCalls) start() error {
	if err := cl.poller.Start(); err != nil {
		return err
	}
	cl.loop.Add(1)
	go func() {
		defer cl.loop.Done()
		tick := time.NewTicker(cl.cfg.TimerPoll)
		defer tick.Stop()
		scan := time.NewTicker(cl.cfg.NodeTTL)
		defer scan.Stop()
		for {
			select {
			case <-cl.stop:
				return
			case <-tick.C:
				cl.reconcile()
			case <-scan.C:
				cl.orphans()
			}
		}
	}()
	return nil
}

// close stops the loops: the setup deadlines this node armed fire on the
// others.
func (cl *clusterCalls) close() {
	cl.closeOnce.Do(func() {
		close(cl.stop)
		cl.poller.Close()
		cl.loop.Wait()
		_ = cl.loops()
	})
}

// createdWait is the longest a glare merge waits for the other call's
// invitation to be created (two timer leases), and creationLease how long
// an invitation may stay registered and not created before any node
// abandons it (calls:deadlines member creationPrefix + invite ID): its
// node died in between. Both follow timer_lease, the cluster's bound on a
// node that died or is stuck with a deadline; creationLease is longer than
// createdWait and than any CreateInvitation that still succeeds.
func (cl *clusterCalls) createdWait() time.Duration   { return 2 * cl.cfg.TimerLease }
func (cl *clusterCalls) creationLease() time.Duration { return 3 * cl.cfg.TimerLease }

// active counts the running calls of the cluster (-1: Redis did not say).
func (cl *clusterCalls) active() int {
	ctx, cancel := context.WithTimeout(context.Background(), cl.cfg.OpTimeout)
	defer cancel()
	n, err := cl.rdb.SCard(ctx, cl.runKey()).Result()
	if err != nil {
		return -1
	}
	return int(n)
}

// localClaim returns this node's claim on call callID's room, claiming it
// on first use. A claim made for a call that ends meanwhile is released by
// the next reconcile.
func (cl *clusterCalls) localClaim(callID, roomID string) *rooms.Claim {
	m := cl.m
	if m.rooms == nil {
		return nil
	}
	m.mu.Lock()
	if c := m.claims[callID]; c != nil || m.closed {
		m.mu.Unlock()
		return c
	}
	m.mu.Unlock()
	claim, err := m.rooms.Claim(roomID)
	if err != nil {
		m.log.Warn("call room ID taken on this node", "call", callID, "room", roomID, "err", err)
		return nil
	}
	m.mu.Lock()
	if c := m.claims[callID]; c != nil {
		m.mu.Unlock()
		m.rooms.Release(claim)
		return c
	}
	m.claims[callID] = claim
	m.mu.Unlock()
	return claim
}

// reconcile brings this node's room claims in line with the calls' state:
// the claim of a call that ended (on any node) is released, and a user who
// hung up on another node while their media was connected here is taken out
// of the room (rooms then reports MemberLeft, which this node decides).
//
// Why polling, not a message: the state in Redis is the authority and a
// read of it cannot be lost, while a message sent when the call ended could
// be (the node busy, Redis restarting, the sender dying between its EXEC
// and its send). The cost is one MGET per period, and only of the calls
// whose rooms this node holds; the price is that a room on another node
// closes up to timer_poll after the end.
func (cl *clusterCalls) reconcile() {
	m := cl.m
	m.mu.Lock()
	ids := make([]string, 0, len(m.claims))
	for id := range m.claims {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = cl.stKey(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cl.cfg.OpTimeout)
	vals, err := cl.rdb.MGet(ctx, keys...).Result()
	cancel()
	if err != nil {
		m.log.Warn("calls: room claims not reconciled", "err", err)
		return
	}
	for i, id := range ids {
		s, ok := vals[i].(string)
		if !ok {
			m.releaseClaim(id) // forgotten (abandoned) or expired
			continue
		}
		c, err := decodeCall([]byte(s))
		if err != nil {
			m.log.Error("calls: unreadable call state", "call", id, "err", err)
			continue
		}
		if c.ended {
			m.releaseClaim(id)
			continue
		}
		for _, u := range sortedSet(c.hungUp) {
			if node, ok := c.connected[u]; ok && node == cl.node {
				m.leaveRoom(id, u)
			}
		}
	}
}

// orphans ends the part of the participants whose media was connected in
// a call's room on a node that died (its node:<id> key gone) and did not
// come back elsewhere within calls.setup_timeout of that node's last
// heartbeat: as if their room had reported them gone with their connection
// lost (leftLocked), at that heartbeat. A one-to-one call then ends
// (connection_lost, ended by that participant, with the call-end invitation
// kept for them), a group call when fewer than two remain. Every node scans
// every node_ttl; the decision is a step like any other, so the end happens
// once.
func (cl *clusterCalls) orphans() {
	m := cl.m
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids, err := cl.rdb.SMembers(ctx, cl.runKey()).Result()
	if err != nil || len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = cl.stKey(id)
	}
	vals, err := cl.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return
	}
	running := map[string]*call{}
	others := map[string]bool{}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		c, err := decodeCall([]byte(s))
		if err != nil || c.ended {
			continue
		}
		running[ids[i]] = c
		for _, n := range c.connected {
			if n != cl.node {
				others[n] = true
			}
		}
	}
	if len(others) == 0 {
		return
	}
	nodes := sortedSet(others)
	exists := make([]*redis.IntCmd, len(nodes))
	if _, err := cl.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			exists[i] = p.Exists(ctx, cl.live.NodeKey(n))
		}
		return nil
	}); err != nil {
		return
	}
	hbs, err := cl.rec.Heartbeats(ctx)
	if err != nil {
		return
	}
	now := m.clock.Now()
	dead := map[string]bool{}
	for i, n := range nodes {
		if exists[i].Val() == 0 && now.Sub(hbs[n]) >= m.cfg.SetupTimeout {
			dead[n] = true
		}
	}
	for _, id := range sortedSet(running) {
		var at time.Time
		for _, n := range running[id].connected {
			if dead[n] && hbs[n].After(at) {
				at = hbs[n]
			}
		}
		if !slices.ContainsFunc(sortedSet(running[id].connected), func(u string) bool { return dead[running[id].connected[u]] }) {
			continue
		}
		if at.IsZero() || at.After(now) {
			at = now // no heartbeat: the end is when it was noticed
		}
		// Not before what the call recorded (clocks of nodes differ).
		r := running[id].rec
		at = latest(at, r.CreatedAt, r.BeganAt)
		for _, p := range r.Participants {
			at = latest(at, p.JoinedAt)
		}
		err := cl.doAt(ctx, at, func(t tx) (func(), error) {
			c := t.running(id)
			if c == nil {
				return nil, nil
			}
			var works []func()
			for _, u := range sortedSet(c.connected) {
				if !dead[c.connected[u]] || c.ended {
					continue
				}
				if w := m.leftLocked(t, c, u, rooms.LeaveConnectionLost); w != nil {
					works = append(works, w)
				}
			}
			return func() {
				for _, w := range works {
					w()
				}
			}, nil
		}, nil)
		if err != nil {
			m.log.Warn("calls: media lost with a dead node not recorded", "call", id, "err", err)
			continue
		}
		m.log.Info("calls: participants' media lost with their node", "call", id)
	}
}

// waitCreated waits until invitation inviteID of call callID is created or
// abandoned, polling its state (at most createdWait, or until ctx ends).
func (cl *clusterCalls) waitCreated(ctx context.Context, callID, inviteID string) error {
	ctx, cancel := context.WithTimeout(ctx, cl.createdWait())
	defer cancel()
	tick := time.NewTicker(createdPoll)
	defer tick.Stop()
	for {
		s, err := cl.rdb.Get(ctx, cl.stKey(callID)).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err == nil {
			c, err := decodeCall([]byte(s))
			if err != nil || !c.creating[inviteID] {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errStillPlaced
		case <-tick.C:
		}
	}
}

// recoverOpenCalls ends, with reason server_restart, the calls left running
// whose every node is gone: no node that ever changed the call (its state's
// Nodes), but this one in its previous life, has a live registration
// (node:<id>). A call a live node took part in goes on: that node still
// holds its rooms and hears its participants. The end time is the latest
// heartbeat of those nodes (as on one node, the last heartbeat).
func (cl *clusterCalls) recoverOpenCalls(ctx context.Context) error {
	open, err := cl.rec.OpenCalls(ctx)
	if err != nil {
		return err
	}
	if len(open) == 0 {
		return nil
	}
	hbs, err := cl.rec.Heartbeats(ctx)
	if err != nil {
		return err
	}
	for _, r := range open {
		id := r.CallID
		var nodes []string
		var ended bool
		err := cl.do(ctx, func(t tx) (func(), error) {
			nodes, ended = nil, false
			c := t.(*redisTx).get(id)
			if c == nil {
				return nil, nil // no state (a record kept past its state): ended below from the record
			}
			if c.ended {
				ended = true
				return nil, nil
			}
			nodes = c.nodes
			alive, err := cl.aliveOther(ctx, nodes)
			if err != nil || alive {
				return nil, err
			}
			endAtRestart(&c.rec, lastHeartbeat(hbs, nodes))
			c.ended = true
			if c.setupArmed {
				c.setupArmed = false
				t.stopSetup(c)
			}
			t.forget(c)
			t.save(c)
			ended = true
			return nil, nil
		}, nil)
		if err != nil {
			return err
		}
		if ended {
			cl.m.log.Info("call ended by server restart", "call", id)
			continue
		}
		if nodes == nil {
			alive, err := cl.aliveOther(ctx, nil)
			if err != nil || alive {
				return err
			}
			endAtRestart(&r, lastHeartbeat(hbs, slices.Collect(maps.Keys(hbs))))
			if err := cl.rec.SaveCall(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// aliveOther reports whether one of nodes other than this one is alive.
func (cl *clusterCalls) aliveOther(ctx context.Context, nodes []string) (bool, error) {
	var keys []string
	for _, n := range nodes {
		if n != cl.node {
			keys = append(keys, cl.live.NodeKey(n))
		}
	}
	if len(keys) == 0 {
		return false, nil
	}
	n, err := cl.rdb.Exists(ctx, keys...).Result()
	return n > 0, err
}

// lastHeartbeat is the latest heartbeat of nodes (zero: none).
func lastHeartbeat(hbs map[string]time.Time, nodes []string) time.Time {
	var last time.Time
	for _, n := range nodes {
		if at := hbs[n]; at.After(last) {
			last = at
		}
	}
	return last
}

// creationExpired abandons invitation inviteID if it is still registered
// and not created past creationLease (the node creating it died): its
// invitees are no longer rung by it, and a call whose first invitation it
// was is forgotten (its room ID free again; a node's claim on it goes at
// its next reconcile).
func (cl *clusterCalls) creationExpired(ctx context.Context, inviteID string, d cluster.Due) {
	m := cl.m
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	callID := ""
	err := cl.do(ctx, func(t tx) (func(), error) {
		callID = ""
		c := t.byInvite(inviteID)
		if c == nil || !c.creating[inviteID] {
			return nil, nil
		}
		callID = c.rec.CallID
		m.dropRingLocked(t, c, inviteID, sortedSet(c.pending[inviteID]))
		if inviteID == c.rec.CallID && !c.ended {
			t.forget(c)
		}
		return nil, nil
	}, &d)
	if err == nil && callID != "" {
		m.log.Warn("call invitation never created (its node died?): abandoned", "call", callID, "invite", inviteID)
	}
	if err != nil {
		m.log.Warn("abandoning an uncreated call invitation not committed; it fires again after the lease", "invite", inviteID, "err", err)
	}
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// gatedInvitations is the engine's answer and cancel behind a look at the
// invitation's call on the op's first read (cluster mode;
// *signaling.Engine has them).
type gatedInvitations interface {
	AnswerGated(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, action signaling.Action, g *signaling.ClusterGate) error
	CancelGated(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, g *signaling.ClusterGate) error
}

var _ gatedInvitations = (*signaling.Engine)(nil)

// gated returns the engine's gated ops in cluster mode.
func (m *Manager) gated() (gatedInvitations, bool) {
	if m.cl == nil {
		return nil, false
	}
	g, ok := m.eng.(gatedInvitations)
	return g, ok
}

// plainInvites are the invitations whose answer or cancel on this node
// found no call (clusterCalls.gate: their calls:inv key absent in the
// engine's read): the note of their end needs no Redis step
// (Manager.InvitationNote). A call's calls:inv key is written before its
// invitation exists (startCall registers the call, then creates the
// invitation under the ID it chose), and no call takes an existing
// invitation's ID, so an invitation found without one never gets one. At
// most two generations of plainGen IDs; an ID that fell out costs the
// note's step, as before.
type plainInvites struct {
	mu       sync.Mutex
	cur, old map[string]struct{}
}

const plainGen = 4096

func (p *plainInvites) add(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || len(p.cur) >= plainGen {
		p.old, p.cur = p.cur, make(map[string]struct{}, 64)
	}
	p.cur[id] = struct{}{}
}

func (p *plainInvites) has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.cur[id]
	if !ok {
		_, ok = p.old[id]
	}
	return ok
}
