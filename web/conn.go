package web

import (
	"context"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// WebSocket close codes the server uses (documented in PROTOCOL.md).
const (
	CloseGoingAway       = websocket.CloseGoingAway               // 1001: server shutting down
	CloseUnsupportedData = websocket.CloseUnsupportedData         // 1003
	CloseInvalidUTF8     = websocket.CloseInvalidFramePayloadData // 1007: text frame not UTF-8
	ClosePolicyViolation = websocket.ClosePolicyViolation         // 1008: too many connections
	CloseTooBig          = websocket.CloseMessageTooBig           // 1009: frame over limits.max_frame_bytes
	CloseTokenExpired    = 4001                                   // the token's exp passed
	CloseSlowConsumer    = 4002                                   // send queue full: the client did not read
)

// slowCloseWait bounds the attempt to send a close frame to a client that
// does not read.
const slowCloseWait = 100 * time.Millisecond

// conn is one WebSocket connection. It has exactly one reader (the HTTP
// handler's goroutine, running readLoop) and one writer (writeLoop) that
// writes the replay of what the user missed (pulled from the engine, never
// queued), then drains the bounded send queue; nothing else touches ws
// except WriteControl and Close, which gorilla allows concurrently.
type conn struct {
	srv  *Server
	ws   *websocket.Conn
	user string
	exp  time.Time

	send *frameQueue   // bounded by limits.send_queue
	done chan struct{} // closed once, by stop

	stopOnce  sync.Once
	closeCode int    // set once by stop, read by writeLoop after done
	closeText string // ditto
	drain     bool   // ditto: flush queued frames before closing

	limiter *rate.Limiter
	dedup   *replyCache // used by the reader only
}

var _ signaling.Conn = (*conn)(nil)

func (c *conn) UserID() string { return c.user }

// Deliver queues a frame without blocking; a full queue disconnects the
// client, which never slows anyone else.
func (c *conn) Deliver(frame []byte) {
	select {
	case <-c.done:
		return
	default:
	}
	if !c.send.push(frame) {
		c.srv.metrics.sendQueueOverflow()
		c.stop(CloseSlowConsumer, "send queue full")
	}
}

// StartReplay implements signaling.Conn: the writer writes the replay's
// frames before any queued frame, pulling them only as fast as the client
// reads, so that what a user missed never counts against the send queue.
func (c *conn) StartReplay(r *signaling.Replay) { c.send.setReplay(r) }

// stop asks the writer to close the connection with code at once: frames
// still queued are dropped.
func (c *conn) stop(code int, text string) { c.stopWriter(code, text, false) }

// stopAfterQueued asks the writer to write the frames already queued, then
// close the connection with code.
func (c *conn) stopAfterQueued(code int, text string) { c.stopWriter(code, text, true) }

// stopWriter does the work of stop and stopAfterQueued; only the first call
// on a connection counts.
func (c *conn) stopWriter(code int, text string, drain bool) {
	c.stopOnce.Do(func() {
		c.closeCode, c.closeText, c.drain = code, text, drain
		close(c.done)
		if code == CloseSlowConsumer {
			// The writer may be blocked writing to a client that does not
			// read: abort that write now rather than at its deadline.
			_ = c.ws.NetConn().SetWriteDeadline(time.Now())
		}
	})
}

func (c *conn) writeLoop() {
	cfg := c.srv.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer func() {
		ping.Stop()
		_ = c.ws.Close() // ends the reader's ReadMessage too
	}()
	write := func(frame []byte) bool {
		_ = c.ws.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
		return c.ws.WriteMessage(websocket.TextMessage, frame) == nil
	}
	pinged := func() bool {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
			c.stop(websocket.CloseAbnormalClosure, "ping failed")
			return false
		}
		return true
	}
	for {
		if r := c.send.replaying(); r != nil {
			// The replay first: a batch at a time, each written before the
			// next is asked for, so the client's reading paces it.
			select {
			case <-c.done:
				c.send.endReplay()
				c.closing(write)
				return
			case <-ping.C:
				if !pinged() {
					return
				}
			default:
			}
			ctx, cancel := context.WithTimeout(c.srv.ctx, cfg.WriteTimeout)
			frames := r.Next(ctx)
			cancel()
			if frames == nil {
				c.send.endReplay()
				continue
			}
			for _, frame := range frames {
				if !write(frame) {
					c.stop(websocket.CloseAbnormalClosure, "write failed")
					return
				}
			}
			continue
		}
		select {
		case <-c.send.ready:
			for _, frame := range c.send.take() {
				if !write(frame) {
					c.stop(websocket.CloseAbnormalClosure, "write failed")
					return
				}
			}
		case <-ping.C:
			if !pinged() {
				return
			}
		case <-c.done:
			c.send.endReplay()
			c.closing(write)
			return
		}
	}
}

