package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Session is one open connection of a user, as the engine sees it. The
// transport (package web) implements it.
type Session interface {
	UserID() string
	// Deliver queues one encoded event frame for the connection. It must
	// not block: a connection whose queue is full is closed by its owner.
	Deliver(frame []byte)
}

// Actor is who performs an operation: a user on one of their connections,
// or the server acting for a user (Session nil).
type Actor struct {
	UserID  string
	Session Session
	// Silent: none of the actor's own connections gets the event of this
	// operation (the server acted for the user, e.g. a busy line, and tells
	// them in its own way).
	Silent bool
}

// except returns the connection that gets a reply rather than the event,
// and the user none of whose connections gets it (Silent).
func (a Actor) except() (Session, string) {
	if a.Silent {
		return a.Session, a.UserID
	}
	return a.Session, ""
}

// Params are the engine's dependencies.
type Params struct {
	Config Config
	Store  Store
	Clock  Clock        // nil: SystemClock
	Logger *slog.Logger // nil: slog.Default()
	// NewID returns a fresh invitation or group ID; nil: random hex IDs.
	NewID func(prefix string) string
}

// Engine owns every invitation, group and presence. It keeps the
// authoritative state in memory and writes through to the Store.
//
// Concurrency: mu guards every field below it. mu is never held across store
// I/O or network I/O; Session.Deliver (a non-blocking enqueue) may be called
// with mu held, which keeps each user's events in the order in which they
// were decided. An operation runs in three steps: decide and apply in memory
// under mu; commit the mutations to the store without mu; deliver the events
// under mu. If the commit fails, the in-memory change is undone and the
// caller gets ErrStoreUnavailable; nobody has seen an event of it.
type Engine struct {
	cfg   Config
	store Store
	clock Clock
	log   *slog.Logger
	newID func(prefix string) string

	wg sync.WaitGroup // timer callbacks and background store writes in flight

	mu          sync.Mutex
	closed      bool
	invitations map[string]*invitation
	byInvitee   map[string]map[string]*invitation // user → pending stored invitations they are invited to
	groups      map[string]*group
	userGroups  map[string]map[string]struct{} // user → group IDs
	sessions    map[string]map[Session]struct{}
	outbox      map[string][]OutboxEntry // committed entries, ordered by Seq
	outboxSeq   int64
	purgeTimer  Timer
	observers   []Observer

	notes *noteQueue // observer calls, in decision order
}

// NewEngine loads the stored state, re-arms every invitation's timer from its
// stored deadline and times out, at once, the invitations whose deadline
// passed while the server was down.
func NewEngine(ctx context.Context, p Params) (*Engine, error) {
	if p.Store == nil {
		return nil, errors.New("signaling: NewEngine needs a Store")
	}
	e := &Engine{
		cfg:         p.Config,
		store:       p.Store,
		clock:       p.Clock,
		log:         p.Logger,
		newID:       p.NewID,
		invitations: make(map[string]*invitation),
		byInvitee:   make(map[string]map[string]*invitation),
		groups:      make(map[string]*group),
		userGroups:  make(map[string]map[string]struct{}),
		sessions:    make(map[string]map[Session]struct{}),
		outbox:      make(map[string][]OutboxEntry),
		notes:       newNoteQueue(),
	}
	if e.clock == nil {
		e.clock = SystemClock{}
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.newID == nil {
		e.newID = randomID
	}
	snap, err := e.store.Load(ctx)
	if err != nil {
		e.notes.close()
		return nil, fmt.Errorf("signaling: load store: %w", err)
	}
	now := e.clock.Now()
	var expired []*invitation
	e.mu.Lock()
	for _, g := range snap.Groups {
		e.putGroupLocked(groupFromRecord(g))
	}
	for _, rec := range snap.Outbox {
		if rec.Seq > e.outboxSeq {
			e.outboxSeq = rec.Seq
		}
		if rec.ExpiresAt.After(now) {
			e.appendOutboxLocked(rec)
		}
	}
	for _, rec := range snap.Invitations {
		inv := invitationFromRecord(rec)
		if inv.allFinal() {
			// Ended but not deleted (a crash between the two): finish the job.
			e.wg.Add(1)
			go e.bestEffort(DeleteInvitation{InviteID: inv.id})
			continue
		}
		e.invitations[inv.id] = inv
		e.indexInviteesLocked(inv)
		switch {
		case inv.deadline.IsZero():
		case !inv.deadline.After(now):
			expired = append(expired, inv)
		default:
			e.armTimerLocked(inv)
		}
	}
	e.schedulePurgeLocked()
	e.mu.Unlock()
	// Time out, before serving, what expired while the server was down.
	for _, inv := range expired {
		e.fireTimeout(inv)
	}
	e.log.Info("signaling engine loaded",
		"invitations", len(snap.Invitations), "expired_while_down", len(expired),
		"groups", len(snap.Groups), "outbox", len(snap.Outbox))
	return e, nil
}

// Close stops every timer and waits for callbacks in flight. The store is
// not closed: it belongs to the caller.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	for _, inv := range e.invitations {
		if inv.timer != nil {
			inv.timer.Stop()
			inv.timer = nil
		}
	}
	if e.purgeTimer != nil {
		e.purgeTimer.Stop()
		e.purgeTimer = nil
	}
	e.mu.Unlock()
	e.wg.Wait()
	e.notes.close()
}

