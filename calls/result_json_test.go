package calls_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestCallResultAppendJSON (issue 16): the hand-written reply result of a
// call is json.Marshal's bytes, through protocol.MarshalData and
// EncodeReply, for generated values; a nil *CallResult is null.
func TestCallResultAppendJSON(t *testing.T) {
	strs := []string{"", "inv_1", "call_7f3a", "room 1", `a"b\c`, "<&>", "é", "\u2028", "\x01", "\xff", "\x7f"}
	r := rand.New(rand.NewPCG(16, 7))
	s := func() string {
		if r.IntN(2) == 0 {
			return strs[r.IntN(len(strs))]
		}
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	for range 5000 {
		res := calls.CallResult{InviteID: s(), CallID: s(), RoomID: s(), Merged: r.IntN(2) == 0}
		got, err := protocol.MarshalData(res)
		want, _ := json.Marshal(res)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("MarshalData(%#v) = %s (%v), json.Marshal = %s", res, got, err, want)
		}
		got, _ = protocol.EncodeReply("7", res, nil)
		want, _ = json.Marshal(protocol.Reply{ID: "7", Result: res})
		if !bytes.Equal(got, want) {
			t.Fatalf("EncodeReply = %s, want %s", got, want)
		}
	}
	got, err := protocol.MarshalData((*calls.CallResult)(nil))
	if err != nil || string(got) != "null" {
		t.Fatalf("nil *CallResult = %s (%v), want null", got, err)
	}
}
