package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/rawio"
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

// batchFlushBytes: the writer sends what it has gathered once a batch holds
// this many bytes, and starts another.
const batchFlushBytes = 16 << 10

// conn is one WebSocket connection. It has exactly one reader (a goroutine
// the handler starts, running readLoop) and at most one writer at a time:
// a goroutine started when there is something to write (a queued frame,
// the replay, a ping due, the close) that ends as soon as nothing is left,
// so that an idle connection holds no writer goroutine and no write buffer.
// The writer writes the replay of what the user missed (pulled from the
// engine, never queued) first, then the queued frames, all of those queued
// together in one write to the socket (batchConn). The reader takes the
// writer's part for a reply when no writer runs and nothing waits
// (writeReply): it writes what the socket takes without waiting and leaves
// the rest, if any, to a writer; so does the goroutine of an operation that
// delivered events here (DeliverLater, Kick: another connection's reader,
// once the engine's lock is released). Nothing else touches ws except
// WriteControl and Close, which gorilla allows concurrently.
type conn struct {
	srv  *Server
	ws   *websocket.Conn
	out  *batchConn // the socket under ws
	user string
	exp  time.Time

	send     *frameQueue   // bounded by limits.send_queue
	done     chan struct{} // closed once, by stop
	finished chan struct{} // closed by the writer once it has closed the socket
	ping     *time.Timer   // marks a ping due every ping_interval

	stopOnce  sync.Once
	closeCode int    // set once by stop, read by the writer once closing
	closeText string // ditto
	drain     bool   // ditto: flush queued frames before closing

	limiter *rate.Limiter
	dedup   *replyCache // used by the reader only
}

var _ signaling.KickConn = (*conn)(nil)

func (c *conn) UserID() string { return c.user }

// Deliver queues a frame without blocking; a full queue disconnects the
// client, which never slows anyone else.
func (c *conn) Deliver(frame []byte) {
	if c.DeliverLater(frame) {
		c.startWriter()
	}
}

// DeliverLater implements signaling.KickConn: Deliver, but where Deliver
// would start a writer the caller is the writer, and must call Kick.
func (c *conn) DeliverLater(frame []byte) (kick bool) {
	select {
	case <-c.done:
		return false
	default:
	}
	ok, start := c.send.push(frame)
	if !ok {
		c.srv.metrics.sendQueueOverflow()
		c.stop(CloseSlowConsumer, "send queue full")
		return false
	}
	return start
}

// Kick implements signaling.KickConn: the caller, writer since
// DeliverLater, writes the queued frames as much as the socket takes
// without waiting, as writeReply does a reply, when they are all there is
// to write and fit in one batch; a writer goroutine does the rest, and
// anything else.
func (c *conn) Kick() {
	frames, start := c.send.more(batchFlushBytes)
	if start {
		c.startWriter() // never in the caller's goroutine: a writer waits for the socket
	}
	if frames != nil {
		c.writeNow(frames)
	}
}

// writeNowRounds bounds the rounds of writeNow: the frames queued while it
// wrote are written in the next, up to this many in all.
const writeNowRounds = 3

// writeNow is writeReply's and Kick's, whose caller is the writer: it
// writes frames as much as the socket takes without waiting, then the
// frames queued meanwhile (a reply that could not be written at once
// because the caller was writing), for a few rounds; a writer goroutine
// does the rest, and anything else.
func (c *conn) writeNow(frames [][]byte) {
	for round := 1; ; round++ {
		rest, err := c.out.tryWriteFrames(frames, c.srv.cfg.WriteTimeout)
		if err != nil {
			if c.send.release(nil) {
				c.startWriter()
			}
			c.stop(websocket.CloseAbnormalClosure, "write failed")
			return
		}
		if rest != nil || round == writeNowRounds {
			if c.send.release(rest) {
				c.startWriter()
			}
			return
		}
		var start bool
		if frames, start = c.send.more(batchFlushBytes); start {
			c.startWriter()
		}
		if frames == nil {
			return
		}
	}
}

// StartReplay implements signaling.Conn: the writer writes the replay's
// frames before any queued frame, pulling them only as fast as the client
// reads, so that what a user missed never counts against the send queue.
func (c *conn) StartReplay(r *signaling.Replay) {
	if c.send.setReplay(r) {
		c.startWriter()
	}
}

