package ingest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/pandabridge/pandabridge/events"
)

// ContentTypeProblem is the media type of every error answer (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// Problem types: the "type" member of an error answer, one per kind of
// failure, so that a client can branch on it without parsing the detail.
const (
	ProblemInvalidEvent       = "urn:pandabridge:problem:invalid-event"
	ProblemUnauthorized       = "urn:pandabridge:problem:unauthorized"
	ProblemTooLarge           = "urn:pandabridge:problem:too-large"
	ProblemUnsupportedMedia   = "urn:pandabridge:problem:unsupported-media-type"
	ProblemUnavailable        = "urn:pandabridge:problem:unavailable"
	ProblemMethodNotAllowed   = "urn:pandabridge:problem:method-not-allowed"
	ProblemBatchPartlyStored  = "urn:pandabridge:problem:batch-partly-stored"
	problemTitleInvalidEvent  = "The event is not a valid pandabridge input"
	problemTitleInvalidBatch  = "The batch holds invalid events; none was published"
	problemTitleUnavailable   = "The event could not be stored; retry later"
	problemTitlePartlyStored  = "Some events of the batch could not be stored; retry the whole batch"
	problemTitleUnauthorized  = "Unauthorized"
	problemTitleTooLarge      = "Request body too large"
	problemTitleUnsupported   = "Unsupported content type"
	problemTitleMethodNotAllw = "Method not allowed"
)

// Problem is an error answer in the RFC 9457 format, with extension members
// saying which field of which event is wrong.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Field names what is wrong, as events.ValidationError does
	// ("data.refundId", "time", "header ce-time", "Content-Type").
	Field string `json:"field,omitempty"`
	// Value is the offending value, quoted or as JSON text, truncated.
	Value string `json:"value,omitempty"`
	// Index is the position in a batch of the event Field is about.
	Index *int `json:"index,omitempty"`
	// Errors lists every invalid event of a batch.
	Errors []EventError `json:"errors,omitempty"`
	// Results reports, for a batch that was partly stored, each event's
	// outcome.
	Results []Result `json:"results,omitempty"`
}

// EventError is one invalid event of a batch.
type EventError struct {
	Index  int    `json:"index"`
	ID     string `json:"id,omitempty"`
	Field  string `json:"field"`
	Value  string `json:"value,omitempty"`
	Detail string `json:"detail"`
}

// Result is the outcome of one published event.
type Result struct {
	// Index is the event's position in a batch (0 for a single event).
	Index int    `json:"index"`
	ID    string `json:"id"`
	Type  string `json:"type,omitempty"`
	// Status is 202 when the event is stored, 503 when it is not.
	Status int `json:"status"`
	// Subject, Stream and Sequence say where it is stored; Duplicate is
	// true when JetStream already held an event with this id (a retry),
	// which is a success.
	Subject   string `json:"subject,omitempty"`
	Stream    string `json:"stream,omitempty"`
	Sequence  uint64 `json:"sequence,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// Error says why it was not stored.
	Error string `json:"error,omitempty"`
}

// Accepted is the body of a 202 answer.
type Accepted struct {
	// Accepted is how many events are stored (duplicates included).
	Accepted int      `json:"accepted"`
	Results  []Result `json:"results"`
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil { // unreachable: only plain structs
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeProblem(w http.ResponseWriter, p Problem) {
	writeJSON(w, p.Status, ContentTypeProblem, p)
}

// invalidProblem turns a decode or validation error into a 400 problem
// naming the field.
func invalidProblem(err error) Problem {
	p := Problem{Type: ProblemInvalidEvent, Title: problemTitleInvalidEvent, Status: http.StatusBadRequest, Detail: err.Error()}
	var verr *events.ValidationError
	if errors.As(err, &verr) {
		p.Field, p.Value = verr.Field, verr.Value
	}
	return p
}

func eventError(i int, id string, err error) EventError {
	e := EventError{Index: i, ID: id, Detail: err.Error()}
	var verr *events.ValidationError
	if errors.As(err, &verr) {
		e.Field, e.Value = verr.Field, verr.Value
	}
	return e
}
