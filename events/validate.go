package events

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Input is a decoded, validated input event. Exactly one of Lookup and
// ReturnShipped is set, according to Event.Type().
type Input struct {
	Event         event.Event
	Lookup        *RefundLookupRequested
	ReturnShipped *ReturnShipped
}

// RefundID returns the normalised refund id of the input's data, or "" for
// an Input that did not come from ParseInput.
func (in Input) RefundID() string {
	switch {
	case in.Lookup != nil:
		return string(in.Lookup.RefundID)
	case in.ReturnShipped != nil:
		return string(in.ReturnShipped.RefundID)
	}
	return ""
}

// ParseInput validates an input event and decodes its data. It checks, in
// this order, that e is a valid CloudEvent (specversion 1.0; id, source and
// type present and non-blank; every string attribute free of control
// characters; the id also free of surrounding white space, because it is
// copied into a NATS header of the output), that its type is one of the two
// input types (else the error matches ErrUnknownType), that datacontenttype
// is JSON (absent, application/json or any */*+json, parameters allowed),
// and that the data is valid for the type (see ParseRefundLookupRequested and
// ParseReturnShipped; field names are then prefixed "data.").
//
// Every error is a *ValidationError matching ErrInvalid: the event can never
// be processed.
func ParseInput(e event.Event) (Input, error) {
	if verr := checkEvent(&e); verr != nil {
		return Input{}, verr
	}
	if verr := checkHeaderSafe("id", e.ID()); verr != nil {
		return Input{}, verr
	}
	in := Input{Event: e}
	switch t := e.Type(); t {
	case TypeRefundLookupRequested, TypeReturnShipped:
	default:
		return Input{}, &ValidationError{Field: "type", Value: quoteValue(t),
			Problem: "is not an input type (" + TypeRefundLookupRequested + " or " + TypeReturnShipped + ")", err: ErrUnknownType}
	}
	if ct := e.DataContentType(); ct != "" && !isJSONContentType(ct) {
		return Input{}, invalid("datacontenttype", quoteValue(ct), "is not JSON; it must be "+ContentTypeJSON+", a +json type, or absent")
	}
	switch e.Type() {
	case TypeRefundLookupRequested:
		d, err := parseLookup("data", e.Data())
		if err != nil {
			return Input{}, err
		}
		in.Lookup = &d
	case TypeReturnShipped:
		d, err := parseReturnShipped("data", e.Data())
		if err != nil {
			return Input{}, err
		}
		in.ReturnShipped = &d
	}
	return in, nil
}

// ParseRefundLookupRequested decodes and validates the data of a
// refund.lookup.requested event: a JSON object with a refundId (string of
// digits or non-negative integer). Other fields are allowed and ignored.
// Errors are *ValidationError matching ErrInvalid, with Field "refundId" or
// "data".
func ParseRefundLookupRequested(data []byte) (RefundLookupRequested, error) {
	d, err := parseLookup("", data)
	if err != nil {
		return RefundLookupRequested{}, err
	}
	return d, nil
}

// ParseReturnShipped decodes and validates the data of a return.shipped
// event: a JSON object whose refundId (string of digits or non-negative
// integer), logisticsCompanyCode, logisticsNo and buyerPhone are present
// and non-empty strings, and whose returnGoodsDesc, when present, is a
// string or null. Other fields are allowed and ignored. Field names match
// exactly (JSON is case-sensitive, so "RefundId" is not "refundId"). Errors
// are *ValidationError matching ErrInvalid naming the first bad field.
func ParseReturnShipped(data []byte) (ReturnShipped, error) {
	d, err := parseReturnShipped("", data)
	if err != nil {
		return ReturnShipped{}, err
	}
	return d, nil
}

func parseLookup(scope string, data []byte) (RefundLookupRequested, *ValidationError) {
	if id, ok := lookupShortcut(data); ok {
		return RefundLookupRequested{RefundID: id}, nil
	}
	return parseLookupObject(scope, data)
}

// parseLookupObject is parseLookup for any text: the data decoded as a
// JSON object.
func parseLookupObject(scope string, data []byte) (RefundLookupRequested, *ValidationError) {
	obj, verr := parseObject(scope, data)
	if verr != nil {
		return RefundLookupRequested{}, verr
	}
	raw, ok := obj["refundId"]
	if !ok {
		return RefundLookupRequested{}, invalid(join(scope, "refundId"), "", refundIDMissing)
	}
	id, verr := parseRefundID(join(scope, "refundId"), raw)
	if verr != nil {
		return RefundLookupRequested{}, verr
	}
	return RefundLookupRequested{RefundID: id}, nil
}

