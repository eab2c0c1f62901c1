package events

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The error sentinels of this package. Every error returned by a decode or
// validation function (DecodeNATS, ParseInput, Parse*, EncodeNATS,
// NewRefundRequestFailed) matches ErrInvalid with errors.Is: the message can
// never be processed, however often it is redelivered, so a consumer sends it
// to the dead-letter subject at once instead of retrying it.
var (
	// ErrInvalid is matched by every decode and validation error. Such an
	// error is permanent.
	ErrInvalid = errors.New("invalid event")

	// ErrNotCloudEvent means the message is neither a binary-mode CloudEvent
	// (no ce-specversion header) nor a structured-mode one (Content-Type is
	// not application/cloudevents+json). It also matches ErrInvalid.
	ErrNotCloudEvent = fmt.Errorf("%w: not a CloudEvent", ErrInvalid)

	// ErrUnknownType means the message is a valid CloudEvent whose type is
	// not one this package accepts as input. It also matches ErrInvalid.
	ErrUnknownType = fmt.Errorf("%w: unknown event type", ErrInvalid)
)

// maxValueLen bounds ValidationError.Value, so that a huge payload never ends
// up whole in a log line or a dead-letter header.
const maxValueLen = 64

// ValidationError says which part of an event is wrong, what was found there
// and why it is refused. Its Error text is a single line (control characters
// are replaced), so it can be put in a NATS header such as the dead-letter
// reason, and it is meant for humans: for example
//
//	data.logisticsNo: "" must be a non-empty string
//
// It matches ErrInvalid with errors.Is, and also ErrNotCloudEvent or
// ErrUnknownType when that is the problem.
type ValidationError struct {
	// Field names what is wrong: a CloudEvents attribute ("type",
	// "datacontenttype", "time"), a data field ("data.refundId"), "data"
	// for the payload as a whole, or a NATS header ("header ce-time").
	Field string
	// Value is the offending value as text: JSON text for data fields (so a
	// string shows quoted: `""`, a number bare: `1.5`), a quoted string for
	// attributes and headers. It is truncated to about 64 bytes. Empty when
	// the value is missing.
	Value string
	// Problem says what is wrong, as the end of a sentence about the value:
	// "must be a non-empty string".
	Problem string

	// err is the sentinel this error wraps; nil means ErrInvalid.
	err error
}

// Error returns "Field: Value Problem", or "Field Problem" when Value is
// empty, on one line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.Grow(len(e.Field) + len(e.Value) + len(e.Problem) + 3)
	b.WriteString(e.Field)
	if e.Value != "" {
		b.WriteString(": ")
		b.WriteString(e.Value)
	}
	if e.Problem != "" {
		b.WriteByte(' ')
		b.WriteString(e.Problem)
	}
	return oneLine(b.String())
}

// Unwrap returns the sentinel the error belongs to: ErrInvalid,
// ErrNotCloudEvent or ErrUnknownType.
func (e *ValidationError) Unwrap() error {
	if e.err == nil {
		return ErrInvalid
	}
	return e.err
}

func invalid(field, value, problem string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Problem: problem}
}

// oneLine replaces control characters and invalid UTF-8 so that s is safe in
// a NATS header value and a log line.
func oneLine(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || unicode.IsControl(r) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// quoteValue renders a string value for ValidationError.Value: quoted with
// Go escapes, truncated to about maxValueLen bytes.
func quoteValue(s string) string {
	if len(s) > maxValueLen {
		return strconv.Quote(truncate(s, maxValueLen)) + "…"
	}
	return strconv.Quote(s)
}

// jsonValue renders raw JSON (already known to be valid) for
// ValidationError.Value: compacted to one line, truncated.
func jsonValue(raw []byte) string {
	s := string(compactJSON(raw))
	if len(s) > maxValueLen {
		return truncate(s, maxValueLen) + "…"
	}
	return s
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
