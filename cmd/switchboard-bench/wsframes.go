package main

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// frameCounter counts the WebSocket data frames (text, binary and
// continuation; not ping, pong or close) a client connection sends and
// receives, by following the frame headers on the raw TCP stream after
// the HTTP upgrade. The bench's clients do not ask for compression, so
// every message is at least one frame and nothing else is on the wire.
type frameCounter struct {
	frames atomic.Int64
}

// total is the data frames counted so far, both directions.
func (fc *frameCounter) total() int64 { return fc.frames.Load() }

// dialer is a WebSocket dialer whose connections are counted.
func (fc *frameCounter) dialer() *websocket.Dialer {
	d := *websocket.DefaultDialer
	var nd net.Dialer
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: c, in: frameParser{n: &fc.frames}, out: frameParser{n: &fc.frames}}, nil
	}
	return &d
}

// countedConn feeds what is read and written to a parser per direction.
type countedConn struct {
	net.Conn
	in, out frameParser
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.feed(b[:n])
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.feed(b[:n])
	return n, err
}

// frameParser follows one direction of a WebSocket connection: the HTTP
// head up to its empty line, then frame headers (RFC 6455 5.2) and the
// payloads they announce.
type frameParser struct {
	mu     sync.Mutex // the writer and control-frame writers may both write
	n      *atomic.Int64
	inBody bool   // past the HTTP head
	crlf   int    // bytes of "\r\n\r\n" matched at the end of the head so far
	hdr    []byte // the frame header read so far
	skip   int64  // payload bytes still to skip
}

func (p *frameParser) feed(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	const eoh = "\r\n\r\n"
	for len(b) > 0 {
		switch {
		case !p.inBody:
			c := b[0]
			b = b[1:]
			switch {
			case c == eoh[p.crlf]:
				p.crlf++
			case c == '\r':
				p.crlf = 1
			default:
				p.crlf = 0
			}
			p.inBody = p.crlf == len(eoh)
		case p.skip > 0:
			k := min(p.skip, int64(len(b)))
			b = b[k:]
			p.skip -= k
		default:
			p.hdr = append(p.hdr, b[0])
			b = b[1:]
			if len(p.hdr) < 2 {
				continue
			}
			need := 2
			switch p.hdr[1] & 0x7f {
			case 126:
				need += 2
			case 127:
				need += 8
			}
			if p.hdr[1]&0x80 != 0 {
				need += 4 // masking key
			}
			if len(p.hdr) < need {
				continue
			}
			var size int64
			switch l := p.hdr[1] & 0x7f; l {
			case 126:
				size = int64(p.hdr[2])<<8 | int64(p.hdr[3])
			case 127:
				for _, x := range p.hdr[2:10] {
					size = size<<8 | int64(x)
				}
			default:
				size = int64(l)
			}
			if p.hdr[0]&0x0f < 0x8 { // data frame
				p.n.Add(1)
			}
			p.skip = size
			p.hdr = p.hdr[:0]
		}
	}
}
