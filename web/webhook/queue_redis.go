package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/redisdb"
)

// redisQueueAttempts bounds how often a call is tried again after another
// client changed a key it watches.
const redisQueueAttempts = 64

// RedisQueue is the Queue kept in Redis, every key under a prefix (see
// redisdb.Config.Prefix), shared by the servers of a cluster.
//
// Key layout (P is the prefix):
//
//	P wh:seq             the last Seq given
//	P wh:d:<seq>         HASH event url key body created attempts next (times in unix ms)
//	P wh:all             ZSET every queued Seq, scored by Seq (Len)
//	P wh:next            ZSET every queued Seq, scored by NextAt in unix ms
//	P wh:o:<url,key>     ZSET the Seqs of one URL and non-empty Key, scored by Seq (the head may go)
//
// Every change touches wh:next and Claim WATCHes it, so a Claim decides on
// one moment's queue and two servers never claim the same delivery: the
// loser of a race reads again. Add WATCHes wh:seq and gives Seqs in the
// order the Adds commit, so that a delivery never gets a lower Seq than
// one of its URL and Key already queued. Retry and Remove WATCH the
// delivery, so that they do nothing to one that is gone.
type RedisQueue struct {
	rdb redis.UniversalClient
	p   string
}

var _ Queue = (*RedisQueue)(nil)

// NewRedisQueue returns the queue kept in rdb under prefix. rdb stays
// owned by the caller.
func NewRedisQueue(rdb redis.UniversalClient, prefix string) (*RedisQueue, error) {
	if rdb == nil {
		return nil, errors.New("webhook queue: redis: nil client")
	}
	if prefix == "" {
		return nil, errors.New("webhook queue: redis: empty key prefix")
	}
	return &RedisQueue{rdb: rdb, p: prefix}, nil
}

// Hash fields of a delivery.
const (
	qfEvent    = "event"
	qfURL      = "url"
	qfKey      = "key"
	qfBody     = "body"
	qfCreated  = "created"
	qfAttempts = "attempts"
	qfNext     = "next"
)

func (q *RedisQueue) seqKey() string  { return q.p + "wh:seq" }
func (q *RedisQueue) allKey() string  { return q.p + "wh:all" }
func (q *RedisQueue) nextKey() string { return q.p + "wh:next" }
func (q *RedisQueue) dKey(seq int64) string {
	return q.p + "wh:d:" + strconv.FormatInt(seq, 10)
}
func (q *RedisQueue) orderKey(url, key string) string { return q.p + "wh:o:" + redisdb.Pack(url, key) }

// watchRetry runs f until no watched key changed under it.
func watchRetry(ctx context.Context, op string, f func() error) error {
	for range redisQueueAttempts {
		err := f()
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil {
				return fmt.Errorf("webhook queue: %s: %w", op, err)
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("webhook queue: %s: %w", op, err)
		}
	}
	return fmt.Errorf("webhook queue: %s: watched keys kept changing", op)
}

// Add implements Queue.
func (q *RedisQueue) Add(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook queue: add: %w", err)
	}
	if len(ds) == 0 {
		return nil
	}
	return watchRetry(ctx, "add", func() error {
		return q.rdb.Watch(ctx, func(tx *redis.Tx) error {
			last, err := tx.Get(ctx, q.seqKey()).Int64()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for i, d := range ds {
					seq := last + int64(i) + 1
					next := d.NextAt.UnixMilli()
					p.HSet(ctx, q.dKey(seq), qfEvent, d.EventID, qfURL, d.URL, qfKey, d.Key, qfBody, string(d.Body),
						qfCreated, d.CreatedAt.UnixMilli(), qfAttempts, d.Attempts, qfNext, next)
					z := redis.Z{Score: float64(seq), Member: seq}
					p.ZAdd(ctx, q.allKey(), z)
					p.ZAdd(ctx, q.nextKey(), redis.Z{Score: float64(next), Member: seq})
					if d.Key != "" {
						p.ZAdd(ctx, q.orderKey(d.URL, d.Key), z)
					}
				}
				p.Set(ctx, q.seqKey(), last+int64(len(ds)), 0)
				return nil
			})
			return err
		}, q.seqKey())
	})
}

// Claim implements Queue.
func (q *RedisQueue) Claim(ctx context.Context, now, leaseUntil time.Time, n int) ([]Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webhook queue: claim: %w", err)
	}
	if n <= 0 {
		return nil, nil
	}
	var out []Delivery
	err := watchRetry(ctx, "claim", func() error {
		return q.rdb.Watch(ctx, func(tx *redis.Tx) error {
			var err error
			out, err = q.claimTx(ctx, tx, now, leaseUntil, n)
			return err
		}, q.nextKey())
	})
	return out, err
}

