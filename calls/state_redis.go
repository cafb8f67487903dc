package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// The Redis backend of the calls' tx (cluster mode; signaling/CLUSTER-DESIGN.md,
// "Calls").
//
// A decision runs as one optimistic transaction on the node's Redis
// connection: each key it reads is WATCHed in the pipeline that reads it,
// the decision changes copies of the calls it read, and the commit writes,
// in one MULTI/EXEC, the calls whose state changed, the index changes it
// queued, the setup deadlines it armed or stopped and the records it saved
// (read and WATCHed first; RedisRecords.queueSaves). If a watched key
// changed meanwhile, nothing is written and the decision runs again from
// fresh reads (redisCallAttempts times, then ErrStoreUnavailable).
//
// Keys (under the prefix, besides RedisRecords' calls:rec:, calls:h:,
// calls:open and calls:hb):
//
//	calls:st:<callID>     STRING the call's state (callState, JSON); kept endedTTL after its end
//	calls:inv:<inviteID>  STRING the call ID of a live invitation of a call
//	calls:room:<roomID>   STRING the running call that holds the room ID (cluster-wide)
//	calls:u:<user>        SET the running calls the user takes part in or is rung for (busy line, glare)
//	calls:run             SET the running calls
//	calls:deadlines       ZSET the setup deadlines (cluster.Keyspace and Poller under the prefix "calls:")
//
// Busy line and glare hold across nodes because the decision that places a
// call reads (WATCHes) the caller's and the invitees' calls:u sets and
// writes both: of two nodes racing, one EXEC fails and its decision runs
// again, and then sees the other's call.

// redisCallAttempts bounds how often a decision runs again after a watched
// key changed.
const redisCallAttempts = 32

// endedTTL is how long an ended call's state (and the index of its
// invitations still ringing) stays, so that late answers learn it ended.
const endedTTL = 24 * time.Hour

// createdPoll is the period at which a glare merge looks whether the
// invitation it waits for was created (clusterCalls.createdWait).
const createdPoll = 5 * time.Millisecond

// creationPrefix marks, in calls:deadlines, the deadline of an invitation
// registered and not yet created (clusterCalls.creationLease).
const creationPrefix = "create:"

// lostPrefix marks, in calls:deadlines, the lost deadline of a call: the
// earliest time one of its participants whose media node let them go
// (call.lost) has not come back within Config.SetupTimeout.
const lostPrefix = "lost:"

func (cl *clusterCalls) stKey(id string) string   { return cl.p + "calls:st:" + id }
func (cl *clusterCalls) invKey(id string) string  { return cl.p + "calls:inv:" + id }
func (cl *clusterCalls) roomKey(id string) string { return cl.p + "calls:room:" + id }
func (cl *clusterCalls) userKey(u string) string  { return cl.p + "calls:u:" + u }
func (cl *clusterCalls) runKey() string           { return cl.p + "calls:run" }

// callState is a call as stored in calls:st:<id>.
type callState struct {
	Rec       CallRecord                 `json:"rec"`
	Data      string                     `json:"data"`
	Admitted  map[string]bool            `json:"adm,omitempty"`
	Connected map[string]string          `json:"con,omitempty"`
	Pending   map[string]map[string]bool `json:"pend,omitempty"`
	Creating  map[string]bool            `json:"cre,omitempty"`
	Ended     bool                       `json:"end,omitempty"`
	HungUp    map[string]bool            `json:"hung,omitempty"`
	Setup     bool                       `json:"setup,omitempty"`
	Lost      map[string]time.Time       `json:"lost,omitempty"`
	// Nodes are the nodes that changed the call (server_restart: see
	// clusterCalls.recoverOpenCalls).
	Nodes []string `json:"nodes,omitempty"`
}

func encodeCall(c *call) []byte {
	b, _ := json.Marshal(callState{Rec: c.rec, Data: c.data, Admitted: c.admitted, Connected: c.connected, Pending: c.pending,
		Creating: c.creating, Ended: c.ended, HungUp: c.hungUp, Setup: c.setupArmed, Lost: c.lost, Nodes: c.nodes}) // strings, bools, times
	return b
}

