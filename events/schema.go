package events

import (
	"embed"
	"io/fs"
)

// SchemaFS holds one JSON Schema (draft 2020-12) per event data payload, at
// "schemas/<event type>.json". The schemas document the contract for other
// teams; this package validates in Go (ParseInput), and a test keeps the two
// in agreement. One difference is inherent: JSON Schema sees numbers by value,
// so it accepts a refundId written 1e3, 1.0 or -0, which the Go validation
// refuses because a refund id is an integer literal.
//
//go:embed schemas/*.json
var SchemaFS embed.FS

// Schema returns the JSON Schema of the data of eventType, or false for a
// type without one.
func Schema(eventType string) ([]byte, bool) {
	b, err := fs.ReadFile(SchemaFS, "schemas/"+eventType+".json")
	if err != nil {
		return nil, false
	}
	return b, true
}

// SchemaTypes lists the event types that have a schema, inputs first.
func SchemaTypes() []string {
	return []string{TypeRefundLookupRequested, TypeReturnShipped, TypeRefundUpdated, TypeRefundRequestFailed}
}
