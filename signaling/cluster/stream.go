package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is one entry of a node's stream `ev:<node>`.
type Event struct {
	ID      string // the stream entry ID (StreamIDMs-n, n = Seq-1; an entry of an older build: Redis's clock, ms-seq)
	Seq     int64  // its number in the stream: 1, 2, 3... (restarts if the stream is deleted or lost)
	Payload []byte
}

// StreamIDMs is the first part of every stream entry ID Append writes:
// XADD with the ID StreamIDMs-* numbers the entries itself (Redis gives
// the second part the last entry's plus one, from 0 in a stream that is
// new or was lost), so an entry's ID is its sequence number (Seq - 1) and
// the append needs no script (a script's call cost Redis about three times
// the XADD's). It is above any millisecond clock (year 287,000), so that
// the first append to a stream written by an older build (IDs from
// Redis's clock, the number in an "s" field) works, and an older build's
// append after it (XADD *, its clock below the stream's last ID) gets the
// ID StreamIDMs-<next>: the numbering goes on (an older build's reader
// reports entries without an "s" field as a loss, and handles them).
const StreamIDMs = "9000000000000000"

// streamAppendID is the ID argument of XADD for an Append.
const streamAppendID = StreamIDMs + "-*"

// StreamAppendID is the XADD ID argument of an append (for scripts that
// append as Append does).
func StreamAppendID() string { return streamAppendID }

// Append queues, in pipe (typically the caller's MULTI/EXEC, next to the
// state change that decided the event), the append of payload to node's
// stream. The entry gets the stream's next sequence number (its ID,
// StreamIDMs); past Config.StreamMaxLen entries, the oldest is dropped
// (the node's Reader reports the gap to its Lost handler). The returned
// command's value, after Exec, is the entry ID.
func (k Keyspace) Append(ctx context.Context, pipe redis.Pipeliner, node string, payload []byte) *redis.Cmd {
	return pipe.Do(ctx, "xadd", k.StreamKey(node), "maxlen", k.maxLen, streamAppendID, "p", payload)
}

// ReaderParams configure a Reader.
type ReaderParams struct {
	Params
	// Handle is called for each entry of this node's stream, in order,
	// from one goroutine. Entries are trimmed after each batch is handled
	// (with the next read):
	// if the node dies mid-batch, that batch's entries go to DeadEvents
	// (at least once).
	Handle func(ctx context.Context, ev Event)
	// Lost, if set, is called before the entry that follows a gap: n
	// entries were dropped unread (the stream was past StreamMaxLen), or
	// n < 0 when the sequence restarted (Redis lost the stream, or the
	// node was declared dead and its stream handed over): an unknown
	// number of events may be missing.
	Lost func(ctx context.Context, n int64)
}

// Reader reads this node's stream with XREAD BLOCK from the last entry it
// handled, hands each entry to Handle, then trims what it handled (XTRIM
// MINID) and records its position in `evpos:<node>`, in the pipeline of
// its next read (one round trip per batch). It resumes by itself after
// Redis fails or restarts.
type Reader struct {
	p    ReaderParams
	ks   Keyspace
	life life
}

// streamBlock is how long one XREAD waits for entries; Close waits at
// most about this long (go-redis cannot interrupt a blocked read).
const streamBlock = 500 * time.Millisecond

// NewReader returns the reader of p.NodeID's stream.
func NewReader(p ReaderParams) (*Reader, error) {
	if err := p.check("stream reader"); err != nil {
		return nil, err
	}
	if p.Handle == nil {
		return nil, fmt.Errorf("%w: stream reader: no Handle", ErrConfig)
	}
	return &Reader{p: p, ks: NewKeyspace(p.Prefix, p.Config), life: newLife()}, nil
}

// Start starts reading.
func (r *Reader) Start() error { return r.life.start(r.run) }

// Close stops reading; it returns once no Handle call is running.
func (r *Reader) Close() { r.life.stop() }

