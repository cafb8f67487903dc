package cluster

import (
	"fmt"
	"time"
)

// Config holds the knobs of the cluster primitives. The mapstructure tags
// are their keys in the config file's cluster section (web/stack's
// ClusterConfig squashes this struct: `cluster.node_ttl`, ...), read when
// cluster mode is on (`cluster.redis.addr` set).
type Config struct {
	// NodeTTL is the life of a node's `node:<id>` key; the node refreshes
	// it every NodeTTL/3. A node that stops refreshing is dead once the key
	// expires, and noticed by the others within one more NodeTTL/3.
	NodeTTL time.Duration `mapstructure:"node_ttl"`
	// CleanupLease is how long a survivor's claim on a dead node's cleanup
	// lasts (`cleanup:<id>`, renewed between cleanup steps). If the claimer
	// dies mid-way, another survivor takes the cleanup over after it.
	CleanupLease time.Duration `mapstructure:"cleanup_lease"`
	// TimerPoll is the period at which each node looks for due deadlines.
	TimerPoll time.Duration `mapstructure:"timer_poll"`
	// TimerLease is how long a claimed deadline stays with its claimer
	// before another node fires it again (the claimer died or is stuck).
	TimerLease time.Duration `mapstructure:"timer_lease"`
	// TimerBatch is the most deadlines one poll claims (a full batch is
	// followed by another poll at once).
	TimerBatch int `mapstructure:"timer_batch"`
	// StreamMaxLen bounds a node's event stream `ev:<id>` (entries not yet
	// handled by its reader). Past it, appending drops the oldest entry
	// (XADD MAXLEN =), and the reader reports the gap to its Lost handler.
	StreamMaxLen int64 `mapstructure:"stream_max_len"`
	// StreamBatch is the most entries a reader takes (and then trims) at
	// once; also the batch in which a dead node's entries are handed over.
	StreamBatch int64 `mapstructure:"stream_batch"`
	// OpTimeout is the deadline of each Redis call that a loop
	// (heartbeat, detection, reader, poller, registry writer) makes.
	OpTimeout time.Duration `mapstructure:"op_timeout"`
	// MaxBackoff bounds the wait between a loop's attempts while Redis
	// fails (it doubles from 50 ms up to this).
	MaxBackoff time.Duration `mapstructure:"max_backoff"`
	// OpLanes is how many shared transactions a node runs at once
	// (signaling's operations: the first attempt of each joins one with
	// the others waiting, on one connection; see signaling/CLUSTER-DESIGN.md
	// "Shared transactions"); 0: every operation runs alone.
	OpLanes int `mapstructure:"op_lanes"`
	// OpGangMax is the most operations in one shared transaction.
	OpGangMax int `mapstructure:"op_gang_max"`
	// OpGangWait is how long a shared transaction waits for a late
	// operation's next step before it goes on without it (which then runs
	// again, alone).
	OpGangWait time.Duration `mapstructure:"op_gang_wait"`
}

// DefaultConfig returns the defaults documented in the package doc.
func DefaultConfig() Config {
	return Config{
		NodeTTL:      3 * time.Second,
		CleanupLease: 10 * time.Second,
		TimerPoll:    200 * time.Millisecond,
		TimerLease:   5 * time.Second,
		TimerBatch:   100,
		StreamMaxLen: 10000,
		StreamBatch:  100,
		OpTimeout:    time.Second,
		MaxBackoff:   time.Second,
		OpLanes:      2,
		OpGangMax:    32,
		OpGangWait:   50 * time.Millisecond,
	}
}

// Validate reports the first knob out of range.
func (c Config) Validate() error {
	switch {
	case c.NodeTTL < 30*time.Millisecond:
		return fmt.Errorf("%w: node_ttl %v is below 30ms", ErrConfig, c.NodeTTL)
	case c.OpTimeout <= 0 || c.OpTimeout > c.NodeTTL/3:
		return fmt.Errorf("%w: op_timeout %v must be positive and at most node_ttl/3 (%v), or a slow call outlives the node key", ErrConfig, c.OpTimeout, c.NodeTTL/3)
	case c.CleanupLease < c.OpTimeout:
		return fmt.Errorf("%w: cleanup_lease %v is below op_timeout %v", ErrConfig, c.CleanupLease, c.OpTimeout)
	case c.TimerPoll <= 0:
		return fmt.Errorf("%w: timer_poll %v must be positive", ErrConfig, c.TimerPoll)
	case c.TimerLease < c.TimerPoll:
		return fmt.Errorf("%w: timer_lease %v is below timer_poll %v", ErrConfig, c.TimerLease, c.TimerPoll)
	case c.TimerBatch < 1:
		return fmt.Errorf("%w: timer_batch %d must be at least 1", ErrConfig, c.TimerBatch)
	case c.StreamMaxLen < 1:
		return fmt.Errorf("%w: stream_max_len %d must be at least 1", ErrConfig, c.StreamMaxLen)
	case c.StreamBatch < 1:
		return fmt.Errorf("%w: stream_batch %d must be at least 1", ErrConfig, c.StreamBatch)
	case c.MaxBackoff < minBackoff:
		return fmt.Errorf("%w: max_backoff %v is below %v", ErrConfig, c.MaxBackoff, minBackoff)
	case c.OpLanes < 0:
		return fmt.Errorf("%w: op_lanes %d must not be negative (0: every operation alone)", ErrConfig, c.OpLanes)
	case c.OpLanes > 0 && c.OpGangMax < 1:
		return fmt.Errorf("%w: op_gang_max %d must be at least 1", ErrConfig, c.OpGangMax)
	case c.OpLanes > 0 && (c.OpGangWait <= 0 || c.OpGangWait > c.OpTimeout):
		return fmt.Errorf("%w: op_gang_wait %v must be positive and at most op_timeout (%v)", ErrConfig, c.OpGangWait, c.OpTimeout)
	}
	return nil
}

// heartbeat is the period of a node's heartbeat and of its look for dead
// nodes.
func (c Config) heartbeat() time.Duration { return c.NodeTTL / 3 }
