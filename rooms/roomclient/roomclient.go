// Package roomclient is a Go participant of a Switchboard media room: it
// enters a room over a signaling client's WebSocket and runs a media/peer
// that publishes synthetic VP8 video and Opus audio and counts what it
// receives. With Options.Redial it also survives its WebSocket: it
// reconnects and enters the room again by itself, resuming its place
// (ROOMS.md, Reconnecting). When the server tells it that the room's media
// node was lost (onExitRoom reason 4, a cluster), it enters the room again
// by itself on the same connection, with new media (Options.RejoinTimeout).
// Tests and the benchmark use it.
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

// DefaultRejoinTimeout is Options.RejoinTimeout's default. A call whose
// parties are not back in its room within calls.setup_timeout (30 s by
// default) ends; 10 s of attempts fit well within it.
const DefaultRejoinTimeout = 10 * time.Second

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
	// otherwise a new peer publishes the same tracks. The new connection
	// may be to another node of a cluster. The Room closes the clients it
	// dialed. A refusal by the server (an error reply other than 11015
	// room_node_unavailable, which is retried) ends the attempts; it is in
	// Errors.
	Redial func(ctx context.Context) (*client.Client, error)
	// Seats and SeatMode are enterRoom's, for the entry that creates the
	// room (ROOMS.md, "Live rooms").
	Seats    int
	SeatMode rooms.SeatMode
	// RejoinTimeout bounds how long the Room keeps entering the room again
	// after onExitRoom reason 4 (media_node_lost): it closes its peer at
	// once, then sends enterRoom (same room token and role, no resume
	// token) on the same connection at once and again with backoff
	// (100 ms doubling to 2 s) until one succeeds, a new peer publishing
	// the same tracks, or this time has passed (the last error is then in
	// Errors). 0: DefaultRejoinTimeout; negative: it does not re-enter.
	RejoinTimeout time.Duration
}

// Room is one participant in one room. A signaling client carries at most
// one Room at a time (it routes onRtcSignal to it).
type Room struct {
	roomID string
	opts   Options
	// pubAudio and pubVideo are what the peer publishes while the Room is
	// an anchor (Options.Peer's; both when it gave neither).
	pubAudio, pubVideo bool
	roleWake           chan struct{} // capacity 1: the role changed

	// mu guards the fields below. Never held across network I/O or a
	// wait; pumps read c and peer through it.
	mu       sync.Mutex
	role     rooms.Role              // the role the server gave it last
	switches []rooms.SwitchRoleEvent // the last maxSwitches onSwitchRole
	c        *client.Client
	dialed   bool // c was dialed by the Room (Redial): Close closes it
	peer     *peer.Peer
	result   rooms.EnterResult
	rt       *routes           // c's routes to the Room (and the peer's incoming signals)
	out      *peer.SignalQueue // the peer's signals for the server
	closed   bool
	resumed  int // re-entries the server resumed
	reentred int // re-entries that were new entries
	// lostOn is the connection the last onExitRoom reason 4 came on, until
	// the supervisor takes it; lost counts those events, relocated the
	// re-entries that followed them.
	lostOn    *client.Client
	lost      int
	relocated int
	errs      []error
	lostWake  chan struct{} // capacity 1: lostOn was set

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
	if opts.RejoinTimeout == 0 {
		opts.RejoinTimeout = DefaultRejoinTimeout
	}
	r := &Room{roomID: roomID, role: opts.Role, opts: opts, c: c, closing: make(chan struct{}), roleWake: make(chan struct{}, 1),
		lostWake: make(chan struct{}, 1), pubAudio: opts.Peer.Audio, pubVideo: opts.Peer.Video}
	if !r.pubAudio && !r.pubVideo {
		r.pubAudio, r.pubVideo = true, true
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// Route signals before entering: the server's subscriber offer may
	// arrive before the reply.
	rt := r.route(c)
	rt.begin()
	res, err := enter(ctx, c, r.enterArgs(""))
	if err != nil {
		rt.stop()
		r.cancel()
		return nil, err
	}
	in := rt.entered()
	out := peer.NewSignalQueue()
	p, err := peer.New(r.peerConfig(res), out.Push)
	if err != nil {
		rt.stop()
		r.cancel()
		_ = c.Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: roomID}, nil)
		return nil, fmt.Errorf("roomclient: %w", err)
	}
	r.mu.Lock()
	r.peer, r.result, r.rt, r.out = p, res, rt, out
	r.mu.Unlock()
	r.setRole(res.Role)
	r.wg.Add(4)
	go r.pumpIn(in, p)
	go r.pumpOut(out)
	go r.followRole()
	go r.supervise()
	return r, nil
}

