package signaling

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// sqliteReq is one Apply call waiting for the writer. state moves from
// reqQueued to reqTaken (the writer will answer on done) or to reqAbandoned
// (the caller's ctx ended first; the writer skips it), never back.
type sqliteReq struct {
	ctx   context.Context
	muts  []Mutation
	state atomic.Int32
	err   error      // the call's own result, set by the writer
	done  chan error // capacity 1, so the writer never blocks on it
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// Apply implements Store. It returns once the mutations are committed, or
// failed. A ctx that ends while the call is still queued withdraws it (it is
// then never applied); once the writer has taken it, Apply waits for the
// outcome, which is bounded by the busy timeout. Applying to a missing
// invitation, invitee or group (SetInviteeState, SetInvitationData,
// AddGroupMembers, RemoveGroupMembers, Delete*) is a no-op, not an error.
func (s *SQLiteStore) Apply(ctx context.Context, muts ...Mutation) error {
	if err := sqliteCtxErr(ctx); err != nil {
		return err
	}
	r := &sqliteReq{ctx: ctx, muts: muts, done: make(chan error, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errSQLiteClosed
	}
	if len(muts) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return fmt.Errorf("signaling: sqlite store: apply: %w", ctx.Err())
		}
		return <-r.done
	}
}

// runWriter is the writer goroutine. It ends when the store is closed and
// the queue is empty.
func (s *SQLiteStore) runWriter() {
	defer close(s.writerDone)
	defer s.dropConn()
	buf := make([]*sqliteReq, 0, sqliteMaxBatch)
	for {
		// Let the goroutines that are ready to run go first (requests being
		// decided: they are about to call Apply), so that they join this
		// batch rather than each waiting for a commit of its own. With
		// nothing else ready this returns at once; under load it is what
		// makes the batches grow (issue 16: 1.7 calls per commit at the
		// bench's max rate without it, 13-14 with it).
		runtime.Gosched()
		s.gather()
		batch, last := s.take(buf)
		if len(batch) > 0 {
			// Until it succeeds, this is tried again before each batch.
			if s.walState.Load() == walTooLong {
				if s.checkpointInWriter() {
					s.walState.CompareAndSwap(walTooLong, walShort)
				} else {
					s.tooLongMissed.Add(1)
				}
			}
			s.runBatch(batch)
			clear(batch)
			continue
		}
		if last {
			return
		}
		if st := s.walState.Load(); st != walShort {
			// Nobody is waiting: the best time. Calls that arrive
			// meanwhile are taken next. If another connection's checkpoint
			// was in the way, a long WAL waits for the checkpointer to ask
			// again (it checkpoints meanwhile), a too long one for the next
			// batch.
			if s.checkpointInWriter() || st == walLong {
				s.walState.CompareAndSwap(st, walShort)
				continue
			}
		}
		select {
		case <-s.wake:
		case <-s.closing:
		}
	}
}

// gather is the writer's group-commit wait (store.commit_wait,
// store.commit_batch): while calls arrive faster than one per commit_wait
// (the last commit ended less than commit_wait ago), a transaction that
// would hold fewer than commit_batch calls waits up to commit_wait, from
// when the writer finds its first call, for more to arrive. Each
// transaction costs about the same whatever it holds (BEGIN and COMMIT,
// the locks' system calls, and the scheduler's and sysmon's wake-ups around
// them: at 1,500 call setups a second, about one transaction per setup
// without the wait), so under load fewer, larger ones cost less CPU per
// call (issue 16). Calls after an idle spell are committed at once, and a
// wait that gathered nothing (a caller that waits for each commit before
// its next call) turns the wait off for gatherBackoff waits' time. Every
// call is still answered only after its COMMIT.
func (s *SQLiteStore) gather() {
	if s.commitWait <= 0 || s.commitMin <= 1 {
		return
	}
	s.mu.Lock()
	n, closed := len(s.queue), s.closed
	s.mu.Unlock()
	now := time.Now()
	if n == 0 || n >= s.commitMin || closed || now.Sub(s.lastCommit) >= s.commitWait || now.Before(s.gatherOff) {
		return
	}
	if s.gatherTimer == nil {
		s.gatherTimer = time.NewTimer(s.commitWait)
	} else {
		s.gatherTimer.Reset(s.commitWait)
	}
	defer s.gatherTimer.Stop()
	first := n
	for {
		select {
		case <-s.wake:
		case <-s.gatherTimer.C:
			if s.queueLen() <= first {
				s.gatherOff = time.Now().Add(gatherBackoff * s.commitWait)
			}
			return
		case <-s.closing:
			return
		}
		if s.queueLen() >= s.commitMin {
			return
		}
	}
}

