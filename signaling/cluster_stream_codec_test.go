package signaling

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// ringFrame is the ring event as the engine encodes it.
func ringFrame(t testing.TB, data string) json.RawMessage {
	t.Helper()
	f, err := json.Marshal(map[string]any{"event": protocol.EvReceiveNewInvitation, "data": protocol.NewInvitationEvent{
		InviteID: "inv_5f0c9a1e2b7d44c1a0e3f912", Inviter: "caller00042", InviteeList: []string{"callee00042"},
		Data: data, Timeout: 30,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ringBatch is the stream entry of a ring, as route writes it.
func ringBatch(t testing.TB) *streamBatch {
	return &streamBatch{Items: []streamItem{{
		Users: []string{"callee00042"}, Frame: ringFrame(t, `{"bench":1}`), Ring: "inv_5f0c9a1e2b7d44c1a0e3f912",
		Parties: []string{"caller00042", "callee00042"},
		Keep:    &streamKeep{ID: "kd_0a1b2c3d", Sender: "caller00042", Nodes: map[string][]string{"callee00042": {"bench-node2"}}},
	}}}
}

func codecCases(t testing.TB) map[string]*streamBatch {
	return map[string]*streamBatch{
		"ring":                    ringBatch(t),
		"empty":                   {},
		"no items":                {Items: []streamItem{}},
		"accepted, actor's token": {Items: []streamItem{{Users: []string{"a", "b"}, Frame: json.RawMessage(`{"event":"onInviteeAccepted","data":{"inviteID":"x"}}`), Except: 1<<63 + 5}}},
		"escapes and HTML":        {Items: []streamItem{{Users: []string{"q\"uote", `back\slash`, "<tag>&", "tab\t", "é", "\u2028", "bad\xff"}, Frame: ringFrame(t, "<b>&\"é\u2028\n")}}},
		"nil fields":              {Items: []streamItem{{}, {Users: []string{}, Parties: []string{}, Keep: &streamKeep{}}}},
		"keep, several nodes": {Items: []streamItem{{Users: []string{"u2", "u1"}, Frame: json.RawMessage(`[1,"x",{"a":[true,null]}]`),
			Keep: &streamKeep{ID: "kd", Actor: "me", Nodes: map[string][]string{"u2": {"n1", "n2"}, "u1": nil, "u3": {}}}}}},
		"scalar frames": {Items: []streamItem{{Frame: json.RawMessage(`"s"`)}, {Frame: json.RawMessage(`12.5e3`)}, {Frame: json.RawMessage(`null`)}}},
	}
}

// TestStreamBatchEncodeIsJSON: encode writes what json.Marshal wrote
// before it (the keep script's template and older nodes depend on the
// format), byte for byte, and decodeStreamBatch reads it back as
// json.Unmarshal does.
func TestStreamBatchEncodeIsJSON(t *testing.T) {
	for name, b := range codecCases(t) {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			got := b.encode()
			if string(got) != string(want) {
				t.Fatalf("encode:\n got %s\nwant %s", got, want)
			}
			checkDecode(t, got)
		})
	}
	// A frame that encoding/json did not write (spaces, raw UTF-8):
	// compacted and escaped as json.Marshal does.
	b := &streamBatch{Items: []streamItem{{Frame: json.RawMessage("{ \"a\" : \"é<\" }")}}}
	want, _ := json.Marshal(b)
	if got := b.encode(); string(got) != string(want) {
		t.Fatalf("encode:\n got %s\nwant %s", got, want)
	}
}

// checkDecode fails unless decodeStreamBatch(payload) is what
// json.Unmarshal gives (or both fail).
func checkDecode(t *testing.T, payload []byte) {
	t.Helper()
	var want streamBatch
	werr := json.Unmarshal(payload, &want)
	got, gerr := decodeStreamBatch(payload)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("decode %q: err %v, json.Unmarshal's %v", payload, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("decode %q:\n got %#v\nwant %#v", payload, got, want)
	}
}

// TestStreamBatchDecode: entries the fast path leaves to encoding/json
// (a forwarded entry's list as cjson writes it, with "\/"; whitespace;
// repeated or unknown fields; bad JSON) decode as json.Unmarshal does.
func TestStreamBatchDecode(t *testing.T) {
	for _, p := range []string{
		`{"i":[{"u":["u1"],"f":{"event":"e"},"r":"inv","k":{"id":"kd>","s":"a","n":{"u1":["n\/1"]}}}]}`,
		` { "i" : [ { "u" : [ "a" , "b" ] , "f" : { "x" : [ 1 , 2 ] } , "x" : 7 } ] } `,
		`{"i":[{"u":["a"],"u":["b"]}]}`,
		`{"i":[{"k":{"id":"1","n":{"a":["x"]}},"k":{"s":"2"}}]}`,
		`{"i":[{"u":["a"]}],"i":[{"r":"x"}]}`,
		`{"i":[{"U":["a"]}]}`,
		`{"i":[{"z":1}]}`,
		`{"i":[{"f":null}]}`,
		`{"i":[{"f":1},{"f":"a}"},{"f":[{"]":"["}]}]}`,
		`{"i":[{"f":{"a" 1}}]}`,
		`{"i":[{"f":{"a":1}}]}x`,
		`{"i":[{"x":-1}]}`,
		`{"i":[{"x":01}]}`,
		`{"i":[{"x":18446744073709551616}]}`,
		`{"i":[{"k":null,"p":null,"u":null}]}`,
		`{"i":null}`,
		`{"i":[{"u":["\u00e9"]}]}`,
		`{"i":[`,
		``,
	} {
		checkDecode(t, []byte(p))
	}
}

func FuzzStreamBatchDecode(f *testing.F) {
	for _, b := range codecCases(f) {
		f.Add(b.encode())
	}
	f.Add([]byte(`{"i":[{"u":["u1"],"f":{"event":"e"},"k":{"id":"kd>","n":{"u1":["n\/1"]}}}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkDecode(t, payload)
	})
}

// BenchmarkStreamBatch: a ring's stream entry, encoded by route and
// decoded by the reader of the callee's node; "json" is encoding/json (the
// codec before), "codec" this file's.
func BenchmarkStreamBatch(b *testing.B) {
	batch := ringBatch(b)
	payload := batch.encode()
	b.Run("encode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = batch.encode()
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out streamBatch
			if err := json.Unmarshal(payload, &out); err != nil || len(out.Items) != 1 {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, err := decodeStreamBatch(payload)
			if err != nil || len(out.Items) != 1 {
				b.Fatal(err)
			}
		}
	})
}
