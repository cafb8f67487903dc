package web

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestTextFrameLikeGorilla: appendTextFrame writes, byte for byte, the
// frame gorilla's WriteMessage writes as a server (the upgrader's settings:
// no compression) for payloads around each length encoding's bounds.
func TestTextFrameLikeGorilla(t *testing.T) {
	sizes := []int{0, 1, 2, 125, 126, 127, 4095, 4096, 4097, 65535, 65536, 65537, 200000}
	up := websocket.Upgrader{ReadBufferSize: readBufferSize, WriteBufferSize: 4096}
	payload := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte('a' + i%26)
		}
		return p
	}
	errc := make(chan error, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			errc <- err
			return
		}
		defer ws.Close()
		for _, n := range sizes {
			if err := ws.WriteMessage(websocket.TextMessage, payload(n)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}))
	defer hs.Close()

	// A client of its own, reading the bytes as they come.
	nc, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	for _, n := range sizes {
		want := appendTextFrame(nil, payload(n))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("payload of %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			head := min(len(got), 16)
			t.Fatalf("payload of %d bytes: gorilla sent % x…, appendTextFrame % x…", n, got[:head], want[:head])
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
