package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// media --cluster N: one redis-server and N switchboard nodes (child
// processes, each with its own media UDP port on 127.0.0.1), then one
// standalone switchboard (the same binary) in the same invocation. It
// times real one-to-one calls (call, accept, enterRoom with roomclient
// publishing synthetic VP8 and Opus) from accept to a keyframe of the
// other party's video at both parties, the caller and the callee on
// different nodes, against the same calls on the standalone server; counts
// the messages the nodes relay for rooms per call; and SIGKILLs the media
// node of running calls whose parties are on other nodes, timing the kill
// to media flowing again at both parties. The media load and the bare
// forwarder of plain media mode are not run.

const (
	// clusterCallTimeout bounds one timed call's setup (first media comes
	// in well under a second on loopback).
	clusterCallTimeout = 15 * time.Second
	// maxFailsInARow ends a series of calls that keeps failing before any
	// succeeded: the cause is the same for every call.
	maxFailsInARow = 3
	// failoverNodes is the least number of nodes failover needs: the
	// killed media node must be neither party's, so that both parties
	// stay connected and only the media is lost.
	failoverNodes = 3
	// failoverPerKill is how many calls one kill times at most; more
	// calls are timed over more kills (each killed node is replaced).
	failoverPerKill = 3
	// failoverTimeout bounds the wait from the kill to media at both
	// parties (calls.setup_timeout, the time a call waits for its
	// members to come back, is 30 s by default).
	failoverTimeout = 30 * time.Second
	// settleTimeout bounds the wait for the nodes' counters to stop moving
	// after a series of calls.
	settleTimeout = 3 * time.Second
)

// Metric names read from the nodes' /metrics.
const (
	metricRelay    = "switchboard_room_relay_messages_total"
	metricRequests = "switchboard_requests_total"
)

// reentryBy says who enters the room again after onExitRoom reason 4
// (media_node_lost): the Go room client itself.
const reentryBy = "rooms/roomclient by itself (a new peer on the same connection, Options.RejoinTimeout default)"

// mediaClusterResult is the RESULT of media --cluster.
type mediaClusterResult struct {
	Mode     string `json:"mode"`
	Server   string `json:"server"`
	Nodes    int    `json:"cluster_nodes"`
	RedisAOF string `json:"redis_aof"`
	// StandaloneFirst: the standalone calls ran before the cluster's.
	StandaloneFirst bool `json:"standalone_first"`
	Bitrate         int  `json:"bitrate"`
	FPS             int  `json:"fps"`
	Calls           int  `json:"calls"`
	CallsDone       int  `json:"calls_done"`
	// CrossNodeCalls are the calls done whose caller and callee were on
	// different nodes (all of them, by construction).
	CrossNodeCalls int `json:"cross_node_calls"`

	// First media: ms from the callee sending accept until both parties
	// received a keyframe of the other's video (the later of the two).
	FirstMediaP50  float64 `json:"first_media_p50_ms"`
	FirstMediaP90  float64 `json:"first_media_p90_ms"`
	FirstMediaP99  float64 `json:"first_media_p99_ms"`
	FirstMediaMax  float64 `json:"first_media_max_ms"`
	FirstMediaErrs int     `json:"first_media_errors"`
	// Where the rooms of the timed calls were placed (the enterRoom
	// reply's node): on the caller's node, the callee's, another, unknown.
	RoomOnCallerNode int `json:"room_on_caller_node"`
	RoomOnCalleeNode int `json:"room_on_callee_node"`
	RoomOnOtherNode  int `json:"room_on_other_node"`
	RoomNodeUnknown  int `json:"room_node_unknown"`

	StandaloneCallsDone     int     `json:"standalone_calls_done"`
	StandaloneFirstMediaP50 float64 `json:"standalone_first_media_p50_ms"`
	StandaloneFirstMediaP90 float64 `json:"standalone_first_media_p90_ms"`
	StandaloneFirstMediaP99 float64 `json:"standalone_first_media_p99_ms"`
	StandaloneFirstMediaMax float64 `json:"standalone_first_media_max_ms"`
	StandaloneErrs          int     `json:"standalone_first_media_errors"`
	// FirstMediaRatio is first_media_p50_ms / standalone_first_media_p50_ms
	// (issue 13's target: at most 1.5).
	FirstMediaRatio float64 `json:"first_media_ratio"`

	// Relayed room messages per call: switchboard_room_relay_messages_total
	// with dir="sent", summed over the nodes and kinds, over the calls run.
	// RelayMetric is false when no node exposes the counter.
	RelayMetric       bool               `json:"relay_metric_present"`
	RelayPerCall      float64            `json:"relay_messages_per_call"`
	RelayPerCallKinds map[string]float64 `json:"relay_messages_per_call_by_kind,omitempty"`
	// Client requests (switchboard_requests_total, every node) per call
	// run, and WebSocket data frames (both directions, counted by the
	// bench's clients) per call done.
	RequestsPerCall           float64 `json:"requests_per_call"`
	StandaloneRequestsPerCall float64 `json:"standalone_requests_per_call"`
	// Redis commands, and stream appends (XADD: the room relay's and the
	// signaling events' of issue 12), per call run, background work included.
	RedisCmdsPerCall          float64 `json:"redis_cmds_per_call"`
	RedisXAddPerCall          float64 `json:"redis_xadd_per_call"`
	WSFramesPerCall           float64 `json:"ws_frames_per_call"`
	StandaloneWSFramesPerCall float64 `json:"standalone_ws_frames_per_call"`

	// Failover: ms from SIGKILL of a room's media node (neither party's
	// node) until both parties received a keyframe of the other's video
	// again (the later of the two); exit: until both got onExitRoom reason
	// 4; reentered: until both entered the room again.
	FailoverWanted    int     `json:"failover_wanted"`
	FailoverNodes     int     `json:"failover_nodes"`
	FailoverKills     int     `json:"failover_kills"`
	FailoverCalls     int     `json:"failover_calls"`
	FailoverP50       float64 `json:"failover_p50_ms"`
	FailoverP90       float64 `json:"failover_p90_ms"`
	FailoverMax       float64 `json:"failover_max_ms"`
	FailoverExitP50   float64 `json:"failover_exit_p50_ms"`
	FailoverEnterP50  float64 `json:"failover_reentered_p50_ms"`
	FailoverErrs      int     `json:"failover_errors"`
	FailoverReentry   string  `json:"failover_reentry"`
	FailoverCallsMade int     `json:"failover_calls_set_up"`
}

