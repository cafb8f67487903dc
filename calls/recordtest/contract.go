// Package recordtest holds the contract test that every calls.RecordStore
// implementation must pass (one set of tests run against memory and SQLite,
// as signaling/storetest does for the signaling store).
package recordtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
)

// Run runs the contract. open returns a new, empty store for the subtest t
// and arranges for it to be closed when t ends. The subtests run one after
// another.
func Run(t *testing.T, open func(t *testing.T) calls.RecordStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s calls.RecordStore)
	}{
		{"RoundTrip", testRoundTrip},
		{"ZeroTimes", testZeroTimes},
		{"TimeRange", testTimeRange},
		{"Copies", testCopies},
		{"Replace", testReplace},
		{"RepeatedParticipant", testRepeatedParticipant},
		{"ManyParticipants", testManyParticipants},
		{"InvalidRecords", testInvalidRecords},
		{"CancelledContext", testCancelledContext},
		{"HistoryOrder", testHistoryOrder},
		{"HistoryFilters", testHistoryFilters},
		{"HistoryPagination", testHistoryPagination},
		{"HistoryCursorStability", testHistoryCursorStability},
		{"HistoryLimits", testHistoryLimits},
		{"HistoryJoinerOnly", testHistoryJoinerOnly},
		{"HistoryInvalidQuery", testHistoryInvalidQuery},
		{"OpenCalls", testOpenCalls},
		{"Heartbeat", testHeartbeat},
		{"Concurrency", testConcurrency},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// base is a time in a zone other than UTC with nanoseconds, so that a store
// must convert to UTC and keep every digit.
var base = time.Date(2025, time.March, 14, 15, 9, 26, 535_897_932, time.FixedZone("UTC+5:30", 5*3600+1800))

func at(d time.Duration) time.Time { return base.Add(d) }

// call returns a minimal ended record; ps are its participants.
func call(id, caller string, created time.Time, ps ...calls.ParticipantRecord) calls.CallRecord {
	return calls.CallRecord{
		CallID: id, Caller: caller, RoomID: "room-" + id, MediaType: "audio",
		CreatedAt: created, EndedAt: created.Add(time.Minute), Result: calls.ResultCompleted,
		EndReason: calls.EndHangup, EndedBy: caller, Participants: ps,
	}
}

func part(user string, role calls.Role, result calls.Result) calls.ParticipantRecord {
	return calls.ParticipantRecord{UserID: user, Role: role, Result: result}
}

// fullRecord sets every field, with participants out of alphabetical order.
func fullRecord(id string, created time.Time) calls.CallRecord {
	return calls.CallRecord{
		CallID:    id,
		Caller:    "zara",
		GroupID:   "group-" + id,
		RoomID:    "room-" + id,
		MediaType: "video",
		CreatedAt: created,
		BeganAt:   created.Add(3*time.Second + 7),
		EndedAt:   created.Add(95*time.Second + 11),
		Duration:  92*time.Second + 4,
		Result:    calls.ResultCompleted,
		EndReason: calls.EndHangup,
		EndedBy:   "bob",
		Participants: []calls.ParticipantRecord{
			{UserID: "zara", Role: calls.RoleCaller, InvitedAt: created, AnsweredAt: created,
				Answer: calls.AnswerAccepted, JoinedAt: created.Add(2 * time.Second), LeftAt: created.Add(95 * time.Second), Result: calls.ResultCompleted},
			{UserID: "bob", Role: calls.RoleInvitee, InvitedAt: created.Add(1), AnsweredAt: created.Add(time.Second + 1),
				Answer: calls.AnswerAccepted, JoinedAt: created.Add(3 * time.Second), LeftAt: created.Add(95*time.Second + 11), Result: calls.ResultCompleted},
			{UserID: "mia", Role: calls.RoleInvitee, InvitedAt: created.Add(1), AnsweredAt: created.Add(2 * time.Second),
				Answer: calls.AnswerRejected, Result: calls.ResultRejected},
			{UserID: "al", Role: calls.RoleInvitee, InvitedAt: created.Add(1), Answer: calls.AnswerNoAnswer, Result: calls.ResultNoAnswer},
			{UserID: "kim", Role: calls.RoleJoiner, JoinedAt: created.Add(30 * time.Second), LeftAt: created.Add(60 * time.Second), Result: calls.ResultCompleted},
		},
	}
}

func save(t *testing.T, s calls.RecordStore, recs ...calls.CallRecord) {
	t.Helper()
	for _, rec := range recs {
		if err := s.SaveCall(t.Context(), rec); err != nil {
			t.Fatalf("SaveCall(%q): %v", rec.CallID, err)
		}
	}
}

func history(t *testing.T, s calls.RecordStore, user string, filter calls.HistoryFilter, limit int, cursor string) ([]calls.CallRecord, string) {
	t.Helper()
	recs, next, err := s.History(t.Context(), user, filter, limit, cursor)
	if err != nil {
		t.Fatalf("History(%q, %q, %d, %q): %v", user, filter, limit, cursor, err)
	}
	if len(recs) > max(limit, 1) && limit != 0 {
		t.Fatalf("History(%q, %q, %d): %d records, more than the limit", user, filter, limit, len(recs))
	}
	if next != "" && len(recs) == 0 {
		t.Fatalf("History(%q, %q, %d, %q): an empty page with a next cursor", user, filter, limit, cursor)
	}
	return recs, next
}

// historyAll follows the cursors to the last page.
func historyAll(t *testing.T, s calls.RecordStore, user string, filter calls.HistoryFilter, limit int) []calls.CallRecord {
	t.Helper()
	var all []calls.CallRecord
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("History(%q, %q, %d): more than 1000 pages", user, filter, limit)
		}
		recs, next := history(t, s, user, filter, limit, cursor)
		all = append(all, recs...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

func openCalls(t *testing.T, s calls.RecordStore) []calls.CallRecord {
	t.Helper()
	recs, err := s.OpenCalls(t.Context())
	if err != nil {
		t.Fatalf("OpenCalls: %v", err)
	}
	return recs
}

func ids(recs []calls.CallRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.CallID
	}
	return out
}

// newestFirst returns the IDs of recs in History order.
func newestFirst(recs []calls.CallRecord) []string {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b calls.CallRecord) int {
		if c := cmp.Compare(b.CreatedAt.UnixNano(), a.CreatedAt.UnixNano()); c != 0 {
			return c
		}
		return cmp.Compare(b.CallID, a.CallID)
	})
	return ids(sorted)
}

