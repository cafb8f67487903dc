package signaling

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// replayBatch is how many frames Replay.Next returns at most.
const replayBatch = 32

// Replay is what a connection missed while it was not open: the events kept
// for its user, oldest first, then an onReceiveNewInvitation for each stored
// invitation ringing for the user when it attached. Attach hands it to the
// connection (Conn.StartReplay), whose writer pulls the frames with Next
// as fast as the client reads them: the replay never waits in the
// connection's send queue, so however much a user missed, a connection that
// reads is never dropped for it.
//
// Kept events are read from the store a batch at a time and deleted once
// written; an invitation rings only if it still rings when its turn comes,
// with the time left then. A replay ends when Next returns nil or when its
// connection is detached; the kept events it did not write stay kept.
type Replay struct {
	e    *Engine
	s    Conn
	user string

	// Guarded by e.mu.
	upTo      int64    // kept events with Seq <= upTo are replayed; 0: none (left)
	seqs      []int64  // the Seqs the engine's index held at Attach, ordered: only those are replayed
	after     int64    // the last kept Seq read from the store
	exhausted bool     // the store has no more kept events up to upTo
	sent      []int64  // kept Seqs of the frames of the last Next
	written   []int64  // kept Seqs whose frames were written (or that expired), ordered
	invites   []string // invitations still to ring, in order
	ended     bool

	// Cluster mode (cl set): the replay reads what was missed from Redis
	// once ready is closed (the registry has the connection), rung holds
	// the invitations rung to the connection (by the replay or live: one
	// ring each), costs what each replayed kept entry counts for; claim is
	// the token of the user's replay claim while the replay holds it (see
	// clusterNode.missed), renewed until stopRenew is closed.
	cl        *clusterNode
	ready     chan struct{}
	loaded    bool
	rung      map[string]bool
	costs     map[int64]keptCostOf
	claim     string
	stopRenew chan struct{}
}

// loadClusterLocked reads, once the attach is registered, what the user
// missed; it releases e.mu while it waits and reads.
func (r *Replay) loadClusterLocked(ctx context.Context) {
	e := r.e
	r.loaded = true
	e.mu.Unlock()
	var seqs []int64
	var invites []string
	var claimed bool
	var err error
	token := e.newID("rp")
	select {
	case <-r.ready:
		seqs, invites, claimed, err = r.cl.missed(ctx, r.user, token)
	case <-ctx.Done():
		err = ctx.Err()
	}
	e.mu.Lock()
	if claimed && (err != nil || r.ended || len(seqs) == 0) {
		e.finishReplayLocked(r.user, token, nil, nil)
		claimed = false
	}
	if err != nil {
		e.log.Warn("missed events not replayed", "user", r.user, "err", err)
		return
	}
	if r.ended {
		return
	}
	if claimed {
		r.seqs, r.upTo = seqs, seqs[len(seqs)-1]
		r.costs = map[int64]keptCostOf{}
		r.claim, r.stopRenew = token, make(chan struct{})
		r.cl.renewClaimLocked(r.user, token, r.stopRenew)
	}
	for _, id := range invites {
		if !r.rung[id] {
			r.invites = append(r.invites, id)
		}
	}
}

// clusterRingsLocked renders the rings of ids that still ring; it
// releases e.mu during the read.
func (r *Replay) clusterRingsLocked(ctx context.Context, ids []string) [][]byte {
	e := r.e
	e.mu.Unlock()
	rung, frames, err := r.cl.ringFrames(ctx, r.user, ids)
	e.mu.Lock()
	if err != nil {
		e.log.Warn("ringing invitations not replayed", "user", r.user, "err", err)
		return nil
	}
	var out [][]byte
	for i, id := range rung {
		if !r.rung[id] && !r.ended {
			r.rung[id] = true
			out = append(out, frames[i])
		}
	}
	return out
}

