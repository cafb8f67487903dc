package signaling

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// The Redis backend of the tx (cluster mode, signaling/CLUSTER-DESIGN.md phase 2).
//
// An operation runs as one optimistic transaction on the node's Redis
// connection: the keys it reads are WATCHed in the pipeline that reads
// them (WATCH first), the decision (the same rules as the memory backend)
// runs on what was read, and what it queued is written in one MULTI/EXEC
// with the events' appends to the streams of the nodes holding the
// recipients' connections, the kept copies for known users with none, the
// kept-bytes counters and the invitation's deadline. If a watched key
// changed meanwhile, EXEC does nothing and the decision runs again from
// fresh reads (redisMaxTxAttempts times, then ErrStoreUnavailable).
//
// An operation names what it will read (txHint) so that its reads go in
// one pipeline: an invite on the ring path is two round trips (read, EXEC);
// an answer, cancel or modify three (the invitation, then its parties'
// connections, then EXEC). A read the hint did not name costs one more
// round trip: correct, slower. Keeping copies for offline users costs one
// more (their outbox Seqs are taken from a counter before the EXEC, gaps on
// a retry being harmless), and reading the kept bytes, when the quota must
// be checked, one more.
//
// Keys (under the prefix, besides RedisStore's): sig:ring:<user> ZSET of
// the invitations ringing for the user (pending, rung, not onlineUserOnly)
// by creation (µs); sig:sent:<user> SET of the live invitations the user
// sent; sig:obseq the outbox Seq counter; sig:kept HASH sender → bytes of
// the copies kept on their behalf, and keptTotalField → all of them;
// sig:replay:<user> STRING the token of the connection replaying the
// user's kept events (expires after node_ttl unless renewed; see
// clusterNode.missed); sig:kd:<event> SET of the users an event routed to
// a node was kept for after its delivery failed there (expires with the
// offline event TTL; see keepScript); sig:ugrp:<user> SET of the groups the
// user is a member of, sig:ugown:<user> SET of those they created or joined
// by themselves (groupCounts; both written with the group's mutations, in
// their EXEC). A group is RedisStore's sig:grp:<id>, WATCHed when read: two
// nodes racing on a group (a join and a dismissal, two joins past the
// member cap, a quit and a kick) conflict, and the loser decides again.
//
// Delivery: an event goes, in one stream entry per node, to the nodes
// holding its recipients' connections (not to the acting node when the
// acting connection is the only recipient there: route); the known
// recipients with none get
// it in their outbox, in the same EXEC. An entry of an event to keep
// (outgoing.keep) carries streamKeep: a node whose reader finds a
// recipient with no connection left there keeps it for them, and so does
// the survivor handing over a dead node's unread entries
// (clusterNode.deadEvents), unless another node it went to still holds a
// connection of the user (which delivers it); once per user.

// redisMaxTxAttempts bounds how often an operation's decision runs again
// after a watched key changed.
const redisMaxTxAttempts = 32

// keptTotalField is the field of sig:kept holding the total ("*" is not
// a valid user ID).
const keptTotalField = "*"

func (k redisKeys) ringing(user string) string { return k.p + "sig:ring:" + user }
func (k redisKeys) sent(user string) string    { return k.p + "sig:sent:" + user }
func (k redisKeys) obSeq() string              { return k.p + "sig:obseq" }
func (k redisKeys) kept() string               { return k.p + "sig:kept" }

// userGroups is the SET of the groups user is a member of; ownGroups the
// part of it they created or joined by themselves (groupCounts).
func (k redisKeys) userGroups(user string) string { return k.p + "sig:ugrp:" + user }
func (k redisKeys) ownGroups(user string) string  { return k.p + "sig:ugown:" + user }

// txHint names what an operation's decision will read, so that the Redis
// backend reads it in one pipeline. The memory backend ignores it.
type txHint struct {
	invs    []string // invitations (and then their parties' connections)
	users   []string // users whose connections and known flag are read
	sentBy  []string // liveSentBy
	ringing []string // ringingFor
	groups  []string // group, groupMember
	counts  []string // groupCounts
}

