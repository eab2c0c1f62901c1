package sandbox

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pandabridge/pandabridge/pandapon"
)

// Credentials the sandbox accepts by default. They are public test values,
// not secrets.
const (
	DefaultAccessKey    = "sandbox-access-key"
	DefaultAccessSecret = "sandbox-access-secret"
)

// Envelope codes the sandbox answers with. PandaPon's own error-code table
// is not known, so apart from CodeSuccess these are the sandbox's choice,
// modelled on HTTP. Every one of them arrives with HTTP status 200 (PandaPon
// reports business errors inside the envelope), except CodeNotFound for an
// unknown path (HTTP 404) and CodeMethodNotAllowed (HTTP 405).
const (
	CodeSuccess          = pandapon.CodeSuccess // 200: msg "成功" (query) or "SUCCESS" (submission, cancellation)
	CodeBadRequest       = 400                  // missing or malformed parameter; msg names it
	CodeUnauthorized     = 401                  // authentication refused; msg says which check failed
	CodeNotFound         = 404                  // unknown refund (HTTP 200) or unknown path (HTTP 404)
	CodeMethodNotAllowed = 405                  // wrong HTTP method for the path (HTTP 405)
	CodeStateConflict    = 409                  // the refund's state forbids the operation, or a duplicate submission
)

// Endpoint path patterns: the keys of Stats.Requests.
const (
	PathQuery           = "/open/order/refund/query"
	PathSubmitLogistics = "/open/order/refund/render/submit/logistics"
	PathCancel          = "/open/order/refund/cancel/{refundId}"
	PathUnknown         = "(unknown)" // any other path
)

const cancelPrefix = "/open/order/refund/cancel/"

// DevelopID is the developId of responses that carry one (see the package
// documentation for which do).
const DevelopID = "3455555555555552"

// maxBody is the largest request body read; larger bodies are refused.
const maxBody = 1 << 20

// Options configure a Sandbox. The zero value is usable: default
// credentials, millisecond timestamps, the seed refunds only, no faults.
type Options struct {
	// AccessKey and AccessSecret are the only credentials accepted;
	// defaults DefaultAccessKey and DefaultAccessSecret.
	AccessKey, AccessSecret string
	// TimestampUnit is the unit expected in the timestamp header; default
	// milliseconds. New panics on a unit other than "", "ms" or "s".
	TimestampUnit pandapon.TimestampUnit
	// GeneratedRefunds is the number of generated refunds in addition to
	// the seeds, with ids GeneratedRefundID(0) … GeneratedRefundID(n-1).
	// They are built on first use, so a large n costs nothing up front.
	GeneratedRefunds int
	// Faults are the sandbox-wide faults (see SetFaults).
	Faults Faults
	// RandSeed seeds fault decisions; 0 means a fixed default, so runs are
	// reproducible unless a seed is chosen.
	RandSeed int64
	// Now is the clock timestamps are checked against; default time.Now.
	Now func() time.Time
	// Logger, when set, gets one Info line per request: method, path,
	// refundId, HTTP status, envelope code, fault and message. Secrets and
	// signatures are never logged.
	Logger *slog.Logger
}

// Sandbox is an in-memory simulation of PandaPon's after-sales API. It is
// an http.Handler; all methods are safe for concurrent use.
type Sandbox struct {
	accessKey    string
	accessSecret string
	unit         pandapon.TimestampUnit
	now          func() time.Time
	logger       *slog.Logger
	generated    int

	faultMu      sync.RWMutex
	faults       Faults
	refundFaults map[string]Faults

	randMu sync.Mutex
	rng    *rand.Rand

	nonces nonceStore

	mu      sync.RWMutex // guards refunds and every refund's content
	refunds map[string]*refund

	statsMu sync.Mutex
	stats   Stats

	requestSeq atomic.Uint64
}