func decodeCall(b []byte) (*call, error) {
	var s callState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	c := newCall(s.Rec, s.Data)
	c.admitted = orEmpty(s.Admitted)
	c.connected = orEmpty(s.Connected)
	c.creating = orEmpty(s.Creating)
	c.hungUp = orEmpty(s.HungUp)
	c.lost = orEmpty(s.Lost)
	c.ended, c.setupArmed, c.nodes = s.Ended, s.Setup, s.Nodes
	for id, pend := range s.Pending {
		c.pending[id] = orEmpty(pend)
	}
	for i, p := range c.rec.Participants {
		c.idx[p.UserID] = i
	}
	return c, nil
}

func orEmpty[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// redisTx is the Redis backend's tx for one attempt of one decision. Reads
// that fail set err (the tx's methods return no error): the attempt then
// fails with it, whatever the decision returned.
type redisTx struct {
	cl  *clusterCalls
	ctx context.Context
	rtx txConn
	at  time.Time
	err error

	readOnly  bool // a view: reads are not WATCHed, nothing is committed
	watched   map[string]bool
	watching  bool                       // a WATCH is armed on rtx (UNWATCH unless EXEC follows)
	calls     map[string]*call           // read (nil: absent) or added
	orig      map[string]string          // encoded as read ("" : added)
	invs      map[string]string          // invite ID → call ID, as read or set ("": none)
	rooms     map[string]string          // room ID → call ID, as read or set
	users     map[string]map[string]bool // user → call IDs, as read and changed
	runIDs    []string                   // calls:run as read (allRunning)
	runRead   bool
	forgotten map[string]bool
	stored    map[string]*string // call ID → its stored record, packed (nil: none), as read

	writes []func(p redis.Pipeliner) // index changes, in order
	saves  []string
	onces  []func()
}

var _ tx = (*redisTx)(nil)

// txConn is the connection of a tx's attempt: a Watch's *redis.Tx, or the
// engine's for a gate's look (readConn).
type txConn interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Unwatch(ctx context.Context, keys ...string) *redis.StatusCmd
}

var errReadOnly = errors.New("calls: a read-only look wrote")

// readConn is the engine's connection as a gate's look uses it: reads
// only (a read-only tx neither WATCHes nor commits).
type readConn struct{ signaling.ClusterConn }

func (readConn) TxPipelined(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return nil, errReadOnly
}

func (readConn) Unwatch(ctx context.Context, _ ...string) *redis.StatusCmd {
	cmd := redis.NewStatusCmd(ctx, "unwatch")
	cmd.SetErr(errReadOnly)
	return cmd
}

func newRedisTx(cl *clusterCalls, ctx context.Context, rtx txConn, at time.Time) *redisTx {
	if at.IsZero() {
		at = cl.m.clock.Now()
	}
	return &redisTx{cl: cl, ctx: ctx, rtx: rtx, at: at, watched: map[string]bool{}, calls: map[string]*call{},
		orig: map[string]string{}, invs: map[string]string{}, rooms: map[string]string{}, users: map[string]map[string]bool{},
		forgotten: map[string]bool{}, stored: map[string]*string{}}
}

// read runs, in one pipeline, WATCH of keys not watched yet, then the
// reads f queues. After a failure it does nothing.
func (t *redisTx) read(keys []string, f func(redis.Pipeliner)) bool {
	if t.err != nil {
		return false
	}
	watch := []any{"watch"}
	for _, k := range keys {
		if !t.watched[k] {
			t.watched[k] = true
			watch = append(watch, k)
		}
	}
	if t.readOnly {
		watch = watch[:1]
	}
	if len(watch) > 1 {
		t.watching = true
	}
	cmds, err := t.rtx.Pipelined(t.ctx, func(p redis.Pipeliner) error {
		if len(watch) > 1 {
			p.Do(t.ctx, watch...)
		}
		f(p)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		t.err = err
		return false
	}
	for _, c := range cmds { // a missing key (redis.Nil) is an answer; another error is not
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			t.err = err
			return false
		}
	}
	return true
}

