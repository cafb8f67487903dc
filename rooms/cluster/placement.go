package roomcluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// ownerScript returns the room's media node if it is alive, else "".
// KEYS: room:<id>. ARGV: node key prefix.
var ownerScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
return ''
`)

// claimScript is the media node's claim of a room before it creates it or
// lets a member in, with the rooms-per-user check and the entry of the
// user's room, in one step. An owner that is alive and not this node is
// kept: {1, owner} ("moved"). The user's rooms elsewhere whose node is dead
// are dropped, the others counted: at the limit {2, count}. Otherwise the
// lease is this node's and the user's entry written: {0, ""}. The third
// value is 1 when a running call holds the room ID (calls:room:<id>).
// KEYS: room:<id>, rooms:u:<user>, calls:room:<id>.
// ARGV: node key prefix, self, lease ms, room ID, max rooms per user (0: none).
var claimScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
  return {1, owner, 0}
end
local call = redis.call('EXISTS', KEYS[3])
local lim = tonumber(ARGV[5])
if lim > 0 then
  local h = redis.call('HGETALL', KEYS[2])
  local n = 0
  for i = 1, #h, 2 do
    if h[i] ~= ARGV[4] then
      if h[i + 1] == ARGV[2] or redis.call('EXISTS', ARGV[1] .. h[i + 1]) == 1 then
        n = n + 1
      else
        redis.call('HDEL', KEYS[2], h[i])
      end
    end
  end
  if n >= lim then return {2, tostring(n), call} end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
return {0, '', call}
`)

// renewScript refreshes this node's lease on a room it hosts: 1 when the
// lease is (again) this node's, 0 when another live node owns the room
// (ownership lost). A lease that expired or whose owner is dead is taken
// again. KEYS: room:<id>. ARGV: node key prefix, self, lease ms.
var renewScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// releaseScript deletes a room's lease if it is still self's.
// KEYS: room:<id>. ARGV: self.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// unaddScript deletes a user's entry of a room if it names self.
// KEYS: rooms:u:<user>. ARGV: room ID, self.
var unaddScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`)

// lease is the life of a room:<id> key: 2 x node_ttl, refreshed every
// node_ttl/3.
func (r *Relay) lease() int64 { return 2 * r.cfg.NodeTTL.Milliseconds() }

// reqCtx bounds a Redis call made for a request: by the request's own
// deadline, else by RequestTimeout (op_timeout is for the background
// loops; a request may wait as long as its client does).
func (r *Relay) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.p.RequestTimeout)
}

// owner returns the room's media node if it is alive, else "".
func (r *Relay) owner(ctx context.Context, roomID string) (string, error) {
	ctx, cancel := r.reqCtx(ctx)
	defer cancel()
	s, err := ownerScript.Run(ctx, r.rdb, []string{r.k.room(roomID)}, r.k.nodePrefix()).Text()
	r.failed(err)
	return s, err
}

// place returns the node an enterRoom of roomID goes to: its live media
// node, else the live node with the fewest room members. Ties (the loads
// are refreshed once a heartbeat) are broken by rendezvous hashing of the
// room ID and the node ID: concurrent first entries through several nodes
// agree on the node, and new rooms spread over the nodes.
func (r *Relay) place(ctx context.Context, roomID string) (string, error) {
	if n, err := r.owner(ctx, roomID); err != nil || n != "" {
		return n, err
	}
	ctx, cancel := r.reqCtx(ctx)
	defer cancel()
	nodes, err := r.k.keyspace(r.cfg).LiveNodes(ctx, r.rdb)
	r.failed(err)
	if err != nil {
		return "", err
	}
	best, load, score := r.self, r.Load()["members"], rendezvous(roomID, r.self)
	for _, n := range nodes {
		if n.ID == r.self {
			continue
		}
		l, sc := n.Load["members"], rendezvous(roomID, n.ID)
		if l < load || (l == load && sc > score) {
			best, load, score = n.ID, l, sc
		}
	}
	return best, nil
}

// rendezvous is node's score for roomID (highest random weight).
func rendezvous(roomID, node string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(roomID))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(node))
	return h.Sum64()
}

// claimResult is what claimScript decided.
type claimResult struct {
	moved    string // another live node owns the room
	rooms    int    // > 0: at the rooms-per-user limit, with this many
	callRoom bool   // a running call holds the room ID
}

// claim runs claimScript for user entering roomID here.
func (r *Relay) claim(ctx context.Context, roomID, user string) (claimResult, error) {
	ctx, cancel := r.reqCtx(ctx)
	defer cancel()
	res, err := claimScript.Run(ctx, r.rdb, []string{r.k.room(roomID), r.k.userRooms(user), r.k.callRoom(roomID)},
		r.k.nodePrefix(), r.self, r.lease(), roomID, r.p.MaxRoomsPerUser).Slice()
	r.failed(err)
	if err != nil {
		return claimResult{}, err
	}
	if len(res) != 3 {
		return claimResult{}, fmt.Errorf("claim script returned %v", res)
	}
	st, _ := res[0].(int64)
	val, _ := res[1].(string)
	call, _ := res[2].(int64)
	out := claimResult{callRoom: call == 1}
	switch st {
	case 1:
		out.moved = val
	case 2:
		out.rooms, _ = strconv.Atoi(val)
		if out.rooms == 0 {
			out.rooms = 1
		}
	}
	return out, nil
}

// unadd deletes user's rooms:u entry of roomID if it is this node's.
func (r *Relay) unadd(user, roomID string) {
	r.mu.Lock()
	set := r.added[user]
	if !set[roomID] {
		r.mu.Unlock()
		return // not written by this node (or removed already)
	}
	delete(set, roomID)
	if len(set) == 0 {
		delete(r.added, user)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpTimeout)
	defer cancel()
	err := unaddScript.Run(ctx, r.rdb, []string{r.k.userRooms(user)}, roomID, r.self).Err()
	if err != nil && !errors.Is(err, context.Canceled) {
		r.failed(err)
		r.log.Warn("rooms-per-user entry not removed (retried by the reconcile)", "user", user, "room", roomID, "err", err)
		r.mu.Lock()
		r.addedLocked(user, roomID)
		r.mu.Unlock()
	}
}

func (r *Relay) addedLocked(user, roomID string) {
	set := r.added[user]
	if set == nil {
		set = map[string]bool{}
		r.added[user] = set
	}
	set[roomID] = true
}
