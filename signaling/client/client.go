package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Client is one signaling connection. Its methods are safe for concurrent
// use.
type Client struct {
	conn *websocket.Conn
	opts options

	nextID atomic.Uint64

	// sendTurn is a one-slot semaphore (waiting for it respects the caller's
	// context) serializing "register the waiter, then queue the frame", so
	// that waiters of a repeated id are queued in wire order. Order: sendTurn,
	// then mu. Neither is held across network I/O.
	sendTurn chan struct{}
	// mu guards pending: for each request id, the calls waiting for a
	// reply, in the order their requests were queued.
	mu      sync.Mutex
	pending map[string][]*waiter
	// handlers take events by name instead of Events; observers see
	// events by name before they go on (to a handler or Events). Both
	// guarded by mu.
	handlers  map[string]func(Event)
	observers map[string][]*observer

	send   chan outMsg // bounded queue drained by the writer
	events chan Event  // written and closed by the reader only

	// evTurn is a one-slot semaphore giving the event helpers (Next,
	// WaitEvent, …) turns; the holder owns backlog.
	evTurn  chan struct{}
	backlog []Event

	closing    chan struct{} // closed by Close
	closeOnce  sync.Once
	stopWriter chan struct{} // closed by the reader when it ends
	writerDone chan struct{} // closed by the writer when it ends
	writeErr   error         // set by the writer before writerDone
	done       chan struct{} // closed last, after err is set
	err        error         // why the connection ended; set before events and done close
}

// observer is one Observe registration (a pointer: removed by identity).
type observer struct{ f func(Event) }

type outMsg struct {
	typ  int
	data []byte
}

type waiter struct {
	ch        chan replyMsg // buffered 1: the reader never blocks on it
	abandoned bool          // guarded by Client.mu: the caller gave up
}

type replyMsg struct {
	result json.RawMessage
	err    *protocol.Error
}

func (r replyMsg) value() (json.RawMessage, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.result, nil
}

// Dial connects to a Switchboard server. url is the WebSocket endpoint, like
// "ws://127.0.0.1:8080/ws"; a non-empty token is sent as "Authorization:
// Bearer <token>" (pass "" and put ?token=… in url to test that form). When
// the server answers the handshake with an HTTP error, the error is a
// *DialError carrying the status.
func Dial(ctx context.Context, url, token string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	header := o.header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	var d websocket.Dialer
	if o.dialer != nil {
		d = *o.dialer
	} else {
		d = *websocket.DefaultDialer
	}
	if o.handshakeTimeout > 0 {
		d.HandshakeTimeout = o.handshakeTimeout
	}
	conn, resp, err := d.DialContext(ctx, url, header)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body bytes.Buffer
			if resp.Body != nil {
				_, _ = body.ReadFrom(io.LimitReader(resp.Body, 1024))
				_ = resp.Body.Close()
			}
			return nil, &DialError{Status: resp.StatusCode, Header: resp.Header, Body: body.String()}
		}
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	c := &Client{
		conn:       conn,
		opts:       o,
		pending:    make(map[string][]*waiter),
		send:       make(chan outMsg, o.sendQueue),
		events:     make(chan Event, o.eventBuffer),
		evTurn:     make(chan struct{}, 1),
		sendTurn:   make(chan struct{}, 1),
		closing:    make(chan struct{}),
		stopWriter: make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.setupConn()
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

// Events returns the channel of events and unmatched replies, in wire order.
// It is closed when the connection ends. See the package documentation.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended and the client's goroutines
// have returned.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open, then why it ended: ErrClosed
// after Close, a *CloseError for a close frame from the server, or an error
// wrapping ErrClosed and the cause (read timeout, network error,
// *ProtocolError; ErrReadTimeout when the server stayed silent).
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close sends a close frame (1000), waits for the server's answer at most the
// close timeout, then drops the connection and waits for the client's
// goroutines to return. It is idempotent and always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	t := time.NewTimer(c.opts.closeTimeout)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
	}
	_ = c.conn.Close() // unblocks the reader; safe concurrently with it
	<-c.done
	return nil
}

// Do sends op with args (marshalled to JSON; nil sends no args) under a
// fresh id, waits for the reply and decodes its result into result (a
// pointer; nil discards it). An error reply is returned as its
// *protocol.Error. Do also fails with ctx's error, or with an error matching
// ErrClosed when the connection ends first.
func (c *Client) Do(ctx context.Context, op string, args any, result any) error {
	var raw json.RawMessage
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("client: %s: encoding args: %w", op, err)
		}
		raw = b
	}
	id := "auto-" + strconv.FormatUint(c.nextID.Add(1), 10)
	res, err := c.DoRaw(ctx, id, op, raw)
	if err != nil {
		return err
	}
	if result != nil && len(res) > 0 {
		if err := json.Unmarshal(res, result); err != nil {
			return fmt.Errorf("client: %s: decoding result %s: %w", op, res, err)
		}
	}
	return nil
}

