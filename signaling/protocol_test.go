package signaling_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchboard-rtc/switchboard/signaling"
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
		req, err := signaling.DecodeRequest([]byte(c.frame))
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
	_, err := signaling.DecodeArgs[signaling.InviteArgs](json.RawMessage(`{"invitee":["x"]}`))
	if err == nil || err.Code != 6017 || !strings.Contains(err.Message, "invitee") {
		t.Fatalf("got %v", err)
	}
	_, err = signaling.DecodeArgs[signaling.InviteArgs](json.RawMessage(`{"invitee":"x","bogus":1}`))
	if err == nil || !strings.Contains(err.Message, "bogus") {
		t.Fatalf("got %v", err)
	}
}

func TestErrorCodesAreUnique(t *testing.T) {
	codes, reasons := map[int]string{}, map[string]int{}
	for _, e := range signaling.AllErrors {
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
		req, err := signaling.DecodeRequest(frame)
		if err != nil {
			if err.Code != 9001 {
				t.Fatalf("decode error with code %d", err.Code)
			}
			return
		}
		if !utf8.Valid(frame) || req.ID == "" || len(req.ID) > signaling.MaxRequestIDLen || req.Op == "" {
			t.Fatalf("accepted a bad request: %q", frame)
		}
		// Every op's args decoder must answer without panicking.
		_, _ = signaling.DecodeArgs[signaling.InviteArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.InviteInGroupArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.InviteIDArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.CreateGroupArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.GroupIDArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.GroupUsersArgs](req.Args)
		_, _ = signaling.DecodeArgs[signaling.KickArgs](req.Args)
	})
}