func checkIDs(t *testing.T, what string, got []calls.CallRecord, want []string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Errorf("%s: got calls %q, want %q", what, g, want)
	}
}

// checkRecord reports every difference between got and want: times must be
// Equal and in UTC, zero times zero, participants in order.
func checkRecord(t *testing.T, what string, got, want calls.CallRecord) {
	t.Helper()
	if d := diff(got, want); d != "" {
		t.Errorf("%s: record %q differs:%s", what, want.CallID, d)
	}
}

func diff(got, want calls.CallRecord) string {
	var b strings.Builder
	str := func(name, g, w string) {
		if g != w {
			fmt.Fprintf(&b, "\n\t%s = %q, want %q", name, g, w)
		}
	}
	tm := func(name string, g, w time.Time) {
		switch {
		case w.IsZero() && !g.IsZero():
			fmt.Fprintf(&b, "\n\t%s = %v, want the zero time", name, g)
		case !g.Equal(w):
			fmt.Fprintf(&b, "\n\t%s = %v, want %v", name, g, w)
		case !g.IsZero() && g.Location() != time.UTC:
			fmt.Fprintf(&b, "\n\t%s = %v, want it in UTC", name, g)
		}
	}
	str("CallID", got.CallID, want.CallID)
	str("Caller", got.Caller, want.Caller)
	str("GroupID", got.GroupID, want.GroupID)
	str("RoomID", got.RoomID, want.RoomID)
	str("MediaType", got.MediaType, want.MediaType)
	tm("CreatedAt", got.CreatedAt, want.CreatedAt)
	tm("BeganAt", got.BeganAt, want.BeganAt)
	tm("EndedAt", got.EndedAt, want.EndedAt)
	if got.Duration != want.Duration {
		fmt.Fprintf(&b, "\n\tDuration = %v, want %v", got.Duration, want.Duration)
	}
	str("Result", string(got.Result), string(want.Result))
	str("EndReason", string(got.EndReason), string(want.EndReason))
	str("EndedBy", got.EndedBy, want.EndedBy)
	if len(got.Participants) != len(want.Participants) {
		fmt.Fprintf(&b, "\n\t%d participants, want %d", len(got.Participants), len(want.Participants))
		return b.String()
	}
	for i, w := range want.Participants {
		g := got.Participants[i]
		p := fmt.Sprintf("Participants[%d].", i)
		str(p+"UserID", g.UserID, w.UserID)
		str(p+"Role", string(g.Role), string(w.Role))
		tm(p+"InvitedAt", g.InvitedAt, w.InvitedAt)
		tm(p+"AnsweredAt", g.AnsweredAt, w.AnsweredAt)
		str(p+"Answer", string(g.Answer), string(w.Answer))
		tm(p+"JoinedAt", g.JoinedAt, w.JoinedAt)
		tm(p+"LeftAt", g.LeftAt, w.LeftAt)
		str(p+"Result", string(g.Result), string(w.Result))
	}
	return b.String()
}

// only returns the one record in recs, failing t otherwise.
func only(t *testing.T, what string, recs []calls.CallRecord) calls.CallRecord {
	t.Helper()
	if len(recs) != 1 {
		t.Fatalf("%s: got calls %q, want exactly one", what, ids(recs))
	}
	return recs[0]
}

func testRoundTrip(t *testing.T, s calls.RecordStore) {
	ended := fullRecord("ended", at(0))
	running := fullRecord("running", at(time.Hour))
	running.EndedAt, running.Duration, running.Result, running.EndReason, running.EndedBy = time.Time{}, 0, "", "", ""
	running.Participants[1].LeftAt = time.Time{}
	running.Participants = running.Participants[:2]
	save(t, s, ended, running)

	// Every participant, whatever the role, finds the full record.
	for _, p := range ended.Participants {
		recs, next := history(t, s, p.UserID, calls.FilterAll, 10, "")
		if next != "" {
			t.Errorf("History(%q): next cursor %q after the only page", p.UserID, next)
		}
		want := []string{"ended"}
		if p.UserID == "zara" || p.UserID == "bob" {
			want = []string{"running", "ended"}
		}
		checkIDs(t, "History("+p.UserID+")", recs, want)
		for _, r := range recs {
			w := ended
			if r.CallID == "running" {
				w = running
			}
			checkRecord(t, "History("+p.UserID+")", r, w)
		}
	}
	checkRecord(t, "OpenCalls", only(t, "OpenCalls", openCalls(t, s)), running)
}

