package pandapon

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Outcomes of a call, as reported to an Observer and recorded on spans.
const (
	OutcomeSuccess       = "success"
	OutcomeBusinessError = "business_error"
	OutcomeRateLimited   = "http_429"  // transient: HTTP 429
	OutcomeServerError   = "http_5xx"  // transient: HTTP 5xx
	OutcomeTimeout       = "timeout"   // transient: attempt timeout or caller deadline
	OutcomeNetwork       = "network"   // transient: no HTTP answer
	OutcomeMalformed     = "malformed" // transient: not an envelope
	OutcomeCircuitOpen   = "circuit_open"
	OutcomeCanceled      = "canceled" // the caller gave up (shutdown)
)

// Observer receives measurements of a Client's work. Implementations must be
// safe for concurrent use and cheap: they run on the request path. A nil
// Observer in Config records nothing.
type Observer interface {
	// CallDone reports a finished call: its outcome (one of the Outcome
	// constants), PandaPon's business code for OutcomeBusinessError (else
	// 0), its duration including retries, and the HTTP attempts it made.
	CallDone(ep Endpoint, outcome string, code int64, d time.Duration, attempts int)
	// Retried reports a retry about to be sent, with the reason the previous
	// attempt failed (an Outcome constant).
	Retried(ep Endpoint, reason string)
	// LimiterWaited reports how long one attempt waited for the rate
	// limiter's token.
	LimiterWaited(d time.Duration)
	// CircuitChanged reports a state change of the circuit breaker:
	// "closed", "half-open" or "open".
	CircuitChanged(from, to string)
	// NotAnsweredYet reports a transient failure of a call before PandaPon
	// has answered any call of this client: Admit lets the next input
	// through only after next (see Admit). failures counts them in a row.
	NotAnsweredYet(failures int, next time.Duration)
}

// ErrCircuitOpen is the cause of a TransientError returned without calling
// PandaPon because the circuit breaker is open (or half-open and already
// probing). Its RetryAfter says when the breaker lets a probe through.
var ErrCircuitOpen = errors.New("circuit breaker open: PandaPon is failing, not calling it")

// BreakerConfig configures the circuit breaker around PandaPon. It opens
// after ConsecutiveFailures transient failures in a row (business errors are
// answers, not failures), refuses calls for OpenTimeout, then lets
// HalfOpenRequests probes through: if they succeed it closes, if one fails
// it opens again. ConsecutiveFailures 0 disables the breaker.
type BreakerConfig struct {
	ConsecutiveFailures uint32
	OpenTimeout         time.Duration // default 30 s
	HalfOpenRequests    uint32        // default 1
}

// CircuitState returns the circuit breaker's state: "closed", "half-open"
// or "open" ("" when the breaker is disabled). Asking moves an open breaker
// whose OpenTimeout has passed to half-open, reported to the Observer like
// any change: otherwise only the next call would, and an idle client's
// breaker would look open long after it stopped being.
func (c *Client) CircuitState() string {
	if c.breaker == nil {
		return ""
	}
	return c.breaker.State().String()
}

// How Admit waits: it asks the breaker every admitPoll while it is open or
// probing, and holds a probe slot for an input it admitted until that
// input's call reaches the breaker, Release gives it back, or
// probeStartTimeout passes (an input admitted may wait behind another of
// its refund). Before a first answer, the n-th failure in a row holds the
// next input for firstRetryBase × 2^(n−1), at most the OpenTimeout.
const (
	admitPoll         = 100 * time.Millisecond
	probeStartTimeout = 5 * time.Second
	firstRetryBase    = time.Second
)

