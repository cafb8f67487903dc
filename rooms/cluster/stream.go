package roomcluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// entry is one entry of a relay stream `rm:<node>`: fields k (kind), n
// (the sending node), c (the connection ID on the forwarding node; "" for
// an internal request) and p (payload: a request's or reply's JSON, an
// event's frame).
type entry struct {
	kind    string
	from    string
	conn    string
	payload []byte
}

// requestPayload is a forwarded request.
type requestPayload struct {
	ID       string          `json:"id"`
	User     string          `json:"u"`
	Op       string          `json:"o"`
	Args     json.RawMessage `json:"a,omitempty"`
	Deadline int64           `json:"d"` // Unix ms: past it nobody waits for the reply
}

// replyPayload is a request's reply: Moved (enterRoom: another live node
// owns the room), or Err, or Result.
type replyPayload struct {
	ID     string          `json:"id"`
	Result json.RawMessage `json:"r,omitempty"`
	Err    *protocol.Error `json:"e,omitempty"`
	Moved  string          `json:"m,omitempty"`
	// lost (never on the wire): the node was declared dead while the
	// request waited for it (Relay.nodeDead).
	lost bool
}

// sender writes the entries for one node's stream, in order, pipelining
// what has queued up.
type sender struct {
	node string
	ch   chan entry
	stop chan struct{} // closed when the node is dead: the sender ends
}

// send queues e for node's stream; it never blocks (a full queue drops e,
// logged). It may be called with rooms' lock held.
func (r *Relay) send(node string, e entry) bool {
	r.mu.Lock()
	if r.closed && r.flushed() {
		r.mu.Unlock()
		return false
	}
	s := r.senders[node]
	if s == nil {
		if r.closed {
			r.mu.Unlock()
			return false
		}
		s = &sender{node: node, ch: make(chan entry, sendQueue), stop: make(chan struct{})}
		r.senders[node] = s
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.runSender(s) }()
	}
	r.mu.Unlock()
	e.from = r.self
	select {
	case s.ch <- e:
		return true
	default:
		r.log.Error("relay queue to a node full: entry dropped", "to", node, "kind", e.kind)
		return false
	}
}

// flushed reports whether Close has stopped the relay.
func (r *Relay) flushed() bool { return r.ctx.Err() != nil }

// dropSender ends node's sender (the node is dead).
func (r *Relay) dropSenderLocked(node string) {
	if s := r.senders[node]; s != nil {
		delete(r.senders, node)
		close(s.stop)
	}
}

func (r *Relay) runSender(s *sender) {
	batch := make([]entry, 0, sendBatch)
	for {
		batch = batch[:0]
		select {
		case <-s.stop:
			return
		case <-r.flush:
			// Close: write what is queued, then end.
			for len(s.ch) > 0 && time.Now().UnixMilli() < r.flushBy.Load() {
				batch = batch[:0]
				for len(batch) < sendBatch && len(s.ch) > 0 {
					batch = append(batch, <-s.ch)
				}
				r.write(s, batch)
			}
			return
		case e := <-s.ch:
			batch = append(batch, e)
		}
		for len(batch) < sendBatch && len(s.ch) > 0 {
			batch = append(batch, <-s.ch)
		}
		r.write(s, batch)
	}
}

// write appends batch to node's stream in one pipeline (and renews the
// stream's expiry). A failed write (Redis unreachable) is retried with
// back-off, so that the node's entries stay in order, for at most the
// request timeout (past it the replies are late and the events stale:
// dropped, logged), or until the node is found dead or Close's flush ends.
func (r *Relay) write(s *sender, batch []entry) {
	give := time.Now().Add(r.p.RequestTimeout)
	wait := 50 * time.Millisecond
	for {
		err := r.writeOnce(s.node, batch)
		if err == nil {
			for _, e := range batch {
				r.count(e.kind, "sent")
			}
			return
		}
		r.failed(err)
		if time.Now().Add(wait).After(give) {
			r.log.Warn("relay entries not written; dropped", "to", s.node, "entries", len(batch), "err", err)
			return
		}
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		if r.ctx.Err() != nil && time.Now().UnixMilli() >= r.flushBy.Load() {
			return
		}
		wait = min(2*wait, r.cfg.MaxBackoff)
	}
}

func (r *Relay) writeOnce(node string, batch []entry) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.p.RequestTimeout)
	defer cancel()
	key := r.k.stream(node)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range batch {
			p.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: r.cfg.StreamMaxLen, Approx: true,
				Values: []string{"k", e.kind, "n", e.from, "c", e.conn, "p", string(e.payload)}})
		}
		p.PExpire(ctx, key, streamTTL)
		return nil
	})
	return err
}

// read reads this node's relay stream until Close. Handled entries are
// trimmed at once, so the stream holds only unread entries and each read
// starts from its beginning (which also finds the entries of a stream that
// Redis lost and started again); after a failed trim it reads on from the
// last entry handled.
func (r *Relay) read() {
	key := r.k.stream(r.self)
	pos := "0-0"
	wait := 50 * time.Millisecond
	for r.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(r.ctx, readBlock+r.cfg.OpTimeout)
		res, err := r.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{key, pos}, Count: r.cfg.StreamBatch, Block: readBlock}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.failed(err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, r.cfg.MaxBackoff)
			continue
		}
		wait = 50 * time.Millisecond
		last := ""
		for _, s := range res {
			for _, msg := range s.Messages {
				r.handle(parseEntry(msg))
				last = msg.ID
			}
		}
		if last == "" {
			continue
		}
		ctx, cancel = context.WithTimeout(context.WithoutCancel(r.ctx), r.cfg.OpTimeout)
		err = r.rdb.XTrimMinID(ctx, key, cluster.NextStreamID(last)).Err()
		cancel()
		if err != nil {
			r.failed(err)
			pos = last
		} else {
			pos = "0-0"
		}
	}
}

func parseEntry(msg redis.XMessage) entry {
	get := func(k string) string { s, _ := msg.Values[k].(string); return s }
	return entry{kind: get("k"), from: get("n"), conn: get("c"), payload: []byte(get("p"))}
}

// handle dispatches one entry read from this node's stream.
func (r *Relay) handle(e entry) {
	r.count(e.kind, "received")
	switch e.kind {
	case kindRequest:
		var q requestPayload
		if err := json.Unmarshal(e.payload, &q); err != nil {
			r.log.Error("relay request unreadable; dropped", "from", e.from, "err", err)
			return
		}
		r.request(e.from, e.conn, q)
	case kindReply:
		var p replyPayload
		if err := json.Unmarshal(e.payload, &p); err != nil {
			r.log.Error("relay reply unreadable; dropped", "from", e.from, "err", err)
			return
		}
		r.mu.Lock()
		w := r.pending[p.ID]
		delete(r.pending, p.ID)
		r.mu.Unlock()
		if w != nil {
			w.ch <- p // capacity 1, one reply per waiter
		}
	case kindEvent:
		r.event(e.from, e.conn, e.payload)
	case kindClosed:
		r.remoteClosed(e.from, e.conn)
	default:
		r.log.Error("relay entry of unknown kind; dropped", "kind", e.kind, "from", e.from)
	}
}
