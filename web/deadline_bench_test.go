package web_test

import (
	"net"
	"testing"
	"time"
)

// BenchmarkReadDeadline is the per-message cost of the idle deadline on a
// loopback TCP socket: moved on every message (before) or only once 1/64 of
// the timeout has passed since it was last moved (readLoop now).
func BenchmarkReadDeadline(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if peer := <-done; peer != nil {
		defer peer.Close()
	}
	const timeout = 60 * time.Second
	b.Run("every", func(b *testing.B) {
		for b.Loop() {
			_ = c.SetReadDeadline(time.Now().Add(timeout))
		}
	})
	b.Run("lazy", func(b *testing.B) {
		slack := timeout / 64
		var setAt time.Time
		for b.Loop() {
			if now := time.Now(); now.Sub(setAt) >= slack {
				setAt = now
				_ = c.SetReadDeadline(now.Add(timeout + slack))
			}
		}
	})
}
