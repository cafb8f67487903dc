package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// The stream entries' codec (CLUSTER-DESIGN.md "Costs, and where the time
// goes"). The format is JSON, as encoding/json writes a streamBatch: the
// keep script (keepScript) builds forwarded entries from a template of it
// and fills in a list with cjson, and nodes of an older build read it.
// Only the code is cheaper: encode appends the fields directly (the frame,
// which the engine encoded with encoding/json, is copied as it is, not
// compacted again), and decodeStreamBatch reads the entries nodes write
// without reflection, the frame sliced out of the payload (validated once,
// not copied). Anything else in an entry (escaped strings, e.g. the lists
// cjson writes, or unknown fields) is left to encoding/json: the result is
// the same, only slower.

// encode is json.Marshal(b), byte for byte, for frames that encoding/json
// wrote (compact, HTML-escaped; TestStreamBatchEncodeIsJSON).
func (b *streamBatch) encode() []byte {
	n := 8
	for _, it := range b.Items {
		n += 40 + len(it.Frame) + len(it.Ring) + stringsLen(it.Users) + stringsLen(it.Parties)
		if k := it.Keep; k != nil {
			n += 32 + len(k.ID) + len(k.Sender) + len(k.Actor)
			for u, nodes := range k.Nodes {
				n += len(u) + 4 + stringsLen(nodes)
			}
		}
	}
	out := make([]byte, 0, n)
	out = append(out, `{"i":`...)
	if b.Items == nil {
		out = append(out, "null"...)
	} else {
		out = append(out, '[')
		for i := range b.Items {
			if i > 0 {
				out = append(out, ',')
			}
			out = b.Items[i].appendJSON(out)
		}
		out = append(out, ']')
	}
	return append(out, '}')
}

func (it *streamItem) appendJSON(out []byte) []byte {
	out = append(out, `{"u":`...)
	out = protocol.AppendJSONStrings(out, it.Users)
	out = append(out, `,"f":`...)
	if len(it.Frame) == 0 {
		out = append(out, "null"...)
	} else if compactJSON(it.Frame) {
		out = append(out, it.Frame...)
	} else {
		var buf bytes.Buffer
		if err := json.Compact(&buf, it.Frame); err != nil {
			return append(out, "null"...) // not JSON: json.Marshal fails on it too
		}
		out = appendHTMLEscaped(out, buf.Bytes())
	}
	if it.Except != 0 {
		out = append(out, `,"x":`...)
		out = strconv.AppendUint(out, it.Except, 10)
	}
	if it.Ring != "" {
		out = append(out, `,"r":`...)
		out = protocol.AppendJSONString(out, it.Ring)
	}
	if len(it.Parties) > 0 {
		out = append(out, `,"p":`...)
		out = protocol.AppendJSONStrings(out, it.Parties)
	}
	if k := it.Keep; k != nil {
		out = append(out, `,"k":{"id":`...)
		out = protocol.AppendJSONString(out, k.ID)
		if k.Sender != "" {
			out = append(out, `,"s":`...)
			out = protocol.AppendJSONString(out, k.Sender)
		}
		if k.Actor != "" {
			out = append(out, `,"a":`...)
			out = protocol.AppendJSONString(out, k.Actor)
		}
		out = append(out, `,"n":`...)
		if k.Nodes == nil {
			out = append(out, "null"...)
		} else {
			out = append(out, '{')
			var one [1]string
			users := one[:0]
			for u := range k.Nodes {
				users = append(users, u)
			}
			slices.Sort(users)
			for i, u := range users {
				if i > 0 {
					out = append(out, ',')
				}
				out = protocol.AppendJSONString(out, u)
				out = append(out, ':')
				out = protocol.AppendJSONStrings(out, k.Nodes[u])
			}
			out = append(out, '}')
		}
		out = append(out, '}')
	}
	return append(out, '}')
}

// stringsLen is about what appendStrings writes.
func stringsLen(ss []string) int {
	n := 2
	for _, s := range ss {
		n += len(s) + 3
	}
	return n
}

// compactJSON reports whether frame has no byte that json.Marshal of a
// RawMessage would change: no whitespace outside strings, nothing to
// HTML-escape, ASCII only (it does not validate: see decodeStreamBatch).
func compactJSON(frame []byte) bool {
	in := false
	for i := 0; i < len(frame); i++ {
		c := frame[i]
		switch {
		case c >= 0x7f || c == '<' || c == '>' || c == '&':
			return false
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}

// appendHTMLEscaped appends compact JSON as json.Marshal writes a
// RawMessage (HTML-escaped).
func appendHTMLEscaped(out, frame []byte) []byte {
	var buf bytes.Buffer
	json.HTMLEscape(&buf, frame)
	return append(out, buf.Bytes()...)
}

// errSlowPath: the entry has something the fast decoder leaves to
// encoding/json.
var errSlowPath = errors.New("stream entry: not the fast path")

// decodeStreamBatch decodes a stream entry: as json.Unmarshal into a
// streamBatch (TestStreamBatchDecode, FuzzStreamBatchDecode), except that
// the frames alias payload (which the caller must not change).
func decodeStreamBatch(payload []byte) (streamBatch, error) {
	d := batchDecoder{b: payload}
	b, err := d.batch()
	if err == nil && d.ws() == len(payload) {
		return b, nil
	}
	var slow streamBatch
	if err := json.Unmarshal(payload, &slow); err != nil {
		return streamBatch{}, err
	}
	return slow, nil
}

type batchDecoder struct {
	b []byte
	i int
}

// ws skips whitespace and returns the position.
func (d *batchDecoder) ws() int {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return d.i
		}
	}
	return d.i
}

