package pandapon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/pandabridge/pandabridge/internal/redact"
)

// DefaultBaseURL is PandaPon's production API.
const DefaultBaseURL = "https://api.pandapon.com"

// Defaults applied by New to zero fields of Config.
const (
	DefaultRateLimit        = 50.0 // requests per second
	DefaultMaxConcurrent    = 64
	DefaultAttemptTimeout   = 10 * time.Second
	DefaultMaxRetries       = 3
	DefaultRetryWaitMin     = 200 * time.Millisecond
	DefaultRetryWaitMax     = 5 * time.Second
	DefaultRetryAfterMax    = 10 * time.Second
	DefaultMaxResponseBytes = 8 << 20
)

// Config configures a Client. Zero numeric fields take the defaults above.
type Config struct {
	// BaseURL is scheme://host[:port][/prefix]; default DefaultBaseURL.
	BaseURL     string
	Credentials Credentials

	// RateLimit is the sustained number of HTTP requests per second the
	// client sends (every attempt counts), shared by all goroutines using the
	// client; a negative value means unlimited. Burst is the token bucket's
	// size, default max(1, RateLimit).
	RateLimit float64
	Burst     int
	// MaxConcurrent caps the HTTP requests in flight at once (default 64).
	// The connection pool keeps as many idle connections, so a busy client
	// reuses connections instead of dialling.
	MaxConcurrent int

	// AttemptTimeout bounds one HTTP attempt, from the moment it has passed
	// the rate limiter and concurrency cap until its body is read (default
	// 10 s). The caller's context bounds the whole call, retries included.
	AttemptTimeout time.Duration
	// MaxRetries is how many times a transient failure (network error,
	// attempt timeout, HTTP 429 or 5xx) is retried, default 3; negative
	// means no retries.
	MaxRetries int
	// RetryWaitMin and RetryWaitMax bound the jittered exponential backoff
	// between attempts (defaults 200 ms and 5 s).
	RetryWaitMin, RetryWaitMax time.Duration
	// RetryAfterMax caps how long the client waits for a Retry-After header
	// (default 10 s). When the server asks for longer, the client stops
	// retrying and returns a TransientError whose RetryAfter says how long
	// the server asked for, so the caller can come back later without
	// holding a worker.
	RetryAfterMax time.Duration
	// MaxResponseBytes bounds a response body (default 8 MiB).
	MaxResponseBytes int64

	// Transport sends the requests; default a pooled http.Transport sized to
	// MaxConcurrent.
	Transport http.RoundTripper
	// Now is the clock used for timestamps (default time.Now).
	Now func() time.Time

	// Breaker configures the circuit breaker (disabled when its
	// ConsecutiveFailures is 0).
	Breaker BreakerConfig
	// Observer receives metrics of every call (nil: none).
	Observer Observer
	// TracerProvider creates a client span per call, with a "retry" event
	// per retry (nil: no tracing, no cost).
	TracerProvider trace.TracerProvider
}

