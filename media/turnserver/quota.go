package turnserver

import (
	"errors"
	"net"
	"sync"
)

var (
	errServerCap = errors.New("turnserver: turn.max_allocations reached")
	errUserQuota = errors.New("turnserver: turn.max_allocations_per_user reached")
)

// allocations counts the allocations alive, in all and per user, against
// Config.MaxAllocations and MaxAllocationsPerUser. An allocation is counted
// from the making of its relay socket (take, in the one critical section
// that checks both caps) to the socket's closing.
type allocations struct {
	max, perUser int

	mu            sync.Mutex // guards the fields below
	open          int
	byUser        map[string]int
	refusedUser   uint64
	refusedServer uint64
}

func newAllocations(cfg Config) *allocations {
	return &allocations{max: cfg.MaxAllocations, perUser: cfg.MaxAllocationsPerUser, byUser: map[string]int{}}
}

// admit is pion's QuotaHandler, called for an authenticated Allocate
// before the relay socket is made: false, which pion answers with 486
// (Allocation Quota Reached), when userID has its quota. It only checks;
// take counts. Two allocations of one user racing past admit are still
// held to the quota by take, the loser answered 508.
func (a *allocations) admit(userID, _ string, _ net.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byUser[userID] < a.perUser {
		return true
	}
	a.refusedUser++
	return false
}

// take counts an allocation of userID in, or refuses it past either cap
// (pion answers an error here with 508, Insufficient Capacity: the
// server's cap is its capacity). release counts it out, once.
func (a *allocations) take(userID string) (release func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.open >= a.max:
		a.refusedServer++
		return nil, errServerCap
	case a.byUser[userID] >= a.perUser:
		a.refusedUser++
		return nil, errUserQuota
	}
	a.open++
	a.byUser[userID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.open--
			if a.byUser[userID]--; a.byUser[userID] <= 0 {
				delete(a.byUser, userID)
			}
		})
	}, nil
}

func (a *allocations) stats() (open int, refusedUser, refusedServer uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.open, a.refusedUser, a.refusedServer
}
