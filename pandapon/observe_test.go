package pandapon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

type recordedCall struct {
	ep       string
	outcome  string
	code     int64
	attempts int
}

type fakeObserver struct {
	mu       sync.Mutex
	calls    []recordedCall
	retries  []string
	waits    int
	circuits []string
	// notAnswered: "failures next" per NotAnsweredYet.
	notAnswered []string
}

func (o *fakeObserver) CallDone(ep Endpoint, outcome string, code int64, _ time.Duration, attempts int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, recordedCall{ep.String(), outcome, code, attempts})
}
func (o *fakeObserver) Retried(_ Endpoint, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retries = append(o.retries, reason)
}
func (o *fakeObserver) LimiterWaited(time.Duration) { o.mu.Lock(); o.waits++; o.mu.Unlock() }
func (o *fakeObserver) CircuitChanged(from, to string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.circuits = append(o.circuits, from+"->"+to)
}

func (o *fakeObserver) NotAnsweredYet(failures int, next time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notAnswered = append(o.notAnswered, fmt.Sprint(failures, " ", next))
}

func TestObserverSeesOutcomesRetriesAndLimiterWaits(t *testing.T) {
	obs := &fakeObserver{}
	rs := newRecordingServer(t,
		reply{status: 503}, reply{status: 429}, reply{status: 200, body: okQuery}, // call 1: two retries
		reply{status: 200, body: `{"code":404,"msg":"refund 9 not found","requestId":"r-1"}`}, // call 2
	)
	c := newTestClient(t, rs.URL, func(c *Config) { c.Observer = obs })
	if _, err := c.QueryRefund(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	var ae *APIError
	if _, err := c.QueryRefund(context.Background(), "9"); !errors.As(err, &ae) {
		t.Fatalf("second call: %v", err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []recordedCall{
		{"GET /open/order/refund/query", OutcomeSuccess, 0, 3},
		{"GET /open/order/refund/query", OutcomeBusinessError, 404, 1},
	}
	if len(obs.calls) != 2 || obs.calls[0] != want[0] || obs.calls[1] != want[1] {
		t.Errorf("calls %+v, want %+v", obs.calls, want)
	}
	if len(obs.retries) != 2 || obs.retries[0] != OutcomeServerError || obs.retries[1] != OutcomeRateLimited {
		t.Errorf("retries %v, want [http_5xx http_429]", obs.retries)
	}
	if obs.waits != 4 {
		t.Errorf("limiter consulted %d times, want once per attempt (4)", obs.waits)
	}
}

func TestCircuitBreakerOpensOnTransientFailuresOnly(t *testing.T) {
	obs := &fakeObserver{}
	rs := newRecordingServer(t, reply{status: 503})
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Observer = obs
		c.Breaker = BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: time.Hour}
	})
	for range 3 {
		if _, err := c.QueryRefund(context.Background(), "1"); errors.Is(err, ErrCircuitOpen) {
			t.Fatal("breaker open before 3 failures")
		}
	}
	for range 5 {
		_, err := c.QueryRefund(context.Background(), "1")
		var te *TransientError
		if !errors.Is(err, ErrCircuitOpen) || !errors.As(err, &te) || te.RetryAfter != time.Hour {
			t.Fatalf("err = %v, want a TransientError wrapping ErrCircuitOpen with RetryAfter 1h", err)
		}
	}
	if n := len(rs.seen()); n != 3 {
		t.Errorf("PandaPon received %d requests; an open breaker must not call it (want 3)", n)
	}
	if len(obs.circuits) != 1 || obs.circuits[0] != "closed->open" {
		t.Errorf("circuit changes %v", obs.circuits)
	}

	business := newRecordingServer(t, reply{status: 200, body: `{"code":404,"msg":"nope"}`})
	c2 := newTestClient(t, business.URL, func(c *Config) { c.Breaker = BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: time.Hour} })
	for range 5 {
		if _, err := c2.QueryRefund(context.Background(), "1"); errors.Is(err, ErrCircuitOpen) {
			t.Fatal("business errors opened the breaker: they are answers, not failures")
		}
	}
}

func TestCircuitBreakerClosesAfterSuccessfulProbe(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 503}, reply{status: 503}, reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Breaker = BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 50 * time.Millisecond}
	})
	for range 2 {
		c.QueryRefund(context.Background(), "1")
	}
	if _, err := c.QueryRefund(context.Background(), "1"); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("want open breaker, got %v", err)
	}
	// After the open timeout one probe goes through, succeeds, and closes it.
	waitFor(t, "a probe to succeed", func() bool {
		_, err := c.QueryRefund(context.Background(), "1")
		return err == nil
	})
	if _, err := c.QueryRefund(context.Background(), "1"); err != nil {
		t.Errorf("after a successful probe the breaker should be closed: %v", err)
	}
	if n := len(rs.seen()); n != 4 {
		t.Errorf("PandaPon received %d requests, want 4 (2 failures, probe, one more)", n)
	}
}