// Admit tells whoever feeds the client work how much to start now, so that
// work is not taken on only to be refused by an open circuit breaker or to
// fail against a PandaPon that is down. Admit and Release make the Client
// a pull.Gate.
//
//   - Closed breaker (or none), after a first call PandaPon answered:
//     math.MaxInt (no limit), at once.
//   - Closed breaker before any call was answered (a process just
//     started, PandaPon perhaps down): 1, one at a time, as if the breaker
//     were half-open. The next is admitted once that call has been
//     answered (then no limit; a business error is an answer) or has
//     failed (then after 1 s, doubling with each failure in a row up to the
//     OpenTimeout), so a replica started during an outage does not take a
//     batch of inputs only to fail them.
//   - Open: it waits until the OpenTimeout has passed.
//   - Half-open: 1 for each free probe slot (BreakerConfig.HalfOpenRequests),
//     one at a time, until a probe's success closes the breaker or its
//     failure opens it again.
//
// It returns 0 only when ctx ends. An admitted probe holds its slot until a
// call reaches the breaker, Release gives it back, or 5 s pass. Calls are
// not told apart, so with more than one probe slot a probe making two
// calls (a return.shipped queries, then submits) can let one input too
// many through, which the breaker refuses.
func (c *Client) Admit(ctx context.Context) int {
	if c.breaker == nil {
		return math.MaxInt
	}
	var wait *time.Timer
	for {
		// The state and the counts are read under separate locks: a
		// change of state between them (counted by OnStateChange) means
		// reading both again.
		gen := c.circuitGen.Load()
		state := c.breaker.State()
		counts := c.breaker.Counts()
		if c.circuitGen.Load() != gen {
			continue
		}
		switch state {
		case gobreaker.StateClosed:
			if c.answered.Load() {
				return math.MaxInt
			}
			if c.admitFirst() {
				return 1
			}
		case gobreaker.StateHalfOpen:
			if c.admitProbe(gen, counts) {
				return 1
			}
		}
		if wait == nil {
			wait = time.NewTimer(admitPoll)
			defer wait.Stop()
		} else {
			wait.Reset(admitPoll)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-wait.C:
		}
	}
}

// Release gives back admissions whose inputs will not call PandaPon
// (n > 0): the pull found nothing, or the input was settled without
// handling (invalid, or past its deliveries). A probe admitted for it is
// no longer waited for.
func (c *Client) Release(n int) {
	if n <= 0 {
		return
	}
	c.probeMu.Lock()
	c.lastProbe = probeAdmission{}
	c.probeMu.Unlock()
}

// probeAdmission is the last probe Admit let through.
type probeAdmission struct {
	first bool      // before any answer (admitFirst), not half-open
	gen   uint64    // circuitGen when admitted
	calls uint64    // calls counted then (the breaker's, or callsStarted)
	at    time.Time // when
}

// pending reports whether p, admitted in gen, has not called yet although
// calls were counted then.
func (p probeAdmission) pending(first bool, gen, calls uint64, timeout time.Duration) bool {
	return !p.at.IsZero() && p.first == first && p.gen == gen && calls <= p.calls && time.Since(p.at) < timeout
}

// admitProbe reports whether the half-open breaker of state change gen,
// with counts, has room for one more probe, and if so records it.
func (c *Client) admitProbe(gen uint64, counts gobreaker.Counts) bool {
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	calls := counts.Requests - min(counts.TotalExclusions, counts.Requests) // as gobreaker counts them
	if c.lastProbe.pending(false, gen, uint64(calls), c.probeStartTimeout) {
		return false
	}
	if calls >= max(c.cfg.Breaker.HalfOpenRequests, 1) {
		return false
	}
	c.lastProbe = probeAdmission{gen: gen, calls: uint64(calls), at: time.Now()}
	return true
}

// admitFirst reports whether a client no call of which PandaPon has
// answered yet may let one more input through, and if so records it: not
// while a call runs or an admitted input has not called, nor within the
// OpenTimeout after a failure.
func (c *Client) admitFirst() bool {
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	// In the order opposite to the writes (noteOutcome, then callsDone):
	// having seen a call done, the outcome it noted is seen too.
	done := c.callsDone.Load()
	started := c.callsStarted.Load()
	if started != done {
		return false // a call runs
	}
	if time.Now().UnixNano() < c.firstRetryAt.Load() {
		return false
	}
	if c.lastProbe.pending(true, 0, started, c.probeStartTimeout) {
		return false
	}
	c.lastProbe = probeAdmission{first: true, calls: started, at: time.Now()}
	return true
}