// enter sends enterRoom on c.
func enter(ctx context.Context, c *client.Client, args rooms.EnterArgs) (rooms.EnterResult, error) {
	var res rooms.EnterResult
	err := c.Do(ctx, rooms.OpEnterRoom, args, &res)
	return res, err
}

// peerConfig is Options.Peer, with the ICE servers an enterRoom reply
// handed out (as a browser would use them) when it names none.
func (r *Room) peerConfig(res rooms.EnterResult) peer.Config {
	pc := r.opts.Peer
	pc.Audio, pc.Video = r.pubAudio, r.pubVideo
	if res.Role == rooms.RoleAudience {
		pc.Audio, pc.Video = false, false
	}
	if pc.ICEServers == nil {
		for _, s := range res.ICEServers {
			pc.ICEServers = append(pc.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
	}
	return pc
}

func (r *Room) enterArgs(resumeToken string) rooms.EnterArgs {
	return rooms.EnterArgs{RoomID: r.roomID, Role: string(r.Role()), RoomToken: r.opts.RoomToken, ResumeToken: resumeToken,
		Seats: r.opts.Seats, SeatMode: string(r.opts.SeatMode)}
}

// routes are one connection's routes to the Room: its onRtcSignal events
// of the room go to the signal queue of the entry now (a new one for each
// entry on the connection), its onSwitchRole to the Room, and its
// onExitRoom reason 4 wakes the supervisor.
//
// While an enterRoom is on its way (begin to entered), an onExitRoom of the
// room ends an older entry on this connection (the server replaces it, or
// it ended otherwise): the signals queued before it are that entry's, the
// server sends none of its after, and they are dropped. Without that, a
// new peer took the old participant's publisher answer for its own.
type routes struct {
	mu       sync.Mutex // guards in and entering; never held across a wait
	in       *peer.SignalQueue
	entering bool
	remove   func() // the handlers and the observer
}

// begin marks an enterRoom on its way.
func (rt *routes) begin() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.entering = true
}

// entered ends begin, once the enterRoom reply is in, and returns the
// entry's queue.
func (rt *routes) entered() *peer.SignalQueue {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.entering = false
	return rt.in
}

// olderEntryEnded drops the signals queued for an entry that ended while
// an enterRoom is on its way.
func (rt *routes) olderEntryEnded() {
	rt.mu.Lock()
	if !rt.entering {
		rt.mu.Unlock()
		return
	}
	old := rt.in
	rt.in = peer.NewSignalQueue()
	rt.mu.Unlock()
	old.Close()
}

func (rt *routes) queue() *peer.SignalQueue {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.in
}

// renew gives the connection's signals from now on a new queue, for a new
// entry, and closes the old one (ending its pumpIn).
func (rt *routes) renew() *peer.SignalQueue {
	in := peer.NewSignalQueue()
	rt.mu.Lock()
	old := rt.in
	rt.in = in
	rt.mu.Unlock()
	old.Close()
	return in
}

// stop removes the routes and closes the queue.
func (rt *routes) stop() {
	rt.remove()
	rt.queue().Close()
}

// route routes c's events of this room to the Room.
func (r *Room) route(c *client.Client) *routes {
	rt := &routes{in: peer.NewSignalQueue()}
	stop := c.Handle(rooms.EvRtcSignal, func(ev client.Event) {
		var s rooms.SignalArgs
		if ev.Decode(&s) == nil && s.RoomID == r.roomID {
			rt.queue().Push(s.Signal)
		}
	})
	stopRole := c.Handle(rooms.EvSwitchRole, func(ev client.Event) {
		var e rooms.SwitchRoleEvent
		if ev.Decode(&e) != nil || e.RoomID != r.roomID {
			return
		}
		r.mu.Lock()
		if len(r.switches) == maxSwitches {
			r.switches = r.switches[1:]
		}
		r.switches = append(r.switches, e)
		r.mu.Unlock()
		if e.Code == 0 {
			r.setRole(e.Role)
		}
	})
	// Observed, not taken: the application may wait for onExitRoom too.
	stopExit := c.Observe(rooms.EvExitRoom, func(ev client.Event) {
		var e rooms.ExitRoomEvent
		if ev.Decode(&e) != nil || e.RoomID != r.roomID {
			return
		}
		rt.olderEntryEnded()
		if e.Reason != int(rooms.ExitMediaNodeLost) {
			return
		}
		r.mu.Lock()
		r.lostOn = c
		r.lost++
		r.mu.Unlock()
		select {
		case r.lostWake <- struct{}{}:
		default:
		}
	})
	rt.remove = func() { stop(); stopRole(); stopExit() }
	return rt
}

// Result is the latest enterRoom reply.
func (r *Room) Result() rooms.EnterResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.result
}

