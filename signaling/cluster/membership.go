package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Load is the load figures a node advertises (connections, rooms, CPU...),
// as its caller measures them.
type Load map[string]float64

// Info is what a node advertises in its `node:<id>` key.
type Info struct {
	ID        string    `json:"-"`
	Addr      string    `json:"addr"`
	MediaAddr string    `json:"media_addr,omitempty"`
	Load      Load      `json:"load,omitempty"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"-"` // from the `nodes` score (Redis's clock)
}

// MembershipParams configure a Membership.
type MembershipParams struct {
	Params
	Addr      string      // advertised signaling address
	MediaAddr string      // advertised media address, if any
	Load      func() Load // called at each heartbeat; nil: no figures

	// Registry, if set, writes every local user's entry again after Redis
	// was unavailable or lost this node's key.
	Registry *Registry
	// DeadEvents receives a dead node's unread stream entries, in order,
	// in batches of Config.StreamBatch (so that they can go to the users'
	// outboxes); an error stops the cleanup, which is retried. Nil: the
	// entries are dropped, with a log line.
	DeadEvents func(ctx context.Context, node string, events []Event) error
	// NodeDead is called once a dead node's registry entries and stream
	// are handed over, by the one survivor that claimed its cleanup; an
	// error leaves the cleanup to be retried. If the claimer dies during
	// a cleanup, another survivor runs it again after
	// Config.CleanupLease: DeadEvents and NodeDead are at least once.
	NodeDead func(ctx context.Context, node string) error
}

// Membership keeps this node registered in `node:<id>` (expiring after
// Config.NodeTTL, refreshed every NodeTTL/3, with its Info) and in the
// `nodes` sorted set (score: last heartbeat, Redis's clock), and looks
// every NodeTTL/3 for nodes whose key expired: it claims the cleanup of
// each with `cleanup:<id>` (one survivor wins), removes the dead node
// from its users' `conn:` hashes, hands its unread events to DeadEvents,
// calls NodeDead, and deletes its keys.
type Membership struct {
	p       MembershipParams
	ks      Keyspace
	life    life
	started time.Time

	lastBeat atomic.Int64 // Unix ms (local clock) of the last successful heartbeat
	lastFail atomic.Int64 // Unix ms (local clock) of the last failed call of the heartbeat or the watch
	cleaned  atomic.Int64 // cleanups this node completed (for tests and metrics)
	sweeps   atomic.Int64 // looks for dead nodes completed
}

// maxNodes bounds the nodes LiveNodes lists and each look for dead nodes
// handles.
const maxNodes = 1000

// redialPeriod is how long a node's client may take to reach Redis again
// after Redis is back: once its dials kept failing (PoolSize of them),
// go-redis fails every call at once and probes with one dial a second.
const redialPeriod = time.Second

// outageGrace is how long after its last failed call a node declares no
// other node dead: every node's key expired during an outage longer than
// node_ttl, and each live node registers again at its first heartbeat
// that reaches Redis, within redialPeriod plus one heartbeat period
// (the retries' back-off being capped there) of Redis being back.
func (c Config) outageGrace() time.Duration { return c.NodeTTL + redialPeriod }

// NewMembership returns the membership of p.NodeID.
func NewMembership(p MembershipParams) (*Membership, error) {
	if err := p.check("membership"); err != nil {
		return nil, err
	}
	return &Membership{p: p, ks: NewKeyspace(p.Prefix, p.Config), life: newLife()}, nil
}

// Start registers the node (one heartbeat, which must succeed) and starts
// the heartbeat and the look for dead nodes. The registration may take up
// to NodeTTL, not OpTimeout: it is a new client's first call (its dial,
// handshake and the script's load come with it), and there is no key yet
// that a slow call could outlive.
func (m *Membership) Start(ctx context.Context) error {
	if err := m.life.err(); !errors.Is(err, ErrNotStarted) {
		return ErrStarted
	}
	m.started = time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.p.Config.NodeTTL)
	defer cancel()
	if _, err := m.beat(ctx); err != nil {
		return fmt.Errorf("cluster: register node %s: %w", m.p.NodeID, err)
	}
	return m.life.start(m.heartbeats, m.watch)
}

