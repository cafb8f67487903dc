package protocol

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"sync"
	"unicode/utf8"
)

// argsPlan is how decodeArgsFast fills a struct type: its fields of the
// kinds it decodes, by their JSON name. A type it cannot take (not a
// struct, an embedded field, a JSON or text unmarshaler, a name it cannot
// tell apart the way encoding/json does) has a nil plan.
type argsPlan struct {
	fields []argsField
}

type argsField struct {
	name  string
	index int
	kind  reflect.Kind // of the value: String, Bool or an Int kind
	ptr   bool         // the field is a pointer to that value
	elem  reflect.Type // the pointed-to type, when ptr
	// decodable: false for fields of other kinds (a slice, a struct, a
	// float…): present in the args, they send the whole decode to
	// encoding/json; absent, encoding/json would leave them zero too.
	decodable bool
}

var argsPlans sync.Map // reflect.Type → *argsPlan (nil: not taken)

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func planFor(t reflect.Type) *argsPlan {
	if p, ok := argsPlans.Load(t); ok {
		return p.(*argsPlan)
	}
	p := buildPlan(t)
	argsPlans.Store(t, p)
	return p
}

func unmarshaler(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshalerType) || pt.Implements(jsonUnmarshalerType) ||
		t.Implements(textUnmarshalerType) || pt.Implements(textUnmarshalerType)
}

func buildPlan(t reflect.Type) *argsPlan {
	if t.Kind() != reflect.Struct || unmarshaler(t) || t.NumField() > 64 {
		return nil
	}
	p := &argsPlan{}
	seen := make(map[string]bool)
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous {
			return nil // embedded fields: encoding/json's promotion rules
		}
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name := jsonName(sf)
		for j := 0; j < len(tag); j++ {
			if tag[j] == ',' && tag[j+1:] != "omitempty" && tag[j+1:] != "omitzero" {
				return nil // ",string" and the like
			}
		}
		if !plainName(name) || seen[name] {
			return nil
		}
		seen[name] = true
		f := argsField{name: name, index: i}
		vt := sf.Type
		if vt.Kind() == reflect.Pointer {
			f.ptr, vt = true, vt.Elem()
			f.elem = vt
		}
		f.kind = vt.Kind()
		switch f.kind {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.decodable = !unmarshaler(vt) && !unmarshaler(sf.Type)
		}
		p.fields = append(p.fields, f)
	}
	return p
}

// decodeArgsFast decodes args of the common shape without encoding/json's
// Decoder: an object whose keys are each a field's JSON name spelled
// exactly, at most once, with string, bool or whole-number values (or
// pointers to them) and nothing after it. It reports ok only when
// DecodeArgs through encoding/json would decode the same value without
// error; anything else (errors included) is left to encoding/json.
func decodeArgsFast(rv reflect.Value, raw []byte) bool {
	p := planFor(rv.Type())
	if p == nil {
		return false
	}
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	var seen uint64
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for {
		key, next, ok := plainBytes(raw, i)
		if !ok {
			return false
		}
		fi := -1
		for k := range p.fields {
			if p.fields[k].name == string(key) {
				fi = k
				break
			}
		}
		if fi < 0 || seen&(1<<fi) != 0 || !p.fields[fi].decodable {
			return false
		}
		seen |= 1 << fi
		f := &p.fields[fi]
		i = skipSpace(raw, next)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipSpace(raw, i+1)
		if i, ok = setField(rv.Field(f.index), f, raw, i); !ok {
			return false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) {
			return false
		}
		if raw[i] == '}' {
			return skipSpace(raw, i+1) == len(raw)
		}
		if raw[i] != ',' {
			return false
		}
		i = skipSpace(raw, i+1)
	}
}

// setField decodes the value at raw[i] into fv, returning the index after
// it.
func setField(fv reflect.Value, f *argsField, raw []byte, i int) (int, bool) {
	target := fv
	if f.ptr {
		target = reflect.New(f.elem).Elem()
	}
	var next int
	switch f.kind {
	case reflect.String:
		s, n, ok := jsonString(raw, i)
		if !ok {
			return 0, false
		}
		target.SetString(s)
		next = n
	case reflect.Bool:
		switch {
		case hasLiteral(raw, i, "true"):
			target.SetBool(true)
			next = i + 4
		case hasLiteral(raw, i, "false"):
			target.SetBool(false)
			next = i + 5
		default:
			return 0, false
		}
	default: // an Int kind
		j := i
		if j < len(raw) && raw[j] == '-' {
			j++
		}
		start := j
		for j < len(raw) && raw[j] >= '0' && raw[j] <= '9' {
			j++
		}
		digits := j - start
		if digits == 0 || digits > 18 || (digits > 1 && raw[start] == '0') {
			return 0, false
		}
		if j < len(raw) && (raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E') {
			return 0, false // not a whole number: encoding/json's error
		}
		n, err := strconv.ParseInt(string(raw[i:j]), 10, 64)
		if err != nil || target.OverflowInt(n) {
			return 0, false
		}
		target.SetInt(n)
		next = j
	}
	if f.ptr {
		fv.Set(target.Addr())
	}
	return next, true
}

func hasLiteral(raw []byte, i int, lit string) bool {
	return len(raw)-i >= len(lit) && string(raw[i:i+len(lit)]) == lit
}

// jsonString reads the JSON string at raw[i]: valid UTF-8, no control
// character, the escapes \" \\ \/ \b \f \n \r \t and \u of a code point
// outside the surrogates (a surrogate is left to encoding/json, which
// pairs them or replaces them with U+FFFD).
func jsonString(raw []byte, i int) (string, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return "", 0, false
	}
	start := i + 1
	j := start
	for ; j < len(raw); j++ {
		c := raw[j]
		if c == '"' {
			if !utf8.Valid(raw[start:j]) {
				return "", 0, false
			}
			return string(raw[start:j]), j + 1, true
		}
		if c == '\\' || c < 0x20 {
			break
		}
	}
	// Escapes: build the value.
	b := make([]byte, 0, j-start+16)
	b = append(b, raw[start:j]...)
	for j < len(raw) {
		c := raw[j]
		switch {
		case c == '"':
			if !utf8.Valid(b) {
				return "", 0, false
			}
			return string(b), j + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			b = append(b, c)
			j++
			continue
		}
		if j+1 >= len(raw) {
			return "", 0, false
		}
		switch raw[j+1] {
		case '"', '\\', '/':
			b = append(b, raw[j+1])
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			if j+6 > len(raw) {
				return "", 0, false
			}
			r, err := strconv.ParseUint(string(raw[j+2:j+6]), 16, 32)
			if err != nil || (r >= 0xD800 && r < 0xE000) {
				return "", 0, false
			}
			for _, h := range raw[j+2 : j+6] {
				if !isHex(h) {
					return "", 0, false
				}
			}
			b = utf8.AppendRune(b, rune(r))
			j += 6
			continue
		default:
			return "", 0, false
		}
		j += 2
	}
	return "", 0, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// plainName reports whether a JSON name is made of ASCII letters, digits
// and underscores only (encoding/json ignores some other tag names).
func plainName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return s != ""
}
