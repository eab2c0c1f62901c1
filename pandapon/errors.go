package pandapon

import (
	"errors"
	"fmt"
	"time"
)

// ErrTransient matches (with errors.Is) every error that may succeed if the
// same call is made again later: network errors, timeouts, HTTP 429 and 5xx.
// Callers typically redeliver the work after TransientError.RetryAfter (or
// their own backoff) instead of giving up.
var ErrTransient = errors.New("pandapon: transient failure")

// APIError is a business error: PandaPon answered with an envelope whose code
// is not CodeSuccess. It is never retried by the client: the same request
// would be refused again.
type APIError struct {
	Endpoint   string // e.g. "GET /open/order/refund/query"
	HTTPStatus int
	Code       int64
	Msg        string
	RequestID  FlexString // as PandaPon sent it (may be null)
	ReceivedAt time.Time  // when the answer arrived
}

func (e *APIError) Error() string {
	rid := "null"
	if e.RequestID.Valid {
		rid = e.RequestID.Value
	}
	return fmt.Sprintf("pandapon: %s: business error code %d: %s (requestId %s)", e.Endpoint, e.Code, e.Msg, rid)
}

// TransientError reports that a call failed in a way worth retrying later:
// after the client's own retries were used up, or when the caller's context
// ended while waiting. errors.Is(err, ErrTransient) is true for it.
type TransientError struct {
	Endpoint string
	// HTTPStatus is the last response's status, 0 when no response arrived
	// (network error or timeout).
	HTTPStatus int
	// RetryAfter is how long the server asked the client to wait (the last
	// Retry-After header, uncapped), 0 when it did not say.
	RetryAfter time.Duration
	// Attempts is how many HTTP requests were sent.
	Attempts int
	// Sent reports that the last attempt's request was written, in whole or
	// in part, so PandaPon may have processed it although no usable answer
	// came back (a timeout, a reset connection, a 5xx, a truncated body).
	// It is false when PandaPon cannot have processed the request: nothing
	// was written (circuit open, connection refused, the caller gave up
	// before sending) or PandaPon answered 429. It is tracked only for
	// endpoints that are not RetrySafe; for the others, which are harmless
	// to repeat, it is always false. See MayHaveBeenProcessed.
	Sent bool
	// Err is the underlying cause (network error, context error), or nil
	// when the server answered with a transient status.
	Err error
}

func (e *TransientError) Error() string {
	msg := fmt.Sprintf("pandapon: %s: transient failure after %d attempt(s)", e.Endpoint, e.Attempts)
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.HTTPStatus)
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (Retry-After %s)", e.RetryAfter)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TransientError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTransient) true.
func (e *TransientError) Is(target error) bool { return target == ErrTransient }

// MayHaveBeenProcessed reports whether err, from a call to an endpoint
// that is not RetrySafe, leaves it unknown whether PandaPon carried the
// request out: a *TransientError with Sent, or a *ResponseError (PandaPon,
// or something in front of it, answered, but not with a usable envelope).
// A caller must not repeat such a request before PandaPon has had time to
// finish it and its state has been checked again. Business errors
// (*APIError) are answers, not unknowns: it returns false for them.
func MayHaveBeenProcessed(err error) bool {
	if te, ok := errors.AsType[*TransientError](err); ok {
		return te.Sent
	}
	_, ok := errors.AsType[*ResponseError](err)
	return ok
}

// ResponseError reports an answer that is not a usable envelope: a body that
// is not JSON, not an envelope, or an HTTP status that carries no envelope
// (for example a proxy's 404 page). The client does not repeat the request
// itself (a POST may have been processed), but errors.Is(err, ErrTransient)
// is true: a truncated body is usually passing, and a persistent one (a wrong
// base URL) ends in the caller's dead-letter handling after its bounded
// redeliveries rather than in a business outcome.
type ResponseError struct {
	Endpoint   string
	HTTPStatus int
	// BodyPrefix is the first bytes of the body (at most 256), for diagnosis.
	BodyPrefix string
	Err        error
}

func (e *ResponseError) Error() string {
	msg := fmt.Sprintf("pandapon: %s: unusable response (HTTP %d", e.Endpoint, e.HTTPStatus)
	if e.Err != nil {
		msg += ", " + e.Err.Error()
	}
	return msg + fmt.Sprintf("): body starts %q", e.BodyPrefix)
}

func (e *ResponseError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTransient) true.
func (e *ResponseError) Is(target error) bool { return target == ErrTransient }

// bodyPrefixLen bounds ResponseError.BodyPrefix.
const bodyPrefixLen = 256

func bodyPrefix(b []byte) string {
	if len(b) > bodyPrefixLen {
		b = b[:bodyPrefixLen]
	}
	return string(b)
}
