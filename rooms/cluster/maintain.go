package roomcluster

import (
	"context"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// maintain runs every node_ttl/3 until Close: the leases of the rooms this
// node hosts, the rooms-per-user entries it wrote, and the watch of the
// nodes its connections' rooms live on and its remote sessions come from.
//
// Why polling: the state in Redis is the authority (calls' reconcile does
// the same); a lost message cannot leave a lease or an entry behind.
func (r *Relay) maintain() {
	tick := time.NewTicker(r.cfg.NodeTTL / 3)
	defer tick.Stop()
	watch := time.NewTicker(min(r.cfg.NodeTTL/3, watchPeriod))
	defer watch.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-watch.C:
			r.watch()
		case <-tick.C:
			members := r.p.Rooms.Memberships()
			r.leases(members)
			r.reconcileUsers(members)
		}
	}
}

// watchPeriod bounds the period of the watch of node liveness: a dead
// node is noticed at most this long after its key expired (one EXISTS
// pipeline per period, only while there are nodes to watch).
const watchPeriod = 250 * time.Millisecond

// leases renews the lease of each room hosted here, dismisses (reason 4)
// a room whose ownership another live node has taken, and releases the
// lease of a room that closed here.
func (r *Relay) leases(members map[string][]string) {
	r.mu.Lock()
	var renew, release []string
	gens := map[string]int{}
	for id, o := range r.owned {
		gens[id] = o.gen
		if _, ok := members[id]; ok || o.inflight > 0 {
			renew = append(renew, id)
		} else {
			release = append(release, id)
		}
	}
	r.mu.Unlock()
	slices.Sort(renew)
	slices.Sort(release)
	if len(renew)+len(release) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpTimeout)
	defer cancel()
	renewed := make([]*redis.Cmd, len(renew))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range renew {
			renewed[i] = renewScript.Eval(ctx, p, []string{r.k.room(id)}, r.k.nodePrefix(), r.self, r.lease())
		}
		for _, id := range release {
			releaseScript.Eval(ctx, p, []string{r.k.room(id)}, r.self)
		}
		return nil
	})
	if err != nil {
		r.failed(err)
		if r.ctx.Err() == nil {
			r.log.Warn("room leases not renewed", "err", err)
		}
		return
	}
	var lost []string
	r.mu.Lock()
	for _, id := range release {
		if o := r.owned[id]; o != nil && o.gen == gens[id] && o.inflight == 0 {
			delete(r.owned, id)
		}
	}
	for i, id := range renew {
		if n, _ := renewed[i].Int64(); n == 0 {
			lost = append(lost, id)
			delete(r.owned, id)
		}
	}
	r.mu.Unlock()
	for _, id := range lost {
		r.log.Warn("room ownership lost to another live node: dismissed (members enter again)", "room", id)
		r.p.Rooms.DismissLost(id)
	}
}

// reconcileUsers removes the rooms-per-user entries this node wrote for
// members who are no longer in the room here (left, kicked, connection
// lost, the call ended).
func (r *Relay) reconcileUsers(members map[string][]string) {
	type pair struct{ user, room string }
	var gone []pair
	r.mu.Lock()
	for user, set := range r.added {
		for id := range set {
			if o := r.owned[id]; o != nil && o.inflight > 0 {
				continue
			}
			if !slices.Contains(members[id], user) {
				gone = append(gone, pair{user, id})
			}
		}
	}
	r.mu.Unlock()
	for _, g := range gone {
		r.unadd(g.user, g.room)
	}
}