// armPing starts the ping timer; the writer rearms it after each ping,
// ping_interval later. The first ping comes at a random point of the first
// interval: connections made together (every client reconnecting after a
// restart or a network outage, a load test's idle users) would otherwise
// ping together every ping_interval from then on, one burst of writes and
// pongs that delays every other frame for as long as it takes. Spread, the
// same pings cost the same, a few at a time. Only the first is sooner than
// ping_interval, so no liveness check gets later.
func (c *conn) armPing() {
	// The timer is set before it is started: the writer it starts (with a
	// first delay of a few nanoseconds, at once) rearms it through c.ping.
	c.ping = time.AfterFunc(math.MaxInt64, func() {
		if c.send.setPing() {
			c.writer() // in the timer's own goroutine: no second one per ping
		}
	})
	c.ping.Reset(firstPingDelay(c.srv.cfg.PingInterval))
}

// firstPingDelay is the delay of a connection's first ping: uniform in
// (0, interval].
func firstPingDelay(interval time.Duration) time.Duration {
	if interval <= 0 {
		return interval
	}
	return 1 + rand.N(interval)
}

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
			c.out.abortWrites()
		}
		if c.send.setClosing() {
			c.startWriter()
		}
	})
}

// startWriter starts a writer goroutine (the frameQueue counts it as
// running).
func (c *conn) startWriter() {
	c.srv.writersStarted.Add(1)
	go c.writer()
}

// writer writes what there is to write, then ends; once the connection is
// closing it closes it and closes finished. The frameQueue makes sure that
// one runs at a time and that one runs whenever there is work.
func (c *conn) writer() {
	cfg := c.srv.cfg
	for {
		job, ok := c.send.next()
		if !ok {
			return
		}
		switch {
		case job.closing:
			c.closing()
			return
		case job.rest != nil:
			if !c.writeRest(job.rest) {
				c.stop(websocket.CloseAbnormalClosure, "write failed")
			}
		case job.ping:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.stop(websocket.CloseAbnormalClosure, "ping failed")
				continue
			}
			c.ping.Reset(cfg.PingInterval)
		case job.replay != nil:
			// A batch of the replay at a time, each written before the
			// next is asked for, so the client's reading paces it.
			ctx, cancel := context.WithTimeout(c.srv.ctx, cfg.WriteTimeout)
			frames := job.replay.Next(ctx)
			cancel()
			if frames == nil {
				c.send.endReplay()
				continue
			}
			if !c.writeFrames(frames) {
				c.stop(websocket.CloseAbnormalClosure, "write failed")
			}
		default:
			if !c.writeFrames(job.frames) {
				c.stop(websocket.CloseAbnormalClosure, "write failed")
			}
		}
	}
}

// writeFrames writes frames as text messages, gathered into as few writes
// to the socket as batchFlushBytes allows. The messages are framed here
// (appendTextFrame: the frame gorilla's WriteMessage writes for a server
// without compression, byte for byte), straight into the batch: no copy
// through gorilla's write buffer, no lock and deadline per frame (issue 16).
// Only the writer writes data frames; gorilla's WriteControl (pings, the
// close) is used by the writer too, never while a batch is open.
func (c *conn) writeFrames(frames [][]byte) bool {
	if len(frames) == 0 {
		return true
	}
	deadline := time.Now().Add(c.srv.cfg.WriteTimeout)
	c.out.begin()
	_ = c.out.SetWriteDeadline(deadline) // noted by the open batch, set at flush
	for _, frame := range frames {
		if c.out.appendTextFrame(frame) >= batchFlushBytes {
			if c.out.flush() != nil {
				return false
			}
			c.out.begin()
			_ = c.out.SetWriteDeadline(deadline)
		}
	}
	return c.out.flush() == nil
}

// writeRest writes the end of a frame that writeReply wrote in part.
func (c *conn) writeRest(rest []byte) bool {
	_ = c.out.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.out.write(rest)
	return err == nil
}

// writeReply sends the reply to a request. The reader writes it itself when
// no writer runs and nothing waits to be written (the usual case: a client
// waits for its reply before its next request), as much of it as the socket
// takes without waiting; a writer writes the rest, if any. That saves
// starting a writer goroutine for every request, and the reply leaves
// sooner. Otherwise the reply is queued after what waits, as any frame.
func (c *conn) writeReply(frame []byte) {
	select {
	case <-c.done:
		return
	default:
	}
	if !c.send.claimIdle() {
		c.queue(frame)
		return
	}
	one := [1][]byte{frame}
	c.writeNow(one[:])
}