// Validate reports the first invalid field of c, naming it.
func (c Config) Validate() error {
	if c.Credentials.AccessKey == "" {
		return errors.New("pandapon: Credentials.AccessKey is empty")
	}
	if c.Credentials.AccessSecret == "" {
		return errors.New("pandapon: Credentials.AccessSecret is empty")
	}
	if _, err := ParseTimestampUnit(string(c.Credentials.TimestampUnit)); err != nil {
		return fmt.Errorf("pandapon: Credentials.TimestampUnit: %w", err)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(c.BaseURL, "?#") {
			return fmt.Errorf("pandapon: BaseURL %q: want http(s)://host[:port][/prefix], without a query or fragment", redact.URLs(c.BaseURL))
		}
	}
	if c.MaxConcurrent < 0 {
		return fmt.Errorf("pandapon: MaxConcurrent %d is negative", c.MaxConcurrent)
	}
	if c.Burst < 0 {
		return fmt.Errorf("pandapon: Burst %d is negative", c.Burst)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Credentials.TimestampUnit == "" {
		c.Credentials.TimestampUnit = Milliseconds
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Burst == 0 {
		c.Burst = max(1, int(c.RateLimit))
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryWaitMin <= 0 {
		c.RetryWaitMin = DefaultRetryWaitMin
	}
	if c.RetryWaitMax <= 0 {
		c.RetryWaitMax = DefaultRetryWaitMax
	}
	if c.RetryWaitMax < c.RetryWaitMin {
		c.RetryWaitMax = c.RetryWaitMin
	}
	if c.RetryAfterMax <= 0 {
		c.RetryAfterMax = DefaultRetryAfterMax
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Breaker.OpenTimeout <= 0 {
		c.Breaker.OpenTimeout = 30 * time.Second
	}
	if c.Transport == nil {
		c.Transport = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          c.MaxConcurrent,
			MaxIdleConnsPerHost:   c.MaxConcurrent,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			// Requests are a few hundred bytes and answers a few kB: small
			// bufio buffers keep a pool of hundreds of connections light.
			WriteBufferSize: 1 << 10,
			ReadBufferSize:  2 << 10,
		}
	}
}

// Client calls PandaPon's after-sales API: it signs every attempt, retries
// transient failures with jittered exponential backoff, limits its own rate
// and concurrency, and decodes the envelope into typed errors. A Client is
// safe for concurrent use; share one per process so the limits are shared.
type Client struct {
	cfg     Config
	http    *retryablehttp.Client
	lim     *limitedTransport
	tracer  trace.Tracer
	breaker *gobreaker.CircuitBreaker[*Response]
	// circuitGen counts the breaker's changes of state.
	circuitGen atomic.Uint64
	// For Admit before PandaPon's first answer: calls through the breaker
	// started and done, whether one was answered, failures in a row before
	// that, and when a next input may go after a failure (unix ns).
	callsStarted, callsDone atomic.Uint64
	answered                atomic.Bool
	firstFailures           atomic.Int64
	firstRetryAt            atomic.Int64
	// probeMu guards lastProbe, the last probe Admit let through.
	probeMu           sync.Mutex
	lastProbe         probeAdmission
	probeStartTimeout time.Duration
	// base is cfg.BaseURL parsed once, so that a request's URL is built
	// without parsing text; nil when the base URL has an escaped path or
	// an empty port, which only parsing the joined text handles faithfully.
	base *url.URL
}

// String names the client by its base URL (any password in it hidden); it
// keeps fmt from printing the configuration, credentials included, field by
// field.
func (c *Client) String() string { return "pandapon.Client(" + redact.URLs(c.cfg.BaseURL) + ")" }

// GoString is String, for %#v.
func (c *Client) GoString() string { return c.String() }

// New returns a Client for cfg, or an error naming the invalid field.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	lim := newLimitedTransport(cfg)
	c := &Client{cfg: cfg, lim: lim, tracer: tracerOf(cfg.TracerProvider), probeStartTimeout: probeStartTimeout}
	c.breaker = newBreaker(cfg.Breaker, cfg.Observer, func() { c.circuitGen.Add(1) })
	// Validate refused a query and a fragment; an escaped path and an
	// empty port are left to parsing the joined text.
	if u, err := url.Parse(cfg.BaseURL); err == nil && u.RawPath == "" && u.Opaque == "" && !strings.HasSuffix(u.Host, ":") {
		c.base = u
	}
	c.http = &retryablehttp.Client{
		// No http.Client.Timeout: limitedTransport times each attempt from
		// when it has passed the limiter, so queueing is not a timeout.
		// Redirects are not followed: net/http would turn the POST into a
		// body-less GET and send the signed headers to whatever host the
		// Location names. A 3xx is reported as a ResponseError instead.
		HTTPClient: &http.Client{Transport: lim, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		Logger:       nil, // retryablehttp would log URLs; we report through errors
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.MaxRetries,
		CheckRetry:   c.checkRetry,
		Backoff:      jitteredBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: c.prepareRetry,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			st := stateFrom(req.Context())
			if st == nil {
				return
			}
			st.attempts = attempt + 1
			if attempt > 0 {
				retryEvent(req.Context(), attempt)
				if cfg.Observer != nil {
					cfg.Observer.Retried(st.endpoint, st.lastFailure)
				}
			}
		},
	}
	return c, nil
}

// Endpoint describes one PandaPon API operation.
type Endpoint struct {
	Method string
	// Path is the URL path; for endpoints taking an id in the path it ends
	// with "/" and the id is appended.
	Path string
	// RetrySafe says a duplicate request cannot do harm, so any transient
	// failure may be retried. Otherwise only failures that prove the request
	// was not processed (HTTP 429, connection refused) are retried.
	RetrySafe bool
}

// String returns "METHOD /path", the form used in errors.
func (e Endpoint) String() string { return e.Method + " " + e.Path }

// Canonical header keys and a shared value, set without
// http.Header.Set's per-call canonicalisation. headerJSON is never
// modified.
var (
	headerContentType = http.CanonicalHeaderKey("Content-Type")
	headerAccept      = http.CanonicalHeaderKey("Accept")
	headerJSON        = []string{"application/json"}
)

// callState travels in the request context so that the shared retry
// policies know about the call they are deciding for.
type callState struct {
	endpoint    Endpoint
	attempts    int
	lastFailure string // outcome of the attempt that is being retried
	// sent is set when the current attempt of an endpoint that is not
	// RetrySafe has written its request headers: from then on PandaPon
	// may process it (TransientError.Sent).
	sent atomic.Bool
}

type callStateKey struct{}

func stateFrom(ctx context.Context) *callState {
	st, _ := ctx.Value(callStateKey{}).(*callState)
	return st
}

// Response is a successful (code 200) answer.
type Response struct {
	Endpoint  Endpoint
	RequestID FlexString
	Msg       string
	// Data is the envelope's data exactly as PandaPon sent it.
	Data json.RawMessage
	// ReceivedAt is when the answer arrived.
	ReceivedAt time.Time
	// Attempts is how many HTTP requests the call took.
	Attempts int
}

// Call performs one operation: pathSuffix is appended to ep.Path, query is
// encoded into the URL, and body (if non-nil) is sent as JSON. It returns the
// success response, or an *APIError (business error, not retried), a
// *TransientError (retries used up, ctx ended, or the circuit breaker open:
// then it wraps ErrCircuitOpen), or a *ResponseError (unusable answer). The
// secret appears in none of them.
func (c *Client) Call(ctx context.Context, ep Endpoint, pathSuffix string, query url.Values, body any) (*Response, error) {
	start := time.Now()
	span := trace.SpanFromContext(ctx) // without tracing: a no-op span, at no cost
	if c.tracer != nil {
		ctx, span = c.tracer.Start(ctx, "PandaPon "+ep.String(), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("http.request.method", ep.Method), attribute.String("url.path", ep.Path)))
	}
	st := &callState{endpoint: ep}
	ctx = context.WithValue(ctx, callStateKey{}, st)
	var resp *Response
	var err error
	if c.breaker == nil {
		resp, err = c.call(ctx, st, pathSuffix, query, body)
	} else {
		resp, err = c.callThroughBreaker(ep, func() (*Response, error) { return c.call(ctx, st, pathSuffix, query, body) })
	}
	outcome, code := outcomeOf(err)
	if c.cfg.Observer != nil {
		c.cfg.Observer.CallDone(ep, outcome, code, time.Since(start), st.attempts)
	}
	endSpan(span, outcome, st.attempts, err)
	return resp, err
}

// callThroughBreaker runs call to ep through the breaker: a refusal
// becomes a TransientError wrapping ErrCircuitOpen, and the call is
// counted for Admit: started, what its outcome says of PandaPon
// (noteOutcome), done. A call that panics is counted done, its outcome
// unknown.
func (c *Client) callThroughBreaker(ep Endpoint, call func() (*Response, error)) (*Response, error) {
	c.callsStarted.Add(1)
	noted := false
	defer func() {
		if !noted {
			c.callsDone.Add(1)
		}
	}()
	resp, err := c.breaker.Execute(call)
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		err = &TransientError{Endpoint: ep.String(), RetryAfter: c.cfg.Breaker.OpenTimeout, Err: ErrCircuitOpen}
	}
	c.noteOutcome(err) // before callsDone: Admit reads them the other way round
	c.callsDone.Add(1)
	noted = true
	return resp, err
}