// load reads the calls ids not read yet.
func (t *redisTx) load(ids ...string) {
	var missing []string
	for _, id := range ids {
		if _, ok := t.calls[id]; !ok && id != "" && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	keys := make([]string, len(missing))
	for i, id := range missing {
		keys[i] = t.cl.stKey(id)
	}
	var get *redis.SliceCmd
	if !t.read(keys, func(p redis.Pipeliner) { get = p.MGet(t.ctx, keys...) }) {
		return
	}
	for i, id := range missing {
		s, ok := get.Val()[i].(string)
		if !ok {
			t.calls[id] = nil
			continue
		}
		c, err := decodeCall([]byte(s))
		if err != nil {
			t.err = fmt.Errorf("call %q: %w", id, err)
			return
		}
		t.calls[id], t.orig[id] = c, s
	}
}

// readStored reads (WATCHed) the stored records of calls ids not read yet.
func (t *redisTx) readStored(ids ...string) {
	var missing []string
	for _, id := range ids {
		if _, ok := t.stored[id]; !ok && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	keys := t.cl.rec.storedKeys(missing)
	var get *redis.SliceCmd
	if !t.read(keys, func(p redis.Pipeliner) { get = p.MGet(t.ctx, keys...) }) {
		return
	}
	for i, id := range missing {
		if v, ok := get.Val()[i].(string); ok {
			t.stored[id] = &v
		} else {
			t.stored[id] = nil
		}
	}
}

// hint reads what h names in one pipeline (then, in one more, the calls
// the users' sets and the index keys point to).
func (t *redisTx) hint(h hint) {
	var keys []string
	var users, rooms, invs, calls, recs []string
	for _, u := range h.users {
		if _, ok := t.users[u]; !ok && !slices.Contains(users, u) {
			users = append(users, u)
			keys = append(keys, t.cl.userKey(u))
		}
	}
	for _, r := range h.rooms {
		if _, ok := t.rooms[r]; !ok && !slices.Contains(rooms, r) {
			rooms = append(rooms, r)
			keys = append(keys, t.cl.roomKey(r))
		}
	}
	for _, id := range h.invites {
		if _, ok := t.invs[id]; !ok && !slices.Contains(invs, id) {
			invs = append(invs, id)
			keys = append(keys, t.cl.invKey(id))
		}
	}
	for _, id := range h.calls {
		if _, ok := t.calls[id]; !ok && !slices.Contains(calls, id) {
			calls = append(calls, id)
			keys = append(keys, t.cl.stKey(id))
		}
	}
	for _, id := range h.records {
		if _, ok := t.stored[id]; !ok && !slices.Contains(recs, id) {
			recs = append(recs, id)
		}
	}
	recKeys := t.cl.rec.storedKeys(recs)
	keys = append(keys, recKeys...)
	if len(keys) == 0 {
		return
	}
	sets := make([]*redis.StringSliceCmd, len(users))
	ptrs := make([]*redis.StringCmd, len(rooms)+len(invs))
	var st, rc *redis.SliceCmd
	if !t.read(keys, func(p redis.Pipeliner) {
		for i, u := range users {
			sets[i] = p.SMembers(t.ctx, t.cl.userKey(u))
		}
		for i, r := range rooms {
			ptrs[i] = p.Get(t.ctx, t.cl.roomKey(r))
		}
		for i, id := range invs {
			ptrs[len(rooms)+i] = p.Get(t.ctx, t.cl.invKey(id))
		}
		if len(calls) > 0 {
			stKeys := make([]string, len(calls))
			for i, id := range calls {
				stKeys[i] = t.cl.stKey(id)
			}
			st = p.MGet(t.ctx, stKeys...)
		}
		if len(recs) > 0 {
			rc = p.MGet(t.ctx, recKeys...)
		}
	}) {
		return
	}
	var found []string
	for i, u := range users {
		set := map[string]bool{}
		for _, id := range sets[i].Val() {
			set[id] = true
			found = append(found, id)
		}
		t.users[u] = set
	}
	for i, r := range rooms {
		t.rooms[r] = ptrs[i].Val()
		found = append(found, t.rooms[r])
	}
	for i, id := range invs {
		t.invs[id] = ptrs[len(rooms)+i].Val()
		found = append(found, t.invs[id])
	}
	for i, id := range calls {
		s, ok := st.Val()[i].(string)
		if !ok {
			t.calls[id] = nil
			continue
		}
		c, err := decodeCall([]byte(s))
		if err != nil {
			t.err = fmt.Errorf("call %q: %w", id, err)
			return
		}
		t.calls[id], t.orig[id] = c, s
	}
	for i, id := range recs {
		if v, ok := rc.Val()[i].(string); ok {
			t.stored[id] = &v
		} else {
			t.stored[id] = nil
		}
	}
	t.load(found...)
}

// get is call id as read (running or ended; nil: none).
func (t *redisTx) get(id string) *call {
	t.load(id)
	c := t.calls[id]
	if c == nil || (t.forgotten[id] && !c.ended) {
		return nil
	}
	return c
}

// pointer reads a STRING index key (calls:inv, calls:room) into m.
func (t *redisTx) pointer(m map[string]string, key, field string) string {
	if id, ok := m[field]; ok {
		return id
	}
	var cmd *redis.StringCmd
	if !t.read([]string{key}, func(p redis.Pipeliner) { cmd = p.Get(t.ctx, key) }) {
		return ""
	}
	m[field] = cmd.Val()
	return m[field]
}

func (t *redisTx) now() time.Time { return t.at }

func (t *redisTx) closed() bool {
	t.cl.m.mu.Lock()
	defer t.cl.m.mu.Unlock()
	return t.cl.m.closed
}

func (t *redisTx) running(callID string) *call {
	if c := t.get(callID); c != nil && !c.ended && !t.forgotten[callID] {
		return c
	}
	return nil
}

func (t *redisTx) byInvite(inviteID string) *call {
	return t.get(t.pointer(t.invs, t.cl.invKey(inviteID), inviteID))
}

// roomHosted reads rooms/cluster's lease room:<id> (WATCHed: a room
// claimed before EXEC makes the step run again) and whether its node is
// alive.
func (t *redisTx) roomHosted(roomID string) bool {
	key := t.cl.p + "room:" + roomID
	var owner *redis.StringCmd
	if !t.read([]string{key}, func(p redis.Pipeliner) { owner = p.Get(t.ctx, key) }) {
		return false
	}
	n := owner.Val()
	if n == "" {
		return false
	}
	var alive *redis.IntCmd
	if !t.read(nil, func(p redis.Pipeliner) { alive = p.Exists(t.ctx, t.cl.live.NodeKey(n)) }) {
		return false
	}
	return alive.Val() == 1
}

func (t *redisTx) byRoom(roomID string) *call {
	return t.running(t.pointer(t.rooms, t.cl.roomKey(roomID), roomID))
}

func (t *redisTx) userCalls(user string) []*call {
	set, ok := t.users[user]
	if !ok {
		var cmd *redis.StringSliceCmd
		if !t.read([]string{t.cl.userKey(user)}, func(p redis.Pipeliner) { cmd = p.SMembers(t.ctx, t.cl.userKey(user)) }) {
			return nil
		}
		set = map[string]bool{}
		for _, id := range cmd.Val() {
			set[id] = true
		}
		t.users[user] = set
	}
	return t.runningOf(set)
}

func (t *redisTx) runningOf(set map[string]bool) []*call {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	t.load(ids...)
	var out []*call
	for _, id := range ids {
		if c := t.running(id); c != nil {
			out = append(out, c)
		}
	}
	return out
}

func (t *redisTx) allRunning() []*call {
	if !t.runRead {
		var cmd *redis.StringSliceCmd
		if !t.read([]string{t.cl.runKey()}, func(p redis.Pipeliner) { cmd = p.SMembers(t.ctx, t.cl.runKey()) }) {
			return nil
		}
		t.runIDs, t.runRead = cmd.Val(), true
	}
	set := map[string]bool{}
	for _, id := range t.runIDs {
		set[id] = true
	}
	for id, c := range t.calls {
		if c != nil && t.orig[id] == "" {
			set[id] = true // added by this decision
		}
	}
	return t.runningOf(set)
}

func (t *redisTx) queue(f func(p redis.Pipeliner)) { t.writes = append(t.writes, f) }

func (t *redisTx) add(c *call) {
	id, room := c.rec.CallID, c.rec.RoomID
	t.calls[id], t.orig[id] = c, ""
	t.rooms[room] = id
	ctx := t.ctx
	t.queue(func(p redis.Pipeliner) {
		p.Set(ctx, t.cl.roomKey(room), id, 0)
		p.SAdd(ctx, t.cl.runKey(), id)
	})
}

func (t *redisTx) index(c *call, user string) {
	id := c.rec.CallID
	if set := t.users[user]; set != nil {
		set[id] = true
	}
	t.queue(func(p redis.Pipeliner) { p.SAdd(t.ctx, t.cl.userKey(user), id) })
}

func (t *redisTx) unindex(c *call, user string) {
	id := c.rec.CallID
	if set := t.users[user]; set != nil {
		delete(set, id)
	}
	t.queue(func(p redis.Pipeliner) { p.SRem(t.ctx, t.cl.userKey(user), id) })
}

func (t *redisTx) setInvite(inviteID string, c *call) {
	id := c.rec.CallID
	t.invs[inviteID] = id
	t.queue(func(p redis.Pipeliner) { p.Set(t.ctx, t.cl.invKey(inviteID), id, 0) })
}

func (t *redisTx) dropInvite(inviteID string) {
	t.invs[inviteID] = ""
	t.queue(func(p redis.Pipeliner) { p.Del(t.ctx, t.cl.invKey(inviteID)) })
}

func (t *redisTx) forget(c *call) {
	id, room := c.rec.CallID, c.rec.RoomID
	t.forgotten[id] = true
	if t.rooms[room] == id {
		t.rooms[room] = ""
	}
	users := map[string]bool{}
	for _, p := range c.rec.Participants {
		users[p.UserID] = true
	}
	for _, pend := range c.pending {
		for u := range pend {
			users[u] = true
		}
	}
	for _, u := range sortedSet(users) {
		t.unindex(c, u)
	}
	ctx := t.ctx
	t.queue(func(p redis.Pipeliner) {
		p.Del(ctx, t.cl.roomKey(room))
		p.SRem(ctx, t.cl.runKey(), id)
	})
	if !c.ended {
		for _, inv := range sortedSet(c.pending) {
			t.dropInvite(inv)
		}
	}
}

func sortedSet[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (t *redisTx) save(c *call) {
	if !slices.Contains(t.saves, c.rec.CallID) {
		t.saves = append(t.saves, c.rec.CallID)
	}
}

func (t *redisTx) armSetup(c *call) {
	id, at := c.rec.CallID, t.at.Add(t.cl.m.cfg.SetupTimeout)
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Schedule(t.ctx, p, id, at) })
}

func (t *redisTx) stopSetup(c *call) {
	id := c.rec.CallID
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Cancel(t.ctx, p, id) })
}