// noteOutcome records what a call through the breaker says about
// PandaPon: answered (a success or a business error) ends Admit's
// one-at-a-time start; a transient failure before any answer holds the
// next input back (firstRetryBase, doubling per failure in a row, at most
// the OpenTimeout).
func (c *Client) noteOutcome(err error) {
	switch {
	case err == nil || !errors.Is(err, ErrTransient):
		if !c.answered.Load() { // a store per call would be a write on every call's path
			c.answered.Store(true)
		}
	case errors.Is(err, context.Canceled), errors.Is(err, ErrCircuitOpen):
	case !c.answered.Load():
		n := c.firstFailures.Add(1)
		wait := min(firstRetryBase<<(min(n, 20)-1), c.cfg.Breaker.OpenTimeout)
		c.firstRetryAt.Store(time.Now().Add(wait).UnixNano())
		if c.cfg.Observer != nil {
			c.cfg.Observer.NotAnsweredYet(int(n), wait)
		}
	}
}

// newBreaker returns the breaker of cfg (nil when disabled); changed is
// called on each change of state, under the breaker's lock.
func newBreaker(cfg BreakerConfig, obs Observer, changed func()) *gobreaker.CircuitBreaker[*Response] {
	if cfg.ConsecutiveFailures == 0 {
		return nil
	}
	return gobreaker.NewCircuitBreaker[*Response](gobreaker.Settings{
		Name:        "pandapon",
		MaxRequests: max(cfg.HalfOpenRequests, 1),
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.ConsecutiveFailures },
		IsSuccessful: func(err error) bool {
			// Only transient failures say PandaPon is unwell.
			return err == nil || !errors.Is(err, ErrTransient)
		},
		IsExcluded: func(err error) bool {
			// The caller giving up (shutdown) says nothing about PandaPon.
			return errors.Is(err, context.Canceled)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			changed()
			if obs != nil {
				obs.CircuitChanged(from.String(), to.String())
			}
		},
	})
}

// outcomeOf classifies a call's result.
func outcomeOf(err error) (outcome string, code int64) {
	if err == nil {
		return OutcomeSuccess, 0
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return OutcomeBusinessError, ae.Code
	}
	var re *ResponseError
	if errors.As(err, &re) {
		return OutcomeMalformed, 0
	}
	switch {
	case errors.Is(err, ErrCircuitOpen):
		return OutcomeCircuitOpen, 0
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled, 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errAttemptTimeout):
		return OutcomeTimeout, 0
	}
	var te *TransientError
	if errors.As(err, &te) {
		return statusOutcome(te.HTTPStatus), 0
	}
	return OutcomeNetwork, 0
}

// statusOutcome names a transient HTTP status, or a network failure (0).
func statusOutcome(status int) string {
	switch {
	case status == 429:
		return OutcomeRateLimited
	case status >= 500:
		return OutcomeServerError
	}
	return OutcomeNetwork
}

// tracerOf returns the tracer of tp, or nil when tp is nil or a no-op
// provider: then no span is started at all.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	if _, isNoop := tp.(noop.TracerProvider); isNoop {
		return nil
	}
	return tp.Tracer("github.com/pandabridge/pandabridge/pandapon")
}

// endSpan records the call's outcome on its span and ends it.
func endSpan(span trace.Span, outcome string, attempts int, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(
		attribute.String("pandapon.outcome", outcome),
		attribute.Int("pandapon.attempts", attempts),
	)
	var ae *APIError
	if errors.As(err, &ae) {
		span.SetAttributes(attribute.Int64("pandapon.code", ae.Code), attribute.String("pandapon.request_id", ae.RequestID.Value))
	}
	if err != nil && outcome != OutcomeBusinessError {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// retryEvent adds a "retry" event to the call's span.
func retryEvent(ctx context.Context, attempt int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("retry", trace.WithAttributes(attribute.String("attempt", strconv.Itoa(attempt+1))))
	}
}