// appendTextFrame appends payload to b as one final, unmasked WebSocket
// text frame (RFC 6455 5.2: what a server sends) and returns len(b).
func appendTextFrame(b, payload []byte) []byte {
	const finText = 0x80 | websocket.TextMessage
	switch n := len(payload); {
	case n <= 125:
		b = append(b, finText, byte(n))
	case n <= 0xffff:
		b = append(b, finText, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// closing runs the end of the writer once done is closed: flush the queue if
// asked, then send the close frame and close the socket.
func (c *conn) closing() {
	defer close(c.finished)
	defer func() { _ = c.ws.Close() }() // ends the reader's ReadMessage too
	if c.ping != nil {
		c.ping.Stop()
	}
	cfg := c.srv.cfg
	rest, frames := c.send.take()
	if rest != nil && !c.writeRest(rest) {
		return // a frame cut short: no close frame after it
	}
	if c.drain && !c.writeFrames(frames) {
		return
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
	// The read deadline is pong_timeout after the client's last message (or
	// pong), up to idleSlack later: it is moved (a runtime timer update, not
	// free at thousands of requests per second) only when idleSlack has
	// passed since it was last set, to setAt+pong_timeout+idleSlack, so a
	// connection is never closed sooner than pong_timeout after its last
	// message (TestIdleDeadlineFollowsLastMessage).
	reqs := newRequestContexts(ctx)
	defer reqs.close()
	slack := idleSlack(cfg.PongTimeout)
	var setAt time.Time
	setDeadline := func(now time.Time) error {
		setAt = now
		return c.ws.SetReadDeadline(now.Add(cfg.PongTimeout + slack))
	}
	_ = setDeadline(time.Now())
	c.ws.SetPongHandler(func(string) error { return setDeadline(time.Now()) })
	for {
		// gorilla's ReadMessage, into a buffer of the server's pool rather
		// than a new one per message (issue 16): nothing keeps data past
		// handle (the request's id, op and args are copied out of it).
		buf := c.srv.reads.Get().(*[]byte)
		mt, data, err := readMessage(c.ws, (*buf)[:0])
		*buf = data[:0]
		if err != nil {
			c.srv.reads.Put(buf)
			// A frame over the read limit makes gorilla send close 1009
			// itself (websocket.ErrReadLimit); a client's close frame is
			// answered by gorilla's close handler. Either way the writer
			// now only has to close the socket.
			c.stop(websocket.CloseAbnormalClosure, "")
			return
		}
		if now := time.Now(); now.Sub(setAt) >= slack {
			_ = setDeadline(now)
		}
		switch {
		case mt != websocket.TextMessage:
			c.reply("", nil, protocol.ErrMalformedRequest.WithMessage("only text frames carry requests"))
		case !utf8.Valid(data):
			c.srv.reads.Put(buf)
			c.stopAfterQueued(CloseInvalidUTF8, "text frame is not valid UTF-8")
			return
		default:
			c.handle(reqs, data)
		}
		if cap(*buf) <= maxPooledRead {
			c.srv.reads.Put(buf)
		}
	}
}

// maxPooledRead: a read buffer that grew larger is not kept for reuse.
const maxPooledRead = 64 << 10

// newReadPool returns the pool of a server's read buffers.
func newReadPool() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
}

// readMessage is ws.ReadMessage appending the message to buf.
func readMessage(ws *websocket.Conn, buf []byte) (messageType int, data []byte, err error) {
	mt, r, err := ws.NextReader()
	if err != nil {
		return mt, buf, err
	}
	data, err = appendAll(buf, r)
	return mt, data, err
}

// appendAll is io.ReadAll appending to b.
func appendAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF { //nolint:errorlint // io.ReadAll's test: Read returns io.EOF itself
				return b, nil
			}
			return b, err
		}
	}
}

// idleSlack is how much later than pong_timeout after its last message a
// connection may be closed: 1/64 of it (under a second for the default 60s).
func idleSlack(pongTimeout time.Duration) time.Duration { return pongTimeout / 64 }