// NewID returns a fresh random ID with prefix, like the engine's own.
func (e *Engine) NewID(prefix string) string { return e.newID(prefix) }

func randomID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + hex.EncodeToString(b[:])
}

// ---- presence ----

// Attach registers a new connection of its user and delivers, on it, the
// events the user missed while offline (in order), then an
// onReceiveNewInvitation for every stored invitation still ringing for the
// user, with the time left.
func (e *Engine) Attach(ctx context.Context, s Session) error {
	user := s.UserID()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrShuttingDown
	}
	set := e.sessions[user]
	if lim := e.cfg.Limits.ConnectionsPerUser; lim > 0 && len(set) >= lim {
		e.mu.Unlock()
		return ErrTooManyConnections.WithMessage("user %s already has %d connections", user, len(set))
	}
	if set == nil {
		set = make(map[Session]struct{})
		e.sessions[user] = set
	}
	set[s] = struct{}{}
	now := e.clock.Now()
	var upTo int64
	for _, ent := range e.outbox[user] {
		upTo = ent.Seq
		if ent.ExpiresAt.After(now) {
			if frame, err := json.Marshal(EventFrame{Event: ent.Event, Data: ent.Data}); err == nil {
				s.Deliver(frame)
			}
		}
	}
	delete(e.outbox, user)
	for _, inv := range sortedInvitations(e.byInvitee[user]) {
		if inv.stateOf(user) == StatePending {
			if frame, err := EncodeEvent(EvReceiveNewInvitation, inv.newInvitationEvent(now)); err == nil {
				s.Deliver(frame)
			}
		}
	}
	e.mu.Unlock()
	if upTo > 0 {
		if err := e.store.Apply(ctx, DeleteOutbox{UserID: user, UpTo: upTo}); err != nil {
			// The events were delivered; they may be delivered again after a restart.
			e.log.Warn("outbox delete failed", "user", user, "err", err)
		}
	}
	return nil
}

// Detach unregisters a connection.
func (e *Engine) Detach(s Session) {
	user := s.UserID()
	e.mu.Lock()
	defer e.mu.Unlock()
	if set := e.sessions[user]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(e.sessions, user)
		}
	}
}

// Online reports how many connections user has open.
func (e *Engine) Online(user string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions[user])
}

// ---- event delivery ----

// outgoing is one event decided by an operation, delivered after commit.
type outgoing struct {
	name   string
	data   any
	users  []string // recipients (each user at most once)
	except Session  // the actor's connection: it gets a reply instead
	silent string   // a user none of whose connections gets the event (Actor.Silent)
	keep   bool     // keep for recipients with no open connection (stored invitations)

	frame   []byte
	offline map[string]int64 // recipient → outbox Seq, for those offline when decided
}

// planLocked assigns outbox sequence numbers to the recipients that have no
// open connection now; it returns the AppendOutbox mutations to commit
// together with the operation, after encoding.
func (e *Engine) planLocked(evs []*outgoing) {
	for _, ev := range evs {
		if !ev.keep {
			continue
		}
		for _, u := range ev.users {
			if u == ev.silent {
				continue
			}
			if len(e.sessions[u]) == 0 {
				if ev.offline == nil {
					ev.offline = make(map[string]int64)
				}
				e.outboxSeq++
				ev.offline[u] = e.outboxSeq
			}
		}
	}
}

// encode renders each event's frame and returns the outbox mutations.
// It runs without mu.
func (e *Engine) encode(evs []*outgoing, now time.Time) ([]Mutation, error) {
	var muts []Mutation
	for _, ev := range evs {
		data, err := json.Marshal(ev.data)
		if err != nil {
			return nil, fmt.Errorf("signaling: encode %s: %w", ev.name, err)
		}
		ev.frame, err = json.Marshal(EventFrame{Event: ev.name, Data: json.RawMessage(data)})
		if err != nil {
			return nil, err
		}
		for u, seq := range ev.offline {
			muts = append(muts, AppendOutbox{Entry: e.outboxEntry(u, seq, ev.name, data, now)})
		}
	}
	return muts, nil
}

func (e *Engine) outboxEntry(user string, seq int64, name string, data json.RawMessage, now time.Time) OutboxEntry {
	return OutboxEntry{UserID: user, Seq: seq, Event: name, Data: data, CreatedAt: now, ExpiresAt: now.Add(e.cfg.OfflineEventTTL)}
}