// callTiming is one timed call.
type callTiming struct {
	both                   float64 // ms: accept → keyframes at both parties
	media                  string  // the media node's ID, "" when unknown
	callerNode, calleeNode string
	frames                 int64 // WebSocket frames of both parties' connections
}

// party is one side of a call: its connection and its Room.
type party struct {
	user   string
	srv    *server
	c      *client.Client
	frames *frameCounter
	// exits receives the connection's onExitRoom events (a few; more are
	// dropped: only the first after a kill matters).
	exits      chan rooms.ExitRoomEvent
	removeExit func()
	drained    sync.WaitGroup
	// seenWake (capacity 1) is signalled when seen grows.
	seenWake   chan struct{}
	removeSeen []func()

	mu   sync.Mutex // guards room and seen
	room *roomclient.Room
	// seen holds the events a whole call brings: onCallEnd, and
	// "onUserAudioAvailable/<user>" and "onUserVideoAvailable/<user>" (on).
	seen map[string]bool
}

func dialParty(ctx context.Context, srv *server, user string) (*party, error) {
	tok, _, err := srv.auth.Issue(user, "", tokenTTL)
	if err != nil {
		return nil, err
	}
	fc := &frameCounter{}
	c, err := client.Dial(ctx, srv.wsURL, tok, client.WithDialer(fc.dialer()))
	if err != nil {
		return nil, err
	}
	p := &party{user: user, srv: srv, c: c, frames: fc, exits: make(chan rooms.ExitRoomEvent, 4),
		seenWake: make(chan struct{}, 1), seen: map[string]bool{}}
	for _, name := range []string{rooms.EvUserAudioAvailable, rooms.EvUserVideoAvailable, calls.EvCallEnd} {
		p.removeSeen = append(p.removeSeen, c.Observe(name, func(ev client.Event) {
			key := name
			if name != calls.EvCallEnd {
				var a rooms.AvailableEvent
				if ev.Decode(&a) != nil || !a.Available {
					return
				}
				key += "/" + a.UserID
			}
			p.mu.Lock()
			p.seen[key] = true
			p.mu.Unlock()
			select {
			case p.seenWake <- struct{}{}:
			default:
			}
		}))
	}
	p.removeExit = c.Handle(rooms.EvExitRoom, func(ev client.Event) {
		var e rooms.ExitRoomEvent
		if ev.Decode(&e) != nil {
			return
		}
		select {
		case p.exits <- e:
		default:
		}
	})
	return p, nil
}

// knowFrom marks as seen what an enterRoom reply says the others publish.
func (p *party) knowFrom(res rooms.EnterResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pi := range res.Participants {
		if pi.Audio {
			p.seen[rooms.EvUserAudioAvailable+"/"+pi.UserID] = true
		}
		if pi.Video {
			p.seen[rooms.EvUserVideoAvailable+"/"+pi.UserID] = true
		}
	}
}

// waitSeen waits until the party got every event of keys (see seen).
func (p *party) waitSeen(ctx context.Context, keys ...string) error {
	for {
		p.mu.Lock()
		var missing []string
		for _, k := range keys {
			if !p.seen[k] {
				missing = append(missing, k)
			}
		}
		p.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-p.seenWake:
		case <-ctx.Done():
			return fmt.Errorf("%s never got %s", p.user, strings.Join(missing, ", "))
		}
	}
}