// closing runs the end of the writer once done is closed: flush the queue if
// asked, then send the close frame.
func (c *conn) closing(write func([]byte) bool) {
	cfg := c.srv.cfg
	if c.drain {
		for _, frame := range c.send.take() {
			if !write(frame) {
				return
			}
		}
	}
	if c.closeCode != websocket.CloseAbnormalClosure {
		wait := cfg.WriteTimeout
		if c.closeCode == CloseSlowConsumer {
			wait = slowCloseWait
		}
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait))
	}
}

// readLoop reads and handles requests one at a time until the connection
// ends. Requests of one connection are performed in order.
func (c *conn) readLoop(ctx context.Context) {
	cfg := c.srv.cfg
	c.ws.SetReadLimit(cfg.MaxFrameBytes)
	_ = c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			// A frame over the read limit makes gorilla send close 1009
			// itself (websocket.ErrReadLimit); a client's close frame is
			// answered by gorilla's close handler. Either way the writer
			// now only has to close the socket.
			c.stop(websocket.CloseAbnormalClosure, "")
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
		switch {
		case mt != websocket.TextMessage:
			c.reply("", nil, protocol.ErrMalformedRequest.WithMessage("only text frames carry requests"))
			continue
		case !utf8.Valid(data):
			c.stopAfterQueued(CloseInvalidUTF8, "text frame is not valid UTF-8")
			return
		}
		c.handle(ctx, data)
	}
}

// handle performs one request and queues its reply.
//
// Repeated ids: the ids of the last limits.dedup_window requests of the
// connection are kept with their replies (up to limits.dedup_bytes of
// them, see replyCache); a request whose id is among them is not performed
// again, and gets the same reply again, or duplicate_request_id when the
// reply is no longer kept. Replies of requests that
// were not performed (malformed, rate_limited, store_unavailable,
// shutting_down) are not kept, so the client may retry with the same id.
func (c *conn) handle(ctx context.Context, data []byte) {
	req, derr := protocol.DecodeRequest(data)
	if derr != nil {
		c.reply(req.ID, nil, derr)
		return
	}
	op, known := c.srv.ops[req.Op]
	opLabel := req.Op
	if !known {
		opLabel = "unknown"
	}
	if frame, ok := c.dedup.get(req.ID); ok {
		c.srv.metrics.request(opLabel, "duplicate")
		if frame == nil {
			c.reply(req.ID, nil, protocol.ErrDuplicateID.WithMessage("request %q was already performed on this connection; its reply is no longer kept (limits.dedup_bytes)", req.ID))
			return
		}
		c.queue(frame)
		return
	}
	if !c.limiter.Allow() {
		c.srv.metrics.request(opLabel, protocol.ErrRateLimited.Reason)
		c.reply(req.ID, nil, protocol.ErrRateLimited.WithMessage("more than %g requests per second", float64(c.limiter.Limit())))
		return
	}
	if !known {
		c.srv.metrics.request(opLabel, protocol.ErrUnknownOp.Reason)
		c.reply(req.ID, nil, protocol.ErrUnknownOp.WithMessage("unknown op %q", req.Op))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.srv.cfg.RequestTimeout)
	result, err := op(rctx, protocol.Actor{UserID: c.user, Session: c}, req.Args)
	cancel()
	werr := protocol.AsError(err)
	reason := "ok"
	if werr != nil {
		reason = werr.Reason
		if werr.Code == 9599 {
			c.srv.log.Error("op failed", "op", req.Op, "user", c.user, "err", err)
		}
	}
	c.srv.metrics.request(req.Op, reason)
	frame := c.reply(req.ID, result, werr)
	if frame != nil && !transient(werr) {
		c.dedup.put(req.ID, frame)
	}
	if ar, ok := result.(signaling.AfterReplier); ok && werr == nil {
		ar.AfterReply()
	}
}

