package roomcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/cluster"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Bounds of the relay.
const (
	// maxHops bounds the "moved" re-forwards of one enterRoom.
	maxHops = 3
	// sendQueue bounds the entries waiting to be written to one node's
	// stream; past it an entry is dropped (and logged).
	sendQueue = 4096
	// sendBatch is the most entries one pipeline writes.
	sendBatch = 128
	// sessionQueue bounds the requests of one remote session waiting to
	// run on the media node; past it a request is refused (rate_limited).
	sessionQueue = 64
	// streamTTL is how long a relay stream lives without being written
	// to: a dead node's stream goes away.
	streamTTL = time.Minute
	// readBlock is how long one XREAD waits; Close waits at most about
	// this long for the reader.
	readBlock = 500 * time.Millisecond
	// flushWait bounds the last writes of the senders at Close.
	flushWait = 2 * time.Second
)

// Entry kinds of a relay stream (field "k").
const (
	kindRequest = "q"
	kindReply   = "r"
	kindEvent   = "e"
	kindClosed  = "c"
)

// opGrantSeat is the relay's internal op: rooms.Manager.GrantSeat on the
// room's media node (calls' mic invitations, item 6).
const opGrantSeat = "_grantSeat"

// Metrics counts relayed messages. *metrics.Metrics implements it.
type Metrics interface {
	// RoomRelayMessage counts one message of kind (request, reply, event,
	// closed) sent or received (dir).
	RoomRelayMessage(kind, dir string)
}

// Params are the relay's dependencies.
type Params struct {
	Client redis.UniversalClient // the cluster's Redis; owned by the caller
	Prefix string                // cluster.redis.key_prefix
	NodeID string                // this node's ID (the engine's)
	Config cluster.Config        // node_ttl, op_timeout, stream_max_len, stream_batch, max_backoff
	Rooms  *rooms.Manager        // this node's rooms (its SFU)
	// MaxRoomsPerUser is limits.max_rooms_per_user, enforced cluster-wide
	// in the claim; 0: no limit.
	MaxRoomsPerUser int
	// RequestTimeout bounds a forwarded request that has no deadline of
	// its own (the server's request timeout).
	RequestTimeout time.Duration
	Metrics        Metrics // nil: not counted
	Logger         *slog.Logger
}

// Relay is a node's part of the rooms across nodes: placement, the relay
// of requests, replies and events, remote sessions and the watches of
// node liveness.
type Relay struct {
	p     Params
	rdb   redis.UniversalClient
	k     keys
	self  string
	cfg   cluster.Config
	log   *slog.Logger
	local map[string]protocol.OpFunc // the rooms' own ops (Ops)
	// placeFn is place (a seam: tests force a placement).
	placeFn atomic.Pointer[placeFunc]
	// connTag makes this process's connection IDs unique across restarts
	// of a node with a fixed node ID.
	connTag string

	ctx    context.Context // ended by Close: the loops and the requests running here end
	cancel context.CancelFunc
	flush  chan struct{} // closed by Close: the senders write what they hold (until flushBy) and end
	wg     sync.WaitGroup

	lastFail atomic.Int64 // Unix ms of this relay's last failed Redis call
	flushBy  atomic.Int64 // Unix ms: the senders' last writes at Close end by then
	nextID   atomic.Uint64

	// mu guards the fields below; never held across Redis I/O or a call
	// into rooms.
	mu       sync.Mutex
	started  bool
	closing  bool // Close has begun
	closed   bool // no new sender, remote session or request
	conns    map[protocol.Session]*localConn
	connByID map[string]*localConn
	remotes  map[string]*remoteSession  // by from-node "/" conn ID
	pending  map[string]*waiter         // by request ID
	owned    map[string]*ownedRoom      // rooms this node claimed, by room ID
	added    map[string]map[string]bool // user → room IDs whose rooms:u:<user> entry this node wrote
	senders  map[string]*sender         // by destination node
}

// localConn is a connection of this node that has members in rooms on
// other nodes (or entered through the relay).
type localConn struct {
	id    string
	s     protocol.Session
	rooms map[string]string // room ID → media node, from enterRoom replies
	nodes map[string]bool   // nodes holding a remote session of it
}

type waiter struct {
	node string
	ch   chan replyPayload // capacity 1
}