// Room returns the party's current Room (nil before it entered).
func (p *party) Room() *roomclient.Room {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.room
}

func (p *party) setRoom(r *roomclient.Room) (old *roomclient.Room) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, p.room = p.room, r
	return old
}

// drainEvents discards the connection's other events from now on (the
// room events of a long call would fill its buffer and stall its reader).
func (p *party) drainEvents() {
	p.drained.Go(func() {
		for range p.c.Events() {
		}
	})
}

// close exits the room (when exit), closes the Room and the connection.
func (p *party) close(exit bool) {
	if r := p.setRoom(nil); r != nil {
		if exit && p.c.Err() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = r.Exit(ctx)
			cancel()
		} else {
			r.Close()
		}
	}
	p.removeExit()
	for _, rm := range p.removeSeen {
		rm()
	}
	_ = p.c.Close()
	p.drained.Wait()
}

// benchCall is a call set up by setupCall, running until end.
type benchCall struct {
	callID, roomID string
	caller, callee *party
	timing         callTiming
}

// callEndTimeout bounds the wait for onCallEnd at both parties after the
// hangup.
const callEndTimeout = 5 * time.Second

// end hangs up (when the caller is still connected); with whole, it waits
// for onCallEnd at both parties (so that a call's every message is counted,
// and a lost one is an error); then it exits the rooms and closes both
// parties.
func (bc *benchCall) end(whole bool) error {
	var err error
	if bc.caller.c.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), callEndTimeout)
		err = bc.caller.c.Do(ctx, calls.OpHangup, calls.CallIDArgs{CallID: bc.callID}, nil)
		if err == nil && whole {
			err = errors.Join(bc.caller.waitSeen(ctx, calls.EvCallEnd), bc.callee.waitSeen(ctx, calls.EvCallEnd))
		}
		cancel()
		if err != nil {
			err = fmt.Errorf("hangup: %w", err)
		}
	}
	var wg sync.WaitGroup
	for _, p := range []*party{bc.caller, bc.callee} {
		wg.Go(func() { p.close(true) })
	}
	wg.Wait()
	return err
}

// videoOf is the key of user's video track at a receiver.
func videoOf(user string) peer.TrackKey { return peer.TrackKey{StreamID: user, Kind: "video"} }

// keyframeAt returns when r's current peer received its first keyframe
// of user's video (zero before).
func keyframeAt(r *roomclient.Room, user string) time.Time {
	return r.Peer().Received()[videoOf(user)].FirstKeyframe
}

// errDifferentRooms is a call whose parties did not meet in one room.
var errDifferentRooms = errors.New("the callee's enterRoom reply does not list the caller: the parties are in different rooms (rooms are node-local: no media)")