// admitWithin is c.Admit with a context ending after d.
func admitWithin(c *Client, d time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Admit(ctx)
}

// admitsAfterOpenTimeout checks that c admits nothing right after what
// happened at since, and then one input, no sooner than open after it.
func admitsAfterOpenTimeout(t *testing.T, c *Client, since time.Time, open time.Duration, what string) {
	t.Helper()
	if n := admitWithin(c, open/4); n != 0 {
		t.Fatalf("right after %s: Admit = %d, want 0", what, n)
	}
	if n := admitWithin(c, 10*time.Second); n != 1 {
		t.Fatalf("after %s and the open timeout: Admit = %d, want 1", what, n)
	}
	if waited := time.Since(since); waited < open {
		t.Errorf("an input was admitted %s after %s, before the open timeout %s", waited, what, open)
	}
}

// TestAdmitFollowsTheCircuitBreaker: no limit while the breaker is closed;
// while it is open nothing, until the open timeout has passed; then one
// probe, and no other until that one calls PandaPon or its start timeout
// passes; no limit again once a probe succeeded.
func TestAdmitFollowsTheCircuitBreaker(t *testing.T) {
	const open = 200 * time.Millisecond
	rs := newRecordingServer(t, reply{status: 503}, reply{status: 503}, reply{status: 503}, reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Breaker = BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: open}
	})
	c.probeStartTimeout = 400 * time.Millisecond
	ctx := context.Background()
	if n := admitWithin(c, time.Second); n != 1 {
		t.Fatalf("closed breaker before any answer: Admit = %d, want 1", n)
	}
	for range 2 {
		c.QueryRefund(ctx, "1")
	}
	admitsAfterOpenTimeout(t, c, time.Now(), open, "the breaker opened")
	admitted := time.Now()
	if n := admitWithin(c, c.probeStartTimeout/2); n != 0 {
		t.Fatalf("a second probe while the first has not called: Admit = %d, want 0", n)
	}
	// The first never calls (as if the pull found nothing): after the
	// start timeout another probe is admitted.
	if n := admitWithin(c, 10*time.Second); n != 1 {
		t.Fatalf("after the probe start timeout: Admit = %d, want 1 probe", n)
	}
	if waited := time.Since(admitted); waited < c.probeStartTimeout {
		t.Errorf("a second probe was admitted %s after the first, before the start timeout %s", waited, c.probeStartTimeout)
	}
	// This one calls and fails (the third 503): open again, then a probe
	// as soon as the open timeout ends, nothing of the earlier half-open
	// period holding it back (a start timeout longer than that shows it).
	if _, err := c.QueryRefund(ctx, "1"); err == nil || errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("the probe should reach PandaPon and fail: %v", err)
	}
	probeFailed := time.Now()
	c.probeStartTimeout = 5 * time.Second
	if n := admitWithin(c, open+2*time.Second); n != 1 {
		t.Fatalf("after the breaker opened again: Admit = %d, want 1 probe", n)
	}
	if waited := time.Since(probeFailed); waited < open {
		t.Errorf("a probe was admitted %s after the breaker reopened, before its open timeout %s", waited, open)
	}
	if _, err := c.QueryRefund(ctx, "1"); err != nil {
		t.Fatalf("the probe should succeed: %v", err)
	}
	if n := admitWithin(c, admitPoll/2); n != math.MaxInt {
		t.Fatalf("after a successful probe: Admit = %d, want math.MaxInt at once", n)
	}
	if n := len(rs.seen()); n != 4 {
		t.Errorf("PandaPon received %d requests, want 4 (2 failures, a failed probe, a successful one)", n)
	}
}

