package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-rtc/switchboard/web"
)

// Idle users are connected from a child process of the bench (the bench's
// own binary, started with roleEnv set), so that the memory they cost the
// client side never mixes with the server's when the server runs in this
// process, and so that the file descriptors are split over two processes.
const (
	roleIdleUsers = "idle-users"

	envIdleURL    = "SWITCHBOARD_BENCH_URL" // space-separated: user i connects to the (i mod n)-th
	envIdleUsers  = "SWITCHBOARD_BENCH_USERS"
	envIdleSecret = "SWITCHBOARD_BENCH_SECRET" // empty: connect with ?user= (the relay)

	idleDialers     = 32
	idleDialTimeout = 20 * time.Second
	idleReadyWait   = 5 * time.Minute
)

// idleReport is the child's one line on stdout once every dial ended.
type idleReport struct {
	Connected int    `json:"connected"`
	Failed    int    `json:"failed"`
	FirstErr  string `json:"firstErr,omitempty"`
}

// idleUsers is a running idle-users child.
type idleUsers struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	waitc chan error
	n     int
}

// idleUserID names the i-th idle user.
func idleUserID(i int) string { return fmt.Sprintf("idle%05d", i) }

// startIdleUsers starts a child that connects n idle users to wsURLs (user
// i to the (i mod len)-th: spread over a cluster's nodes) and keeps them
// connected (answering pings) until stop. secret empty: the relay.
func startIdleUsers(ctx context.Context, wsURLs []string, secret []byte, n int) (*idleUsers, idleReport, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, idleReport{}, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(),
		roleEnv+"="+roleIdleUsers,
		envIdleURL+"="+strings.Join(wsURLs, " "),
		envIdleUsers+"="+strconv.Itoa(n),
		envIdleSecret+"="+string(secret),
	)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, idleReport{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, idleReport{}, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, idleReport{}, fmt.Errorf("start idle-users child: %w", err)
	}
	u := &idleUsers{cmd: cmd, stdin: stdin, waitc: make(chan error, 1), n: n}
	repc := make(chan idleReport, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r idleReport
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				repc <- r
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		u.waitc <- cmd.Wait()
	}()
	select {
	case r := <-repc:
		return u, r, nil
	case werr := <-u.waitc:
		u.waitc <- werr
		return nil, idleReport{}, fmt.Errorf("idle-users child exited before connecting: %v", werr)
	case <-time.After(idleReadyWait):
	case <-ctx.Done():
	}
	_ = u.stop()
	return nil, idleReport{}, fmt.Errorf("idle-users child did not finish connecting %d users in %v", n, idleReadyWait)
}

// stop closes the child's stdin (it then closes its connections and exits)
// and waits for it, killing it after a grace period.
func (u *idleUsers) stop() error {
	_ = u.stdin.Close()
	select {
	case err := <-u.waitc:
		return err
	case <-time.After(15 * time.Second):
		_ = u.cmd.Process.Kill()
		<-u.waitc
		return errors.New("idle-users child did not exit; killed")
	}
}

// runIdleUsersChild is the child's main: connect, report, wait for stdin to
// close, disconnect.
func runIdleUsersChild(stdin io.Reader, stdout io.Writer) error {
	wsURLs := strings.Fields(os.Getenv(envIdleURL))
	n, err := strconv.Atoi(os.Getenv(envIdleUsers))
	if err != nil || len(wsURLs) == 0 {
		return fmt.Errorf("bad child environment: url %q users %q", os.Getenv(envIdleURL), os.Getenv(envIdleUsers))
	}
	secret := os.Getenv(envIdleSecret)
	if err := raiseFileLimit(uint64(n) + 256); err != nil {
		return err
	}
	var auth *web.Authenticator
	if secret != "" {
		if auth, err = web.NewAuthenticator(web.AuthConfig{Secret: []byte(secret)}); err != nil {
			return err
		}
	}
	dialer := websocket.Dialer{HandshakeTimeout: idleDialTimeout, ReadBufferSize: 1024, WriteBufferSize: 1024}
	var (
		mu       sync.Mutex
		conns    []*websocket.Conn
		failed   int
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
		readers  sync.WaitGroup
	)
	for range idleDialers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := dialIdle(&dialer, auth, wsURLs[i%len(wsURLs)], idleUserID(i))
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
				if err == nil {
					// The reader answers the server's pings (gorilla's
					// default ping handler) and discards anything else.
					readers.Go(func() {
						for {
							if _, _, err := c.NextReader(); err != nil {
								return
							}
						}
					})
				}
			}
		})
	}
	wg.Wait()
	rep := idleReport{Connected: len(conns), Failed: failed}
	if firstErr != nil {
		rep.FirstErr = firstErr.Error()
	}
	line, _ := json.Marshal(rep)
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, stdin) // until the parent closes it
	for _, c := range conns {
		_ = c.Close()
	}
	readers.Wait()
	return nil
}

func dialIdle(d *websocket.Dialer, auth *web.Authenticator, wsURL, user string) (*websocket.Conn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	h := http.Header{}
	if auth != nil {
		tok, _, err := auth.Issue(user, "", 24*time.Hour)
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Bearer "+tok)
	} else {
		q.Set("user", user)
	}
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), idleDialTimeout)
	defer cancel()
	c, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", user, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", user, err)
	}
	return c, nil
}