// handle performs one request and queues its reply.
//
// Repeated ids: the ids of the last limits.dedup_window requests of the
// connection are kept with their replies (up to limits.dedup_bytes of
// them, see replyCache); a request whose id is among them is not performed
// again, and gets the same reply again, or duplicate_request_id when the
// reply is no longer kept. Replies of requests that
// were not performed (malformed, rate_limited, store_unavailable,
// shutting_down) are not kept, so the client may retry with the same id.
func (c *conn) handle(reqs *requestContexts, data []byte) {
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
		c.writeReply(frame)
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
	rctx := reqs.begin(c.srv.cfg.RequestTimeout)
	result, err := op(rctx, protocol.Actor{UserID: c.user, Session: c}, req.Args)
	reqs.end(rctx)
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
	c.writeReply(frame)
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
	bytes       int            // sum of the kept bodies
	ring        []replyEntry   // the ids with their bodies, grown up to n
	next        int            // once full: the oldest entry's index
	bare        int            // the oldest bare entries of the ring (no body)
	m           map[string]int // id → its index in ring
}

// replyEntry is a request id of the replyCache and its reply (nil: not
// kept).
type replyEntry struct {
	id    string
	frame []byte
}

func newReplyCache(n, maxBytes int) *replyCache { return &replyCache{n: n, maxBytes: maxBytes} }

// get returns a request id's reply; known says whether the id was
// performed, and frame is nil when its reply is no longer kept.
func (r *replyCache) get(id string) (frame []byte, known bool) {
	i, known := r.m[id]
	if !known {
		return nil, false
	}
	return r.ring[i].frame, true
}

// put adds an id the cache does not know (get said so: the reader never
// performs a known id) with its reply, forgetting the oldest id once it
// holds n.
func (r *replyCache) put(id string, frame []byte) {
	if r.n == 0 {
		return
	}
	if r.m == nil {
		r.m = make(map[string]int)
	}
	if len(frame) > r.maxBytes {
		frame = nil
	}
	i := len(r.ring)
	if i < r.n {
		r.ring = append(r.ring, replyEntry{id: id, frame: frame})
	} else {
		i = r.next
		old := &r.ring[i]
		r.bytes -= len(old.frame)
		delete(r.m, old.id)
		*old = replyEntry{id: id, frame: frame}
		r.next = (r.next + 1) % r.n
		r.bare = max(r.bare-1, 0)
	}
	r.m[id] = i
	r.bytes += len(frame)
	// Drop the oldest bodies until the kept ones fit.
	start := 0
	if len(r.ring) == r.n {
		start = r.next
	}
	for ; r.bytes > r.maxBytes && r.bare < len(r.ring); r.bare++ {
		e := &r.ring[(start+r.bare)%len(r.ring)]
		r.bytes -= len(e.frame)
		e.frame = nil
	}
}

// frameQueue is a connection's bounded send queue and the state of its
// writer: pushes never block, and a push past the bound fails (the owner
// then drops the client). Its storage grows with use, so that idle
// connections cost little.
//
// A writer goroutine runs while there is work (frames, the replay, a ping
// due, the close) and ends, by next, once there is none: the calls that add
// work return start when none runs, and the caller starts one. While a
// replay is set, queued frames wait: the writer writes the replay's frames
// first (they are pulled, never queued).
type frameQueue struct {
	limit int

	mu      sync.Mutex // guards every field below; innermost lock
	frames  [][]byte
	rest    []byte // the unwritten end of a frame the reader wrote in part (writeReply): written first
	replay  *signaling.Replay
	pingDue bool
	closing bool // stop was called: the writer is to close the connection
	running bool // a writer goroutine runs
	ended   bool // the writer has closed the connection
}

func newFrameQueue(limit int) *frameQueue { return &frameQueue{limit: limit} }

// startLocked reports whether the caller must start a writer, and counts it
// as running if so.
func (q *frameQueue) startLocked() bool {
	if q.running || q.ended {
		return false
	}
	q.running = true
	return true
}

// claimIdle makes the caller the writer, if no writer runs and there is
// nothing to write: it then writes at once, and calls release when done.
func (q *frameQueue) claimIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running || q.ended || q.otherWorkLocked() || len(q.frames) > 0 {
		return false
	}
	q.running = true
	return true
}

// otherWorkLocked reports whether there is work other than queued frames:
// the close, the end of a frame cut short, a ping, the replay.
func (q *frameQueue) otherWorkLocked() bool {
	return q.closing || q.rest != nil || q.pingDue || q.replay != nil
}

