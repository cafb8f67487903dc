package web

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// HTTP hardening: the timeouts of Config are set on the http.Server that
// HTTPServer returns, and Listen caps the open connections (nginx's
// keepalive_timeout, client_body_timeout and worker_connections).
const (
	// fdReserve is the number of descriptors kept, when the connection
	// cap is clamped below the process's descriptor limit, for everything
	// but client connections: the store, the media socket, listeners,
	// logs, and the 503 replies in flight (maxRejecting).
	fdReserve = 64
	// rejectWait bounds the 503 reply to a connection past the cap.
	rejectWait = 500 * time.Millisecond
	// maxRejecting bounds the 503 replies in flight; past it, connections
	// are closed without a reply.
	maxRejecting = 16
)

// rejectResponse is the reply to a connection past server.max_connections.
var rejectResponse = func() string {
	body := "too many connections\n"
	return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n" +
		"Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}()

// HTTPServer returns the http.Server that serves s with the timeouts of
// Config: server.read_header_timeout for a request's headers,
// server.read_timeout for a whole request with its body, and
// server.idle_timeout for a keep-alive connection between requests. A
// WebSocket is not subject to the read timeout once upgraded: its reader
// sets its own deadline (server.pong_timeout) before each read. Serve it
// on a listener from Listen.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Listen listens on the TCP address addr; with certFile and keyFile (PEM)
// it serves TLS. At most server.max_connections connections are open at
// once, clamped to leave fdReserve descriptors free under the process's
// limit; a connection past the cap is answered 503 and closed at once, so
// that idle sockets can neither exhaust the descriptors nor make new
// clients hang.
func (s *Server) Listen(addr, certFile, keyFile string) (net.Listener, error) {
	var tlsCfg *tls.Config
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("web: TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	limit := s.cfg.MaxConnections
	if soft, ok := fileLimit(); ok && limit > 0 {
		if room := int(min(soft, 1<<30)) - fdReserve; limit > room {
			room = max(room, 1)
			s.log.Warn("server.max_connections lowered to fit the open file limit", "max_connections", s.cfg.MaxConnections,
				"open_file_limit", soft, "reserved", fdReserve, "effective", room)
			limit = room
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if limit > 0 {
		cl := &capListener{Listener: ln, max: int64(limit), metrics: s.metrics, rejecting: map[net.Conn]struct{}{}}
		if tlsCfg != nil {
			cl.tls = tlsCfg.Clone()
			cl.tls.NextProtos = []string{"http/1.1"}
		}
		ln = cl
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	return ln, nil
}

// capListener accepts at most max open connections; one more is answered
// 503 by a short-lived goroutine (at most maxRejecting at once, each ended
// within rejectWait or by Close) and closed.
type capListener struct {
	net.Listener
	max     int64
	tls     *tls.Config // the 503 is sent over TLS when set
	metrics reporter
	open    atomic.Int64 // connections accepted and not yet closed

	mu        sync.Mutex // guards rejecting and closed
	rejecting map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup // reject goroutines
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.open.Add(1); n <= l.max {
			return &cappedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		l.metrics.connRejected()
		l.reject(c)
	}
}

func (l *capListener) reject(c net.Conn) {
	l.mu.Lock()
	if l.closed || len(l.rejecting) >= maxRejecting {
		l.mu.Unlock()
		_ = c.Close()
		return
	}
	l.rejecting[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		defer func() {
			l.mu.Lock()
			delete(l.rejecting, c)
			l.mu.Unlock()
			_ = c.Close()
		}()
		_ = c.SetDeadline(time.Now().Add(rejectWait))
		var rw io.ReadWriter = c
		if l.tls != nil {
			tc := tls.Server(c, l.tls)
			if tc.Handshake() != nil {
				return
			}
			rw = tc
		}
		// Read the request's head first: closing with unread bytes would
		// reset the connection, and the client could lose the 503.
		buf := make([]byte, 0, 4096)
		for len(buf) < cap(buf) && !bytes.Contains(buf, []byte("\r\n\r\n")) {
			n, err := rw.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				break
			}
		}
		_, _ = io.WriteString(rw, rejectResponse)
	}()
}

// Close stops accepting, ends the 503 replies in flight and waits for them.
func (l *capListener) Close() error {
	l.mu.Lock()
	l.closed = true
	for c := range l.rejecting {
		_ = c.SetDeadline(time.Now())
	}
	l.mu.Unlock()
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

// cappedConn gives its slot back to the listener when closed, whether by
// the HTTP server or, after an upgrade, by the WebSocket.
type cappedConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// SyscallConn is the socket's, as on a bare *net.TCPConn (the WebSocket
// transport reads and writes it raw: rawio.IO).
func (c *cappedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("web: the connection has no file descriptor")
}

// CloseWrite lets the HTTP server half-close, as on a bare *net.TCPConn.
func (c *cappedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