func testZeroTimes(t *testing.T, s calls.RecordStore) {
	// Only the required fields: every optional time stays zero, strings
	// stay empty, a participant with nothing but a user survives.
	bare := calls.CallRecord{CallID: "bare", Caller: "ann", CreatedAt: at(0),
		Participants: []calls.ParticipantRecord{{UserID: "ann"}, {UserID: "ben"}}}
	save(t, s, bare)
	checkRecord(t, "History", only(t, "History", historyAll(t, s, "ben", calls.FilterAll, 10)), bare)
	checkRecord(t, "OpenCalls", only(t, "OpenCalls", openCalls(t, s)), bare)

	// No participants at all: the caller still finds it, with none.
	lone := calls.CallRecord{CallID: "lone", Caller: "cy", CreatedAt: at(time.Second)}
	save(t, s, lone)
	got := only(t, "History(cy)", historyAll(t, s, "cy", calls.FilterAll, 10))
	checkRecord(t, "History(cy)", got, lone)
}

func testTimeRange(t *testing.T, s calls.RecordStore) {
	// The edges of what unix nanoseconds hold, in a zone other than UTC.
	zone := time.FixedZone("UTC-7", -7*3600)
	early := time.Date(1700, time.January, 1, 0, 0, 0, 1, zone)
	late := time.Date(2250, time.December, 31, 23, 59, 59, 999_999_999, zone)
	rec := fullRecord("edges", early)
	rec.EndedAt = late
	rec.Participants[0].LeftAt = late
	save(t, s, rec)
	checkRecord(t, "History", only(t, "History", historyAll(t, s, "zara", calls.FilterAll, 10)), rec)

	for name, bad := range map[string]time.Time{
		"CreatedAt in 1600": time.Date(1600, time.January, 1, 0, 0, 0, 0, time.UTC),
		"CreatedAt in 2300": time.Date(2300, time.January, 1, 0, 0, 0, 0, time.UTC),
	} {
		r := call("bad", "zara", bad)
		r.EndedAt = time.Time{}
		if err := s.SaveCall(t.Context(), r); !errors.Is(err, calls.ErrInvalidRecord) {
			t.Errorf("SaveCall with %s: got %v, want ErrInvalidRecord", name, err)
		}
	}
	r := fullRecord("bad", at(0))
	r.Participants[2].AnsweredAt = time.Date(3000, time.January, 1, 0, 0, 0, 0, time.UTC)
	if err := s.SaveCall(t.Context(), r); !errors.Is(err, calls.ErrInvalidRecord) {
		t.Errorf("SaveCall with a participant time in 3000: got %v, want ErrInvalidRecord", err)
	}
	checkIDs(t, "History after the rejected saves", historyAll(t, s, "zara", calls.FilterAll, 10), []string{"edges"})
}

func testCopies(t *testing.T, s calls.RecordStore) {
	rec := fullRecord("c", at(0))
	want := fullRecord("c", at(0))
	save(t, s, rec)
	// Changing what was saved, or what was returned, changes nothing stored.
	rec.Participants[0].UserID = "changed"
	rec.Caller = "changed"
	got := only(t, "History", historyAll(t, s, "zara", calls.FilterAll, 10))
	got.Participants[1].UserID = "changed"
	got.Participants = append(got.Participants[:1], got.Participants[2:]...)
	checkRecord(t, "History after changing copies", only(t, "History", historyAll(t, s, "zara", calls.FilterAll, 10)), want)
}