// release ends the writing of claimIdle's caller, with rest the end of its
// frame that the socket did not take; start reports that there is work
// left (rest, or what was added meanwhile) and that the caller must start
// a writer, which counts as running.
func (q *frameQueue) release(rest []byte) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rest = rest
	if q.otherWorkLocked() || len(q.frames) > 0 {
		return true
	}
	q.running = false
	return false
}

// more is writeNow's and Kick's, whose caller is the writer: the queued
// frames, when they are all there is to write and hold at most limit
// bytes; when there is nothing, the caller is no longer the writer; when
// there is anything else, start says that the caller must start a writer
// (which counts as running) and nothing is taken.
func (q *frameQueue) more(limit int) (frames [][]byte, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.otherWorkLocked() {
		return nil, true
	}
	if len(q.frames) == 0 {
		q.running = false
		return nil, false
	}
	n := 0
	for _, f := range q.frames {
		if n += len(f); n > limit {
			return nil, true
		}
	}
	frames = q.frames
	q.frames = nil
	return frames, false
}

func (q *frameQueue) push(frame []byte) (ok, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) >= q.limit {
		return false, false
	}
	q.frames = append(q.frames, frame)
	return true, q.startLocked()
}

func (q *frameQueue) setReplay(r *signaling.Replay) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.replay = r
	return q.startLocked()
}

func (q *frameQueue) setPing() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return false
	}
	q.pingDue = true
	return q.startLocked()
}

func (q *frameQueue) setClosing() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closing = true
	return q.startLocked()
}

// writeJob is one step of the writer: exactly one of its fields is set.
type writeJob struct {
	closing bool
	rest    []byte // frameQueue.rest: raw bytes, already framed
	ping    bool
	replay  *signaling.Replay
	frames  [][]byte
}

// next is the writer's: its next step, or ok false when there is nothing
// left to do, in which case the writer must end (it no longer counts as
// running). The close comes first (the replay then ends: queued frames are
// written if the close drains), then a ping due, then the replay, then the
// queued frames, all of them at once, oldest first.
func (q *frameQueue) next() (job writeJob, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closing:
		q.replay = nil
		q.ended = true
		return writeJob{closing: true}, true
	case q.rest != nil:
		out := q.rest
		q.rest = nil
		return writeJob{rest: out}, true
	case q.pingDue:
		q.pingDue = false
		return writeJob{ping: true}, true
	case q.replay != nil:
		return writeJob{replay: q.replay}, true
	case len(q.frames) > 0:
		out := q.frames
		q.frames = nil
		return writeJob{frames: out}, true
	}
	q.running = false
	return writeJob{}, false
}

// take returns the queued frames, oldest first, and empties the queue;
// rest is the end of a frame written in part, to write before them.
func (q *frameQueue) take() (rest []byte, frames [][]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	rest, frames = q.rest, q.frames
	q.rest, q.frames = nil, nil
	return rest, frames
}

// endReplay clears the replay; the frames queued meanwhile are next.
func (q *frameQueue) endReplay() {
	q.mu.Lock()
	q.replay = nil
	q.mu.Unlock()
}

// batchConn is the socket under a connection's websocket.Conn. While the
// writer has a batch open (begin), the data frames it adds
// (appendTextFrame) and what gorilla writes (a control frame: gorilla calls
// Write for one frame at a time, under its own write lock) are gathered in
// one buffer, borrowed from batchPool, and go to the socket in one write at
// flush; otherwise writes go through at once. The socket is read and
// written through rawio.IO when it has a file descriptor.
//
// A write deadline set while a batch is open is only noted, and set on the
// socket once, at flush: one deadline per write to the socket rather than
// per frame. abortWrites (the slow consumer's stop) sets it at once, and it
// then stays: a flush does not undo it.
type batchConn struct {
	net.Conn
	raw      *rawio.IO  // the socket's reads and writes (nil: Conn's own)
	pool     *sync.Pool // the server's batch buffers (*[]byte)
	mu       sync.Mutex // guards buf, deadline and aborted, and the socket's write deadline; never held across I/O
	buf      *[]byte    // the open batch; nil: none
	deadline time.Time  // the last deadline asked for in the open batch
	asked    bool       // a deadline was asked for in the open batch
	aborted  bool       // abortWrites was called
	set      time.Time  // the write deadline on the socket (zero: none)
}

func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	if b.buf != nil {
		b.deadline, b.asked = t, true
		b.mu.Unlock()
		return nil
	}
	defer b.mu.Unlock()
	b.set = t
	return b.Conn.SetWriteDeadline(t)
}

