package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/media/opsqueue"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Conn is a connection the engine attaches (Attach, Detach): a
// protocol.Session that also takes, once, the replay of what its user
// missed. The transport (package web) implements it.
type Conn interface {
	protocol.Session
	// StartReplay hands the connection, once, right after Attach registered
	// it, what the user missed (see Replay). The connection writes the
	// replay's frames before any frame given to Deliver, pulling them as
	// fast as its client reads. It is called with the engine's lock held:
	// it must not block nor call the replay's methods.
	StartReplay(r *Replay)
}

// KickConn is a Conn whose writing of the events an operation delivers
// the engine starts itself, once it has released its lock: DeliverLater
// queues frame as Deliver does, but where Deliver would start writing it
// returns kick instead, and the engine then calls Kick, without its locks
// (the connection may write to its socket there, never waiting for it).
// The engine delivers an operation's events to a KickConn this way; every
// other delivery goes through Deliver.
type KickConn interface {
	Conn
	DeliverLater(frame []byte) (kick bool)
	Kick()
}

// except returns the connection of a that gets a reply rather than the
// event, and the user none of whose connections gets it (Actor.Silent).
func except(a protocol.Actor) (protocol.Session, string) {
	if a.Silent {
		return a.Session, a.UserID
	}
	return a.Session, ""
}

// Params are the engine's dependencies.
type Params struct {
	Config Config
	Store  Store
	Clock  protocol.Clock // nil: SystemClock
	Logger *slog.Logger   // nil: slog.Default()
	// NewID returns a fresh invitation or group ID; nil: random hex IDs.
	NewID func(prefix string) string
	// Observers are added before the stored state is loaded, so that they
	// also hear of the invitations timed out at start (AddObserver adds
	// more later).
	Observers []Observer
	// Cluster, if set, runs the engine as a node of a cluster on Redis
	// (see ClusterParams); Store must then be nil. Nil: standalone.
	Cluster *ClusterParams
}

// Engine owns every invitation, group and presence. It keeps the
// authoritative state in memory and writes through to the Store.
//
// Concurrency: mu guards every field below it. mu is never held across store
// I/O or network I/O; Conn.Deliver (a non-blocking enqueue) and
// Conn.StartReplay may be called with mu held, which keeps each user's
// events in the order in which they were decided. Replay.Next, called by a
// connection's writer, takes mu (and releases it around its store read).
// A state-changing operation is a decision (rules, see tx.go) run by do in
// three steps: decide and apply in memory under mu; commit the mutations to
// the store without mu; deliver the events under mu. If the commit fails,
// the in-memory change is undone and the caller gets ErrStoreUnavailable;
// nobody has seen an event of it.
type Engine struct {
	cfg   Config
	rules rules // the decisions of the state-changing ops (tx.go)
	store Store
	clock protocol.Clock
	log   *slog.Logger
	newID func(prefix string) string

	wg sync.WaitGroup // timer callbacks and background store writes in flight

	mu          sync.Mutex
	closed      bool
	invitations map[string]*invitation
	byInvitee   map[string]map[string]*invitation // user → pending stored invitations they are invited to
	byInviter   map[string]map[string]*invitation // user → live invitations they sent
	invMaps     invMapPool                        // emptied maps of byInvitee and byInviter
	groups      map[string]*group
	userGroups  map[string]map[string]struct{} // user → group IDs
	sessions    map[string]connList            // user → their connections on this node
	replays     map[Conn]*Replay               // connections whose replay has not ended
	known       map[string]struct{}            // users who have connected at least once
	kept        keptIndex                      // what is in the store's outbox, without the data
	outboxSeq   int64
	purgeTimer  protocol.Timer
	observers   []Observer
	presence    presence   // see presence.go
	statusWrite sync.Mutex // serializes setSelfStatus across its store write; taken before mu

	notes *opsqueue.Queue // observer calls, in decision order

	cl *clusterNode // cluster mode; nil: standalone
}