// New returns a Sandbox holding the seed refunds (SeedRefundIDs) and
// opts.GeneratedRefunds generated ones.
func New(opts Options) *Sandbox {
	unit, err := pandapon.ParseTimestampUnit(string(opts.TimestampUnit))
	if err != nil {
		panic("sandbox: Options.TimestampUnit: " + err.Error())
	}
	s := &Sandbox{
		accessKey:    orDefault(opts.AccessKey, DefaultAccessKey),
		accessSecret: orDefault(opts.AccessSecret, DefaultAccessSecret),
		unit:         unit,
		now:          opts.Now,
		logger:       opts.Logger,
		generated:    max(0, opts.GeneratedRefunds),
		faults:       opts.Faults,
		refundFaults: make(map[string]Faults),
		refunds:      make(map[string]*refund),
		stats: Stats{
			Requests:       make(map[string]int),
			FaultsInjected: make(map[string]int),
		},
	}
	if s.now == nil {
		s.now = time.Now
	}
	seed := uint64(opts.RandSeed)
	if seed == 0 {
		seed = 0x5eed_9a4d_a900
	}
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for id, text := range seedData {
		s.refunds[id] = newRefund(text)
	}
	return s
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// SetFaults replaces the sandbox-wide faults; requests already being
// answered keep the faults they started with.
func (s *Sandbox) SetFaults(f Faults) {
	s.faultMu.Lock()
	s.faults = f
	s.faultMu.Unlock()
}

// SetRefundFaults sets the faults of requests about refundID (its query,
// cancellation, or a submission whose body names it). They replace the
// sandbox-wide faults for those requests entirely, latency included. The
// zero Faults clears them, so the sandbox-wide faults apply again.
func (s *Sandbox) SetRefundFaults(refundID string, f Faults) {
	s.faultMu.Lock()
	if f.IsZero() {
		delete(s.refundFaults, refundID)
	} else {
		s.refundFaults[refundID] = f
	}
	s.faultMu.Unlock()
}

func (s *Sandbox) faultsFor(refundID string) Faults {
	s.faultMu.RLock()
	defer s.faultMu.RUnlock()
	if f, ok := s.refundFaults[refundID]; ok && refundID != "" {
		return f
	}
	return s.faults
}

// Stats counts what the sandbox has seen since New.
type Stats struct {
	// Requests counts every request that arrived, faulted or not, by
	// endpoint path pattern (PathQuery, PathSubmitLogistics, PathCancel,
	// PathUnknown).
	Requests map[string]int
	// Refused counts authentication refusals (CodeUnauthorized).
	Refused int
	// BusinessErrors counts authenticated requests answered with a code
	// other than CodeSuccess (400, 404, 405, 409).
	BusinessErrors int
	// FaultsInjected counts injected faults by kind (FaultServerError,
	// FaultRateLimit, FaultTimeout, FaultMalformed).
	FaultsInjected map[string]int
	// AcceptedSubmissions counts logistics submissions that changed a refund.
	AcceptedSubmissions int
	// DuplicateSubmissions counts submissions refused because the same
	// logisticsNo was already recorded on the refund.
	DuplicateSubmissions int
	// AcceptedCancellations counts refunds closed by the cancel endpoint.
	AcceptedCancellations int
}

// Stats returns a snapshot; the maps are copies.
func (s *Sandbox) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.stats
	st.Requests = maps.Clone(s.stats.Requests)
	st.FaultsInjected = maps.Clone(s.stats.FaultsInjected)
	return st
}

func (s *Sandbox) count(f func(*Stats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}

func (s *Sandbox) countFault(kind string) {
	s.count(func(st *Stats) { st.FaultsInjected[kind]++ })
}

// exchange is one request and what was answered.
type exchange struct {
	w        http.ResponseWriter
	r        *http.Request
	endpoint string // path pattern
	method   string // the method the endpoint wants
	refundID string // from the query, path or body; "" when none
	body     []byte
	bodyErr  string

	status  int
	code    int
	msg     string
	fault   string
	outcome string
}

// ServeHTTP answers one request: route it, apply faults (per refund or
// sandbox-wide), authenticate, then run the endpoint.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := &exchange{w: w, r: r}
	s.route(x)
	s.count(func(st *Stats) { st.Requests[x.endpoint]++ })
	if s.logger != nil {
		defer s.log(x, start)
	}
	if s.inject(x, s.faultsFor(x.refundID)) {
		return
	}
	if !s.authenticate(x) {
		return
	}
	switch {
	case x.endpoint == PathUnknown:
		s.reply(x, http.StatusNotFound, CodeNotFound, "no endpoint "+r.Method+" "+r.URL.Path, nil)
	case r.Method != x.method:
		w.Header().Set("Allow", x.method)
		s.reply(x, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"method "+r.Method+" not allowed on "+x.endpoint+", use "+x.method, nil)
	case x.endpoint == PathQuery:
		s.query(x)
	case x.endpoint == PathSubmitLogistics:
		s.submitLogistics(x)
	case x.endpoint == PathCancel:
		s.cancel(x)
	}
}

