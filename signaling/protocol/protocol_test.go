package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		frame  string
		id, op string
		code   int
	}{
		{`{"id":"1","op":"invite","args":{"invitee":"bob"}}`, "1", "invite", 0},
		{`{"id":"1","op":"getJoinedGroupList"}`, "1", "getJoinedGroupList", 0},
		{`{"id":"1","op":"x","args":null}`, "1", "x", 0},
		{`{"id":"","op":"x"}`, "", "", 9001},
		{`{"id":"` + strings.Repeat("i", 129) + `","op":"x"}`, "", "", 9001},
		{`{"id":7,"op":"x"}`, "", "", 9001},
		{`{"id":"2","op":""}`, "2", "", 9001},
		{`{"id":"3","op":"x","args":"s"}`, "3", "x", 9001},
		{`{"id":"4","op":"x","extra":1}`, "4", "", 9001},
		{`null`, "", "", 9001},
		{"\xff", "", "", 9001},
	}
	for _, c := range cases {
		req, err := protocol.DecodeRequest([]byte(c.frame))
		code := 0
		if err != nil {
			code = err.Code
		}
		if code != c.code || req.ID != c.id || (code == 0 && req.Op != c.op) {
			t.Errorf("%s: id=%q op=%q err=%v; want id=%q op=%q code=%d", c.frame, req.ID, req.Op, err, c.id, c.op, c.code)
		}
	}
}

func TestDecodeArgsNamesTheField(t *testing.T) {
	_, err := protocol.DecodeArgs[protocol.InviteArgs](json.RawMessage(`{"invitee":["x"]}`))
	if err == nil || err.Code != 6017 || !strings.Contains(err.Message, "invitee") {
		t.Fatalf("got %v", err)
	}
	_, err = protocol.DecodeArgs[protocol.InviteArgs](json.RawMessage(`{"invitee":"x","bogus":1}`))
	if err == nil || !strings.Contains(err.Message, "bogus") {
		t.Fatalf("got %v", err)
	}
}

func TestErrorCodesAreUnique(t *testing.T) {
	codes, reasons := map[int]string{}, map[string]int{}
	for _, e := range protocol.AllErrors {
		if prev, dup := codes[e.Code]; dup {
			t.Errorf("code %d used by %s and %s", e.Code, prev, e.Reason)
		}
		if prev, dup := reasons[e.Reason]; dup {
			t.Errorf("reason %s used by %d and %d", e.Reason, prev, e.Code)
		}
		codes[e.Code], reasons[e.Reason] = e.Reason, e.Code
	}
}

