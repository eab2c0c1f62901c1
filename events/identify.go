package events

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
)

// Identity is what can be read of a message's event attributes without
// validating it, for the log lines and dead-letter listings of inputs that
// failed validation. Any field may be empty.
type Identity struct {
	Type, ID, Source string
	// RefundID is the subject attribute, or else the data's refundId (a
	// string, or a number's digits).
	RefundID string
}

// Identify reads the attributes of a message best-effort: from its ce-*
// headers (binary mode, header names matched without regard to case) and,
// when its Content-Type is application/cloudevents+json, from the JSON
// event in its payload (structured mode), headers first. It never fails:
// whatever cannot be read is left empty.
func Identify(h nats.Header, data []byte) Identity {
	get := func(name string) string { v, _ := headerValue(h, name); return v }
	id := Identity{Type: get(headerType), ID: get(headerID), Source: get(headerSource), RefundID: get(headerSubject)}
	if ct, _ := headerValue(h, HeaderContentType); strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), ContentTypeStructured) {
		var ev map[string]json.RawMessage
		if json.Unmarshal(data, &ev) != nil {
			return id
		}
		for k, dst := range map[string]*string{"type": &id.Type, "id": &id.ID, "source": &id.Source, "subject": &id.RefundID} {
			if *dst == "" {
				*dst = jsonScalar(ev[k])
			}
		}
		data = ev["data"]
	}
	if id.RefundID == "" && len(data) > 0 {
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) == nil {
			id.RefundID = jsonScalar(obj["refundId"])
		}
	}
	return id
}

// jsonScalar returns a JSON string's value or a JSON number's text; "" for
// anything else.
func jsonScalar(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}
