package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Registry records which users have connections on this node, in Redis:
// `conn:<user>` HASH node → number of connections there, and
// `nodeusers:<node>` SET of the node's users (for the cleanup of a dead
// node). A user is online iff some node of `conn:<user>` is in `nodes`:
// alive, or dead and not yet cleaned up (events routed there are handed
// over to the users' outboxes by the cleanup, after it has dropped the
// node from their `conn:` hashes); Nodes answers that for many users at
// once. Not the node key, which every node loses during a Redis outage
// longer than node_ttl and gets back only at its next heartbeat.
//
// This node is the authority on its own connections: the counts live in
// memory and one writer goroutine writes them to Redis as absolute values
// (HSET n, or HDEL at 0), in order, batched. A write that fails is retried
// until it succeeds, and Resync (called by Membership after an outage, or
// when Redis lost this node's keys) writes every local user again.
type Registry struct {
	p    RegistryParams
	ks   Keyspace
	life life
	kick chan struct{} // capacity 1: wakes the writer

	mu      sync.Mutex          // guards the fields below; never held across a Redis call
	counts  map[string]int      // user → connections on this node (no zero entries)
	dirty   map[string]struct{} // users whose Redis entry may differ from counts
	seq     uint64              // Add and Remove calls so far
	written uint64              // every call up to it is in Redis
	failed  uint64              // the last failed write covered calls up to it
	failErr error               // that write's error
	notify  chan struct{}       // closed and replaced when written or failed moves
}

// writeBatch is the most users one pipeline of the writer carries.
const writeBatch = 512

// RegistryParams configure a Registry.
type RegistryParams struct {
	Params
	// Present, if set, queues in the writer's pipeline the caller's own
	// writes for a user with connections on this node, each time the
	// user's entry is written: on a change, and again by Resync (after
	// Redis lost data, or may have). They are queued before the entry's
	// writes: Redis has them when it has the entry. It must only queue
	// commands.
	Present func(ctx context.Context, pipe redis.Pipeliner, user string)
}

// NewRegistry returns a registry of p.NodeID's connections.
func NewRegistry(p RegistryParams) (*Registry, error) {
	if err := p.check("registry"); err != nil {
		return nil, err
	}
	return &Registry{
		p: p, ks: NewKeyspace(p.Prefix, p.Config), life: newLife(),
		kick:   make(chan struct{}, 1),
		counts: map[string]int{}, dirty: map[string]struct{}{},
		notify: make(chan struct{}),
	}, nil
}

// Start starts the writer.
func (r *Registry) Start() error { return r.life.start(r.writer) }