// FuzzDecodeRequest: no input crashes the decoder; what it accepts has a
// valid id and op, and the args of every op decode or fail with an error.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","op":"invite","args":{"invitee":"bob","data":"x","timeout":30}}`,
		`{"id":"2","op":"inviteInGroup","args":{"groupID":"g","inviteeList":["a","b"],"onlineUserOnly":true}}`,
		`{"id":"3","op":"accept","args":{"inviteID":"inv_1","data":""}}`,
		`{"id":"4","op":"createGroup","args":{"name":"n","memberList":[],"joinOption":"invite"}}`,
		`{"id":"5","op":"kickGroupMember","args":{"groupID":"g","memberList":["x"],"reason":"r"}}`,
		`{"id":"6","op":"x","args":null}`, `{`, `[]`, `""`, "\x00", `{"id":"\u0000","op":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, err := protocol.DecodeRequest(frame)
		if err != nil {
			if err.Code != 9001 {
				t.Fatalf("decode error with code %d", err.Code)
			}
			return
		}
		if !utf8.Valid(frame) || req.ID == "" || len(req.ID) > protocol.MaxRequestIDLen || req.Op == "" {
			t.Fatalf("accepted a bad request: %q", frame)
		}
		// Every op's args decoder must answer without panicking.
		_, _ = protocol.DecodeArgs[protocol.InviteArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.InviteInGroupArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.InviteIDArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.CreateGroupArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.GroupIDArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.GroupUsersArgs](req.Args)
		_, _ = protocol.DecodeArgs[protocol.KickArgs](req.Args)
	})
}

// TestDecodeErrorMessages: decode errors name the field as the client wrote
// it (its dotted wire path) and say what was expected, in plain words; no
// Go type or field name, and the codes are unchanged.
func TestDecodeErrorMessages(t *testing.T) {
	form := `; a request is {"id":string,"op":string,"args":object}`
	frames := []struct{ frame, msg string }{
		{`{"id":7,"op":"x"}`, `id must be a string, not a number` + form},
		{`{"id":"1","op":2}`, `op must be a string, not a number` + form},
		{`{"id":"1","op":"x","extra":1}`, `unknown field extra: the request takes id, op, args` + form},
		{`[]`, `the request must be a JSON object, not an array` + form},
		{`{"id":"1"`, `the request is not valid JSON: it ends before the value is complete` + form},
		{`{"id":"1",}`, `the request is not valid JSON: invalid character '}' looking for beginning of object key string (at byte 11)` + form},
		{`{"id":"1","op":"x","args":"s"}`, `args must be an object, not "s"`},
		{`{"id":"1","op":"x","args":[1,2]}`, `args must be an object, not an array`},
		{`{"id":"","op":"x"}`, `id is missing: every request needs a non-empty string id`},
		{`{"id":"1","op":""}`, `op is missing: every request names its op`},
		{"\xff", `the frame is not valid UTF-8`},
	}
	for _, c := range frames {
		_, err := protocol.DecodeRequest([]byte(c.frame))
		if err == nil || err.Code != 9001 || err.Message != c.msg {
			t.Errorf("%s:\n got %v\nwant malformed_request (9001): %s", c.frame, err, c.msg)
		}
	}

	args := []struct {
		decode func(json.RawMessage) *protocol.Error
		args   string
		msg    string
	}{
		{decodeInvite, `{"timeout":1e2}`, `args.timeout must be a whole number of seconds, not 1e2`},
		{decodeInvite, `{"timeout":1.5}`, `args.timeout must be a whole number of seconds, not 1.5`},
		{decodeInvite, `{"timeout":"30"}`, `args.timeout must be a whole number of seconds, not a string`},
		{decodeInvite, `{"invitee":["x"]}`, `args.invitee must be a string, not an array`},
		{decodeInvite, `{"onlineUserOnly":"yes"}`, `args.onlineUserOnly must be true or false, not a string`},
		{decodeInvite, `{"invitee":"x","bogus":1}`, `unknown field args.bogus: args takes invitee, data, onlineUserOnly, timeout, offlinePushInfo`},
		{decodeInvite, `[1]`, `args must be an object, not an array`},
		{decodeGroupInvite, `{"inviteeList":"a"}`, `args.inviteeList must be an array of strings, not a string`},
		{decodeGroupInvite, `{"inviteeList":["a",2]}`, `every element of args.inviteeList must be a string, not a number`},
		{decodeNested[signalArgs], `{"candidate":{"sdpMLineIndex":-1}}`, `args.candidate.sdpMLineIndex must be a whole number from 0 to 65535, not -1`},
		{decodeNested[signalArgs], `{"candidate":{"sdpMLineIndex":"0"}}`, `args.candidate.sdpMLineIndex must be a whole number from 0 to 65535, not a string`},
		{decodeNested[signalArgs], `{"candidate":"x"}`, `args.candidate must be an object, not a string`},
		{decodeNested[signalArgs], `{"target":1}`, `args.target must be a string, not a number`},
		{decodeNested[signalArgs], `{"candidate":{"foo":1}}`, `unknown field args.candidate.foo: args.candidate takes candidate, sdpMLineIndex`},
		{decodeNested[struct{}], `{"x":1}`, `unknown field args.x: args takes no fields`},
	}
	for _, c := range args {
		err := c.decode(json.RawMessage(c.args))
		if err == nil || err.Code != 6017 || err.Message != c.msg {
			t.Errorf("%s:\n got %v\nwant invalid_parameter (6017): %s", c.args, err, c.msg)
		}
		if err != nil && (strings.Contains(err.Message, "Signal") || strings.Contains(err.Message, "uint16") || strings.Contains(err.Message, "Go ")) {
			t.Errorf("%s: Go names in %q", c.args, err.Message)
		}
	}
}

// signalArgs has the shape of rooms.SignalArgs: an embedded struct whose
// fields are the args' own on the wire.
type signalArgs struct {
	RoomID string `json:"roomID"`
	signal
}

type signal struct {
	Target    string     `json:"target"`
	Candidate *candidate `json:"candidate,omitempty"`
}

type candidate struct {
	Candidate     string  `json:"candidate"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
}

func decodeInvite(raw json.RawMessage) *protocol.Error {
	_, err := protocol.DecodeArgs[protocol.InviteArgs](raw)
	return err
}

func decodeGroupInvite(raw json.RawMessage) *protocol.Error {
	_, err := protocol.DecodeArgs[protocol.InviteInGroupArgs](raw)
	return err
}

func decodeNested[T any](raw json.RawMessage) *protocol.Error {
	_, err := protocol.DecodeArgs[T](raw)
	return err
}