// position is where the reader is: the last entry handled, and its
// sequence number (0: unknown).
type position struct {
	id  string
	seq int64
}

func (p position) String() string { return p.id + " " + strconv.FormatInt(p.seq, 10) }

func parsePosition(s string) position {
	id, seq, _ := strings.Cut(s, " ")
	n, _ := strconv.ParseInt(seq, 10, 64)
	return position{id: id, seq: n}
}

func (r *Reader) run(ctx context.Context) {
	rt := newRetrier(r.p.Logger, "stream reader", r.p.Config.MaxBackoff)
	posKey := r.ks.streamPos(r.p.NodeID)
	pos, loaded := position{id: "0-0"}, false
	trimmed := true // the position in Redis is pos
	defer func() {
		// What was handled last is trimmed and recorded as the reader
		// stops (the trim's own deadline; it runs after ctx's end).
		if !trimmed {
			_ = r.trim(ctx, pos)
		}
	}()
	for ctx.Err() == nil {
		if !loaded {
			cctx, cancel := opCtx(ctx, r.p.Config)
			s, err := r.p.Client.Get(cctx, posKey).Result()
			cancel()
			switch {
			case err == nil:
				pos = parsePosition(s)
			case err != redis.Nil:
				if !sleep(ctx, rt.fail(err)) {
					return
				}
				continue
			}
			loaded = true
		}
		cctx, cancel := context.WithTimeout(ctx, streamBlock+r.p.Config.OpTimeout)
		var res []redis.XStream
		var err error
		res, trimmed, err = r.read(cctx, pos, trimmed)
		cancel()
		if err == redis.Nil {
			rt.ok()
			// Nothing after pos: if the stream was lost, its new entries
			// may have IDs at or below pos; read it again from the start.
			if pos.id != "0-0" && r.restarted(ctx, pos) {
				pos.id, trimmed = "0-0", true
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !sleep(ctx, rt.fail(err)) {
				return
			}
			continue
		}
		rt.ok()
		for _, s := range res {
			for _, msg := range s.Messages {
				ev := parseEvent(msg)
				if r.p.Lost != nil && pos.seq > 0 {
					if ev.Seq > pos.seq+1 {
						r.p.Lost(ctx, ev.Seq-pos.seq-1)
					} else if ev.Seq <= pos.seq {
						r.p.Lost(ctx, -1)
					}
				}
				r.p.Handle(ctx, ev)
				pos = position{id: msg.ID, seq: ev.Seq}
			}
		}
		// The trim goes with the next read (a failed one is retried with
		// the one after); the position in memory is what matters while
		// this node lives.
		trimmed = false
	}
}

// read reads the entries after pos (XREAD BLOCK). Unless trimmed, the
// handled entries' trim and the position's record (as trim does) go
// first, in the same pipeline: one round trip per batch read. The
// pipeline's replies are read within the client's ReadTimeout (go-redis:
// 3 s unless set) or ctx's deadline, whichever is first; both are above
// streamBlock. It reports whether the trim is done.
func (r *Reader) read(ctx context.Context, pos position, trimmed bool) ([]redis.XStream, bool, error) {
	args := &redis.XReadArgs{Streams: []string{r.ks.StreamKey(r.p.NodeID), pos.id}, Count: r.p.Config.StreamBatch, Block: streamBlock}
	if trimmed {
		res, err := r.p.Client.XRead(ctx, args).Result()
		return res, true, err
	}
	var trim *redis.IntCmd
	var set *redis.StatusCmd
	var xr *redis.XStreamSliceCmd
	_, _ = r.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		trim, set = r.queueTrim(ctx, p, pos)
		xr = p.XRead(ctx, args)
		return nil
	})
	res, err := xr.Result()
	return res, trim.Err() == nil && set.Err() == nil, err
}