// DoRaw is Do with the caller's id and raw args (nil: no "args" member; they
// must be valid JSON). It returns the raw result. Several DoRaw calls may
// wait for the same id: see the package documentation.
func (c *Client) DoRaw(ctx context.Context, id, op string, args json.RawMessage) (json.RawMessage, error) {
	frame, err := json.Marshal(protocol.Request{ID: id, Op: op, Args: args})
	if err != nil {
		return nil, fmt.Errorf("client: %s: encoding request: %w", op, err)
	}
	w := &waiter{ch: make(chan replyMsg, 1)}
	select {
	case c.sendTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	c.pending[id] = append(c.pending[id], w)
	c.mu.Unlock()
	if err := c.enqueue(ctx, outMsg{websocket.TextMessage, frame}); err != nil {
		// Never sent: no reply will come, so take the slot back.
		c.mu.Lock()
		c.removeWaiter(id, w)
		c.mu.Unlock()
		<-c.sendTurn
		return nil, err
	}
	<-c.sendTurn

	select {
	case r := <-w.ch:
		return r.value()
	case <-ctx.Done():
		c.mu.Lock()
		w.abandoned = true // its reply, if any, becomes an unmatched reply
		c.mu.Unlock()
		select {
		case r := <-w.ch: // delivered before we gave up
			return r.value()
		default:
		}
		return nil, ctx.Err()
	case <-c.done:
		select {
		case r := <-w.ch:
			return r.value()
		default:
		}
		return nil, c.err
	}
}

// SendRaw queues frame as a text message, as is. It returns once the frame is
// queued; a reply to it arrives on Events as an unmatched reply.
func (c *Client) SendRaw(ctx context.Context, frame []byte) error {
	return c.enqueue(ctx, outMsg{websocket.TextMessage, bytes.Clone(frame)})
}

// SendBinary queues data as a binary message (which the protocol does not
// allow), for tests of the server's reaction.
func (c *Client) SendBinary(ctx context.Context, data []byte) error {
	return c.enqueue(ctx, outMsg{websocket.BinaryMessage, bytes.Clone(data)})
}

func (c *Client) enqueue(ctx context.Context, m outMsg) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.closing:
		return ErrClosed
	case <-c.done:
		return c.err
	default:
	}
	select {
	case c.send <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		return ErrClosed
	case <-c.done:
		return c.err
	}
}

// removeWaiter drops w from id's queue. c.mu must be held.
func (c *Client) removeWaiter(id string, w *waiter) {
	q := c.pending[id]
	for i, x := range q {
		if x == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(c.pending, id)
	} else {
		c.pending[id] = q
	}
}

// ---- reader ----

func (c *Client) setupConn() {
	c.conn.SetReadLimit(c.opts.readLimit)
	c.extendDeadline()
	c.conn.SetPingHandler(func(data string) error {
		c.extendDeadline()
		err := c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		var ne net.Error
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})
	c.conn.SetPongHandler(func(string) error {
		c.extendDeadline()
		return nil
	})
}

func (c *Client) extendDeadline() {
	if c.opts.readTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.opts.readTimeout))
	}
}

// readLoop is the connection's only reader. When it ends it stops the
// writer, closes the connection, and publishes the end.
func (c *Client) readLoop() {
	rerr := c.readFrames()
	close(c.stopWriter)
	_ = c.conn.Close()
	<-c.writerDone
	c.err = c.finalErr(rerr)
	c.opts.logger.Debug("signaling client: connection ended", "err", c.err)
	close(c.events)
	close(c.done)
}

func (c *Client) finalErr(rerr error) error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	var ce *websocket.CloseError
	if errors.As(rerr, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		return &CloseError{Code: ce.Code, Text: ce.Text}
	}
	if c.writeErr != nil {
		return fmt.Errorf("%w: write: %w", ErrClosed, c.writeErr)
	}
	if ce != nil {
		return &CloseError{Code: ce.Code, Text: ce.Text}
	}
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w: nothing from the server for %v: %w", ErrClosed, ErrReadTimeout, c.opts.readTimeout, rerr)
	}
	return fmt.Errorf("%w: %w", ErrClosed, rerr)
}

func (c *Client) readFrames() error {
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			return err
		}
		c.extendDeadline()
		if typ != websocket.TextMessage {
			return c.protocolError(websocket.CloseUnsupportedData, &ProtocolError{Reason: "binary frame", Frame: truncate(data)})
		}
		ev, isReply, perr := parseFrame(data)
		if perr != nil {
			return c.protocolError(websocket.CloseProtocolError, perr)
		}
		if isReply && c.deliverReply(ev) {
			continue
		}
		if !isReply {
			for _, o := range c.observersOf(ev.Name) {
				o.f(ev)
			}
			if h := c.handler(ev.Name); h != nil {
				h(ev)
				continue
			}
		}
		select {
		case c.events <- ev:
		case <-c.closing:
			return ErrClosed
		}
	}
}

// protocolError closes the connection with code and returns the error.
func (c *Client) protocolError(code int, perr *ProtocolError) error {
	c.opts.logger.Warn("signaling client: protocol error from server", "err", perr)
	msg := websocket.FormatCloseMessage(code, perr.Reason)
	_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
	return perr
}