// Next returns the next frames to write, or nil once the replay is over.
// Calling it again says that the frames it returned before were written.
// It is called by the connection's writer only.
func (r *Replay) Next(ctx context.Context) [][]byte {
	e := r.e
	e.mu.Lock()
	defer e.mu.Unlock()
	r.written = append(r.written, r.sent...)
	r.sent = nil
	for !r.ended && !e.closed {
		if r.cl != nil && !r.loaded {
			r.loadClusterLocked(ctx)
			continue
		}
		if r.upTo > 0 {
			if r.exhausted {
				e.endOutboxLocked(r)
				continue
			}
			frames, err := r.loadLocked(ctx)
			if r.ended {
				return nil
			}
			if err != nil {
				e.log.Warn("kept events not replayed; they stay kept", "user", r.user, "err", err)
				e.endOutboxLocked(r)
				continue
			}
			if len(frames) > 0 {
				return frames
			}
			// Only expired entries: nothing to write, all to delete.
			r.written = append(r.written, r.sent...)
			r.sent = nil
			continue
		}
		if len(r.invites) == 0 {
			e.endReplayLocked(r)
			return nil
		}
		n := min(len(r.invites), replayBatch)
		ids := r.invites[:n]
		r.invites = r.invites[n:]
		if r.cl != nil {
			if frames := r.clusterRingsLocked(ctx, ids); len(frames) > 0 {
				return frames
			}
			continue
		}
		now := e.clock.Now()
		var frames [][]byte
		for _, id := range ids {
			inv := e.byInvitee[r.user][id]
			if inv == nil || inv.stateOf(r.user) != StatePending {
				continue // answered, cancelled or timed out since
			}
			if frame, err := protocol.EncodeEvent(protocol.EvReceiveNewInvitation, inv.newInvitationEvent(now)); err == nil {
				frames = append(frames, frame)
			}
		}
		if len(frames) > 0 {
			return frames
		}
	}
	return nil
}

// loadLocked reads the next batch of kept events; it releases e.mu during
// the read.
func (r *Replay) loadLocked(ctx context.Context) ([][]byte, error) {
	e := r.e
	after, upTo := r.after, r.upTo
	e.mu.Unlock()
	ents, err := e.store.LoadOutbox(ctx, r.user, after, replayBatch)
	e.mu.Lock()
	if err != nil || r.ended {
		return nil, err
	}
	if len(ents) < replayBatch {
		r.exhausted = true
	}
	now := e.clock.Now()
	var frames [][]byte
	for _, ent := range ents {
		if ent.Seq > upTo {
			r.exhausted = true
			break
		}
		r.after = ent.Seq
		if _, ok := slices.BinarySearch(r.seqs, ent.Seq); !ok {
			// Dropped (its deletion is under way), or committed by an
			// operation that delivers it live.
			continue
		}
		r.sent = append(r.sent, ent.Seq)
		if r.costs != nil {
			r.costs[ent.Seq] = keptCostOf{sender: ent.Sender, cost: keptCost(ent.Bytes())}
		}
		if !ent.ExpiresAt.IsZero() && !ent.ExpiresAt.After(now) {
			continue // expired: not sent, deleted with the rest
		}
		frame, err := json.Marshal(protocol.EventFrame{Event: ent.Event, Data: ent.Data})
		if err != nil {
			return nil, err
		}
		frames = append(frames, frame)
	}
	return frames, nil
}

// endOutboxLocked ends the replay of kept events: those written are deleted,
// the others stay kept.
func (e *Engine) endOutboxLocked(r *Replay) {
	if r.upTo == 0 {
		return
	}
	if box := e.kept.boxes[r.user]; box != nil && box.replayUpTo == r.upTo {
		box.replayUpTo = 0
		e.kept.tidy(r.user, box)
	}
	r.upTo, r.seqs = 0, nil
	if r.cl != nil {
		slices.Sort(r.written)
		if r.stopRenew != nil {
			close(r.stopRenew)
			r.stopRenew = nil
		}
		e.finishReplayLocked(r.user, r.claim, r.written, r.costs)
		r.claim, r.written = "", nil
		return
	}
	if len(r.written) == 0 {
		return
	}
	slices.Sort(r.written)
	e.kept.remove(r.user, r.written)
	muts := make([]Mutation, len(r.written))
	for i, seq := range r.written {
		muts[i] = DeleteOutboxEntry{UserID: r.user, Seq: seq}
	}
	r.written = nil
	e.goBestEffortLocked(muts...)
}

// endReplayLocked ends a replay (done, or its connection detached).
func (e *Engine) endReplayLocked(r *Replay) {
	if r.ended {
		return
	}
	e.endOutboxLocked(r)
	r.ended = true
	r.invites = nil
	delete(e.replays, r.s)
}