// ownedRoom is a room this node claimed as its media node.
type ownedRoom struct {
	inflight int // enterRoom calls running here for it
	gen      int // counts enters, to tell a release raced by one
}

// New returns a relay; Start starts it.
func New(p Params) (*Relay, error) {
	if p.Client == nil || p.NodeID == "" || p.Rooms == nil {
		return nil, errors.New("roomcluster: a Redis client, a node ID and rooms are needed")
	}
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("roomcluster: %w", err)
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.RequestTimeout <= 0 {
		p.RequestTimeout = 10 * time.Second
	}
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	r := &Relay{p: p, rdb: p.Client, k: keys{p.Prefix}, self: p.NodeID, cfg: p.Config, log: p.Logger.With("component", "room relay", "node", p.NodeID),
		local: p.Rooms.Ops(), connTag: hex.EncodeToString(tag[:]), flush: make(chan struct{}),
		conns: map[protocol.Session]*localConn{}, connByID: map[string]*localConn{}, remotes: map[string]*remoteSession{},
		pending: map[string]*waiter{}, owned: map[string]*ownedRoom{}, added: map[string]map[string]bool{}, senders: map[string]*sender{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	place := placeFunc(r.place)
	r.placeFn.Store(&place)
	return r, nil
}

type placeFunc func(ctx context.Context, roomID string) (string, error)

// NodeID is this node's ID.
func (r *Relay) NodeID() string { return r.self }

// Start starts reading this node's relay stream and the maintenance loop
// (leases, the rooms-per-user entries, node liveness).
func (r *Relay) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return errors.New("roomcluster: started twice or closed")
	}
	r.started = true
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.read() }()
	go func() { defer r.wg.Done(); r.maintain() }()
	return nil
}

// Close leaves: every room hosted here is dismissed with onExitRoom reason
// 4 (its members, wherever connected, enter again and the room is placed on
// a live node), what is queued for other nodes is written, the loops stop
// and this node's room leases are released. Call it before rooms' Close.
func (r *Relay) Close() {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return
	}
	r.closing = true
	started := r.started
	r.mu.Unlock()
	if started {
		for id := range r.p.Rooms.Memberships() {
			r.p.Rooms.DismissLost(id)
		}
	}
	r.mu.Lock()
	r.closed = true
	owned := make([]string, 0, len(r.owned))
	for id := range r.owned {
		owned = append(owned, id)
	}
	r.mu.Unlock()
	r.flushBy.Store(time.Now().Add(flushWait).UnixMilli())
	close(r.flush)
	r.cancel()
	r.wg.Wait()
	if len(owned) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
		_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, id := range owned {
				releaseScript.Eval(ctx, p, []string{r.k.room(id)}, r.self)
			}
			return nil
		})
		cancel()
	}
}

// Load is this node's load for placement: the room members it hosts.
func (r *Relay) Load() cluster.Load {
	_, members := r.p.Rooms.Counts()
	return cluster.Load{"members": float64(members)}
}

// failed records a failed Redis call (the outage grace of the watches).
func (r *Relay) failed(err error) {
	if err != nil && !errors.Is(err, redis.Nil) && r.ctx.Err() == nil {
		r.lastFail.Store(time.Now().UnixMilli())
	}
}

func (r *Relay) count(kind, dir string) {
	if r.p.Metrics == nil {
		return
	}
	name := "unknown"
	switch kind {
	case kindRequest:
		name = "request"
	case kindReply:
		name = "reply"
	case kindEvent:
		name = "event"
	case kindClosed:
		name = "closed"
	}
	r.p.Metrics.RoomRelayMessage(name, dir)
}

// ---- keys ----

type keys struct{ p string }

func (k keys) room(id string) string                        { return k.p + "room:" + id }
func (k keys) userRooms(u string) string                    { return k.p + "rooms:u:" + u }
func (k keys) stream(node string) string                    { return k.p + "rm:" + node }
func (k keys) callRoom(id string) string                    { return k.p + "calls:room:" + id }
func (k keys) nodePrefix() string                           { return k.p + "node:" }
func (k keys) node(id string) string                        { return k.p + "node:" + id }
func (k keys) keyspace(cfg cluster.Config) cluster.Keyspace { return cluster.NewKeyspace(k.p, cfg) }
