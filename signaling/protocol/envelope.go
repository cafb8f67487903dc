package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"unicode/utf8"
)

// MaxRequestIDLen bounds the client's request id.
const MaxRequestIDLen = 128

// Request is a decoded request frame: {"id":"…","op":"…","args":{…}}.
type Request struct {
	ID   string          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Reply is a reply frame: exactly one of Result and Error is set.
type Reply struct {
	ID     string `json:"id"`
	Result any    `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// EventFrame is an event frame: {"event":"…","data":{…}}.
type EventFrame struct {
	Event string `json:"event"`
	Data  any    `json:"data"`
}

// requestForm is the shape of a request, quoted in envelope errors.
const requestForm = `a request is {"id":string,"op":string,"args":object}`

// DecodeRequest parses one request frame. On error the returned Request
// still carries the id when it could be read, so the reply can name it.
// Error messages name the field as the client wrote it (PROTOCOL.md).
func DecodeRequest(frame []byte) (Request, *Error) {
	if req, ok := decodeRequestFast(frame); ok {
		return req, nil
	}
	return decodeRequest(frame)
}

// decodeRequest is DecodeRequest through encoding/json: every frame the
// fast path does not take, and every error.
func decodeRequest(frame []byte) (Request, *Error) {
	var req Request
	if !utf8.Valid(frame) {
		return req, ErrMalformedRequest.WithMessage("the frame is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// Recover the id for the reply if the envelope is at least an object with an id.
		var probe struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(frame, &probe) == nil {
			if s, ok := probe.ID.(string); ok && len(s) <= MaxRequestIDLen {
				req.ID = s
			}
		}
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return req, ErrMalformedRequest.WithMessage("the request is %s; %s", wireError(err, reflect.TypeOf(req), frame, ""), requestForm)
		}
		if errors.As(err, &te) && te.Field == "" {
			return req, ErrMalformedRequest.WithMessage("the request must be a JSON object, not %s; %s", valueWords(te.Value), requestForm)
		}
		return req, ErrMalformedRequest.WithMessage("%s; %s", wireError(err, reflect.TypeOf(req), frame, ""), requestForm)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, ErrMalformedRequest.WithMessage("trailing data after the request object")
	}
	if req.ID == "" || len(req.ID) > MaxRequestIDLen {
		id := req.ID
		req.ID = ""
		if len(id) > MaxRequestIDLen {
			return req, ErrMalformedRequest.WithMessage("id must be at most %d bytes, not %d", MaxRequestIDLen, len(id))
		}
		return req, ErrMalformedRequest.WithMessage("id is missing: every request needs a non-empty string id")
	}
	if req.Op == "" {
		return req, ErrMalformedRequest.WithMessage("op is missing: every request names its op")
	}
	if len(req.Args) > 0 && req.Args[0] != '{' && string(req.Args) != "null" {
		return req, ErrMalformedRequest.WithMessage("args must be an object, not %s", DescribeJSON(req.Args))
	}
	return req, nil
}

// DecodeArgs decodes a request's args strictly into T: unknown fields and
// wrong types are invalid_parameter errors naming the field by its wire
// path (args.candidate.sdpMLineIndex) and saying what was expected. Absent
// args decode as the zero T.
func DecodeArgs[T any](raw json.RawMessage) (T, *Error) {
	var v T
	if len(raw) == 0 || string(raw) == "null" {
		return v, nil
	}
	if decodeArgsFast(reflect.ValueOf(&v).Elem(), raw) {
		return v, nil
	}
	return decodeArgsJSON[T](raw) // afresh: the fast path may have set fields
}

// decodeArgsJSON is DecodeArgs through encoding/json: every args value the
// fast path does not take, and every error.
func decodeArgsJSON[T any](raw json.RawMessage) (T, *Error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, ErrInvalidParameter.WithMessage("%s", wireError(err, reflect.TypeOf(v), raw, "args"))
	}
	return v, nil
}

// EncodeEvent renders an event frame once, so that it can be queued to many
// connections.
func EncodeEvent(name string, data any) ([]byte, error) {
	raw, err := MarshalData(data)
	if err != nil {
		return nil, err
	}
	return EncodeEventRaw(name, raw), nil
}

// EncodeEventRaw renders an event frame around data that json.Marshal
// encoded (compact, HTML characters escaped): the same bytes as
// EncodeEvent(name, v) where data is json.Marshal(v).
func EncodeEventRaw(name string, data json.RawMessage) []byte {
	b := make([]byte, 0, len(`{"event":,"data":}`)+len(name)+2+len(data))
	b = append(b, `{"event":`...)
	b = appendString(b, name)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// EncodeReply renders a reply frame: the bytes json.Marshal renders for
// Reply, the envelope written by hand.
func EncodeReply(id string, result any, e *Error) ([]byte, error) {
	if e != nil {
		return json.Marshal(Reply{ID: id, Error: e})
	}
	raw := []byte("{}") // json.Marshal(struct{}{})
	if result != nil {
		var err error
		if raw, err = MarshalData(result); err != nil {
			return nil, err
		}
	}
	b := make([]byte, 0, len(`{"id":,"result":}`)+len(id)+2+len(raw))
	b = append(b, `{"id":`...)
	b = appendString(b, id)
	b = append(b, `,"result":`...)
	b = append(b, raw...)
	return append(b, '}'), nil
}

// decodeRequestFast decodes the common shape of a request without
// encoding/json's reflection: an object of the keys "id", "op" and "args"
// (each at most once, spelled so), id and op strings without escapes or
// control characters, args an object (or absent), and nothing after it.
// It reports ok only for a frame that decodeRequest accepts, with the same
// Request; anything else (errors included) is left to decodeRequest.
func decodeRequestFast(frame []byte) (req Request, ok bool) {
	if !utf8.Valid(frame) {
		return Request{}, false
	}
	i := skipSpace(frame, 0)
	if i >= len(frame) || frame[i] != '{' {
		return Request{}, false
	}
	var seenID, seenOp, seenArgs bool
	i++
	for {
		i = skipSpace(frame, i)
		k, next, ok := plainBytes(frame, i)
		if !ok {
			return Request{}, false
		}
		key := string(k) // compared only: no copy
		i = skipSpace(frame, next)
		if i >= len(frame) || frame[i] != ':' {
			return Request{}, false
		}
		i = skipSpace(frame, i+1)
		switch {
		case key == "id" && !seenID:
			seenID = true
			if req.ID, i, ok = plainString(frame, i); !ok {
				return Request{}, false
			}
		case key == "op" && !seenOp:
			seenOp = true
			if req.Op, i, ok = plainString(frame, i); !ok {
				return Request{}, false
			}
		case key == "args" && !seenArgs:
			seenArgs = true
			end, ok := objectEnd(frame, i)
			if !ok || !json.Valid(frame[i:end]) {
				return Request{}, false
			}
			req.Args = json.RawMessage(bytes.Clone(frame[i:end]))
			i = end
		default:
			return Request{}, false
		}
		i = skipSpace(frame, i)
		if i >= len(frame) {
			return Request{}, false
		}
		if frame[i] == '}' {
			break
		}
		if frame[i] != ',' {
			return Request{}, false
		}
		i++
	}
	if skipSpace(frame, i+1) != len(frame) {
		return Request{}, false
	}
	if req.ID == "" || len(req.ID) > MaxRequestIDLen || req.Op == "" {
		return Request{}, false
	}
	return req, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string starting at b[i] that has no escape and
// no control character, returning it and the index after it.
func plainString(b []byte, i int) (s string, next int, ok bool) {
	raw, next, ok := plainBytes(b, i)
	if !ok {
		return "", 0, false
	}
	return string(raw), next, true
}

// plainBytes is plainString without the copy: the string's bytes in b.
func plainBytes(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// objectEnd returns the index after the JSON object starting at b[i],
// matching braces outside strings; the caller validates what it spans.
func objectEnd(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			for j++; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, b[j] == '}'
			}
		}
	}
	return 0, false
}
