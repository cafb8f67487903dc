package rooms

import (
	"slices"

	"github.com/switchboard-rtc/switchboard/media"
)

// Admitter decides whether a user may enter a room without a room token:
// it returns the claim on roomID through which userID is admitted, or nil.
// The calls package admits a call's inviter and the invitees who accepted,
// through the call's claim on its room ID.
type Admitter interface {
	Admit(userID, roomID string) *Claim
}

// A Claim reserves a room ID for one admission path other than room
// tokens (a call). A room ID belongs to whoever created it, through one
// path: while a claim holds it, only the users its admitter admits through
// that claim may enter, and room tokens for it are refused; an unclaimed
// room ID is entered only with a room token. Claim and Release make and end
// claims.
type Claim struct {
	roomID string
}

// RoomID is the claimed room ID.
func (c *Claim) RoomID() string { return c.roomID }

// TokenVerifier checks a room token: an HS256 JWT with sub = user and
// room = room ID, signed with the server's secret.
type TokenVerifier interface {
	VerifyRoomToken(token string) (userID, roomID string, err error)
}

// admission is what may let a user into a room: a valid room token, or a
// claim an admitter admits them through. Enter checks it against the room
// ID's claim under mu (pathLocked).
type admission struct {
	token bool
	claim *Claim
}

var errNotAdmitted = ErrNotAdmitted.WithMessage("not admitted to this room: accept the call or present a room token")

// admission finds how user could enter roomID (outside mu: it calls the
// admitters).
func (m *Manager) admission(user, roomID, token string) (admission, error) {
	var adm admission
	var tokenErr error
	if token != "" {
		tokenErr = m.checkToken(user, roomID, token)
		adm.token = tokenErr == nil
	}
	m.mu.Lock()
	admitters := slices.Clone(m.admitters)
	m.mu.Unlock()
	for _, a := range admitters {
		if c := a.Admit(user, roomID); c != nil && c.roomID == roomID {
			adm.claim = c
			break
		}
	}
	if !adm.token && adm.claim == nil {
		if tokenErr != nil {
			return adm, tokenErr
		}
		return adm, errNotAdmitted
	}
	return adm, nil
}

func (m *Manager) checkToken(user, roomID, token string) error {
	if m.tokens == nil {
		return ErrNotAdmitted.WithMessage("room tokens are not accepted by this server")
	}
	u, r, err := m.tokens.VerifyRoomToken(token)
	if err != nil {
		return ErrNotAdmitted.WithMessage("invalid room token")
	}
	if u != user || r != roomID {
		return ErrNotAdmitted.WithMessage("the room token is for another user or room")
	}
	return nil
}

// pathLocked is the rule of one admission path per room ID: a claimed room
// ID is entered only through its claim, an unclaimed one only with a room
// token. It returns the claim entered through (nil: the token).
func (m *Manager) pathLocked(roomID string, adm admission) (*Claim, error) {
	if c := m.claims[roomID]; c != nil {
		if adm.claim == c {
			return c, nil
		}
		return nil, errNotAdmitted
	}
	if adm.token {
		return nil, nil
	}
	return nil, errNotAdmitted
}

// Claim reserves roomID for a new admission path (a call). It fails with
// ErrRoomTaken when the ID has a room (any member, even one still joining)
// or another claim; the check and the reservation are one critical section,
// so a concurrent room-token entry and a claim never both get the ID.
func (m *Manager) Claim(roomID string) (*Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[roomID] != nil || m.claims[roomID] != nil {
		return nil, ErrRoomTaken
	}
	c := &Claim{roomID: roomID}
	m.claims[roomID] = c
	return c, nil
}

// Release ends a claim: the members who entered through it leave as when
// a room is dismissed (onExitRoom reason 2), and the room ID is free again.
// It does nothing for a claim already released.
func (m *Manager) Release(c *Claim) {
	m.mu.Lock()
	if m.claims[c.roomID] != c {
		m.mu.Unlock()
		return
	}
	delete(m.claims, c.roomID)
	var parts []*media.Participant
	if r := m.rooms[c.roomID]; r != nil {
		for _, mem := range sortedMembers(r) {
			if mem.claim != c {
				continue
			}
			if p := m.removeLocked(mem, LeaveKicked, ExitDismissed); p != nil {
				parts = append(parts, p)
			}
		}
	}
	m.mu.Unlock()
	for _, p := range parts {
		p.Close()
	}
}

// LeaveClaim takes a user who entered through claim c out of its room as
// if they had called exitRoom (the calls layer's hangup); it reports
// whether they were in it. A member who entered otherwise stays.
func (m *Manager) LeaveClaim(c *Claim, userID string) bool {
	m.mu.Lock()
	var mem *member
	if r := m.rooms[c.roomID]; r != nil {
		mem = r.members[userID]
	}
	if mem == nil || mem.claim != c {
		m.mu.Unlock()
		return false
	}
	part := m.removeLocked(mem, LeaveLeft, ExitLeft)
	m.mu.Unlock()
	if part != nil {
		part.Close()
	}
	return true
}