// redisTx is the Redis backend's tx for one attempt of one operation.
// Reads that fail set err (the tx's methods return no error): the attempt
// then fails with it, whatever the decision returned.
type redisTx struct {
	c    *clusterNode
	ctx  context.Context
	conn txConn // alone on a pooled connection, or in a lane (tx_conn.go)
	at   time.Time
	err  error

	watching bool // a WATCH is armed on rtx (UNWATCH unless EXEC follows)
	watched  map[string]bool
	invs     map[string]*InvitationRecord // read (nil: absent)
	nodes    map[string][]string          // users whose connections were read → live nodes
	isKnown  map[string]bool              // read with nodes
	ringN    map[string]int
	sentN    map[string]int
	keptRead bool
	keptBy   map[string]int64
	keptAll  int64
	status   map[string]string
	grps     map[string]*GroupRecord // read (nil: absent)
	own      map[string]int          // groupCounts read
	added    map[string]int
	peek     string           // a key read by GET, not WATCHed, with the first invitations' read (a ClusterGate's)
	peekCmd  *redis.StringCmd // its read
	peekVal  string           // and its value ("" when absent)

	muts     []Mutation
	evs      []*outgoing
	sender   string
	force    bool
	n        *InvitationNote
	statCh   []statusChange
	announce []string                                 // users whose status change clusterNode.announce decided
	extra    []func(context.Context, redis.Pipeliner) // queued in the EXEC too (a deadline's Done)
	rounds   int                                      // round trips of the attempt (tests count them)
}

var _ tx = (*redisTx)(nil)

func newRedisTx(c *clusterNode, ctx context.Context, conn txConn) *redisTx {
	// The maps are made on first use (put): an attempt fills a few.
	return &redisTx{c: c, ctx: ctx, conn: conn, at: c.e.clock.Now()}
}

// put sets (*m)[k] = v, making the map if it is nil.
func put[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}

// read runs, in one pipeline, WATCH of the keys not watched yet, then the
// reads queued by f. After a failure it does nothing.
func (t *redisTx) read(keys []string, f func(redis.Pipeliner)) bool {
	if t.err != nil {
		return false
	}
	var watch []string
	for _, k := range keys {
		if !t.watched[k] {
			put(&t.watched, k, true)
			watch = append(watch, k)
		}
	}
	cmds, err := t.conn.read(t.ctx, watch, f)
	t.rounds++
	if len(watch) > 0 {
		t.watching = true
	}
	if err := pipelineErr(cmds, err); err != nil {
		t.err = err
		return false
	}
	return true
}