func (c *Client) call(ctx context.Context, st *callState, pathSuffix string, query url.Values, body any) (*Response, error) {
	ep := st.endpoint
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("pandapon: %s: encoding request body: %w", ep, err)
		}
	}
	var rawBody any
	if payload != nil {
		rawBody = payload
	}
	req, err := c.newRequest(ctx, ep, pathSuffix, query, rawBody)
	if err != nil {
		return nil, fmt.Errorf("pandapon: %s: building request: %w", ep, err)
	}
	if payload != nil {
		req.Header[headerContentType] = headerJSON
	}
	req.Header[headerAccept] = headerJSON
	c.cfg.Credentials.SignRequest(req.Header, c.cfg.Now())
	if !ep.RetrySafe {
		// Only these need to know whether a failed attempt may have been
		// processed; the trace costs an allocation per request.
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteHeaders: func() { st.sent.Store(true) },
		}))
	}

	resp, err := c.http.Do(req)
	if err != nil {
		if resp != nil {
			drain(resp.Body)
		}
		return nil, &TransientError{Endpoint: ep.String(), Attempts: st.attempts, Sent: st.sent.Load(), Err: scrubURLError(err)}
	}
	defer drain(resp.Body)
	if isTransientStatus(resp.StatusCode) {
		ra, _ := retryAfter(resp)
		// A 429 is a refusal before processing; any other status may come
		// after PandaPon did the work.
		sent := st.sent.Load() && resp.StatusCode != http.StatusTooManyRequests
		return nil, &TransientError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, RetryAfter: ra, Attempts: st.attempts, Sent: sent}
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, &ResponseError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode,
			Err: fmt.Errorf("redirect to %q not followed: PANDAPON_BASE_URL should name the API itself", redactQuery(resp.Header.Get("Location")))}
	}
	b, err := readBody(resp, c.cfg.MaxResponseBytes)
	if err != nil {
		return nil, &TransientError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, Attempts: st.attempts, Sent: st.sent.Load(),
			Err: fmt.Errorf("reading body: %w", err)}
	}
	received := c.cfg.Now()
	if int64(len(b)) > c.cfg.MaxResponseBytes {
		return nil, &ResponseError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, BodyPrefix: bodyPrefix(b),
			Err: fmt.Errorf("body longer than %d bytes", c.cfg.MaxResponseBytes)}
	}
	env, err := decodeEnvelope(b)
	if err != nil {
		return nil, &ResponseError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, BodyPrefix: bodyPrefix(b), Err: err}
	}
	if env.Code.Value != CodeSuccess {
		return nil, &APIError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, Code: env.Code.Value, Msg: env.Msg, RequestID: env.RequestID, ReceivedAt: received}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &ResponseError{Endpoint: ep.String(), HTTPStatus: resp.StatusCode, BodyPrefix: bodyPrefix(b),
			Err: errors.New("success envelope with a non-2xx status")}
	}
	return &Response{Endpoint: ep, RequestID: env.RequestID, Msg: env.Msg, Data: env.Data, ReceivedAt: received, Attempts: st.attempts}, nil
}

