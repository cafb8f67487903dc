package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// requestSeeds are frames of every shape the fast path meets or leaves to
// encoding/json.
var requestSeeds = []string{
	`{"id":"1","op":"invite","args":{"invitee":"bob","data":"x","timeout":30}}`,
	` { "op" : "accept" , "args" : {"inviteID":"inv_1","data":"{\"a\":[1,{}]}"} , "id" : "r-2" } ` + "\n",
	`{"id":"3","op":"logout"}`,
	`{"id":"4","op":"x","args":null}`,
	`{"id":"5","op":"x","args":[]}`,
	`{"id":"6","op":"x","args":{"a":"}"}}`,
	`{"id":"7","op":"x","args":{"a":"\\"}}`,
	`{"id":"8","op":"x","args":{"a":}}`,
	`{"id":"9","op":"x","args":{}} x`,
	`{"id":"10","op":"x","id":"11"}`,
	`{"ID":"12","op":"x"}`,
	`{"id":"1\u00e93","op":"x"}`,
	`{"id":"é","op":"x"}`,
	`{"id":"","op":"x"}`,
	`{"id":"15","op":""}`,
	`{"id":"16","op":"x","other":1}`,
	`{"id":16,"op":"x"}`,
	`{"id":"17","op":"x",}`,
	`{"id":"18" "op":"x"}`,
	`{"id":"19","op":"x","args":{"a":[1,2}}`,
	`{"id":"20","op":"x","args":{"a":"` + "\x01" + `"}}`,
	`{"id":"` + string(bytes.Repeat([]byte("a"), 129)) + `","op":"x"}`,
	"{\"id\":\"21\",\"op\":\"x\"}\xff",
	`{"id":"22","op":"x"`, `{`, `[]`, `""`, `null`, "",
}

// checkFastRequest fails when the fast path's answer for frame differs from
// encoding/json's.
func checkFastRequest(t *testing.T, frame []byte) {
	t.Helper()
	fast, ok := decodeRequestFast(frame)
	slow, err := decodeRequest(frame)
	if !ok {
		return // left to decodeRequest
	}
	if err != nil {
		t.Fatalf("fast path accepted %q, encoding/json refused it: %v", frame, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path decoded %q as %+v, encoding/json as %+v", frame, fast, slow)
	}
}

// TestDecodeRequestFastMatches (issue 16): the hand-written decoding of a
// request's envelope gives what encoding/json gives, and takes the common
// shapes.
func TestDecodeRequestFastMatches(t *testing.T) {
	for _, s := range requestSeeds {
		checkFastRequest(t, []byte(s))
	}
	for _, s := range requestSeeds[:3] {
		if _, ok := decodeRequestFast([]byte(s)); !ok {
			t.Errorf("fast path left %q to encoding/json", s)
		}
	}
}

// FuzzDecodeRequestFast: the fast path never accepts a frame encoding/json
// refuses, and never decodes one differently.
func FuzzDecodeRequestFast(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) { checkFastRequest(t, frame) })
}

// TestEncodeMatchesMarshal (issue 16): the hand-written envelopes of
// replies and events are the bytes encoding/json renders.
func TestEncodeMatchesMarshal(t *testing.T) {
	ids := []string{"1", "r-17", "", "a\"b", `a\b`, "<&>", "é", "\u2028", "\x7f", "\x01", "\xff"}
	results := []any{nil, InviteResult{InviteID: "inv_1<x>"}, struct{}{}, map[string]any{"a": []int{1}}}
	for _, id := range ids {
		for _, res := range results {
			got, err := EncodeReply(id, res, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := res
			if r == nil {
				r = struct{}{}
			}
			want, _ := json.Marshal(Reply{ID: id, Result: r})
			if !bytes.Equal(got, want) {
				t.Errorf("EncodeReply(%q, %v) = %s, want %s", id, res, got, want)
			}
		}
		got, _ := EncodeReply(id, nil, ErrRateLimited)
		want, _ := json.Marshal(Reply{ID: id, Error: ErrRateLimited})
		if !bytes.Equal(got, want) {
			t.Errorf("error reply = %s, want %s", got, want)
		}
	}
	datas := []any{nil, NewInvitationEvent{InviteID: "i", Inviter: "a&b", Data: `{"x":"<y>"}`, Timeout: 30}, "s\u2029", 3}
	for _, name := range append(ids, EvReceiveNewInvitation) {
		for _, d := range datas {
			got, err := EncodeEvent(name, d)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(EventFrame{Event: name, Data: d})
			if !bytes.Equal(got, want) {
				t.Errorf("EncodeEvent(%q, %v) = %s, want %s", name, d, got, want)
			}
		}
	}
	if _, err := EncodeEvent("e", func() {}); err == nil {
		t.Error("EncodeEvent of a func succeeded")
	}
}
