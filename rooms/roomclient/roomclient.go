// Package roomclient is a Go participant of a Switchboard media room: it
// enters a room over a signaling client's WebSocket and runs a media/peer
// that publishes synthetic VP8 video and Opus audio and counts what it
// receives. Tests and the benchmark use it.
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

	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/client"
)

// Options configure Enter.
type Options struct {
	Role      rooms.Role // default anchor
	RoomToken string
	// Peer configures the media side. Audio and Video are forced off for
	// an audience member; nil ICEServers take enterRoom's iceServers.
	Peer peer.Config
}

// Room is one participant in one room. A signaling client carries at most
// one Room at a time (it routes onRtcSignal to it).
type Room struct {
	c      *client.Client
	roomID string
	peer   *peer.Peer
	result rooms.EnterResult

	in    *peer.SignalQueue // server signals for the peer
	out   *peer.SignalQueue // peer signals for the server
	stop  func()            // removes the onRtcSignal route
	wg    sync.WaitGroup
	errMu sync.Mutex
	errs  []error
}

// Enter enters roomID and starts negotiating media.
func Enter(ctx context.Context, c *client.Client, roomID string, opts Options) (*Room, error) {
	r := &Room{c: c, roomID: roomID, in: peer.NewSignalQueue(), out: peer.NewSignalQueue()}
	// Route signals before entering: the server's subscriber offer may
	// arrive before the reply.
	r.stop = c.Handle(rooms.EvRtcSignal, func(ev client.Event) {
		var s rooms.SignalArgs
		if ev.Decode(&s) == nil && s.RoomID == roomID {
			r.in.Push(s.Signal)
		}
	})
	role := opts.Role
	if role == "" {
		role = rooms.RoleAnchor
	}
	err := c.Do(ctx, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: roomID, Role: string(role), RoomToken: opts.RoomToken}, &r.result)
	if err != nil {
		r.stop()
		return nil, err
	}
	pc := opts.Peer
	if pc.ICEServers == nil {
		// The servers enterRoom handed out, as a browser would use them.
		for _, s := range r.result.ICEServers {
			pc.ICEServers = append(pc.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
	}
	if role == rooms.RoleAudience {
		pc.Audio, pc.Video = false, false
	}
	r.peer, err = peer.New(pc, r.out.Push)
	if err != nil {
		r.stop()
		_ = c.Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: roomID}, nil)
		return nil, fmt.Errorf("roomclient: %w", err)
	}
	r.wg.Add(2)
	go r.pumpIn()
	go r.pumpOut()
	return r, nil
}

// Result is enterRoom's reply.
func (r *Room) Result() rooms.EnterResult { return r.result }

// Peer is the media side, for its counters.
func (r *Room) Peer() *peer.Peer { return r.peer }

// Errors returns negotiation errors seen so far (from the server or the peer).
func (r *Room) Errors() []error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return append([]error(nil), r.errs...)
}

func (r *Room) fail(err error) {
	r.errMu.Lock()
	r.errs = append(r.errs, err)
	r.errMu.Unlock()
}

func (r *Room) pumpIn() {
	defer r.wg.Done()
	for {
		s, ok := r.in.Pop()
		if !ok {
			return
		}
		if err := r.peer.HandleSignal(s); err != nil {
			r.fail(fmt.Errorf("peer: %s %s: %w", s.Target, s.Type, err))
		}
	}
}

func (r *Room) pumpOut() {
	defer r.wg.Done()
	for {
		s, ok := r.out.Pop()
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.c.Do(ctx, rooms.OpRtcSignal, rooms.SignalArgs{RoomID: r.roomID, Signal: s}, nil)
		cancel()
		if err != nil && !errors.Is(err, client.ErrClosed) {
			r.fail(fmt.Errorf("server: %s %s: %w", s.Target, s.Type, err))
		}
	}
}

// Exit leaves the room with exitRoom and closes the media side.
func (r *Room) Exit(ctx context.Context) error {
	err := r.c.Do(ctx, rooms.OpExitRoom, rooms.RoomArgs{RoomID: r.roomID}, nil)
	r.Close()
	return err
}

// Close closes the media side without telling the server (the server
// notices when the WebSocket or the media goes away) and ends every
// goroutine.
func (r *Room) Close() {
	r.stop()
	r.in.Close()
	r.out.Close()
	_ = r.peer.Close()
	r.wg.Wait()
}

// Received is the peer's per-track counters.
func (r *Room) Received() map[peer.TrackKey]peer.TrackStats { return r.peer.Received() }
