package cluster

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each is one atomic step; they read the Redis server's
// clock (TIME) so that every node agrees on "now" and on expiries. They
// name keys they compute from a prefix, so they need one Redis (standalone
// or Sentinel), not Redis Cluster.

// heartbeatScript refreshes the node key and its `nodes` score. It returns
// {1 if the key was there, 1 if a cleanup claim on this node was voided, 1
// if the node was not in `nodes`, now in ms}.
// KEYS: node:<id>, nodes, cleanup:<id>. ARGV: value, ttl ms, id.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET')
local added = redis.call('ZADD', KEYS[2], now, ARGV[3])
local voided = 0
if not old then voided = redis.call('DEL', KEYS[3]) end
return {old and 1 or 0, voided, added, now}
`)

// deadNodesScript lists up to ARGV[3] nodes of `nodes` whose last
// heartbeat is older than the TTL and whose node key is gone.
// KEYS: nodes. ARGV: node key prefix, ttl ms, limit.
var deadNodesScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])), 'LIMIT', 0, tonumber(ARGV[3]))
local dead = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then table.insert(dead, id) end
end
return dead
`)

// liveNodesScript returns {id, last heartbeat ms, value, ...} for the
// newest ARGV[2] members of `nodes` whose key is there.
// KEYS: nodes. ARGV: node key prefix, limit.
var liveNodesScript = redis.NewScript(`
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local v = redis.call('GET', ARGV[1] .. ids[i])
  if v then
    table.insert(out, ids[i]); table.insert(out, ids[i + 1]); table.insert(out, v)
  end
end
return out
`)

// claimCleanupScript takes (or renews, for the same owner) the cleanup
// claim of a dead node; it fails (0) if another survivor holds it or the
// node is back. KEYS: cleanup:<id>, node:<id>. ARGV: owner, lease ms.
var claimCleanupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// dropUsersScript removes up to ARGV[3] users from a dead node's
// `nodeusers:` set and the node from their `conn:` hashes; it returns how
// many, or -1 if the node is back (its key exists).
// KEYS: node:<id>, nodeusers:<id>. ARGV: conn key prefix, id, count.
var dropUsersScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local users = redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))
for _, u in ipairs(users) do redis.call('HDEL', ARGV[1] .. u, ARGV[2]) end
return #users
`)

// trimDeadScript deletes a dead node's stream entries up to ARGV[1]
// (exclusive MINID), or returns -1 if the node is back.
// KEYS: node:<id>, ev:<id>. ARGV: min ID to keep.
var trimDeadScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
return redis.call('XTRIM', KEYS[2], 'MINID', ARGV[1])
`)

// finishCleanupScript ends a dead node's cleanup: 1 if its keys are gone,
// 0 if its stream got entries meanwhile (hand them over first), -1 if the
// node is back. KEYS: node:<id>, ev:<id>, evpos:<id>, evseq:<id>,
// nodeusers:<id>, nodes. ARGV: id.
var finishCleanupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('XLEN', KEYS[2]) > 0 or redis.call('SCARD', KEYS[5]) > 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
return 1
`)

// claimDueScript claims up to ARGV[1] due deadlines: it re-scores them to
// now + lease and returns {lease end ms, {member, score, ...}}.
// KEYS: deadlines. ARGV: limit, lease ms.
var claimDueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local lease = now + tonumber(ARGV[2])
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], lease, due[i]) end
return {lease, due}
`)

// doneSrc removes a fired deadline if it still carries its claim (it was
// neither re-scheduled nor claimed again since). KEYS: deadlines. ARGV:
// member, claim (lease end ms). EVAL, not EVALSHA: it may be queued in a
// MULTI.
const doneSrc = `local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0`

var doneScript = redis.NewScript(doneSrc)
