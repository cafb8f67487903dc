package signaling_test

// Reproductions of the attacks of issue #11 (items 3 and 5), written against
// the engine's public API only.

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// heapBytes is the live heap after a collection.
func heapBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// outboxSize is what the store's outbox holds: entries and data bytes.
func outboxSize(t *testing.T, s *signaling.SQLiteStore) (n, bytes int64) {
	t.Helper()
	err := s.DB().QueryRowContext(t.Context(), `SELECT count(*), coalesce(sum(length(data)), 0) FROM sig_outbox`).Scan(&n, &bytes)
	if err != nil {
		t.Fatal(err)
	}
	return n, bytes
}

// TestKeptEventsFlood is issue #11 item 3: createGroup with 999 user IDs
// that never connected, then inviteInGroup to 100 of them and cancel, both
// with 8 KB of data, again and again: each cancel kept 100 copies of its
// 8 KB event, in the store and in memory, reloaded at every restart. Users
// who never connected now get nothing kept, and what one sender may keep is
// bounded; kept events are no longer held in memory.
func TestKeptEventsFlood(t *testing.T) {
	const rounds = 20 // 16 MB kept before the fix
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sb.db")
	open := func() (*signaling.SQLiteStore, *signaling.Engine) {
		t.Helper()
		s, err := signaling.OpenSQLite(ctx, path, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		e, err := signaling.NewEngine(ctx, signaling.Params{Config: signaling.DefaultConfig(), Store: s, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s, e
	}
	store, eng := open()
	defer func() { eng.Close(); _ = store.Close() }()
	mallory := &session{user: "mallory"} // nothing to replay
	if err := eng.Attach(ctx, mallory); err != nil {
		t.Fatal(err)
	}
	a := as(mallory)
	var ghosts []string
	for i := range 999 {
		ghosts = append(ghosts, fmt.Sprintf("ghost%03d", i))
	}
	gid, err := eng.CreateGroup(ctx, a, protocol.CreateGroupArgs{Name: "flood", MemberList: ghosts})
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Repeat("x", signaling.DefaultConfig().Limits.MaxDataBytes)
	heap0 := heapBytes()
	for r := range rounds {
		id, err := eng.InviteInGroup(ctx, a, protocol.InviteInGroupArgs{GroupID: gid, InviteeList: ghosts[:100], Data: data})
		if err != nil {
			t.Fatalf("round %d: inviteInGroup: %v", r, err)
		}
		// Past a quota the cancel fails with its error; that is fine here.
		_ = eng.Cancel(ctx, a, protocol.InviteIDArgs{InviteID: id, Data: data})
	}
	heap1 := heapBytes()
	n, bytes := outboxSize(t, store)
	t.Logf("after %d rounds: outbox %d entries, %d data bytes; heap %+d bytes", rounds, n, bytes, heap1-heap0)
	if bytes > 1<<20 {
		t.Errorf("the outbox holds %d bytes after the flood, want at most 1 MiB", bytes)
	}
	if d := heap1 - heap0; d > 4<<20 {
		t.Errorf("the heap grew by %d bytes during the flood, want at most 4 MiB", d)
	}

	// A restart does not load kept events' data into memory.
	eng.Close()
	_ = store.Close()
	eng, store = nil, nil
	heap2 := heapBytes()
	store, eng = open()
	heap3 := heapBytes()
	t.Logf("restart: heap %+d bytes", heap3-heap2)
	if d := heap3 - heap2; d > 4<<20 {
		t.Errorf("the heap grew by %d bytes loading the store, want at most 4 MiB", d)
	}
}

// TestGroupQuotaNotFilledByOthers is issue #11 item 5: anyone could add
// anyone to groups until the victim's group quota was full, and then the
// victim's own createGroup failed with 9105. Groups others added a user to
// no longer count against the user's own quota.
func TestGroupQuotaNotFilledByOthers(t *testing.T) {
	h := newHarness(t)
	m, v := h.connect("mallory"), h.connect("victim")
	lim := h.cfg.Limits.MaxGroupsPerUser
	for i := range lim {
		if _, err := h.eng.CreateGroup(ctx, as(m), protocol.CreateGroupArgs{Name: fmt.Sprint("g", i), MemberList: []string{"victim"}}); err != nil {
			t.Fatalf("group %d: %v", i, err)
		}
	}
	if _, err := h.eng.CreateGroup(ctx, as(v), protocol.CreateGroupArgs{Name: "mine"}); err != nil {
		t.Fatalf("the victim's own createGroup after being added to %d groups: %v", lim, err)
	}
}
