package calls

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// redisRecordsAttempts bounds how often a SaveCall is tried again after a
// concurrent SaveCall of the same call, and a read again after a record
// changed under it; past it the call fails with ErrStoreUnavailable.
const redisRecordsAttempts = 64

// RedisRecords is the RecordStore kept in Redis, every key under a prefix
// (see redisdb.Config.Prefix), for a cluster of servers sharing one Redis.
//
// Key layout (P is the prefix):
//
//	P calls:rec:<callID>          STRING the record, packed (redisdb.Pack)
//	P calls:h:<filter>:<user>     ZSET the user's calls under filter (all, out, in, missed), by position
//	P calls:open                  ZSET the running calls (EndedAt zero), by position
//	P calls:hb                    HASH node → its last heartbeat
//
// The sorted sets have every score 0 and order by member: a position is 16
// hex digits of CreatedAt's unix nanoseconds (sign bit flipped, so that
// byte order is time order) followed by the CallID, the order History and
// OpenCalls need (History reads it backwards, with ZREVRANGEBYLEX, from
// after the cursor's position). Times are unix nanoseconds, so they come
// back equal, in UTC.
//
// SaveCall WATCHes the call's record, reads it to know which index entries
// the old version had, and replaces the record and the entries in one
// MULTI/EXEC (again if a concurrent SaveCall of the call won). A record is
// one value, so a reader never sees half of one; History and OpenCalls read
// the index, then the records, and start again if a record no longer
// belongs where the index put it.
//
// Heartbeats are per node: in a cluster each server records its own, and
// LastHeartbeat is this node's; Heartbeats lists every node's (a restarting
// node in cluster mode ends a call at the latest heartbeat of the nodes
// that had it: clusterCalls.recoverOpenCalls).
//
// In cluster mode the manager does not call SaveCall: it commits a call's
// record in the MULTI/EXEC of the decision that changed it (queueSaves).
//
// A failure of Redis wraps protocol.ErrStoreUnavailable; a record that
// cannot be stored wraps ErrInvalidRecord.
type RedisRecords struct {
	rdb  redis.UniversalClient
	p    string // key prefix
	node string
}

var _ RecordStore = (*RedisRecords)(nil)

// NewRedisRecords returns the records kept in rdb under prefix, whose
// heartbeats are node's. rdb stays owned by the caller.
func NewRedisRecords(rdb redis.UniversalClient, prefix, node string) (*RedisRecords, error) {
	switch {
	case rdb == nil:
		return nil, errors.New("calls: redis records: nil client")
	case prefix == "":
		return nil, errors.New("calls: redis records: empty key prefix")
	case node == "":
		return nil, errors.New("calls: redis records: empty node ID")
	}
	return &RedisRecords{rdb: rdb, p: prefix, node: node}, nil
}

// The history indexes, one per filter.
const (
	idxAll      = "all"
	idxOutgoing = "out"
	idxIncoming = "in"
	idxMissed   = "missed"
)

func (r *RedisRecords) recKey(id string) string { return r.p + "calls:rec:" + id }
func (r *RedisRecords) histKey(idx, user string) string {
	return r.p + "calls:h:" + idx + ":" + user
}
func (r *RedisRecords) openKey() string { return r.p + "calls:open" }
func (r *RedisRecords) hbKey() string   { return r.p + "calls:hb" }

func filterIndex(f HistoryFilter) string {
	switch f {
	case FilterOutgoing:
		return idxOutgoing
	case FilterIncoming:
		return idxIncoming
	case FilterMissed:
		return idxMissed
	}
	return idxAll
}

// member encodes p as a sorted-set member whose byte order is time order,
// then CallID order.
func (p historyPos) member() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(p.createdAt)^(1<<63))
	return hex.EncodeToString(b[:]) + p.callID
}

