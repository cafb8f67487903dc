package cluster

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// LiveNodes lists the nodes of keyspace k whose `node:<id>` key is there
// (up to 1000, most recent heartbeat first), with their Info, in one round
// trip: what Membership.LiveNodes reads, for a caller that holds no
// Membership (rooms/cluster's placement).
func (k Keyspace) LiveNodes(ctx context.Context, c redis.UniversalClient) ([]Info, error) {
	return liveNodes(ctx, c, k)
}

// OutageGrace is how long after its own last failed Redis call a node
// declares no other node dead (node_ttl + 1 s): Membership's rule, for
// the other watches of node liveness.
func (c Config) OutageGrace() time.Duration { return c.outageGrace() }
