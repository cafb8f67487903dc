package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Due is a deadline a Poller claimed.
type Due struct {
	ID string
	// At is the member's score when it was claimed: its deadline, or, if
	// an earlier claimer did not call Done, the end of that claim's lease.
	At time.Time
	// claim is the lease end (ms) the claim set; Done removes the member
	// only if it still has it.
	claim int64
}

// Schedule queues, in pipe, the deadline id at at (ms precision); a later
// Schedule of the same id moves it.
func (k Keyspace) Schedule(ctx context.Context, pipe redis.Pipeliner, id string, at time.Time) {
	pipe.ZAdd(ctx, k.DeadlinesKey(), redis.Z{Score: float64(at.UnixMilli()), Member: id})
}

// Cancel queues, in pipe, the removal of the deadline id.
func (k Keyspace) Cancel(ctx context.Context, pipe redis.Pipeliner, id string) {
	pipe.ZRem(ctx, k.DeadlinesKey(), id)
}

// Done queues, in pipe, the removal of a fired deadline, if it still
// carries d's claim (a Schedule since then, or another node's claim after
// the lease, keeps it).
func (k Keyspace) Done(ctx context.Context, pipe redis.Pipeliner, d Due) {
	pipe.Eval(ctx, doneSrc, []string{k.DeadlinesKey()}, d.ID, d.claim)
}

// PollerParams configure a Poller.
type PollerParams struct {
	Params
	// Fire is called, from one goroutine, for each deadline this node
	// claimed. It calls Done (or queues Keyspace.Done in its own
	// transaction) once the deadline's work is committed; a deadline left
	// without Done fires again, on any node, after Config.TimerLease.
	Fire func(ctx context.Context, d Due)
}

// Poller claims due deadlines of the `deadlines` sorted set every
// Config.TimerPoll with one script (which re-scores them to now + lease,
// so exactly one node fires each while its lease runs) and fires them.
type Poller struct {
	p    PollerParams
	ks   Keyspace
	life life
}

// NewPoller returns a poller for node p.NodeID.
func NewPoller(p PollerParams) (*Poller, error) {
	if err := p.check("timer poller"); err != nil {
		return nil, err
	}
	if p.Fire == nil {
		return nil, fmt.Errorf("%w: timer poller: no Fire", ErrConfig)
	}
	return &Poller{p: p, ks: NewKeyspace(p.Prefix, p.Config), life: newLife()}, nil
}

// Start starts polling.
func (p *Poller) Start() error { return p.life.start(p.run) }

// Close stops polling; it returns once no Fire call is running.
func (p *Poller) Close() { p.life.stop() }

// Done removes a fired deadline if it still carries d's claim.
func (p *Poller) Done(ctx context.Context, d Due) error {
	if err := doneScript.Run(ctx, p.p.Client, []string{p.ks.DeadlinesKey()}, d.ID, d.claim).Err(); err != nil {
		return fmt.Errorf("cluster: deadline done: %w", err)
	}
	return nil
}

func (p *Poller) run(ctx context.Context) {
	rt := newRetrier(p.p.Logger, "timer poller", p.p.Config.MaxBackoff)
	// A random phase spreads the nodes' polls over the period: with n
	// nodes, a deadline waits about TimerPoll/n for the next poll.
	if !sleep(ctx, rand.N(p.p.Config.TimerPoll)) {
		return
	}
	t := time.NewTicker(p.p.Config.TimerPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			due, err := p.claim(ctx)
			if err != nil {
				if ctx.Err() == nil {
					sleep(ctx, rt.fail(err))
				}
				break
			}
			rt.ok()
			for _, d := range due {
				p.p.Fire(ctx, d)
			}
			if len(due) < p.p.Config.TimerBatch {
				break
			}
		}
	}
}

// claim claims up to TimerBatch due deadlines.
func (p *Poller) claim(ctx context.Context) ([]Due, error) {
	ctx, cancel := opCtx(ctx, p.p.Config)
	defer cancel()
	res, err := claimDueScript.Run(ctx, p.p.Client, []string{p.ks.DeadlinesKey()},
		p.p.Config.TimerBatch, p.p.Config.TimerLease.Milliseconds()).Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("claim script returned %v", res)
	}
	lease, _ := res[0].(int64)
	pairs, _ := res[1].([]any)
	due := make([]Due, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		id, _ := pairs[i].(string)
		s, _ := pairs[i+1].(string)
		ms, _ := strconv.ParseFloat(s, 64)
		due = append(due, Due{ID: id, At: time.UnixMilli(int64(ms)), claim: lease})
	}
	return due, nil
}
