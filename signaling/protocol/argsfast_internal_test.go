package protocol

import (
	"reflect"
	"testing"
)

// argsSeeds are args of every shape decodeArgsFast takes or leaves to
// encoding/json.
var argsSeeds = []string{
	`{"invitee":"bob","data":"{\"bench\":1}","timeout":30}`,
	`{"inviteID":"inv_1","data":""}`,
	` { "invitee" : "bob" , "onlineUserOnly" : true , "timeout" : 0 } `,
	`{}`, ` {} `, `{"timeout":-0}`, `{"timeout":-5}`, `{"timeout":1.5}`, `{"timeout":1e3}`,
	`{"timeout":01}`, `{"timeout":-}`, `{"timeout":99999999999999999999}`, `{"timeout":9223372036854775807}`,
	`{"timeout":"30"}`, `{"timeout":null}`, `{"timeout":30x}`,
	`{"onlineUserOnly":false}`, `{"onlineUserOnly":fals}`, `{"onlineUserOnly":1}`, `{"onlineUserOnly":truex}`,
	`{"invitee":"a","invitee":"b"}`, `{"Invitee":"bob"}`, `{"INVITEE":"bob"}`, `{"other":1}`,
	`{"invitee":"\u00e9\u2028\ud83d\ude00"}`, `{"invitee":"\ud800"}`, `{"invitee":"\uZZZZ"}`, `{"invitee":"\u12"}`,
	`{"invitee":"\"\\\/\b\f\n\r\t"}`, `{"invitee":"\x"}`, `{"invitee":"é"}`, "{\"invitee\":\"\xff\"}",
	"{\"invitee\":\"a\x01\"}", `{"invitee":"a\`, `{"invitee":"a`, `{"invitee":1}`, `{"invitee":null}`,
	`{"invitee":"a",}`, `{"invitee":"a" "data":"b"}`, `{"invitee":"a"} x`, `{"invitee":"a"}}`, `{`, `[]`, `"x"`,
	`{"offlinePushInfo":{"title":"t"}}`, `{"offlinePushInfo":null}`, `{"inviteeList":["a"]}`,
	`{"n8":127}`, `{"n8":128}`, `{"n8":-129}`, `{"u":1}`, `{"s":"x"}`, `{"b":true}`, `{"-":"x"}`, `{"Hidden":"x"}`, `{"hidden":"x"}`,
	`{"named":"x"}`, `{"text":"x"}`,
}

// named and textish check that types encoding/json treats specially are
// left to it.
type named string

type textish string

func (t *textish) UnmarshalText(b []byte) error { *t = textish("T" + string(b)); return nil }

type oddArgs struct {
	N8     int8     `json:"n8"`
	U      uint     `json:"u"`
	S      *string  `json:"s"`
	B      *bool    `json:"b"`
	Hidden string   `json:"-"`
	Named  named    `json:"named"`
	Text   textish  `json:"text"`
	List   []string `json:"inviteeList"`
}

// checkFastArgs fails when DecodeArgs (fast path first) differs from
// encoding/json for raw, and returns whether the fast path took it.
func checkFastArgs[T any](t *testing.T, raw []byte) bool {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return false // DecodeArgs's zero T before either path
	}
	var fast T
	ok := decodeArgsFast(reflect.ValueOf(&fast).Elem(), raw)
	slow, err := decodeArgsJSON[T](raw)
	got, gerr := DecodeArgs[T](raw)
	if !reflect.DeepEqual(got, slow) || !reflect.DeepEqual(gerr, err) {
		t.Fatalf("DecodeArgs[%T](%q) = %+v, %v; encoding/json: %+v, %v", fast, raw, got, gerr, slow, err)
	}
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("fast path took %q as %T, encoding/json refused it: %v", raw, fast, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path decoded %q as %+v, encoding/json as %+v", raw, fast, slow)
	}
	return true
}

func checkAllArgs(t *testing.T, raw []byte) (took bool) {
	t.Helper()
	took = checkFastArgs[InviteArgs](t, raw)
	took = checkFastArgs[InviteIDArgs](t, raw) || took
	took = checkFastArgs[InviteInGroupArgs](t, raw) || took
	took = checkFastArgs[oddArgs](t, raw) || took
	return took
}

// TestDecodeArgsFastMatches (issue 16): the args decoded without
// encoding/json's Decoder are what encoding/json decodes, and the common
// shapes take the fast path.
func TestDecodeArgsFastMatches(t *testing.T) {
	for _, s := range argsSeeds {
		checkAllArgs(t, []byte(s))
	}
	for _, s := range argsSeeds[:3] {
		if !checkAllArgs(t, []byte(s)) {
			t.Errorf("fast path left %q to encoding/json", s)
		}
	}
	var o oddArgs
	for _, s := range []string{`{"n8":127}`, `{"s":"x"}`, `{"b":true}`, `{"named":"x"}`} {
		if !decodeArgsFast(reflect.ValueOf(&o).Elem(), []byte(s)) {
			t.Errorf("fast path left %q to encoding/json", s)
		}
	}
	for _, s := range []string{`{"n8":128}`, `{"u":1}`, `{"text":"x"}`, `{"Hidden":"x"}`, `{"inviteeList":["a"]}`} {
		if decodeArgsFast(reflect.ValueOf(&o).Elem(), []byte(s)) {
			t.Errorf("fast path took %q", s)
		}
	}
}

// FuzzDecodeArgsFast: the fast path never takes args encoding/json refuses,
// and never decodes them differently.
func FuzzDecodeArgsFast(f *testing.F) {
	for _, s := range argsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkAllArgs(t, raw) })
}