// deliverLocked hands each event to its recipients' connections open now.
// A recipient kept offline at decision time who has connected since gets the
// event live (and its stored copy is deleted); a recipient who was online at
// decision time but has no connection now gets it kept in the outbox.
func (e *Engine) deliverLocked(evs []*outgoing, now time.Time) {
	for _, ev := range evs {
		for _, u := range ev.users {
			if u == ev.silent {
				continue
			}
			set := e.sessions[u]
			for s := range set {
				if s != ev.except {
					s.Deliver(ev.frame)
				}
			}
			seq, wasOffline := ev.offline[u]
			switch {
			case wasOffline && len(set) > 0:
				e.wg.Add(1)
				go e.bestEffort(DeleteOutbox{UserID: u, UpTo: seq})
			case wasOffline:
				e.appendOutboxLocked(e.outboxEntry(u, seq, ev.name, eventData(ev.frame), now))
			case ev.keep && len(set) == 0 && (ev.except == nil || ev.except.UserID() != u):
				e.outboxSeq++
				ent := e.outboxEntry(u, e.outboxSeq, ev.name, eventData(ev.frame), now)
				e.appendOutboxLocked(ent)
				e.wg.Add(1)
				go e.bestEffort(AppendOutbox{Entry: ent})
			}
		}
	}
}

// eventData extracts the data of an encoded event frame.
func eventData(frame []byte) json.RawMessage {
	var f struct {
		Data json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(frame, &f)
	return f.Data
}

func (e *Engine) appendOutboxLocked(ent OutboxEntry) {
	q := append(e.outbox[ent.UserID], ent)
	if lim := e.cfg.Limits.MaxOfflineEvents; lim > 0 && len(q) > lim {
		q = append(q[:0:0], q[len(q)-lim:]...)
	}
	e.outbox[ent.UserID] = q
}

// bestEffort applies a mutation whose failure loses nothing essential.
func (e *Engine) bestEffort(m Mutation) {
	defer e.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.store.Apply(ctx, m); err != nil {
		e.log.Warn("background store write failed", "mutation", fmt.Sprintf("%T", m), "err", err)
	}
}

// commit writes muts; a failure becomes ErrStoreUnavailable.
func (e *Engine) commit(ctx context.Context, muts []Mutation) error {
	if len(muts) == 0 {
		return nil
	}
	if err := e.store.Apply(ctx, muts...); err != nil {
		if errors.Is(err, ErrGroupExists) {
			return ErrGroupExists
		}
		e.log.Error("store write failed", "err", err)
		return ErrStoreUnavailable
	}
	return nil
}

// finish is finishNote without a note.
func (e *Engine) finish(ctx context.Context, muts []Mutation, evs []*outgoing, undo func()) error {
	return e.finishNote(ctx, muts, evs, undo, nil)
}

// finishNote commits an operation's mutations with its events' outbox entries,
// then delivers the events and queues note for the observers. On failure it
// calls undo under mu.
func (e *Engine) finishNote(ctx context.Context, muts []Mutation, evs []*outgoing, undo func(), note *InvitationNote) error {
	now := e.clock.Now()
	outMuts, err := e.encode(evs, now)
	if err == nil {
		err = e.commit(ctx, append(muts, outMuts...))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		if undo != nil {
			undo()
		}
		return err
	}
	e.deliverLocked(evs, now)
	if note != nil {
		note.At = now
		e.notifyLocked(*note)
	}
	return nil
}

// ---- purge of expired outbox entries ----

const purgeInterval = 10 * time.Minute

func (e *Engine) schedulePurgeLocked() {
	if e.closed {
		return
	}
	e.purgeTimer = e.afterLocked(purgeInterval, func() {
		e.mu.Lock()
		now := e.clock.Now()
		for u, q := range e.outbox {
			keep := q[:0]
			for _, ent := range q {
				if ent.ExpiresAt.After(now) {
					keep = append(keep, ent)
				}
			}
			if len(keep) == 0 {
				delete(e.outbox, u)
			} else {
				e.outbox[u] = keep
			}
		}
		closed := e.closed
		e.schedulePurgeLocked()
		e.mu.Unlock()
		if !closed {
			e.wg.Add(1)
			e.bestEffort(PurgeOutbox{Before: now})
		}
	})
}

// afterLocked arms a timer whose callback Close waits for.
func (e *Engine) afterLocked(d time.Duration, f func()) Timer {
	e.wg.Add(1)
	return &trackedTimer{e: e, t: e.clock.AfterFunc(d, func() {
		defer e.wg.Done()
		f()
	})}
}

type trackedTimer struct {
	e *Engine
	t Timer
}

func (t *trackedTimer) Stop() bool {
	if t.t.Stop() {
		t.e.wg.Done()
		return true
	}
	return false
}