func (d *batchDecoder) peek() byte {
	if d.ws() < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *batchDecoder) expect(c byte) error {
	if d.peek() != c {
		return errSlowPath
	}
	d.i++
	return nil
}

// null consumes a null if there is one.
func (d *batchDecoder) null() bool {
	if d.peek() == 'n' && bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return true
	}
	return false
}

// str reads a string without escapes or control bytes, ASCII only (else:
// the slow path, which decodes escapes and replaces invalid UTF-8).
func (d *batchDecoder) str() (string, error) {
	if err := d.expect('"'); err != nil {
		return "", err
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			s := string(d.b[start:d.i])
			d.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return "", errSlowPath
		}
		d.i++
	}
	return "", errSlowPath
}

func (d *batchDecoder) strs() ([]string, error) {
	if d.null() {
		return nil, nil
	}
	if err := d.expect('['); err != nil {
		return nil, err
	}
	out := []string{}
	if d.peek() == ']' {
		d.i++
		return out, nil
	}
	for {
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out, nil
		default:
			return nil, errSlowPath
		}
	}
}

// object reads {"key": value, ...}, value read by f(key).
func (d *batchDecoder) object(f func(key string) error) error {
	if err := d.expect('{'); err != nil {
		return err
	}
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.str()
		if err != nil {
			return err
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		if err := f(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return errSlowPath
		}
	}
}

// once reports whether a field (bit) is seen for the first time in its
// object: a repeated one is left to encoding/json (which merges some).
func once(seen *uint8, bit uint8) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

func (d *batchDecoder) batch() (streamBatch, error) {
	var b streamBatch
	var seen uint8
	err := d.object(func(key string) error {
		if key != "i" || !once(&seen, 1) {
			return errSlowPath
		}
		if d.null() {
			b.Items = nil
			return nil
		}
		if err := d.expect('['); err != nil {
			return err
		}
		b.Items = []streamItem{}
		if d.peek() == ']' {
			d.i++
			return nil
		}
		for {
			it, err := d.item()
			if err != nil {
				return err
			}
			b.Items = append(b.Items, it)
			switch d.peek() {
			case ',':
				d.i++
			case ']':
				d.i++
				return nil
			default:
				return errSlowPath
			}
		}
	})
	return b, err
}

func (d *batchDecoder) item() (streamItem, error) {
	var it streamItem
	var seen uint8
	err := d.object(func(key string) error {
		var err error
		switch key {
		case "u":
			if !once(&seen, 1) {
				return errSlowPath
			}
			it.Users, err = d.strs()
		case "f":
			if !once(&seen, 2) {
				return errSlowPath
			}
			it.Frame, err = d.raw()
		case "x":
			if !once(&seen, 4) {
				return errSlowPath
			}
			it.Except, err = d.uint()
		case "r":
			if !once(&seen, 8) {
				return errSlowPath
			}
			it.Ring, err = d.str()
		case "p":
			if !once(&seen, 16) {
				return errSlowPath
			}
			it.Parties, err = d.strs()
		case "k":
			if !once(&seen, 32) {
				return errSlowPath
			}
			if d.null() {
				it.Keep = nil
				return nil
			}
			it.Keep, err = d.keep()
		default:
			return errSlowPath
		}
		return err
	})
	return it, err
}

func (d *batchDecoder) keep() (*streamKeep, error) {
	k := &streamKeep{}
	var seen uint8
	err := d.object(func(key string) error {
		var err error
		switch key {
		case "id":
			if !once(&seen, 1) {
				return errSlowPath
			}
			k.ID, err = d.str()
		case "s":
			if !once(&seen, 2) {
				return errSlowPath
			}
			k.Sender, err = d.str()
		case "a":
			if !once(&seen, 4) {
				return errSlowPath
			}
			k.Actor, err = d.str()
		case "n":
			if !once(&seen, 8) {
				return errSlowPath
			}
			if d.null() {
				k.Nodes = nil
				return nil
			}
			k.Nodes = map[string][]string{}
			err = d.object(func(user string) error {
				nodes, err := d.strs()
				k.Nodes[user] = nodes
				return err
			})
		default:
			return errSlowPath
		}
		return err
	})
	return k, err
}

// uint reads a plain decimal (what encode writes for Except).
func (d *batchDecoder) uint() (uint64, error) {
	start := d.ws()
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i == start || (d.b[start] == '0' && d.i > start+1) {
		return 0, errSlowPath
	}
	return strconv.ParseUint(string(d.b[start:d.i]), 10, 64)
}

// raw returns the JSON value at the position (a RawMessage as
// json.Unmarshal gives it: null too), checked with json.Valid. It finds
// the value's end by its brackets and strings.
func (d *batchDecoder) raw() (json.RawMessage, error) {
	start := d.ws()
	depth, in := 0, false
	for d.i < len(d.b) {
		c := d.b[d.i]
		d.i++
		if in {
			switch c {
			case '\\':
				d.i++
			case '"':
				in = false
				if depth == 0 {
					return d.valid(start)
				}
			}
			continue
		}
		switch c {
		case '"':
			in = true
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 { // the end of the object holding a scalar
				d.i--
				return d.valid(start)
			}
			depth--
			if depth == 0 {
				return d.valid(start)
			}
		case ',':
			if depth == 0 {
				d.i--
				return d.valid(start)
			}
		}
	}
	return nil, errSlowPath
}

func (d *batchDecoder) valid(start int) (json.RawMessage, error) {
	v := bytes.TrimRight(d.b[start:d.i], " \t\n\r")
	if !json.Valid(v) {
		return nil, errSlowPath
	}
	return v[:len(v):len(v)], nil
}
