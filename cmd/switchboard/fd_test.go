package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// TestIdleSocketsCannotExhaustDescriptors is issue #11 item 4 against the
// real binary: with its descriptor limit at 256, more sockets than that
// send one GET /healthz each and stay silent. The server must keep
// answering new connections at once (503 past its cap, never a hang nor
// "too many open files"), and close the idle sockets after
// server.idle_timeout, after which /healthz is 200 again.
func TestIdleSocketsCannotExhaustDescriptors(t *testing.T) {
	const fdLimit, sockets = 256, 300
	db := filepath.Join(t.TempDir(), "sb.db")
	args := []string{"--server.addr=127.0.0.1:0", "--store.path=" + db, "--media.udp_port=0", "--media.listen_ip=127.0.0.1",
		"--auth.secret=" + procSecret, "--log.format=json", "--metrics.addr=127.0.0.1:0", "--server.idle_timeout=2s"}
	// The shell sets both the soft and the hard limit, as a container would.
	cmd := exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fdLimit), serverBinary(t)}, args...)...)
	var logs webtest.LogBuffer
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
			var line struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "switchboard serving" {
				addrc <- strings.TrimPrefix(line.URL, "http://")
			}
		}
		done <- cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("server exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}

	// The attack: each socket sends one request, reads what comes back
	// (200, or 503 past the cap) and stays open and silent.
	idle := make([]net.Conn, 0, sockets)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	codes := map[int]int{}
	for range sockets {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		idle = append(idle, c)
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			codes[-1]++
			continue
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			codes[-1]++ // no answer within 3 s: the server cannot accept
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		codes[res.StatusCode]++
		_ = c.SetDeadline(time.Time{})
	}
	t.Logf("%d sockets against a %d-descriptor server: replies by status %v (-1: none within 3 s)", sockets, fdLimit, codes)
	if codes[-1] > 0 {
		t.Errorf("%d sockets got no answer", codes[-1])
	}
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no socket was refused with 503 past the cap")
	}

	// A new client is answered at once, while the idle sockets are open.
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	res, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz during the attack: %v\n", err)
	}
	res.Body.Close()
	t.Logf("healthz during the attack: %d after %v", res.StatusCode, time.Since(start))

	// The idle sockets are closed by the server after server.idle_timeout.
	closed := 0
	for _, c := range idle {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != len(idle) {
		t.Errorf("%d of %d idle sockets closed by the server", closed, len(idle))
	}
	res, err = hc.Get("http://" + addr + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz after the idle sockets were closed: %v %v", res, err)
	}
	res.Body.Close()
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the server ran out of descriptors:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "open file limit") {
		t.Errorf("the descriptor limit is not logged at start")
	}
}
