package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The relay is the signaling baseline: the least a WebSocket server can do
// to carry a call setup. Same gorilla library, buffer sizes, send queue,
// ping and pong timers as the server's transport; one reader and one writer
// goroutine per connection; it reads {"to":user,…} frames and queues each,
// unchanged, to that user's connection. No auth, no logic, no storage.
const (
	relaySendQueue    = 256 // limits.send_queue
	relayPingInterval = 25 * time.Second
	relayPongTimeout  = 60 * time.Second
	relayWriteTimeout = 10 * time.Second
	relayMaxFrame     = 64 << 10
)

type relay struct {
	upgrader websocket.Upgrader
	http     *http.Server
	ln       net.Listener
	errc     chan error

	mu    sync.RWMutex // guards users
	users map[string]*relayConn
	wg    sync.WaitGroup
}

type relayConn struct {
	ws   *websocket.Conn
	send chan []byte
	done chan struct{}
	once sync.Once
}

func (c *relayConn) stop() { c.once.Do(func() { close(c.done) }) }

// startRelay serves the relay on 127.0.0.1; clients connect to
// ws://addr/ws?user=NAME.
func startRelay() (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{
		upgrader: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096},
		ln:       ln,
		errc:     make(chan error, 1),
		users:    make(map[string]*relayConn),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", r.handle)
	r.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { r.errc <- r.http.Serve(ln) }()
	return r, nil
}

func (r *relay) url() string { return "ws://" + r.ln.Addr().String() + "/ws" }

// stop closes every connection and the listener.
func (r *relay) stop() error {
	err := r.http.Close() // hijacked connections are not closed by this
	r.mu.Lock()
	for _, c := range r.users {
		c.stop()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if serr := <-r.errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func (r *relay) handle(w http.ResponseWriter, req *http.Request) {
	user := req.URL.Query().Get("user")
	if user == "" {
		http.Error(w, "user required", http.StatusBadRequest)
		return
	}
	ws, err := r.upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	c := &relayConn{ws: ws, send: make(chan []byte, relaySendQueue), done: make(chan struct{})}
	r.mu.Lock()
	r.users[user] = c
	r.wg.Add(1)
	r.mu.Unlock()
	go r.writeLoop(c)
	r.readLoop(c)
	r.mu.Lock()
	if r.users[user] == c {
		delete(r.users, user)
	}
	r.mu.Unlock()
}

func (r *relay) readLoop(c *relayConn) {
	c.ws.SetReadLimit(relayMaxFrame)
	_ = c.ws.SetReadDeadline(time.Now().Add(relayPongTimeout))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(relayPongTimeout)) })
	var to struct {
		To string `json:"to"`
	}
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.stop()
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(relayPongTimeout))
		to.To = ""
		if json.Unmarshal(data, &to) != nil {
			continue
		}
		r.mu.RLock()
		dst := r.users[to.To]
		r.mu.RUnlock()
		if dst != nil {
			dst.deliver(data)
		}
	}
}

// deliver queues without blocking; a full queue drops the connection, as
// the server does.
func (c *relayConn) deliver(frame []byte) {
	select {
	case c.send <- frame:
	default:
		c.stop()
	}
}

func (r *relay) writeLoop(c *relayConn) {
	defer r.wg.Done()
	// The first ping at a random point of the first interval, then every
	// interval, as the server's transport does (its connections made
	// together do not ping together).
	ping := time.NewTicker(relayPingInterval)
	ping.Reset(1 + rand.N(relayPingInterval))
	first := true
	defer func() {
		ping.Stop()
		_ = c.ws.Close()
	}()
	for {
		select {
		case frame := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(relayWriteTimeout))
			if c.ws.WriteMessage(websocket.TextMessage, frame) != nil {
				c.stop()
				return
			}
		case <-ping.C:
			if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(relayWriteTimeout)) != nil {
				c.stop()
				return
			}
			if first {
				first = false
				ping.Reset(relayPingInterval)
			}
		case <-c.done:
			return
		}
	}
}

// roleRelay is the hidden role of the relay's child process (signaling
// mode): the relay has its own CPU and memory figures, read from /proc as a
// child server's are, and its own file descriptors.
const roleRelay = "relay"

// startRelayTarget starts the relay in a child process of the bench. Its
// server has the URL, the child's pid and stop; cpu, memory and counters
// work as they do for a server in a child process.
func startRelayTarget(ctx context.Context) (*server, error) {
	c, err := startChildRole(ctx, roleRelay, "relay")
	if err != nil {
		return nil, err
	}
	return &server{mode: modeChild, wsURL: c.url, pid: c.pid, stop: c.stop}, nil
}

// runRelayChild serves a relay until stdin closes; its URL is the one line
// on stdout.
func runRelayChild(stdin io.Reader, stdout io.Writer) error {
	r, err := startRelay()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, r.url()); err != nil {
		_ = r.stop()
		return err
	}
	_, _ = io.Copy(io.Discard, stdin)
	return r.stop()
}