func testReplace(t *testing.T, s calls.RecordStore) {
	first := fullRecord("r", at(0))
	first.EndedAt, first.Result = time.Time{}, ""
	other := call("other", "zara", at(time.Minute), part("zara", calls.RoleCaller, calls.ResultCompleted))
	save(t, s, first, other)
	checkIDs(t, "OpenCalls", openCalls(t, s), []string{"r"})

	// The second save replaces every field and the whole participant list:
	// mia, al and kim are gone, ned is new, and the call now ends and
	// moves after "other" in history.
	second := calls.CallRecord{
		CallID: "r", Caller: "bob", RoomID: "room-2", MediaType: "audio",
		CreatedAt: at(2 * time.Minute), EndedAt: at(3 * time.Minute), Result: calls.ResultCancelled, EndReason: calls.EndCancelled,
		Participants: []calls.ParticipantRecord{
			{UserID: "bob", Role: calls.RoleCaller, Result: calls.ResultCancelled},
			{UserID: "zara", Role: calls.RoleInvitee, InvitedAt: at(2 * time.Minute), Answer: calls.AnswerCancelled, Result: calls.ResultMissed},
			{UserID: "ned", Role: calls.RoleInvitee, Result: calls.ResultMissed},
		},
	}
	save(t, s, second)
	for _, gone := range []string{"mia", "al", "kim"} {
		checkIDs(t, "History("+gone+") after the replace", historyAll(t, s, gone, calls.FilterAll, 10), []string{})
	}
	ned := only(t, "History(ned)", historyAll(t, s, "ned", calls.FilterAll, 10))
	checkRecord(t, "History(ned)", ned, second)
	checkIDs(t, "History(zara)", historyAll(t, s, "zara", calls.FilterAll, 10), []string{"r", "other"})
	checkIDs(t, "History(zara, missed)", historyAll(t, s, "zara", calls.FilterMissed, 10), []string{"r"})
	checkIDs(t, "History(zara, outgoing)", historyAll(t, s, "zara", calls.FilterOutgoing, 10), []string{"other"})
	checkIDs(t, "OpenCalls after the replace", openCalls(t, s), []string{})

	// Saving the same record again changes nothing; saving it with no
	// participants leaves none.
	save(t, s, second)
	checkRecord(t, "History(ned) after saving again", only(t, "History(ned)", historyAll(t, s, "ned", calls.FilterAll, 10)), second)
	third := second
	third.Participants = nil
	save(t, s, third)
	checkRecord(t, "History(bob) without participants", only(t, "History(bob)", historyAll(t, s, "bob", calls.FilterAll, 10)), third)
	checkIDs(t, "History(ned) without participants", historyAll(t, s, "ned", calls.FilterAll, 10), []string{})
}

// testRepeatedParticipant saves a user twice in one call (a joiner who left
// and came back): both rows stay, in order, and History lists the call once.
func testRepeatedParticipant(t *testing.T, s calls.RecordStore) {
	rec := call("again", "host", at(0), part("host", calls.RoleCaller, calls.ResultCompleted),
		part("jo", calls.RoleJoiner, calls.ResultCompleted), part("guest", calls.RoleInvitee, calls.ResultCompleted),
		part("jo", calls.RoleJoiner, calls.ResultFailed))
	rec.Participants[1].JoinedAt, rec.Participants[1].LeftAt = at(time.Second), at(2*time.Second)
	rec.Participants[3].JoinedAt = at(3 * time.Second)
	save(t, s, rec, call("other", "host", at(time.Second), part("host", calls.RoleCaller, calls.ResultCompleted)))
	checkRecord(t, "History(jo)", only(t, "History(jo)", historyAll(t, s, "jo", calls.FilterAll, 1)), rec)
	checkIDs(t, "History(jo, incoming)", historyAll(t, s, "jo", calls.FilterIncoming, 1), []string{"again"})
	checkIDs(t, "History(host)", historyAll(t, s, "host", calls.FilterAll, 1), []string{"other", "again"})
}

// testManyParticipants round-trips a large group call, then shrinks it.
func testManyParticipants(t *testing.T, s calls.RecordStore) {
	rec := call("big", "host", at(0), part("host", calls.RoleCaller, calls.ResultCompleted))
	for i := range 150 {
		p := part(fmt.Sprintf("member-%03d", 149-i), calls.RoleInvitee, calls.ResultMissed)
		p.InvitedAt = at(time.Duration(i))
		rec.Participants = append(rec.Participants, p)
	}
	save(t, s, rec)
	checkRecord(t, "History(member-000)", only(t, "History", historyAll(t, s, "member-000", calls.FilterMissed, 10)), rec)
	rec.Participants = rec.Participants[:51]
	save(t, s, rec)
	checkRecord(t, "History(host) after shrinking", only(t, "History", historyAll(t, s, "host", calls.FilterAll, 10)), rec)
	checkIDs(t, "History(member-000) after shrinking", historyAll(t, s, "member-000", calls.FilterAll, 10), []string{})
}

func testInvalidRecords(t *testing.T, s calls.RecordStore) {
	good := fullRecord("x", at(0))
	save(t, s, good)
	for name, change := range map[string]func(*calls.CallRecord){
		"empty CallID":               func(r *calls.CallRecord) { r.CallID = "" },
		"empty Caller":               func(r *calls.CallRecord) { r.Caller = "" },
		"zero CreatedAt":             func(r *calls.CallRecord) { r.CreatedAt = time.Time{} },
		"participant without UserID": func(r *calls.CallRecord) { r.Participants[3].UserID = "" },
	} {
		bad := fullRecord("x", at(time.Hour))
		bad.Participants = slices.Clone(bad.Participants)
		change(&bad)
		if err := s.SaveCall(t.Context(), bad); !errors.Is(err, calls.ErrInvalidRecord) {
			t.Errorf("SaveCall with %s: got %v, want ErrInvalidRecord", name, err)
		}
	}
	// The rejected replacements left the record as it was.
	checkRecord(t, "History", only(t, "History", historyAll(t, s, "zara", calls.FilterAll, 10)), good)
}