// setupCall places a call from callerID on callerSrv to calleeID on
// calleeSrv and times it: the caller calls and enters the room (media
// connected, as a dialing client does), the callee is rung, accepts and
// enters; the call is timed from the accept until both parties have a
// keyframe of the other's video. The call goes on until bc.end.
func setupCall(ctx context.Context, callerSrv, calleeSrv *server, callerID, calleeID string, pc peer.Config) (_ *benchCall, err error) {
	ctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	defer cancel()
	cr, err := dialParty(ctx, callerSrv, callerID)
	if err != nil {
		return nil, fmt.Errorf("caller: %w", err)
	}
	ce, err := dialParty(ctx, calleeSrv, calleeID)
	if err != nil {
		cr.close(false)
		return nil, fmt.Errorf("callee: %w", err)
	}
	bc := &benchCall{caller: cr, callee: ce}
	defer func() {
		if err != nil {
			_ = bc.end(false)
		}
	}()
	var call calls.CallResult
	if err := cr.c.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: calleeID, MediaType: calls.MediaVideo}, &call); err != nil {
		return nil, fmt.Errorf("call: %w", err)
	}
	bc.callID, bc.roomID = call.CallID, call.RoomID
	crRoom, err := roomclient.Enter(ctx, cr.c, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		return nil, fmt.Errorf("caller enterRoom: %w", err)
	}
	cr.setRoom(crRoom)
	if _, err := cr.c.WaitEvent(ctx, rooms.EvEnterRoom, nil); err != nil {
		return nil, fmt.Errorf("caller media: %w", err)
	}
	ev, err := ce.c.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil)
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	var inv protocol.NewInvitationEvent
	if err := ev.Decode(&inv); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := ce.c.Accept(ctx, inv.InviteID, ""); err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	ceRoom, err := roomclient.Enter(ctx, ce.c, call.RoomID, roomclient.Options{Peer: pc})
	if err != nil {
		return nil, fmt.Errorf("callee enterRoom: %w", err)
	}
	ce.setRoom(ceRoom)
	if !slices.ContainsFunc(ceRoom.Result().Participants, func(pi rooms.ParticipantInfo) bool { return pi.UserID == callerID }) {
		return nil, errDifferentRooms
	}
	for {
		atCaller, atCallee := keyframeAt(crRoom, calleeID), keyframeAt(ceRoom, callerID)
		if !atCaller.IsZero() && !atCallee.IsZero() {
			bc.timing.both = ms(later(atCaller, atCallee).Sub(t0))
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no keyframe of the other's video within %v at the caller (%v) or the callee (%v); errors: %v",
				clusterCallTimeout, !atCaller.IsZero(), !atCallee.IsZero(), errors.Join(append(crRoom.Errors(), ceRoom.Errors()...)...))
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The call is whole when each party knows the other publishes: from its
	// enterRoom reply, or from room events, which must reach it wherever
	// it is connected.
	cr.knowFrom(crRoom.Result())
	ce.knowFrom(ceRoom.Result())
	if err := errors.Join(
		cr.waitSeen(ctx, rooms.EvUserAudioAvailable+"/"+calleeID, rooms.EvUserVideoAvailable+"/"+calleeID),
		ce.waitSeen(ctx, rooms.EvUserAudioAvailable+"/"+callerID, rooms.EvUserVideoAvailable+"/"+callerID)); err != nil {
		return nil, fmt.Errorf("room events: %w", err)
	}
	bc.timing.media = mediaNode(crRoom.Result())
	bc.timing.callerNode, bc.timing.calleeNode = callerSrv.nodeID, calleeSrv.nodeID
	cr.drainEvents()
	ce.drainEvents()
	return bc, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// seriesResult is a series of timed calls.
type seriesResult struct {
	timings []callTiming
	errs    []error
	run     int // calls attempted (done or failed)
}

func (s *seriesResult) both() []float64 {
	var out []float64
	for _, t := range s.timings {
		out = append(out, t.both)
	}
	return out
}

func (s *seriesResult) frames() int64 {
	var n int64
	for _, t := range s.timings {
		n += t.frames
	}
	return n
}

// timedCalls runs n calls one after the other, the i-th from pick(i)'s
// caller node to its callee node, each ended before the next. A series
// whose first maxFailsInARow calls all fail stops there.
func timedCalls(ctx context.Context, n int, prefix string, pick func(i int) (caller, callee *server), pc peer.Config) seriesResult {
	var res seriesResult
	for i := range n {
		if len(res.timings) == 0 && len(res.errs) >= maxFailsInARow {
			res.errs = append(res.errs, fmt.Errorf("stopped after the first %d calls failed (%d not run)", maxFailsInARow, n-i))
			break
		}
		if ctx.Err() != nil {
			res.errs = append(res.errs, ctx.Err())
			break
		}
		crSrv, ceSrv := pick(i)
		res.run++
		bc, err := setupCall(ctx, crSrv, ceSrv, fmt.Sprintf("%s-caller-%d", prefix, i), fmt.Sprintf("%s-callee-%d", prefix, i), pc)
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("call %d: %w", i, err))
			continue
		}
		if err := bc.end(true); err != nil {
			res.errs = append(res.errs, fmt.Errorf("call %d: %w", i, err))
			continue
		}
		// The frames of the whole call: setup, media, hangup and exit.
		bc.timing.frames = bc.caller.frames.total() + bc.callee.frames.total()
		res.timings = append(res.timings, bc.timing)
	}
	return res
}

// failoverResult is what the failover phase measured.
type failoverResult struct {
	media, exit, entered []float64 // ms from the kill, the later party's
	kills, setUp         int
	nodes                int // live nodes when it started
	errs                 []error
}