// Node is the room's media node, from the latest enterRoom reply (a
// cluster's node ID; "" standalone).
func (r *Room) Node() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.result.Node
}

// Peer is the media side, for its counters (a new one after a re-entry
// the server did not resume, and after onExitRoom reason 4).
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

// MediaLost counts the onExitRoom reason 4 (media_node_lost) the Room got,
// and its re-entries after them (each with a new peer).
func (r *Room) MediaLost() (lost, reentered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost, r.relocated
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

// supervise enters the room again, one recovery at a time, until Close:
// on a new connection when the client's ends (with Options.Redial), on the
// same one after onExitRoom reason 4.
func (r *Room) supervise() {
	defer r.wg.Done()
	for {
		c := r.Client()
		var ended <-chan struct{}
		if r.opts.Redial != nil {
			ended = c.Done()
		}
		select {
		case <-r.closing:
			return
		case <-ended:
			if !r.rejoin() {
				return
			}
		case <-r.lostWake:
			r.mu.Lock()
			on := r.lostOn
			r.lostOn = nil
			r.mu.Unlock()
			if on == c { // not a stale one from a connection replaced since
				r.relocate(c)
			}
		}
	}
}

// relocate follows onExitRoom reason 4 on c: the room's media node is gone,
// so the peer is closed at once (its signals must not reach the next
// entry), then the Room enters again on c, retrying with backoff for
// Options.RejoinTimeout. It gives up early when c ends (the reconnection
// takes over, with Redial) or on Close.
func (r *Room) relocate(c *client.Client) {
	r.mu.Lock()
	oldPeer, oldOut, rt := r.peer, r.out, r.rt
	r.mu.Unlock()
	rt.renew() // the lost entry's signals go nowhere
	oldOut.Close()
	_ = oldPeer.Close()
	if r.opts.RejoinTimeout < 0 {
		return
	}
	deadline := time.Now().Add(r.opts.RejoinTimeout)
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		select {
		case <-r.closing:
			return
		case <-c.Done():
			return
		case <-time.After(backoff):
		}
		r.mu.Lock()
		r.lostOn = nil // an event of the entry lost is no new loss
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.ctx, min(time.Until(deadline), redialAttempt))
		err := r.enterAgain(ctx, c)
		cancel()
		if err == nil || c.Err() != nil || r.ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, redialBackoff), redialBackoffMax)
		if time.Now().Add(backoff).After(deadline) {
			r.fail(fmt.Errorf("roomclient: entering %s again after its media node was lost: gave up after %d attempts in %v: %w",
				r.roomID, attempt, r.opts.RejoinTimeout, err))
			return
		}
	}
}

// enterAgain enters the room anew on c, the Room's connection, and gives
// the entry a new peer.
func (r *Room) enterAgain(ctx context.Context, c *client.Client) error {
	rt := r.routesNow()
	rt.renew()
	rt.begin()
	res, err := enter(ctx, c, r.enterArgs(""))
	in := rt.entered()
	if err != nil {
		return err
	}
	out := peer.NewSignalQueue()
	p, err := peer.New(r.peerConfig(res), out.Push)
	if err != nil {
		return fmt.Errorf("roomclient: %w", err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		out.Close()
		_ = p.Close()
		return nil
	}
	r.peer, r.out, r.result = p, out, res
	r.relocated++
	r.wg.Add(2)
	go r.pumpIn(in, p)
	go r.pumpOut(out)
	r.mu.Unlock()
	r.setRole(res.Role)
	return nil
}

func (r *Room) routesNow() *routes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rt
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
		if errors.As(err, &perr) && !errors.Is(perr, rooms.ErrRoomNodeUnavailable) {
			r.fail(fmt.Errorf("roomclient: entering %s again: %w", r.roomID, err))
			return false
		}
	}
}

