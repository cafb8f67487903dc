package cluster

import "github.com/redis/go-redis/v9"

// loopPoolSize is the connection pool of a node's loop client: the stream
// reader holds one in XREAD BLOCK; the heartbeat, the dead-node watch, the
// registry writer and the timer poller take one each for a call at a
// time, and a cleanup or a trim one more.
const loopPoolSize = 8

// LoopClient returns a client of its own for a node's background loops
// (heartbeat, dead-node watch, registry writer, stream reader, timer
// poller), on the same Redis as c, and what closes it. On one shared pool
// the loops' calls wait behind the operations' (an operation holds its
// connection for all the round trips of its WATCH/MULTI/EXEC): in a burst
// of connections or operations a heartbeat then waited past op_timeout
// and the node's key expired, so that the other nodes took it for dead.
// Its own pool keeps the loops' calls from queueing behind the ops'.
//
// c must be a *redis.Client (a standalone Redis, or Sentinel's failover
// client: the copy dials through the same failover, and drops a
// connection that answers READONLY after a failover); for any other
// client the loops share c, and close does nothing.
func LoopClient(c redis.UniversalClient) (loops redis.UniversalClient, close func() error) {
	rc, ok := c.(*redis.Client)
	if !ok {
		return c, func() error { return nil }
	}
	opt := *rc.Options()
	if m := opt.MaintNotificationsConfig; m != nil {
		mc := *m
		opt.MaintNotificationsConfig = &mc
	}
	opt.PoolSize = loopPoolSize
	opt.PipelinePoolSize = -1 // the loops' pipelines on the same few connections
	opt.MinIdleConns, opt.MaxIdleConns, opt.MaxActiveConns = 0, 0, 0
	lc := redis.NewClient(&opt)
	return lc, lc.Close
}