// abortWrites makes a write in progress, and those of the open batch,
// fail now.
func (b *batchConn) abortWrites() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.aborted = true
	b.set = time.Now()
	_ = b.Conn.SetWriteDeadline(b.set)
}

// maxPooledBatch: a batch buffer that grew larger is not kept for reuse.
const maxPooledBatch = 64 << 10

// newBatchPool returns the pool of a server's batch buffers.
func newBatchPool() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.buf != nil {
		*b.buf = append(*b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.write(p)
}

// write writes p to the socket.
func (b *batchConn) write(p []byte) (int, error) {
	if b.raw != nil {
		return b.raw.Write(p)
	}
	return b.Conn.Write(p)
}

func (b *batchConn) Read(p []byte) (int, error) {
	if b.raw != nil {
		return b.raw.Read(p)
	}
	return b.Conn.Read(p)
}

// tryWriteFrames writes payloads as text messages, in one write, as much
// as the socket takes without waiting (writeNow, while its caller is the
// writer); rest is a copy of the part not written (nil: all was). Without
// raw I/O nothing is written here: rest is all of it.
//
// A write deadline that has passed (the last write's, long ago) would fail
// the attempt: it is moved to timeout from now first; one still ahead is
// left (an attempt never waits for it), and so is an abort's.
func (b *batchConn) tryWriteFrames(payloads [][]byte, timeout time.Duration) (rest []byte, err error) {
	if err := b.freshDeadline(timeout); err != nil {
		return nil, err
	}
	buf := b.pool.Get().(*[]byte)
	*buf = (*buf)[:0]
	for _, p := range payloads {
		*buf = appendTextFrame(*buf, p)
	}
	n := 0
	if b.raw != nil {
		n, err = b.raw.TryWrite(*buf)
	}
	if err == nil && n < len(*buf) {
		rest = bytes.Clone((*buf)[n:])
	}
	b.put(buf)
	return rest, err
}

// freshDeadline moves a write deadline that has passed to timeout from
// now, unless writes were aborted.
func (b *batchConn) freshDeadline(timeout time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.aborted {
		return os.ErrDeadlineExceeded
	}
	if b.set.IsZero() {
		return nil
	}
	if now := time.Now(); !now.Before(b.set) {
		b.set = now.Add(timeout)
		return b.Conn.SetWriteDeadline(b.set)
	}
	return nil
}

// begin opens a batch (the writer's).
func (b *batchConn) begin() {
	buf := b.pool.Get().(*[]byte)
	b.mu.Lock()
	b.buf = buf
	b.mu.Unlock()
}

// appendTextFrame adds payload to the open batch as a text message
// (appendTextFrame) and returns the size of the batch.
func (b *batchConn) appendTextFrame(payload []byte) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	*b.buf = appendTextFrame(*b.buf, payload)
	return len(*b.buf)
}

// flush closes the batch and writes what it gathered.
func (b *batchConn) flush() error {
	buf, err := b.closeForWrite()
	if buf == nil {
		return nil
	}
	if err == nil && len(*buf) > 0 {
		_, err = b.write(*buf)
	}
	b.put(buf)
	return err
}

// closeForWrite closes the batch and sets the write deadline it asked for,
// unless writes were aborted; in one critical section with abortWrites, so
// that an abort is never undone.
func (b *batchConn) closeForWrite() (*[]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf, deadline, asked := b.buf, b.deadline, b.asked
	b.buf, b.deadline, b.asked = nil, time.Time{}, false
	if buf == nil || len(*buf) == 0 || b.aborted || !asked {
		return buf, nil
	}
	b.set = deadline
	return buf, b.Conn.SetWriteDeadline(deadline) // sets a timer: no I/O
}

func (b *batchConn) put(buf *[]byte) {
	if cap(*buf) > maxPooledBatch {
		return
	}
	*buf = (*buf)[:0]
	b.pool.Put(buf)
}

// hijackConn wraps the socket that gorilla's Upgrade takes over from the
// HTTP server in a batchConn.
type hijackConn struct {
	http.ResponseWriter
	pool *sync.Pool
	out  *batchConn // set by Hijack
}

func (h *hijackConn) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("web: the response does not implement http.Hijacker")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.out = &batchConn{Conn: nc, raw: rawio.New(nc), pool: h.pool}
	return h.out, brw, nil
}