// reenter enters the room again on c with the resume token, and switches
// the Room to c: the same peer when resumed, a new one otherwise.
func (r *Room) reenter(ctx context.Context, c *client.Client) error {
	rt := r.route(c)
	rt.begin()
	token := r.Result().ResumeToken
	res, err := enter(ctx, c, r.enterArgs(token))
	if err != nil {
		rt.stop()
		return err
	}
	in := rt.entered()
	var fresh *peer.Peer
	var freshOut *peer.SignalQueue
	if !res.Resumed {
		freshOut = peer.NewSignalQueue()
		var err error
		if fresh, err = peer.New(r.peerConfig(res), freshOut.Push); err != nil {
			rt.stop()
			return fmt.Errorf("roomclient: %w", err)
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		rt.stop()
		if fresh != nil {
			_ = fresh.Close()
		}
		return nil
	}
	oldRoutes, oldPeer, oldOut, oldClient, oldDialed := r.rt, r.peer, r.out, r.c, r.dialed
	r.c, r.dialed, r.result, r.rt = c, true, res, rt
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
	r.setRole(res.Role) // it may have been switched while away

	oldRoutes.stop()
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
	rt, out, p, c, dialed := r.rt, r.out, r.peer, r.c, r.dialed
	r.mu.Unlock()
	rt.stop()
	out.Close()
	_ = p.Close()
	if dialed {
		_ = c.Close()
	}
	r.wg.Wait()
}

// Received is the peer's per-track counters.
func (r *Room) Received() map[peer.TrackKey]peer.TrackStats { return r.Peer().Received() }

// maxSwitches bounds the onSwitchRole events a Room keeps.
const maxSwitches = 64

// Switches returns the onSwitchRole events of the room received so far (the
// last 64), oldest first. The Room takes them off its client: WaitEvent does
// not see them.
func (r *Room) Switches() []rooms.SwitchRoleEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rooms.SwitchRoleEvent(nil), r.switches...)
}

// Role is the Room's role now: the one it entered with, then as the server
// switched it (onSwitchRole, the replies of SwitchRole, TakeSeat, LeaveSeat).
func (r *Room) Role() rooms.Role {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role
}

// setRole records the role the server gave and wakes followRole.
func (r *Room) setRole(role rooms.Role) {
	if role == "" {
		return
	}
	r.mu.Lock()
	r.role = role
	r.mu.Unlock()
	select {
	case r.roleWake <- struct{}{}:
	default:
	}
}

// followRole makes the peer publish while the Room is an anchor and stop
// when it is audience, until Close.
func (r *Room) followRole() {
	defer r.wg.Done()
	for {
		select {
		case <-r.closing:
			return
		case <-r.roleWake:
		}
		r.mu.Lock()
		p, role := r.peer, r.role
		r.mu.Unlock()
		var err error
		if role == rooms.RoleAnchor {
			err = p.StartPublishing(r.pubAudio, r.pubVideo)
		} else {
			err = p.StopPublishing()
		}
		if err != nil {
			r.fail(fmt.Errorf("roomclient: follow role %s: %w", role, err))
		}
	}
}

// SwitchRole asks the server to switch the Room's role (switchRole); the
// peer publishes, or stops, when it is switched.
func (r *Room) SwitchRole(ctx context.Context, role rooms.Role) (rooms.SwitchRoleResult, error) {
	return r.switchOp(ctx, rooms.OpSwitchRole, rooms.SwitchRoleArgs{RoomID: r.roomID, Role: string(role)})
}

// TakeSeat takes seat index (nil: the lowest free one) and publishes.
func (r *Room) TakeSeat(ctx context.Context, index *int) (rooms.SwitchRoleResult, error) {
	return r.switchOp(ctx, rooms.OpTakeSeat, rooms.TakeSeatArgs{RoomID: r.roomID, Index: index})
}

// LeaveSeat leaves the Room's seat, becoming audience.
func (r *Room) LeaveSeat(ctx context.Context) (rooms.SwitchRoleResult, error) {
	return r.switchOp(ctx, rooms.OpLeaveSeat, rooms.RoomArgs{RoomID: r.roomID})
}

func (r *Room) switchOp(ctx context.Context, op string, args any) (rooms.SwitchRoleResult, error) {
	var res rooms.SwitchRoleResult
	if err := r.Client().Do(ctx, op, args, &res); err != nil {
		return res, err
	}
	r.setRole(res.Role)
	return res, nil
}

// KickSeat takes userID off its seat (the host only).
func (r *Room) KickSeat(ctx context.Context, userID string) error {
	return r.Client().Do(ctx, rooms.OpKickSeat, rooms.KickSeatArgs{RoomID: r.roomID, UserID: userID}, nil)
}

// Info returns the room's host, seats, anchors and audience (getRoomInfo).
func (r *Room) Info(ctx context.Context) (rooms.RoomInfo, error) {
	var res rooms.RoomInfo
	err := r.Client().Do(ctx, rooms.OpGetRoomInfo, rooms.RoomArgs{RoomID: r.roomID}, &res)
	return res, err
}