// Close stops the loops and leaves the cluster at once: it deletes the
// node key and does its own cleanup (registry leftovers, unread events to
// DeadEvents, its keys) without calling NodeDead. Close the Reader,
// Poller and Registry first.
func (m *Membership) Close(ctx context.Context) error {
	if !m.life.stop() {
		return nil
	}
	if err := m.p.Client.Del(ctx, m.ks.NodeKey(m.p.NodeID)).Err(); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	if err := m.cleanup(ctx, m.p.NodeID, false); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Cleanups is the number of dead nodes this node cleaned up.
func (m *Membership) Cleanups() int64 { return m.cleaned.Load() }

// LastHeartbeat is when this node's last heartbeat succeeded (its clock).
func (m *Membership) LastHeartbeat() time.Time { return time.UnixMilli(m.lastBeat.Load()) }

// beatResult is what a heartbeat found.
type beatResult struct {
	hadKey    bool // the node key was there (not expired, not lost)
	voided    bool // a survivor's cleanup claim on this node was cancelled
	wasListed bool // the node was in `nodes`
}

// beat runs one heartbeat.
func (m *Membership) beat(ctx context.Context) (beatResult, error) {
	info := Info{Addr: m.p.Addr, MediaAddr: m.p.MediaAddr, Started: m.started}
	if m.p.Load != nil {
		info.Load = m.p.Load()
	}
	v, err := json.Marshal(info)
	if err != nil {
		return beatResult{}, err
	}
	id := m.p.NodeID
	res, err := heartbeatScript.Run(ctx, m.p.Client,
		[]string{m.ks.NodeKey(id), m.ks.nodes(), m.ks.cleanup(id)},
		v, m.p.Config.NodeTTL.Milliseconds(), id).Int64Slice()
	if err != nil {
		return beatResult{}, err
	}
	if len(res) != 4 {
		return beatResult{}, fmt.Errorf("heartbeat script returned %v", res)
	}
	m.lastBeat.Store(time.Now().UnixMilli())
	return beatResult{hadKey: res[0] == 1, voided: res[1] == 1, wasListed: res[2] == 0}, nil
}

// heartbeats refreshes the node key every NodeTTL/3, retrying sooner (with
// back-off, never later than the period) when Redis fails. On the first
// success after a failure, or when the key was gone, it has the Registry
// write every local user again.
func (m *Membership) heartbeats(ctx context.Context) {
	rt := newRetrier(m.p.Logger, "heartbeat", m.p.Config.MaxBackoff)
	period := m.p.Config.heartbeat()
	wait := period
	for sleep(ctx, wait) {
		cctx, cancel := opCtx(ctx, m.p.Config)
		res, err := m.beat(cctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.lastFail.Store(time.Now().UnixMilli())
			wait = min(rt.fail(err), period)
			continue
		}
		wait = period
		recovered := rt.ok()
		if !res.hadKey {
			// This node was stalled or cut off past node_ttl (or Redis
			// stalled, and every key expired at once): the others' keys
			// may have expired for the same reason. The grace of an
			// outage, as after a failed call.
			m.lastFail.Store(time.Now().UnixMilli())
			m.p.Logger.Warn("node key was gone (expired, or Redis lost data); registered again",
				"cleanup_was_claimed", res.voided, "was_in_nodes", res.wasListed)
		}
		if (recovered || !res.hadKey) && m.p.Registry != nil {
			m.p.Registry.Resync()
		}
	}
}

// watch looks for dead nodes every NodeTTL/3 and cleans up those whose
// cleanup it claims.
func (m *Membership) watch(ctx context.Context) {
	rt := newRetrier(m.p.Logger, "dead-node watch", m.p.Config.MaxBackoff)
	period := m.p.Config.heartbeat()
	wait := period
	for sleep(ctx, wait) {
		wait = period
		if err := m.sweep(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.lastFail.Store(time.Now().UnixMilli())
			wait = min(rt.fail(err), period)
			continue
		}
		m.sweeps.Add(1)
		rt.ok()
	}
}

// sweep finds dead nodes, and cleans up each whose cleanup it claims.
// Within outageGrace of a failed call, or of finding this node's own key
// gone, it only checks that Redis answers: after an outage or a stall (of
// this process, of the host, of Redis), a node whose key expired
// meanwhile is given the time to register again before it counts as dead.
func (m *Membership) sweep(ctx context.Context) error {
	cctx, cancel := opCtx(ctx, m.p.Config)
	dead, err := deadNodesScript.Run(cctx, m.p.Client, []string{m.ks.nodes()},
		m.ks.nodePrefix(), m.p.Config.NodeTTL.Milliseconds(), maxNodes).StringSlice()
	cancel()
	if err != nil {
		return err
	}
	if slices.Contains(dead, m.p.NodeID) {
		// This node's own key expired: it was stalled or cut off past
		// node_ttl, or Redis was (every key expired at once). The others
		// may be as alive as it is: they get the outage's grace to
		// register again before any counts as dead.
		m.lastFail.Store(time.Now().UnixMilli())
	}
	if since := time.Since(time.UnixMilli(m.lastFail.Load())); since < m.p.Config.outageGrace() {
		if len(dead) > 0 {
			m.p.Logger.Debug("nodes look dead just after a Redis outage; waiting for them to register again",
				"nodes", dead, "wait", m.p.Config.outageGrace()-since)
		}
		return nil
	}
	for _, id := range dead {
		ok, err := m.claim(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		m.p.Logger.Info("node dead; cleaning up", "dead", id)
		if err := m.cleanup(ctx, id, true); err != nil {
			if errors.Is(err, errNodeBack) {
				m.p.Logger.Info("node came back during its cleanup", "dead", id)
				continue
			}
			// The claim stays ours until its lease ends: the next sweep
			// retries (a handler error or Redis failing mid-way).
			m.p.Logger.Warn("cleanup of a dead node failed; retrying", "dead", id, "err", err)
			continue
		}
		m.cleaned.Add(1)
	}
	return nil
}

// claim takes or renews this node's claim on dead's cleanup.
func (m *Membership) claim(ctx context.Context, dead string) (bool, error) {
	ctx, cancel := opCtx(ctx, m.p.Config)
	defer cancel()
	n, err := claimCleanupScript.Run(ctx, m.p.Client,
		[]string{m.ks.cleanup(dead), m.ks.NodeKey(dead)},
		m.p.NodeID, m.p.Config.CleanupLease.Milliseconds()).Int()
	return n == 1, err
}

// errNodeBack stops a cleanup whose node registered again.
var errNodeBack = errors.New("cluster: the node is back")

// cleanup removes node from its users' `conn:` hashes, hands its unread
// events to DeadEvents, calls NodeDead (if dead, not on a graceful leave)
// and deletes its keys. Each step checks, atomically, that the node key is
// still gone; between steps a dead node's claim is renewed.
func (m *Membership) cleanup(ctx context.Context, node string, dead bool) error {
	renew := func() error {
		if !dead {
			return nil
		}
		ok, err := m.claim(ctx, node)
		if err == nil && !ok {
			err = errNodeBack // or another survivor took over after our lease
		}
		return err
	}
	cfg := m.p.Config
	for {
		n, err := m.dropUsersOnce(ctx, node)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if err := renew(); err != nil {
			return err
		}
	}
	for handedOver := false; ; {
		for {
			more, err := m.handOver(ctx, node)
			if err != nil {
				return err
			}
			if !more {
				break
			}
			if err := renew(); err != nil {
				return err
			}
		}
		if dead && !handedOver && m.p.NodeDead != nil {
			hctx, cancel := context.WithTimeout(ctx, cfg.CleanupLease)
			err := m.p.NodeDead(hctx, node)
			cancel()
			if err != nil {
				return fmt.Errorf("NodeDead handler: %w", err)
			}
		}
		handedOver = true
		cctx, cancel := opCtx(ctx, cfg)
		n, err := finishCleanupScript.Run(cctx, m.p.Client,
			[]string{m.ks.NodeKey(node), m.ks.StreamKey(node), m.ks.streamPos(node), m.ks.streamSeq(node), m.ks.nodeUsers(node), m.ks.nodes()},
			node).Int()
		cancel()
		switch {
		case err != nil:
			return err
		case n < 0:
			return errNodeBack
		case n == 1:
			return nil
		}
		// Entries or users arrived meanwhile (a transaction that read
		// the registry before the node's key expired): hand them over too.
		if _, err := m.dropUsersOnce(ctx, node); err != nil {
			return err
		}
	}
}

// dropUsersOnce is one batch of the registry step of cleanup.
func (m *Membership) dropUsersOnce(ctx context.Context, node string) (int, error) {
	cctx, cancel := opCtx(ctx, m.p.Config)
	defer cancel()
	n, err := dropUsersScript.Run(cctx, m.p.Client,
		[]string{m.ks.NodeKey(node), m.ks.nodeUsers(node)},
		m.ks.connPrefix(), node, writeBatch).Int()
	if err == nil && n < 0 {
		err = errNodeBack
	}
	return n, err
}

// handOver gives one batch of node's unread entries to DeadEvents and
// trims them; it reports whether there may be more.
func (m *Membership) handOver(ctx context.Context, node string) (bool, error) {
	cfg := m.p.Config
	cctx, cancel := opCtx(ctx, cfg)
	msgs, err := m.p.Client.XRangeN(cctx, m.ks.StreamKey(node), "-", "+", cfg.StreamBatch).Result()
	cancel()
	if err != nil || len(msgs) == 0 {
		return false, err
	}
	events := make([]Event, 0, len(msgs))
	for _, msg := range msgs {
		events = append(events, parseEvent(msg))
	}
	if m.p.DeadEvents != nil {
		hctx, cancel := context.WithTimeout(ctx, cfg.CleanupLease)
		err := m.p.DeadEvents(hctx, node, events)
		cancel()
		if err != nil {
			return false, fmt.Errorf("DeadEvents handler: %w", err)
		}
	} else {
		m.p.Logger.Warn("dropping a dead node's unread events (no DeadEvents handler)", "dead", node, "events", len(events))
	}
	last := msgs[len(msgs)-1].ID
	cctx, cancel = opCtx(ctx, cfg)
	n, err := trimDeadScript.Run(cctx, m.p.Client, []string{m.ks.NodeKey(node), m.ks.StreamKey(node)}, NextStreamID(last)).Int()
	cancel()
	if err == nil && n < 0 {
		err = errNodeBack
	}
	return err == nil, err
}

// LiveNodes lists the nodes whose key is there (up to 1000, most recent
// heartbeat first), in one round trip.
func (m *Membership) LiveNodes(ctx context.Context) ([]Info, error) {
	return liveNodes(ctx, m.p.Client, m.ks)
}

func liveNodes(ctx context.Context, c redis.UniversalClient, ks Keyspace) ([]Info, error) {
	res, err := liveNodesScript.Run(ctx, c, []string{ks.nodes()}, ks.nodePrefix(), maxNodes).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cluster: live nodes: %w", err)
	}
	out := make([]Info, 0, len(res)/3)
	for i := 0; i+2 < len(res); i += 3 {
		var info Info
		if err := json.Unmarshal([]byte(res[i+2]), &info); err != nil {
			return nil, fmt.Errorf("cluster: node %s: bad info: %w", res[i], err)
		}
		ms, _ := strconv.ParseFloat(res[i+1], 64)
		info.ID, info.Heartbeat = res[i], time.UnixMilli(int64(ms))
		out = append(out, info)
	}
	return out, nil
}
