package pandapon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// This file holds a single-pass JSON scanner for the envelope, the hottest
// piece of a PandaPon call: encoding/json validates the whole body and then
// walks it again to skip the data object, while this scanner validates and
// locates the five envelope members in one pass and keeps data as a
// subslice of the body (no copy). FuzzScanEnvelopeMatchesEncodingJSON
// checks it against encoding/json on arbitrary input: same validity, same
// members.

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

// scanError reports where a body stops being JSON.
type scanError struct {
	off int
	msg string
}

func (e *scanError) Error() string { return fmt.Sprintf("invalid JSON at offset %d: %s", e.off, e.msg) }

// envelopeMembers are the raw values of the envelope's members, subslices
// of the body; nil when absent.
type envelopeMembers struct {
	requestID, code, developID, msg, data []byte
}

// scanEnvelope validates b as one JSON value and, when it is an object,
// returns the raw values of its requestId, code, developId, msg and data
// members (the last occurrence wins, as with encoding/json; keys match
// exactly, as PandaPon sends them). isObject is false for any other value.
func scanEnvelope(b []byte) (m envelopeMembers, isObject bool, err error) {
	s := scanner{b: b}
	s.ws()
	if s.i < len(b) && b[s.i] == '{' {
		isObject = true
		if err := s.object(1, &m); err != nil {
			return m, true, err
		}
	} else if err := s.value(0); err != nil {
		return m, false, err
	}
	s.ws()
	if s.i != len(b) {
		return m, isObject, s.fail("data after the top-level value")
	}
	return m, isObject, nil
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) fail(msg string) error { return &scanError{off: s.i, msg: msg} }

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) value(depth int) error {
	if s.i >= len(s.b) {
		return s.fail("unexpected end of input")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth+1, nil)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("invalid character")
}

// object scans an object at s.i; when m is non-nil it records the envelope
// members found at this level.
func (s *scanner) object(depth int, m *envelopeMembers) error {
	if depth > maxDepth {
		return s.fail("nested too deep")
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("expected a member name")
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected ':'")
		}
		s.i++
		s.ws()
		start := s.i
		if err := s.value(depth); err != nil {
			return err
		}
		if m != nil {
			m.set(key, s.b[start:s.i])
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unexpected end of input in an object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

// set records v under key when key (raw, quotes included) names a member.
func (m *envelopeMembers) set(key, v []byte) {
	switch string(key) { // no allocation: the compiler compares in place
	case `"requestId"`:
		m.requestID = v
	case `"code"`:
		m.code = v
	case `"developId"`:
		m.developID = v
	case `"msg"`:
		m.msg = v
	case `"data"`:
		m.data = v
	}
}

func (s *scanner) array(depth int) error {
	if depth > maxDepth {
		return s.fail("nested too deep")
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unexpected end of input in an array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// str scans a string at s.i and returns it raw, quotes included.
func (s *scanner) str() ([]byte, error) {
	start := s.i
	s.i++ // '"'
	for s.i < len(s.b) {
		// Skip ordinary bytes eight at a time: most of a body is strings.
		for s.i+8 <= len(s.b) {
			if m := stringSpecials(binary.LittleEndian.Uint64(s.b[s.i:])); m != 0 {
				s.i += bits.TrailingZeros64(m) >> 3
				break
			}
			s.i += 8
		}
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start:s.i], nil
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return nil, s.fail("unexpected end of input in a string escape")
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+4 >= len(s.b) {
					return nil, s.fail("unexpected end of input in a \\u escape")
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return nil, s.fail("invalid \\u escape")
					}
				}
				s.i += 5
			default:
				return nil, s.fail("invalid escape")
			}
		case c < 0x20:
			return nil, s.fail("control character in a string")
		default:
			s.i++
		}
	}
	return nil, s.fail("unexpected end of input in a string")
}

// stringSpecials flags, in the high bit of each byte of the result, the
// bytes of w (eight bytes of a string, little-endian) that end a run of
// ordinary string bytes: '"', '\\' and control characters (< 0x20). Each of
// the three tests can also flag a byte above a flagged one (a borrow
// carries upward), never below, so the lowest flag is always exact.
func stringSpecials(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := w ^ (ones * '"')
	backslash := w ^ (ones * '\\')
	return ((w-ones*0x20)&^w | (quote-ones)&^quote | (backslash-ones)&^backslash) & highs
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	b := s.b
	if b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(b) && b[s.i] == '0':
		s.i++
	case s.i < len(b) && b[s.i] >= '1' && b[s.i] <= '9':
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	default:
		return s.fail("invalid number")
	}
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return s.fail("invalid number: no digit after '.'")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return s.fail("invalid number: no digit in the exponent")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.i += len(lit)
	return nil
}

// decodeString decodes a raw JSON string; the common case (no escapes) is
// a plain conversion.
func decodeString(raw []byte) (string, error) {
	if len(raw) >= 2 && raw[0] == '"' {
		inner := raw[1 : len(raw)-1]
		if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
			return string(inner), nil
		}
	}
	var v string
	err := json.Unmarshal(raw, &v)
	return v, err
}

// errNotEnvelope reports a JSON body that is not an object.
var errNotEnvelope = errors.New("not a PandaPon envelope: not a JSON object")