func (t *redisTx) armLost(c *call, at time.Time) {
	id := lostPrefix + c.rec.CallID
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Schedule(t.ctx, p, id, at) })
}

func (t *redisTx) stopLost(c *call) {
	id := lostPrefix + c.rec.CallID
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Cancel(t.ctx, p, id) })
}

// creating arms the deadline that abandons the registration if it is
// never settled (its node died between registering the invitation and
// creating it); settled stops it. Glare waiters poll
// (clusterCalls.waitCreated).
func (t *redisTx) creating(_ *call, inviteID string) {
	at := t.at.Add(t.cl.creationLease())
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Schedule(t.ctx, p, creationPrefix+inviteID, at) })
}

func (t *redisTx) settled(_ *call, inviteID string) {
	t.queue(func(p redis.Pipeliner) { t.cl.ks.Cancel(t.ctx, p, creationPrefix+inviteID) })
}

func (t *redisTx) once(f func()) { t.onces = append(t.onces, f) }

// commit writes what the decision changed in one MULTI/EXEC (see the
// file's comment), with due's Done when a deadline fired it.
func (t *redisTx) commit(due *cluster.Due) error {
	ctx, cl := t.ctx, t.cl
	type put struct {
		key, val string
		ttl      time.Duration
		del      bool
		invs     []string // an ended call's invitations still indexed
	}
	var puts []put
	for _, id := range sortedSet(t.calls) {
		c := t.calls[id]
		if c == nil {
			continue
		}
		if t.forgotten[id] && !c.ended {
			if t.orig[id] != "" {
				puts = append(puts, put{key: cl.stKey(id), del: true})
			}
			continue
		}
		enc := string(encodeCall(c))
		if enc == t.orig[id] {
			continue
		}
		if !slices.Contains(c.nodes, cl.node) {
			c.nodes = append(slices.Clone(c.nodes), cl.node)
			slices.Sort(c.nodes)
			enc = string(encodeCall(c))
		}
		pt := put{key: cl.stKey(id), val: enc}
		if c.ended {
			pt.ttl = endedTTL
			for inv := range c.pending {
				if t.invs[inv] != "" || t.pointer(t.invs, cl.invKey(inv), inv) != "" {
					pt.invs = append(pt.invs, inv)
				}
			}
			slices.Sort(pt.invs)
		}
		puts = append(puts, pt)
	}
	if len(puts) == 0 && len(t.writes) == 0 && len(t.saves) == 0 && due == nil {
		return nil
	}
	var recs []CallRecord
	for _, id := range t.saves {
		if c := t.calls[id]; c != nil {
			recs = append(recs, c.rec)
		}
	}
	t.readStored(t.saves...)
	if t.err != nil {
		return t.err
	}
	stored := map[string]string{}
	for id, v := range t.stored {
		if v != nil {
			stored[id] = *v
		}
	}
	queued := false
	_, err := t.rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, f := range t.writes {
			f(p)
		}
		for _, pt := range puts {
			if pt.del {
				p.Del(ctx, pt.key)
				continue
			}
			p.Set(ctx, pt.key, pt.val, pt.ttl)
			for _, inv := range pt.invs {
				p.PExpire(ctx, cl.invKey(inv), endedTTL)
			}
		}
		if err := cl.rec.queueSaves(ctx, p, stored, recs); err != nil {
			return err
		}
		if due != nil {
			cl.ks.Done(ctx, p, *due)
		}
		queued = true
		return nil
	})
	if queued {
		t.watching = false // EXEC (or DISCARD) ended it
	}
	return err
}