// requestURL returns the URL of a call: BaseURL, then ep.Path, then
// pathSuffix path-escaped, then query encoded.
func (c *Client) requestURL(ep Endpoint, pathSuffix string, query url.Values) string {
	u := c.cfg.BaseURL + ep.Path + url.PathEscape(pathSuffix)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// newRequest builds the request of one call to requestURL(ep, pathSuffix,
// query). Without a pathSuffix, and with a plain base URL, it fills in the
// URL parsed once in New instead of parsing the joined text: the same
// *url.URL (TestNewRequestURLIsWhatParsingGives), a parse the fewer per
// request on the hot path.
func (c *Client) newRequest(ctx context.Context, ep Endpoint, pathSuffix string, query url.Values, rawBody any) (*retryablehttp.Request, error) {
	if c.base == nil || pathSuffix != "" {
		return retryablehttp.NewRequestWithContext(ctx, ep.Method, c.requestURL(ep, pathSuffix, query), rawBody)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, ep.Method, "", rawBody)
	if err != nil {
		return nil, err
	}
	u := *c.base
	u.Path += ep.Path
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	req.URL = &u
	req.Host = u.Host
	return req, nil
}

// decodeEnvelope parses b as an envelope, requiring a code. Data is a
// subslice of b (not copied), or nil when absent or null. It scans b once
// (scanEnvelope) instead of encoding/json's validate-then-decode.
func decodeEnvelope(b []byte) (Envelope, error) {
	m, isObject, err := scanEnvelope(b)
	if err != nil {
		return Envelope{}, fmt.Errorf("not a PandaPon envelope: %w", err)
	}
	if !isObject {
		return Envelope{}, errNotEnvelope
	}
	var env Envelope
	if m.code == nil {
		return Envelope{}, errors.New("not a PandaPon envelope: no code")
	}
	if err := env.Code.UnmarshalJSON(m.code); err != nil || !env.Code.Valid {
		return Envelope{}, fmt.Errorf("not a PandaPon envelope: code %.40s is not an integer", m.code)
	}
	if m.msg != nil && !bytes.Equal(m.msg, []byte("null")) {
		if m.msg[0] != '"' {
			return Envelope{}, fmt.Errorf("not a PandaPon envelope: msg %.40s is not a string", m.msg)
		}
		if env.Msg, err = decodeString(m.msg); err != nil {
			return Envelope{}, fmt.Errorf("not a PandaPon envelope: msg: %w", err)
		}
	}
	for _, f := range []struct {
		raw  []byte
		dst  *FlexString
		name string
	}{{m.requestID, &env.RequestID, "requestId"}, {m.developID, &env.DevelopID, "developId"}} {
		if f.raw == nil {
			continue
		}
		if err := f.dst.UnmarshalJSON(f.raw); err != nil {
			return Envelope{}, fmt.Errorf("not a PandaPon envelope: %s: %w", f.name, err)
		}
	}
	if m.data != nil && !bytes.Equal(m.data, []byte("null")) {
		env.Data = m.data
	}
	return env, nil
}

// checkRetry is the retryablehttp.CheckRetry policy: see Config and
// Endpoint.RetrySafe.
func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	st := stateFrom(ctx)
	retrySafe := st == nil || st.endpoint.RetrySafe
	if err != nil {
		if st != nil {
			st.lastFailure = OutcomeNetwork
			if errors.Is(err, errAttemptTimeout) {
				st.lastFailure = OutcomeTimeout
			}
		}
		if retrySafe || isConnRefused(err) {
			return c.retrying(st), nil
		}
		return false, nil
	}
	if st != nil {
		st.lastFailure = statusOutcome(resp.StatusCode)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		// 429 means refused before processing: always safe to repeat.
	case isTransientStatus(resp.StatusCode):
		if !retrySafe {
			return false, nil
		}
	default:
		return false, nil
	}
	if ra, ok := retryAfter(resp); ok && ra > c.cfg.RetryAfterMax {
		return false, nil // come back later rather than hold the caller
	}
	if dl, ok := ctx.Deadline(); ok {
		if ra, _ := retryAfter(resp); time.Until(dl) < ra {
			return false, nil // the caller's deadline ends before we may retry
		}
	}
	return c.retrying(st), nil
}

