package calls

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// BusinessID marks an invitation's data as a call (the TRTC ecosystem's
// TUICalling shape).
const BusinessID = "av_call"

// Call types of the call data.
const (
	CallTypeAudio = 1
	CallTypeVideo = 2
)

// Media types of the call ops.
const (
	MediaAudio = "audio"
	MediaVideo = "video"
)

// Senders of call data (the "sender" field, CALLS.md "Who composed a call
// end"): the server writes SenderServer into the call-end data it composes
// and never lets an app's data carry it.
const (
	SenderServer = "server"
	SenderClient = "client"
)

// LineBusy is the reject data a busy line carries, as the ecosystem does.
const LineBusy = `{"businessID":"av_call","version":4,"line_busy":"line_busy","data":{"message":"lineBusy"}}`

// CallData is the parsed call data of an invitation:
//
//	{"version":4,"businessID":"av_call","call_type":1|2,"room_id":"…",
//	 "data":{"cmd":"audioCall"|"videoCall","room_id":"…","userIDs":[…]}}
//
// room_id may be a string or a number (the ecosystem uses numbers).
type CallData struct {
	Version    int
	CallType   int
	RoomID     string
	CallID     string // data.call_id, set on the invitations the server composes
	Cmd        string
	CallEnd    *int64
	LineBusy   bool
	Sender     string                     // "server" on the call-end data the server composed; "client" on an app's
	fields     map[string]json.RawMessage // the whole object, to rewrite it
	dataFields map[string]json.RawMessage // its "data" object
}

// MediaType returns "audio" or "video".
func (d CallData) MediaType() string {
	if d.CallType == CallTypeAudio || d.Cmd == "audioCall" {
		return MediaAudio
	}
	return MediaVideo
}

// IsCallStart reports whether the data starts a call (as opposed to a
// hangup notice or another av_call command).
func (d CallData) IsCallStart() bool {
	switch d.Cmd {
	case "videoCall", "audioCall":
		return d.CallEnd == nil
	case "":
		return d.CallEnd == nil && (d.CallType == CallTypeAudio || d.CallType == CallTypeVideo)
	}
	return false
}

// IsCallEnd reports whether the data is a call-end notice (call_end, or
// data.cmd "hangup"). Trust it only when FromServer is true too.
func (d CallData) IsCallEnd() bool { return d.CallEnd != nil || d.Cmd == "hangup" }

// FromServer reports whether the server composed the data: only then is a
// call end's duration the server's.
func (d CallData) FromServer() bool { return d.Sender == SenderServer }

// ParseCallData parses an invitation's data. ok is false when the data is
// not a call's (plain signaling); err is set when it claims to be a call
// (businessID av_call) but is malformed.
func ParseCallData(data string) (d CallData, ok bool, err error) {
	// Fast path for plain signaling; "av\u005fcall" is av_call too, so data
	// with an escape is parsed in full.
	if !strings.Contains(data, BusinessID) && !strings.Contains(data, `\u`) {
		return d, false, nil
	}
	var top map[string]json.RawMessage
	if json.Unmarshal([]byte(data), &top) != nil {
		return d, false, nil // not an object: plain signaling
	}
	var bid string
	if json.Unmarshal(top["businessID"], &bid) != nil || bid != BusinessID {
		return d, false, nil
	}
	d.fields = top
	if v, ok := top["version"]; ok && json.Unmarshal(v, &d.Version) != nil {
		return d, true, badCallField("version", "a whole number", v)
	}
	if v, ok := top["call_type"]; ok && json.Unmarshal(v, &d.CallType) != nil {
		return d, true, badCallField("call_type", "1 (audio) or 2 (video)", v)
	}
	if v, ok := top["call_end"]; ok {
		var n int64
		if json.Unmarshal(v, &n) != nil {
			return d, true, badCallField("call_end", "a whole number of seconds", v)
		}
		d.CallEnd = &n
	}
	if v, ok := top["sender"]; ok {
		_ = json.Unmarshal(v, &d.Sender) // anything but a string is no sender
	}
	if v, ok := top["line_busy"]; ok {
		var s string
		d.LineBusy = json.Unmarshal(v, &s) == nil && s != ""
	}
	if d.RoomID, err = roomIDOf("room_id", top["room_id"]); err != nil {
		return d, true, err
	}
	if raw, ok := top["data"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if json.Unmarshal(raw, &d.dataFields) != nil {
			return d, true, badCallField("data", "an object", raw)
		}
		if v, ok := d.dataFields["cmd"]; ok && json.Unmarshal(v, &d.Cmd) != nil {
			return d, true, badCallField("data.cmd", "a string", v)
		}
		if v, ok := d.dataFields["call_id"]; ok && json.Unmarshal(v, &d.CallID) != nil {
			return d, true, badCallField("data.call_id", "a string", v)
		}
		if d.RoomID == "" {
			if d.RoomID, err = roomIDOf("data.room_id", d.dataFields["room_id"]); err != nil {
				return d, true, err
			}
		}
	}
	if d.CallType != 0 && d.CallType != CallTypeAudio && d.CallType != CallTypeVideo {
		return d, true, badCallField("call_type", "1 (audio) or 2 (video)", top["call_type"])
	}
	return d, true, nil
}

