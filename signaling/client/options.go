package client

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults of the options.
const (
	DefaultEventBuffer      = 256
	DefaultSendQueue        = 64
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultReadTimeout      = 90 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultReadLimit        = 4 << 20
)

// writeWait bounds every write (frame, ping, pong, close).
const writeWait = 10 * time.Second

type options struct {
	eventBuffer      int
	sendQueue        int
	header           http.Header
	dialer           *websocket.Dialer
	handshakeTimeout time.Duration
	readTimeout      time.Duration
	pingInterval     time.Duration
	closeTimeout     time.Duration
	readLimit        int64
	logger           *slog.Logger
}

func defaultOptions() options {
	return options{
		eventBuffer:      DefaultEventBuffer,
		sendQueue:        DefaultSendQueue,
		handshakeTimeout: DefaultHandshakeTimeout,
		readTimeout:      DefaultReadTimeout,
		pingInterval:     DefaultPingInterval,
		closeTimeout:     DefaultCloseTimeout,
		readLimit:        DefaultReadLimit,
		logger:           slog.New(slog.DiscardHandler),
	}
}

// Option configures Dial.
type Option func(*options)

// WithEventBuffer sets the capacity of the Events channel (default 256; 0
// makes it unbuffered; negative values are ignored).
func WithEventBuffer(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.eventBuffer = n
		}
	}
}

// WithSendQueue sets the capacity of the send queue drained by the writer
// (default 64, at least 1). A call finding it full waits for room or for its
// context.
func WithSendQueue(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.sendQueue = n
		}
	}
}

// WithHeader adds headers to the handshake request, e.g. Origin. Values are
// added to, not replacing, those of earlier WithHeader options. The token
// given to Dial, when not empty, sets Authorization last.
func WithHeader(h http.Header) Option {
	return func(o *options) {
		if o.header == nil {
			o.header = http.Header{}
		}
		for k, vs := range h {
			for _, v := range vs {
				o.header.Add(k, v)
			}
		}
	}
}

// WithDialer sets the dialer (TLS config, proxy, buffer sizes…). It is
// copied, not modified. By default a copy of websocket.DefaultDialer.
func WithDialer(d *websocket.Dialer) Option {
	return func(o *options) { o.dialer = d }
}

// WithHandshakeTimeout bounds the handshake (default 10s), in addition to
// Dial's context. It overrides the dialer's HandshakeTimeout.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) { o.handshakeTimeout = d }
}

// WithReadTimeout sets how long the connection may stay silent, not even a
// ping or pong, before the client gives up on the server (default 90s). 0
// disables it.
func WithReadTimeout(d time.Duration) Option {
	return func(o *options) { o.readTimeout = d }
}

// WithPingInterval sets how often the client pings the server (default
// 30s; the first ping comes at a random point of the first interval); the
// server's pongs extend the read timeout. 0 disables pings.
func WithPingInterval(d time.Duration) Option {
	return func(o *options) { o.pingInterval = d }
}

// WithCloseTimeout bounds how long Close waits for the server to answer the
// close frame before dropping the connection (default 2s).
func WithCloseTimeout(d time.Duration) Option {
	return func(o *options) { o.closeTimeout = d }
}

// WithReadLimit sets the largest frame accepted from the server (default 4
// MiB); a larger one ends the connection.
func WithReadLimit(n int64) Option {
	return func(o *options) { o.readLimit = n }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}
