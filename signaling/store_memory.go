package signaling

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// MemoryStore is a Store that keeps everything in memory: for tests, and
// for running without durability. It passes the same contract test as
// SQLiteStore. FailNext makes the next Apply calls fail, for tests of the
// engine's behaviour when the store fails.
//
// A MemoryStore is one open handle over a set of data. Close closes the
// handle, not the data: Reopen returns a new open handle over the same data,
// the way opening the same SQLite file again does.
//
// Times are kept at full precision and come back in UTC; the zero time
// comes back as the zero time.
type MemoryStore struct {
	d *memData
	// Guarded by d.mu.
	failNext int
	closed   bool
}

// memData is the data that the handles of one MemoryStore share. Apply
// replaces the maps with modified copies (maps.Clone, with the slices in
// the records copied before they are changed), so that a failed Apply
// applies nothing and a record that was stored is never changed in place.
type memData struct {
	mu     sync.Mutex // guards every field, and the fields of every handle
	inv    map[string]memInvitation
	groups map[string]memGroup
	outbox map[int64]OutboxEntry // by Seq
	users  map[string]struct{}
	status map[string]string // custom presence texts
	next   uint64            // the next insertion number (ord)
}

// memInvitation is a stored invitation; ord is its insertion number, the
// order Load returns invitations in.
type memInvitation struct {
	rec InvitationRecord
	ord uint64
}

// memGroup is a stored group; ord is its insertion number. rec.Members are
// in insertion order; Load sorts them.
type memGroup struct {
	rec GroupRecord
	ord uint64
}

var _ Store = (*MemoryStore)(nil)

// ErrInjected is the error of a failure injected with FailNext.
var ErrInjected = errors.New("signaling: injected store failure")

var errMemoryClosed = fmt.Errorf("signaling: memory store closed: %w", protocol.ErrShuttingDown)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{d: &memData{
		inv:    map[string]memInvitation{},
		groups: map[string]memGroup{},
		outbox: map[int64]OutboxEntry{},
		users:  map[string]struct{}{},
		status: map[string]string{},
	}}
}

// Reopen returns a new open handle over s's data, whether s is closed or
// not. What is applied through one handle is seen by the others. The new
// handle has no failures injected.
func (s *MemoryStore) Reopen() *MemoryStore {
	return &MemoryStore{d: s.d}
}

// FailNext makes the next n Apply calls on s fail with ErrInjected, applying
// nothing.
func (s *MemoryStore) FailNext(n int) {
	s.d.mu.Lock()
	s.failNext = n
	s.d.mu.Unlock()
}

// Apply implements Store. Applying to a missing invitation, invitee or group
// (SetInviteeState, SetInvitationData, AddGroupMembers, RemoveGroupMembers,
// Delete*) is a no-op, not an error.
func (s *MemoryStore) Apply(ctx context.Context, muts ...Mutation) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("signaling: memory store: apply: %w", err)
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	if s.failNext > 0 {
		s.failNext--
		return ErrInjected
	}
	if len(muts) == 0 {
		return nil
	}
	// Apply to copies so that a failure applies nothing.
	a := memApply{
		inv:    maps.Clone(d.inv),
		groups: maps.Clone(d.groups),
		outbox: maps.Clone(d.outbox),
		users:  maps.Clone(d.users),
		status: maps.Clone(d.status),
		next:   d.next,
	}
	for _, m := range muts {
		if err := a.apply(m); err != nil {
			return fmt.Errorf("signaling: memory store: %w", err)
		}
	}
	d.inv, d.groups, d.outbox, d.users, d.status, d.next = a.inv, a.groups, a.outbox, a.users, a.status, a.next
	return nil
}

// memApply is the state that one Apply call builds; it becomes the store's
// state if every mutation succeeds.
type memApply struct {
	inv    map[string]memInvitation
	groups map[string]memGroup
	outbox map[int64]OutboxEntry
	users  map[string]struct{}
	status map[string]string
	next   uint64
}

