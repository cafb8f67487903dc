package roomcluster

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Ops wraps the rooms ops (rooms.Manager.Ops) for cluster mode: enterRoom
// is placed and runs on the room's media node, the other ops of a room go
// to the node the connection entered it on; on this node they run as they
// are (the local fast path, no Redis hop).
func (r *Relay) Ops(local map[string]protocol.OpFunc) map[string]protocol.OpFunc {
	out := make(map[string]protocol.OpFunc, len(local))
	for name, op := range local {
		if name == rooms.OpEnterRoom {
			out[name] = func(ctx context.Context, a protocol.Actor, raw json.RawMessage) (any, error) {
				return r.enter(ctx, op, a, raw)
			}
			continue
		}
		out[name] = func(ctx context.Context, a protocol.Actor, raw json.RawMessage) (any, error) {
			return r.roomOp(ctx, name, op, a, raw)
		}
	}
	return out
}

// roomIDOf reads args.roomID leniently ("" when there is none: the op's
// own decoding words the error).
func roomIDOf(raw json.RawMessage) string {
	var v struct {
		RoomID string `json:"roomID"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	return v.RoomID
}

// roomOp runs a room op where the connection's member of the room is.
func (r *Relay) roomOp(ctx context.Context, name string, op protocol.OpFunc, a protocol.Actor, raw json.RawMessage) (any, error) {
	roomID := roomIDOf(raw)
	node := r.memberNode(a.Session, roomID)
	if node == "" || node == r.self {
		res, err := op(ctx, a, raw)
		if err == nil && name == rooms.OpExitRoom {
			r.unadd(a.UserID, roomID)
		}
		return res, err
	}
	res, _, _, err := r.forward(ctx, node, a, name, raw)
	if err == nil && name == rooms.OpExitRoom {
		r.forgetRoom(a.Session, roomID, node)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// enter places an enterRoom and runs it on the room's media node,
// following "moved" answers.
func (r *Relay) enter(ctx context.Context, op protocol.OpFunc, a protocol.Actor, raw json.RawMessage) (any, error) {
	roomID := roomIDOf(raw)
	if a.Session == nil || !rooms.ValidRoomID(roomID) {
		return op(ctx, a, raw) // its own error
	}
	node, err := (*r.placeFn.Load())(ctx, roomID)
	if err != nil {
		return nil, protocol.ErrStoreUnavailable.WithMessage("the room's node could not be looked up; retry")
	}
	for hop := 0; hop <= maxHops; hop++ {
		var res any
		var moved string
		lost := false
		if node == r.self {
			res, moved, err = r.enterHere(ctx, a, raw)
		} else {
			res, moved, lost, err = r.forward(ctx, node, a, rooms.OpEnterRoom, raw)
		}
		if moved != "" {
			r.log.Debug("enterRoom moved", "room", roomID, "from", node, "to", moved)
			node = moved
			continue
		}
		if lost {
			// The node it went to died meanwhile: place the room again
			// (on a live node), within the request's deadline.
			if node, err = (*r.placeFn.Load())(ctx, roomID); err != nil {
				return nil, protocol.ErrStoreUnavailable.WithMessage("the room's node could not be looked up; retry")
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		r.rememberRoom(a.Session, roomID, node)
		return res, nil
	}
	return nil, rooms.ErrRoomNodeUnavailable.WithMessage("room %q moved between nodes more than %d times; retry", roomID, maxHops)
}

// enterHere runs an enterRoom on this node as the room's media node: the
// claim (moved: another live node owns the room), the rooms-per-user
// limit and the refusal of room tokens for a call's room ID are decided
// in one script, then rooms enters.
func (r *Relay) enterHere(ctx context.Context, a protocol.Actor, raw json.RawMessage) (any, string, error) {
	args, derr := protocol.DecodeArgs[rooms.EnterArgs](raw)
	if derr != nil {
		return nil, "", derr
	}
	if !rooms.ValidRoomID(args.RoomID) {
		res, err := r.p.Rooms.Enter(ctx, a, args) // its own error
		return res, "", err
	}
	roomID := args.RoomID
	r.mu.Lock()
	o := r.owned[roomID]
	if o == nil {
		o = &ownedRoom{}
		r.owned[roomID] = o
	}
	o.inflight++
	o.gen++
	r.addedLocked(a.UserID, roomID)
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		o.inflight--
		r.mu.Unlock()
	}
	c, err := r.claim(ctx, roomID, a.UserID)
	if err != nil {
		done()
		return nil, "", protocol.ErrStoreUnavailable.WithMessage("the room could not be claimed; retry")
	}
	if c.moved != "" {
		done()
		return nil, c.moved, nil
	}
	if c.rooms > 0 {
		done()
		lim := r.p.MaxRoomsPerUser
		return nil, "", rooms.ErrTooManyRooms.WithMessage("already in %d rooms; the limit is %d", c.rooms, lim)
	}
	stripped := false
	if c.callRoom && args.RoomToken != "" {
		// A running call holds this room ID: only its participants enter
		// (through the call's admission), cluster-wide.
		args.RoomToken, stripped = "", true
	}
	res, err := r.p.Rooms.Enter(ctx, a, args)
	done()
	if err != nil {
		if stripped && errors.Is(err, rooms.ErrNotAdmitted) {
			err = rooms.ErrNotAdmitted.WithMessage("room %q is a running call's room: room tokens are refused for it", roomID)
		}
		if !r.p.Rooms.InRoom(roomID, a.UserID) {
			r.unadd(a.UserID, roomID)
		}
		return nil, "", err
	}
	res.Node = r.self
	return res, "", nil
}

// forward sends a request to node and waits for its reply until ctx's
// deadline: none is rooms.ErrRoomNodeUnavailable (11015), as is node
// being declared dead meanwhile (lost).
func (r *Relay) forward(ctx context.Context, node string, a protocol.Actor, op string, raw json.RawMessage) (_ json.RawMessage, moved string, lost bool, _ error) {
	connID := ""
	if a.Session != nil {
		connID = r.connOf(a.Session, node)
	}
	id := r.self + "-" + r.connTag + "-" + strconv.FormatUint(r.nextID.Add(1), 36)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(r.p.RequestTimeout)
	}
	w := &waiter{node: node, ch: make(chan replyPayload, 1)}
	r.mu.Lock()
	r.pending[id] = w
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
	}()
	payload, _ := json.Marshal(requestPayload{ID: id, User: a.UserID, Op: op, Args: raw, Deadline: deadline.UnixMilli()})
	if !r.send(node, entry{kind: kindRequest, conn: connID, payload: payload}) {
		return nil, "", false, rooms.ErrRoomNodeUnavailable
	}
	select {
	case p := <-w.ch:
		if p.Moved != "" {
			return nil, p.Moved, false, nil
		}
		if p.Err != nil {
			return nil, "", p.lost, p.Err
		}
		if len(p.Result) == 0 {
			p.Result = json.RawMessage("{}")
		}
		return p.Result, "", false, nil
	case <-ctx.Done():
		return nil, "", false, rooms.ErrRoomNodeUnavailable
	}
}

// connOf returns the connection ID of local session s, registering it and
// noting that node holds a remote session of it.
func (r *Relay) connOf(s protocol.Session, node string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lc := r.connLocked(s)
	lc.nodes[node] = true
	return lc.id
}

func (r *Relay) connLocked(s protocol.Session) *localConn {
	lc := r.conns[s]
	if lc == nil {
		lc = &localConn{id: r.connTag + "." + strconv.FormatUint(r.nextID.Add(1), 36), s: s, rooms: map[string]string{}, nodes: map[string]bool{}}
		r.conns[s] = lc
		r.connByID[lc.id] = lc
	}
	return lc
}

// memberNode is the node s entered roomID on ("" if none known).
func (r *Relay) memberNode(s protocol.Session, roomID string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lc := r.conns[s]; lc != nil {
		return lc.rooms[roomID]
	}
	return ""
}

func (r *Relay) rememberRoom(s protocol.Session, roomID, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connLocked(s).rooms[roomID] = node
}

// forgetRoom drops s's entry of roomID if it is on node.
func (r *Relay) forgetRoom(s protocol.Session, roomID, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lc := r.conns[s]; lc != nil && lc.rooms[roomID] == node {
		delete(lc.rooms, roomID)
	}
}

// SessionClosed is web's OnSessionClosed for a local connection: the media
// nodes holding a remote session of it are told (their members keep their
// places for media.rejoin_grace). rooms.Manager.SessionClosed handles its
// members on this node.
func (r *Relay) SessionClosed(s protocol.Session) {
	r.mu.Lock()
	lc := r.conns[s]
	if lc != nil {
		delete(r.conns, s)
		delete(r.connByID, lc.id)
	}
	r.mu.Unlock()
	if lc == nil {
		return
	}
	for node := range lc.nodes {
		if node != r.self {
			r.send(node, entry{kind: kindClosed, conn: lc.id})
		}
	}
}

// event delivers an event relayed from a media node to the local
// connection it is for.
func (r *Relay) event(from, connID string, frame []byte) {
	r.mu.Lock()
	lc := r.connByID[connID]
	r.mu.Unlock()
	if lc == nil {
		return // the connection closed meanwhile
	}
	var ev struct {
		Event string              `json:"event"`
		Data  rooms.ExitRoomEvent `json:"data"`
	}
	if json.Unmarshal(frame, &ev) == nil && ev.Event == rooms.EvExitRoom {
		r.forgetRoom(lc.s, ev.Data.RoomID, from)
	}
	lc.s.Deliver(frame)
}

// GrantSeat is rooms.Manager.GrantSeat on the room's media node (calls'
// mic invitations: calls.Params.Seats).
func (r *Relay) GrantSeat(roomID, host, userID, via string) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.p.RequestTimeout)
	defer cancel()
	node, err := r.owner(ctx, roomID)
	if err != nil {
		return err
	}
	if node == "" || node == r.self {
		return r.p.Rooms.GrantSeat(roomID, host, userID, via)
	}
	args, _ := json.Marshal(grantArgs{RoomID: roomID, Host: host, UserID: userID, Via: via})
	_, _, _, err = r.forward(ctx, node, protocol.Actor{UserID: userID}, opGrantSeat, args)
	return err
}

type grantArgs struct {
	RoomID string `json:"roomID"`
	Host   string `json:"host"`
	UserID string `json:"userID"`
	Via    string `json:"via"`
}
