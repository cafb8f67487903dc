package signaling

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// redisMaxAttempts bounds how often an Apply or a Load is tried again
// after another client changed a key it watches (optimistic locking); past
// it, the call fails with ErrStoreUnavailable.
const redisMaxAttempts = 64

// RedisStore is the Store kept in Redis, every key under one prefix, so
// that several deployments (or tests) can share one Redis. It holds no
// state of its own besides the client: several processes may open stores
// on the same Redis and prefix, and Apply stays atomic between them.
//
// Key layout (P is the prefix):
//
//	P sig:ord           counter: insertion order of invitations, groups, members
//	P sig:invs          ZSET invitation ID, scored by insertion order
//	P sig:inv:<id>      HASH inviter group data created deadline push; iv:<user> one per invitee
//	P sig:groups        ZSET group ID, scored by insertion order
//	P sig:grp:<id>      HASH name owner join created; m:<user> one per member
//	P sig:users         SET users who have connected
//	P sig:status        HASH user → custom status text
//	P sig:ob            ZSET every outbox Seq, scored by Seq (Load's order)
//	P sig:obexp         ZSET outbox Seq scored by expiry in unix µs (PurgeOutbox); entries without expiry absent
//	P sig:obu:<user>    ZSET the user's outbox Seqs, scored by Seq (LoadOutbox)
//	P sig:obe:<seq>     HASH user sender event data created expires
//
// Times are decimal unix nanoseconds ("" for the zero time), so they come
// back equal to what was stored, in UTC; times outside the years 1678-2262
// cannot be stored. An invitee's or member's fields are packed into one
// hash value (packStrings). Outbox Seqs are used as sorted-set scores,
// exact up to 2^53.
//
// Apply is optimistic: in one pipeline it WATCHes the keys whose state its
// mutations depend on (does the invitation, group, invitee, member or
// outbox entry exist, which entries match) and reads them; it decides every
// mutation in Go, in order, on that state (redisSim), and writes the
// outcome in one MULTI/EXEC, which Redis discards if a watched key changed
// meanwhile: then it starts again. That is two round trips (three when a
// PurgeOutbox must read the entries it may remove). A batch whose
// mutations depend on nothing (DeleteInvitation, DeleteGroup,
// RemoveGroupMembers, PutUser, SetCustomStatus) is one MULTI/EXEC. A
// failing mutation fails the batch before anything is written. No Lua:
// the rules stay in Go. Load and LoadOutbox WATCH the index sets they
// read and read the records in one MULTI/EXEC, so they see one moment's
// state.
//
// A failure of Redis (unreachable, restarting, loading, out of memory)
// wraps ErrStoreUnavailable; the client reconnects by itself, and the next
// call works once Redis is back. Redis Cluster is not supported (the keys
// of one Apply are in different slots).
type RedisStore struct {
	rdb    redis.UniversalClient
	k      redisKeys
	log    *slog.Logger
	closed atomic.Bool
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns the store kept in rdb under prefix (see
// redisdb.Config.Prefix). rdb stays owned by the caller: Close does not
// close it. log may be nil.
func NewRedisStore(rdb redis.UniversalClient, prefix string, log *slog.Logger) (*RedisStore, error) {
	if rdb == nil {
		return nil, errors.New("signaling: redis store: nil client")
	}
	if prefix == "" {
		return nil, errors.New("signaling: redis store: empty key prefix")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisStore{rdb: rdb, k: redisKeys{prefix}, log: log}, nil
}

var errRedisClosed = fmt.Errorf("signaling: redis store closed: %w", protocol.ErrShuttingDown)

// Close implements Store. Every Apply that returned is already in Redis;
// Close only makes later calls fail. Later calls return nil.
func (s *RedisStore) Close() error {
	s.closed.Store(true)
	return nil
}

// redisKeys names the store's keys (see RedisStore).
type redisKeys struct{ p string }

func (k redisKeys) ord() string                 { return k.p + "sig:ord" }
func (k redisKeys) invs() string                { return k.p + "sig:invs" }
func (k redisKeys) inv(id string) string        { return k.p + "sig:inv:" + id }
func (k redisKeys) groups() string              { return k.p + "sig:groups" }
func (k redisKeys) grp(id string) string        { return k.p + "sig:grp:" + id }
func (k redisKeys) users() string               { return k.p + "sig:users" }
func (k redisKeys) status() string              { return k.p + "sig:status" }
func (k redisKeys) ob() string                  { return k.p + "sig:ob" }
func (k redisKeys) obExp() string               { return k.p + "sig:obexp" }
func (k redisKeys) obUser(user string) string   { return k.p + "sig:obu:" + user }
func (k redisKeys) obEntry(seq int64) string    { return k.obEntryOf(strconv.FormatInt(seq, 10)) }
func (k redisKeys) obEntryOf(seq string) string { return k.p + "sig:obe:" + seq }
func seqMember(seq int64) string                { return strconv.FormatInt(seq, 10) }
func seqScore(seq int64) float64                { return float64(seq) }
func expScore(t time.Time) float64              { return float64(floorDiv(t.UnixNano(), 1000)) }

// floorDiv is a/b rounded down (towards -inf), for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// Hash fields of an invitation, a group and an outbox entry.
const (
	rfInviter  = "inviter"
	rfGroup    = "group"
	rfData     = "data"
	rfCreated  = "created"
	rfDeadline = "deadline"
	rfPush     = "push"
	rfName     = "name"
	rfOwner    = "owner"
	rfJoin     = "join"
	rfUser     = "user"
	rfSender   = "sender"
	rfEvent    = "event"
	rfExpires  = "expires"
	rfOnline   = "online" // "1": an onlineUserOnly invitation (only the engine's view in a cluster holds those)
	rfNoRing   = "noring" // packed list of the invitees never rung
	rfInvitee  = "iv:"
	rfMember   = "m:"
)

// redisInvitee is an invitee's packed value: position, state, update time,
// pushed.
type redisInvitee struct {
	pos    int
	state  InviteeState
	at     time.Time
	pushed bool
}

func (v redisInvitee) pack() string {
	pushed := "0"
	if v.pushed {
		pushed = "1"
	}
	return redisdb.Pack(strconv.Itoa(v.pos), v.state.String(), redisdb.Time(v.at), pushed)
}

func unpackInvitee(s string) (redisInvitee, error) {
	p, err := redisdb.UnpackN(s, 4)
	if err != nil {
		return redisInvitee{}, err
	}
	var v redisInvitee
	if v.pos, err = strconv.Atoi(p[0]); err != nil {
		return v, fmt.Errorf("bad position %q", p[0])
	}
	if v.state, err = ParseInviteeState(p[1]); err != nil {
		return v, err
	}
	if v.at, err = redisdb.TimeOf(p[2]); err != nil {
		return v, err
	}
	v.pushed = p[3] == "1"
	return v, nil
}

// redisMember is a member's packed value: insertion order, role, join
// time, added by.
type redisMember struct {
	ord int64
	rec MemberRecord
}

func (v redisMember) pack() string {
	return redisdb.Pack(strconv.FormatInt(v.ord, 10), string(v.rec.Role), redisdb.Time(v.rec.JoinedAt), v.rec.AddedBy)
}

func unpackMember(user, s string) (redisMember, error) {
	p, err := redisdb.UnpackN(s, 4)
	if err != nil {
		return redisMember{}, err
	}
	v := redisMember{rec: MemberRecord{UserID: user, Role: protocol.GroupRole(p[1]), AddedBy: p[3]}}
	if v.ord, err = strconv.ParseInt(p[0], 10, 64); err != nil {
		return v, fmt.Errorf("bad order %q", p[0])
	}
	if v.rec.JoinedAt, err = redisdb.TimeOf(p[2]); err != nil {
		return v, err
	}
	return v, nil
}

// redisDataError marks an error about the data (a taken ID, an invalid
// mutation, a corrupt value), not Redis failing.
type redisDataError struct{ error }

func (e redisDataError) Unwrap() error { return e.error }

func dataErr(format string, args ...any) error {
	return redisDataError{fmt.Errorf(format, args...)}
}

// redisErr adds op to err. A failure of Redis also wraps
// ErrStoreUnavailable, so that it reaches the client as "try again"; a
// taken group ID, an invalid mutation or the caller's ctx ending do not.
func redisErr(ctx context.Context, op string, err error) error {
	var de redisDataError
	if errors.As(err, &de) || errors.Is(err, protocol.ErrGroupExists) || errors.Is(err, protocol.ErrShuttingDown) ||
		(ctx.Err() != nil && redisdb.Canceled(err)) {
		return fmt.Errorf("signaling: redis store: %s: %w", op, err)
	}
	return fmt.Errorf("signaling: redis store: %s: %w: %w", op, protocol.ErrStoreUnavailable, err)
}

// errContention ends a call that lost the race for its watched keys
// redisMaxAttempts times.
var errContention = errors.New("watched keys kept changing")

// retryWatch runs f until it does not fail with redis.TxFailedErr (a
// watched key changed), at most redisMaxAttempts times.
func retryWatch(ctx context.Context, f func() error) error {
	for range redisMaxAttempts {
		err := f()
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return errContention
}

// Load implements Store.
func (s *RedisStore) Load(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("signaling: redis store: load: %w", err)
	}
	if s.closed.Load() {
		return nil, errRedisClosed
	}
	var snap *Snapshot
	err := retryWatch(ctx, func() error {
		return s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			var err error
			snap, err = s.loadTx(ctx, tx)
			return err
		}, s.k.invs(), s.k.groups(), s.k.ob())
	})
	if err != nil {
		return nil, redisErr(ctx, "load", err)
	}
	return snap, nil
}

// loadTx reads the indexes (watched), then every record in one MULTI/EXEC.
func (s *RedisStore) loadTx(ctx context.Context, tx *redis.Tx) (*Snapshot, error) {
	var invIDs, groupIDs, seqs *redis.StringSliceCmd
	if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
		invIDs = p.ZRange(ctx, s.k.invs(), 0, -1)
		groupIDs = p.ZRange(ctx, s.k.groups(), 0, -1)
		seqs = p.ZRange(ctx, s.k.ob(), 0, -1)
		return nil
	}); err != nil {
		return nil, err
	}
	var (
		invs, groups []*redis.MapStringStringCmd
		obs          []*redis.SliceCmd
		dataLens     []*redis.IntCmd
		users        *redis.StringSliceCmd
		status       *redis.MapStringStringCmd
	)
	if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range invIDs.Val() {
			invs = append(invs, p.HGetAll(ctx, s.k.inv(id)))
		}
		for _, id := range groupIDs.Val() {
			groups = append(groups, p.HGetAll(ctx, s.k.grp(id)))
		}
		for _, seq := range seqs.Val() {
			n, err := strconv.ParseInt(seq, 10, 64)
			if err != nil {
				return dataErr("outbox index holds %q", seq)
			}
			obs = append(obs, p.HMGet(ctx, s.k.obEntry(n), rfUser, rfSender, rfEvent, rfExpires))
			dataLens = append(dataLens, p.HStrLen(ctx, s.k.obEntry(n), rfData))
		}
		users = p.SMembers(ctx, s.k.users())
		status = p.HGetAll(ctx, s.k.status())
		return nil
	}); err != nil {
		return nil, err
	}

	snap := &Snapshot{Users: users.Val()}
	if st := status.Val(); len(st) > 0 {
		snap.CustomStatus = st
	}
	for i, id := range invIDs.Val() {
		r, err := decodeInvitation(id, invs[i].Val())
		if err != nil {
			return nil, dataErr("invitation %q: %w", id, err)
		}
		snap.Invitations = append(snap.Invitations, r)
	}
	for i, id := range groupIDs.Val() {
		g, err := decodeGroup(id, groups[i].Val())
		if err != nil {
			return nil, dataErr("group %q: %w", id, err)
		}
		snap.Groups = append(snap.Groups, g)
	}
	for i, seq := range seqs.Val() {
		v := obs[i].Val()
		user, _ := v[0].(string)
		sender, _ := v[1].(string)
		event, _ := v[2].(string)
		exp, _ := v[3].(string)
		expires, err := redisdb.TimeOf(exp)
		if err != nil {
			return nil, dataErr("outbox entry %s: %w", seq, err)
		}
		n, _ := strconv.ParseInt(seq, 10, 64)
		snap.Outbox = append(snap.Outbox, OutboxInfo{UserID: user, Seq: n, Sender: sender,
			Bytes: len(event) + int(dataLens[i].Val()), ExpiresAt: expires})
	}
	return snap, nil
}