// TestAdmitStartsOneAtATime: before PandaPon has answered any call, Admit
// lets one input through at a time: the next once the first has called
// and its call ended, or was given back; after a failure only when the
// open timeout has passed; no limit once a call was answered.
func TestAdmitStartsOneAtATime(t *testing.T) {
	const open = 300 * time.Millisecond
	rs := newRecordingServer(t, reply{status: 503}, reply{status: 200, body: okQuery, hang: 400 * time.Millisecond})
	obs := &fakeObserver{}
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Breaker = BreakerConfig{ConsecutiveFailures: 5, OpenTimeout: open}
		c.Observer = obs
	})
	ctx := context.Background()
	if n := admitWithin(c, time.Second); n != 1 {
		t.Fatalf("a new client: Admit = %d, want 1", n)
	}
	if n := admitWithin(c, c.probeStartTimeout/10); n != 0 {
		t.Fatalf("while the first input admitted has not called: Admit = %d, want 0", n)
	}
	c.Release(1) // the pull found nothing
	if n := admitWithin(c, admitPoll/2); n != 1 {
		t.Fatalf("after Release: Admit = %d, want 1 at once", n)
	}
	if _, err := c.QueryRefund(ctx, "1"); err == nil {
		t.Fatal("the first call should fail (503)")
	}
	admitsAfterOpenTimeout(t, c, time.Now(), open, "the first call failed")
	obs.mu.Lock()
	if want := []string{"1 300ms"}; !slices.Equal(obs.notAnswered, want) {
		t.Errorf("NotAnsweredYet reports %q, want %q (1 failure, next after min(1 s, the open timeout))", obs.notAnswered, want)
	}
	obs.mu.Unlock()
	answered := make(chan error, 1)
	go func() { _, err := c.QueryRefund(ctx, "1"); answered <- err }() // answered after 400 ms
	waitFor(t, "the call to reach PandaPon", func() bool { return len(rs.seen()) == 2 })
	if n := admitWithin(c, 200*time.Millisecond); n != 0 {
		t.Fatalf("while the call runs: Admit = %d, want 0", n)
	}
	if err := <-answered; err != nil {
		t.Fatalf("the second call should succeed: %v", err)
	}
	if n := admitWithin(c, admitPoll/2); n != math.MaxInt {
		t.Fatalf("after an answer: Admit = %d, want math.MaxInt at once", n)
	}
}

// TestAdmitStartTakesABusinessErrorAsAnAnswer: before a first answer, a
// call cancelled by its caller says nothing of PandaPon (the next input
// goes at once), a business error is an answer (no limit from then on).
func TestAdmitStartTakesABusinessErrorAsAnAnswer(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 200, body: `{"code":404,"msg":"no such refund"}`})
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Breaker = BreakerConfig{ConsecutiveFailures: 5, OpenTimeout: time.Hour}
	})
	if n := admitWithin(c, time.Second); n != 1 {
		t.Fatalf("a new client: Admit = %d, want 1", n)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.QueryRefund(cancelled, "1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call with a cancelled context: %v, want context.Canceled", err)
	}
	if n := admitWithin(c, firstRetryBase/2); n != 1 {
		t.Fatalf("after a cancelled call: Admit = %d, want 1 at once (no wait as after a failure)", n)
	}
	var ae *APIError
	if _, err := c.QueryRefund(context.Background(), "1"); !errors.As(err, &ae) {
		t.Fatalf("want a business error, got %v", err)
	}
	if n := admitWithin(c, admitPoll/2); n != math.MaxInt {
		t.Fatalf("after a business error: Admit = %d, want math.MaxInt", n)
	}
}

// TestAdmitHoldsProbeSlots: with two probe slots, a second probe is
// admitted as soon as the first calls PandaPon, and none while both are
// running, however long they take.
func TestAdmitHoldsProbeSlots(t *testing.T) {
	const open = 100 * time.Millisecond
	rs := newRecordingServer(t, reply{status: 503}, reply{status: 503}, reply{status: 200, body: okQuery, hang: 30 * time.Second})
	c := newTestClient(t, rs.URL, func(c *Config) {
		c.MaxRetries = -1
		c.Breaker = BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: open, HalfOpenRequests: 2}
	})
	c.probeStartTimeout = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var probes sync.WaitGroup
	defer func() { cancel(); probes.Wait() }()
	for range 2 {
		c.QueryRefund(ctx, "1")
	}
	for i, within := range []time.Duration{5 * time.Second, c.probeStartTimeout / 2} {
		// The second within less than the start timeout: its slot is
		// free because the first probe called, not because time passed.
		if n := admitWithin(c, within); n != 1 {
			t.Fatalf("probe %d: Admit = %d, want 1 within %s", i+1, n, within)
		}
		probes.Go(func() { c.QueryRefund(ctx, "1") }) // hangs at PandaPon
		waitFor(t, "the probe to reach PandaPon", func() bool { return len(rs.seen()) == 3+i })
	}
	if n := admitWithin(c, 3*c.probeStartTimeout); n != 0 {
		t.Errorf("both probe slots taken by running calls: Admit = %d, want 0", n)
	}
}

func TestCallSpanRecordsRetriesAndOutcome(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := trace.NewTracerProvider(trace.WithSyncer(exp))
	rs := newRecordingServer(t, reply{status: 502}, reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, func(c *Config) { c.TracerProvider = tp })
	if _, err := c.QueryRefund(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "PandaPon GET /open/order/refund/query" {
		t.Fatalf("spans %v", spans)
	}
	s := spans[0]
	if len(s.Events) != 1 || s.Events[0].Name != "retry" {
		t.Errorf("span events %v, want one retry", s.Events)
	}
	attrs := map[string]string{}
	for _, a := range s.Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["pandapon.outcome"] != "success" || attrs["pandapon.attempts"] != "2" {
		t.Errorf("span attributes %v", attrs)
	}
}
