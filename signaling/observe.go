package signaling

import (
	"context"
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// InvitationNote tells observers what an operation did to an invitation,
// after it was stored and its events delivered.
type InvitationNote struct {
	InviteID string
	Inviter  string
	GroupID  string
	Data     string // the invitation's data (after a modify: the new data)
	Invitees []string
	// Created is set on the note of a new invitation.
	Created bool
	// Changes lists the invitees whose state this operation set, with the
	// data of the answer (or of the cancel).
	Changes []InviteeChange
	// Ended is set when no invitee is pending any more.
	Ended bool
	At    time.Time

	// On the note of a new invitation: its offlinePushInfo (nil: none), the
	// invitees a push request is due for (rung, with no open connection at
	// creation; never for onlineUserOnly invitations), and its deadline
	// (zero: none).
	PushInfo *protocol.OfflinePushInfo
	Pushed   []string
	Deadline time.Time
}

// InviteeChange is one invitee's new state in a note.
type InviteeChange struct {
	UserID string
	State  InviteeState
	Data   string
	// Pushed is set when a push request was sent for the invitee at
	// creation (InvitationNote.Pushed): this final state ends it.
	Pushed bool
}

// PresenceObserver is an Observer that also learns when a user's first
// connection opens (online) and their last one closes (offline). Its calls
// are made like InvitationNote's, on the same goroutine, in order with them.
type PresenceObserver interface {
	Observer
	UserPresence(user string, online bool, at time.Time)
}

// notifyPresenceLocked queues a presence change for the observers that
// want it.
func (e *Engine) notifyPresenceLocked(user string, online bool) {
	if len(e.observers) == 0 {
		return
	}
	obs := e.observers // never written in place: AddObserver
	at := e.clock.Now()
	e.notes.Push(func() {
		for _, o := range obs {
			if p, ok := o.(PresenceObserver); ok {
				p.UserPresence(user, online, at)
			}
		}
	})
}

// Observer learns about invitations: the calls layer builds call sessions
// from these notes. Notes are delivered one at a time, in the order the
// engine decided them, on one goroutine, with no engine lock held; an
// observer may call the engine.
type Observer interface {
	InvitationNote(InvitationNote)
}

// AddObserver adds an observer; call it before serving.
func (e *Engine) AddObserver(o Observer) {
	e.mu.Lock()
	// A new array: the notes already queued hold the old one, which is
	// never written again (so they need no copy of it).
	e.observers = append(slices.Clip(e.observers), o)
	e.mu.Unlock()
}

func (e *Engine) notifyLocked(n InvitationNote) {
	if len(e.observers) == 0 {
		return
	}
	obs := e.observers // never written in place: AddObserver
	e.notes.Push(func() {
		for _, o := range obs {
			o.InvitationNote(n)
		}
	})
}

// Notify sends a one-shot invitation: to receives onReceiveNewInvitation
// with timeout 0, from from, carrying data; it is not stored as a live
// invitation (there is nothing to answer: accept or reject on it get 8010),
// but recipients with no open connection get it when they connect, like
// any kept event. The calls layer uses it for the call-end invitation of
// TRTC's step 5.
func (e *Engine) Notify(ctx context.Context, from protocol.Actor, to []string, groupID, data string) (string, error) {
	if err := e.checkData(data); err != nil {
		return "", err
	}
	var id string
	err := e.do(ctx, func(t tx) error {
		id = t.newID("inv_")
		exceptSess, silent := except(from)
		// The server composes it (calls): kept past the sender's quota, counted.
		t.keepAs(from.UserID, true)
		t.emit(&outgoing{name: protocol.EvReceiveNewInvitation,
			data:   protocol.NewInvitationEvent{InviteID: id, Inviter: from.UserID, GroupID: groupID, InviteeList: slices.Clone(to), Data: data},
			users:  append([]string{from.UserID}, to...),
			except: exceptSess, silent: silent, keep: true})
		return nil
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// SendEvent delivers an event of another layer (rooms, calls) to every open
// connection of users; with keep, users with no open connection get it when
// they connect (stored like the invitation events). The server decides these
// events: they are kept past any quota, counted against no sender.
func (e *Engine) SendEvent(ctx context.Context, users []string, name string, data any, keep bool) error {
	return e.do(ctx, func(t tx) error {
		t.keepAs("", true)
		t.emit(&outgoing{name: name, data: data, users: users, keep: keep})
		return nil
	})
}

// AfterReplier is implemented by op results that have work to do once the
// reply is queued on the connection (so that the events it causes reach
// the client after the reply). The transport calls AfterReply after
// queueing the reply.
type AfterReplier interface {
	AfterReply()
}
