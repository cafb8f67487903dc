package cluster

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Params are what every primitive of the package takes.
type Params struct {
	Client redis.UniversalClient // one Redis (standalone or behind Sentinel; not Redis Cluster: scripts name keys they compute)
	Prefix string                // prefix of every key, so that clusters (or tests) can share one Redis
	NodeID string                // this node's ID, unique in the cluster
	Logger *slog.Logger          // nil: slog.Default()
	Config Config
}

func (p *Params) check(what string) error {
	if p.Client == nil {
		return fmt.Errorf("%w: %s: no Redis client", ErrConfig, what)
	}
	if p.NodeID == "" || strings.ContainsAny(p.NodeID, " \r\n") {
		return fmt.Errorf("%w: %s: node ID %q is empty or has spaces", ErrConfig, what, p.NodeID)
	}
	if err := p.Config.Validate(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	p.Logger = p.Logger.With("component", what, "node", p.NodeID)
	return nil
}

// Keyspace names the keys of one cluster (all under its prefix) and queues
// the writes that callers put in their own MULTI/EXEC: Append, Schedule,
// Cancel, Done. It is a small value, safe to copy and to share.
type Keyspace struct {
	prefix string
	maxLen int64
}

// NewKeyspace returns the keyspace of prefix; cfg gives StreamMaxLen.
func NewKeyspace(prefix string, cfg Config) Keyspace {
	return Keyspace{prefix: prefix, maxLen: cfg.StreamMaxLen}
}

// The keys, as in signaling/CLUSTER-DESIGN.md "Keys".

// NodeKey is `node:<id>`, the node's expiring registration.
func (k Keyspace) NodeKey(id string) string { return k.prefix + "node:" + id }

// ConnKey is `conn:<user>`, the hash node → connections of the user there.
// A transaction that decides on where a user is connected WATCHes it.
func (k Keyspace) ConnKey(user string) string { return k.prefix + "conn:" + user }

// StreamKey is `ev:<node>`, the node's event stream.
func (k Keyspace) StreamKey(node string) string { return k.prefix + "ev:" + node }

// DeadlinesKey is the `deadlines` sorted set.
func (k Keyspace) DeadlinesKey() string { return k.prefix + "deadlines" }

// NodesKey is the `nodes` sorted set: node → last heartbeat.
func (k Keyspace) NodesKey() string { return k.nodes() }

func (k Keyspace) nodes() string                { return k.prefix + "nodes" }
func (k Keyspace) nodePrefix() string           { return k.prefix + "node:" }
func (k Keyspace) connPrefix() string           { return k.prefix + "conn:" }
func (k Keyspace) cleanup(id string) string     { return k.prefix + "cleanup:" + id }
func (k Keyspace) nodeUsers(node string) string { return k.prefix + "nodeusers:" + node }
func (k Keyspace) streamPos(node string) string { return k.prefix + "evpos:" + node }

// streamSeq is `evseq:<node>`, the counter an older build numbered the
// stream's entries with (Append numbers them in their IDs now); a dead
// node's cleanup deletes it.
func (k Keyspace) streamSeq(node string) string { return k.prefix + "evseq:" + node }

// redisPipe is the pipeline type go-redis hands to Pipelined.
type redisPipe = redis.Pipeliner