func posOfMember(m string) (historyPos, error) {
	if len(m) < 16 {
		return historyPos{}, fmt.Errorf("bad index member %q", m)
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(m[:16])); err != nil {
		return historyPos{}, fmt.Errorf("bad index member %q", m)
	}
	return historyPos{createdAt: int64(binary.BigEndian.Uint64(b[:]) ^ (1 << 63)), callID: m[16:]}, nil
}

// indexEntry is one sorted-set member that a record has.
type indexEntry struct{ key, member string }

// entries returns the index entries of rec (see HistoryFilter).
func (r *RedisRecords) entries(rec CallRecord) []indexEntry {
	m := positionOf(rec).member()
	out := []indexEntry{{r.histKey(idxAll, rec.Caller), m}, {r.histKey(idxOutgoing, rec.Caller), m}}
	seen := map[string]bool{rec.Caller: true}
	for _, p := range rec.Participants {
		if seen[p.UserID] {
			continue
		}
		seen[p.UserID] = true
		out = append(out, indexEntry{r.histKey(idxAll, p.UserID), m}, indexEntry{r.histKey(idxIncoming, p.UserID), m})
		if inHistory(rec, p.UserID, FilterMissed) {
			out = append(out, indexEntry{r.histKey(idxMissed, p.UserID), m})
		}
	}
	if rec.EndedAt.IsZero() {
		out = append(out, indexEntry{r.openKey(), m})
	}
	return out
}

// recordFields is the number of packed fields of a record before its
// participants, and participantFields of each participant.
const (
	recordVersion     = "1"
	recordFields      = 13
	participantFields = 8
)

func packRecord(rec CallRecord) string {
	parts := make([]string, 0, recordFields+participantFields*len(rec.Participants))
	parts = append(parts, recordVersion, rec.CallID, rec.Caller, rec.GroupID, rec.RoomID, rec.MediaType,
		redisdb.Time(rec.CreatedAt), redisdb.Time(rec.BeganAt), redisdb.Time(rec.EndedAt),
		strconv.FormatInt(int64(rec.Duration), 10), string(rec.Result), string(rec.EndReason), rec.EndedBy)
	for _, p := range rec.Participants {
		parts = append(parts, p.UserID, string(p.Role), redisdb.Time(p.InvitedAt), redisdb.Time(p.AnsweredAt),
			string(p.Answer), redisdb.Time(p.JoinedAt), redisdb.Time(p.LeftAt), string(p.Result))
	}
	return redisdb.Pack(parts...)
}

func unpackRecord(s string) (CallRecord, error) {
	f, err := redisdb.Unpack(s)
	if err != nil {
		return CallRecord{}, err
	}
	if len(f) < recordFields || (len(f)-recordFields)%participantFields != 0 || f[0] != recordVersion {
		return CallRecord{}, fmt.Errorf("bad record of %d fields", len(f))
	}
	var errs []error
	tm := func(s string) time.Time {
		t, err := redisdb.TimeOf(s)
		errs = append(errs, err)
		return t
	}
	d, err := strconv.ParseInt(f[9], 10, 64)
	errs = append(errs, err)
	rec := CallRecord{CallID: f[1], Caller: f[2], GroupID: f[3], RoomID: f[4], MediaType: f[5],
		CreatedAt: tm(f[6]), BeganAt: tm(f[7]), EndedAt: tm(f[8]), Duration: time.Duration(d),
		Result: Result(f[10]), EndReason: EndReason(f[11]), EndedBy: f[12]}
	for p := f[recordFields:]; len(p) > 0; p = p[participantFields:] {
		rec.Participants = append(rec.Participants, ParticipantRecord{UserID: p[0], Role: Role(p[1]),
			InvitedAt: tm(p[2]), AnsweredAt: tm(p[3]), Answer: Answer(p[4]), JoinedAt: tm(p[5]), LeftAt: tm(p[6]), Result: Result(p[7])})
	}
	if err := errors.Join(errs...); err != nil {
		return CallRecord{}, err
	}
	return rec, nil
}

// redisErr adds op to err; a failure of Redis, as opposed to the caller's
// ctx ending, also wraps protocol.ErrStoreUnavailable.
func redisErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && redisdb.Canceled(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, protocol.ErrStoreUnavailable, err)
}

