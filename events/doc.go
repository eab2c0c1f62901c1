// Package events knows pandabridge's events: their types, how their data is
// validated, their JSON Schemas, and how a CloudEvent maps to a NATS message.
// It is the lowest layer: it talks to neither NATS nor PandaPon, it only
// encodes and decodes.
//
// # Events
//
// All events are CloudEvents 1.0 with JSON data. Inputs are
// refund.lookup.requested ({"refundId"}) and return.shipped ({"refundId",
// "logisticsCompanyCode", "logisticsNo", "buyerPhone", "returnGoodsDesc"}).
// A refundId may be a JSON string of digits or a non-negative JSON integer;
// it is normalised to the string of digits (RefundID). Outputs are
// refund.updated (PandaPon's response data, byte for byte) and
// refund.request.failed (RefundRequestFailed). ParseInput validates an input;
// NewRefundUpdated and NewRefundRequestFailed build outputs whose id is
// derived from the input's source and id (OutputID), so an input delivered
// twice yields the same output event. SchemaFS holds the JSON Schemas.
//
// # NATS mapping
//
// Produced: binary content mode only (EncodeNATS). Each attribute travels as a
// header "ce-<attribute>" in lower case (ce-specversion, ce-id, ce-source,
// ce-type, ce-subject, ce-time in RFC 3339 UTC with nanoseconds, extensions
// such as ce-causationid and ce-traceparent), datacontenttype as Content-Type,
// the data unchanged as the payload, and Nats-Msg-Id set to the event id for
// JetStream de-duplication. Header values are the attributes' canonical
// strings, verbatim (no percent-encoding); values NATS cannot carry unchanged
// (control characters, surrounding white space) are refused, not altered.
//
// Accepted (DecodeNATS):
//   - binary mode, whenever a ce-specversion header is present (names matched
//     without regard to case; Content-Type, or failing that
//     ce-datacontenttype, is the datacontenttype). Headers without the ce-
//     prefix are ignored.
//   - structured mode, when there is no ce-specversion header and
//     Content-Type is application/cloudevents+json (with or without
//     parameters): the payload is the whole event as JSON.
//
// Anything else is not a CloudEvent. Batches are not accepted. NewMessage
// exposes a NATS message to sdk-go's binding machinery with the same rules.
//
// # Errors
//
// Every error from decoding, validating or encoding matches ErrInvalid with
// errors.Is and is a *ValidationError naming the field and the offending
// value on one line, for example
//
//	data.logisticsNo: "" must be a non-empty string
//
// Such an error is permanent: redelivering the message cannot help, so a
// consumer moves it to the dead-letter subject at once. ErrNotCloudEvent
// (neither mode) and ErrUnknownType (a CloudEvent of a type that is not an
// input) narrow it down. No function here panics on malformed input.
//
// # Subjects
//
// Subjects derives every subject from the prefix (default "pandapon"):
// "<prefix>.<event type>" for events, "<prefix>.dlq.<input subject without
// the prefix>" for dead letters.
package events
