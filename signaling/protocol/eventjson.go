package protocol

import (
	"encoding/json"
	"reflect"
	"strconv"
	"sync"
	"unicode/utf8"
)

// The data of the events a call setup sends, encoded without encoding/json's
// reflection (issue 16): MarshalData gives json.Marshal's bytes, written by
// hand for the types below (TestMarshalDataMatches, FuzzMarshalData) and by
// encoding/json for anything else.

// JSONAppender is a type outside this package (an op's result) that
// appends json.Marshal's bytes of itself; MarshalData uses it.
type JSONAppender interface {
	AppendJSON(b []byte) []byte
}

// AppendString appends s as json.Marshal writes it, for JSONAppenders.
func AppendString(b []byte, s string) []byte { return appendString(b, s) }

// MarshalData is json.Marshal(v), byte for byte.
func MarshalData(v any) ([]byte, error) {
	var app func([]byte) []byte
	switch d := v.(type) {
	case NewInvitationEvent:
		app = d.appendJSON
	case *NewInvitationEvent:
		if d == nil {
			return json.Marshal(v)
		}
		app = d.appendJSON
	case InviteeEvent:
		app = d.appendJSON
	case CancelledEvent:
		app = d.appendJSON
	case TimeoutEvent:
		app = d.appendJSON
	case ModifiedEvent:
		app = d.appendJSON
	case InviteResult:
		app = d.appendJSON
	case JSONAppender:
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			return json.Marshal(v) // null
		}
		app = d.AppendJSON
	default:
		return json.Marshal(v)
	}
	bp := dataBufs.Get().(*[]byte)
	b := app((*bp)[:0])
	out := make([]byte, len(b))
	copy(out, b)
	if cap(b) <= maxPooledData {
		*bp = b
		dataBufs.Put(bp)
	}
	return out, nil
}

// dataBufs are MarshalData's scratch buffers: the data is written into one
// and copied out at its exact size (one allocation, as encoding/json's).
var dataBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledData bounds a buffer kept for reuse (a larger one is dropped).
const maxPooledData = 16 << 10

func (d *InviteResult) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	return append(b, '}')
}

func (d *NewInvitationEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	b = append(b, `,"inviter":`...)
	b = appendString(b, d.Inviter)
	b = append(b, `,"groupID":`...)
	b = appendString(b, d.GroupID)
	b = append(b, `,"inviteeList":`...)
	b = appendStrings(b, d.InviteeList)
	b = append(b, `,"data":`...)
	b = appendString(b, d.Data)
	b = append(b, `,"timeout":`...)
	b = strconv.AppendInt(b, int64(d.Timeout), 10)
	b = append(b, `,"timeoutMs":`...)
	b = strconv.AppendInt(b, d.TimeoutMs, 10)
	b = append(b, `,"onlineUserOnly":`...)
	b = strconv.AppendBool(b, d.OnlineUserOnly)
	return append(b, '}')
}

func (d *InviteeEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	b = append(b, `,"invitee":`...)
	b = appendString(b, d.Invitee)
	b = append(b, `,"data":`...)
	b = appendString(b, d.Data)
	return append(b, '}')
}

func (d *CancelledEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	b = append(b, `,"inviter":`...)
	b = appendString(b, d.Inviter)
	b = append(b, `,"data":`...)
	b = appendString(b, d.Data)
	return append(b, '}')
}

func (d *TimeoutEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	b = append(b, `,"inviteeList":`...)
	b = appendStrings(b, d.InviteeList)
	return append(b, '}')
}

func (d *ModifiedEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"inviteID":`...)
	b = appendString(b, d.InviteID)
	b = append(b, `,"data":`...)
	b = appendString(b, d.Data)
	return append(b, '}')
}

// AppendJSONString appends s as json.Marshal writes it (for other
// hand-written encoders, e.g. the cluster's stream codec).
func AppendJSONString(b []byte, s string) []byte { return appendString(b, s) }

// AppendJSONStrings appends ss as json.Marshal writes a []string (nil: null).
func AppendJSONStrings(b []byte, ss []string) []byte { return appendStrings(b, ss) }

// appendStrings appends ss as encoding/json writes a []string (nil: null).
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString appends s as encoding/json writes a string (HTML characters
// escaped): written here for printable ASCII, ", \, <, >, & and valid UTF-8
// but U+2028 and U+2029; a string with a control character, invalid UTF-8
// or U+2028/U+2029 goes through json.Marshal.
func appendString(b []byte, s string) []byte {
	start := len(b)
	b = append(b, '"')
	plain := 0 // s[plain:i] is still to be copied
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			var esc string
			switch {
			case c < 0x20:
				return appendMarshaled(b[:start], s)
			case c == '"':
				esc = `\"`
			case c == '\\':
				esc = `\\`
			case c == '<':
				esc = `\u003c`
			case c == '>':
				esc = `\u003e`
			case c == '&':
				esc = `\u0026`
			default:
				i++
				continue
			}
			b = append(b, s[plain:i]...)
			b = append(b, esc...)
			i++
			plain = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return appendMarshaled(b[:start], s)
		}
		i += size
	}
	b = append(b, s[plain:]...)
	return append(b, '"')
}

// plainASCII[c]: encoding/json writes the byte c as it is in a string.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

func appendMarshaled(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