// errRecordsContention ends a call that kept losing races.
var errRecordsContention = errors.New("records kept changing")

// SaveCall implements RecordStore.
func (r *RedisRecords) SaveCall(ctx context.Context, rec CallRecord) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("calls: redis records: save call %q: %w", rec.CallID, err)
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRecord(rec); err != nil {
		return err
	}
	rec = cloneRecord(rec)
	key := r.recKey(rec.CallID)
	packed := packRecord(rec)
	add := r.entries(rec)
	for range redisRecordsAttempts {
		err := r.rdb.Watch(ctx, func(tx *redis.Tx) error {
			old, err := tx.Get(ctx, key).Result()
			var remove []indexEntry
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				return err
			default:
				prev, err := unpackRecord(old)
				if err != nil {
					return fmt.Errorf("stored record: %w", err)
				}
				remove = r.entries(prev)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, e := range remove {
					p.ZRem(ctx, e.key, e.member)
				}
				for _, e := range add {
					p.ZAdd(ctx, e.key, redis.Z{Member: e.member})
				}
				p.Set(ctx, key, packed, 0)
				return nil
			})
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil {
				return redisErr(ctx, "write", err)
			}
			return nil
		}
	}
	return redisErr(ctx, "write", errRecordsContention)
}

// readIndex reads the records whose positions ZRANGEBYLEX (or ZREVRANGEBYLEX
// when rev) returns from key, and checks each still belongs there (ok).
// It starts again when one does not.
func (r *RedisRecords) readIndex(ctx context.Context, key string, rng *redis.ZRangeBy, rev bool, ok func(CallRecord) bool) ([]CallRecord, error) {
	for range redisRecordsAttempts {
		var members []string
		var err error
		if rev {
			members, err = r.rdb.ZRevRangeByLex(ctx, key, rng).Result()
		} else {
			members, err = r.rdb.ZRangeByLex(ctx, key, rng).Result()
		}
		if err != nil || len(members) == 0 {
			return nil, err
		}
		keys := make([]string, len(members))
		pos := make([]historyPos, len(members))
		for i, m := range members {
			if pos[i], err = posOfMember(m); err != nil {
				return nil, err
			}
			keys[i] = r.recKey(pos[i].callID)
		}
		vals, err := r.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, err
		}
		recs := make([]CallRecord, 0, len(vals))
		for i, v := range vals {
			s, isStr := v.(string)
			if !isStr {
				break // replaced meanwhile: read again
			}
			rec, err := unpackRecord(s)
			if err != nil {
				return nil, fmt.Errorf("record %q: %w", pos[i].callID, err)
			}
			if positionOf(rec) != pos[i] || !ok(rec) {
				break
			}
			recs = append(recs, rec)
		}
		if len(recs) == len(vals) {
			return recs, nil
		}
	}
	return nil, errRecordsContention
}