// restarted reports whether the stream was lost and started again (Redis
// restarted without its data, or this node was declared dead and its
// stream handed over): its sequence is below pos's and the reader's
// recorded position is gone with it. Its new entries get IDs from Redis's
// clock, which may be at or below pos's (the same millisecond, or a clock
// set back), and a read after pos would wait past them. A stream rolled
// back instead (a restart that lost the last writes of its append-only
// file) keeps a recorded position, and its entries up to pos were handled:
// not restarted. An error counts as no.
func (r *Reader) restarted(ctx context.Context, pos position) bool {
	if pos.seq == 0 {
		return false
	}
	ctx, cancel := opCtx(ctx, r.p.Config)
	defer cancel()
	var info *redis.XInfoStreamCmd
	var rec *redis.StringCmd
	_, _ = r.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		info = p.XInfoStream(ctx, r.ks.StreamKey(r.p.NodeID))
		rec = p.Get(ctx, r.ks.streamPos(r.p.NodeID))
		return nil
	})
	if rec.Err() != redis.Nil {
		return false // recorded (rolled back at most), or an error
	}
	var n int64 // the stream's last sequence number; 0 when it is gone
	switch err := info.Err(); {
	case err == nil:
		var ok bool
		if n, ok = seqOfID(info.Val().LastGeneratedID); !ok {
			return false // an older build's entries: numbered in them
		}
	case strings.Contains(err.Error(), "no such key"):
	default:
		return false
	}
	return n < pos.seq
}

// trim deletes the handled entries and records the position, in one MULTI.
// It runs even when Close has begun (bounded by OpTimeout), so that a
// reader that stops has recorded what it handled.
func (r *Reader) trim(ctx context.Context, pos position) error {
	ctx, cancel := opCtx(context.WithoutCancel(ctx), r.p.Config)
	defer cancel()
	_, err := r.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		r.queueTrim(ctx, p, pos)
		return nil
	})
	return err
}

// queueTrim queues the deletion of the entries up to pos, then the record
// of pos, in this order. No MULTI is needed: if the record fails after
// the trim (Redis refuses the SET when out of memory), a reader that
// starts again reads on from the older recorded position, after which the
// handled entries are gone (nothing is handled twice). Redis runs the two
// in order and refuses neither alone otherwise.
func (r *Reader) queueTrim(ctx context.Context, p redis.Pipeliner, pos position) (*redis.IntCmd, *redis.StatusCmd) {
	return p.XTrimMinID(ctx, r.ks.StreamKey(r.p.NodeID), NextStreamID(pos.id)),
		p.Set(ctx, r.ks.streamPos(r.p.NodeID), pos.String(), 0)
}

// seqOfID is the sequence number of an entry ID Append wrote (false: not
// one: 0-0, or an older build's).
func seqOfID(id string) (int64, bool) {
	ms, n, ok := strings.Cut(id, "-")
	if !ok || ms != StreamIDMs {
		return 0, false
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil || v < 0 || v == 1<<63-1 {
		return 0, false
	}
	return v + 1, true
}

// parseEvent reads an entry written by Append (or by an older build's
// append script: the number in its "s" field).
func parseEvent(msg redis.XMessage) Event {
	ev := Event{ID: msg.ID}
	if seq, ok := seqOfID(msg.ID); ok {
		ev.Seq = seq
	} else if s, ok := msg.Values["s"].(string); ok {
		ev.Seq, _ = strconv.ParseInt(s, 10, 64)
	}
	if p, ok := msg.Values["p"].(string); ok {
		ev.Payload = []byte(p)
	}
	return ev
}

// NextStreamID is the smallest stream ID after id ("ms-seq"), for XTRIM
// MINID, which keeps IDs at or above it.
func NextStreamID(id string) string {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return id
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return id
	}
	if n == ^uint64(0) {
		m, _ := strconv.ParseUint(ms, 10, 64)
		return strconv.FormatUint(m+1, 10) + "-0"
	}
	return ms + "-" + strconv.FormatUint(n+1, 10)
}