// retrying records that the attempt being retried ended in a way that
// proves PandaPon did not process it (for endpoints that are not
// RetrySafe, checkRetry retries nothing else), and returns true.
func (c *Client) retrying(st *callState) bool {
	if st != nil {
		st.sent.Store(false)
	}
	return true
}

// prepareRetry re-signs a request before each retry with a fresh nonce and
// timestamp. retryablehttp copies the request shallowly, so the header map is
// cloned first rather than written under the previous attempt.
func (c *Client) prepareRetry(req *http.Request) error {
	req.Header = req.Header.Clone()
	c.cfg.Credentials.SignRequest(req.Header, c.cfg.Now())
	return nil
}

// jitteredBackoff is the retryablehttp.Backoff policy: full-jitter
// exponential backoff between min and max, or the server's Retry-After when
// it gave one (checkRetry has already refused values above RetryAfterMax).
func jitteredBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if ra, ok := retryAfter(resp); ok {
			return ra
		}
	}
	ceil := lo << min(attempt, 30)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	// Full jitter in [lo, ceil]: spreads retries of many callers apart.
	return lo + rand.N(ceil-lo+1)
}

// retryAfter parses a Retry-After header in seconds or HTTP-date form.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t)), true
	}
	return 0, false
}

func isTransientStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// redactQuery returns a Location for an error message: without its query,
// fragment and user information, which may carry tokens.
func redactQuery(loc string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return "(not a URL)"
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
	return u.String()
}