func (a *memApply) ord() uint64 {
	n := a.next
	a.next++
	return n
}

func (a *memApply) apply(m Mutation) error {
	switch m := m.(type) {
	case PutInvitation:
		r := m.Invitation
		if _, ok := a.inv[r.ID]; ok {
			return fmt.Errorf("put invitation %q: ID already in use", r.ID)
		}
		r.CreatedAt, r.Deadline = memTime(r.CreatedAt), memTime(r.Deadline)
		r.Invitees = slices.Clone(r.Invitees)
		for i, e := range r.Invitees {
			if !validState(e.State) {
				return fmt.Errorf("put invitation %q: invitee %q: invalid state %v", r.ID, e.UserID, e.State)
			}
			if slices.ContainsFunc(r.Invitees[:i], func(x InviteeRecord) bool { return x.UserID == e.UserID }) {
				return fmt.Errorf("put invitation %q: invitee %q listed twice", r.ID, e.UserID)
			}
			r.Invitees[i].UpdatedAt = memTime(e.UpdatedAt)
		}
		a.inv[r.ID] = memInvitation{rec: r, ord: a.ord()}
	case SetInviteeState:
		if !validState(m.State) {
			return fmt.Errorf("set state of invitee %q of invitation %q: invalid state %v", m.UserID, m.InviteID, m.State)
		}
		mi, ok := a.inv[m.InviteID]
		if !ok {
			return nil
		}
		i := slices.IndexFunc(mi.rec.Invitees, func(x InviteeRecord) bool { return x.UserID == m.UserID })
		if i < 0 {
			return nil
		}
		mi.rec.Invitees = slices.Clone(mi.rec.Invitees)
		mi.rec.Invitees[i].State, mi.rec.Invitees[i].UpdatedAt = m.State, memTime(m.At)
		a.inv[m.InviteID] = mi
	case SetInvitationData:
		if mi, ok := a.inv[m.InviteID]; ok {
			mi.rec.Data = m.Data
			a.inv[m.InviteID] = mi
		}
	case DeleteInvitation:
		delete(a.inv, m.InviteID)
	case PutGroup:
		g := m.Group
		if _, ok := a.groups[g.ID]; ok {
			return fmt.Errorf("put group %q: %w", g.ID, protocol.ErrGroupExists)
		}
		g.CreatedAt = memTime(g.CreatedAt)
		g.Members = addMembers(nil, g.Members)
		a.groups[g.ID] = memGroup{rec: g, ord: a.ord()}
	case AddGroupMembers:
		if mg, ok := a.groups[m.GroupID]; ok {
			mg.rec.Members = addMembers(mg.rec.Members, m.Members)
			a.groups[m.GroupID] = mg
		}
	case RemoveGroupMembers:
		if mg, ok := a.groups[m.GroupID]; ok {
			mg.rec.Members = slices.DeleteFunc(slices.Clone(mg.rec.Members), func(x MemberRecord) bool {
				return slices.Contains(m.UserIDs, x.UserID)
			})
			a.groups[m.GroupID] = mg
		}
	case DeleteGroup:
		delete(a.groups, m.GroupID)
	case AppendOutbox:
		e := m.Entry
		if _, ok := a.outbox[e.Seq]; ok {
			return fmt.Errorf("append outbox entry %d for %q: Seq already in use", e.Seq, e.UserID)
		}
		e.Data = bytes.Clone(e.Data)
		e.CreatedAt, e.ExpiresAt = memTime(e.CreatedAt), memTime(e.ExpiresAt)
		a.outbox[e.Seq] = e
	case DeleteOutbox:
		maps.DeleteFunc(a.outbox, func(_ int64, x OutboxEntry) bool { return x.UserID == m.UserID && x.Seq <= m.UpTo })
	case DeleteOutboxEntry:
		if x, ok := a.outbox[m.Seq]; ok && x.UserID == m.UserID {
			delete(a.outbox, m.Seq)
		}
	case PutUser:
		a.users[m.UserID] = struct{}{}
	case SetCustomStatus:
		if m.Text == "" {
			delete(a.status, m.UserID)
		} else {
			a.status[m.UserID] = m.Text
		}
	case PurgeOutbox:
		// Entries without an expiry (zero ExpiresAt) never match, nor does
		// a zero Before.
		if !m.Before.IsZero() {
			maps.DeleteFunc(a.outbox, func(_ int64, x OutboxEntry) bool {
				return !x.ExpiresAt.IsZero() && !x.ExpiresAt.After(m.Before)
			})
		}
	default:
		return fmt.Errorf("apply: unknown mutation %T", m)
	}
	return nil
}

