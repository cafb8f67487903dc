package signaling

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// Apply implements Store (see RedisStore for how it stays atomic).
// Applying to a missing invitation, invitee or group (SetInviteeState,
// SetInvitationData, AddGroupMembers, RemoveGroupMembers, Delete*) is a
// no-op, not an error.
func (s *RedisStore) Apply(ctx context.Context, muts ...Mutation) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("signaling: redis store: apply: %w", err)
	}
	if s.closed.Load() {
		return errRedisClosed
	}
	if len(muts) == 0 {
		return nil
	}
	if err := checkRedisMutations(muts); err != nil {
		return redisErr(ctx, "apply", err)
	}
	p := newRedisPlan(s.k, muts)
	err := retryWatch(ctx, func() error {
		if len(p.watch) == 0 {
			// Nothing to read: one MULTI/EXEC.
			return s.write(ctx, s.rdb, p, newRedisSim(0))
		}
		// Watch without keys sends no WATCH of its own: p.read sends it
		// in the pipeline of its reads, which saves a round trip.
		return s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			armed := true
			defer func() {
				if armed {
					unwatch(ctx, tx)
				}
			}()
			sim, err := p.read(ctx, tx)
			if err != nil {
				return err
			}
			if err := sim.decide(s.k, p.muts); err != nil {
				return err
			}
			// EXEC ends the WATCH, whether it commits or not.
			armed = false
			return sim.commit(ctx, tx)
		})
	})
	if err != nil {
		return redisErr(ctx, "apply", err)
	}
	return nil
}

// unwatch ends the WATCH that read sent, when no EXEC followed (a
// mutation failed, or reading did), so that the connection goes back to the
// pool watching nothing. It runs even when ctx has ended.
func unwatch(ctx context.Context, tx *redis.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = tx.Unwatch(ctx).Err() // a broken connection is dropped by the pool anyway
}

// write decides every mutation on sim's state and, if none fails, writes
// the outcome in one MULTI/EXEC through c.
func (s *RedisStore) write(ctx context.Context, c redis.Cmdable, p *redisPlan, sim *redisSim) error {
	if err := sim.decide(s.k, p.muts); err != nil {
		return err
	}
	return sim.commit(ctx, c)
}

// checkRedisMutations rejects what cannot be stored, before anything is
// read: unknown mutations, invalid states, times outside 1678-2262.
func checkRedisMutations(muts []Mutation) error {
	// what names the mutation in an error; only made for one (fmt per
	// mutation was about 1 % of a cluster node's CPU at the bench's max rate).
	times := func(what func() string, ts ...time.Time) error {
		for _, t := range ts {
			if !redisdb.Storable(t) {
				return dataErr("%s: time %v outside the years 1678-2262", what(), t)
			}
		}
		return nil
	}
	for _, m := range muts {
		switch m := m.(type) {
		case PutInvitation:
			r := m.Invitation
			what := func() string { return fmt.Sprintf("put invitation %q", r.ID) }
			if err := times(what, r.CreatedAt, r.Deadline); err != nil {
				return err
			}
			for i, e := range r.Invitees {
				if !validState(e.State) {
					return dataErr("%s: invitee %q: invalid state %v", what(), e.UserID, e.State)
				}
				if slices.ContainsFunc(r.Invitees[:i], func(x InviteeRecord) bool { return x.UserID == e.UserID }) {
					return dataErr("%s: invitee %q listed twice", what(), e.UserID)
				}
				if err := times(what, e.UpdatedAt); err != nil {
					return err
				}
			}
		case SetInviteeState:
			what := func() string { return fmt.Sprintf("set state of invitee %q of invitation %q", m.UserID, m.InviteID) }
			if !validState(m.State) {
				return dataErr("%s: invalid state %v", what(), m.State)
			}
			if err := times(what, m.At); err != nil {
				return err
			}
		case PutGroup:
			what := func() string { return fmt.Sprintf("put group %q", m.Group.ID) }
			if err := times(what, m.Group.CreatedAt); err != nil {
				return err
			}
			for _, mr := range m.Group.Members {
				if err := times(what, mr.JoinedAt); err != nil {
					return err
				}
			}
		case AddGroupMembers:
			for _, mr := range m.Members {
				if err := times(func() string { return fmt.Sprintf("add members to group %q", m.GroupID) }, mr.JoinedAt); err != nil {
					return err
				}
			}
		case AppendOutbox:
			if err := times(func() string { return fmt.Sprintf("append outbox entry %d", m.Entry.Seq) }, m.Entry.CreatedAt, m.Entry.ExpiresAt); err != nil {
				return err
			}
		case PurgeOutbox:
			if err := times(func() string { return "purge outbox" }, m.Before); err != nil {
				return err
			}
		case SetInvitationData, DeleteInvitation, RemoveGroupMembers, DeleteGroup,
			DeleteOutbox, DeleteOutboxEntry, PutUser, SetCustomStatus:
		default:
			return dataErr("unknown mutation %T", m)
		}
	}
	return nil
}

