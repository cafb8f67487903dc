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
	return json.Marshal(EventFrame{Event: name, Data: data})
}

// EncodeReply renders a reply frame.
func EncodeReply(id string, result any, e *Error) ([]byte, error) {
	if e != nil {
		return json.Marshal(Reply{ID: id, Error: e})
	}
	if result == nil {
		result = struct{}{}
	}
	return json.Marshal(Reply{ID: id, Result: result})
}