// runFailover sets up calls on the cluster (at least failoverNodes live
// nodes: it starts more when needed) until a node is the media node of
// enough calls whose parties are both on other nodes, SIGKILLs it, and
// times each such call from the kill until media flows again at both
// parties; it replaces the killed node with a new one and goes on until
// want calls were timed (or too many rounds failed).
func runFailover(ctx context.Context, cl *cluster, want int, pc peer.Config, stderr io.Writer) failoverResult {
	var res failoverResult
	for len(cl.nodes) < failoverNodes {
		fmt.Fprintf(stderr, "media: starting one more node for failover (it needs %d: the killed media node must be neither party's)…\n", failoverNodes)
		if _, err := cl.addNode(ctx); err != nil {
			res.errs = append(res.errs, err)
			return res
		}
	}
	res.nodes = len(cl.nodes)
	maxRounds := 2 * want
	seq := 0
	for round := 0; len(res.media) < want && round < maxRounds && ctx.Err() == nil; round++ {
		perKill := min(want-len(res.media), failoverPerKill)
		victim, running, errs, err := failoverRound(ctx, cl, perKill, &seq, pc)
		res.setUp += len(running)
		for _, e := range errs {
			res.errs = append(res.errs, fmt.Errorf("round %d: call setup: %w", round+1, e))
		}
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("round %d: %w", round+1, err))
			endAll(running)
			if victim == "" && len(running) == 0 {
				break // nothing can be set up: the same would happen again
			}
			continue
		}
		var timed []*benchCall
		for _, bc := range running {
			if eligible(bc, cl) && bc.timing.media == victim {
				timed = append(timed, bc)
			}
		}
		fmt.Fprintf(stderr, "media: failover round %d: %d calls running, SIGKILL of %s, the media node of %d of them…\n", round+1, len(running), victim, len(timed))
		for _, bc := range timed {
			for _, p := range []*party{bc.caller, bc.callee} {
				for len(p.exits) > 0 {
					<-p.exits
				}
			}
		}
		killAt, err := cl.kill(cl.node(victim))
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("round %d: kill %s: %w", round+1, victim, err))
			endAll(running)
			break
		}
		res.kills++
		type outcome struct {
			media, exit, entered float64
			err                  error
		}
		outs := make([]outcome, len(timed))
		var wg sync.WaitGroup
		for i, bc := range timed {
			wg.Go(func() {
				o := &outs[i]
				var pw [2]partyRecovery
				var pg sync.WaitGroup
				for j, pair := range [][2]*party{{bc.caller, bc.callee}, {bc.callee, bc.caller}} {
					pg.Go(func() { pw[j] = recoverParty(ctx, pair[0], pair[1].user, bc.roomID, killAt) })
				}
				pg.Wait()
				if o.err = errors.Join(pw[0].err, pw[1].err); o.err != nil {
					_ = bc.end(false)
					return
				}
				o.exit = ms(later(pw[0].exit, pw[1].exit).Sub(killAt))
				o.entered = ms(later(pw[0].entered, pw[1].entered).Sub(killAt))
				o.media = ms(later(pw[0].media, pw[1].media).Sub(killAt))
				// The call went on through the loss: it ends now, by the
				// caller's hangup, with onCallEnd at both parties.
				if err := bc.end(true); err != nil {
					o.err = fmt.Errorf("media again, but the call did not end as a running call does: %w", err)
				}
			})
		}
		wg.Wait()
		running = slices.DeleteFunc(running, func(bc *benchCall) bool { return slices.Contains(timed, bc) })
		for i, o := range outs {
			if o.err != nil {
				res.errs = append(res.errs, fmt.Errorf("round %d, call %s: %w", round+1, timed[i].callID, o.err))
				continue
			}
			res.media = append(res.media, o.media)
			res.exit = append(res.exit, o.exit)
			res.entered = append(res.entered, o.entered)
		}
		endAll(running)
		if len(res.media) < want {
			if _, err := cl.addNode(ctx); err != nil {
				res.errs = append(res.errs, fmt.Errorf("replacing %s: %w", victim, err))
				break
			}
		}
	}
	if n := len(res.media); n < want {
		res.errs = append(res.errs, fmt.Errorf("%d of %d failover calls timed", n, want))
	}
	return res
}

// eligible reports whether bc's media node is live and neither party's.
func eligible(bc *benchCall, cl *cluster) bool {
	m := bc.timing.media
	return m != "" && m != bc.timing.callerNode && m != bc.timing.calleeNode && cl.node(m) != nil
}

func endAll(running []*benchCall) {
	var wg sync.WaitGroup
	for _, bc := range running {
		wg.Go(func() { _ = bc.end(false) })
	}
	wg.Wait()
}

// failoverRound sets up calls until one live node is the media node of
// perKill calls whose parties are on other nodes, or the round's budget
// of calls is spent, and returns that node (the one with the most such
// calls) and every call it set up. Each caller goes on the node hosting
// the most members of this round's calls and its callee on the next, so
// that the placement (the live node with the lowest load) tends to put
// the room on a third node.
func failoverRound(ctx context.Context, cl *cluster, perKill int, seq *int, pc peer.Config) (victim string, running []*benchCall, errs []error, err error) {
	load := map[string]int{} // members of this round's calls per media node
	budget := 3*len(cl.nodes) + perKill
	for range budget {
		nodes := slices.Clone(cl.nodes)
		slices.SortStableFunc(nodes, func(a, b *server) int { return load[b.nodeID] - load[a.nodeID] })
		*seq++
		bc, err := setupCall(ctx, nodes[0], nodes[1], fmt.Sprintf("fo-caller-%d", *seq), fmt.Sprintf("fo-callee-%d", *seq), pc)
		if err != nil {
			errs = append(errs, err)
			if len(running) == 0 && len(errs) >= maxFailsInARow {
				return "", nil, nil, fmt.Errorf("the first %d calls failed; the first: %w", len(errs), errs[0])
			}
			continue
		}
		running = append(running, bc)
		if bc.timing.media == "" {
			return "", running, errs, errors.New("the enterRoom reply names no media node (`node`): the room's node is unknown, nothing to kill")
		}
		load[bc.timing.media] += 2
		count := map[string]int{}
		for _, r := range running {
			if eligible(r, cl) {
				count[r.timing.media]++
			}
		}
		best := ""
		for _, n := range cl.nodes {
			if count[n.nodeID] > count[best] {
				best = n.nodeID
			}
		}
		if count[best] >= perKill {
			return best, running, errs, nil
		}
		victim = best
	}
	if victim == "" {
		return "", running, errs, fmt.Errorf("none of %d calls had its room on a node other than its parties' (%d failed to set up)", len(running), len(errs))
	}
	return victim, running, errs, nil
}

