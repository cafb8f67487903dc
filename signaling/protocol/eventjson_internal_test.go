package protocol

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// stringSeeds are strings of every kind appendString writes itself or
// leaves to json.Marshal.
var stringSeeds = []string{
	"", "inv_1", "alice", `{"version":4,"businessID":"av_call","data":{"cmd":"audioCall","room_id":1234}}`,
	`a"b`, `a\b`, "<&>", "é", "日本語", "\u2028", "\u2029", "x\u2028y", "\x7f", "\x01", "\n\t\r\b\f", "\xff", "a\xc3",
	"\xed\xa0\x80", "\U0001F600", "\ufffd", "\x00", "</script>",
}

// checkMarshalData fails when MarshalData(v) differs from json.Marshal(v).
func checkMarshalData(t *testing.T, v any) {
	t.Helper()
	got, err := MarshalData(v)
	want, werr := json.Marshal(v)
	if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("MarshalData(%#v) = %s (%v), json.Marshal = %s (%v)", v, got, err, want, werr)
	}
}

func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return stringSeeds[r.IntN(len(stringSeeds))]
	}
	n := r.IntN(12)
	b := make([]byte, n)
	for i := range b {
		switch r.IntN(4) {
		case 0:
			b[i] = byte(r.IntN(256))
		default:
			b[i] = byte(0x20 + r.IntN(0x60))
		}
	}
	s := string(b)
	if r.IntN(4) == 0 {
		s += stringSeeds[r.IntN(len(stringSeeds))]
	}
	return s
}

func randStrings(r *rand.Rand) []string {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	ss := make([]string, 1+r.IntN(4))
	for i := range ss {
		ss[i] = randString(r)
	}
	return ss
}

// randEvent is one of the types MarshalData writes by hand, with fields
// drawn at random.
func randEvent(r *rand.Rand) any {
	s := func() string { return randString(r) }
	switch r.IntN(7) {
	case 6:
		return InviteResult{InviteID: s()}
	case 0:
		return NewInvitationEvent{InviteID: s(), Inviter: s(), GroupID: s(), InviteeList: randStrings(r), Data: s(),
			Timeout: int(r.Int64N(1<<40)) - 1<<39, TimeoutMs: r.Int64() - r.Int64(), OnlineUserOnly: r.IntN(2) == 0}
	case 1:
		ev := NewInvitationEvent{InviteID: s(), InviteeList: randStrings(r), Timeout: r.IntN(60)}
		return &ev
	case 2:
		return InviteeEvent{InviteID: s(), Invitee: s(), Data: s()}
	case 3:
		return CancelledEvent{InviteID: s(), Inviter: s(), Data: s()}
	case 4:
		return TimeoutEvent{InviteID: s(), InviteeList: randStrings(r)}
	default:
		return ModifiedEvent{InviteID: s(), Data: s()}
	}
}

// TestMarshalDataMatches (issue 16): the hand-written event data are the
// bytes encoding/json renders, for generated values and for types left to
// encoding/json.
func TestMarshalDataMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 2026))
	for range 20000 {
		checkMarshalData(t, randEvent(r))
	}
	for _, s := range stringSeeds {
		checkMarshalData(t, InviteeEvent{InviteID: s, Invitee: s, Data: s})
		checkMarshalData(t, TimeoutEvent{InviteID: s, InviteeList: []string{s, s}})
	}
	checkMarshalData(t, (*NewInvitationEvent)(nil))
	checkMarshalData(t, MemberEnterEvent{GroupID: "g", MemberList: []string{"a"}})
	checkMarshalData(t, nil)
	checkMarshalData(t, func() {})
}

// FuzzMarshalData: for any strings and numbers, the hand-written data are
// encoding/json's bytes.
func FuzzMarshalData(f *testing.F) {
	for i, s := range stringSeeds {
		f.Add(s, stringSeeds[(i+1)%len(stringSeeds)], int64(i*1000-5000), uint8(i))
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64, kind uint8) {
		list := []string{a, b}
		if kind&8 != 0 {
			list = nil
		}
		switch kind % 5 {
		case 0:
			checkMarshalData(t, NewInvitationEvent{InviteID: a, Inviter: b, GroupID: a + b, InviteeList: list, Data: b + a,
				Timeout: int(n), TimeoutMs: n, OnlineUserOnly: kind&16 != 0})
		case 1:
			checkMarshalData(t, InviteeEvent{InviteID: a, Invitee: b, Data: a + b})
		case 2:
			checkMarshalData(t, CancelledEvent{InviteID: b, Inviter: a, Data: b})
		case 3:
			checkMarshalData(t, TimeoutEvent{InviteID: a, InviteeList: list})
		default:
			checkMarshalData(t, ModifiedEvent{InviteID: b, Data: a})
		}
	})
}

func BenchmarkMarshalData(b *testing.B) {
	evs := []any{
		NewInvitationEvent{InviteID: "inv_7f3a9c2e1b", Inviter: "user_000123", InviteeList: []string{"user_000124"},
			Data: `{"version":4,"businessID":"av_call","call_type":1,"data":{"room_id":123456,"cmd":"videoCall"}}`, Timeout: 30, TimeoutMs: 29999},
		InviteeEvent{InviteID: "inv_7f3a9c2e1b", Invitee: "user_000124", Data: `{"version":4,"businessID":"av_call","data":{"cmd":"videoCall"}}`},
	}
	b.Run("json", func(b *testing.B) {
		for range b.N {
			for _, ev := range evs {
				if _, err := json.Marshal(ev); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("hand", func(b *testing.B) {
		for range b.N {
			for _, ev := range evs {
				if _, err := MarshalData(ev); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