func testCancelledContext(t *testing.T, s calls.RecordStore) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.SaveCall(ctx, call("c", "ann", at(0))); !errors.Is(err, context.Canceled) {
		t.Errorf("SaveCall with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if _, _, err := s.History(ctx, "ann", calls.FilterAll, 10, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("History with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if _, err := s.OpenCalls(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("OpenCalls with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if err := s.Heartbeat(ctx, at(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("Heartbeat with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if _, err := s.LastHeartbeat(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("LastHeartbeat with a cancelled ctx: got %v, want context.Canceled", err)
	}
	checkIDs(t, "History after the cancelled SaveCall", historyAll(t, s, "ann", calls.FilterAll, 10), []string{})
	if hb, err := s.LastHeartbeat(t.Context()); err != nil || !hb.IsZero() {
		t.Errorf("LastHeartbeat after the cancelled Heartbeat = %v, %v; want the zero time", hb, err)
	}
}

func testHistoryOrder(t *testing.T, s calls.RecordStore) {
	// Saved in an order unrelated to time; CreatedAt ties (three calls at
	// each second, one a nanosecond apart) are ordered by CallID descending.
	var recs []calls.CallRecord
	for i := range 30 {
		created := at(time.Duration(i%10) * time.Second)
		if i%7 == 0 {
			created = created.Add(1)
		}
		id := fmt.Sprintf("call-%02d", (i*17)%30)
		recs = append(recs, call(id, "ann", created, part("ann", calls.RoleCaller, calls.ResultCompleted)))
	}
	save(t, s, recs...)
	checkIDs(t, "History", historyAll(t, s, "ann", calls.FilterAll, 100), newestFirst(recs))
}

func testHistoryFilters(t *testing.T, s calls.RecordStore) {
	const u = "u"
	caller := func(result calls.Result) calls.ParticipantRecord { return part(u, calls.RoleCaller, result) }
	invitee := func(result calls.Result) calls.ParticipantRecord { return part(u, calls.RoleInvitee, result) }
	other := part("o", calls.RoleCaller, calls.ResultCompleted)
	recs := []calls.CallRecord{
		call("c01-out", u, at(1), caller(calls.ResultCompleted), part("o", calls.RoleInvitee, calls.ResultCompleted)),
		call("c02-in-completed", "o", at(2), other, invitee(calls.ResultCompleted)),
		call("c03-in-missed", "o", at(3), other, invitee(calls.ResultMissed)),
		call("c04-in-busy", "o", at(4), other, invitee(calls.ResultBusy)),
		call("c05-in-noanswer", "o", at(5), other, invitee(calls.ResultNoAnswer)),
		call("c06-in-rejected", "o", at(6), other, invitee(calls.ResultRejected)),
		call("c07-in-cancelled", "o", at(7), other, invitee(calls.ResultCancelled)),
		call("c08-in-failed", "o", at(8), other, invitee(calls.ResultFailed)),
		call("c09-joined", "o", at(9), other, part(u, calls.RoleJoiner, calls.ResultCompleted)),
		call("c10-joined-missed", "o", at(10), other, part(u, calls.RoleJoiner, calls.ResultMissed)),
		call("c11-not-mine", "o", at(11), other, part("p", calls.RoleInvitee, calls.ResultMissed)),
		// The caller's own row may say no_answer: still outgoing, not missed.
		call("c12-out-noanswer", u, at(12), caller(calls.ResultNoAnswer), part("o", calls.RoleInvitee, calls.ResultNoAnswer)),
		// A caller missing from Participants still placed the call.
		call("c13-out-unlisted", u, at(13), part("o", calls.RoleInvitee, calls.ResultMissed)),
		// A group call where u was rung, did not answer, and others talked.
		call("c14-group-missed", "o", at(14), other, invitee(calls.ResultMissed), part("p", calls.RoleInvitee, calls.ResultCompleted)),
	}
	save(t, s, recs...)
	want := map[calls.HistoryFilter][]string{
		calls.FilterAll: {"c14-group-missed", "c13-out-unlisted", "c12-out-noanswer", "c10-joined-missed", "c09-joined",
			"c08-in-failed", "c07-in-cancelled", "c06-in-rejected", "c05-in-noanswer", "c04-in-busy", "c03-in-missed",
			"c02-in-completed", "c01-out"},
		"":                   nil, // same as FilterAll, filled below
		calls.FilterOutgoing: {"c13-out-unlisted", "c12-out-noanswer", "c01-out"},
		calls.FilterIncoming: {"c14-group-missed", "c10-joined-missed", "c09-joined", "c08-in-failed", "c07-in-cancelled",
			"c06-in-rejected", "c05-in-noanswer", "c04-in-busy", "c03-in-missed", "c02-in-completed"},
		calls.FilterMissed: {"c14-group-missed", "c10-joined-missed", "c05-in-noanswer", "c04-in-busy", "c03-in-missed"},
	}
	want[""] = want[calls.FilterAll]
	for filter, w := range want {
		for _, limit := range []int{100, 2} {
			checkIDs(t, fmt.Sprintf("History(%q, %q, limit %d)", u, filter, limit), historyAll(t, s, u, filter, limit), w)
		}
	}
	// The other side of the same calls.
	checkIDs(t, "History(p, missed)", historyAll(t, s, "p", calls.FilterMissed, 100), []string{"c11-not-mine"})
	gotO := ids(historyAll(t, s, "o", calls.FilterOutgoing, 100))
	if len(gotO) != 11 {
		t.Errorf("History(o, outgoing): got %d calls %q, want the 11 o placed", len(gotO), gotO)
	}
	checkIDs(t, "History(o, missed)", historyAll(t, s, "o", calls.FilterMissed, 100), []string{"c13-out-unlisted", "c12-out-noanswer"})
	checkIDs(t, "History(nobody)", historyAll(t, s, "nobody", calls.FilterAll, 100), []string{})
}

func testHistoryPagination(t *testing.T, s calls.RecordStore) {
	// Most of 97 calls are ann's; CreatedAt ties (four calls a
	// millisecond) cross page edges.
	var mine, all []calls.CallRecord
	for i := range 97 {
		created := at(time.Duration(i/4) * time.Millisecond)
		rec := call(fmt.Sprintf("p%03d", i), "bob", created, part("bob", calls.RoleCaller, calls.ResultCompleted))
		if i%5 != 0 && i%7 != 0 || i < 20 {
			rec.Participants = append(rec.Participants, part("ann", calls.RoleInvitee, calls.ResultCompleted))
			mine = append(mine, rec)
		}
		all = append(all, rec)
	}
	save(t, s, all...)
	want := newestFirst(mine)

	for _, limit := range []int{1, 3, 10, len(want), len(want) - 1, len(want) + 1} {
		var got []calls.CallRecord
		cursor := ""
		pages := 0
		for {
			recs, next := history(t, s, "ann", calls.FilterAll, limit, cursor)
			pages++
			if next != "" && len(recs) != limit {
				t.Errorf("limit %d: page %d holds %d calls and is not the last", limit, pages, len(recs))
			}
			// A cursor is stateless: asking again gives the same page.
			again, next2 := history(t, s, "ann", calls.FilterAll, limit, cursor)
			if !slices.Equal(ids(again), ids(recs)) || next2 != next {
				t.Errorf("limit %d: page %d differs when asked again", limit, pages)
			}
			got = append(got, recs...)
			if next == "" {
				break
			}
			if pages > len(want)+1 {
				t.Fatalf("limit %d: no last page", limit)
			}
			cursor = next
		}
		checkIDs(t, fmt.Sprintf("History pages of %d", limit), got, want)
		if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
			t.Errorf("limit %d: %d pages, want %d (no empty last page)", limit, pages, wantPages)
		}
	}
}

func testHistoryCursorStability(t *testing.T, s calls.RecordStore) {
	mk := func(id string, created time.Time) calls.CallRecord {
		return call(id, "ann", created, part("ann", calls.RoleCaller, calls.ResultCompleted))
	}
	var old []calls.CallRecord
	for i := range 20 {
		old = append(old, mk(fmt.Sprintf("old-%02d", i), at(time.Duration(i)*time.Second)))
	}
	save(t, s, old...)
	want := newestFirst(old)

	first, cursor := history(t, s, "ann", calls.FilterAll, 5, "")
	checkIDs(t, "first page", first, want[:5])

	// Between pages: newer calls arrive, one older than all, a call on the
	// next page is replaced (same CreatedAt), and one already listed moves
	// to the far past.
	var added []calls.CallRecord
	for i := range 5 {
		added = append(added, mk(fmt.Sprintf("new-%02d", i), at(time.Hour+time.Duration(i)*time.Second)))
	}
	oldest := mk("older", at(-time.Hour))
	save(t, s, added...)
	save(t, s, oldest)
	replaced := old[13] // want[6]
	replaced.EndReason = "replaced"
	save(t, s, replaced)
	moved := old[19] // want[0]
	moved.CreatedAt = at(-2 * time.Hour)
	save(t, s, moved)

	var rest []calls.CallRecord
	for cursor != "" {
		var recs []calls.CallRecord
		recs, cursor = history(t, s, "ann", calls.FilterAll, 5, cursor)
		rest = append(rest, recs...)
	}
	wantRest := append(slices.Clone(want[5:]), "older", moved.CallID)
	checkIDs(t, "the pages after the first", rest, wantRest)
	for _, r := range rest {
		if r.CallID == replaced.CallID && r.EndReason != "replaced" {
			t.Errorf("call %q: EndReason %q, want the replaced record", r.CallID, r.EndReason)
		}
	}
	// From the start again, everything is there once.
	checkIDs(t, "all pages after the changes", historyAll(t, s, "ann", calls.FilterAll, 5),
		newestFirst(append(append(slices.Clone(old[:19]), added...), oldest, moved)))
}

func testHistoryLimits(t *testing.T, s calls.RecordStore) {
	var recs []calls.CallRecord
	for i := range calls.MaxHistoryLimit + 20 {
		recs = append(recs, call(fmt.Sprintf("l%03d", i), "ann", at(time.Duration(i)*time.Second)))
	}
	save(t, s, recs...)
	want := newestFirst(recs)
	for _, tc := range []struct{ limit, want int }{
		{0, calls.DefaultHistoryLimit},
		{-5, 1},
		{1, 1},
		{calls.MaxHistoryLimit, calls.MaxHistoryLimit},
		{calls.MaxHistoryLimit + 1, calls.MaxHistoryLimit},
		{math.MaxInt, calls.MaxHistoryLimit},
	} {
		got, next, err := s.History(t.Context(), "ann", calls.FilterAll, tc.limit, "")
		if err != nil {
			t.Fatalf("History(limit %d): %v", tc.limit, err)
		}
		checkIDs(t, fmt.Sprintf("History(limit %d)", tc.limit), got, want[:tc.want])
		if next == "" {
			t.Errorf("History(limit %d): no next cursor, though %d calls remain", tc.limit, len(want)-tc.want)
		}
	}
}

func testHistoryJoinerOnly(t *testing.T, s calls.RecordStore) {
	// jo is never rung: jo joins three of ten group calls.
	var recs []calls.CallRecord
	var joined []calls.CallRecord
	for i := range 10 {
		rec := call(fmt.Sprintf("g%02d", i), "host", at(time.Duration(i)*time.Minute),
			part("host", calls.RoleCaller, calls.ResultCompleted), part("guest", calls.RoleInvitee, calls.ResultCompleted))
		rec.GroupID = "team"
		if i%3 == 1 {
			p := part("jo", calls.RoleJoiner, calls.ResultCompleted)
			p.JoinedAt, p.LeftAt = rec.CreatedAt.Add(time.Second), rec.CreatedAt.Add(time.Minute)
			rec.Participants = append(rec.Participants, p)
			joined = append(joined, rec)
		}
		recs = append(recs, rec)
	}
	save(t, s, recs...)
	want := newestFirst(joined)
	checkIDs(t, "History(jo)", historyAll(t, s, "jo", calls.FilterAll, 2), want)
	checkIDs(t, "History(jo, incoming)", historyAll(t, s, "jo", calls.FilterIncoming, 2), want)
	checkIDs(t, "History(jo, outgoing)", historyAll(t, s, "jo", calls.FilterOutgoing, 2), []string{})
	checkIDs(t, "History(jo, missed)", historyAll(t, s, "jo", calls.FilterMissed, 2), []string{})
	got := historyAll(t, s, "jo", calls.FilterAll, 10)
	for i, r := range got {
		checkRecord(t, "History(jo)", r, joined[len(joined)-1-i])
	}
}

func testHistoryInvalidQuery(t *testing.T, s calls.RecordStore) {
	save(t, s, call("a", "ann", at(0)), call("b", "ann", at(1)))
	_, cursor := history(t, s, "ann", calls.FilterAll, 1, "")
	if cursor == "" {
		t.Fatal("History(limit 1) of two calls: no next cursor")
	}
	for _, bad := range []string{"!", "not a cursor", "AAAA", cursor[:len(cursor)/2], cursor + "%", strings.Repeat("A", 40)} {
		if _, _, err := s.History(t.Context(), "ann", calls.FilterAll, 1, bad); !errors.Is(err, calls.ErrBadCursor) {
			t.Errorf("History(cursor %q): got %v, want ErrBadCursor", bad, err)
		}
	}
	if _, _, err := s.History(t.Context(), "ann", "recent", 1, ""); !errors.Is(err, calls.ErrInvalidFilter) {
		t.Errorf("History(filter %q): got %v, want ErrInvalidFilter", "recent", err)
	}
	// A cursor belongs to no user or filter: it is a position in the order.
	recs, next := history(t, s, "nobody", calls.FilterMissed, 1, cursor)
	if len(recs) != 0 || next != "" {
		t.Errorf("History(nobody, cursor of ann) = %q, %q; want nothing", ids(recs), next)
	}
}

func testOpenCalls(t *testing.T, s calls.RecordStore) {
	checkIDs(t, "OpenCalls of an empty store", openCalls(t, s), []string{})
	running := func(id string, created time.Time) calls.CallRecord {
		r := fullRecord(id, created)
		r.EndedAt, r.Duration, r.Result, r.EndReason, r.EndedBy = time.Time{}, 0, "", "", ""
		return r
	}
	a, b, c := running("a", at(2*time.Second)), running("b", at(time.Second)), running("c", at(2*time.Second))
	notBegun := running("d", at(3*time.Second))
	notBegun.BeganAt = time.Time{}
	save(t, s, c, fullRecord("ended-1", at(0)), a, notBegun, fullRecord("ended-2", at(5*time.Second)), b)

	// Oldest first, ties by CallID ascending.
	got := openCalls(t, s)
	checkIDs(t, "OpenCalls", got, []string{"b", "a", "c", "d"})
	for i, w := range []calls.CallRecord{b, a, c, notBegun} {
		if i < len(got) {
			checkRecord(t, "OpenCalls", got[i], w)
		}
	}
	// Ending a call takes it out.
	ended := a
	ended.EndedAt, ended.Result, ended.EndReason = at(time.Minute), calls.ResultCompleted, calls.EndServerRestart
	save(t, s, ended)
	checkIDs(t, "OpenCalls after ending a", openCalls(t, s), []string{"b", "c", "d"})
}

func testHeartbeat(t *testing.T, s calls.RecordStore) {
	lastHeartbeat := func() time.Time {
		t.Helper()
		hb, err := s.LastHeartbeat(t.Context())
		if err != nil {
			t.Fatalf("LastHeartbeat: %v", err)
		}
		return hb
	}
	heartbeat := func(at time.Time) {
		t.Helper()
		if err := s.Heartbeat(t.Context(), at); err != nil {
			t.Fatalf("Heartbeat(%v): %v", at, err)
		}
	}
	if hb := lastHeartbeat(); !hb.IsZero() {
		t.Errorf("LastHeartbeat of an empty store = %v, want the zero time", hb)
	}
	for _, when := range []time.Time{at(0), at(time.Hour), at(-time.Hour), time.Now()} {
		heartbeat(when)
		// The last one wins, also when the clock went back.
		if hb := lastHeartbeat(); !hb.Equal(when) || hb.Location() != time.UTC {
			t.Errorf("LastHeartbeat after Heartbeat(%v) = %v, want it equal and in UTC", when, hb)
		}
	}
	prev := lastHeartbeat()
	for _, bad := range []time.Time{{}, time.Date(2300, time.January, 1, 0, 0, 0, 0, time.UTC)} {
		if err := s.Heartbeat(t.Context(), bad); !errors.Is(err, calls.ErrInvalidRecord) {
			t.Errorf("Heartbeat(%v): got %v, want ErrInvalidRecord", bad, err)
		}
	}
	if hb := lastHeartbeat(); !hb.Equal(prev) {
		t.Errorf("LastHeartbeat after rejected heartbeats = %v, want %v", hb, prev)
	}
}

// testConcurrency runs writers of distinct calls, two writers replacing one
// call with two different versions, heartbeats, and readers that check
// they never see half of a replacement.
func testConcurrency(t *testing.T, s calls.RecordStore) {
	const (
		writers        = 6
		callsPerWriter = 15
		replacements   = 30
	)
	// version returns the shared call as writer v saves it: the room and
	// every participant but hub name the version, and v has v+2
	// participants.
	version := func(v int) calls.CallRecord {
		tag := fmt.Sprintf("v%d", v)
		rec := call("shared", "hub", at(-time.Hour), part("hub", calls.RoleCaller, calls.ResultCompleted))
		rec.RoomID = tag
		for i := range v + 1 {
			rec.Participants = append(rec.Participants, part(fmt.Sprintf("%s-%d", tag, i), calls.RoleInvitee, calls.ResultCompleted))
		}
		return rec
	}
	checkShared := func(rec calls.CallRecord) error {
		var v int
		if _, err := fmt.Sscanf(rec.RoomID, "v%d", &v); err != nil || v < 0 || v > 1 {
			return fmt.Errorf("shared call with room %q", rec.RoomID)
		}
		if d := diff(rec, version(v)); d != "" {
			return fmt.Errorf("shared call %s is half replaced:%s", rec.RoomID, d)
		}
		return nil
	}
	save(t, s, version(0))

	ctx := t.Context()
	var writersWG, readersWG sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default: // enough reported
		}
	}
	for w := range writers {
		writersWG.Go(func() {
			for i := range callsPerWriter {
				id := fmt.Sprintf("w%d-%02d", w, i)
				rec := call(id, "hub", at(time.Duration(w*callsPerWriter+i)*time.Millisecond),
					part("hub", calls.RoleCaller, calls.ResultCompleted), part(fmt.Sprintf("user-%d", w), calls.RoleInvitee, calls.ResultMissed))
				if err := s.SaveCall(ctx, rec); err != nil {
					report(fmt.Errorf("SaveCall(%q): %w", id, err))
					return
				}
			}
		})
	}
	for v := range 2 {
		writersWG.Go(func() {
			for i := range replacements {
				if err := s.SaveCall(ctx, version(v)); err != nil {
					report(fmt.Errorf("SaveCall(shared, version %d): %w", v, err))
					return
				}
				if err := s.Heartbeat(ctx, at(time.Duration(i))); err != nil {
					report(fmt.Errorf("Heartbeat(%v): %w", at(time.Duration(i)), err))
					return
				}
			}
		})
	}
	for range 3 {
		readersWG.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				recs, _, err := s.History(ctx, "hub", calls.FilterAll, calls.MaxHistoryLimit, "")
				if err != nil {
					report(fmt.Errorf("History(hub): %w", err))
					return
				}
				for _, r := range recs {
					if r.CallID == "shared" {
						if err := checkShared(r); err != nil {
							report(err)
						}
					}
				}
				if _, err := s.OpenCalls(ctx); err != nil {
					report(fmt.Errorf("OpenCalls: %w", err))
					return
				}
				if _, err := s.LastHeartbeat(ctx); err != nil {
					report(fmt.Errorf("LastHeartbeat: %w", err))
					return
				}
			}
		})
	}
	writersWG.Wait()
	close(done)
	readersWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	all := historyAll(t, s, "hub", calls.FilterAll, 7)
	if want := writers*callsPerWriter + 1; len(all) != want {
		t.Errorf("History(hub): %d calls, want %d", len(all), want)
	}
	for _, r := range all {
		if r.CallID == "shared" {
			if err := checkShared(r); err != nil {
				t.Error(err)
			}
		}
	}
	for w := range writers {
		if got := historyAll(t, s, fmt.Sprintf("user-%d", w), calls.FilterMissed, 4); len(got) != callsPerWriter {
			t.Errorf("History(user-%d, missed): %d calls, want %d", w, len(got), callsPerWriter)
		}
	}
}
