package signaling

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// MemoryStore is a Store that keeps everything in memory: for tests, and
// for running without durability. It passes the same contract test as
// SQLiteStore. FailNext makes the next Apply calls fail, for tests of the
// engine's behaviour when the store fails.
type MemoryStore struct {
	mu       sync.Mutex // guards every field
	inv      map[string]InvitationRecord
	groups   map[string]GroupRecord
	outbox   []OutboxEntry
	failNext int
	closed   bool
}

var _ Store = (*MemoryStore)(nil)

// ErrInjected is the error of a failure injected with FailNext.
var ErrInjected = errors.New("signaling: injected store failure")

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{inv: map[string]InvitationRecord{}, groups: map[string]GroupRecord{}}
}

// FailNext makes the next n Apply calls fail with ErrInjected.
func (s *MemoryStore) FailNext(n int) {
	s.mu.Lock()
	s.failNext = n
	s.mu.Unlock()
}

// Apply implements Store.
func (s *MemoryStore) Apply(ctx context.Context, muts ...Mutation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("signaling: memory store closed")
	}
	if s.failNext > 0 {
		s.failNext--
		return ErrInjected
	}
	// Apply to copies so that a failure applies nothing.
	inv := cloneMap(s.inv)
	groups := cloneMap(s.groups)
	outbox := slices.Clone(s.outbox)
	for _, m := range muts {
		switch m := m.(type) {
		case PutInvitation:
			r := m.Invitation
			r.Invitees = slices.Clone(r.Invitees)
			inv[r.ID] = r
		case SetInviteeState:
			if r, ok := inv[m.InviteID]; ok {
				r.Invitees = slices.Clone(r.Invitees)
				for i := range r.Invitees {
					if r.Invitees[i].UserID == m.UserID {
						r.Invitees[i].State, r.Invitees[i].UpdatedAt = m.State, m.At
					}
				}
				inv[m.InviteID] = r
			}
		case SetInvitationData:
			if r, ok := inv[m.InviteID]; ok {
				r.Data = m.Data
				inv[m.InviteID] = r
			}
		case DeleteInvitation:
			delete(inv, m.InviteID)
		case PutGroup:
			if _, ok := groups[m.Group.ID]; ok {
				return ErrGroupExists
			}
			g := m.Group
			g.Members = slices.Clone(g.Members)
			groups[g.ID] = g
		case AddGroupMembers:
			g, ok := groups[m.GroupID]
			if !ok {
				continue
			}
			g.Members = slices.Clone(g.Members)
			for _, nm := range m.Members {
				if !slices.ContainsFunc(g.Members, func(x MemberRecord) bool { return x.UserID == nm.UserID }) {
					g.Members = append(g.Members, nm)
				}
			}
			groups[m.GroupID] = g
		case RemoveGroupMembers:
			g, ok := groups[m.GroupID]
			if !ok {
				continue
			}
			g.Members = slices.DeleteFunc(slices.Clone(g.Members), func(x MemberRecord) bool { return slices.Contains(m.UserIDs, x.UserID) })
			groups[m.GroupID] = g
		case DeleteGroup:
			delete(groups, m.GroupID)
		case AppendOutbox:
			outbox = append(outbox, m.Entry)
		case DeleteOutbox:
			outbox = slices.DeleteFunc(outbox, func(x OutboxEntry) bool { return x.UserID == m.UserID && x.Seq <= m.UpTo })
		case PurgeOutbox:
			outbox = slices.DeleteFunc(outbox, func(x OutboxEntry) bool { return !x.ExpiresAt.After(m.Before) })
		default:
			return errors.New("signaling: unknown mutation")
		}
	}
	s.inv, s.groups, s.outbox = inv, groups, outbox
	return nil
}

// Load implements Store.
func (s *MemoryStore) Load(context.Context) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := &Snapshot{Outbox: slices.Clone(s.outbox)}
	for _, r := range s.inv {
		r.Invitees = slices.Clone(r.Invitees)
		snap.Invitations = append(snap.Invitations, r)
	}
	for _, g := range s.groups {
		g.Members = slices.Clone(g.Members)
		snap.Groups = append(snap.Groups, g)
	}
	slices.SortFunc(snap.Outbox, func(a, b OutboxEntry) int { return int(a.Seq - b.Seq) })
	return snap, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