// badCallField is the bad_call_data error for a field of the call data,
// which the client sent as the JSON string args.data.
func badCallField(field, want string, got json.RawMessage) error {
	return ErrBadCallData.WithMessage("args.data.%s must be %s, not %s", field, want, protocol.DescribeJSON(got))
}

// ClientData returns the data of an app's invitation or answer as the server
// passes it on (CALLS.md "Who composed a call end"): call-end data (av_call
// with call_end or data.cmd "hangup") gets "sender":"client", and so does
// any JSON object that names a sender (in any letter case, as Go's JSON
// decoder matches field names), so that only
// the server's own call-end data ever carries "sender":"server". Other data
// is returned unchanged; malformed call data is a bad_call_data error.
func ClientData(data string) (string, error) {
	d, isCall, err := ParseCallData(data)
	if err != nil {
		return "", err
	}
	if isCall && d.IsCallEnd() {
		return markClient(d.fields), nil
	}
	if !strings.HasPrefix(strings.TrimSpace(data), "{") || !mayNameSender(data) {
		return data, nil
	}
	var top map[string]json.RawMessage
	if json.Unmarshal([]byte(data), &top) != nil {
		return data, nil // not an object
	}
	for k := range top {
		if strings.EqualFold(k, "sender") {
			return markClient(top), nil
		}
	}
	return data, nil
}

// mayNameSender reports whether data may hold a key that letter case
// aside reads "sender": without an escape, a byte outside ASCII (Unicode
// folds 'ſ' to 's') or "sender" in any case, no key of it can, and the
// decoding is spared.
func mayNameSender(data string) bool {
	const word = "sender"
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\\' || c >= utf8.RuneSelf {
			return true
		}
		if c|0x20 == 's' && len(data)-i >= len(word) && strings.EqualFold(data[i:i+len(word)], word) {
			return true
		}
	}
	return false
}

// markClient renders top with every sender key (any letter case) replaced
// by "sender":"client".
func markClient(top map[string]json.RawMessage) string {
	out := make(map[string]json.RawMessage, len(top)+1)
	for k, v := range top {
		if !strings.EqualFold(k, "sender") {
			out[k] = v
		}
	}
	out["sender"], _ = json.Marshal(SenderClient)
	b, _ := json.Marshal(out)
	return string(b)
}

func roomIDOf(field string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&n) == nil {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil && i >= 0 {
			return strconv.FormatInt(i, 10), nil
		}
	}
	return "", badCallField(field, "a string or a non-negative whole number", raw)
}

// WithRoomID returns the data with room_id set at the top level and in
// data, every other field kept as it was.
func (d CallData) WithRoomID(roomID string) string { return d.with(roomID, "") }

// WithIDs returns the data with room_id set as WithRoomID does and call_id
// set in data (the server does this for the invitations it composes: call,
// groupCall, inviteUser).
func (d CallData) WithIDs(roomID, callID string) string { return d.with(roomID, callID) }

func (d CallData) with(roomID, callID string) string {
	top := make(map[string]json.RawMessage, len(d.fields)+1)
	for k, v := range d.fields {
		top[k] = v
	}
	rid, _ := json.Marshal(roomID)
	top["room_id"] = rid
	inner := make(map[string]json.RawMessage, len(d.dataFields)+2)
	for k, v := range d.dataFields {
		inner[k] = v
	}
	inner["room_id"] = rid
	if callID != "" {
		inner["call_id"], _ = json.Marshal(callID)
	}
	top["data"], _ = json.Marshal(inner)
	out, _ := json.Marshal(top)
	return string(out)
}

// NewCallData builds the data of a call the server places for the call ops.
func NewCallData(mediaType, roomID string, invitees []string, userData string) string {
	ct, cmd := CallTypeVideo, "videoCall"
	if mediaType == MediaAudio {
		ct, cmd = CallTypeAudio, "audioCall"
	}
	inner := map[string]any{"cmd": cmd, "room_id": roomID, "userIDs": invitees}
	if userData != "" {
		inner["userData"] = userData
	}
	out, _ := json.Marshal(map[string]any{"version": 4, "businessID": BusinessID, "call_type": ct, "room_id": roomID, "data": inner})
	return string(out)
}

// hangupData is the data of the call-end invitation (TRTC's step 5).
func hangupData(callID, roomID, mediaType string, seconds int64) string {
	ct := CallTypeVideo
	if mediaType == MediaAudio {
		ct = CallTypeAudio
	}
	out, _ := json.Marshal(map[string]any{"version": 4, "businessID": BusinessID, "call_type": ct, "room_id": roomID,
		"call_end": seconds, "sender": SenderServer, "data": map[string]any{"cmd": "hangup", "room_id": roomID, "call_id": callID}})
	return string(out)
}