// gatherBackoff: after a group-commit wait that gathered nothing, the
// writer does not wait for this many commit_waits.
const gatherBackoff = 64

// take moves up to sqliteMaxBatch queued calls into buf. last reports that
// the store is closed and nothing is left, so no call can arrive any more.
func (s *SQLiteStore) take(buf []*sqliteReq) (batch []*sqliteReq, last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), sqliteMaxBatch)
	batch = append(buf[:0], s.queue[:n]...)
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return batch, s.closed && len(batch) == 0
}

// queueLen is the number of calls waiting for the writer.
func (s *SQLiteStore) queueLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// runBatch commits the calls of batch that are still wanted in one
// transaction and answers each of them.
func (s *SQLiteStore) runBatch(batch []*sqliteReq) {
	live := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(reqQueued, reqTaken) {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	s.taken.Add(int64(len(live)))
	err := s.commitBatch(live)
	s.lastCommit = time.Now()
	for _, r := range live {
		// A call that failed on its own keeps its error: it applied nothing
		// either way, and its own reason is the more useful one.
		if r.err == nil {
			r.err = err
		}
		r.done <- r.err
	}
}

// commitBatch runs reqs in one transaction, setting each call's own result
// in r.err. It returns the error that fails the whole batch (connection,
// BEGIN, savepoint handling or COMMIT), after rolling back.
func (s *SQLiteStore) commitBatch(reqs []*sqliteReq) (err error) {
	ctx := context.Background() // the batch serves several callers; none may cancel it
	if s.conn == nil {
		if s.conn, err = s.wdb.Conn(ctx); err != nil {
			s.conn = nil
			return sqliteErr("connect", err)
		}
		s.stmts = make(map[string]*sql.Stmt)
		// Checkpoints are the checkpointer's (runCheckpointer), not the
		// COMMIT's.
		if _, err := s.conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
			s.dropConn()
			return sqliteErr("connect", err)
		}
		if s.connHook != nil {
			if err := s.connHook(ctx, s.conn); err != nil {
				s.dropConn()
				return sqliteErr("connect", err)
			}
		}
	}
	if err := s.exec(ctx, sqlBegin); err != nil {
		s.dropConn()
		return sqliteErr("begin", err)
	}
	// suspect is set by a failure that may have left the connection in a
	// bad state (I/O, read-only, full): it is replaced after the batch.
	suspect := false
	defer func() {
		if err != nil {
			if !sqliteLogical(err) {
				suspect = true
			}
			if rerr := s.exec(ctx, sqlRollback); rerr != nil {
				suspect = true
			}
		}
		if suspect {
			s.dropConn()
		}
	}()

	ok := 0
	if len(reqs) == 1 {
		// No savepoint needed: the transaction is the call.
		r := reqs[0]
		if r.err = sqliteCtxErr(r.ctx); r.err == nil {
			r.err = s.applyAll(ctx, r.muts)
		}
		if r.err == nil {
			ok++
		} else if !sqliteLogical(r.err) {
			suspect = true
		}
	} else {
		// First without savepoints, two statements per call fewer: a call
		// failing is rare (a taken group id, an I/O error). When one fails,
		// the transaction is rolled back and run again with a savepoint
		// around each call, so that the failing call is rolled back alone.
		failed := false
		for _, r := range reqs {
			if r.err = sqliteCtxErr(r.ctx); r.err != nil {
				continue // the caller is waiting but no longer wants it done
			}
			if r.err = s.applyAll(ctx, r.muts); r.err != nil {
				failed = true
				break
			}
			ok++
		}
		if failed {
			s.batchRetries.Add(1)
			if err := s.exec(ctx, sqlRollback); err != nil {
				return sqliteErr("rollback", err)
			}
			if err := s.exec(ctx, sqlBegin); err != nil {
				return sqliteErr("begin", err)
			}
			ok = 0
			for _, r := range reqs {
				if r.err = sqliteCtxErr(r.ctx); r.err != nil {
					continue
				}
				s.savepoints.Add(1)
				if err := s.exec(ctx, sqlSavepoint); err != nil {
					return sqliteErr("savepoint", err)
				}
				r.err = s.applyAll(ctx, r.muts)
				if r.err != nil {
					if !sqliteLogical(r.err) {
						suspect = true
					}
					if err := s.exec(ctx, sqlRollbackTo); err != nil {
						// SQLite rolls back the whole transaction on some
						// errors (SQLITE_FULL, SQLITE_IOERR): the savepoint is
						// gone and so is the work of the calls before.
						return sqliteErr("rollback to savepoint", err)
					}
				} else {
					ok++
				}
				if err := s.exec(ctx, sqlRelease); err != nil {
					return sqliteErr("release savepoint", err)
				}
			}
		}
	}
	if ok == 0 {
		if err := s.exec(ctx, sqlRollback); err != nil {
			suspect = true
		}
		return nil
	}
	if err := s.exec(ctx, sqlCommit); err != nil {
		return sqliteErr("commit", err)
	}
	s.commits.Add(1)
	return nil
}

