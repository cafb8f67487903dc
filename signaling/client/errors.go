package client

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrClosed is matched (errors.Is) by every error reporting that the
// connection has ended, whoever ended it. After Close, Err returns ErrClosed
// itself.
var ErrClosed = errors.New("client: connection closed")

// ErrReadTimeout is matched by Err when the server stayed silent (no frame,
// ping or pong) for the read timeout (WithReadTimeout). Err also matches
// ErrClosed then.
var ErrReadTimeout = errors.New("client: read timeout")

// DialError is returned by Dial when the server answered the WebSocket
// handshake with an HTTP status other than 101 Switching Protocols, e.g. 401
// for a missing or bad token.
type DialError struct {
	Status int         // HTTP status code
	Header http.Header // response headers
	Body   string      // start of the response body (at most 1 KiB)
}

func (e *DialError) Error() string {
	return fmt.Sprintf("client: handshake failed: HTTP %d %s: %q", e.Status, http.StatusText(e.Status), e.Body)
}

// CloseError reports that the connection ended with a close frame from the
// server (or, with Code 1006, without one). It matches ErrClosed.
type CloseError struct {
	Code int    // close code, e.g. 1000, 1008, 4001
	Text string // close reason
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: connection closed by server: close %d %q", e.Code, e.Text)
}

// Unwrap makes a CloseError match ErrClosed.
func (e *CloseError) Unwrap() error { return ErrClosed }

// CloseCode returns the close code carried by err (a *CloseError anywhere in
// its chain), or 0 when it carries none.
func CloseCode(err error) int {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// ProtocolError reports a frame from the server that breaks the protocol
// (not JSON, binary, neither a reply nor an event). The client closes the
// connection on it; Err wraps it.
type ProtocolError struct {
	Reason string
	Frame  []byte // the offending frame, truncated to 256 bytes
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("client: protocol error: %s: %q", e.Reason, e.Frame)
}