func parseReturnShipped(scope string, data []byte) (ReturnShipped, *ValidationError) {
	var d ReturnShipped
	obj, verr := parseObject(scope, data)
	if verr != nil {
		return d, verr
	}
	raw, ok := obj["refundId"]
	if !ok {
		return d, invalid(join(scope, "refundId"), "", refundIDMissing)
	}
	if d.RefundID, verr = parseRefundID(join(scope, "refundId"), raw); verr != nil {
		return d, verr
	}
	for _, f := range [...]struct {
		name string
		dst  *string
	}{
		{"logisticsCompanyCode", &d.LogisticsCompanyCode},
		{"logisticsNo", &d.LogisticsNo},
		{"buyerPhone", &d.BuyerPhone},
	} {
		if *f.dst, verr = requiredString(scope, f.name, obj); verr != nil {
			return d, verr
		}
	}
	if raw, ok := obj["returnGoodsDesc"]; ok && !isNull(raw) {
		s, ok := jsonString(raw)
		if !ok {
			return d, invalid(join(scope, "returnGoodsDesc"), jsonValue(raw), "must be a string or null")
		}
		d.ReturnGoodsDesc = &s
	}
	return d, nil
}

const refundIDMissing = "is missing; it must be a string of digits or a non-negative integer"

// lookupShortcut recognises the data every producer writes for a lookup,
// exactly {"refundId":"<digits>"} with no white space, without decoding
// it into a map: the one key, and a string of digits needs no unescaping.
// For that text it gives what the general path gives; for any other, false.
func lookupShortcut(data []byte) (RefundID, bool) {
	const prefix, suffix = `{"refundId":"`, `"}`
	if len(data) <= len(prefix)+len(suffix) || string(data[:len(prefix)]) != prefix ||
		string(data[len(data)-len(suffix):]) != suffix {
		return "", false
	}
	digits := data[len(prefix) : len(data)-len(suffix)]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return RefundID(digits), true
}