// load reads what h names (and the parties of the invitations it names):
// one round trip, two when it names invitations.
func (t *redisTx) load(h txHint) {
	k := t.c.k
	if len(h.invs) > 0 {
		// The parties this node remembers are read with the invitations
		// (clusterNode.parties): with a right guess, the read of their
		// connections below has nothing left to read.
		var guess []string
		for _, id := range h.invs {
			if _, read := t.invs[id]; !read {
				guess = append(guess, t.c.parties.get(id)...)
			}
		}
		t.loadInvitations(h.invs, guess)
		for _, id := range h.invs {
			if r := t.invs[id]; r != nil {
				h.users = append(h.users, invitationParties(r)...)
			}
		}
	}
	users := t.missingUsers(h.users)
	var ringing, sent, groups, counts []string
	for _, id := range h.groups {
		if _, ok := t.grps[id]; !ok && id != "" && !slices.Contains(groups, id) {
			groups = append(groups, id)
		}
	}
	for _, u := range h.counts {
		if _, ok := t.own[u]; !ok && !slices.Contains(counts, u) {
			counts = append(counts, u)
		}
	}
	for _, u := range h.ringing {
		if _, ok := t.ringN[u]; !ok && !slices.Contains(ringing, u) {
			ringing = append(ringing, u)
		}
	}
	for _, u := range h.sentBy {
		if _, ok := t.sentN[u]; !ok && !slices.Contains(sent, u) {
			sent = append(sent, u)
		}
	}
	if len(users) == 0 && len(ringing) == 0 && len(sent) == 0 && len(groups) == 0 && len(counts) == 0 {
		return
	}
	var keys []string
	for _, u := range users {
		keys = append(keys, t.c.ks.ConnKey(u))
	}
	for _, u := range ringing {
		keys = append(keys, k.ringing(u))
	}
	for _, u := range sent {
		keys = append(keys, k.sent(u))
	}
	for _, id := range groups {
		keys = append(keys, k.grp(id))
	}
	for _, u := range counts {
		keys = append(keys, k.userGroups(u), k.ownGroups(u))
	}
	var readUsers func()
	ringCmds := make([]*redis.IntCmd, len(ringing))
	sentCmds := make([]*redis.IntCmd, len(sent))
	grpCmds := make([]*redis.MapStringStringCmd, len(groups))
	allCmds := make([]*redis.IntCmd, len(counts))
	ownCmds := make([]*redis.IntCmd, len(counts))
	if !t.read(keys, func(p redis.Pipeliner) {
		if len(users) > 0 {
			readUsers = t.queueUsers(p, users)
		}
		for i, u := range ringing {
			ringCmds[i] = p.ZCard(t.ctx, k.ringing(u))
		}
		for i, u := range sent {
			sentCmds[i] = p.SCard(t.ctx, k.sent(u))
		}
		for i, id := range groups {
			grpCmds[i] = p.HGetAll(t.ctx, k.grp(id))
		}
		for i, u := range counts {
			allCmds[i] = p.SCard(t.ctx, k.userGroups(u))
			ownCmds[i] = p.SCard(t.ctx, k.ownGroups(u))
		}
	}) {
		return
	}
	if readUsers != nil {
		if readUsers(); t.err != nil {
			return
		}
	}
	for i, u := range ringing {
		put(&t.ringN, u, int(ringCmds[i].Val()))
	}
	for i, u := range sent {
		put(&t.sentN, u, int(sentCmds[i].Val()))
	}
	for i, id := range groups {
		h := grpCmds[i].Val()
		if len(h) == 0 {
			put(&t.grps, id, nil)
			continue
		}
		g, err := decodeGroup(id, h)
		if err != nil {
			t.err = dataErr("group %q: %w", id, err)
			return
		}
		put(&t.grps, id, &g)
	}
	for i, u := range counts {
		own := int(ownCmds[i].Val())
		put(&t.own, u, own)
		put(&t.added, u, int(allCmds[i].Val())-own)
	}
}

// queueUsers queues in p the reads of users' live nodes and known flags
// (their conn: keys WATCHed by the caller); the func it returns stores
// them, or sets err, once p ran.
func (t *redisTx) queueUsers(p redis.Pipeliner, users []string) func() {
	nodes := t.c.ks.QueueNodes(t.ctx, p, users)
	known := p.SMIsMember(t.ctx, t.c.k.users(), stringsToAny(users)...)
	return func() {
		found := map[string][]string{}
		if err := parseNodesCmd(nodes, users, found); err != nil {
			t.err = err
			return
		}
		for i, u := range users {
			put(&t.nodes, u, found[u])
			put(&t.isKnown, u, known.Val()[i])
		}
	}
}

// invitationParties are r's inviter and invitees.
func invitationParties(r *InvitationRecord) []string {
	out := make([]string, 0, 1+len(r.Invitees))
	out = append(out, r.Inviter)
	for _, v := range r.Invitees {
		out = append(out, v.UserID)
	}
	return out
}