// deliverReply hands a reply to the call waiting for its id and reports
// whether there was one.
func (c *Client) deliverReply(ev Event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.pending[ev.ID]
	if len(q) == 0 {
		return false
	}
	w := q[0]
	if len(q) == 1 {
		delete(c.pending, ev.ID)
	} else {
		c.pending[ev.ID] = q[1:]
	}
	if w.abandoned {
		return false
	}
	w.ch <- replyMsg{result: ev.Data, err: ev.Err} // buffered, never blocks
	return true
}

// frame is any frame the server may send.
type frame struct {
	ID     *string         `json:"id"`
	Event  *string         `json:"event"`
	Result json.RawMessage `json:"result"`
	Error  *protocol.Error `json:"error"`
	Data   json.RawMessage `json:"data"`
}

// parseFrame decodes a server frame into an Event (for a reply: Reply set,
// ID, and Data or Err).
func parseFrame(data []byte) (Event, bool, *ProtocolError) {
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return Event{}, false, &ProtocolError{Reason: "undecodable frame: " + err.Error(), Frame: truncate(data)}
	}
	switch {
	case f.Event != nil && f.ID == nil:
		return Event{Name: *f.Event, Data: f.Data}, false, nil
	case f.ID != nil && f.Event == nil:
		if f.Error != nil && f.Result != nil {
			return Event{}, false, &ProtocolError{Reason: "reply with both result and error", Frame: truncate(data)}
		}
		ev := Event{Name: UnmatchedReply, Reply: true, ID: *f.ID, Err: f.Error}
		if f.Error == nil {
			ev.Data = f.Result
		}
		return ev, true, nil
	default:
		return Event{}, false, &ProtocolError{Reason: "frame is neither a reply nor an event", Frame: truncate(data)}
	}
}

func truncate(b []byte) []byte {
	if len(b) > 256 {
		b = b[:256]
	}
	return bytes.Clone(b)
}

// ---- writer ----

// writeLoop is the connection's only writer of data frames (the reader only
// writes control frames, which gorilla allows concurrently).
func (c *Client) writeLoop() {
	defer close(c.writerDone)
	// The first ping at a random point of the first interval, then every
	// interval, as the server does: the clients of one process that dial
	// together (a gateway, a load test) do not ping together.
	var tick <-chan time.Time
	var ticker *time.Ticker
	if c.opts.pingInterval > 0 {
		ticker = time.NewTicker(c.opts.pingInterval)
		ticker.Reset(1 + rand.N(c.opts.pingInterval))
		defer ticker.Stop()
		tick = ticker.C
	}
	first := true
	for {
		select {
		case m := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(m.typ, m.data); err != nil {
				c.writeFailed(err)
				return
			}
		case <-tick:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				c.writeFailed(err)
				return
			}
			if first {
				first = false
				ticker.Reset(c.opts.pingInterval)
			}
		case <-c.closing:
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
			return // the reader ends on the server's answer or Close's timeout
		case <-c.stopWriter:
			return
		}
	}
}

// writeFailed records the writer's error and drops the connection, which
// ends the reader.
func (c *Client) writeFailed(err error) {
	c.writeErr = err
	_ = c.conn.Close()
}

// Handle routes every later event named name to f instead of Events, and
// returns a function that removes the route. f runs on the connection's
// reader goroutine: it must not block (queue the work elsewhere). Media
// clients use it for onRtcSignal, so that negotiation never waits behind a
// test's WaitEvent.
func (c *Client) Handle(name string, f func(Event)) (remove func()) {
	c.mu.Lock()
	if c.handlers == nil {
		c.handlers = make(map[string]func(Event))
	}
	c.handlers[name] = f
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.handlers, name)
		c.mu.Unlock()
	}
}

// Observe calls f with every later event named name, and lets the event go
// on as if f were not there (to its Handle route, else Events); several
// observers of a name are called in the order they were added. It returns
// a function that removes this observer. f runs on the connection's reader
// goroutine: it must not block. Media clients use it to act on an event
// (onExitRoom) that a test or application may also wait for.
func (c *Client) Observe(name string, f func(Event)) (remove func()) {
	o := &observer{f: f}
	c.mu.Lock()
	if c.observers == nil {
		c.observers = make(map[string][]*observer)
	}
	c.observers[name] = append(append([]*observer(nil), c.observers[name]...), o)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		list := c.observers[name]
		for i, x := range list {
			if x == o {
				// A new slice: observersOf's callers may hold the old one.
				c.observers[name] = append(append([]*observer(nil), list[:i]...), list[i+1:]...)
				break
			}
		}
		if len(c.observers[name]) == 0 {
			delete(c.observers, name)
		}
	}
}

// observersOf returns the observers of name now (a slice never changed
// in place).
func (c *Client) observersOf(name string) []*observer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observers[name]
}

func (c *Client) handler(name string) func(Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handlers[name]
}
