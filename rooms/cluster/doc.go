// Package roomcluster (import path rooms/cluster) makes rooms work across
// the nodes of a cluster (issue 13, signaling/CLUSTER-DESIGN.md "Rooms
// across nodes"): a room lives on one node, its media node, whose SFU
// carries its media; a client connected to any node enters it, signals and
// leaves through that node, its requests relayed over Redis to the media
// node and the replies and room events relayed back.
//
// Keys (under cluster.redis.key_prefix):
//
//	room:<id>       STRING the room's media node; a lease of 2 x node_ttl
//	                refreshed every node_ttl/3 by its owner while the room
//	                exists there, compare-and-deleted when it closes there
//	rooms:u:<user>  HASH   room ID → media node, for the rooms-per-user limit
//	                cluster-wide (entries whose node is dead do not count)
//	rm:<node>       STREAM the node's relay inbox: requests, replies, events
//	                and closed connections (MAXLEN ~ stream_max_len, expiring
//	                when nobody writes to it)
//
// Placement: the first enterRoom of a room reads room:<id>; a live owner
// takes the request, otherwise the live node with the fewest room members
// (each node's heartbeat publishes Load["members"]). The media node claims
// the room in one script (claimScript) before creating it: another live
// owner answers "moved" and the forwarding node sends the request there
// (at most maxHops times), so concurrent first entries from several nodes
// end in one room.
//
// Concurrency: Relay.mu guards the maps of the relay (connections, remote
// sessions, pending requests, owned rooms, senders); it is never held
// across Redis I/O nor across a call into rooms. Lock order: rooms'
// Manager.mu, then Relay.mu (a remote session's Deliver is called with
// the rooms lock held and takes Relay.mu briefly). Queues are bounded:
// each destination's sender (sendQueue entries), each remote session's
// requests (sessionQueue). Every goroutine ends at Close.
package roomcluster