// partyRecovery is one party's way back after its media node was killed.
type partyRecovery struct {
	exit, entered, media time.Time
	err                  error
}

// recoverParty waits for p's onExitRoom reason 4, then for its Room to
// enter the room again by itself (rooms/roomclient does, with a new peer on
// the same connection: reentryBy) and for a keyframe of other's video on
// the new peer.
func recoverParty(ctx context.Context, p *party, other, roomID string, killAt time.Time) (pr partyRecovery) {
	ctx, cancel := context.WithDeadline(ctx, killAt.Add(failoverTimeout))
	defer cancel()
	r := p.Room()
	_, entered0 := r.MediaLost()
	lostPeer := r.Peer()
	for pr.exit.IsZero() {
		select {
		case e := <-p.exits:
			if e.RoomID != roomID {
				continue
			}
			if e.Reason != int(rooms.ExitMediaNodeLost) {
				pr.err = fmt.Errorf("%s: onExitRoom reason %d, want %d (media_node_lost)", p.user, e.Reason, int(rooms.ExitMediaNodeLost))
				return pr
			}
			pr.exit = time.Now()
		case <-p.c.Done():
			pr.err = fmt.Errorf("%s: connection lost: %v", p.user, p.c.Err())
			return pr
		case <-ctx.Done():
			pr.err = fmt.Errorf("%s: no onExitRoom within %v of the kill", p.user, failoverTimeout)
			return pr
		}
	}
	for {
		if pr.entered.IsZero() {
			if _, entered := r.MediaLost(); entered > entered0 {
				pr.entered = time.Now()
			}
		}
		// The lost peer's stats are the call's before the kill.
		if np := r.Peer(); np != lostPeer && !pr.entered.IsZero() {
			if at := np.Received()[videoOf(other)].FirstKeyframe; !at.IsZero() {
				pr.media = at
				return pr
			}
		}
		if ctx.Err() != nil {
			state := "not in the room again"
			if !pr.entered.IsZero() {
				state = "in the room again, but no keyframe of " + other + "'s video"
			}
			pr.err = fmt.Errorf("%s: %s within %v of the kill (errors: %v)", p.user, state, failoverTimeout, errors.Join(r.Errors()...))
			return pr
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runMediaCluster is media mode with --cluster.
func runMediaCluster(ctx context.Context, o mediaOptions, stdout, stderr io.Writer) (*mediaClusterResult, error) {
	if err := raiseFileLimit(4096); err != nil {
		return nil, err
	}
	if _, err := lookRedis(o.redisBin); err != nil {
		return nil, err
	}
	bin, removeBin, err := serverBinary(ctx, o.server.serverBin, "media", stderr)
	if err != nil {
		return nil, err
	}
	defer removeBin()
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	pc := peer.Config{Audio: true, Video: true, ListenIP: "127.0.0.1", IncludeLoopback: true, VideoBitrate: o.bitrate, VideoFPS: o.fps}

	var (
		main, base      seriesResult
		before, after   scrape    // the cluster's nodes' counters around main
		redis0, redis1  redisInfo // Redis's counters around main
		sBefore, sAfter scrape    // the standalone server's around base
		fo              failoverResult
	)
	runCluster := func() error {
		fmt.Fprintf(stderr, "media: starting redis-server (aof %s) and %d nodes…\n", o.redisAOF, o.cluster)
		cl, err := startCluster(ctx, clusterSpec{nodes: o.cluster, redisBin: o.redisBin, redisAOF: o.redisAOF, verbose: o.server.verbose}, bin, secret, stderr)
		if err != nil {
			return fmt.Errorf("start cluster: %w", err)
		}
		defer func() {
			if err := cl.stop(); err != nil {
				fmt.Fprintln(stderr, "media: cluster stop:", err)
			}
		}()
		nodes := slices.Clone(cl.nodes)
		fmt.Fprintf(stderr, "media: %d calls across nodes…\n", o.calls)
		if before, err = scrapeAll(ctx, nodes); err != nil {
			return err
		}
		if redis0, err = cl.redis.info(); err != nil {
			return err
		}
		main = timedCalls(ctx, o.calls, "cl", func(i int) (*server, *server) {
			return nodes[i%len(nodes)], nodes[(i+1)%len(nodes)]
		}, pc)
		if after, err = settledScrape(ctx, nodes); err != nil {
			return err
		}
		if redis1, err = cl.redis.info(); err != nil {
			return err
		}
		if o.failover > 0 {
			fmt.Fprintf(stderr, "media: failover, %d calls…\n", o.failover)
			fo = runFailover(ctx, cl, o.failover, pc, stderr)
		}
		return nil
	}
	runStandalone := func() error {
		fmt.Fprintf(stderr, "media: standalone baseline (the same binary), %d calls…\n", o.calls)
		srv, err := runChild(ctx, bin, secret, nil, o.server.verbose, stderr)
		if err != nil {
			return fmt.Errorf("start standalone server: %w", err)
		}
		defer func() {
			if err := srv.stop(); err != nil {
				fmt.Fprintln(stderr, "media: standalone stop:", err)
			}
		}()
		if sBefore, err = scrapeAll(ctx, []*server{srv}); err != nil {
			return err
		}
		base = timedCalls(ctx, o.calls, "sa", func(int) (*server, *server) { return srv, srv }, pc)
		sAfter, err = settledScrape(ctx, []*server{srv})
		return err
	}
	order := []func() error{runCluster, runStandalone}
	if o.standaloneFirst {
		order = []func() error{runStandalone, runCluster}
	}
	for _, step := range order {
		if err := step(); err != nil {
			return nil, err
		}
	}

	done, sDone := float64(len(main.timings)), float64(len(base.timings))
	// The servers' counters cover every call run, done or failed.
	ran, sRan := float64(main.run), float64(base.run)
	perCall := func(v, n float64) float64 { return round3(ratio(v, n)) }
	b, sb := main.both(), base.both()
	res := &mediaClusterResult{
		Mode: "media", Server: modeCluster, Nodes: o.cluster, RedisAOF: o.redisAOF, StandaloneFirst: o.standaloneFirst, Bitrate: o.bitrate, FPS: o.fps,
		Calls: o.calls, CallsDone: len(main.timings),
		FirstMediaP50: round3(percentile(b, 50)), FirstMediaP90: round3(percentile(b, 90)),
		FirstMediaP99: round3(percentile(b, 99)), FirstMediaMax: round3(percentile(b, 100)),
		FirstMediaErrs:          len(main.errs),
		StandaloneCallsDone:     len(base.timings),
		StandaloneFirstMediaP50: round3(percentile(sb, 50)), StandaloneFirstMediaP90: round3(percentile(sb, 90)),
		StandaloneFirstMediaP99: round3(percentile(sb, 99)), StandaloneFirstMediaMax: round3(percentile(sb, 100)),
		StandaloneErrs:            len(base.errs),
		RequestsPerCall:           perCall(after.sum(metricRequests, nil)-before.sum(metricRequests, nil), ran),
		StandaloneRequestsPerCall: perCall(sAfter.sum(metricRequests, nil)-sBefore.sum(metricRequests, nil), sRan),
		RedisCmdsPerCall:          perCall(float64(redis1.commands-redis0.commands), ran),
		RedisXAddPerCall:          perCall(float64(redis1.cmds["xadd"].calls-redis0.cmds["xadd"].calls), ran),
		WSFramesPerCall:           perCall(float64(main.frames()), done),
		StandaloneWSFramesPerCall: perCall(float64(base.frames()), sDone),
		FailoverWanted:            o.failover, FailoverNodes: fo.nodes, FailoverKills: fo.kills, FailoverCalls: len(fo.media),
		FailoverP50: round3(percentile(fo.media, 50)), FailoverP90: round3(percentile(fo.media, 90)),
		FailoverMax:     round3(percentile(fo.media, 100)),
		FailoverExitP50: round3(percentile(fo.exit, 50)), FailoverEnterP50: round3(percentile(fo.entered, 50)),
		FailoverErrs: len(fo.errs), FailoverCallsMade: fo.setUp,
	}
	if o.failover > 0 {
		res.FailoverReentry = reentryBy
	}
	res.FirstMediaRatio = round3(ratio(res.FirstMediaP50, res.StandaloneFirstMediaP50))
	for _, t := range main.timings {
		if t.callerNode != t.calleeNode {
			res.CrossNodeCalls++
		}
		switch t.media {
		case "":
			res.RoomNodeUnknown++
		case t.callerNode:
			res.RoomOnCallerNode++
		case t.calleeNode:
			res.RoomOnCalleeNode++
		default:
			res.RoomOnOtherNode++
		}
	}
	sent := map[string]string{"dir": "sent"}
	res.RelayMetric = after.has(metricRelay)
	if res.RelayMetric {
		res.RelayPerCall = perCall(after.sum(metricRelay, sent)-before.sum(metricRelay, sent), ran)
		res.RelayPerCallKinds = map[string]float64{}
		for _, kind := range after.labelValues(metricRelay, "kind") {
			k := map[string]string{"dir": "sent", "kind": kind}
			res.RelayPerCallKinds[kind] = perCall(after.sum(metricRelay, k)-before.sum(metricRelay, k), ran)
		}
	}
	printMediaCluster(stdout, o, res, main, base, fo)
	return res, nil
}

func printMediaCluster(stdout io.Writer, o mediaOptions, res *mediaClusterResult, main, base seriesResult, fo failoverResult) {
	first := "cluster"
	if o.standaloneFirst {
		first = "standalone"
	}
	fmt.Fprintf(stdout, "switchboard-bench media: %d-node cluster on redis-server (aof %s) vs standalone (%s first), child processes, %d calls each (caller and callee on different nodes), %d bit/s at %d fps\n\n",
		o.cluster, o.redisAOF, first, o.calls, o.bitrate, o.fps)
	// nf is a figure over n calls: "n/a" when none was timed.
	nf := func(v float64, n int) string {
		if n == 0 {
			return "n/a"
		}
		return f(v)
	}
	cn, sn := res.CallsDone, res.StandaloneCallsDone
	t := newTable(stdout, "figure", "cluster", "standalone", "unit")
	t.row("calls done", fmt.Sprintf("%d of %d", cn, o.calls), fmt.Sprintf("%d of %d", sn, o.calls), "calls timed (failed ones below)")
	t.row("first media p50", nf(res.FirstMediaP50, cn), nf(res.StandaloneFirstMediaP50, sn), "ms (accept sent → a keyframe of the other's video at both parties)")
	t.row("first media p90", nf(res.FirstMediaP90, cn), nf(res.StandaloneFirstMediaP90, sn), "ms")
	t.row("first media p99", nf(res.FirstMediaP99, cn), nf(res.StandaloneFirstMediaP99, sn), "ms")
	t.row("first media max", nf(res.FirstMediaMax, cn), nf(res.StandaloneFirstMediaMax, sn), "ms")
	relay := "n/a"
	if res.RelayMetric {
		relay = nf(res.RelayPerCall, cn)
	}
	t.row("relayed room messages per call", relay, "-", metricRelay+`{dir="sent"}, summed over the nodes`)
	t.row("redis XADD per call", nf(res.RedisXAddPerCall, cn), "-", "stream appends: room relay and signaling events, background included")
	t.row("redis commands per call", nf(res.RedisCmdsPerCall, cn), "-", "total_commands_processed, background included")
	t.row("client requests per call", nf(res.RequestsPerCall, cn), nf(res.StandaloneRequestsPerCall, sn), metricRequests+", both parties")
	t.row("WebSocket messages per call", nf(res.WSFramesPerCall, cn), nf(res.StandaloneWSFramesPerCall, sn), "data frames, both directions, both parties, connect to close")
	t.flush()
	fmt.Fprintf(stdout, "\nfirst_media_ratio = first_media_p50_ms / standalone_first_media_p50_ms = %s (target at most 1.5)\n", nf(res.FirstMediaRatio, min(cn, sn)))
	fmt.Fprintf(stdout, "rooms of the cluster's calls: %d on the caller's node, %d on the callee's, %d on another, %d unknown (the enterRoom reply's node)\n",
		res.RoomOnCallerNode, res.RoomOnCalleeNode, res.RoomOnOtherNode, res.RoomNodeUnknown)
	if !res.RelayMetric {
		fmt.Fprintf(stdout, "relayed room messages: no node exposes %s\n", metricRelay)
	} else if len(res.RelayPerCallKinds) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(res.RelayPerCallKinds)) {
			parts = append(parts, fmt.Sprintf("%s %s", k, f(res.RelayPerCallKinds[k])))
		}
		fmt.Fprintf(stdout, "relayed room messages per call by kind: %s\n", strings.Join(parts, ", "))
	}
	if o.failover > 0 {
		fmt.Fprintf(stdout, "\nfailover on %d nodes: %d of %d calls timed over %d SIGKILLs of the room's media node (neither party's node; %d calls set up in all)\n",
			res.FailoverNodes, res.FailoverCalls, o.failover, res.FailoverKills, res.FailoverCallsMade)
		fn := res.FailoverCalls
		t := newTable(stdout, "figure", "p50", "p90", "max", "unit")
		t.row("kill → media again", nf(res.FailoverP50, fn), nf(res.FailoverP90, fn), nf(res.FailoverMax, fn), "ms (a keyframe of the other's video at both parties; target p50 under 5000)")
		t.row("kill → onExitRoom 4", nf(res.FailoverExitP50, fn), "-", "-", "ms (both parties)")
		t.row("kill → entered again", nf(res.FailoverEnterP50, fn), "-", "-", "ms (both parties)")
		t.flush()
		fmt.Fprintf(stdout, "re-entry: %s\n", res.FailoverReentry)
	}
	for _, e := range main.errs {
		fmt.Fprintln(stdout, "cluster call error:", e)
	}
	for _, e := range base.errs {
		fmt.Fprintln(stdout, "standalone call error:", e)
	}
	for _, e := range fo.errs {
		fmt.Fprintln(stdout, "failover error:", e)
	}
}

// mediaNode is the room's media node named by an enterRoom reply, "" when
// the server names none (a standalone server).
func mediaNode(res rooms.EnterResult) string {
	return res.Node
}
