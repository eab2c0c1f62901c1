package pandapon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// CodeSuccess is the envelope code of a successful call. Every other code is
// a business error (see APIError).
const CodeSuccess = 200

// Envelope is the JSON object every PandaPon response is wrapped in.
//
// Data is kept as the exact bytes PandaPon sent (every digit, every unknown
// field, byte for byte) so that it can be passed through to consumers; use
// the typed views (RefundView) to read the few fields the product needs.
type Envelope struct {
	// RequestID is PandaPon's id for the request: a string, a number or null.
	RequestID FlexString `json:"requestId"`
	// Code is CodeSuccess or a business error code.
	Code FlexInt `json:"code"`
	// DevelopID is a string, a number or null.
	DevelopID FlexString `json:"developId"`
	// Msg is "成功", "SUCCESS" or the business error's message.
	Msg string `json:"msg"`
	// Data is the raw data object, or nil when the response had none.
	Data json.RawMessage `json:"data"`
}

// FlexString decodes a JSON string, number or null into a string. Numbers
// keep their literal text (no float64 round trip), so a 19-digit id keeps
// every digit. Null and absence decode to "" with Valid false.
type FlexString struct {
	Value string
	Valid bool
}

// String returns the value ("" when null).
func (f FlexString) String() string { return f.Value }

// UnmarshalJSON implements json.Unmarshaler.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*f = FlexString{}
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = FlexString{Value: s, Valid: true}
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		if !json.Valid(b) {
			return fmt.Errorf("invalid number %q", b)
		}
		*f = FlexString{Value: string(b), Valid: true}
	default:
		return fmt.Errorf("want a string, number or null, got %.40s", b)
	}
	return nil
}

// MarshalJSON writes the value as a JSON string, or null when not Valid.
func (f FlexString) MarshalJSON() ([]byte, error) {
	if !f.Valid {
		return []byte("null"), nil
	}
	return json.Marshal(f.Value)
}

// FlexInt decodes a JSON integer, or a string holding one, or null (0, Valid
// false). PandaPon documents enumerations such as refundStatus as integers
// but sends them as strings too ("100").
type FlexInt struct {
	Value int64
	Valid bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *FlexInt) UnmarshalJSON(b []byte) error {
	var s FlexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	if !s.Valid || s.Value == "" {
		*f = FlexInt{}
		return nil
	}
	n, err := strconv.ParseInt(s.Value, 10, 64)
	if err != nil {
		return fmt.Errorf("want an integer, got %q", s.Value)
	}
	*f = FlexInt{Value: n, Valid: true}
	return nil
}

// MarshalJSON writes the value as a JSON number, or null when not Valid.
func (f FlexInt) MarshalJSON() ([]byte, error) {
	if !f.Valid {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, f.Value, 10), nil
}
