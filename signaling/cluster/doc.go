// Package cluster holds the engine-independent primitives of cluster mode
// on Redis (signaling/CLUSTER-DESIGN.md): node membership, the connection registry,
// per-node event streams and deadlines. It imports no engine package, so
// that signaling, calls and rooms can all build on it.
//
// Every primitive takes Params (a redis.UniversalClient for one Redis,
// standalone or behind Sentinel, not Redis Cluster; a key prefix; this
// node's ID; a logger; a Config). Those with goroutines have Start and
// Close, and Close returns once their goroutines have. Writes that belong
// in a caller's own MULTI/EXEC (Append, Schedule, Cancel, Done) are
// methods of Keyspace and only queue commands in the caller's pipeline.
//
// Correctness comes from Redis's atomic steps (Lua scripts, MULTI), never
// from a node's memory, with one exception: a node is the authority on its
// own connections, which it writes to the registry.
//
// # Keys (under Params.Prefix)
//
//	node:<id>        STRING, JSON Info, expires after node_ttl; refreshed every node_ttl/3
//	nodes            ZSET node ID → last heartbeat (ms, Redis's clock)
//	cleanup:<id>     STRING, the survivor that claimed a dead node's cleanup (expires after cleanup_lease)
//	conn:<user>      HASH node → number of the user's connections there
//	nodeusers:<id>   SET of the users with connections on the node
//	ev:<id>          STREAM of events for the node's users: ID StreamIDMs-<sequence - 1>, field p (payload)
//	evseq:<id>       STRING, an older build's sequence counter (fields s, p; IDs from Redis's clock); deleted with the stream
//	evpos:<id>       STRING "<entry ID> <sequence>", the last entry the node's reader handled
//	deadlines        ZSET deadline ID → deadline (ms), or end of a claim's lease
//
// # Membership and dead nodes
//
// Membership.Start writes node:<id> (with a TTL) and the nodes score in
// one script, then does so every node_ttl/3. Every node_ttl/3 each node
// also lists the members of nodes whose last heartbeat is older than
// node_ttl and whose key is gone: dead, noticed within node_ttl + one
// heartbeat of their last heartbeat. A survivor claims each one's cleanup
// (SET cleanup:<id>, only if unclaimed or claimed by itself, and only
// while node:<id> is absent), then in steps that each check, atomically,
// that the node did not come back: removes the node from its users'
// conn:<user> hashes, hands its unread stream entries to DeadEvents (in
// order, in batches) and trims them, calls NodeDead, and deletes its keys
// and its nodes entry. A claimer that dies mid-way is replaced after
// cleanup_lease; DeadEvents and NodeDead are therefore at least once.
//
// A node whose heartbeat finds its key gone (Redis lost the data, or the
// node was paused past node_ttl and declared dead) registers again, voids
// a pending cleanup claim on itself, and has its Registry write every
// local user again; so does the first heartbeat after Redis failed.
//
// After a Redis outage longer than node_ttl every node key has expired,
// and each node registers again only when its own client reaches Redis.
// So a node declares no other node dead within node_ttl + 1 s (go-redis
// dials again once a second after its dials kept failing) of its own last
// failed call of the heartbeat or the watch, nor of finding its own key
// expired (it was paused past node_ttl, or Redis was and every key
// expired at once: the others may be as alive as it is).
//
// Close order (reverse of Start): Poller, Reader, Registry, Membership.
// Registry.Close removes the node's conn entries; Membership.Close deletes
// node:<id> and does the node's own cleanup at once (its unread events go
// to DeadEvents) without calling NodeDead.
//
// # Connection registry
//
// Registry.Add and Remove count a user's connections on this node; one
// writer goroutine writes them to Redis as absolute values, in order,
// batched (one round trip per batch), retrying until Redis takes them.
// Registry.Nodes answers, for many users at once, which nodes hold their
// connections: one round trip (HKEYS of each user's entry and the members of
// `nodes`, pipelined, no script; QueueNodes queues it in a caller's). A node
// counts while it is in `nodes` (alive, or dead and not yet cleaned up:
// its cleanup hands over what was routed there), not only while its key
// lives: after an outage, events for a node's users go to its stream while
// it has not registered again, instead of to their outboxes.
//
// # Event streams
//
// Keyspace.Append queues, in the caller's MULTI, an entry on ev:<node>
// with the stream's next sequence number (so per-user order is commit
// order): a plain XADD with the ID StreamIDMs-*, whose second part Redis
// numbers 0, 1, 2... in the stream. Each node's Reader reads its stream with XREAD BLOCK from the
// last entry it handled, calls Handle for each entry in order, then trims
// the handled entries (XTRIM MINID) and records evpos:<node> in one
// MULTI. There is no pub/sub: a read that fails (Redis down, restarted) is
// retried from the same position, so nothing is lost or handled twice
// while the node lives. A stream holds at most stream_max_len entries:
// past it, Append drops the oldest (XADD MAXLEN =), and the Reader, which
// checks that sequence numbers follow each other, reports the number
// dropped to Lost before the next entry (and -1 when the sequence
// restarted: the stream was deleted or lost). A reader that finds nothing
// to read checks whether its stream was lost (its sequence below the
// reader's, and the recorded position gone with it): the new entries may
// have IDs below its position (the numbering restarts at 0), so it reads
// the stream from its start. A
// stream rolled back (a restart that lost the last writes of the
// append-only file) keeps a recorded position: the reader goes on after
// its own, handling nothing twice.
//
// # Deadlines
//
// Keyspace.Schedule and Cancel queue ZADD/ZREM on deadlines in the
// caller's MULTI. Each node's Poller, every timer_poll (at a random phase,
// so n nodes poll n times a period), claims up to timer_batch due members
// with one script that re-scores them to now + timer_lease, and calls
// Fire for each; Fire calls Poller.Done (or queues Keyspace.Done in its
// transaction), which removes the member only if it still carries that
// claim. Exactly one node fires a deadline while its lease runs; one whose
// claimer died without Done fires again from another node after
// timer_lease. Lateness is at most timer_poll plus Fire's queue, plus
// timer_lease after a crash.
//
// # Redis outages
//
// Every loop bounds each Redis call with op_timeout (the client should
// have ContextTimeoutEnabled, or go-redis ignores context deadlines), backs
// off from 50 ms doubling up to max_backoff, logs once when an outage
// starts and once when it ends, and resumes by itself.
//
// # Config (Config; keys of the config file's cluster section, e.g. cluster.node_ttl)
//
//	node_ttl        3s     life of node:<id>; heartbeat and dead-node look every node_ttl/3
//	cleanup_lease   10s    a survivor's claim on a dead node's cleanup
//	timer_poll      200ms  period of each node's look for due deadlines
//	timer_lease     5s     a claimed deadline fires again elsewhere after this without Done
//	timer_batch     100    most deadlines claimed by one poll (a full batch polls again at once)
//	stream_max_len  10000  most entries in a node's stream; past it the oldest are dropped (reported to Lost)
//	stream_batch    100    most entries read (and trimmed, or handed over) at once
//	op_timeout      1s     deadline of each Redis call of a loop (at most node_ttl/3)
//	max_backoff     1s     longest wait between a loop's attempts while Redis fails
//	op_lanes        2      shared transactions of signaling's operations at once (0: each alone)
//	op_gang_max     32     most operations in one shared transaction
//	op_gang_wait    50ms   a shared transaction goes on without a late operation after this
package cluster