// Close stops the writer and removes this node's entries from Redis (a
// graceful leave: its users at once look offline here). Call it after
// the node's connections are closed, before Membership.Close.
func (r *Registry) Close(ctx context.Context) error {
	if !r.life.stop() {
		return nil
	}
	r.mu.Lock()
	users := make([]string, 0, len(r.counts))
	for u := range r.counts {
		users = append(users, u)
	}
	r.mu.Unlock()
	for len(users) > 0 {
		n := min(len(users), writeBatch)
		batch := users[:n]
		users = users[n:]
		_, err := r.p.Client.Pipelined(ctx, func(p redisPipe) error {
			for _, u := range batch {
				p.HDel(ctx, r.ks.ConnKey(u), r.p.NodeID)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cluster: registry close: %w", err)
		}
	}
	if err := r.p.Client.Del(ctx, r.ks.nodeUsers(r.p.NodeID)).Err(); err != nil {
		return fmt.Errorf("cluster: registry close: %w", err)
	}
	return nil
}

// Add counts one more connection of user on this node and waits until
// Redis has it. The connection is counted even when Add returns an error
// (Redis unavailable, ctx done): the writer keeps trying, so call Remove
// once for every Add whatever it returned. ErrNotStarted and ErrClosed
// are the exceptions: then nothing was counted.
func (r *Registry) Add(ctx context.Context, user string) error { return r.change(ctx, user, +1) }

// Remove counts one connection of user fewer on this node (the entry goes
// at zero) and waits until Redis has it; errors as for Add.
func (r *Registry) Remove(ctx context.Context, user string) error { return r.change(ctx, user, -1) }

func (r *Registry) change(ctx context.Context, user string, d int) error {
	if err := r.life.err(); err != nil {
		return err
	}
	r.mu.Lock()
	if n := r.counts[user] + d; n > 0 {
		r.counts[user] = n
	} else {
		delete(r.counts, user)
	}
	r.dirty[user] = struct{}{}
	r.seq++
	s := r.seq
	r.mu.Unlock()
	r.wake()
	return r.waitFor(ctx, s, false)
}

// Flush waits until every change counted so far is in Redis, through the
// writer's retries: a failed write does not end it (unlike Add and
// Remove, which return the first failure of a write covering them); ctx's
// end or the registry's Close does.
func (r *Registry) Flush(ctx context.Context) error {
	if err := r.life.err(); err != nil {
		return err
	}
	r.mu.Lock()
	s := r.seq
	r.mu.Unlock()
	return r.waitFor(ctx, s, true)
}

// Local returns the number of user's connections on this node.
func (r *Registry) Local(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[user]
}

// Resync makes the writer write every local user's entry again (after
// Redis lost or may have lost them). It does not wait.
func (r *Registry) Resync() {
	r.mu.Lock()
	for u := range r.counts {
		r.dirty[u] = struct{}{}
	}
	r.mu.Unlock()
	r.wake()
}

func (r *Registry) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// waitFor returns when change s is in Redis (nil), or a write covering it
// failed (that error; unless throughFailures: then the writer's retries
// are waited for), or ctx ends, or the registry closes.
func (r *Registry) waitFor(ctx context.Context, s uint64, throughFailures bool) error {
	for {
		r.mu.Lock()
		written, failed, err, ch := r.written, r.failed, r.failErr, r.notify
		r.mu.Unlock()
		switch {
		case written >= s:
			return nil
		case !throughFailures && failed >= s:
			return fmt.Errorf("cluster: registry write: %w", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.life.done:
			return ErrClosed
		}
	}
}

// writer writes dirty users until there are none, then waits for a kick.
func (r *Registry) writer(ctx context.Context) {
	rt := newRetrier(r.p.Logger, "registry", r.p.Config.MaxBackoff)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		for {
			batch, hi, last := r.snapshot()
			if len(batch) == 0 {
				break
			}
			if err := r.write(ctx, batch); err != nil {
				r.mu.Lock()
				for u := range batch {
					r.dirty[u] = struct{}{}
				}
				r.failed, r.failErr = hi, err
				r.broadcastLocked()
				r.mu.Unlock()
				if !sleep(ctx, rt.fail(err)) {
					return
				}
				continue
			}
			rt.ok()
			if last {
				r.mu.Lock()
				r.written = max(r.written, hi)
				r.broadcastLocked()
				r.mu.Unlock()
			}
		}
	}
}

// snapshot takes up to writeBatch dirty users with their counts; last
// says whether it took all of them, hi is the last call counted then.
func (r *Registry) snapshot() (batch map[string]int, hi uint64, last bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch = make(map[string]int, min(len(r.dirty), writeBatch))
	for u := range r.dirty {
		if len(batch) == writeBatch {
			break
		}
		batch[u] = r.counts[u]
		delete(r.dirty, u)
	}
	return batch, r.seq, len(r.dirty) == 0
}

func (r *Registry) broadcastLocked() {
	close(r.notify)
	r.notify = make(chan struct{})
}

// write puts batch's counts in Redis in one round trip.
func (r *Registry) write(ctx context.Context, batch map[string]int) error {
	ctx, cancel := opCtx(ctx, r.p.Config)
	defer cancel()
	node, users := r.p.NodeID, r.ks.nodeUsers(r.p.NodeID)
	_, err := r.p.Client.Pipelined(ctx, func(p redisPipe) error {
		for u, n := range batch {
			if n > 0 {
				if r.p.Present != nil {
					r.p.Present(ctx, p, u)
				}
				p.HSet(ctx, r.ks.ConnKey(u), node, n)
				p.SAdd(ctx, users, u)
			} else {
				p.HDel(ctx, r.ks.ConnKey(u), node)
				p.SRem(ctx, users, u)
			}
		}
		return nil
	})
	return err
}

// Nodes returns, for each of users that has connections, the nodes that
// hold them (sorted) and are in `nodes`; a node that left, or died and was
// cleaned up, is left out. It takes one round trip (QueueNodes). It needs
// neither Start nor this node's registration.
func (r *Registry) Nodes(ctx context.Context, users ...string) (map[string][]string, error) {
	out := make(map[string][]string, len(users))
	if len(users) == 0 {
		return out, nil
	}
	var q *NodesQuery
	if _, err := r.p.Client.Pipelined(ctx, func(p redisPipe) error {
		q = r.ks.QueueNodes(ctx, p, users)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("cluster: registry nodes: %w", err)
	}
	if err := ParseNodes(q, users, out); err != nil {
		return nil, fmt.Errorf("cluster: registry nodes: %w", err)
	}
	return out, nil
}

// NodesQuery is a lookup queued by QueueNodes.
type NodesQuery struct {
	conns []*redis.StringSliceCmd // HKEYS conn:<user>, one per user
	live  *redis.StringSliceCmd   // ZRANGE nodes 0 -1
}

// QueueNodes queues in pipe (a caller's pipeline, typically the one that
// WATCHes the users' ConnKey) the lookup that Registry.Nodes makes: the
// nodes of each user's `conn:` hash (HKEYS) and the members of `nodes`
// (the cluster's nodes, a few), filtered by ParseNodes once the pipeline
// ran. No script: a script's call costs Redis more than these commands.
func (k Keyspace) QueueNodes(ctx context.Context, pipe redis.Pipeliner, users []string) *NodesQuery {
	q := &NodesQuery{conns: make([]*redis.StringSliceCmd, len(users))}
	for i, u := range users {
		q.conns[i] = pipe.HKeys(ctx, k.ConnKey(u))
	}
	q.live = pipe.ZRange(ctx, k.nodes(), 0, -1)
	return q
}

// ParseNodes adds to out, for each of users (as given to QueueNodes) that
// has connections on nodes in `nodes`, those nodes (sorted).
func ParseNodes(q *NodesQuery, users []string, out map[string][]string) error {
	live, err := q.live.Result()
	if err != nil {
		return fmt.Errorf("cluster: nodes: %w", err)
	}
	for i, cmd := range q.conns {
		nodes, err := cmd.Result()
		if err != nil {
			return fmt.Errorf("cluster: nodes: %w", err)
		}
		if i >= len(users) {
			break
		}
		user := users[i]
		if _, seen := out[user]; seen {
			continue // named twice
		}
		for _, n := range nodes {
			if slices.Contains(live, n) {
				out[user] = append(out[user], n)
			}
		}
		sort.Strings(out[user])
	}
	return nil
}