// scrubURLError drops the URL from a *url.Error: the URL holds no secret, but
// the query can hold user data and the operation is already named.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// readBody reads at most limit+1 bytes of the body, into one buffer of
// the announced Content-Length when there is one (io.ReadAll would grow a
// buffer from 512 bytes, leaving garbage on every call).
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	r := io.LimitReader(resp.Body, limit+1)
	if n := resp.ContentLength; n > 0 && n <= limit {
		b := make([]byte, n+1) // +1: room to notice a body longer than announced
		m, err := io.ReadFull(r, b)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil // ReadFull's way of saying the body ended
		}
		if err == nil && m < int(n) {
			err = fmt.Errorf("body ended after %d of the %d bytes its Content-Length announced: %w", m, n, io.ErrUnexpectedEOF)
		}
		if err != nil || m <= int(n) {
			return b[:m], err
		}
		rest, err := io.ReadAll(r)
		return append(b[:m], rest...), err
	}
	return io.ReadAll(r)
}

func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// limitedTransport applies the client's rate limit, concurrency cap and
// per-attempt timeout around the real transport. A request holds its
// concurrency slot until its body is closed.
type limitedTransport struct {
	base           http.RoundTripper
	limiter        *rate.Limiter
	slots          chan struct{}
	attemptTimeout time.Duration
	observer       Observer
}

func newLimitedTransport(cfg Config) *limitedTransport {
	lim := rate.NewLimiter(rate.Inf, 0)
	if cfg.RateLimit > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.Burst)
	}
	return &limitedTransport{
		base:           cfg.Transport,
		limiter:        lim,
		slots:          make(chan struct{}, cfg.MaxConcurrent),
		attemptTimeout: cfg.AttemptTimeout,
		observer:       cfg.Observer,
	}
}

// errAttemptTimeout is the cause of an attempt cancelled by AttemptTimeout.
var errAttemptTimeout = errors.New("attempt timed out")

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	waitStart := time.Now()
	if err := t.limiter.Wait(ctx); err != nil {
		return nil, fmt.Errorf("waiting for the rate limiter: %w", err)
	}
	if t.observer != nil {
		t.observer.LimiterWaited(time.Since(waitStart))
	}
	select {
	case t.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a concurrency slot: %w", ctx.Err())
	}
	actx, cancel := context.WithTimeoutCause(ctx, t.attemptTimeout, errAttemptTimeout)
	resp, err := t.base.RoundTrip(req.WithContext(actx))
	if err != nil {
		if context.Cause(actx) == errAttemptTimeout {
			err = fmt.Errorf("%w after %s", errAttemptTimeout, t.attemptTimeout)
		}
		cancel()
		<-t.slots
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, cancel: cancel, slots: t.slots}
	return resp, nil
}

// releasingBody ends the attempt's context and gives its concurrency slot
// back once, when the body is first closed.
type releasingBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	slots  chan struct{}
	once   sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

func (b *releasingBody) release() {
	b.cancel()
	<-b.slots
}