func transient(e *protocol.Error) bool {
	if e == nil {
		return false
	}
	switch e.Code {
	case protocol.ErrStoreUnavailable.Code, protocol.ErrShuttingDown.Code, protocol.ErrRateLimited.Code, 9599:
		return true
	}
	return false
}

func (c *conn) reply(id string, result any, e *protocol.Error) []byte {
	frame, err := protocol.EncodeReply(id, result, e)
	if err != nil {
		c.srv.log.Error("encode reply", "err", err)
		frame, _ = protocol.EncodeReply(id, nil, &protocol.Error{Code: 9599, Reason: "internal_error", Message: "could not encode the reply"})
	}
	c.queue(frame)
	return frame
}

func (c *conn) queue(frame []byte) { c.Deliver(frame) }

// replyCache keeps the ids of the last n requests of a connection and
// their replies, the replies up to maxBytes in all (limits.dedup_window,
// limits.dedup_bytes): past maxBytes the oldest replies lose their body
// but keep their id, so that a repeat is still known and never performed
// again (it is answered duplicate_request_id); a reply larger than maxBytes
// is kept as an id only. Its memory grows with use, so that idle
// connections cost little.
type replyCache struct {
	n, maxBytes int
	bytes       int      // sum of the kept bodies
	order       []string // ring of ids, grown up to n
	next        int      // once full: the oldest id's index
	bare        int      // the oldest bare entries of the ring (no body)
	m           map[string][]byte
}

func newReplyCache(n, maxBytes int) *replyCache { return &replyCache{n: n, maxBytes: maxBytes} }

// get returns a request id's reply; known says whether the id was
// performed, and frame is nil when its reply is no longer kept.
func (r *replyCache) get(id string) (frame []byte, known bool) {
	frame, known = r.m[id]
	return frame, known
}

func (r *replyCache) put(id string, frame []byte) {
	if r.n == 0 {
		return
	}
	if r.m == nil {
		r.m = make(map[string][]byte)
	}
	if _, dup := r.m[id]; dup {
		return // the reader never performs a known id
	}
	if len(r.order) < r.n {
		r.order = append(r.order, id)
	} else {
		old := r.order[r.next]
		r.bytes -= len(r.m[old])
		delete(r.m, old)
		r.order[r.next] = id
		r.next = (r.next + 1) % r.n
		r.bare = max(r.bare-1, 0)
	}
	if len(frame) > r.maxBytes {
		frame = nil
	}
	r.m[id] = frame
	r.bytes += len(frame)
	// Drop the oldest bodies until the kept ones fit.
	start := 0
	if len(r.order) == r.n {
		start = r.next
	}
	for ; r.bytes > r.maxBytes && r.bare < len(r.order); r.bare++ {
		k := r.order[(start+r.bare)%len(r.order)]
		r.bytes -= len(r.m[k])
		r.m[k] = nil
	}
}

// frameQueue is a connection's bounded send queue: pushes never block, and
// a push past the bound fails (the owner then drops the client). Its
// storage grows with use, so that idle connections cost little.
//
// While a replay is set, take returns nothing: the writer writes the
// replay's frames first (they are pulled, never queued).
type frameQueue struct {
	limit int
	ready chan struct{} // has a token while frames wait

	mu     sync.Mutex // guards frames and replay; innermost lock
	frames [][]byte
	replay *signaling.Replay
}

func newFrameQueue(limit int) *frameQueue {
	return &frameQueue{limit: limit, ready: make(chan struct{}, 1)}
}

func (q *frameQueue) push(frame []byte) bool {
	q.mu.Lock()
	if len(q.frames) >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, frame)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns the queued frames, oldest first, and empties the queue;
// nothing while a replay is set.
func (q *frameQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.replay != nil {
		return nil
	}
	out := q.frames
	q.frames = nil
	return out
}

func (q *frameQueue) setReplay(r *signaling.Replay) {
	q.mu.Lock()
	q.replay = r
	q.mu.Unlock()
	q.signal()
}

func (q *frameQueue) replaying() *signaling.Replay {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.replay
}

// endReplay clears the replay; the frames queued meanwhile are ready.
func (q *frameQueue) endReplay() {
	q.mu.Lock()
	q.replay = nil
	q.mu.Unlock()
	q.signal()
}

func (q *frameQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
