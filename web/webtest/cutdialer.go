package webtest

import (
	"context"
	"net"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/signaling/client"
)

// CutDialer dials one user's WebSocket connections to a Stack and keeps
// their TCP connections, so that a test can cut the latest one under the
// client (a network drop): its Dial suits roomclient.Options.Redial.
type CutDialer struct {
	Stack *Stack
	User  string

	mu    sync.Mutex
	conns []net.Conn
}

// Dial opens a connection of User, without client pings.
func (d *CutDialer) Dial(ctx context.Context) (*client.Client, error) {
	wd := *websocket.DefaultDialer
	wd.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
		}
		return c, err
	}
	return client.Dial(ctx, d.Stack.URL, d.Stack.Token(d.User), client.WithPingInterval(0), client.WithDialer(&wd))
}

// Cut closes the latest TCP connection: the client's WebSocket ends at once
// and the server sees its connection close.
func (d *CutDialer) Cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.conns[len(d.conns)-1].Close()
}
