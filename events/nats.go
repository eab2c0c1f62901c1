package events

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// Binary-mode header names of the CloudEvents 1.0 context attributes.
const (
	headerSpecVersion     = HeaderPrefix + "specversion"
	headerID              = HeaderPrefix + "id"
	headerSource          = HeaderPrefix + "source"
	headerType            = HeaderPrefix + "type"
	headerSubject         = HeaderPrefix + "subject"
	headerTime            = HeaderPrefix + "time"
	headerDataSchema      = HeaderPrefix + "dataschema"
	headerDataContentType = HeaderPrefix + "datacontenttype"
)

// EncodeNATS maps e to a NATS message on subject in binary content mode:
// every attribute as a header "ce-<name>" (ce-specversion, ce-id, ce-source,
// ce-type, ce-subject, ce-time in RFC 3339 with nanoseconds in UTC,
// ce-dataschema, and each extension as ce-<extension> in its canonical
// string form), datacontenttype as the Content-Type header, the data bytes
// as the payload unchanged (not copied: the message shares e.DataEncoded),
// and Nats-Msg-Id set to the event id so that JetStream drops a repeat.
//
// Header values are written verbatim (UTF-8, no percent-encoding). A value
// that NATS would alter in transit is refused rather than silently changed:
// control characters (nats.go would turn CR/LF into spaces) and surrounding
// white space (nats.go trims it). The event must be a valid CloudEvents 1.0
// event. Errors are *ValidationError matching ErrInvalid.
func EncodeNATS(subject string, e event.Event) (*nats.Msg, error) {
	if subject == "" || strings.ContainsAny(subject, " \t\r\n") {
		return nil, invalid("subject", quoteValue(subject), "is not a NATS subject")
	}
	if verr := checkEvent(&e); verr != nil {
		return nil, verr
	}
	ec := e.Context.(*event.EventContextV1) // checkEvent guarantees it

	n := 9 + len(ec.Extensions)
	h := make(nats.Header, n)
	// One backing array for all header values: each header gets a
	// one-element, full-capacity slice of it, so an Add by a caller copies
	// instead of overwriting a neighbour.
	vals := make([]string, 0, n)
	put := func(key, v string) {
		vals = append(vals, v)
		h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	// checkEvent has applied the CloudEvents string rule to every string
	// attribute, so set adds only what a header needs on top of it.
	set := func(key, name, v string) *ValidationError {
		if verr := checkTrimmed(name, v); verr != nil {
			return verr
		}
		put(key, v)
		return nil
	}
	put(headerSpecVersion, event.CloudEventsVersionV1)
	if verr := set(headerID, "id", ec.ID); verr != nil {
		return nil, verr
	}
	put(HeaderMsgID, ec.ID)
	if verr := set(headerSource, "source", sourceText(ec.Source)); verr != nil {
		return nil, verr
	}
	if verr := set(headerType, "type", ec.Type); verr != nil {
		return nil, verr
	}
	if ec.Subject != nil {
		if verr := set(headerSubject, "subject", *ec.Subject); verr != nil {
			return nil, verr
		}
	}
	if ec.Time != nil && !ec.Time.IsZero() {
		put(headerTime, ec.Time.UTC().Format(time.RFC3339Nano))
	}
	if ec.DataSchema != nil {
		if verr := set(headerDataSchema, "dataschema", ec.DataSchema.String()); verr != nil {
			return nil, verr
		}
	}
	if ec.DataContentType != nil {
		if verr := set(HeaderContentType, "datacontenttype", *ec.DataContentType); verr != nil {
			return nil, verr
		}
	}
	for name, v := range ec.Extensions {
		s, err := types.Format(v)
		if err != nil {
			return nil, invalid(name, "", "is not a CloudEvents value: "+err.Error())
		}
		if _, checked := v.(string); !checked {
			if verr := checkString(name, s); verr != nil {
				return nil, verr
			}
		}
		if verr := set(extensionHeader(name), name, s); verr != nil {
			return nil, verr
		}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: e.DataEncoded}, nil
}

// extensionHeader is the binary-mode header of extension name, without
// building the text for the extensions every output carries.
func extensionHeader(name string) string {
	switch name {
	case ExtCausationID:
		return HeaderPrefix + ExtCausationID
	case ExtTraceparent:
		return HeaderPrefix + ExtTraceparent
	case ExtTracestate:
		return HeaderPrefix + ExtTracestate
	}
	return HeaderPrefix + name
}

// DecodeNATS decodes a NATS message (its headers and payload, so that it
// serves *nats.Msg and jetstream.Msg alike) into a CloudEvent. It accepts:
//
//   - binary mode, recognised by a ce-specversion header: each header
//     "ce-<name>" is attribute <name> (prefix and name matched without
//     regard to case), Content-Type is datacontenttype (ce-datacontenttype is
//     accepted when Content-Type is absent), the payload is the data,
//     shared, not copied. Headers without the ce- prefix (Nats-Msg-Id,
//     dead-letter headers, ...) are ignored. A ce- header whose name is not
//     a valid attribute name, or an attribute given twice with different
//     values, is refused.
//   - structured mode, recognised by Content-Type application/cloudevents+json
//     (parameters such as charset allowed) without ce-specversion: the
//     payload is the whole event in the CloudEvents JSON format.
//
// Anything else fails with an error matching ErrNotCloudEvent. Only
// specversion 1.0 is accepted, and the event must be valid (id, source and
// type non-blank, time in RFC 3339, strings without control characters).
// Every error is a *ValidationError matching ErrInvalid. DecodeNATS does not
// check the event type or data: that is ParseInput's job.
func DecodeNATS(h nats.Header, data []byte) (event.Event, error) {
	switch m := detectMode(h); m.mode {
	case modeBinary:
		return decodeBinary(h, data)
	case modeStructured:
		return decodeStructured(data)
	default:
		return event.Event{}, m.err
	}
}

type mode int

const (
	modeUnknown mode = iota
	modeBinary
	modeStructured
)

type detected struct {
	mode        mode
	err         *ValidationError
	specVersion string
}

// detectMode tells binary from structured: a ce-specversion header means
// binary whatever the Content-Type; otherwise Content-Type
// application/cloudevents+json means structured.
func detectMode(h nats.Header) detected {
	if v, ok := headerValue(h, headerSpecVersion); ok {
		return detected{mode: modeBinary, specVersion: v}
	}
	ct, _ := headerValue(h, HeaderContentType)
	switch mediaType(ct) {
	case ContentTypeStructured:
		return detected{mode: modeStructured}
	case contentTypeBatch:
		return detected{err: &ValidationError{Field: HeaderContentType, Value: quoteValue(ct),
			Problem: "is a batch of CloudEvents, which is not accepted; send one event per message", err: ErrNotCloudEvent}}
	}
	problem := "is not " + ContentTypeStructured + " and there is no " + headerSpecVersion + " header: not a CloudEvent"
	if ct == "" {
		return detected{err: &ValidationError{Field: "message", Problem: "has neither a " + headerSpecVersion +
			" header (binary mode) nor Content-Type " + ContentTypeStructured + " (structured mode): not a CloudEvent", err: ErrNotCloudEvent}}
	}
	return detected{err: &ValidationError{Field: HeaderContentType, Value: quoteValue(ct), Problem: problem, err: ErrNotCloudEvent}}
}

// headerValue returns the first value of the header named name, matched
// exactly first and then without regard to case.
func headerValue(h nats.Header, name string) (string, bool) {
	if v, ok := h[name]; ok && len(v) > 0 {
		return v[0], true
	}
	for k, v := range h {
		if len(k) == len(name) && len(v) > 0 && strings.EqualFold(k, name) {
			return v[0], true
		}
	}
	return "", false
}

func decodeBinary(h nats.Header, data []byte) (event.Event, error) {
	ec := &event.EventContextV1{}
	var (
		seen       uint16 // bit per core attribute, to catch duplicates
		ctHeader   *string
		ctCE       *string
		specVerSet bool
	)
	for k, vs := range h {
		if len(k) < len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			if strings.EqualFold(k, HeaderContentType) {
				v, verr := single(HeaderContentType, k, vs)
				if verr != nil {
					return event.Event{}, verr
				}
				if ctHeader != nil && *ctHeader != v {
					return event.Event{}, invalid("header "+HeaderContentType, quoteValue(v), "is given twice with different values")
				}
				ctHeader = &v
			}
			continue
		}
		name := lowerASCII(k[len(HeaderPrefix):])
		if !validAttrName(name) {
			return event.Event{}, invalid("header "+quoteValue(k), "", "is not a CloudEvents attribute name (lower-case letters and digits after "+HeaderPrefix+")")
		}
		v, verr := single(name, k, vs)
		if verr != nil {
			return event.Event{}, verr
		}
		if bit, core := coreBits[name]; core {
			if seen&bit != 0 {
				// Same attribute under two spellings of the header name.
				if prev, _ := binaryAttr(ec, name, ctCE); prev != v {
					return event.Event{}, invalid(name, quoteValue(v), "is given by two headers with different values")
				}
				continue
			}
			seen |= bit
		}
		switch name {
		case "specversion":
			if v != event.CloudEventsVersionV1 {
				return event.Event{}, invalid("specversion", quoteValue(v), "must be "+event.CloudEventsVersionV1)
			}
			specVerSet = true
		case "id":
			ec.ID = v
		case "source":
			if verr := requiredAttr("source", v); verr != nil {
				return event.Event{}, verr
			}
			u, ok := inputSources.parse(v)
			if !ok {
				return event.Event{}, invalid("source", quoteValue(v), "is not a URI-reference")
			}
			ec.Source = u
		case "type":
			ec.Type = v
		case "subject":
			s := v // a copy, so that v itself stays off the heap
			ec.Subject = &s
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return event.Event{}, invalid("time", quoteValue(v), "is not an RFC 3339 timestamp")
			}
			ec.Time = &types.Timestamp{Time: t}
		case "dataschema":
			u := types.ParseURI(v)
			if u == nil {
				return event.Event{}, invalid("dataschema", quoteValue(v), "is not a URI")
			}
			ec.DataSchema = u
		case "datacontenttype":
			s := v
			ctCE = &s
		default:
			if ec.Extensions == nil {
				ec.Extensions = make(map[string]interface{}, 4)
			} else if prev, dup := ec.Extensions[name]; dup {
				if prev != v {
					return event.Event{}, invalid(name, quoteValue(v), "is given by two headers with different values")
				}
				continue
			}
			ec.Extensions[name] = v
		}
	}
	if !specVerSet { // unreachable: detectMode found the header
		return event.Event{}, invalid("specversion", "", "is missing")
	}
	switch {
	case ctHeader != nil:
		ec.DataContentType = ctHeader
	case ctCE != nil:
		ec.DataContentType = ctCE
	}
	if verr := checkContextV1(ec); verr != nil {
		return event.Event{}, verr
	}
	e := event.Event{Context: ec}
	if len(data) > 0 {
		e.DataEncoded = data
	}
	return e, nil
}

