// Package roomclient is a Go participant of a Switchboard media room: it
// enters a room over a signaling client's WebSocket and runs a media/peer
// that publishes synthetic VP8 video and Opus audio and counts what it
// receives. With Options.Redial it also survives its WebSocket: it
// reconnects and enters the room again by itself, resuming its place
// (ROOMS.md, Reconnecting). Tests and the benchmark use it.
//
// Dependencies: it builds on signaling/client (the WebSocket), rooms (the
// protocol types) and media/peer (the Pion side); nothing imports it.
package roomclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Reconnection pacing: the first attempt at once, then backoff doubling up
// to redialBackoffMax; each attempt (dial and enterRoom) bounded.
const (
	redialBackoff    = 100 * time.Millisecond
	redialBackoffMax = 2 * time.Second
	redialAttempt    = 10 * time.Second
)

// Options configure Enter.
type Options struct {
	Role      rooms.Role // default anchor
	RoomToken string
	// Peer configures the media side. Audio and Video are forced off for
	// an audience member; nil ICEServers take enterRoom's iceServers.
	Peer peer.Config
	// Redial, when set, returns a new connected client. When the Room's
	// client connection ends (not by Room.Close), the Room dials again
	// (retrying with backoff until Close) and enters the room again with
	// its resumeToken: when the server resumed the entry, the peer and its
	// PeerConnections go on (ICE is restarted if they are not connected);
	// otherwise a new peer publishes the same tracks. The Room closes the
	// clients it dialed. A refusal by the server (an error reply) ends the
	// attempts; it is in Errors.
	Redial func(ctx context.Context) (*client.Client, error)
}

// Room is one participant in one room. A signaling client carries at most
// one Room at a time (it routes onRtcSignal to it).
type Room struct {
	roomID string
	role   rooms.Role
	opts   Options

	// mu guards the fields below. Never held across network I/O or a
	// wait; pumps read c and peer through it.
	mu       sync.Mutex
	c        *client.Client
	dialed   bool // c was dialed by the Room (Redial): Close closes it
	peer     *peer.Peer
	result   rooms.EnterResult
	in       *peer.SignalQueue // server signals for the peer, this connection's
	out      *peer.SignalQueue // the peer's signals for the server
	stop     func()            // removes the onRtcSignal route
	closed   bool
	resumed  int // re-entries the server resumed
	reentred int // re-entries that were new entries
	errs     []error

	closing chan struct{}      // closed by Close
	ctx     context.Context    // of the reconnection attempts; cancelled by Close
	cancel  context.CancelFunc //
	wg      sync.WaitGroup
}

// Enter enters roomID and starts negotiating media.
func Enter(ctx context.Context, c *client.Client, roomID string, opts Options) (*Room, error) {
	if opts.Role == "" {
		opts.Role = rooms.RoleAnchor
	}
	if opts.Role == rooms.RoleAudience {
		opts.Peer.Audio, opts.Peer.Video = false, false
	}
	r := &Room{roomID: roomID, role: opts.Role, opts: opts, c: c, closing: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// Route signals before entering: the server's subscriber offer may
	// arrive before the reply.
	in, stop := r.route(c)
	var res rooms.EnterResult
	if err := c.Do(ctx, rooms.OpEnterRoom, r.enterArgs(""), &res); err != nil {
		stop()
		r.cancel()
		return nil, err
	}
	out := peer.NewSignalQueue()
	p, err := peer.New(r.peerConfig(res), out.Push)
	if err != nil {
		stop()
		r.cancel()
		_ = c.Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: roomID}, nil)
		return nil, fmt.Errorf("roomclient: %w", err)
	}
	r.peer, r.result, r.in, r.out, r.stop = p, res, in, out, stop
	r.wg.Add(2)
	go r.pumpIn(in, p)
	go r.pumpOut(out)
	if opts.Redial != nil {
		r.wg.Add(1)
		go r.watch()
	}
	return r, nil
}

// peerConfig is Options.Peer, with the ICE servers an enterRoom reply
// handed out (as a browser would use them) when it names none.
func (r *Room) peerConfig(res rooms.EnterResult) peer.Config {
	pc := r.opts.Peer
	if pc.ICEServers == nil {
		for _, s := range res.ICEServers {
			pc.ICEServers = append(pc.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
	}
	return pc
}

func (r *Room) enterArgs(resumeToken string) rooms.EnterArgs {
	return rooms.EnterArgs{RoomID: r.roomID, Role: string(r.role), RoomToken: r.opts.RoomToken, ResumeToken: resumeToken}
}

// route queues c's onRtcSignal events of this room.
func (r *Room) route(c *client.Client) (*peer.SignalQueue, func()) {
	in := peer.NewSignalQueue()
	stop := c.Handle(rooms.EvRtcSignal, func(ev client.Event) {
		var s rooms.SignalArgs
		if ev.Decode(&s) == nil && s.RoomID == r.roomID {
			in.Push(s.Signal)
		}
	})
	return in, func() { stop(); in.Close() }
}

// Result is the latest enterRoom reply.
func (r *Room) Result() rooms.EnterResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.result
}

// Peer is the media side, for its counters (a new one after a re-entry
// the server did not resume).
func (r *Room) Peer() *peer.Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peer
}

