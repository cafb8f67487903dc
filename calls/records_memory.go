package calls

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// History page sizes: a limit of 0 asks for DefaultHistoryLimit; other
// limits are clamped to 1..MaxHistoryLimit.
const (
	DefaultHistoryLimit = 20
	MaxHistoryLimit     = 100
)

// Errors of the RecordStore implementations, besides ErrBadCursor. Compare
// with errors.Is.
var (
	// ErrInvalidRecord: SaveCall or Heartbeat was given something that
	// cannot be stored (an empty CallID or Caller, a zero CreatedAt, a
	// participant without UserID, a time outside the years 1678-2262, a
	// zero heartbeat time). It is a bug in the caller, not a store failure.
	ErrInvalidRecord = errors.New("calls: invalid call record")
	// ErrInvalidFilter: History was given an unknown filter.
	ErrInvalidFilter = errors.New("calls: invalid history filter")
)

// MemoryRecords is a RecordStore kept in memory, for tests. It has the
// semantics of SQLiteRecords: records are copied in and out, times come back
// in UTC, and the same records are rejected.
type MemoryRecords struct {
	// mu guards every field below.
	mu        sync.Mutex
	calls     map[string]CallRecord // by CallID; normalised copies, never handed out
	heartbeat time.Time
}

var _ RecordStore = (*MemoryRecords)(nil)

// NewMemoryRecords returns an empty MemoryRecords.
func NewMemoryRecords() *MemoryRecords {
	return &MemoryRecords{calls: make(map[string]CallRecord)}
}

// SaveCall implements RecordStore.
func (m *MemoryRecords) SaveCall(ctx context.Context, rec CallRecord) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("calls: memory records: save call %q: %w", rec.CallID, err)
	}
	if err := checkRecord(rec); err != nil {
		return fmt.Errorf("calls: memory records: save call %q: %w", rec.CallID, err)
	}
	rec = cloneRecord(rec)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[rec.CallID] = rec
	return nil
}

// History implements RecordStore.
func (m *MemoryRecords) History(ctx context.Context, user string, filter HistoryFilter, limit int, cursor string) ([]CallRecord, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("calls: memory records: history of %q: %w", user, err)
	}
	filter, err := checkFilter(filter)
	if err != nil {
		return nil, "", fmt.Errorf("calls: memory records: history of %q: %w", user, err)
	}
	after, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("calls: memory records: history of %q: %w", user, err)
	}
	limit = historyLimit(limit)

	m.mu.Lock()
	var found []CallRecord
	for _, rec := range m.calls {
		pos := positionOf(rec)
		if (after == nil || pos.before(*after)) && inHistory(rec, user, filter) {
			found = append(found, cloneRecord(rec))
		}
	}
	m.mu.Unlock()

	slices.SortFunc(found, func(a, b CallRecord) int { return positionOf(a).compare(positionOf(b)) })
	if len(found) <= limit {
		return found, "", nil
	}
	found = found[:limit:limit]
	return found, positionOf(found[limit-1]).cursor(), nil
}

// OpenCalls implements RecordStore. The records come oldest CreatedAt first
// (ties by CallID ascending).
func (m *MemoryRecords) OpenCalls(ctx context.Context) ([]CallRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("calls: memory records: open calls: %w", err)
	}
	m.mu.Lock()
	var open []CallRecord
	for _, rec := range m.calls {
		if rec.EndedAt.IsZero() {
			open = append(open, cloneRecord(rec))
		}
	}
	m.mu.Unlock()
	slices.SortFunc(open, func(a, b CallRecord) int { return positionOf(b).compare(positionOf(a)) })
	return open, nil
}