// redisPlan is what an Apply call reads before deciding: the state its
// mutations depend on, which it also WATCHes.
type redisPlan struct {
	k     redisKeys
	muts  []Mutation
	watch []string // every key read below, once

	invs      map[string][]string // invitation ID → invitees whose state is read (EXISTS, HMGET)
	groups    map[string][]string // group ID → members whose presence is read
	obSeqs    []int64             // outbox entries whose existence is read
	obRanges  map[string]int64    // user → the highest UpTo of DeleteOutbox: their Seqs up to it
	obOwned   map[string][]int64  // user → Seqs of DeleteOutboxEntry: are they the user's
	purgeMax  time.Time           // the latest Before of PurgeOutbox: the entries expiring by then
	purge     bool
	ords      int64 // insertion numbers needed
	watchSeen map[string]bool
}

func newRedisPlan(k redisKeys, muts []Mutation) *redisPlan {
	p := &redisPlan{k: k, muts: muts, invs: map[string][]string{}, groups: map[string][]string{},
		obRanges: map[string]int64{}, obOwned: map[string][]int64{}, watchSeen: map[string]bool{}}
	for _, m := range muts {
		switch m := m.(type) {
		case PutInvitation:
			p.inv(m.Invitation.ID)
			p.ords++
		case SetInviteeState:
			p.inv(m.InviteID)
			p.invs[m.InviteID] = append(p.invs[m.InviteID], m.UserID)
		case SetInvitationData:
			p.inv(m.InviteID)
		case PutGroup:
			p.group(m.Group.ID)
			p.ords += 1 + int64(len(m.Group.Members))
		case AddGroupMembers:
			p.group(m.GroupID)
			for _, mr := range m.Members {
				p.groups[m.GroupID] = append(p.groups[m.GroupID], mr.UserID)
			}
			p.ords += int64(len(m.Members))
		case AppendOutbox:
			p.obSeqs = append(p.obSeqs, m.Entry.Seq)
			p.addWatch(k.obEntry(m.Entry.Seq))
		case DeleteOutbox:
			if up, ok := p.obRanges[m.UserID]; !ok || m.UpTo > up {
				p.obRanges[m.UserID] = m.UpTo
			}
			p.addWatch(k.obUser(m.UserID))
		case DeleteOutboxEntry:
			p.obOwned[m.UserID] = append(p.obOwned[m.UserID], m.Seq)
			p.addWatch(k.obUser(m.UserID))
		case PurgeOutbox:
			if m.Before.IsZero() {
				continue // matches nothing
			}
			if !p.purge || m.Before.After(p.purgeMax) {
				p.purgeMax = m.Before
			}
			p.purge = true
			p.addWatch(k.obExp())
		}
	}
	return p
}

func (p *redisPlan) addWatch(key string) {
	if !p.watchSeen[key] {
		p.watchSeen[key] = true
		p.watch = append(p.watch, key)
	}
}

func (p *redisPlan) inv(id string) {
	if _, ok := p.invs[id]; !ok {
		p.invs[id] = nil
	}
	p.addWatch(p.k.inv(id))
}

func (p *redisPlan) group(id string) {
	if _, ok := p.groups[id]; !ok {
		p.groups[id] = nil
	}
	p.addWatch(p.k.grp(id))
}