var coreBits = map[string]uint16{
	"specversion": 1 << 0, "id": 1 << 1, "source": 1 << 2, "type": 1 << 3,
	"subject": 1 << 4, "time": 1 << 5, "datacontenttype": 1 << 6, "dataschema": 1 << 7,
}

// binaryAttr returns the text already decoded for a core attribute, to
// compare a duplicate header with.
func binaryAttr(ec *event.EventContextV1, name string, ctCE *string) (string, bool) {
	switch name {
	case "specversion":
		return event.CloudEventsVersionV1, true
	case "id":
		return ec.ID, true
	case "source":
		return sourceText(ec.Source), true
	case "type":
		return ec.Type, true
	case "subject":
		if ec.Subject != nil {
			return *ec.Subject, true
		}
	case "time":
		if ec.Time != nil {
			return ec.Time.UTC().Format(time.RFC3339Nano), true
		}
	case "dataschema":
		if ec.DataSchema != nil {
			return ec.DataSchema.String(), true
		}
	case "datacontenttype":
		if ctCE != nil {
			return *ctCE, true
		}
	}
	return "", false
}

// single returns the one value of a header; repeated identical values are
// tolerated, different ones refused.
func single(name, key string, vs []string) (string, *ValidationError) {
	if len(vs) == 0 {
		return "", invalid("header "+quoteValue(key), "", "has no value")
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return "", invalid(name, quoteValue(v), "is given twice with different values")
		}
	}
	return vs[0], nil
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// EncodeStructured renders e in the structured content mode: the event as
// one line of CloudEvents JSON, as sdk-go writes it. Data whose
// datacontenttype is JSON is embedded as JSON, with whitespace between
// tokens removed (every number keeps its digits); data that is not valid JSON
// although it claims to be, or is binary, travels as data_base64; text is a
// JSON string. The event must be valid; errors match ErrInvalid.
func EncodeStructured(e event.Event) ([]byte, error) {
	if verr := checkEvent(&e); verr != nil {
		return nil, verr
	}
	// json.Marshal validates and compacts what sdk-go's MarshalJSON writes,
	// so embedded data that is not valid JSON is an error here and the
	// result never spans lines.
	b, err := json.Marshal(e)
	if err != nil {
		return nil, invalid("data", "", "cannot be embedded in structured mode: "+err.Error())
	}
	return b, nil
}
