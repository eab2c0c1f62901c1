package sandbox

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Faults make the sandbox misbehave the way an unreliable network, an
// overloaded PandaPon or the proxy in front of it would. The zero value
// injects nothing.
//
// Each request draws one number u in [0,1) from the sandbox's seeded
// source; the rates are consecutive slices of that range, in the order
// server error, rate limit, timeout, malformed. So they are mutually
// exclusive, their sum is the fraction of faulted requests, and a sum above
// 1 is truncated (Validate reports it). Rates outside [0,1] are clamped.
//
// Faults act before authentication, as a proxy would: a faulted request is
// counted in Stats.Requests and Stats.FaultsInjected, is never
// authenticated, never consumes its nonce and never changes any refund.
type Faults struct {
	// Latency is added before every request is answered (faulted or not):
	// never less, and on Linux rarely more than 0.2 ms more (a timerfd; a
	// Go timer adds up to 1.1 ms, see delay). It ends early, without an
	// answer, when the client gives up.
	Latency time.Duration
	// ServerErrorRate is the fraction of requests answered HTTP 503 with a
	// proxy's text/html body (not an envelope).
	ServerErrorRate float64
	// RateLimitRate is the fraction answered HTTP 429 with a Retry-After
	// header and a text/html body.
	RateLimitRate float64
	// RetryAfter is the Retry-After value of a 429, in whole seconds rounded
	// up; zero means DefaultRetryAfter.
	RetryAfter time.Duration
	// TimeoutRate is the fraction of requests that hang for Hang, or until
	// the client gives up (request context done) or the Server is closed,
	// and then answer HTTP 504 with a text/html body.
	TimeoutRate float64
	// Hang is how long a timed-out request hangs; zero means DefaultHang.
	Hang time.Duration
	// MalformedRate is the fraction answered HTTP 200, Content-Type
	// application/json, with a truncated envelope that is not valid JSON.
	MalformedRate float64
}

// Defaults of the Faults durations.
const (
	DefaultRetryAfter = time.Second
	DefaultHang       = 30 * time.Second
)

// Fault kinds, the keys of Stats.FaultsInjected. Latency is not a fault
// kind: it delays every request and is not counted.
const (
	FaultServerError = "server_error" // HTTP 503
	FaultRateLimit   = "rate_limit"   // HTTP 429 + Retry-After
	FaultTimeout     = "timeout"      // hang, then HTTP 504
	FaultMalformed   = "malformed"    // HTTP 200, body not valid JSON
)

// IsZero reports whether f injects nothing.
func (f Faults) IsZero() bool { return f == Faults{} }

// Validate reports the first field that is out of range: rates must be in
// [0,1] and sum to at most 1, durations must not be negative.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{
		{"ServerErrorRate", f.ServerErrorRate},
		{"RateLimitRate", f.RateLimitRate},
		{"TimeoutRate", f.TimeoutRate},
		{"MalformedRate", f.MalformedRate},
	}
	sum := 0.0
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) { // also catches NaN
			return fmt.Errorf("faults: %s %v must be between 0 and 1", r.name, r.v)
		}
		sum += r.v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("faults: rates sum to %v, must be at most 1", sum)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Latency", f.Latency}, {"RetryAfter", f.RetryAfter}, {"Hang", f.Hang}} {
		if d.v < 0 {
			return fmt.Errorf("faults: %s %v must not be negative", d.name, d.v)
		}
	}
	return nil
}

func clampRate(v float64) float64 {
	if !(v > 0) { // also NaN
		return 0
	}
	return min(v, 1)
}

// retryAfterSeconds is the Retry-After header value: whole seconds, rounded
// up, at least 1.
func (f Faults) retryAfterSeconds() int64 {
	d := f.RetryAfter
	if d <= 0 {
		d = DefaultRetryAfter
	}
	return max(1, int64((d+time.Second-1)/time.Second))
}

func (f Faults) hang() time.Duration {
	if f.Hang <= 0 {
		return DefaultHang
	}
	return f.Hang
}

// decide returns the fault kind for one request, or "".
func (s *Sandbox) decide(f Faults) string {
	kinds := [...]struct {
		kind string
		rate float64
	}{
		{FaultServerError, clampRate(f.ServerErrorRate)},
		{FaultRateLimit, clampRate(f.RateLimitRate)},
		{FaultTimeout, clampRate(f.TimeoutRate)},
		{FaultMalformed, clampRate(f.MalformedRate)},
	}
	total := 0.0
	for _, k := range kinds {
		total += k.rate
	}
	if total == 0 {
		return "" // no draw: a fault-free sandbox never touches the source
	}
	s.randMu.Lock()
	u := s.rng.Float64()
	s.randMu.Unlock()
	acc := 0.0
	for _, k := range kinds {
		acc += k.rate
		if k.rate > 0 && u < acc {
			return k.kind
		}
	}
	return ""
}

// Proxy-style bodies of the HTTP-level faults (nginx in front of PandaPon).
const (
	body503 = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	body429 = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	body504 = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	// bodyMalformed is an envelope cut off mid-way, as a dropped connection
	// behind a buffering proxy delivers it.
	bodyMalformed = `{"requestId":null,"code":200,"developId":null,"msg":"成功","data":{"distributorId":"2100005349129","currency":"CNY","refundOrderAggregate":{"logistics":{"receiverAddress":nu`
)

// inject applies the latency of f and possibly one fault. It reports
// whether the request has been dealt with (answered or abandoned).
func (s *Sandbox) inject(x *exchange, f Faults) bool {
	ctx := x.r.Context()
	if f.Latency > 0 && !delay(ctx, f.Latency) {
		x.outcome = "client gave up during latency"
		return true
	}
	kind := s.decide(f)
	if kind == "" {
		return false
	}
	x.fault = kind
	s.countFault(kind)
	h := x.w.Header()
	switch kind {
	case FaultServerError:
		writeRaw(x, http.StatusServiceUnavailable, "text/html", body503)
	case FaultRateLimit:
		h.Set("Retry-After", strconv.FormatInt(f.retryAfterSeconds(), 10))
		writeRaw(x, http.StatusTooManyRequests, "text/html", body429)
	case FaultTimeout:
		if !timerWait(ctx, f.hang()) {
			x.outcome = "client gave up (or server closed) while hanging"
		}
		writeRaw(x, http.StatusGatewayTimeout, "text/html", body504) // lost if the client is gone
	case FaultMalformed:
		writeRaw(x, http.StatusOK, "application/json", bodyMalformed)
	}
	return true
}

func writeRaw(x *exchange, status int, contentType, body string) {
	x.status = status
	x.w.Header().Set("Content-Type", contentType)
	x.w.WriteHeader(status)
	_, _ = x.w.Write([]byte(body))
}