func decodeInvitation(id string, h map[string]string) (InvitationRecord, error) {
	r := InvitationRecord{ID: id, Inviter: h[rfInviter], GroupID: h[rfGroup], Data: h[rfData], PushInfo: h[rfPush]}
	var err error
	if r.CreatedAt, err = redisdb.TimeOf(h[rfCreated]); err != nil {
		return r, err
	}
	if r.Deadline, err = redisdb.TimeOf(h[rfDeadline]); err != nil {
		return r, err
	}
	type at struct {
		pos int
		rec InviteeRecord
	}
	var invitees []at
	for f, v := range h {
		if !strings.HasPrefix(f, rfInvitee) {
			continue
		}
		e, err := unpackInvitee(v)
		if err != nil {
			return r, fmt.Errorf("invitee field %q: %w", f, err)
		}
		invitees = append(invitees, at{e.pos, InviteeRecord{UserID: f[len(rfInvitee):], State: e.state, UpdatedAt: e.at, Pushed: e.pushed}})
	}
	// Explicit positions: hash order means nothing.
	slices.SortFunc(invitees, func(a, b at) int { return cmp.Compare(a.pos, b.pos) })
	var noRing []string
	if v := h[rfNoRing]; v != "" {
		if noRing, err = redisdb.Unpack(v); err != nil {
			return r, fmt.Errorf("field %q: %w", rfNoRing, err)
		}
	}
	r.OnlineOnly = h[rfOnline] == "1"
	for _, e := range invitees {
		e.rec.NoRing = slices.Contains(noRing, e.rec.UserID)
		r.Invitees = append(r.Invitees, e.rec)
	}
	return r, nil
}

