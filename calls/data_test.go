package calls_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

func TestParseCallData(t *testing.T) {
	cases := []struct {
		data        string
		call, start bool
		room, media string
		bad         bool
	}{
		{`{"version":4,"businessID":"av_call","call_type":2,"room_id":"r1","data":{"cmd":"videoCall","room_id":"r1"}}`, true, true, "r1", "video", false},
		{`{"businessID":"av_call","call_type":1,"room_id":123456}`, true, true, "123456", "audio", false},
		{`{"businessID":"av_call","data":{"cmd":"audioCall","room_id":"x"}}`, true, true, "x", "audio", false},
		{`{"businessID":"av_call","call_end":65,"data":{"cmd":"hangup"}}`, true, false, "", "video", false},
		{`{"businessID":"av_call","line_busy":"line_busy"}`, true, false, "", "video", false},
		{`{"businessID":"other","call_type":1}`, false, false, "", "", false},
		{`raise hand av_call`, false, false, "", "", false},
		{`{"businessID":"av_call","call_type":"video"}`, true, false, "", "", true},
		{`{"businessID":"av_call","call_type":3}`, true, false, "", "", true},
		{`{"businessID":"av_call","room_id":-1}`, true, false, "", "", true},
		{`{"businessID":"av_call","data":"x"}`, true, false, "", "", true},
	}
	for _, c := range cases {
		d, ok, err := calls.ParseCallData(c.data)
		if ok != c.call || (err != nil) != c.bad {
			t.Errorf("%s: call=%v err=%v", c.data, ok, err)
			continue
		}
		if !ok || c.bad {
			continue
		}
		if d.IsCallStart() != c.start || (c.start && (d.RoomID != c.room || d.MediaType() != c.media)) {
			t.Errorf("%s: start=%v room=%q media=%q", c.data, d.IsCallStart(), d.RoomID, d.MediaType())
		}
	}
}