// NewEngine loads the stored state, re-arms every invitation's timer from its
// stored deadline and times out, at once, the invitations whose deadline
// passed while the server was down.
func NewEngine(ctx context.Context, p Params) (*Engine, error) {
	if p.Store == nil && p.Cluster == nil {
		return nil, errors.New("signaling: NewEngine needs a Store")
	}
	if p.Store != nil && p.Cluster != nil {
		return nil, errors.New("signaling: NewEngine takes a Store or a Cluster, not both")
	}
	e := &Engine{
		cfg:         p.Config,
		rules:       rules{cfg: p.Config},
		store:       p.Store,
		clock:       p.Clock,
		log:         p.Logger,
		newID:       p.NewID,
		invitations: make(map[string]*invitation),
		byInvitee:   make(map[string]map[string]*invitation),
		byInviter:   make(map[string]map[string]*invitation),
		groups:      make(map[string]*group),
		userGroups:  make(map[string]map[string]struct{}),
		sessions:    make(map[string]connList),
		replays:     make(map[Conn]*Replay),
		known:       make(map[string]struct{}),
		kept:        newKeptIndex(),
		notes:       opsqueue.New(),
		observers:   slices.Clone(p.Observers),
		presence:    newPresence(),
	}
	e.notes.Start()
	if e.clock == nil {
		e.clock = protocol.SystemClock{}
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.newID == nil {
		e.newID = randomID
	}
	if p.Cluster != nil {
		// The state is in Redis, read by each operation; nothing to load.
		cl, err := newClusterNode(ctx, e, *p.Cluster)
		if err != nil {
			e.notes.Close()
			return nil, fmt.Errorf("signaling: cluster node: %w", err)
		}
		e.cl, e.store = cl, cl.store
		e.log.Info("signaling engine joined the cluster", "node", p.Cluster.NodeID)
		return e, nil
	}
	snap, err := e.store.Load(ctx)
	if err != nil {
		e.notes.Close()
		return nil, fmt.Errorf("signaling: load store: %w", err)
	}
	now := e.clock.Now()
	var expired []*invitation
	e.mu.Lock()
	for _, g := range snap.Groups {
		e.putGroupLocked(groupFromRecord(g))
	}
	for _, u := range snap.Users {
		e.known[u] = struct{}{}
	}
	for u, text := range snap.CustomStatus {
		e.presence.custom[u] = text
	}
	for _, rec := range snap.Outbox {
		if rec.Seq > e.outboxSeq {
			e.outboxSeq = rec.Seq
		}
		if rec.ExpiresAt.IsZero() || rec.ExpiresAt.After(now) {
			e.kept.add(rec.UserID, keptEntry{seq: rec.Seq, sender: rec.Sender, cost: keptCost(rec.Bytes), expires: rec.ExpiresAt}, true)
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
		e.indexInviterLocked(inv)
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
		"groups", len(snap.Groups), "outbox", len(snap.Outbox), "known_users", len(snap.Users))
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
	if e.cl != nil {
		e.cl.close()
	}
	e.wg.Wait()
	e.notes.Close()
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

// Attach registers a new connection of its user and hands it (StartReplay)
// what the user missed: the events kept while none of their connections
// was open (in order), then an onReceiveNewInvitation for every stored
// invitation still ringing for the user, with the time left when it is
// sent. The first Attach of a user records them as known: only known users
// get events kept for them.
func (e *Engine) Attach(ctx context.Context, s Conn) error {
	if e.cl != nil {
		return e.cl.attach(ctx, s)
	}
	user := s.UserID()
	first, err := e.register(s)
	if err == nil && first {
		// Recorded before Attach returns (the user is served), so that it
		// survives a restart; a failure costs only kept events after a
		// restart, until the user connects again.
		if err := e.store.Apply(ctx, PutUser{UserID: user}); err != nil {
			e.log.Warn("known user not stored", "user", user, "err", err)
		}
	}
	return err
}

// addSessionLocked adds s to its user's connections, within
// limits.connections_per_user (on this node), and tells the presence
// observers when it is the user's first; n is the user's connections now.
func (e *Engine) addSessionLocked(s Conn) (n int, err error) {
	if e.closed {
		return 0, protocol.ErrShuttingDown
	}
	user := s.UserID()
	set := e.sessions[user]
	if lim := e.cfg.Limits.ConnectionsPerUser; lim > 0 && len(set) >= lim {
		return 0, protocol.ErrTooManyConnections.WithMessage("user %s already has %d connections", user, len(set))
	}
	if !slices.Contains(set, s) {
		set = append(set, s)
		e.sessions[user] = set
	}
	if len(set) == 1 && e.cl == nil { // cluster mode: clusterNode.announce
		e.notifyPresenceLocked(user, true)
	}
	return len(set), nil
}

// register adds s to its user's connections and hands it its replay; first
// reports that the user was not known.
func (e *Engine) register(s Conn) (first bool, err error) {
	user := s.UserID()
	e.mu.Lock()
	defer e.mu.Unlock()
	n, err := e.addSessionLocked(s)
	if err != nil {
		return false, err
	}
	if n == 1 {
		e.statusChangedLocked(user, false, nil)
	}
	if _, known := e.known[user]; !known {
		e.known[user] = struct{}{}
		first = true
	}
	r := &Replay{e: e, s: s, user: user}
	if box := e.kept.boxes[user]; box != nil && box.replayUpTo == 0 && len(box.entries) > 0 {
		// One connection at a time replays the kept events; they are
		// deleted once written. A connection that opens meanwhile does not
		// get them again (as one that opens later would not).
		r.upTo = box.entries[len(box.entries)-1].seq
		box.replayUpTo = r.upTo
		r.seqs = make([]int64, len(box.entries))
		for i, ent := range box.entries {
			r.seqs[i] = ent.seq
		}
	}
	for _, inv := range sortedInvitations(e.byInvitee[user]) {
		if !inv.ringing { // else its delivery reaches s
			r.invites = append(r.invites, inv.id)
		}
	}
	if r.upTo > 0 || len(r.invites) > 0 {
		e.replays[s] = r
		s.StartReplay(r)
	}
	return first, nil
}

// Detach unregisters a connection. A replay it had not finished ends: the
// kept events it did not write stay kept.
func (e *Engine) Detach(s Conn) {
	user := s.UserID()
	e.mu.Lock()
	defer e.mu.Unlock()
	if set := e.sessions[user]; set != nil {
		had := slices.Contains(set, s)
		set = set.without(s)
		e.sessions[user] = set
		if len(set) == 0 {
			delete(e.sessions, user)
			if had && e.cl == nil { // cluster mode: clusterNode.announce
				e.notifyPresenceLocked(user, false)
				e.dropSubscriptionsLocked(user)
				e.statusChangedLocked(user, false, nil)
			}
		}
	}
	if r := e.replays[s]; r != nil {
		e.endReplayLocked(r)
	}
	if e.cl != nil && e.cl.counted[s] {
		delete(e.cl.counted, s)
		last := len(e.sessions[user]) == 0
		e.mu.Unlock()
		e.cl.detach(user, last) // the registry's write, without mu
		e.mu.Lock()
	}
}

// Online reports how many connections user has open (in cluster mode, on
// the live nodes of the cluster).
func (e *Engine) Online(user string) int {
	if e.cl != nil {
		return e.cl.online(user)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions[user])
}

// connList is a user's connections on this node: a slice, not a set (a
// user has a few at most; delivery walks it for every event they get).
type connList []Conn

// without returns l less s, in place (the order of the others is kept).
func (l connList) without(s Conn) connList {
	if i := slices.Index(l, s); i >= 0 {
		l = slices.Delete(l, i, i+1)
	}
	return l
}

// ---- event delivery ----

// outgoing is one event decided by an operation, delivered after commit.
type outgoing struct {
	name   string
	data   any
	users  []string         // recipients (each user at most once)
	except protocol.Session // the actor's connection: it gets a reply instead
	silent string           // a user none of whose connections gets the event (Actor.Silent)
	keep   bool             // keep for recipients with no open connection (stored invitations)

	// lean is the data kept for offline recipients instead of data when the
	// sender's quota would refuse the full copies (an answer or a cancel
	// without its application data); nil refuses the operation instead.
	lean any

	frame   []byte
	raw     json.RawMessage  // the encoded data, once encoded
	keptRaw json.RawMessage  // the encoded data of the kept copies (raw, or lean's)
	sender  string           // whose kept bytes the copies kept for offline recipients count against
	cost    int64            // the quota cost of one kept copy
	offline map[string]int64 // recipient → outbox Seq, for those offline when decided
}

// planLocked assigns outbox sequence numbers to the known recipients that
// have no open connection now, and reserves the quota of sender (the actor,
// or the inviter of a timeout) for the copies to keep. Past a quota it
// returns the error and changes nothing, unless force (events the server
// decides, such as timeouts, are always kept: they are small and bounded by
// the pending invitations) or every event to keep has a lean form (answers
// and cancels: they are never refused for the quota; their kept copies are
// kept without the application data, bounded by the pending-invitation
// caps). The AppendOutbox mutations are made by encode; do releases the
// reservations if the commit fails.
//
// What it reads (who is online, who is known, the kept bytes) it reads
// through t, the operation's view: which copies are kept and whether the
// operation is refused belong to the decision. The reservation and the
// Seqs are the memory backend's.
func (e *Engine) planLocked(t tx, evs []*outgoing, sender string, force bool) error {
	total, err := planKept(t, evs, sender, force, e.cfg.Limits)
	if err != nil || total == 0 {
		return err
	}
	e.kept.charge(sender, total)
	numberKept(t, evs, func() int64 {
		e.outboxSeq++
		return e.outboxSeq
	})
	return nil
}

// eachKept calls f for each copy of evs to keep, in order: for each
// recipient u of an event with a kept cost (planKept) whom it is kept for.
func eachKept(t tx, evs []*outgoing, f func(ev *outgoing, u string)) {
	for _, ev := range evs {
		if ev.cost == 0 {
			continue
		}
		for _, u := range ev.users {
			if keepFor(t, u, ev) {
				f(ev, u)
			}
		}
	}
}

// numberKept gives each copy of evs to keep its outbox Seq, taken from
// next (the backend's counter).
func numberKept(t tx, evs []*outgoing, next func() int64) {
	eachKept(t, evs, func(ev *outgoing, u string) {
		if ev.offline == nil {
			ev.offline = make(map[string]int64)
		}
		ev.offline[u] = next()
	})
}

// planKept is the decision part of the planning, shared by the backends:
// it encodes the copies to keep (their lean form past a quota, when every
// event to keep has one) and returns their total cost, or the quota's
// error (see planLocked).
func planKept(t tx, evs []*outgoing, sender string, force bool, lim Limits) (int64, error) {
	counts := make([]int, len(evs))
	total, err := sizeKept(t, evs, counts, sender, false)
	if err != nil || total == 0 {
		return total, err
	}
	if !force {
		mine, all := t.keptBytes(sender)
		if err := checkKept(mine, all, total, lim); err != nil {
			lean := true
			for i, ev := range evs {
				if counts[i] > 0 && ev.lean == nil {
					lean = false
				}
			}
			if !lean {
				for _, ev := range evs {
					ev.raw, ev.keptRaw, ev.cost = nil, nil, 0
				}
				return 0, err
			}
			if total, err = sizeKept(t, evs, counts, sender, true); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

// sizeKept encodes the kept copies of each event (its lean form if lean),
// counts the recipients to keep them for into counts, and returns their
// total quota cost.
func sizeKept(t tx, evs []*outgoing, counts []int, sender string, lean bool) (int64, error) {
	var total int64
	for i, ev := range evs {
		if !ev.keep {
			continue
		}
		n := 0
		for _, u := range ev.users {
			if keepFor(t, u, ev) {
				n++
			}
		}
		counts[i] = n
		if n == 0 {
			continue
		}
		data := ev.data
		if lean {
			data = ev.lean
		}
		raw, err := protocol.MarshalData(data)
		if err != nil {
			return 0, fmt.Errorf("signaling: encode %s: %w", ev.name, err)
		}
		ev.keptRaw, ev.sender, ev.cost = raw, sender, keptCost(len(ev.name)+len(raw))
		if !lean {
			ev.raw = raw
		}
		total += ev.cost * int64(n)
	}
	return total, nil
}

// keepFor reports whether ev is to be kept for recipient u: a known user
// (one who has connected at least once) with no open connection.
func keepFor(t tx, u string, ev *outgoing) bool {
	return u != ev.silent && !t.online(u) && t.known(u)
}

func (e *Engine) isKnownLocked(u string) bool {
	_, ok := e.known[u]
	return ok
}

// unplanLocked releases the reservations of planLocked (the commit failed).
func (e *Engine) unplanLocked(evs []*outgoing) {
	for _, ev := range evs {
		if n := len(ev.offline); n > 0 {
			e.kept.release(ev.sender, ev.cost*int64(n))
		}
	}
}

// encode renders each event's frame and returns the outbox mutations.
// It runs without mu.
func (e *Engine) encode(evs []*outgoing, now time.Time) ([]Mutation, error) {
	var muts []Mutation
	for _, ev := range evs {
		data := ev.raw
		if data == nil {
			var err error
			if data, err = protocol.MarshalData(ev.data); err != nil {
				return nil, fmt.Errorf("signaling: encode %s: %w", ev.name, err)
			}
			ev.raw = data
		}
		ev.frame = protocol.EncodeEventRaw(ev.name, data) // data is json.Marshal's
		kept := ev.keptRaw
		if kept == nil {
			kept = data
		}
		for u, seq := range ev.offline {
			muts = append(muts, AppendOutbox{Entry: e.outboxEntry(u, seq, ev.sender, ev.name, kept, now)})
		}
	}
	return muts, nil
}

func (e *Engine) outboxEntry(user string, seq int64, sender, name string, data json.RawMessage, now time.Time) OutboxEntry {
	return OutboxEntry{UserID: user, Seq: seq, Sender: sender, Event: name, Data: data, CreatedAt: now, ExpiresAt: now.Add(e.cfg.OfflineEventTTL)}
}

// deliverLocked hands each event to its recipients' connections open now.
// A recipient kept offline at decision time who has connected since gets the
// event live (and its stored copy is deleted); a recipient who was online at
// decision time but has no connection now gets it kept in the outbox.
//
// The connections to kick (KickConn) are appended to kicks; the caller
// kicks them once it has released mu.
func (e *Engine) deliverLocked(evs []*outgoing, now time.Time, kicks []KickConn) []KickConn {
	for _, ev := range evs {
		for _, u := range ev.users {
			if u == ev.silent {
				continue
			}
			set := e.sessions[u]
			for _, s := range set {
				if s == ev.except {
					continue
				}
				if k, ok := s.(KickConn); ok {
					if k.DeliverLater(ev.frame) {
						kicks = append(kicks, k)
					}
					continue
				}
				s.Deliver(ev.frame)
			}
			seq, wasOffline := ev.offline[u]
			switch {
			case wasOffline && len(set) > 0:
				e.kept.release(ev.sender, ev.cost)
				e.goBestEffortLocked(DeleteOutboxEntry{UserID: u, Seq: seq})
			case wasOffline:
				e.keepLocked(u, keptEntry{seq: seq, sender: ev.sender, cost: ev.cost, expires: now.Add(e.cfg.OfflineEventTTL)})
			case ev.keep && len(set) == 0 && (ev.except == nil || ev.except.UserID() != u) && e.isKnownLocked(u):
				// Online when decided, gone since: kept without a quota
				// check (the operation has succeeded), charged all the same.
				e.outboxSeq++
				data := eventData(ev.frame)
				ent := e.outboxEntry(u, e.outboxSeq, ev.sender, ev.name, data, now)
				cost := keptCost(ent.Bytes())
				e.kept.charge(ev.sender, cost)
				e.keepLocked(u, keptEntry{seq: ent.Seq, sender: ev.sender, cost: cost, expires: ent.ExpiresAt})
				e.goBestEffortLocked(AppendOutbox{Entry: ent})
			}
		}
	}
	return kicks
}

// eventData extracts the data of an encoded event frame.
func eventData(frame []byte) json.RawMessage {
	var f struct {
		Data json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(frame, &f)
	return f.Data
}

// keepLocked adds a committed entry to user's index; past
// limits.max_offline_events the oldest entries are dropped.
func (e *Engine) keepLocked(user string, ent keptEntry) {
	e.kept.add(user, ent, false)
	if lim := e.cfg.Limits.MaxOfflineEvents; lim > 0 {
		var muts []Mutation
		for _, seq := range e.kept.dropOldest(user, lim) {
			muts = append(muts, DeleteOutboxEntry{UserID: user, Seq: seq})
		}
		e.goBestEffortLocked(muts...)
	}
}

// goBestEffortLocked applies muts in the background, unless there are none
// or the engine is closed (Close waits for the writes in flight).
func (e *Engine) goBestEffortLocked(muts ...Mutation) {
	if e.closed || len(muts) == 0 {
		return
	}
	e.wg.Add(1)
	go e.bestEffort(muts...)
}

// bestEffort applies a mutation whose failure loses nothing essential.
func (e *Engine) bestEffort(muts ...Mutation) {
	defer e.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.store.Apply(ctx, muts...); err != nil {
		e.log.Warn("background store write failed", "mutation", fmt.Sprintf("%T", muts[0]), "n", len(muts), "err", err)
	}
}

// commit writes muts; a failure becomes ErrStoreUnavailable.
func (e *Engine) commit(ctx context.Context, muts []Mutation) error {
	if len(muts) == 0 {
		return nil
	}
	if err := e.store.Apply(ctx, muts...); err != nil {
		if errors.Is(err, protocol.ErrGroupExists) {
			return protocol.ErrGroupExists
		}
		e.log.Error("store write failed", "err", err)
		return protocol.ErrStoreUnavailable
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
		e.kept.dropExpired(now)
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
func (e *Engine) afterLocked(d time.Duration, f func()) protocol.Timer {
	e.wg.Add(1)
	return &trackedTimer{e: e, t: e.clock.AfterFunc(d, func() {
		defer e.wg.Done()
		f()
	})}
}

type trackedTimer struct {
	e *Engine
	t protocol.Timer
}

func (t *trackedTimer) Stop() bool {
	if t.t.Stop() {
		t.e.wg.Done()
		return true
	}
	return false
}