// read WATCHes the plan's keys and reads their state through tx in one
// pipeline (WATCH first), plus one more for the outbox entries a purge may
// remove, and returns the simulation that starts from it.
func (p *redisPlan) read(ctx context.Context, tx *redis.Tx) (*redisSim, error) {
	type invRead struct {
		exists *redis.IntCmd
		fields *redis.SliceCmd
	}
	invs, groups := map[string]invRead{}, map[string]invRead{}
	obExists := map[int64]*redis.IntCmd{}
	obRanges := map[string]*redis.StringSliceCmd{}
	obOwned := map[string][]*redis.FloatCmd{}
	var purge *redis.StringSliceCmd
	var ords *redis.IntCmd
	cmds, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Do(ctx, append([]any{"watch"}, stringsToAny(p.watch)...)...)
		for id, users := range p.invs {
			r := invRead{exists: pipe.Exists(ctx, p.k.inv(id))}
			if len(users) > 0 {
				r.fields = pipe.HMGet(ctx, p.k.inv(id), prefixed(rfInvitee, users)...)
			}
			invs[id] = r
		}
		for id, users := range p.groups {
			r := invRead{exists: pipe.Exists(ctx, p.k.grp(id))}
			if len(users) > 0 {
				r.fields = pipe.HMGet(ctx, p.k.grp(id), prefixed(rfMember, users)...)
			}
			groups[id] = r
		}
		for _, seq := range p.obSeqs {
			obExists[seq] = pipe.Exists(ctx, p.k.obEntry(seq))
		}
		for user, upTo := range p.obRanges {
			obRanges[user] = pipe.ZRangeByScore(ctx, p.k.obUser(user), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(upTo, 10)})
		}
		for user, seqs := range p.obOwned {
			for _, seq := range seqs {
				obOwned[user] = append(obOwned[user], pipe.ZScore(ctx, p.k.obUser(user), seqMember(seq)))
			}
		}
		if p.purge {
			max := strconv.FormatInt(floorDiv(p.purgeMax.UnixNano(), 1000), 10)
			purge = pipe.ZRangeByScore(ctx, p.k.obExp(), &redis.ZRangeBy{Min: "-inf", Max: max})
		}
		if p.ords > 0 {
			// Outside the transaction: a retried or failed Apply leaves a
			// gap in the numbers, which only order.
			ords = pipe.IncrBy(ctx, p.k.ord(), p.ords)
		}
		return nil
	})
	if err := pipelineErr(cmds, err); err != nil {
		return nil, err
	}

	sim := newRedisSim(0)
	if ords != nil {
		sim.ord = ords.Val() - p.ords + 1
	}
	for id, r := range invs {
		si := &redisSimInv{exists: r.exists.Val() == 1, invitees: map[string]*redisInvitee{}}
		if r.fields != nil {
			for i, v := range r.fields.Val() {
				user := p.invs[id][i]
				str, ok := v.(string)
				if !ok {
					si.invitees[user] = nil
					continue
				}
				e, err := unpackInvitee(str)
				if err != nil {
					return nil, dataErr("invitation %q, invitee %q: %w", id, user, err)
				}
				si.invitees[user] = &e
			}
		}
		sim.invs[id] = si
	}
	for id, r := range groups {
		sg := &redisSimGroup{exists: r.exists.Val() == 1, members: map[string]bool{}}
		if r.fields != nil {
			for i, v := range r.fields.Val() {
				sg.members[p.groups[id][i]] = v != nil
			}
		}
		sim.groups[id] = sg
	}
	for seq, c := range obExists {
		sim.ob(seq).exists = c.Val() == 1
	}
	for user, c := range obRanges {
		for _, m := range c.Val() {
			seq, err := strconv.ParseInt(m, 10, 64)
			if err != nil {
				return nil, dataErr("outbox of %q holds %q", user, m)
			}
			e := sim.ob(seq)
			e.exists, e.user = true, user
		}
	}
	for user, cs := range obOwned {
		for i, c := range cs {
			if c.Err() == nil {
				e := sim.ob(p.obOwned[user][i])
				e.exists, e.user = true, user
			}
		}
	}
	if purge != nil && len(purge.Val()) > 0 {
		if err := p.readPurge(ctx, tx, purge.Val(), sim); err != nil {
			return nil, err
		}
	}
	return sim, nil
}

// readPurge reads the owner and exact expiry of the entries that a purge
// may remove (the expiry index holds microseconds).
func (p *redisPlan) readPurge(ctx context.Context, tx *redis.Tx, members []string, sim *redisSim) error {
	seqs := make([]int64, len(members))
	for i, m := range members {
		seq, err := strconv.ParseInt(m, 10, 64)
		if err != nil {
			return dataErr("outbox expiry index holds %q", m)
		}
		seqs[i] = seq
	}
	var reads []*redis.SliceCmd
	cmds, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, seq := range seqs {
			reads = append(reads, pipe.HMGet(ctx, p.k.obEntry(seq), rfUser, rfExpires))
		}
		return nil
	})
	if err := pipelineErr(cmds, err); err != nil {
		return err
	}
	for i, seq := range seqs {
		v := reads[i].Val()
		user, ok := v[0].(string)
		if !ok {
			continue // indexed but gone: the index entry is removed by whoever removed it
		}
		exp, _ := v[1].(string)
		expires, err := redisdb.TimeOf(exp)
		if err != nil {
			return dataErr("outbox entry %d: %w", seq, err)
		}
		e := sim.ob(seq)
		e.exists, e.user, e.expires, e.expKnown = true, user, expires, true
	}
	return nil
}