func TestWithRoomIDKeepsFields(t *testing.T) {
	d, _, _ := calls.ParseCallData(`{"version":4,"businessID":"av_call","call_type":2,"custom":{"a":1},"data":{"cmd":"videoCall","userIDs":["b"]}}`)
	out := d.WithRoomID("room-9")
	var v struct {
		Custom struct{ A int } `json:"custom"`
		Room   string          `json:"room_id"`
		Data   struct {
			Cmd     string   `json:"cmd"`
			Room    string   `json:"room_id"`
			UserIDs []string `json:"userIDs"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Room != "room-9" || v.Data.Room != "room-9" || v.Custom.A != 1 || v.Data.Cmd != "videoCall" || len(v.Data.UserIDs) != 1 {
		t.Fatalf("rewritten data %s", out)
	}
}

// FuzzParseCallData: any data string is either not a call, a call, or a
// malformed call with an error; never a panic; a call's rewritten data
// parses back to the same room.
func FuzzParseCallData(f *testing.F) {
	for _, s := range []string{
		`{"version":4,"businessID":"av_call","call_type":2,"room_id":"r1","data":{"cmd":"videoCall","room_id":"r1"}}`,
		`{"businessID":"av_call","call_type":1,"room_id":123456}`,
		`{"businessID":"av_call","call_end":65,"data":{"cmd":"hangup"}}`,
		`{"businessID":"av_call","room_id":1e99}`, `{"businessID":"av_call","data":null}`, `av_call`, `{}`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		d, ok, err := calls.ParseCallData(data)
		if !ok || err != nil {
			return
		}
		_ = d.MediaType()
		if d.IsCallStart() {
			back, ok, err := calls.ParseCallData(d.WithRoomID("room-x"))
			if !ok || err != nil || back.RoomID != "room-x" || !back.IsCallStart() {
				t.Fatalf("rewritten data does not parse back: %v %v %+v", ok, err, back)
			}
		}
	})
}

// TestCallDataErrorMessages: malformed call data is bad_call_data (12004)
// naming the field inside args.data and saying what was expected.
func TestCallDataErrorMessages(t *testing.T) {
	cases := []struct{ data, msg string }{
		{`{"businessID":"av_call","call_end":1e2}`, `args.data.call_end must be a whole number of seconds, not 1e2`},
		{`{"businessID":"av_call","call_end":"65"}`, `args.data.call_end must be a whole number of seconds, not "65"`},
		{`{"businessID":"av_call","call_type":"video"}`, `args.data.call_type must be 1 (audio) or 2 (video), not "video"`},
		{`{"businessID":"av_call","call_type":3}`, `args.data.call_type must be 1 (audio) or 2 (video), not 3`},
		{`{"businessID":"av_call","version":4.5}`, `args.data.version must be a whole number, not 4.5`},
		{`{"businessID":"av_call","room_id":-1}`, `args.data.room_id must be a string or a non-negative whole number, not -1`},
		{`{"businessID":"av_call","room_id":{"a":1}}`, `args.data.room_id must be a string or a non-negative whole number, not an object`},
		{`{"businessID":"av_call","data":"x"}`, `args.data.data must be an object, not "x"`},
		{`{"businessID":"av_call","data":{"cmd":1}}`, `args.data.data.cmd must be a string, not 1`},
		{`{"businessID":"av_call","data":{"call_id":[]}}`, `args.data.data.call_id must be a string, not an array`},
		{`{"businessID":"av_call","data":{"room_id":true}}`, `args.data.data.room_id must be a string or a non-negative whole number, not true`},
	}
	for _, c := range cases {
		_, ok, err := calls.ParseCallData(c.data)
		var se *protocol.Error
		if !ok || !errors.As(err, &se) || se.Code != 12004 || se.Message != c.msg {
			t.Errorf("%s:\n got %v %v\nwant bad_call_data (12004): %s", c.data, ok, err, c.msg)
		}
	}
}

// TestClientData: the server's rewrite of an app's data (CALLS.md "Who
// composed a call end").
func TestClientData(t *testing.T) {
	cases := []struct{ in, out string }{
		{`hello`, `hello`},
		{`{"cmd":"raise hand"}`, `{"cmd":"raise hand"}`},
		{`{"businessID":"av_call","call_type":2,"data":{"cmd":"videoCall"}}`, `{"businessID":"av_call","call_type":2,"data":{"cmd":"videoCall"}}`},
		{`{"businessID":"av_call","call_end":5}`, `{"businessID":"av_call","call_end":5,"sender":"client"}`},
		{`{"businessID":"av_call","sender":"server","data":{"cmd":"hangup"}}`, `{"businessID":"av_call","data":{"cmd":"hangup"},"sender":"client"}`},
		{`{"x":1,"Sender":"server","sEnDeR":"server"}`, `{"sender":"client","x":1}`},
		{`{"x":1,"\u017fender":"server"}`, `{"sender":"client","x":1}`}, // ſ folds to s
		{`{"businessID":"av\u005fcall","call_end":5}`, `{"businessID":"av\u005fcall","call_end":5,"sender":"client"}`},
	}
	for _, c := range cases {
		got, err := calls.ClientData(c.in)
		if err != nil || got != c.out {
			t.Errorf("ClientData(%s) = %s, %v; want %s", c.in, got, err, c.out)
		}
	}
	if _, err := calls.ClientData(`{"businessID":"av_call","call_end":"x"}`); !errors.Is(err, calls.ErrBadCallData) {
		t.Errorf("malformed call data: %v", err)
	}
}

// TestClientDataSenderSpellings (issue 16): data that cannot name a sender
// is passed on without being decoded; every spelling of a sender key is
// still marked as the client's.
func TestClientDataSenderSpellings(t *testing.T) {
	for _, in := range []string{`{"bench":1}`, `{"a":"send","b":"ender"}`, `{"sendr":1}`} {
		if out, err := calls.ClientData(in); err != nil || out != in {
			t.Errorf("ClientData(%s) = %s, %v; want it unchanged", in, out, err)
		}
	}
	for _, in := range []string{`{"sender":"server"}`, `{"SeNdEr":"server","x":1}`, `{"\u0073ender":"server"}`,
		`{"\u0053ENDER":"x"}`, "{\"\u017fender\":\"server\"}", `{"x":1,"Sender":null}`} {
		out, err := calls.ClientData(in)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &top); err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range top {
			if strings.EqualFold(k, "sender") {
				n++
			}
		}
		if n != 1 || string(top["sender"]) != `"client"` {
			t.Errorf("ClientData(%s) = %s, want one sender, the client", in, out)
		}
	}
}

// FuzzClientData: whatever an app sends, the data passed on never carries a
// sender other than "client" (in any letter case) and is never the
// server's call end; passing it through again changes nothing.
func FuzzClientData(f *testing.F) {
	for _, s := range []string{
		`{"businessID":"av_call","call_end":5,"sender":"server","data":{"cmd":"hangup"}}`,
		`{"SENDER":"server"}`, `{"businessID":"av\u005fcall","data":{"cmd":"hangup"}}`, `hello`, `{}`, ``, `[]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		out, err := calls.ClientData(data)
		if err != nil {
			return
		}
		if cd, ok, _ := calls.ParseCallData(out); ok && cd.FromServer() {
			t.Fatalf("%q passed on as the server's: %s", data, out)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal([]byte(out), &top) == nil {
			for k, v := range top {
				if strings.EqualFold(k, "sender") && (k != "sender" || string(v) != `"client"`) {
					t.Fatalf("%q passed on with %s=%s", data, k, v)
				}
			}
		}
		if again, err := calls.ClientData(out); err != nil || again != out {
			t.Fatalf("not idempotent: %s -> %s (%v)", out, again, err)
		}
	})
}

// BenchmarkClientData is an invite's data on its way in (issue 16): data
// that names no sender is passed on without being decoded.
func BenchmarkClientData(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if out, err := calls.ClientData(`{"bench":1}`); err != nil || out != `{"bench":1}` {
			b.Fatal(out, err)
		}
	}
}
