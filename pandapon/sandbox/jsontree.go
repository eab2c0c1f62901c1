package sandbox

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The sandbox keeps every refund as a JSON tree so that it can reproduce
// PandaPon's type mess byte for byte: objects keep their key order, numbers
// are json.Number and re-encode their literal unchanged (a 19-digit id keeps
// every digit, 12.50 stays 12.50), strings stay strings.
//
// Values in a tree are *object, []any, string, json.Number, bool or nil.

// object is a JSON object that remembers the order of its keys.
type object struct {
	keys []string
	vals map[string]any
}

func newObject() *object { return &object{vals: make(map[string]any)} }

func (o *object) get(key string) (any, bool) {
	v, ok := o.vals[key]
	return v, ok
}

func (o *object) has(key string) bool {
	_, ok := o.vals[key]
	return ok
}

// set replaces the value of key, or appends key when it is new.
func (o *object) set(key string, v any) {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
}

// obj returns the object under key, creating it (in place of a null or
// missing value) when create is true; nil otherwise.
func (o *object) obj(key string, create bool) *object {
	if c, ok := o.vals[key].(*object); ok {
		return c
	}
	if !create {
		return nil
	}
	c := newObject()
	o.set(key, c)
	return c
}

// intField reads an integer that may be a JSON number or a string holding one.
func (o *object) intField(key string) int {
	var s string
	switch v := o.vals[key].(type) {
	case json.Number:
		s = v.String()
	case string:
		s = v
	default:
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// setIntKeepKind stores n under key as the same JSON kind as the current
// value: a string stays a string ("20" → "30"), anything else becomes a
// number. This keeps a refund's type mess stable across state changes.
func (o *object) setIntKeepKind(key string, n int) {
	if _, isString := o.vals[key].(string); isString {
		o.set(key, strconv.Itoa(n))
		return
	}
	o.set(key, json.Number(strconv.Itoa(n)))
}

// stringField reads a value as text: strings as-is, numbers by their literal.
func (o *object) stringField(key string) string {
	switch v := o.vals[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// parseTree decodes one JSON value with UseNumber, keeping key order.
func parseTree(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	v, err := decodeTree(dec)
	if err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func mustParseObject(text string) *object {
	v, err := parseTree(text)
	if err != nil {
		panic("sandbox: bad built-in JSON: " + err.Error())
	}
	o, ok := v.(*object)
	if !ok {
		panic("sandbox: built-in JSON is not an object")
	}
	return o
}

func decodeTree(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	switch d {
	case '{':
		o := newObject()
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := kt.(string)
			v, err := decodeTree(dec)
			if err != nil {
				return nil, err
			}
			o.set(key, v)
		}
		_, err = dec.Token() // '}'
		return o, err
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeTree(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err = dec.Token() // ']'
		return arr, err
	}
	return nil, fmt.Errorf("unexpected delimiter %v", d)
}

// appendJSON appends the compact encoding of a tree value.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case *object:
		b = append(b, '{')
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v.vals[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case string:
		return appendString(b, v)
	case json.Number:
		return append(b, v...)
	case bool:
		return strconv.AppendBool(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	}
	panic(fmt.Sprintf("sandbox: unexpected tree value %T", v))
}

// appendString appends s as a JSON string. Non-ASCII text is written as
// UTF-8 (as PandaPon does), not as \u escapes.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