// Heartbeat implements RecordStore. The last call wins, even with an
// earlier time (the clock may have been set back).
func (m *MemoryRecords) Heartbeat(ctx context.Context, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("calls: memory records: heartbeat: %w", err)
	}
	if err := checkHeartbeat(at); err != nil {
		return fmt.Errorf("calls: memory records: heartbeat: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heartbeat = at.UTC()
	return nil
}

// LastHeartbeat implements RecordStore.
func (m *MemoryRecords) LastHeartbeat(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("calls: memory records: last heartbeat: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heartbeat, nil
}

// inHistory reports whether rec belongs to user's history under filter
// (see HistoryFilter). A user takes part in a call as its caller or through
// a participant row.
func inHistory(rec CallRecord, user string, filter HistoryFilter) bool {
	switch filter {
	case FilterOutgoing:
		return rec.Caller == user
	case FilterIncoming, FilterMissed:
		if rec.Caller == user {
			return false
		}
		for _, p := range rec.Participants {
			if p.UserID == user && (filter == FilterIncoming || missedResult(p.Result)) {
				return true
			}
		}
		return false
	default: // FilterAll
		return rec.Caller == user || slices.ContainsFunc(rec.Participants,
			func(p ParticipantRecord) bool { return p.UserID == user })
	}
}

// The rest of this file is shared by MemoryRecords and SQLiteRecords, so
// that both check, order and page in exactly the same way.

// missedResults are the participant results that FilterMissed selects.
var missedResults = [...]Result{ResultMissed, ResultBusy, ResultNoAnswer}

func missedResult(r Result) bool { return slices.Contains(missedResults[:], r) }

// checkFilter returns filter, with "" meaning FilterAll, or ErrInvalidFilter.
func checkFilter(filter HistoryFilter) (HistoryFilter, error) {
	switch filter {
	case "":
		return FilterAll, nil
	case FilterAll, FilterMissed, FilterIncoming, FilterOutgoing:
		return filter, nil
	}
	return "", fmt.Errorf("%w %q", ErrInvalidFilter, filter)
}

// historyLimit applies the defaults and bounds of History's limit.
func historyLimit(limit int) int {
	if limit == 0 {
		return DefaultHistoryLimit
	}
	return min(max(limit, 1), MaxHistoryLimit)
}

// checkRecord reports why rec cannot be stored, wrapping ErrInvalidRecord.
func checkRecord(rec CallRecord) error {
	switch {
	case rec.CallID == "":
		return fmt.Errorf("%w: empty CallID", ErrInvalidRecord)
	case rec.Caller == "":
		return fmt.Errorf("%w: empty Caller", ErrInvalidRecord)
	case rec.CreatedAt.IsZero():
		return fmt.Errorf("%w: zero CreatedAt", ErrInvalidRecord)
	}
	for _, f := range [...]namedTime{{"CreatedAt", rec.CreatedAt}, {"BeganAt", rec.BeganAt}, {"EndedAt", rec.EndedAt}} {
		if !storableTime(f.t) {
			return fmt.Errorf("%w: %s %v outside the years 1678-2262", ErrInvalidRecord, f.name, f.t)
		}
	}
	for i, p := range rec.Participants {
		if p.UserID == "" {
			return fmt.Errorf("%w: participant %d: empty UserID", ErrInvalidRecord, i)
		}
		for _, f := range [...]namedTime{{"InvitedAt", p.InvitedAt}, {"AnsweredAt", p.AnsweredAt}, {"JoinedAt", p.JoinedAt}, {"LeftAt", p.LeftAt}} {
			if !storableTime(f.t) {
				return fmt.Errorf("%w: participant %q: %s %v outside the years 1678-2262", ErrInvalidRecord, p.UserID, f.name, f.t)
			}
		}
	}
	return nil
}

type namedTime struct {
	name string
	t    time.Time
}

func checkHeartbeat(at time.Time) error {
	if at.IsZero() || !storableTime(at) {
		return fmt.Errorf("%w: heartbeat time %v", ErrInvalidRecord, at)
	}
	return nil
}

// storableTime reports whether t survives being stored as unix nanoseconds
// (the zero time is stored as "none").
func storableTime(t time.Time) bool {
	return t.IsZero() || time.Unix(0, t.UnixNano()).Equal(t)
}

// utc is t in UTC, keeping the zero time zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// cloneRecord returns a deep copy of rec with every time in UTC (and no
// monotonic clock reading) and Participants nil when empty.
func cloneRecord(rec CallRecord) CallRecord {
	rec.CreatedAt, rec.BeganAt, rec.EndedAt = utc(rec.CreatedAt), utc(rec.BeganAt), utc(rec.EndedAt)
	if len(rec.Participants) == 0 {
		rec.Participants = nil
		return rec
	}
	ps := make([]ParticipantRecord, len(rec.Participants))
	for i, p := range rec.Participants {
		p.InvitedAt, p.AnsweredAt, p.JoinedAt, p.LeftAt = utc(p.InvitedAt), utc(p.AnsweredAt), utc(p.JoinedAt), utc(p.LeftAt)
		ps[i] = p
	}
	rec.Participants = ps
	return rec
}

// historyPos is a call's place in history order: newest CreatedAt first,
// ties by CallID descending.
type historyPos struct {
	createdAt int64 // unix nanoseconds
	callID    string
}

func positionOf(rec CallRecord) historyPos {
	return historyPos{createdAt: rec.CreatedAt.UnixNano(), callID: rec.CallID}
}

// compare orders positions as History lists them: negative if p comes first.
func (p historyPos) compare(q historyPos) int {
	if c := cmp.Compare(q.createdAt, p.createdAt); c != 0 {
		return c
	}
	return cmp.Compare(q.callID, p.callID)
}

// before reports whether p is listed after q, that is older.
func (p historyPos) before(q historyPos) bool { return p.compare(q) > 0 }

// cursorVersion starts every cursor, so that the format can change.
const cursorVersion = 1

// cursor encodes p as an opaque string: URL-safe base64 of a version byte,
// the big-endian CreatedAt nanoseconds and the CallID.
func (p historyPos) cursor() string {
	b := make([]byte, 0, 9+len(p.callID))
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(p.createdAt))
	b = append(b, p.callID...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor is the inverse of historyPos.cursor; "" (the first page)
// gives nil.
func decodeCursor(s string) (*historyPos, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 10 || b[0] != cursorVersion {
		return nil, fmt.Errorf("%w %q", ErrBadCursor, s)
	}
	return &historyPos{createdAt: int64(binary.BigEndian.Uint64(b[1:9])), callID: string(b[9:])}, nil
}