// watch checks the liveness of the nodes this node depends on: the media
// nodes of its connections' rooms, the nodes its remote sessions come
// from, the nodes it sends to. A dead one (its node key gone, and this
// node's own last failed Redis call older than the outage grace) is acted
// on: members connected here of its rooms get onExitRoom reason 4, its
// remote sessions here are closed (their members keep their places for the
// rejoin grace), the requests waiting for it fail with 11015.
func (r *Relay) watch() {
	set := map[string]bool{}
	r.mu.Lock()
	for _, lc := range r.conns {
		for _, n := range lc.rooms {
			set[n] = true
		}
	}
	for _, s := range r.remotes {
		set[s.from] = true
	}
	for n := range r.senders {
		set[n] = true
	}
	r.mu.Unlock()
	if len(set) == 0 {
		return
	}
	// This node's own key too: if it was gone, the others may have
	// declared it dead and closed its connections' remote sessions.
	set[r.self] = true
	nodes := make([]string, 0, len(set))
	for n := range set {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpTimeout)
	defer cancel()
	exists := make([]*redis.IntCmd, len(nodes))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			exists[i] = p.Exists(ctx, r.k.node(n))
		}
		return nil
	})
	if err != nil {
		r.failed(err)
		return
	}
	if time.Since(time.UnixMilli(r.lastFail.Load())) < r.cfg.OutageGrace() {
		return // just after an outage: nodes are given the time to register again
	}
	for i, n := range nodes {
		switch {
		case exists[i].Val() != 0:
		case n == r.self:
			r.selfLost()
		default:
			r.nodeDead(n)
		}
	}
}

// selfLost acts on this node's own key found gone (Redis was unreachable
// from here past node_ttl, or lost the key): the media nodes of its
// connections' rooms may have closed their remote sessions, so the
// members are told to enter again (onExitRoom reason 4).
func (r *Relay) selfLost() {
	type exit struct {
		s    protocol.Session
		room string
	}
	var exits []exit
	r.mu.Lock()
	for _, lc := range r.conns {
		for id, n := range lc.rooms {
			if n != r.self {
				exits = append(exits, exit{lc.s, id})
				delete(lc.rooms, id)
			}
		}
	}
	r.mu.Unlock()
	if len(exits) > 0 {
		r.log.Warn("this node's key was gone (declared dead?): its members of rooms on other nodes told to enter again", "exits", len(exits))
	}
	for _, e := range exits {
		if frame, err := protocol.EncodeEvent(rooms.EvExitRoom, rooms.ExitRoomEvent{RoomID: e.room, Reason: int(rooms.ExitMediaNodeLost)}); err == nil {
			e.s.Deliver(frame)
		}
	}
}

// nodeDead acts on the loss of node.
func (r *Relay) nodeDead(node string) {
	type exit struct {
		s    protocol.Session
		room string
	}
	var exits []exit
	r.mu.Lock()
	for _, lc := range r.conns {
		for id, n := range lc.rooms {
			if n == node {
				exits = append(exits, exit{lc.s, id})
				delete(lc.rooms, id)
			}
		}
		delete(lc.nodes, node)
	}
	var closed []*remoteSession
	for key, s := range r.remotes {
		if s.from == node {
			delete(r.remotes, key)
			closed = append(closed, s)
		}
	}
	for _, s := range closed {
		r.pushLocked(s, func() { r.p.Rooms.SessionClosed(s) })
	}
	for id, w := range r.pending {
		if w.node == node {
			delete(r.pending, id)
			w.ch <- replyPayload{ID: id, lost: true,
				Err: rooms.ErrRoomNodeUnavailable.WithMessage("the room's media node %s was lost; enter the room again", node)}
		}
	}
	r.dropSenderLocked(node)
	r.mu.Unlock()
	if len(exits)+len(closed) > 0 {
		r.log.Info("node lost: its rooms' members here told to enter again, its connections' members in their rejoin grace",
			"dead", node, "exits", len(exits), "remote_sessions", len(closed))
	}
	for _, e := range exits {
		if frame, err := protocol.EncodeEvent(rooms.EvExitRoom, rooms.ExitRoomEvent{RoomID: e.room, Reason: int(rooms.ExitMediaNodeLost)}); err == nil {
			e.s.Deliver(frame)
		}
	}
}