// Client is the signaling client the Room uses now.
func (r *Room) Client() *client.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// Rejoins counts the re-entries after a reconnection: resumed by the
// server, and entered anew.
func (r *Room) Rejoins() (resumed, entered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resumed, r.reentred
}

// Errors returns negotiation errors seen so far (from the server or the peer).
func (r *Room) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

func (r *Room) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *Room) pumpIn(in *peer.SignalQueue, p *peer.Peer) {
	defer r.wg.Done()
	for {
		s, ok := in.Pop()
		if !ok {
			return
		}
		if err := p.HandleSignal(s); err != nil {
			r.fail(fmt.Errorf("peer: %s %s: %w", s.Target, s.Type, err))
		}
	}
}

func (r *Room) pumpOut(out *peer.SignalQueue) {
	defer r.wg.Done()
	for {
		s, ok := out.Pop()
		if !ok {
			return
		}
		c := r.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Do(ctx, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: r.roomID, Signal: s}, nil)
		cancel()
		// A signal lost with a connection is made up for on re-entry
		// (resent offers, ICE restart).
		if err != nil && !errors.Is(err, client.ErrClosed) && c.Err() == nil {
			r.fail(fmt.Errorf("server: %s %s: %w", s.Target, s.Type, err))
		}
	}
}

// watch waits for the client's connection to end and enters the room
// again on a new one, until Close.
func (r *Room) watch() {
	defer r.wg.Done()
	for {
		c := r.Client()
		select {
		case <-r.closing:
			return
		case <-c.Done():
		}
		if !r.rejoin() {
			return
		}
	}
}

// rejoin dials and re-enters until it succeeds (true), the server refuses
// the entry, or Close (false).
func (r *Room) rejoin() bool {
	backoff := time.Duration(0)
	for {
		select {
		case <-r.closing:
			return false
		case <-time.After(backoff):
		}
		backoff = min(max(2*backoff, redialBackoff), redialBackoffMax)
		ctx, cancel := context.WithTimeout(r.ctx, redialAttempt)
		c, err := r.opts.Redial(ctx)
		if err == nil {
			err = r.reenter(ctx, c)
			if err != nil {
				_ = c.Close()
			}
		}
		cancel()
		if err == nil {
			return true
		}
		var perr *protocol.Error
		if errors.As(err, &perr) {
			r.fail(fmt.Errorf("roomclient: entering %s again: %w", r.roomID, err))
			return false
		}
	}
}

// reenter enters the room again on c with the resume token, and switches
// the Room to c: the same peer when resumed, a new one otherwise.
func (r *Room) reenter(ctx context.Context, c *client.Client) error {
	in, stop := r.route(c)
	token := r.Result().ResumeToken
	var res rooms.EnterResult
	if err := c.Do(ctx, rooms.OpEnterRoom, r.enterArgs(token), &res); err != nil {
		stop()
		return err
	}
	var fresh *peer.Peer
	var freshOut *peer.SignalQueue
	if !res.Resumed {
		freshOut = peer.NewSignalQueue()
		var err error
		if fresh, err = peer.New(r.peerConfig(res), freshOut.Push); err != nil {
			stop()
			return fmt.Errorf("roomclient: %w", err)
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		stop()
		if fresh != nil {
			_ = fresh.Close()
		}
		return nil
	}
	oldStop, oldPeer, oldOut, oldClient, oldDialed := r.stop, r.peer, r.out, r.c, r.dialed
	r.c, r.dialed, r.result, r.in, r.stop = c, true, res, in, stop
	if res.Resumed {
		r.resumed++
	} else {
		r.reentred++
		r.peer, r.out = fresh, freshOut
	}
	p := r.peer
	r.wg.Add(1)
	if !res.Resumed {
		r.wg.Add(1)
		go r.pumpOut(freshOut)
	}
	go r.pumpIn(in, p)
	r.mu.Unlock()

	oldStop()
	if oldDialed {
		_ = oldClient.Close()
	}
	if res.Resumed {
		// An offer or answer may have been lost with the old connection,
		// and a network change may have broken ICE.
		p.Resync()
		if !p.Connected() {
			for _, t := range []media.Target{media.TargetPublisher, media.TargetSubscriber} {
				if t == media.TargetPublisher && !p.Publishes() {
					continue
				}
				if err := p.RestartICE(t); err != nil {
					r.fail(err)
				}
			}
		}
		return nil
	}
	oldOut.Close()
	_ = oldPeer.Close()
	return nil
}

// Exit leaves the room with exitRoom and closes the media side.
func (r *Room) Exit(ctx context.Context) error {
	err := r.Client().Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: r.roomID}, nil)
	r.Close()
	return err
}

// Close closes the media side without telling the server (the server
// notices when the WebSocket or the media goes away), closes the clients
// the Room dialed, and ends every goroutine.
func (r *Room) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return
	}
	r.closed = true
	close(r.closing)
	r.cancel()
	stop, out, p, c, dialed := r.stop, r.out, r.peer, r.c, r.dialed
	r.mu.Unlock()
	stop()
	out.Close()
	_ = p.Close()
	if dialed {
		_ = c.Close()
	}
	r.wg.Wait()
}

// Received is the peer's per-track counters.
func (r *Room) Received() map[peer.TrackKey]peer.TrackStats { return r.Peer().Received() }