// History implements RecordStore.
func (r *RedisRecords) History(ctx context.Context, user string, filter HistoryFilter, limit int, cursor string) ([]CallRecord, string, error) {
	fail := func(err error) ([]CallRecord, string, error) {
		return nil, "", fmt.Errorf("calls: redis records: history of %q: %w", user, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	filter, err := checkFilter(filter)
	if err != nil {
		return fail(err)
	}
	after, err := decodeCursor(cursor)
	if err != nil {
		return fail(err)
	}
	limit = historyLimit(limit)
	rng := &redis.ZRangeBy{Min: "-", Max: "+", Count: int64(limit) + 1} // one more tells whether there is a next page
	if after != nil {
		rng.Max = "(" + after.member()
	}
	recs, err := r.readIndex(ctx, r.histKey(filterIndex(filter), user), rng, true,
		func(rec CallRecord) bool { return inHistory(rec, user, filter) })
	if err != nil {
		return fail(redisErr(ctx, "read", err))
	}
	if len(recs) <= limit {
		return recs, "", nil
	}
	recs = recs[:limit:limit]
	return recs, positionOf(recs[limit-1]).cursor(), nil
}

// OpenCalls implements RecordStore. The records come oldest CreatedAt first
// (ties by CallID ascending).
func (r *RedisRecords) OpenCalls(ctx context.Context) ([]CallRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("calls: redis records: open calls: %w", err)
	}
	recs, err := r.readIndex(ctx, r.openKey(), &redis.ZRangeBy{Min: "-", Max: "+"}, false,
		func(rec CallRecord) bool { return rec.EndedAt.IsZero() })
	if err != nil {
		return nil, fmt.Errorf("calls: redis records: open calls: %w", redisErr(ctx, "read", err))
	}
	return recs, nil
}

// Heartbeat implements RecordStore: it records this node's heartbeat. The
// last call wins, even with an earlier time (the clock may have been set
// back).
func (r *RedisRecords) Heartbeat(ctx context.Context, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("calls: redis records: heartbeat: %w", err)
	}
	if err := checkHeartbeat(at); err != nil {
		return fmt.Errorf("calls: redis records: heartbeat: %w", err)
	}
	if err := r.rdb.HSet(ctx, r.hbKey(), r.node, redisdb.Time(at)).Err(); err != nil {
		return fmt.Errorf("calls: redis records: heartbeat: %w", redisErr(ctx, "write", err))
	}
	return nil
}

// LastHeartbeat implements RecordStore: this node's last heartbeat.
func (r *RedisRecords) LastHeartbeat(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("calls: redis records: last heartbeat: %w", err)
	}
	s, err := r.rdb.HGet(ctx, r.hbKey(), r.node).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("calls: redis records: last heartbeat: %w", redisErr(ctx, "read", err))
	}
	at, err := redisdb.TimeOf(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("calls: redis records: last heartbeat: %w", err)
	}
	return at, nil
}

// Heartbeats returns every node's last heartbeat, by node ID.
func (r *RedisRecords) Heartbeats(ctx context.Context) (map[string]time.Time, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("calls: redis records: heartbeats: %w", err)
	}
	all, err := r.rdb.HGetAll(ctx, r.hbKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("calls: redis records: heartbeats: %w", redisErr(ctx, "read", err))
	}
	out := make(map[string]time.Time, len(all))
	for node, s := range all {
		at, err := redisdb.TimeOf(s)
		if err != nil {
			return nil, fmt.Errorf("calls: redis records: heartbeat of %q: %w", node, err)
		}
		out[node] = at
	}
	return out, nil
}

// storedKeys are the keys of the stored records of calls ids (for a
// caller's WATCH and MGET: readStored).
func (r *RedisRecords) storedKeys(ids []string) []string {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.recKey(id)
	}
	return keys
}

// queueSaves queues in p (the caller's MULTI/EXEC, whose WATCH of the
// records' keys guarantees that stored holds their current packed
// versions, absent for none) the replacement of recs (SaveCall's writes):
// in cluster mode a call decision commits the records it changes with the
// state they record, so that two nodes' saves of one call cannot land out
// of order.
func (r *RedisRecords) queueSaves(ctx context.Context, p redis.Pipeliner, stored map[string]string, recs []CallRecord) error {
	for _, rec := range recs {
		if err := checkRecord(rec); err != nil {
			return fmt.Errorf("calls: redis records: save call %q: %w", rec.CallID, err)
		}
	}
	for _, rec := range recs {
		if s, ok := stored[rec.CallID]; ok {
			prev, err := unpackRecord(s)
			if err != nil {
				return fmt.Errorf("calls: redis records: stored record %q: %w", rec.CallID, err)
			}
			for _, e := range r.entries(prev) {
				p.ZRem(ctx, e.key, e.member)
			}
		}
		for _, e := range r.entries(rec) {
			p.ZAdd(ctx, e.key, redis.Z{Member: e.member})
		}
		p.Set(ctx, r.recKey(rec.CallID), packRecord(rec), 0)
	}
	return nil
}
