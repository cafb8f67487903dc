package signaling

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Cluster mode: the read-only views (group member lists, joined groups,
// group membership, connection counts, user status) read Redis, one round
// trip each; presence subscriptions live in Redis, and status changes go
// to the subscribers' nodes as events of the operation that decided them
// (redisTx.statusEvents), in the same EXEC as the change.
//
// Keys (under the prefix, besides RedisStore's and tx_redis.go's):
// sig:subs:<user> SET of the users they subscribed to; sig:watch:<user>
// SET of their subscribers; sig:on:<user> "1" while the user's status was
// last announced online (see clusterNode.announce).
//
// A subscription ends when it is cancelled or when its user's last
// connection in the cluster closes (the announcement of their offline
// status drops it), as on one node. Known gap: the users of a node that
// dies get no offline announcement (their status reads offline at once;
// their subscribers get no event) and keep their subscriptions until they
// connect again (their first connection then starts afresh).

func (k redisKeys) subs(user string) string      { return k.p + "sig:subs:" + user }
func (k redisKeys) watchers(user string) string  { return k.p + "sig:watch:" + user }
func (k redisKeys) announced(user string) string { return k.p + "sig:on:" + user }

// viewTimeout bounds a read-only view that gets no ctx (IsGroupMember,
// Online).
const viewTimeout = 5 * time.Second

// joinedScript lists a user's groups: for each, its ID, name, owner, join
// option, the user's packed member value and the number of members (the
// hash's fields but the group's own four: RedisStore's layout).
// KEYS: sig:ugrp:<user>. ARGV: group key prefix, the user's member field.
var joinedScript = redis.NewScript(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. id
  local h = redis.call('HMGET', k, '` + rfName + `', '` + rfOwner + `', '` + rfJoin + `', '` + rfCreated + `', ARGV[2])
  if h[5] then
    local n = redis.call('HLEN', k)
    for i = 1, 4 do
      if h[i] then n = n - 1 end
    end
    table.insert(out, {id, h[1] or '', h[2] or '', h[3] or '', h[5], n})
  end
end
return out
`)

// watchersScript lists the subscribers of a user who may see their status
// (share a group with them). KEYS: sig:watch:<user>, sig:ugrp:<user>.
// ARGV: user groups key prefix, user.
var watchersScript = redis.NewScript(`
local out = {}
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if w ~= ARGV[2] and redis.call('SINTERCARD', 2, ARGV[1] .. w, KEYS[2], 'LIMIT', 1) == 1 then
    table.insert(out, w)
  end
end
return out
`)

// viewErr maps a view's failure: Redis failing is ErrStoreUnavailable.
func (c *clusterNode) viewErr(what string, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return err
	}
	c.e.log.Error("cluster read failed", "what", what, "err", err)
	return protocol.ErrStoreUnavailable
}

// readGroup reads group id (nil: none).
func (c *clusterNode) readGroup(ctx context.Context, id string) (*group, error) {
	h, err := c.rdb.HGetAll(ctx, c.k.grp(id)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, nil
	}
	r, err := decodeGroup(id, h)
	if err != nil {
		return nil, dataErr("group %q: %w", id, err)
	}
	return groupFromRecord(r), nil
}

// memberList is GetGroupMemberList's group, read from Redis: one round trip.
func (c *clusterNode) memberList(ctx context.Context, groupID, user string) (*group, error) {
	if groupID == "" {
		return nil, protocol.ErrInvalidParameter.WithMessage("groupID is required")
	}
	g, err := c.readGroup(ctx, groupID)
	if err != nil {
		return nil, c.viewErr("group member list", err)
	}
	if g == nil {
		return nil, protocol.ErrGroupNotFound.WithMessage("group %q not found", groupID)
	}
	if !g.has(user) {
		return nil, protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", groupID)
	}
	return g, nil
}

// joinedGroups is GetJoinedGroupList's answer, read from Redis: one round
// trip (a script over the user's group index).
func (c *clusterNode) joinedGroups(ctx context.Context, user string) (protocol.GroupListResult, error) {
	res := protocol.GroupListResult{GroupList: []protocol.GroupInfo{}}
	v, err := joinedScript.Run(ctx, c.rdb, []string{c.k.userGroups(user)}, c.k.grp(""), rfMember+user).Slice()
	if err != nil {
		return res, c.viewErr("joined group list", err)
	}
	for _, row := range v {
		f, ok := row.([]any)
		if !ok || len(f) != 6 {
			return res, c.viewErr("joined group list", dataErr("bad row %v", row))
		}
		id, _ := f[0].(string)
		name, _ := f[1].(string)
		owner, _ := f[2].(string)
		join, _ := f[3].(string)
		packed, _ := f[4].(string)
		n, _ := f[5].(int64)
		m, err := unpackMember(user, packed)
		if err != nil {
			return res, c.viewErr("joined group list", dataErr("group %q, member %q: %w", id, user, err))
		}
		res.GroupList = append(res.GroupList, protocol.GroupInfo{GroupID: id, Name: name, Owner: owner,
			JoinOption: protocol.JoinOption(join), MemberCount: int(n), Role: m.rec.Role})
	}
	slices.SortFunc(res.GroupList, func(x, y protocol.GroupInfo) int { return compareStrings(x.GroupID, y.GroupID) })
	return res, nil
}

// isGroupMember is IsGroupMember, read from Redis (false if it cannot be read).
func (c *clusterNode) isGroupMember(groupID, user string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), viewTimeout)
	defer cancel()
	ok, err := c.rdb.HExists(ctx, c.k.grp(groupID), rfMember+user).Result()
	if err != nil {
		c.e.log.Warn("group membership not read", "group", groupID, "user", user, "err", err)
		return false
	}
	return ok
}

// online is Online: the user's connections on the nodes the cluster
// counts (those QueueNodes finds), one round trip; on a Redis failure,
// those on this node.
func (c *clusterNode) online(user string) int {
	ctx, cancel := context.WithTimeout(context.Background(), viewTimeout)
	defer cancel()
	var nodesCmd *cluster.NodesQuery
	var counts *redis.MapStringStringCmd
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		nodesCmd = c.ks.QueueNodes(ctx, p, []string{user})
		counts = p.HGetAll(ctx, c.ks.ConnKey(user))
		return nil
	})
	nodes := map[string][]string{}
	if err == nil {
		err = parseNodesCmd(nodesCmd, []string{user}, nodes)
	}
	if err != nil {
		c.e.log.Warn("connection count not read; counting this node's", "user", user, "err", err)
		return c.reg.Local(user)
	}
	n := 0
	for _, node := range nodes[user] {
		k, _ := strconv.Atoi(counts.Val()[node])
		n += k
	}
	return n
}

// statusReads are the reads of users' statuses as viewer sees them,
// queued in one pipeline.
type statusReads struct {
	viewer string
	users  []string
	nodes  *cluster.NodesQuery
	custom *redis.SliceCmd
	shared []*redis.IntCmd // nil for the viewer themselves
}

func (c *clusterNode) queueStatus(ctx context.Context, p redis.Pipeliner, viewer string, users []string) *statusReads {
	r := &statusReads{viewer: viewer, users: users, shared: make([]*redis.IntCmd, len(users))}
	r.nodes = c.ks.QueueNodes(ctx, p, users)
	r.custom = p.HMGet(ctx, c.k.status(), users...)
	for i, u := range users {
		if u != viewer {
			r.shared[i] = p.SInterCard(ctx, 1, c.k.userGroups(viewer), c.k.userGroups(u))
		}
	}
	return r
}

// visible reports whether viewer may see the i-th user's status.
func (r *statusReads) visible(i int) bool { return r.shared[i] == nil || r.shared[i].Val() > 0 }

func (r *statusReads) result() (protocol.UserStatusResult, error) {
	nodes := map[string][]string{}
	if err := parseNodesCmd(r.nodes, r.users, nodes); err != nil {
		return protocol.UserStatusResult{}, err
	}
	out := protocol.UserStatusResult{StatusList: make([]protocol.UserStatus, 0, len(r.users))}
	custom := r.custom.Val()
	for i, u := range r.users {
		if !r.visible(i) {
			out.StatusList = append(out.StatusList, protocol.UserStatus{UserID: u, StatusType: protocol.StatusUnknown})
			continue
		}
		text, _ := custom[i].(string)
		out.StatusList = append(out.StatusList, userStatus(u, len(nodes[u]) > 0, text))
	}
	return out, nil
}

func userStatus(user string, online bool, custom string) protocol.UserStatus {
	st := protocol.UserStatus{UserID: user, StatusType: protocol.StatusOffline, CustomStatus: custom}
	if online {
		st.StatusType = protocol.StatusOnline
	}
	return st
}

// statusList is GetUserStatus's answer, read from Redis: one round trip.
func (c *clusterNode) statusList(ctx context.Context, viewer string, users []string) (protocol.UserStatusResult, error) {
	var r *statusReads
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		r = c.queueStatus(ctx, p, viewer, users)
		return nil
	})
	if err == nil {
		var res protocol.UserStatusResult
		if res, err = r.result(); err == nil {
			return res, nil
		}
	}
	return protocol.UserStatusResult{}, c.viewErr("user status", err)
}

// subscribe is SubscribeUserStatus in Redis: the checks (every user
// visible, the subscription limit) and the subscriptions in one optimistic
// transaction on the subscriber's set, with the statuses read in its first
// round trip.
func (c *clusterNode) subscribe(ctx context.Context, me string, users []string) (protocol.UserStatusResult, error) {
	var res protocol.UserStatusResult
	for range redisMaxTxAttempts {
		err := c.rdb.Watch(ctx, func(rtx *redis.Tx) error {
			var r *statusReads
			var mine *redis.BoolSliceCmd
			var n *redis.IntCmd
			if _, err := rtx.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Do(ctx, "watch", c.k.subs(me))
				mine = p.SMIsMember(ctx, c.k.subs(me), stringsToAny(users)...)
				n = p.SCard(ctx, c.k.subs(me))
				r = c.queueStatus(ctx, p, me, users)
				return nil
			}); err != nil {
				unwatch(ctx, rtx)
				return err
			}
			added := 0
			for i, u := range users {
				if !r.visible(i) {
					unwatch(ctx, rtx)
					return protocol.ErrStatusNotVisible.WithMessage("you may not see the status of %s: you share no group", u)
				}
				if !mine.Val()[i] {
					added++
				}
			}
			if lim := c.e.cfg.Limits.MaxStatusSubscriptions; lim > 0 && int(n.Val())+added > lim {
				unwatch(ctx, rtx)
				return protocol.ErrTooManyStatusSubs.WithMessage(
					"you would have %d status subscriptions; the limit is %d", int(n.Val())+added, lim)
			}
			var err error
			if res, err = r.result(); err != nil {
				unwatch(ctx, rtx)
				return err
			}
			_, err = rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.SAdd(ctx, c.k.subs(me), stringsToAny(users)...)
				for _, u := range users {
					p.SAdd(ctx, c.k.watchers(u), me)
				}
				return nil
			})
			return err
		})
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return protocol.UserStatusResult{}, c.viewErr("status subscription", err)
		}
		return res, nil
	}
	return protocol.UserStatusResult{}, protocol.ErrStoreUnavailable
}

// unsubscribe is UnsubscribeUserStatus in Redis (users empty: all).
func (c *clusterNode) unsubscribe(ctx context.Context, me string, users []string) error {
	if len(users) > 0 {
		_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.SRem(ctx, c.k.subs(me), stringsToAny(users)...)
			for _, u := range users {
				p.SRem(ctx, c.k.watchers(u), me)
			}
			return nil
		})
		if err != nil {
			return c.viewErr("status unsubscription", err)
		}
		return nil
	}
	for range redisMaxTxAttempts {
		err := c.rdb.Watch(ctx, func(rtx *redis.Tx) error {
			all, err := rtx.SMembers(ctx, c.k.subs(me)).Result()
			if err != nil {
				unwatch(ctx, rtx)
				return err
			}
			_, err = rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				queueDropSubs(ctx, p, c.k, me, all)
				return nil
			})
			return err
		}, c.k.subs(me))
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return c.viewErr("status unsubscription", err)
		}
		return nil
	}
	return protocol.ErrStoreUnavailable
}

// queueDropSubs queues the removal of every subscription of me (subs).
func queueDropSubs(ctx context.Context, p redis.Pipeliner, k redisKeys, me string, subs []string) {
	for _, u := range subs {
		p.SRem(ctx, k.watchers(u), me)
	}
	p.Del(ctx, k.subs(me))
}

// announce decides whether user's status changed for their subscribers
// after this node's connections of theirs changed (first: their first
// connection here opened; else: their last here closed), and if so sends
// the onUserStatusChanged and records the status announced, in one
// transaction (WATCHing the user's connections and the announced status):
// of two nodes racing, one announces. Going offline, or online with no
// connection elsewhere (a fresh start: their subscriptions of before, if
// any, outlived a dead node), drops the user's subscriptions. The
// presence observers (PresenceObserver) of the node that announces hear
// it.
func (c *clusterNode) announce(ctx context.Context, user string, first bool) {
	ctx, cancel := context.WithTimeout(ctx, viewTimeout)
	defer cancel()
	t, err := c.do(ctx, txHint{users: []string{user}}, func(tx tx) error {
		t := tx.(*redisTx)
		on := t.online(user)
		elsewhere := slices.DeleteFunc(slices.Clone(t.nodes[user]), func(n string) bool { return n == c.node })
		fresh := first && on && len(elsewhere) == 0
		was, subs := t.readAnnounced(user, first)
		if t.err != nil || (on == was && !fresh) {
			return nil
		}
		t.extra = append(t.extra, func(ctx context.Context, p redis.Pipeliner) {
			if on {
				p.Set(ctx, c.k.announced(user), "1", 0)
			} else {
				p.Del(ctx, c.k.announced(user))
			}
			if !on || fresh {
				queueDropSubs(ctx, p, c.k, user, subs)
			}
		})
		t.announce = append(t.announce, user)
		return nil
	}, nil)
	if err != nil {
		c.e.log.Warn("status change not announced", "user", user, "err", err)
		return
	}
	if t != nil && len(t.announce) > 0 {
		// The presence observers hear the cluster's transitions, once.
		c.e.mu.Lock()
		c.e.notifyPresenceLocked(user, t.online(user))
		c.e.mu.Unlock()
	}
}

// readAnnounced reads (WATCHing them) whether user's status was last
// announced online, and their subscriptions; with custom, their custom
// status too (not WATCHed, as customStatus reads it), which the
// announcement of a user's first connection on a node usually needs:
// no round trip of its own then.
func (t *redisTx) readAnnounced(user string, custom bool) (bool, []string) {
	k := t.c.k
	var on *redis.IntCmd
	var subs *redis.StringSliceCmd
	var status *redis.StringCmd
	if _, read := t.status[user]; read {
		custom = false
	}
	if !t.read([]string{k.announced(user), k.subs(user)}, func(p redis.Pipeliner) {
		on = p.Exists(t.ctx, k.announced(user))
		subs = p.SMembers(t.ctx, k.subs(user))
		if custom {
			status = p.HGet(t.ctx, k.status(), user)
		}
	}) {
		return false, nil
	}
	if status != nil {
		put(&t.status, user, status.Val()) // "" when none (redis.Nil)
	}
	return on.Val() == 1, subs.Val()
}

// statusEvents turns the status changes the decision queued into events
// to the subscribers who may see the user (and, for statusChanged, to the
// user's own connections but the actor's), routed with the others.
func (t *redisTx) statusEvents() {
	type change struct {
		user string
		self bool
		skip protocol.Session
	}
	var chs []change
	for _, s := range t.statCh {
		chs = append(chs, change{s.user, true, s.skip})
	}
	for _, u := range t.announce {
		chs = append(chs, change{user: u})
	}
	for _, ch := range chs {
		if t.err != nil {
			return
		}
		custom, set := "", false
		for _, m := range t.muts {
			if s, ok := m.(SetCustomStatus); ok && s.UserID == ch.user {
				custom, set = s.Text, true
			}
		}
		if !set {
			custom = t.customStatus(ch.user)
		}
		on := t.online(ch.user)
		users, err := runScript(t.ctx, t.conn, watchersScript, []string{t.c.k.watchers(ch.user), t.c.k.userGroups(ch.user)},
			t.c.k.userGroups(""), ch.user).StringSlice()
		t.rounds++
		if err != nil && !errors.Is(err, redis.Nil) {
			t.err = fmt.Errorf("status subscribers of %q: %w", ch.user, err)
			return
		}
		if ch.self {
			users = append(users, ch.user)
		}
		if len(users) == 0 {
			continue
		}
		t.evs = append(t.evs, &outgoing{name: protocol.EvUserStatusChanged,
			data:  protocol.UserStatusResult{StatusList: []protocol.UserStatus{userStatus(ch.user, on, custom)}},
			users: users, except: ch.skip})
	}
}

// A ClusterGate lets the layer above the engine (calls) look at its own
// state of an invitation before an answer or a cancel is decided, on the
// op's first read instead of a round trip of its own: Key (a full Redis
// key) is read with GET, not WATCHed, in the pipeline that WATCHes and
// reads the invitation, and Check runs on its value ("" when absent)
// before each attempt's decision, with the op's connection (its WATCH
// armed) for any further read; a read there must not WATCH or write (a
// look, as a read-only view is). An error from Check ends the op with it
// (a protocol error as it is, any other as ErrStoreUnavailable); nothing
// is written. Cluster mode only: standalone, the gated ops are the plain
// ones (Key unread, Check not called).
type ClusterGate struct {
	Key   string
	Check func(ctx context.Context, val string, conn ClusterConn) error
}

// ClusterConn is an op's connection as a ClusterGate's Check reads on it.
type ClusterConn interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// AnswerGated is Accept or Reject (action) behind g.
func (e *Engine) AnswerGated(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, action Action, g *ClusterGate) error {
	if e.cl == nil || g == nil {
		return e.answer(ctx, a, args, action)
	}
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	return e.doGated(ctx, args.InviteID, g, func(t tx) error { return e.rules.answer(t, a, args, action) })
}

// CancelGated is Cancel behind g.
func (e *Engine) CancelGated(ctx context.Context, a protocol.Actor, args protocol.InviteIDArgs, g *ClusterGate) error {
	if e.cl == nil || g == nil {
		return e.Cancel(ctx, a, args)
	}
	if err := e.checkData(args.Data); err != nil {
		return err
	}
	return e.doGated(ctx, args.InviteID, g, func(t tx) error { return e.rules.cancel(t, a, args) })
}

// doGated runs decide on invitation id behind g (cluster mode).
func (e *Engine) doGated(ctx context.Context, id string, g *ClusterGate, decide func(tx) error) error {
	t, err := e.cl.doPeek(ctx, txHint{invs: []string{id}}, g.Key, func(t tx) error {
		if err := g.check(t); err != nil {
			return err
		}
		return decide(t)
	}, nil)
	if err == nil {
		e.cl.after(t)
	}
	return err
}

// check runs g.Check on the value its key had in t's first read.
func (g *ClusterGate) check(t tx) error {
	rt, ok := t.(*redisTx)
	if !ok || rt.err != nil {
		return nil // the memory backend has no gate; a failed read fails the attempt
	}
	return g.Check(rt.ctx, rt.peekVal, rt.conn)
}