// parseObject decodes data as a JSON object, keys matched exactly.
func parseObject(scope string, data []byte) (map[string]json.RawMessage, *ValidationError) {
	field := scope
	if field == "" {
		field = "data"
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, invalid(field, "", "is missing; it must be a JSON object")
	}
	if trimmed[0] != '{' {
		if !json.Valid(data) {
			return nil, invalid(field, quoteValue(string(data)), "is not valid JSON")
		}
		return nil, invalid(field, jsonValue(data), "must be a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		// Starting with '{', the only possible failure is a syntax error.
		return nil, invalid(field, quoteValue(string(data)), "is not valid JSON")
	}
	return obj, nil
}

func requiredString(scope, name string, obj map[string]json.RawMessage) (string, *ValidationError) {
	field := join(scope, name)
	raw, ok := obj[name]
	if !ok {
		return "", invalid(field, "", "is missing; it must be a non-empty string")
	}
	s, ok := jsonString(raw)
	if !ok || s == "" {
		return "", invalid(field, jsonValue(raw), "must be a non-empty string")
	}
	if strings.TrimSpace(s) == "" {
		// Sent on, a blank tracking number or phone would reach PandaPon.
		return "", invalid(field, jsonValue(raw), "must be a non-empty string, not only white space")
	}
	return s, nil
}

// parseRefundID applies the RefundID rules to one raw JSON value.
func parseRefundID(field string, raw []byte) (RefundID, *ValidationError) {
	raw = bytes.TrimSpace(raw)
	bad := func() *ValidationError {
		return invalid(field, jsonValue(raw), "must be a string of digits or a non-negative integer")
	}
	if len(raw) == 0 {
		return "", invalid(field, "", refundIDMissing)
	}
	switch c := raw[0]; {
	case c == '"':
		s, ok := jsonString(raw)
		if !ok || !allDigits(s) {
			return "", bad()
		}
		return RefundID(s), nil
	case c >= '0' && c <= '9':
		// A JSON number: an integer literal is all digits (JSON forbids
		// leading zeros, so the literal is already canonical); a fraction or
		// exponent is refused rather than rounded.
		if !allDigits(string(raw)) || !json.Valid(raw) {
			return "", bad()
		}
		return RefundID(raw), nil
	default:
		return "", bad()
	}
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// jsonString decodes raw if it is a JSON string.
func jsonString(raw []byte) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	// Fast path: no escapes.
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

func join(scope, name string) string {
	if scope == "" {
		return name
	}
	return scope + "." + name
}

// mediaType returns the lower-case media type of a Content-Type value,
// without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// isJSONContentType reports whether ct is application/json or */*+json.
func isJSONContentType(ct string) bool {
	mt := mediaType(ct)
	return mt == ContentTypeJSON || (strings.HasSuffix(mt, "+json") && strings.IndexByte(mt, '/') > 0)
}

// checkEvent checks what makes e a valid CloudEvents 1.0 event, mirroring
// sdk-go's EventContextV1.Validate without its allocations, plus the
// CloudEvents rule that strings contain no control characters.
func checkEvent(e *event.Event) *ValidationError {
	if e.Context == nil {
		return invalid("specversion", "", "is missing; the event has no attributes")
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return invalid("specversion", quoteValue(sv), "must be "+event.CloudEventsVersionV1)
	}
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		return invalid("specversion", "", "is not "+event.CloudEventsVersionV1)
	}
	return checkContextV1(ec)
}

func checkContextV1(ec *event.EventContextV1) *ValidationError {
	if verr := requiredAttr("id", ec.ID); verr != nil {
		return verr
	}
	if verr := requiredAttr("source", sourceText(ec.Source)); verr != nil {
		return verr
	}
	if verr := requiredAttr("type", ec.Type); verr != nil {
		return verr
	}
	if ec.Subject != nil {
		if verr := requiredAttr("subject", *ec.Subject); verr != nil {
			return verr
		}
	}
	if ec.DataContentType != nil {
		ct := *ec.DataContentType
		if verr := checkString("datacontenttype", ct); verr != nil {
			return verr
		}
		if ct != ContentTypeJSON {
			if _, _, err := mime.ParseMediaType(ct); err != nil {
				return invalid("datacontenttype", quoteValue(ct), "is not a media type (RFC 2046)")
			}
		}
	}
	if ec.DataSchema != nil {
		if !ec.DataSchema.URL.IsAbs() {
			return invalid("dataschema", quoteValue(ec.DataSchema.String()), "must be an absolute URI")
		}
		if verr := checkString("dataschema", ec.DataSchema.String()); verr != nil {
			return verr
		}
	}
	for name, v := range ec.Extensions {
		if !validAttrName(name) {
			return invalid("extension "+quoteValue(name), "", "is not a valid attribute name (lower-case letters and digits only)")
		}
		if _, core := coreAttrs[name]; core {
			return invalid("extension "+quoteValue(name), "", "is the name of a core attribute")
		}
		if s, ok := v.(string); ok {
			if verr := checkString(name, s); verr != nil {
				return verr
			}
		}
	}
	return nil
}

// coreAttrs are the CloudEvents 1.0 context attributes.
var coreAttrs = map[string]struct{}{
	"specversion": {}, "id": {}, "source": {}, "type": {},
	"subject": {}, "time": {}, "datacontenttype": {}, "dataschema": {},
}

func requiredAttr(name, v string) *ValidationError {
	if strings.TrimSpace(v) == "" {
		if v == "" {
			return invalid(name, "", "is missing; it must be a non-empty string")
		}
		return invalid(name, quoteValue(v), "must be a non-empty string")
	}
	return checkString(name, v)
}

// checkString applies the CloudEvents string rule: valid UTF-8 without
// control characters (U+0000–U+001F, U+007F–U+009F).
func checkString(name, v string) *ValidationError {
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return invalid(name, quoteValue(v), "contains a control character")
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && size == 1 {
			return invalid(name, quoteValue(v), "is not valid UTF-8")
		}
		if unicode.IsControl(r) {
			return invalid(name, quoteValue(v), "contains a control character")
		}
		i += size
	}
	return nil
}

// checkHeaderSafe refuses values that a NATS header cannot carry unchanged:
// nats.go trims surrounding white space from header values.
func checkHeaderSafe(name, v string) *ValidationError {
	if verr := checkString(name, v); verr != nil {
		return verr
	}
	return checkTrimmed(name, v)
}

// checkTrimmed is the part of checkHeaderSafe that checkString leaves.
func checkTrimmed(name, v string) *ValidationError {
	if v != strings.TrimSpace(v) {
		return invalid(name, quoteValue(v), "begins or ends with white space, which a NATS header cannot carry")
	}
	return nil
}

// validAttrName reports whether n is a CloudEvents attribute name: lower-case
// ASCII letters and digits, at least one.
func validAttrName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
