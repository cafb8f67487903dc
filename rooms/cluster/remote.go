package roomcluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// remoteSession is, on a room's media node, a connection of another node
// whose requests were forwarded here: one pointer per from-node and
// connection ID (a stable key for rooms.Manager). Its requests run one at
// a time, in order, on a goroutine that lives while it has some; a closed
// entry runs after them.
type remoteSession struct {
	r    *Relay
	from string
	conn string
	user string
	key  string

	// guarded by Relay.mu
	queue   []func()
	running bool
}

// UserID implements protocol.Session.
func (s *remoteSession) UserID() string { return s.user }

// Deliver implements protocol.Session: the frame goes to the connection's
// node (non-blocking; called with rooms' lock held).
func (s *remoteSession) Deliver(frame []byte) {
	s.r.send(s.from, entry{kind: kindEvent, conn: s.conn, payload: frame})
}

// request queues a forwarded request on its remote session (created on
// first use); an internal request (no connection) gets one per node.
func (r *Relay) request(from, conn string, q requestPayload) {
	key := from + "/" + conn
	if conn == "" {
		key += "~" + q.User // internal requests: one queue per node and user
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	s := r.remotes[key]
	if s == nil {
		s = &remoteSession{r: r, from: from, conn: conn, user: q.User, key: key}
		r.remotes[key] = s
	}
	if s.user != q.User {
		r.mu.Unlock()
		r.reply(from, replyPayload{ID: q.ID, Err: protocol.ErrInvalidParameter.WithMessage("connection of another user")})
		return
	}
	if len(s.queue) >= sessionQueue {
		r.mu.Unlock()
		r.reply(from, replyPayload{ID: q.ID, Err: protocol.ErrRateLimited.WithMessage("too many requests waiting for the room's media node")})
		return
	}
	r.pushLocked(s, func() { r.run(s, q) })
	r.mu.Unlock()
}

// remoteClosed runs rooms.SessionClosed for a remote session after its
// queued requests (its members keep their places for the rejoin grace).
func (r *Relay) remoteClosed(from, conn string) {
	key := from + "/" + conn
	r.mu.Lock()
	s := r.remotes[key]
	if s != nil {
		delete(r.remotes, key)
		r.pushLocked(s, func() { r.p.Rooms.SessionClosed(s) })
	}
	r.mu.Unlock()
}

// pushLocked queues f on s, starting its goroutine if it has none.
func (r *Relay) pushLocked(s *remoteSession, f func()) {
	s.queue = append(s.queue, f)
	if s.running {
		return
	}
	s.running = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			r.mu.Lock()
			if len(s.queue) == 0 {
				s.running = false
				r.mu.Unlock()
				return
			}
			f := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			r.mu.Unlock()
			f()
		}
	}()
}

// run performs a forwarded request and sends its reply (unless its
// deadline has passed: nobody waits for it).
func (r *Relay) run(s *remoteSession, q requestPayload) {
	deadline := time.UnixMilli(q.Deadline)
	if time.Now().After(deadline) {
		r.log.Info("forwarded request past its deadline; dropped", "from", s.from, "op", q.Op)
		return
	}
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	defer cancel()
	a := protocol.Actor{UserID: q.User, Session: s}
	var res any
	var moved string
	var err error
	switch q.Op {
	case rooms.OpEnterRoom:
		res, moved, err = r.enterHere(ctx, a, q.Args)
	case opGrantSeat:
		g, derr := protocol.DecodeArgs[grantArgs](q.Args)
		if derr != nil {
			err = derr
			break
		}
		err = r.p.Rooms.GrantSeat(g.RoomID, g.Host, g.UserID, g.Via)
	default:
		op := r.local[q.Op]
		if op == nil {
			err = protocol.ErrUnknownOp.WithMessage("unknown op %q", q.Op)
			break
		}
		res, err = op(ctx, a, q.Args)
		if err == nil && q.Op == rooms.OpExitRoom {
			r.unadd(q.User, roomIDOf(q.Args))
		}
	}
	p := replyPayload{ID: q.ID, Moved: moved}
	if err != nil {
		p.Err = protocol.AsError(err)
	} else if moved == "" {
		if res == nil {
			res = struct{}{}
		}
		b, merr := json.Marshal(res)
		if merr != nil {
			p.Err = &protocol.Error{Code: 9599, Reason: "internal_error", Message: "could not encode the reply"}
		} else {
			p.Result = b
		}
	}
	r.reply(s.from, p)
}

func (r *Relay) reply(to string, p replyPayload) {
	b, _ := json.Marshal(p)
	r.send(to, entry{kind: kindReply, payload: b})
}