// pipelineErr returns the first error among cmds other than redis.Nil (a
// missing value, which the reads expect), or err if no command has one.
func pipelineErr(cmds []redis.Cmder, err error) error {
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
			return e
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func prefixed(prefix string, users []string) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = prefix + u
	}
	return out
}

// redisSim is the state an Apply call decides on: what it read, changed
// by its mutations as it goes, and the writes that follow.
type redisSim struct {
	invs   map[string]*redisSimInv
	groups map[string]*redisSimGroup
	obs    map[int64]*redisSimOb
	ord    int64 // the next insertion number
	writes []simWrite
}

// simWrite is a write decided by a mutation. inv, if set, names the
// invitation whose hash fields alone it writes: a deletion of that
// invitation later in the batch makes it moot (dropped: one command less
// in the EXEC, the same outcome).
type simWrite struct {
	w   func(context.Context, redis.Pipeliner)
	inv string
}

// redisSimInv is an invitation as far as the batch knows it: invitees
// maps the users read or put to their state, nil for "not an invitee".
type redisSimInv struct {
	exists   bool
	invitees map[string]*redisInvitee
}

type redisSimGroup struct {
	exists  bool
	members map[string]bool
}

type redisSimOb struct {
	exists   bool
	user     string
	expires  time.Time
	expKnown bool
}

func newRedisSim(ord int64) *redisSim {
	return &redisSim{invs: map[string]*redisSimInv{}, groups: map[string]*redisSimGroup{}, obs: map[int64]*redisSimOb{}, ord: ord}
}

func (s *redisSim) ob(seq int64) *redisSimOb {
	e, ok := s.obs[seq]
	if !ok {
		e = &redisSimOb{}
		s.obs[seq] = e
	}
	return e
}

func (s *redisSim) nextOrd() int64 {
	n := s.ord
	s.ord++
	return n
}

// decide applies muts in order to the state, collecting their writes; it
// fails, writing nothing, when one of them fails.
func (s *redisSim) decide(k redisKeys, muts []Mutation) error {
	for _, m := range muts {
		if err := s.apply(k, m); err != nil {
			return err
		}
	}
	return nil
}

// commit sends the writes in one MULTI/EXEC through c (a *redis.Tx whose
// WATCH then guards them, or the client).
func (s *redisSim) commit(ctx context.Context, c redis.Cmdable) error {
	_, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		s.queue(ctx, pipe)
		return nil
	})
	return err
}

// queue queues the writes decided so far in pipe: the caller's MULTI (the
// Redis backend of the engine's tx puts them there with its event appends).
func (s *redisSim) queue(ctx context.Context, pipe redis.Pipeliner) {
	for _, w := range s.writes {
		w.w(ctx, pipe)
	}
}

// knowInvitation sets what the batch knows of invitation id from its record
// (r nil: it does not exist), for a caller that read it itself.
func (s *redisSim) knowInvitation(id string, r *InvitationRecord) {
	si := &redisSimInv{invitees: map[string]*redisInvitee{}}
	if r != nil {
		si.exists = true
		for i, v := range r.Invitees {
			si.invitees[v.UserID] = &redisInvitee{pos: i, state: v.State, at: v.UpdatedAt, pushed: v.Pushed}
		}
	}
	s.invs[id] = si
}

// knowGroup sets what the batch knows of group id from its record (r nil:
// it does not exist), for a caller that read it itself.
func (s *redisSim) knowGroup(id string, r *GroupRecord) {
	sg := &redisSimGroup{members: map[string]bool{}}
	if r != nil {
		sg.exists = true
		for _, m := range r.Members {
			sg.members[m.UserID] = true
		}
	}
	s.groups[id] = sg
}

func (s *redisSim) emit(w func(context.Context, redis.Pipeliner)) {
	s.writes = append(s.writes, simWrite{w: w})
}