func (t *redisTx) missingUsers(users []string) []string {
	var out []string
	for _, u := range users {
		if _, ok := t.nodes[u]; !ok && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// loadInvitations reads the invitations ids not read yet and, in the
// same pipeline, the connections of users (the parties a hint guessed)
// not read yet, and t.peek once (unless "": GET, not WATCHed, into
// peekVal).
func (t *redisTx) loadInvitations(ids, users []string) {
	var missing []string
	for _, id := range ids {
		if _, ok := t.invs[id]; !ok && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	users = t.missingUsers(users)
	keys := make([]string, len(missing), len(missing)+len(users))
	for i, id := range missing {
		keys[i] = t.c.k.inv(id)
	}
	for _, u := range users {
		keys = append(keys, t.c.ks.ConnKey(u))
	}
	cmds := make([]*redis.MapStringStringCmd, len(missing))
	var readUsers func()
	if !t.read(keys, func(p redis.Pipeliner) {
		for i, id := range missing {
			cmds[i] = p.HGetAll(t.ctx, t.c.k.inv(id))
		}
		if len(users) > 0 {
			readUsers = t.queueUsers(p, users)
		}
		if t.peek != "" && t.peekCmd == nil {
			t.peekCmd = p.Get(t.ctx, t.peek)
		}
	}) {
		return
	}
	if t.peekCmd != nil && t.peekVal == "" {
		t.peekVal = t.peekCmd.Val() // "" when absent (redis.Nil is no failure: pipelineErr)
	}
	if readUsers != nil {
		if readUsers(); t.err != nil {
			return
		}
	}
	for i, id := range missing {
		h := cmds[i].Val()
		if len(h) == 0 {
			put(&t.invs, id, nil)
			continue
		}
		r, err := decodeInvitation(id, h)
		if err != nil {
			t.err = dataErr("invitation %q: %w", id, err)
			return
		}
		put(&t.invs, id, &r)
	}
}

func (t *redisTx) now() time.Time             { return t.at }
func (t *redisTx) newID(prefix string) string { return t.c.e.newID(prefix) }

func (t *redisTx) invitation(id string) (*invitation, bool) {
	t.loadInvitations([]string{id}, nil)
	r := t.invs[id]
	if r == nil {
		return nil, false
	}
	return invitationFromRecord(*r), true
}

func (t *redisTx) ringingFor(user string) int {
	t.load(txHint{ringing: []string{user}})
	return t.ringN[user]
}

func (t *redisTx) liveSentBy(user string) int {
	t.load(txHint{sentBy: []string{user}})
	return t.sentN[user]
}

func (t *redisTx) group(id string) (*group, bool) {
	t.load(txHint{groups: []string{id}})
	r := t.grps[id]
	if r == nil {
		return nil, false
	}
	return groupFromRecord(*r), true
}

func (t *redisTx) groupMember(id, user string) (found, member bool) {
	t.load(txHint{groups: []string{id}})
	r := t.grps[id]
	if r == nil {
		return false, false
	}
	return true, slices.ContainsFunc(r.Members, func(m MemberRecord) bool { return m.UserID == user })
}

func (t *redisTx) groupCounts(user string) (own, added int) {
	t.load(txHint{counts: []string{user}})
	return t.own[user], t.added[user]
}

func (t *redisTx) online(user string) bool {
	t.load(txHint{users: []string{user}})
	return len(t.nodes[user]) > 0
}

func (t *redisTx) known(user string) bool {
	t.load(txHint{users: []string{user}})
	return t.isKnown[user]
}

func (t *redisTx) keptBytes(sender string) (mine, total int64) {
	if _, ok := t.keptBy[sender]; !ok || !t.keptRead {
		var cmd *redis.SliceCmd
		if !t.read([]string{t.c.k.kept()}, func(p redis.Pipeliner) {
			cmd = p.HMGet(t.ctx, t.c.k.kept(), sender, keptTotalField)
		}) {
			return 0, 0
		}
		v := cmd.Val()
		put(&t.keptBy, sender, atoi64(v[0]))
		t.keptAll, t.keptRead = atoi64(v[1]), true
	}
	return t.keptBy[sender], t.keptAll
}

func atoi64(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (t *redisTx) customStatus(user string) string {
	if s, ok := t.status[user]; ok {
		return s
	}
	if t.err != nil {
		return ""
	}
	var cmd *redis.StringCmd
	_, _ = t.conn.Pipelined(t.ctx, func(p redis.Pipeliner) error {
		cmd = p.HGet(t.ctx, t.c.k.status(), user)
		return nil
	})
	s, err := cmd.Result()
	t.rounds++
	if err != nil && !errors.Is(err, redis.Nil) {
		t.err = err
	}
	put(&t.status, user, s)
	return s
}

func (t *redisTx) apply(muts ...Mutation)           { t.muts = append(t.muts, muts...) }
func (t *redisTx) emit(evs ...*outgoing)            { t.evs = append(t.evs, evs...) }
func (t *redisTx) keepAs(sender string, force bool) { t.sender, t.force = sender, force }
func (t *redisTx) note(n *InvitationNote)           { t.n = n }
func (t *redisTx) statusChanged(user string, skip protocol.Session) {
	t.statCh = append(t.statCh, statusChange{user, skip})
}

func (t *redisTx) empty() bool {
	return len(t.muts) == 0 && len(t.evs) == 0 && t.n == nil && len(t.statCh) == 0 && len(t.announce) == 0 && len(t.extra) == 0
}

// unwatch releases a WATCH that no EXEC ended.
func (t *redisTx) unwatch() {
	if t.watching {
		t.conn.unwatch(t.ctx)
		t.watching = false
	}
}

// parseNodesCmd reads a QueueNodes result.
func parseNodesCmd(q *cluster.NodesQuery, users []string, out map[string][]string) error {
	return cluster.ParseNodes(q, users, out)
}

// commit plans the kept copies, encodes the events and writes everything
// the decision queued in one MULTI/EXEC (see the file's comment).
func (t *redisTx) commit(exceptToken uint64) (selfEntry bool, err error) {
	c, k, ctx := t.c, t.c.k, t.ctx
	e := c.e
	total, err := planKept(t, t.evs, t.sender, t.force, e.cfg.Limits)
	if t.err != nil {
		return false, t.err
	}
	if err != nil {
		return false, err
	}
	// The copies to keep: known recipients with no live connection.
	var keep int64
	if total > 0 {
		eachKept(t, t.evs, func(*outgoing, string) { keep++ })
	}
	if t.err != nil {
		return false, t.err
	}
	if keep > 0 {
		var cmd *redis.IntCmd
		_, _ = t.conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = p.IncrBy(ctx, k.obSeq(), keep)
			return nil
		})
		last, err := cmd.Result()
		t.rounds++
		if err != nil {
			return false, err
		}
		seq := last - keep
		numberKept(t, t.evs, func() int64 {
			seq++
			return seq
		})
	}
	outMuts, err := e.encode(t.evs, t.at)
	if err != nil {
		return false, err
	}
	muts := append(slices.Clone(t.muts), outMuts...)
	if err := checkRedisMutations(muts); err != nil {
		return false, err
	}
	sim := newRedisSim(t.at.UnixMicro())
	for id, r := range t.invs {
		sim.knowInvitation(id, r)
	}
	for _, m := range muts {
		if p, ok := m.(PutInvitation); ok {
			if _, read := t.invs[p.Invitation.ID]; !read {
				// A fresh random ID: nobody has it.
				sim.knowInvitation(p.Invitation.ID, nil)
			}
		}
	}
	// The groups the mutations touch, as read (the decision read each
	// group it changes; one it did not is read now).
	var touched []string
	for _, m := range muts {
		switch m := m.(type) {
		case PutGroup:
			if _, read := t.grps[m.Group.ID]; !read {
				// A fresh random ID, or one the decision checked.
				sim.knowGroup(m.Group.ID, nil)
			}
		case AddGroupMembers:
			touched = append(touched, m.GroupID)
		case RemoveGroupMembers:
			touched = append(touched, m.GroupID)
		case DeleteGroup:
			touched = append(touched, m.GroupID)
		}
	}
	if t.load(txHint{groups: touched}); t.err != nil {
		return false, t.err
	}
	for id, r := range t.grps {
		sim.knowGroup(id, r)
	}
	if err := sim.decide(k, muts); err != nil {
		return false, err
	}
	// Every recipient's connections (the decision read those it needed).
	var recipients []string
	for _, ev := range t.evs {
		recipients = append(recipients, ev.users...)
	}
	if t.load(txHint{users: recipients}); t.err != nil {
		return false, t.err
	}
	batches := t.route(exceptToken)
	_, selfEntry = batches[c.node]
	cmds, err := t.conn.exec(ctx, func(p redis.Pipeliner) {
		sim.queue(ctx, p)
		t.queueIndexes(p)
		if total > 0 {
			var kept int64
			for _, ev := range t.evs {
				kept += ev.cost * int64(len(ev.offline))
			}
			if kept > 0 {
				p.HIncrBy(ctx, k.kept(), t.sender, kept)
				p.HIncrBy(ctx, k.kept(), keptTotalField, kept)
			}
		}
		for _, node := range sortedKeys(batches) {
			c.ks.Append(ctx, p, node, batches[node])
		}
		for _, f := range t.extra {
			f(ctx, p)
		}
	})
	t.rounds++
	t.watching = false // EXEC (or DISCARD) ended it
	if err != nil {
		return false, err
	}
	if err := pipelineErr(cmds, nil); err != nil {
		return false, err
	}
	return selfEntry, nil
}

// queueIndexes queues the writes of the cluster's indexes that the
// mutations change: who an invitation rings, what a user sent, the
// invitation's deadline.
func (t *redisTx) queueIndexes(p redis.Pipeliner) {
	ctx, k, ks := t.ctx, t.c.k, t.c.ks
	// An invitation deleted by this batch leaves every invitee's ring set
	// (below): an answer before it needs no ZREM of its own (an accept
	// that ends the invitation: one command less).
	lastDelete := map[string]int{}
	for i, m := range t.muts {
		if d, ok := m.(DeleteInvitation); ok {
			lastDelete[d.InviteID] = i
		}
	}
	for i, m := range t.muts {
		switch m := m.(type) {
		case PutInvitation:
			r := m.Invitation
			p.SAdd(ctx, k.sent(r.Inviter), r.ID)
			for _, v := range r.Invitees {
				if v.State == StatePending && !v.NoRing && !r.OnlineOnly {
					p.ZAdd(ctx, k.ringing(v.UserID), redis.Z{Score: float64(r.CreatedAt.UnixMicro()), Member: r.ID})
				}
			}
			if !r.Deadline.IsZero() {
				ks.Schedule(ctx, p, r.ID, r.Deadline)
			}
		case SetInviteeState:
			if m.State != StatePending && !t.unrungLater(lastDelete, i, m.InviteID, m.UserID) {
				p.ZRem(ctx, k.ringing(m.UserID), m.InviteID)
			}
		case DeleteInvitation:
			r := t.record(m.InviteID)
			if r == nil {
				continue
			}
			p.SRem(ctx, k.sent(r.Inviter), r.ID)
			for _, v := range r.Invitees {
				p.ZRem(ctx, k.ringing(v.UserID), r.ID)
			}
			ks.Cancel(ctx, p, r.ID)
		case PutGroup:
			t.indexMembers(p, m.Group.ID, m.Group.Members)
		case AddGroupMembers:
			if r := t.grps[m.GroupID]; r != nil {
				add := slices.DeleteFunc(slices.Clone(m.Members), func(mr MemberRecord) bool {
					return slices.ContainsFunc(r.Members, func(x MemberRecord) bool { return x.UserID == mr.UserID })
				})
				t.indexMembers(p, m.GroupID, add)
			}
		case RemoveGroupMembers:
			for _, u := range m.UserIDs {
				p.SRem(ctx, k.userGroups(u), m.GroupID)
				p.SRem(ctx, k.ownGroups(u), m.GroupID)
			}
		case DeleteGroup:
			if r := t.grps[m.GroupID]; r != nil {
				for _, mr := range r.Members {
					p.SRem(ctx, k.userGroups(mr.UserID), m.GroupID)
					p.SRem(ctx, k.ownGroups(mr.UserID), m.GroupID)
				}
			}
		}
	}
}

// unrungLater reports whether mutation i's invitation is deleted later in
// the batch with user among its invitees (queueIndexes then removes it
// from user's ring set).
func (t *redisTx) unrungLater(lastDelete map[string]int, i int, id, user string) bool {
	j, ok := lastDelete[id]
	if !ok || j < i {
		return false
	}
	r := t.record(id)
	return r != nil && slices.ContainsFunc(r.Invitees, func(v InviteeRecord) bool { return v.UserID == user })
}

// indexMembers queues the user → groups index writes of members joining
// group id.
func (t *redisTx) indexMembers(p redis.Pipeliner, id string, members []MemberRecord) {
	for _, mr := range members {
		p.SAdd(t.ctx, t.c.k.userGroups(mr.UserID), id)
		if mr.AddedBy == "" {
			p.SAdd(t.ctx, t.c.k.ownGroups(mr.UserID), id)
		}
	}
}

// record is the invitation id as read or put by this attempt.
func (t *redisTx) record(id string) *InvitationRecord {
	if r := t.invs[id]; r != nil {
		return r
	}
	for _, m := range t.muts {
		if p, ok := m.(PutInvitation); ok && p.Invitation.ID == id {
			return &p.Invitation
		}
	}
	return nil
}

// route groups the events by the nodes that hold their recipients'
// connections: one stream entry per node (the recipients kept offline
// are in the outbox mutations).
//
// An event whose only recipient on this node is the actor, whose acting
// connection is their only one here, gets no item on this node's stream:
// it would be read and dropped (the acting connection gets a reply, not
// the event; the actor's events are never kept). This is decided on the
// node's own sessions, its authority on its connections: a connection of
// the actor that opens here later is either in the registry before this
// attempt's EXEC (it changes conn:<actor>, which the attempt WATCHes, and
// the decision runs again) or after it, when the event was committed
// before the connection existed in the cluster and the stream would
// have given it no guarantee either.
func (t *redisTx) route(exceptToken uint64) map[string][]byte {
	per := map[string]*streamBatch{}
	for _, ev := range t.evs {
		var keep *streamKeep
		if ev.keep {
			keep = &streamKeep{ID: t.c.e.newID("kd"), Sender: t.sender, Nodes: map[string][]string{}}
			if ev.except != nil {
				keep.Actor = ev.except.UserID()
			}
		}
		var parties []string
		if d, ok := ev.data.(protocol.NewInvitationEvent); ok && ev.name == protocol.EvReceiveNewInvitation {
			parties = append([]string{d.Inviter}, d.InviteeList...)
		}
		byNode := map[string][]string{}
		for _, u := range ev.users {
			if u == ev.silent {
				continue
			}
			for _, n := range t.nodes[u] {
				byNode[n] = append(byNode[n], u)
			}
		}
		for n, users := range byNode {
			if n == t.c.node && ev.except != nil && len(users) == 1 && users[0] == ev.except.UserID() && t.c.e.onlySession(ev.except) {
				continue
			}
			b := per[n]
			if b == nil {
				b = &streamBatch{}
				per[n] = b
			}
			it := streamItem{Users: users, Frame: ev.frame}
			if keep != nil {
				k := *keep
				k.Nodes = make(map[string][]string, len(users))
				for _, u := range users {
					k.Nodes[u] = t.nodes[u]
				}
				it.Keep = &k
			}
			if ev.except != nil && n == t.c.node {
				it.Except = exceptToken
			}
			if ev.name == protocol.EvReceiveNewInvitation {
				if d, ok := ev.data.(protocol.NewInvitationEvent); ok {
					it.Ring = d.InviteID
					it.Parties = parties
				}
			}
			b.Items = append(b.Items, it)
		}
	}
	out := make(map[string][]byte, len(per))
	for n, b := range per {
		out[n] = b.encode()
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// doRedis runs an operation's decision on the Redis backend (see the
// file's comment); extra is queued in its EXEC. It returns the committed
// attempt's tx, or nil when the decision queued nothing.
func (c *clusterNode) do(ctx context.Context, h txHint, decide func(tx) error, extra func(context.Context, redis.Pipeliner)) (*redisTx, error) {
	return c.doPeek(ctx, h, "", decide, extra)
}

// doPeek is do with key peek (unless "") read by GET, not WATCHed, with
// the invitations h names (redisTx.peekVal; a ClusterGate's key).
func (c *clusterNode) doPeek(ctx context.Context, h txHint, peek string, decide func(tx) error, extra func(context.Context, redis.Pipeliner)) (*redisTx, error) {
	var token uint64
	refused, conflicted := 0, false
	// Alone while no other operation of this node is in flight: a lane
	// only pays when there is someone to share it with (its hand-offs
	// would add to the latency of an operation alone).
	shared := c.gangs != nil && c.inflight.Add(1) > 1
	if c.gangs != nil {
		defer c.inflight.Add(-1)
	}
	for range redisMaxTxAttempts {
		var done *redisTx
		var self bool
		body := func(conn txConn) error {
			t := newRedisTx(c, ctx, conn)
			t.peek = peek
			defer t.unwatch()
			if extra != nil {
				t.extra = append(t.extra, extra)
			}
			t.load(h)
			if t.err != nil {
				return t.err
			}
			err := decide(t)
			if t.err != nil {
				return t.err
			}
			if err != nil {
				return err
			}
			if t.empty() {
				done = t
				return nil
			}
			if t.statusEvents(); t.err != nil {
				return t.err
			}
			if token == 0 && slices.ContainsFunc(t.evs, func(ev *outgoing) bool { return ev.except != nil }) {
				token = c.exceptToken(t.evs)
			}
			var cerr error
			self, cerr = t.commit(token)
			if cerr == nil {
				done = t
			}
			return cerr
		}
		var err error
		if shared && refused < gangRetries && !conflicted {
			// In a lane until refused gangRetries times; alone once a
			// WATCHed key changed (tx_conn.go).
			err = c.gangs.run(ctx, body)
		} else {
			err = c.rdb.Watch(ctx, func(rtx *redis.Tx) error { return body(soloConn{rtx}) })
		}
		if errors.Is(err, errGangRefused) {
			refused++
			continue
		}
		if errors.Is(err, redis.TxFailedErr) {
			conflicted = true
			c.conflicts.Add(1)
			continue
		}
		if token != 0 && (err != nil || !self) {
			c.dropExcept(token)
		}
		if err != nil {
			return nil, c.txErr(ctx, err)
		}
		for _, m := range done.muts {
			if p, ok := m.(PutInvitation); ok {
				c.parties.put(p.Invitation.ID, invitationParties(&p.Invitation))
			}
		}
		c.e.log.Debug("cluster op", "rounds", done.rounds)
		c.lastRounds.Store(int64(done.rounds))
		return done, nil
	}
	if token != 0 {
		c.dropExcept(token)
	}
	c.e.log.Warn("cluster op gave up: watched keys kept changing", "attempts", redisMaxTxAttempts)
	return nil, protocol.ErrStoreUnavailable
}

// txErr maps an attempt's error: the decision's own errors (protocol
// errors) pass; Redis failing, or data it cannot read, is
// ErrStoreUnavailable.
func (c *clusterNode) txErr(ctx context.Context, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, errStaleTimer) {
		return err
	}
	c.e.log.Error("cluster op failed", "err", err, "ctx_err", ctx.Err())
	return protocol.ErrStoreUnavailable
}