// addMembers returns a copy of members with those of add that are not
// members yet appended, in order; of a user listed twice, the first stays.
func addMembers(members, add []MemberRecord) []MemberRecord {
	members = slices.Clone(members)
	for _, nm := range add {
		if !slices.ContainsFunc(members, func(x MemberRecord) bool { return x.UserID == nm.UserID }) {
			nm.JoinedAt = memTime(nm.JoinedAt)
			members = append(members, nm)
		}
	}
	return members
}

func validState(st InviteeState) bool {
	_, err := ParseInviteeState(st.String())
	return err == nil
}

// memTime is t as the store keeps it: in UTC, without a monotonic clock
// reading; the zero time stays the zero time.
func memTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// Load implements Store. Invitations and groups come in the order they were
// put, invitees in their order in the invitation, members owner first, then
// by join time, then in the order they were added, and the outbox index by Seq.
// The snapshot shares no memory with the store.
func (s *MemoryStore) Load(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("signaling: memory store: load: %w", err)
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.closed {
		return nil, errMemoryClosed
	}
	snap := &Snapshot{}

	invs := slices.SortedFunc(maps.Values(d.inv), func(a, b memInvitation) int { return cmp.Compare(a.ord, b.ord) })
	for _, mi := range invs {
		r := mi.rec
		r.Invitees = slices.Clone(r.Invitees)
		snap.Invitations = append(snap.Invitations, r)
	}

	groups := slices.SortedFunc(maps.Values(d.groups), func(a, b memGroup) int { return cmp.Compare(a.ord, b.ord) })
	for _, mg := range groups {
		g := mg.rec
		g.Members = slices.Clone(g.Members)
		slices.SortStableFunc(g.Members, func(a, b MemberRecord) int {
			if ao, bo := a.Role == protocol.RoleOwner, b.Role == protocol.RoleOwner; ao != bo {
				if ao {
					return -1
				}
				return 1
			}
			return a.JoinedAt.Compare(b.JoinedAt)
		})
		snap.Groups = append(snap.Groups, g)
	}

	snap.Users = slices.Collect(maps.Keys(d.users))
	if len(d.status) > 0 {
		snap.CustomStatus = maps.Clone(d.status)
	}
	for _, seq := range slices.Sorted(maps.Keys(d.outbox)) {
		e := d.outbox[seq]
		snap.Outbox = append(snap.Outbox, OutboxInfo{UserID: e.UserID, Seq: e.Seq, Sender: e.Sender, Bytes: e.Bytes(), ExpiresAt: e.ExpiresAt})
	}
	return snap, nil
}

// LoadOutbox implements Store.
func (s *MemoryStore) LoadOutbox(ctx context.Context, user string, afterSeq int64, limit int) ([]OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("signaling: memory store: load outbox: %w", err)
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.closed {
		return nil, errMemoryClosed
	}
	var out []OutboxEntry
	for _, e := range d.outbox {
		if e.UserID == user && e.Seq > afterSeq {
			e.Data = bytes.Clone(e.Data)
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b OutboxEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	if limit > 0 && len(out) > limit {
		out = out[:limit:limit]
	}
	return out, nil
}

// Close implements Store. It closes this handle (see Reopen); later calls
// return nil.
func (s *MemoryStore) Close() error {
	s.d.mu.Lock()
	s.closed = true
	s.d.mu.Unlock()
	return nil
}
