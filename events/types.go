package events

import (
	"bytes"
	"encoding/json"
)

// Event types of the contract.
const (
	// TypeRefundLookupRequested (input) asks for a refund's current state.
	TypeRefundLookupRequested = "refund.lookup.requested"
	// TypeReturnShipped (input) submits the return logistics of a refund.
	TypeReturnShipped = "return.shipped"
	// TypeRefundUpdated (output) carries PandaPon's answer data unchanged.
	TypeRefundUpdated = "refund.updated"
	// TypeRefundRequestFailed (output) reports a PandaPon business error.
	TypeRefundRequestFailed = "refund.request.failed"
)

// CloudEvents extension attribute names used on output events.
const (
	// ExtCausationID holds the id of the input event an output answers.
	ExtCausationID = "causationid"
	// ExtTraceparent and ExtTracestate are the CloudEvents distributed
	// tracing extension (W3C Trace Context), copied from input to output.
	ExtTraceparent = "traceparent"
	ExtTracestate  = "tracestate"
)

// Wire constants of the NATS mapping.
const (
	// HeaderPrefix starts the header name of every CloudEvents attribute in
	// binary mode: attribute "id" travels as header "ce-id". Names are
	// written in lower case; on input the prefix and name are matched
	// without regard to case.
	HeaderPrefix = "ce-"
	// HeaderContentType carries the datacontenttype attribute in binary mode
	// and the event format (ContentTypeStructured) in structured mode.
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's de-duplication header (jetstream.MsgIDHeader).
	// EncodeNATS sets it to the event id, so a republished output is
	// dropped by the stream inside its duplicate window.
	HeaderMsgID = "Nats-Msg-Id"

	// ContentTypeJSON is the datacontenttype of every output event.
	ContentTypeJSON = "application/json"
	// ContentTypeStructured marks a structured-mode message: the whole event
	// as JSON in the payload.
	ContentTypeStructured = "application/cloudevents+json"
	// contentTypeBatch is the batched format, which is not accepted.
	contentTypeBatch = "application/cloudevents-batch+json"
)

// RefundID is a PandaPon refund id, always a non-empty string of ASCII
// digits. In input data it may be a JSON string of digits ("110002687818")
// or a non-negative JSON integer (110002687818): both unmarshal to the same
// RefundID, every digit kept (it is never decoded through float64). It
// refuses fractions (1.5), exponents (1e3), negative numbers, empty or blank
// strings, strings with anything but digits, booleans and null. It always
// marshals as a JSON string.
type RefundID string

// String returns the digits.
func (id RefundID) String() string { return string(id) }

// MarshalJSON writes the id as a JSON string.
func (id RefundID) MarshalJSON() ([]byte, error) {
	return json.Marshal(string(id))
}

// UnmarshalJSON accepts a JSON string of digits or a non-negative JSON
// integer. Its errors are *ValidationError with Field "refundId".
func (id *RefundID) UnmarshalJSON(b []byte) error {
	v, err := parseRefundID("refundId", b)
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// RefundLookupRequested is the data of a refund.lookup.requested event.
type RefundLookupRequested struct {
	RefundID RefundID `json:"refundId"`
}

// ReturnShipped is the data of a return.shipped event: the return logistics
// to submit to PandaPon.
type ReturnShipped struct {
	RefundID             RefundID `json:"refundId"`
	LogisticsCompanyCode string   `json:"logisticsCompanyCode"`
	LogisticsNo          string   `json:"logisticsNo"`
	BuyerPhone           string   `json:"buyerPhone"`
	// ReturnGoodsDesc is nil when the field was absent or null.
	ReturnGoodsDesc *string `json:"returnGoodsDesc"`
}

// RefundRequestFailed is the data of a refund.request.failed event: PandaPon
// refused the request with a business error.
type RefundRequestFailed struct {
	// RefundID is the refund the input was about.
	RefundID string `json:"refundId"`
	// RequestType is the input event's type.
	RequestType string `json:"requestType"`
	// Code, Msg and RequestID are PandaPon's, as PandaPon sent them.
	Code int64  `json:"code"`
	Msg  string `json:"msg"`
	// RequestID is nil (JSON null) when PandaPon sent null.
	RequestID *string `json:"requestId"`
	// Reason is a sentence for humans.
	Reason string `json:"reason"`
}

// compactJSON returns raw without insignificant whitespace, or raw itself
// when it has none or is not valid JSON.
func compactJSON(raw []byte) []byte {
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		return raw
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}