// emitFields records a write of invitation id's hash fields only.
func (s *redisSim) emitFields(id string, w func(context.Context, redis.Pipeliner)) {
	s.writes = append(s.writes, simWrite{w: w, inv: id})
}

// apply decides m on the state, records its writes and changes the state.
// The plan read every key that m's outcome depends on.
func (s *redisSim) apply(k redisKeys, m Mutation) error {
	switch m := m.(type) {
	case PutInvitation:
		r := m.Invitation
		if si := s.invs[r.ID]; si.exists {
			return dataErr("put invitation %q: ID already in use", r.ID)
		}
		ord := s.nextOrd()
		fields := []any{rfInviter, r.Inviter, rfGroup, r.GroupID, rfData, r.Data, rfCreated, redisdb.Time(r.CreatedAt),
			rfDeadline, redisdb.Time(r.Deadline), rfPush, r.PushInfo}
		// Kept when set (the engine's view in a cluster; a Store never gets them).
		if r.OnlineOnly {
			fields = append(fields, rfOnline, "1")
		}
		var noRing []string
		for _, e := range r.Invitees {
			if e.NoRing {
				noRing = append(noRing, e.UserID)
			}
		}
		if len(noRing) > 0 {
			fields = append(fields, rfNoRing, redisdb.Pack(noRing...))
		}
		invitees := make(map[string]*redisInvitee, len(r.Invitees))
		for i, e := range r.Invitees {
			v := &redisInvitee{pos: i, state: e.State, at: e.UpdatedAt, pushed: e.Pushed}
			invitees[e.UserID] = v
			fields = append(fields, rfInvitee+e.UserID, v.pack())
		}
		s.invs[r.ID] = &redisSimInv{exists: true, invitees: invitees}
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.HSet(ctx, k.inv(r.ID), fields...)
			p.ZAdd(ctx, k.invs(), redis.Z{Score: float64(ord), Member: r.ID})
		})
	case SetInviteeState:
		si := s.invs[m.InviteID]
		if !si.exists || si.invitees[m.UserID] == nil {
			return nil
		}
		v := *si.invitees[m.UserID]
		if m.From != StateUnknown && v.state != m.From {
			// Compared and set (see tx): a stale decision fails whole.
			return fmt.Errorf("%w: invitee %q of %q is %s, not %s", errConflict, m.UserID, m.InviteID, v.state, m.From)
		}
		v.state, v.at = m.State, m.At
		si.invitees[m.UserID] = &v
		s.emitFields(m.InviteID, func(ctx context.Context, p redis.Pipeliner) {
			p.HSet(ctx, k.inv(m.InviteID), rfInvitee+m.UserID, v.pack())
		})
	case SetInvitationData:
		if s.invs[m.InviteID].exists {
			s.emitFields(m.InviteID, func(ctx context.Context, p redis.Pipeliner) { p.HSet(ctx, k.inv(m.InviteID), rfData, m.Data) })
		}
	case DeleteInvitation:
		s.invs[m.InviteID] = &redisSimInv{invitees: map[string]*redisInvitee{}}
		// The DEL below undoes the batch's field writes before it.
		s.writes = slices.DeleteFunc(s.writes, func(w simWrite) bool { return w.inv == m.InviteID })
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.Del(ctx, k.inv(m.InviteID))
			p.ZRem(ctx, k.invs(), m.InviteID)
		})
	case PutGroup:
		g := m.Group
		if sg := s.groups[g.ID]; sg.exists {
			return fmt.Errorf("put group %q: %w", g.ID, protocol.ErrGroupExists)
		}
		sg := &redisSimGroup{exists: true, members: map[string]bool{}}
		s.groups[g.ID] = sg
		ord := s.nextOrd()
		fields := []any{rfName, g.Name, rfOwner, g.Owner, rfJoin, string(g.JoinOption), rfCreated, redisdb.Time(g.CreatedAt)}
		fields = s.addMembers(sg, g.Members, fields)
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.HSet(ctx, k.grp(g.ID), fields...)
			p.ZAdd(ctx, k.groups(), redis.Z{Score: float64(ord), Member: g.ID})
		})
	case AddGroupMembers:
		sg := s.groups[m.GroupID]
		if !sg.exists {
			return nil
		}
		if fields := s.addMembers(sg, m.Members, nil); len(fields) > 0 {
			s.emit(func(ctx context.Context, p redis.Pipeliner) { p.HSet(ctx, k.grp(m.GroupID), fields...) })
		}
	case RemoveGroupMembers:
		if len(m.UserIDs) == 0 {
			return nil
		}
		if sg, ok := s.groups[m.GroupID]; ok {
			for _, u := range m.UserIDs {
				sg.members[u] = false
			}
		}
		// On a missing group HDEL does nothing and creates nothing.
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.HDel(ctx, k.grp(m.GroupID), prefixed(rfMember, m.UserIDs)...)
		})
	case DeleteGroup:
		s.groups[m.GroupID] = &redisSimGroup{members: map[string]bool{}}
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.Del(ctx, k.grp(m.GroupID))
			p.ZRem(ctx, k.groups(), m.GroupID)
		})
	case AppendOutbox:
		e := m.Entry
		ob := s.ob(e.Seq)
		if ob.exists {
			return dataErr("append outbox entry %d for %q: Seq already in use", e.Seq, e.UserID)
		}
		ob.exists, ob.user, ob.expires, ob.expKnown = true, e.UserID, e.ExpiresAt, true
		fields := []any{rfUser, e.UserID, rfSender, e.Sender, rfEvent, e.Event, rfCreated, redisdb.Time(e.CreatedAt), rfExpires, redisdb.Time(e.ExpiresAt)}
		if e.Data != nil {
			fields = append(fields, rfData, string(e.Data))
		}
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			p.HSet(ctx, k.obEntry(e.Seq), fields...)
			z := redis.Z{Score: seqScore(e.Seq), Member: seqMember(e.Seq)}
			p.ZAdd(ctx, k.obUser(e.UserID), z)
			p.ZAdd(ctx, k.ob(), z)
			if !e.ExpiresAt.IsZero() {
				p.ZAdd(ctx, k.obExp(), redis.Z{Score: expScore(e.ExpiresAt), Member: seqMember(e.Seq)})
			}
		})
	case DeleteOutbox:
		s.removeOutbox(k, func(seq int64, e *redisSimOb) bool { return e.user == m.UserID && seq <= m.UpTo })
	case DeleteOutboxEntry:
		if e, ok := s.obs[m.Seq]; ok && e.exists && e.user == m.UserID {
			s.removeOutbox(k, func(seq int64, _ *redisSimOb) bool { return seq == m.Seq })
		}
	case PutUser:
		s.emit(func(ctx context.Context, p redis.Pipeliner) { p.SAdd(ctx, k.users(), m.UserID) })
	case SetCustomStatus:
		if m.Text == "" {
			s.emit(func(ctx context.Context, p redis.Pipeliner) { p.HDel(ctx, k.status(), m.UserID) })
		} else {
			s.emit(func(ctx context.Context, p redis.Pipeliner) { p.HSet(ctx, k.status(), m.UserID, m.Text) })
		}
	case PurgeOutbox:
		// Entries without an expiry never match, nor does a zero Before.
		if !m.Before.IsZero() {
			s.removeOutbox(k, func(_ int64, e *redisSimOb) bool {
				return e.expKnown && !e.expires.IsZero() && !e.expires.After(m.Before)
			})
		}
	default:
		return dataErr("unknown mutation %T", m)
	}
	return nil
}

// addMembers adds to sg those of add that are not members yet, in order
// (of a user listed twice, the first stays), and returns fields with
// their hash fields appended.
func (s *redisSim) addMembers(sg *redisSimGroup, add []MemberRecord, fields []any) []any {
	for _, mr := range add {
		if sg.members[mr.UserID] {
			continue
		}
		sg.members[mr.UserID] = true
		v := redisMember{ord: s.nextOrd(), rec: mr}
		fields = append(fields, rfMember+mr.UserID, v.pack())
	}
	return fields
}

// removeOutbox removes the existing entries that match, in Seq order.
func (s *redisSim) removeOutbox(k redisKeys, match func(int64, *redisSimOb) bool) {
	for _, seq := range slices.SortedFunc(maps.Keys(s.obs), cmp.Compare[int64]) {
		e := s.obs[seq]
		if !e.exists || !match(seq, e) {
			continue
		}
		e.exists = false
		user := e.user
		s.emit(func(ctx context.Context, p redis.Pipeliner) {
			member := seqMember(seq)
			p.Del(ctx, k.obEntry(seq))
			p.ZRem(ctx, k.obUser(user), member)
			p.ZRem(ctx, k.ob(), member)
			p.ZRem(ctx, k.obExp(), member)
		})
	}
}