// claimTx picks the due deliveries that head their URL and Key, by Seq,
// and leases them in one MULTI/EXEC (wh:next watched).
func (q *RedisQueue) claimTx(ctx context.Context, tx *redis.Tx, now, leaseUntil time.Time, n int) ([]Delivery, error) {
	members, err := tx.ZRangeArgs(ctx, redis.ZRangeArgs{Key: q.nextKey(), Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10), ByScore: true}).Result()
	if err != nil || len(members) == 0 {
		return nil, err
	}
	due := make([]int64, len(members))
	for i, m := range members {
		if due[i], err = strconv.ParseInt(m, 10, 64); err != nil {
			return nil, fmt.Errorf("bad queue member %q", m)
		}
	}
	slices.Sort(due)
	// Which URL and Key each due delivery has, then the head of each.
	var ukCmds []*redis.SliceCmd
	if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, seq := range due {
			ukCmds = append(ukCmds, p.HMGet(ctx, q.dKey(seq), qfURL, qfKey))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	orderKeys := make([]string, len(due)) // "" for no Key
	heads := map[string]*redis.StringSliceCmd{}
	if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range due {
			v := ukCmds[i].Val()
			url, _ := v[0].(string)
			key, _ := v[1].(string)
			if key == "" {
				continue
			}
			ok := q.orderKey(url, key)
			orderKeys[i] = ok
			if heads[ok] == nil {
				heads[ok] = p.ZRange(ctx, ok, 0, 0)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var picked []int64
	for i, seq := range due {
		if len(picked) == n {
			break
		}
		if ok := orderKeys[i]; ok != "" {
			if h := heads[ok].Val(); len(h) != 1 || h[0] != strconv.FormatInt(seq, 10) {
				continue // an earlier delivery of its URL and Key is queued
			}
		}
		picked = append(picked, seq)
	}
	if len(picked) == 0 {
		return nil, nil
	}
	lease := leaseUntil.UnixMilli()
	var reads []*redis.MapStringStringCmd
	if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, seq := range picked {
			reads = append(reads, p.HGetAll(ctx, q.dKey(seq)))
			p.HSet(ctx, q.dKey(seq), qfNext, lease)
			p.ZAdd(ctx, q.nextKey(), redis.Z{Score: float64(lease), Member: seq})
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]Delivery, len(picked))
	for i, seq := range picked {
		h := reads[i].Val()
		created, err1 := strconv.ParseInt(h[qfCreated], 10, 64)
		attempts, err2 := strconv.Atoi(h[qfAttempts])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("delivery %d: %w", seq, err)
		}
		out[i] = Delivery{Seq: seq, EventID: h[qfEvent], URL: h[qfURL], Key: h[qfKey], Body: []byte(h[qfBody]),
			CreatedAt: time.UnixMilli(created).UTC(), Attempts: attempts, NextAt: time.UnixMilli(lease).UTC()}
	}
	return out, nil
}

// Retry implements Queue.
func (q *RedisQueue) Retry(ctx context.Context, seq int64, attempts int, next time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook queue: retry: %w", err)
	}
	key := q.dKey(seq)
	return watchRetry(ctx, "retry", func() error {
		return q.rdb.Watch(ctx, func(tx *redis.Tx) error {
			if n, err := tx.Exists(ctx, key).Result(); err != nil || n == 0 {
				return err // missing: not an error
			}
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, qfAttempts, attempts, qfNext, next.UnixMilli())
				p.ZAdd(ctx, q.nextKey(), redis.Z{Score: float64(next.UnixMilli()), Member: seq})
				return nil
			})
			return err
		}, key)
	})
}

// Remove implements Queue.
func (q *RedisQueue) Remove(ctx context.Context, seq int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook queue: remove: %w", err)
	}
	key := q.dKey(seq)
	return watchRetry(ctx, "remove", func() error {
		return q.rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.HMGet(ctx, key, qfURL, qfKey).Result()
			if err != nil {
				return err
			}
			url, found := v[0].(string)
			if !found {
				return nil // missing: not an error
			}
			okey, _ := v[1].(string)
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, key)
				p.ZRem(ctx, q.allKey(), seq)
				p.ZRem(ctx, q.nextKey(), seq)
				if okey != "" {
					p.ZRem(ctx, q.orderKey(url, okey), seq)
				}
				return nil
			})
			return err
		}, key)
	})
}

// Len implements Queue.
func (q *RedisQueue) Len(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("webhook queue: len: %w", err)
	}
	n, err := q.rdb.ZCard(ctx, q.allKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("webhook queue: len: %w", err)
	}
	return int(n), nil
}

// NextAfter implements Queue.
func (q *RedisQueue) NextAfter(ctx context.Context, t time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("webhook queue: next: %w", err)
	}
	zs, err := q.rdb.ZRangeByScoreWithScores(ctx, q.nextKey(), &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(t.UnixMilli(), 10), Max: "+inf", Count: 1}).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("webhook queue: next: %w", err)
	}
	if len(zs) == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(int64(zs[0].Score)).UTC(), nil
}