// route finds the endpoint and the refund the request is about, reading the
// body of a submission (faults may depend on the refundId inside it).
func (s *Sandbox) route(x *exchange) {
	p := x.r.URL.Path
	switch {
	case p == PathQuery:
		x.endpoint, x.method = PathQuery, http.MethodGet
		x.refundID = x.r.URL.Query().Get("refundId")
	case p == PathSubmitLogistics:
		x.endpoint, x.method = PathSubmitLogistics, http.MethodPost
		if x.r.Method == http.MethodPost {
			b, err := io.ReadAll(io.LimitReader(x.r.Body, maxBody+1))
			switch {
			case err != nil:
				x.bodyErr = "reading request body: " + err.Error()
			case len(b) > maxBody:
				x.bodyErr = "request body is larger than 1 MiB"
			default:
				x.body = b
				var head struct{ RefundID json.RawMessage }
				if json.Unmarshal(b, &head) == nil {
					x.refundID, _ = idText(head.RefundID)
				}
			}
		}
	case strings.HasPrefix(p, cancelPrefix) && len(p) > len(cancelPrefix) && !strings.Contains(p[len(cancelPrefix):], "/"):
		x.endpoint, x.method = PathCancel, http.MethodGet
		x.refundID = p[len(cancelPrefix):]
	default:
		x.endpoint = PathUnknown
	}
}

// idText reads an id sent as a JSON string or an integer number.
func idText(raw json.RawMessage) (string, bool) {
	raw = json.RawMessage(strings.TrimSpace(string(raw)))
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return strings.TrimSpace(s), true
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return string(raw), true
}

// reply writes an envelope. Which ids are present follows the seeds: a
// successful query has requestId and developId null (query page); every
// other answer has a string requestId; successful submissions and
// cancellations also a string developId (submission page), errors a null
// developId.
func (s *Sandbox) reply(x *exchange, status, code int, msg string, data []byte) {
	x.status, x.code, x.msg = status, code, msg
	switch {
	case code == CodeUnauthorized:
		s.count(func(st *Stats) { st.Refused++ })
	case code != CodeSuccess:
		s.count(func(st *Stats) { st.BusinessErrors++ })
	}
	nullIDs := code == CodeSuccess && x.endpoint == PathQuery
	b := make([]byte, 0, 96+len(msg)+len(data))
	b = append(b, `{"requestId":`...)
	if nullIDs {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = strconv.AppendUint(b, 3456435643+s.requestSeq.Add(1), 10)
		b = append(b, '"')
	}
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"developId":`...)
	if code == CodeSuccess && !nullIDs {
		b = appendString(b, DevelopID)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"msg":`...)
	b = appendString(b, msg)
	b = append(b, `,"data":`...)
	if data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, data...)
	}
	b = append(b, '}')
	x.w.Header().Set("Content-Type", "application/json")
	x.w.WriteHeader(status)
	_, _ = x.w.Write(b)
}

func (s *Sandbox) log(x *exchange, start time.Time) {
	attrs := []any{
		"method", x.r.Method,
		"path", x.r.URL.Path,
		"refundId", x.refundID,
		"status", x.status,
	}
	if x.code != 0 {
		attrs = append(attrs, "code", x.code)
	}
	if x.fault != "" {
		attrs = append(attrs, "fault", x.fault)
	}
	if x.msg != "" {
		attrs = append(attrs, "msg", x.msg)
	}
	if x.outcome != "" {
		attrs = append(attrs, "outcome", x.outcome)
	}
	attrs = append(attrs, "duration", time.Since(start).Round(time.Microsecond))
	s.logger.Info("pandapon sandbox request", attrs...)
}
