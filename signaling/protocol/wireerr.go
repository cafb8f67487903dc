package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Decode errors in the protocol's own words: every message names the field
// as the client wrote it (dotted JSON path, e.g. args.candidate.sdpMLineIndex)
// and says what was expected in plain words, never a Go type or field name.
//
// A struct field may carry an `expect:"…"` tag to say more than its type
// does ("a whole number of seconds").

// maxQuoted bounds the client's value quoted in an error message.
const maxQuoted = 32

// DescribeJSON words a JSON value a client sent, for an error message: a
// number, true, false or null as written, a string quoted (shortened),
// "an object", "an array".
func DescribeJSON(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "":
		return "nothing"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s[0] == '"':
		var str string
		if json.Unmarshal([]byte(s), &str) == nil {
			return quote(str)
		}
		return "a string"
	}
	return shorten(s)
}

func quote(s string) string { return strconv.Quote(shorten(s)) }

func shorten(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	cut := maxQuoted
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}

// wireError words err, returned by a json.Decoder decoding raw into a value
// of type t, for the client. name is where raw sits on the wire ("args"
// for a request's args, "" for the request itself).
func wireError(err error, t reflect.Type, raw []byte, name string) string {
	prefix := ""
	if name != "" {
		prefix = name + "."
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return typeErrorText(te, t, name, prefix)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "not valid JSON: it ends before the value is complete"
	}
	if errors.Is(err, io.EOF) {
		return "empty: a JSON object was expected"
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		return unknownFieldText(t, raw, prefix, name)
	}
	return strings.TrimPrefix(msg, "json: ")
}

// typeErrorText words a value of the wrong type.
func typeErrorText(te *json.UnmarshalTypeError, t reflect.Type, name, prefix string) string {
	path, field, container := resolvePath(t, te.Field)
	got := valueWords(te.Value)
	if path == "" {
		if name == "" {
			name = "the request"
		}
		return fmt.Sprintf("%s must be %s, not %s", name, typeWords(t, ""), got)
	}
	want := typeWords(te.Type, field.Tag.Get("expect"))
	// A wrong element of an array (Go's path stops at the array).
	if container != nil && container.Kind() == reflect.Slice && deref(container.Elem()) == deref(te.Type) {
		return fmt.Sprintf("every element of %s%s must be %s, not %s", prefix, path, typeWords(te.Type, ""), got)
	}
	return fmt.Sprintf("%s%s must be %s, not %s", prefix, path, want, got)
}

// resolvePath turns Go's path of a type error (JSON names, with the Go name
// of embedded structs) into the wire path, and returns the struct field it
// ends at and that field's type.
func resolvePath(t reflect.Type, goPath string) (wire string, field reflect.StructField, fieldType reflect.Type) {
	if goPath == "" {
		return "", field, nil
	}
	var parts []string
	cur := deref(t)
	for _, comp := range strings.Split(goPath, ".") {
		for cur != nil && cur.Kind() == reflect.Slice {
			cur = deref(cur.Elem())
		}
		if cur == nil || cur.Kind() != reflect.Struct {
			parts = append(parts, comp)
			cur = nil
			continue
		}
		if sf, ok := cur.FieldByName(comp); ok && sf.Anonymous && jsonName(sf) == sf.Name {
			cur = deref(sf.Type) // an embedded struct: its fields are the parent's on the wire
			continue
		}
		sf, ok := wireField(cur, comp)
		if !ok {
			parts = append(parts, comp)
			cur = nil
			continue
		}
		parts = append(parts, comp)
		field, fieldType = sf, sf.Type
		cur = deref(sf.Type)
	}
	if fieldType != nil {
		fieldType = deref(fieldType)
	}
	return strings.Join(parts, "."), field, fieldType
}

// wireField finds the field of struct t that the JSON key name decodes
// into (embedded structs flattened; letter case ignored, as Go matches).
func wireField(t reflect.Type, name string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for _, sf := range wireFields(t) {
		n := jsonName(sf)
		if n == name {
			return sf, true
		}
		if !found && strings.EqualFold(n, name) {
			fold, found = sf, true
		}
	}
	return fold, found
}

// wireFields lists the fields of struct t as they appear on the wire.
func wireFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		if sf.Anonymous && !strings.Contains(tag, ",") && tag == "" {
			if et := deref(sf.Type); et.Kind() == reflect.Struct {
				out = append(out, wireFields(et)...)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		out = append(out, sf)
	}
	return out
}

func jsonName(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
	if name == "" {
		return sf.Name
	}
	return name
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// typeWords says in plain words what a value of type t is; expect, when
// set, says it instead.
func typeWords(t reflect.Type, expect string) string {
	if expect != "" {
		return expect
	}
	t = deref(t)
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<(t.Bits())-1)
	case reflect.Uint, reflect.Uint64, reflect.Uintptr:
		return "a non-negative whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + plural(t.Elem())
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "a JSON value"
}

func plural(t reflect.Type) string {
	switch w := typeWords(t, ""); w {
	case "a string":
		return "strings"
	case "an object":
		return "objects"
	case "true or false":
		return "booleans"
	default:
		if s, ok := strings.CutPrefix(w, "a "); ok {
			return strings.Replace(s, "number", "numbers", 1)
		}
		return "values"
	}
}

// valueWords words encoding/json's description of the value it got
// ("number 1e2", "string", "array", …).
func valueWords(v string) string {
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return shorten(n)
	}
	switch v {
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "true or false"
	case "array":
		return "an array"
	case "object":
		return "an object"
	}
	return v
}

// unknownFieldText names an unknown field by its full wire path and lists
// the fields that object takes.
func unknownFieldText(t reflect.Type, raw []byte, prefix, name string) string {
	path, known, ok := findUnknown(deref(t), raw, "", name)
	if !ok {
		return fmt.Sprintf("unknown field %q", name)
	}
	where := strings.TrimSuffix(prefix+path, ".")
	if where == "" {
		where = "the request"
	}
	full := prefix + path + name
	if len(known) == 0 {
		return fmt.Sprintf("unknown field %s: %s takes no fields", full, where)
	}
	return fmt.Sprintf("unknown field %s: %s takes %s", full, where, strings.Join(known, ", "))
}

// findUnknown looks, in raw decoded as t, for the key name that is no field
// of its object, breadth first (the shallowest one is reported); it returns
// the path of that object (with a trailing dot, or "") and its fields.
func findUnknown(t reflect.Type, raw []byte, path, name string) (string, []string, bool) {
	if t == nil || t.Kind() != reflect.Struct {
		return "", nil, false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return "", nil, false
	}
	fields := wireFields(t)
	if _, present := obj[name]; present {
		if _, ok := wireField(t, name); !ok {
			known := make([]string, 0, len(fields))
			for _, sf := range fields {
				known = append(known, jsonName(sf))
			}
			return path, known, true
		}
	}
	for _, sf := range fields {
		v, ok := obj[jsonName(sf)]
		if !ok {
			continue
		}
		ft := deref(sf.Type)
		if ft.Kind() == reflect.Slice {
			var elems []json.RawMessage
			if json.Unmarshal(v, &elems) != nil {
				continue
			}
			for _, e := range elems {
				if p, k, ok := findUnknown(deref(ft.Elem()), e, path+jsonName(sf)+".", name); ok {
					return p, k, true
				}
			}
			continue
		}
		if p, k, ok := findUnknown(ft, v, path+jsonName(sf)+".", name); ok {
			return p, k, true
		}
	}
	return "", nil, false
}
