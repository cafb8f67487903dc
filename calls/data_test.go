package calls_test

import (
	"encoding/json"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
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
