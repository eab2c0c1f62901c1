package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// decodeStructured reads a structured-mode payload: one event in the
// CloudEvents JSON format. It is written with encoding/json rather than
// sdk-go's reader so that every malformed input is an error naming the
// attribute instead of a panic, and it decodes what sdk-go writes to the same
// event (see the interop tests):
//
//   - data is kept byte for byte when datacontenttype is absent or one of
//     sdk-go's JSON types (application/json, text/json); for another type a
//     JSON string's contents are the data, and a non-string value is kept as
//     JSON text when the type is */*+json;
//   - data_base64 is decoded and the event marked DataBase64;
//   - other members are extensions: strings, booleans, and integers in the
//     int32 range, as in the CloudEvents type system; null means absent.
func decodeStructured(payload []byte) (event.Event, error) {
	trimmed := bytes.TrimLeft(payload, " \t\r\n")
	if len(trimmed) == 0 {
		return event.Event{}, invalid("payload", "", "is empty; a structured-mode CloudEvent must be a JSON object")
	}
	if !json.Valid(payload) {
		return event.Event{}, invalid("payload", quoteValue(string(payload)), "is not valid JSON")
	}
	if trimmed[0] != '{' {
		return event.Event{}, invalid("payload", jsonValue(payload), "must be a JSON object (one CloudEvent)")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil {
		return event.Event{}, invalid("payload", quoteValue(string(payload)), "is not a JSON object: "+err.Error())
	}

	str := func(name string) (string, bool, *ValidationError) {
		raw, ok := obj[name]
		if !ok || isNull(raw) {
			return "", false, nil
		}
		s, ok := jsonString(raw)
		if !ok {
			return "", false, invalid(name, jsonValue(raw), "must be a string")
		}
		return s, true, nil
	}

	sv, ok, verr := str("specversion")
	if verr != nil {
		return event.Event{}, verr
	}
	if !ok {
		return event.Event{}, invalid("specversion", "", "is missing")
	}
	if sv != event.CloudEventsVersionV1 {
		return event.Event{}, invalid("specversion", quoteValue(sv), "must be "+event.CloudEventsVersionV1)
	}

	ec := &event.EventContextV1{}
	if ec.ID, _, verr = str("id"); verr != nil {
		return event.Event{}, verr
	}
	if ec.Type, _, verr = str("type"); verr != nil {
		return event.Event{}, verr
	}
	if s, ok, verr := str("source"); verr != nil {
		return event.Event{}, verr
	} else if ok {
		if verr := requiredAttr("source", s); verr != nil {
			return event.Event{}, verr
		}
		u := types.ParseURIRef(s)
		if u == nil {
			return event.Event{}, invalid("source", quoteValue(s), "is not a URI-reference")
		}
		ec.Source = *u
	}
	if s, ok, verr := str("subject"); verr != nil {
		return event.Event{}, verr
	} else if ok {
		ec.Subject = &s
	}
	if s, ok, verr := str("time"); verr != nil {
		return event.Event{}, verr
	} else if ok {
		t, err := types.ParseTime(s)
		if err != nil {
			return event.Event{}, invalid("time", quoteValue(s), "is not an RFC 3339 timestamp")
		}
		ec.Time = &types.Timestamp{Time: t}
	}
	if s, ok, verr := str("datacontenttype"); verr != nil {
		return event.Event{}, verr
	} else if ok {
		ec.DataContentType = &s
	}
	if s, ok, verr := str("dataschema"); verr != nil {
		return event.Event{}, verr
	} else if ok {
		u := types.ParseURI(s)
		if u == nil {
			return event.Event{}, invalid("dataschema", quoteValue(s), "is not a URI")
		}
		ec.DataSchema = u
	}

	for name, raw := range obj {
		if _, core := coreAttrs[name]; core || name == "data" || name == "data_base64" {
			continue
		}
		if !validAttrName(name) {
			return event.Event{}, invalid("attribute "+quoteValue(name), "", "is not a CloudEvents attribute name (lower-case letters and digits only)")
		}
		v, verr := extensionValue(name, raw)
		if verr != nil {
			return event.Event{}, verr
		}
		if v == nil {
			continue
		}
		if ec.Extensions == nil {
			ec.Extensions = make(map[string]interface{}, len(obj))
		}
		ec.Extensions[name] = v
	}

	e := event.Event{Context: ec}
	rawData, hasData := obj["data"]
	rawB64, hasB64 := obj["data_base64"]
	hasData = hasData && !isNull(rawData)
	hasB64 = hasB64 && !isNull(rawB64)
	switch {
	case hasData && hasB64:
		return event.Event{}, invalid("data_base64", "", "is given together with data; an event has one or the other")
	case hasB64:
		s, ok := jsonString(rawB64)
		if !ok {
			return event.Event{}, invalid("data_base64", jsonValue(rawB64), "must be a base64 string")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return event.Event{}, invalid("data_base64", quoteValue(s), "is not standard base64")
		}
		e.DataBase64 = true
		if len(b) > 0 {
			e.DataEncoded = b
		}
	case hasData:
		mt := ""
		if ec.DataContentType != nil {
			mt = mediaType(*ec.DataContentType)
		}
		switch {
		case mt == "" || mt == event.ApplicationJSON || mt == event.TextJSON:
			e.DataEncoded = []byte(rawData)
		default:
			if s, ok := jsonString(rawData); ok {
				e.DataEncoded = []byte(s)
			} else if isJSONContentType(mt) {
				e.DataEncoded = []byte(rawData)
			} else {
				return event.Event{}, invalid("data", jsonValue(rawData), "must be a string for datacontenttype "+strconv.Quote(mt)+" (or use data_base64)")
			}
		}
	}
	if verr := checkContextV1(ec); verr != nil {
		return event.Event{}, verr
	}
	return e, nil
}

// extensionValue converts a JSON member to a CloudEvents extension value;
// nil means null (absent).
func extensionValue(name string, raw json.RawMessage) (interface{}, *ValidationError) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return nil, invalid(name, "", "has no value")
	case raw[0] == '"':
		s, ok := jsonString(raw)
		if !ok {
			return nil, invalid(name, jsonValue(raw), "is not a JSON string")
		}
		return s, nil
	case string(raw) == "true":
		return true, nil
	case string(raw) == "false":
		return false, nil
	case string(raw) == "null":
		return nil, nil
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || f != math.Trunc(f) || f > math.MaxInt32 || f < math.MinInt32 {
			return nil, invalid(name, jsonValue(raw), "must be an integer in the 32-bit range (CloudEvents Integer)")
		}
		return int32(f), nil
	default:
		return nil, invalid(name, jsonValue(raw), "must be a string, boolean or integer (CloudEvents extension)")
	}
}
