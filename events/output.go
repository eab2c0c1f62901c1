package events

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"
)

// outputIDNamespace is the UUID namespace of OutputID. It is part of the
// contract: changing it changes the id of every output event, so a
// redelivered input would no longer be de-duplicated against an answer
// published before the change.
var outputIDNamespace = uuid.MustParse("6f1d6a58-3b0e-4c3a-9d0f-2b7c1e5a9d41")

// OutputID returns the id of the output event answering the input event
// (inputSource, inputID): a name-based UUID (version 5, SHA-1) in the
// namespace 6f1d6a58-3b0e-4c3a-9d0f-2b7c1e5a9d41 over
// inputSource + "\x00" + inputID. The same input
// always yields the same id, so an input delivered twice yields the same
// output event, which JetStream de-duplicates by Nats-Msg-Id. The NUL
// separator cannot occur in a CloudEvents string, so two different pairs
// never hash the same text.
func OutputID(inputSource, inputID string) string {
	// uuid.NewSHA1(outputIDNamespace, name), computed with sha1.Sum over
	// one buffer (on the stack for the usual sizes) instead of a hash.Hash.
	var stack [256]byte
	buf := append(stack[:0], outputIDNamespace[:]...)
	buf = append(buf, inputSource...)
	buf = append(buf, 0)
	buf = append(buf, inputID...)
	sum := sha1.Sum(buf)
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 0x50 // version 5
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id.String()
}

// NewRefundUpdated builds the refund.updated event answering in: id
// OutputID(in.Source(), in.ID()), the given source, subject refundID, time
// answeredAt in UTC, datacontenttype application/json, extension causationid
// = in.ID(), traceparent and tracestate copied from in when present (and
// carriable in a NATS header; otherwise left out, as W3C Trace Context does
// with a malformed parent). data, PandaPon's response data object, becomes
// the event data as is, not copied and not re-encoded, so every digit of
// every number survives.
func NewRefundUpdated(in event.Event, source, refundID string, data []byte, answeredAt time.Time) event.Event {
	e := newOutput(in, TypeRefundUpdated, source, refundID, answeredAt)
	e.DataEncoded = data
	return e
}

// NewRefundRequestFailed builds the refund.request.failed event answering in,
// with the same attributes as NewRefundUpdated and f as JSON data. It checks
// f: RefundID must be a string of digits, RequestType an input type and
// Reason non-empty; errors are *ValidationError matching ErrInvalid.
func NewRefundRequestFailed(in event.Event, source string, f RefundRequestFailed, answeredAt time.Time) (event.Event, error) {
	if !allDigits(f.RefundID) {
		return event.Event{}, invalid("data.refundId", quoteValue(f.RefundID), "must be a string of digits")
	}
	if f.RequestType != TypeRefundLookupRequested && f.RequestType != TypeReturnShipped {
		return event.Event{}, invalid("data.requestType", quoteValue(f.RequestType), "must be an input type")
	}
	if f.Reason == "" {
		return event.Event{}, invalid("data.reason", `""`, "must be a non-empty sentence")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // PandaPon's msg stays readable: no \u003c for '<'
	if err := enc.Encode(f); err != nil {
		return event.Event{}, invalid("data", "", "cannot be encoded: "+err.Error())
	}
	e := newOutput(in, TypeRefundRequestFailed, source, f.RefundID, answeredAt)
	e.DataEncoded = bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	return e, nil
}

func newOutput(in event.Event, eventType, source, subject string, answeredAt time.Time) event.Event {
	var inID, inSource string
	if ec, ok := in.Context.(*event.EventContextV1); ok {
		inID, inSource = ec.ID, sourceText(ec.Source)
	} else if in.Context != nil {
		inID, inSource = in.ID(), in.Source()
	}
	ct := ContentTypeJSON
	ec := &event.EventContextV1{
		ID:              OutputID(inSource, inID),
		Source:          types.URIRef{},
		Type:            eventType,
		Subject:         &subject,
		Time:            &types.Timestamp{Time: answeredAt.UTC()},
		DataContentType: &ct,
		Extensions:      map[string]interface{}{ExtCausationID: inID},
	}
	if u, ok := outputSources.parse(source); ok {
		ec.Source = u
	}
	if in.Context != nil {
		for _, name := range [...]string{ExtTraceparent, ExtTracestate} {
			v, ok := in.Extensions()[name]
			if !ok {
				continue
			}
			s, err := types.Format(v)
			if err != nil || s == "" || checkHeaderSafe(name, s) != nil {
				continue
			}
			ec.Extensions[name] = s
		}
	}
	return event.Event{Context: ec}
}