func decodeGroup(id string, h map[string]string) (GroupRecord, error) {
	g := GroupRecord{ID: id, Name: h[rfName], Owner: h[rfOwner], JoinOption: protocol.JoinOption(h[rfJoin])}
	var err error
	if g.CreatedAt, err = redisdb.TimeOf(h[rfCreated]); err != nil {
		return g, err
	}
	var members []redisMember
	for f, v := range h {
		if !strings.HasPrefix(f, rfMember) {
			continue
		}
		m, err := unpackMember(f[len(rfMember):], v)
		if err != nil {
			return g, fmt.Errorf("member field %q: %w", f, err)
		}
		members = append(members, m)
	}
	// Owner first, then by join time, then in the order they were added.
	slices.SortFunc(members, func(a, b redisMember) int {
		if ao, bo := a.rec.Role == protocol.RoleOwner, b.rec.Role == protocol.RoleOwner; ao != bo {
			if ao {
				return -1
			}
			return 1
		}
		if c := a.rec.JoinedAt.Compare(b.rec.JoinedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ord, b.ord)
	})
	for _, m := range members {
		g.Members = append(g.Members, m.rec)
	}
	return g, nil
}

// LoadOutbox implements Store.
func (s *RedisStore) LoadOutbox(ctx context.Context, user string, afterSeq int64, limit int) ([]OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("signaling: redis store: load outbox: %w", err)
	}
	if s.closed.Load() {
		return nil, errRedisClosed
	}
	rng := redis.ZRangeArgs{Key: s.k.obUser(user), Start: "(" + strconv.FormatInt(afterSeq, 10), Stop: "+inf", ByScore: true}
	if limit > 0 {
		rng.Count = int64(limit)
	}
	var out []OutboxEntry
	key := s.k.obUser(user)
	err := retryWatch(ctx, func() error {
		return s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			seqs, err := tx.ZRangeArgs(ctx, rng).Result()
			if err != nil || len(seqs) == 0 {
				out = nil
				return err
			}
			var cmds []*redis.MapStringStringCmd
			if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, seq := range seqs {
					cmds = append(cmds, p.HGetAll(ctx, s.k.obEntryOf(seq)))
				}
				return nil
			}); err != nil {
				return err
			}
			out = make([]OutboxEntry, 0, len(seqs))
			for i, seq := range seqs {
				e, err := decodeOutboxEntry(seq, cmds[i].Val())
				if err != nil {
					return dataErr("outbox entry %s of %q: %w", seq, user, err)
				}
				out = append(out, e)
			}
			return nil
		}, key)
	})
	if err != nil {
		return nil, redisErr(ctx, fmt.Sprintf("load outbox of %q", user), err)
	}
	return out, nil
}

func decodeOutboxEntry(seq string, h map[string]string) (OutboxEntry, error) {
	e := OutboxEntry{UserID: h[rfUser], Sender: h[rfSender], Event: h[rfEvent]}
	var err error
	if e.Seq, err = strconv.ParseInt(seq, 10, 64); err != nil {
		return e, fmt.Errorf("bad seq %q", seq)
	}
	if d, ok := h[rfData]; ok {
		e.Data = []byte(d)
	}
	if e.CreatedAt, err = redisdb.TimeOf(h[rfCreated]); err != nil {
		return e, err
	}
	if e.ExpiresAt, err = redisdb.TimeOf(h[rfExpires]); err != nil {
		return e, err
	}
	return e, nil
}