// unwatch releases a WATCH that no EXEC ended (a decision that changed
// nothing, or failed), before the connection goes back to the pool.
func (t *redisTx) unwatch() {
	if t.watching {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), time.Second)
		defer cancel()
		_ = t.rtx.Unwatch(ctx).Err() // a broken connection is dropped by the pool anyway
		t.watching = false
	}
}

// do runs decide on the Redis backend (see the file's comment), then the
// committed attempt's onces and work; due's Done goes in its EXEC.
func (cl *clusterCalls) do(ctx context.Context, decide decision, due *cluster.Due) error {
	return cl.doAt(ctx, time.Time{}, decide, due)
}

// view runs look on fresh reads, not WATCHed, committing nothing
// (Manager.view).
func (cl *clusterCalls) view(ctx context.Context, look func(t tx)) error {
	err := cl.rdb.Watch(ctx, func(rtx *redis.Tx) error {
		t := newRedisTx(cl, ctx, rtx, time.Time{})
		t.readOnly = true
		look(t)
		return t.err
	})
	if err != nil {
		cl.m.log.Error("calls: cluster read failed", "err", err, "ctx_err", ctx.Err())
		return protocol.ErrStoreUnavailable
	}
	return nil
}

// doAt is do with the decision's time at (zero: now).
func (cl *clusterCalls) doAt(ctx context.Context, at time.Time, decide decision, due *cluster.Due) error {
	for range redisCallAttempts {
		var work func()
		var onces []func()
		var derr error
		err := cl.rdb.Watch(ctx, func(rtx *redis.Tx) error {
			work, onces, derr = nil, nil, nil
			t := newRedisTx(cl, ctx, rtx, at)
			defer t.unwatch()
			w, err := decide(t)
			if t.err != nil {
				return t.err
			}
			if err != nil {
				derr = err
				return nil
			}
			if err := t.commit(due); err != nil {
				return err
			}
			work, onces = w, t.onces
			return nil
		})
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			cl.m.log.Error("calls: cluster step failed", "err", err, "ctx_err", ctx.Err())
			return protocol.ErrStoreUnavailable
		}
		if derr != nil {
			return derr
		}
		if len(onces) > 0 {
			cl.obsMu.Lock()
			for _, f := range onces {
				f()
			}
			cl.obsMu.Unlock()
		}
		if work != nil {
			work()
		}
		return nil
	}
	cl.m.log.Warn("calls: cluster step gave up: watched keys kept changing", "attempts", redisCallAttempts)
	return protocol.ErrStoreUnavailable
}

// gate is the engine's look at invitation inviteID's call before an
// answer or cancel (signaling.ClusterGate): its calls:inv key is read with
// the engine's first read; when it names a call, the call is read on the
// engine's connection, not WATCHed (as view reads), and look sees it. It
// saves the round trip of a view before the engine's op (an invitation
// that is no call's: one round trip fewer), and an invitation found to be
// no call's is remembered (plainInvites): the note of its end then costs
// no Redis step either.
func (cl *clusterCalls) gate(inviteID string, look func(t tx) error) *signaling.ClusterGate {
	return &signaling.ClusterGate{Key: cl.invKey(inviteID), Check: func(ctx context.Context, callID string, conn signaling.ClusterConn) error {
		if callID == "" {
			cl.plain.add(inviteID)
		}
		t := newRedisTx(cl, ctx, readConn{conn}, time.Time{})
		t.readOnly = true
		t.invs[inviteID] = callID
		err := look(t)
		if t.err != nil {
			return t.err // the engine logs it and answers ErrStoreUnavailable
		}
		return err
	}}
}