// sqliteCtxErr reports whether the caller of a taken call has gone away.
func sqliteCtxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("signaling: sqlite store: apply: %w", err)
	}
	return nil
}

// dropConn closes the writer's connection; the next batch opens a new one.
func (s *SQLiteStore) dropConn() {
	if s.conn == nil {
		return
	}
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmts = nil
	// Returning ErrBadConn from Raw makes database/sql close the connection
	// instead of returning it to the pool, where it could still hold a file
	// opened read-only or an open transaction.
	_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.conn.Close()
	s.conn = nil
}

// exec runs q, prepared once per connection, on the writer's connection.
func (s *SQLiteStore) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.execResult(ctx, q, args...)
	return err
}

func (s *SQLiteStore) execResult(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st := s.stmts[q]
	if st == nil {
		var err error
		if st, err = s.conn.PrepareContext(ctx, q); err != nil {
			return nil, err
		}
		s.stmts[q] = st
	}
	return st.ExecContext(ctx, args...)
}

// runCheckpointer is the checkpointer goroutine: every ckptEvery, if
// something was committed since its last checkpoint, it checkpoints the WAL
// (PASSIVE: alongside the writer, never waiting for it) on a connection of
// the pool, and asks the writer to finish the job (walState) once the WAL
// holds walMaxFrames. It ends when the store closes.
func (s *SQLiteStore) runCheckpointer() {
	defer close(s.checkpointerDone)
	t := time.NewTicker(s.ckptEvery)
	defer t.Stop()
	var done int64 // commits checkpointed
	failing := false
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		c := s.commits.Load()
		if c == done || s.walState.Load() == walTooLong {
			// Nothing new; or the writer is to checkpoint before its next
			// transaction, and a checkpoint here would be in its way: only
			// one connection at a time checkpoints, and SQLite does not
			// wait for the other (PASSIVE or not), so the writer's would
			// fail and the WAL grow by another batch (issue 16).
			continue
		}
		var busy, log, ckpt int64
		err := s.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &ckpt)
		if err != nil {
			if !failing {
				s.log.Warn("sqlite checkpoint failed; the writer checkpoints, and this is retried", "err", err)
			}
			failing = true
			s.walState.CompareAndSwap(walShort, walLong)
			s.nudgeWriter()
			continue
		}
		failing = false
		done = c
		switch {
		case log >= 2*s.walMaxFrames:
			s.walState.Store(walTooLong)
		case log >= s.walMaxFrames:
			s.walState.CompareAndSwap(walShort, walLong)
		default:
			continue
		}
		s.nudgeWriter()
	}
}

// nudgeWriter wakes the writer if it waits, so that it sees walState.
func (s *SQLiteStore) nudgeWriter() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// checkpointInWriter checkpoints on the writer's connection, between two
// transactions: no commit can overtake it, so the WAL starts over at the
// next one. It reports whether the checkpoint was made: it is not when
// another connection was checkpointing (SQLite then returns at once, with
// busy set) or on a failure; the WAL is only left long.
func (s *SQLiteStore) checkpointInWriter() bool {
	if s.conn == nil {
		return false
	}
	var busy, log, ckpt int64
	err := s.conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &ckpt)
	switch {
	case err != nil:
		s.log.Warn("sqlite checkpoint failed; retried", "err", err)
		return false
	case busy != 0:
		return false
	}
	return true
}
