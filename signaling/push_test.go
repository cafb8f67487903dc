package signaling_test

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// recorder is a PresenceObserver that keeps what it hears.
type recorder struct {
	mu       sync.Mutex
	notes    []signaling.InvitationNote
	presence []string // "user:online" / "user:offline"
	changed  chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) InvitationNote(n signaling.InvitationNote) {
	r.mu.Lock()
	r.notes = append(r.notes, n)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) UserPresence(user string, online bool, _ time.Time) {
	r.mu.Lock()
	r.presence = append(r.presence, map[bool]string{true: user + ":online", false: user + ":offline"}[online])
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// wait waits, with a deadline, until cond holds on what was heard.
func (r *recorder) wait(t *testing.T, what string, cond func(notes []signaling.InvitationNote, presence []string) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.notes, r.presence)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; notes %+v, presence %v", what, r.notes, r.presence)
		}
	}
}

func startWith(h *harness, obs ...signaling.Observer) {
	h.t.Helper()
	eng, err := signaling.NewEngine(ctx, signaling.Params{Config: h.cfg, Store: h.store, Clock: h.clock,
		Logger: slog.New(slog.DiscardHandler), Observers: obs})
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng = eng
	h.t.Cleanup(eng.Close)
}

// TestPushNotes: an invitation with an offlinePushInfo names in its note
// the invitees with no open connection (never the online ones, never for
// onlineUserOnly), the end of each such invitee's ring says it was pushed,
// and both survive a restart (the invitation times out at start, heard by
// observers given in Params).
func TestPushNotes(t *testing.T) {
	h := newHarness(t)
	h.eng.Close()
	rec := newRecorder()
	startWith(h, rec)
	h.seen("bob")
	a := h.connect("alice")
	c := h.connect("carol")
	rec.wait(t, "presence", func(_ []signaling.InvitationNote, p []string) bool {
		return slices.Equal(p, []string{"bob:online", "bob:offline", "alice:online", "carol:online"})
	})
	gid, err := h.eng.CreateGroup(ctx, as(a), protocol.CreateGroupArgs{GroupID: "team", Name: "Team", MemberList: []string{"bob", "carol", "dave"}})
	if err != nil {
		t.Fatal(err)
	}
	push := &protocol.OfflinePushInfo{Title: "Call from alice", Desc: "video", Ext: `{"k":1}`}

	// Too large: refused, nothing created.
	big := &protocol.OfflinePushInfo{Title: strings.Repeat("x", h.cfg.Limits.MaxPushInfoBytes+1)}
	_, err = h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob"}, OfflinePushInfo: big})
	mustCode(t, err, protocol.ErrDataTooLarge)

	// onlineUserOnly: never pushed.
	if _, err := h.eng.Invite(ctx, as(a), protocol.InviteArgs{Invitee: "bob", OnlineUserOnly: true, OfflinePushInfo: push}); err != nil {
		t.Fatal(err)
	}
	id, err := h.eng.InviteInGroup(ctx, as(a), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob", "carol", "dave"},
		Timeout: secs(10), OfflinePushInfo: push})
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "two created notes", func(n []signaling.InvitationNote, _ []string) bool { return len(n) == 2 })
	rec.mu.Lock()
	online, created := rec.notes[0], rec.notes[1]
	rec.mu.Unlock()
	if len(online.Pushed) != 0 || online.PushInfo != nil {
		t.Errorf("onlineUserOnly note pushes %v (%+v), want none", online.Pushed, online.PushInfo)
	}
	if !slices.Equal(created.Pushed, []string{"bob", "dave"}) || created.PushInfo == nil || *created.PushInfo != *push ||
		!created.Deadline.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("created note pushes %v with %+v, deadline %v; want bob and dave (carol is online), %+v, %v",
			created.Pushed, created.PushInfo, created.Deadline, push, t0.Add(10*time.Second))
	}

	// dave connects and rejects: his ring ends, pushed.
	d := h.connect("dave")
	if err := h.eng.Reject(ctx, as(d), protocol.InviteIDArgs{InviteID: id}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "dave's reject", func(n []signaling.InvitationNote, _ []string) bool { return len(n) == 3 })
	rec.mu.Lock()
	rej := rec.notes[2]
	rec.mu.Unlock()
	if len(rej.Changes) != 1 || rej.Changes[0].UserID != "dave" || !rej.Changes[0].Pushed {
		t.Fatalf("reject note changes %+v, want dave pushed", rej.Changes)
	}

	// The server stops; the invitation expires while it is down; at start
	// the timeout says bob was pushed, carol was not.
	h.eng.Close()
	h.clock.Advance(20 * time.Second)
	rec2 := newRecorder()
	startWith(h, rec2)
	rec2.wait(t, "timeout at start", func(n []signaling.InvitationNote, _ []string) bool { return len(n) == 1 })
	rec2.mu.Lock()
	to := rec2.notes[0]
	rec2.mu.Unlock()
	want := []signaling.InviteeChange{{UserID: "bob", State: signaling.StateTimedOut, Pushed: true},
		{UserID: "carol", State: signaling.StateTimedOut}}
	if to.InviteID != id || !slices.Equal(to.Changes, want) {
		t.Fatalf("timeout note %s %+v, want %s %+v", to.InviteID, to.Changes, id, want)
	}
	_ = c
}
