// Package telemetry holds pandabridge's Prometheus collectors for PandaPon
// calls, its build information, and the OpenTelemetry tracing setup driven
// by the standard OTEL_* environment variables.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pandabridge/pandabridge/pandapon"
)

// PandaPonMetrics implements pandapon.Observer with Prometheus collectors.
// Labels are bounded: endpoint (a handful of paths), outcome (the
// pandapon.Outcome constants), and PandaPon's business code.
type PandaPonMetrics struct {
	Requests     *prometheus.CounterVec
	Duration     *prometheus.HistogramVec
	Retries      *prometheus.CounterVec
	LimiterWait  prometheus.Histogram
	CircuitState prometheus.Gauge
	CircuitTrips *prometheus.CounterVec

	circuit *circuitCollector
}

// circuitCollector collects the circuit-state gauge after running refresh
// (see RefreshCircuitWith).
type circuitCollector struct {
	prometheus.Gauge
	refresh atomic.Pointer[func()]
}

func (c *circuitCollector) Collect(ch chan<- prometheus.Metric) {
	if f := c.refresh.Load(); f != nil {
		(*f)()
	}
	c.Gauge.Collect(ch)
}

// RefreshCircuitWith makes every scrape call refresh before reading the
// circuit state, typically func() { client.CircuitState() }: the breaker
// moves from open to half-open only when asked, so a client that makes no
// call would keep the gauge at open, and its alert firing, after PandaPon
// has recovered.
func (m *PandaPonMetrics) RefreshCircuitWith(refresh func()) {
	m.circuit.refresh.Store(&refresh)
}

// NewPandaPonMetrics creates and registers the collectors.
func NewPandaPonMetrics(reg prometheus.Registerer) *PandaPonMetrics {
	m := &PandaPonMetrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_pandapon_requests_total",
			Help: "PandaPon calls (retries included in one call) by endpoint, outcome (success, business_error, http_429, http_5xx, timeout, network, malformed, circuit_open, canceled) and business code.",
		}, []string{"endpoint", "outcome", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pandabridge_pandapon_request_duration_seconds",
			Help:    "Duration of PandaPon calls, retries included, by endpoint and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"endpoint", "outcome"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_pandapon_retries_total",
			Help: "HTTP retries sent to PandaPon by endpoint and the reason the previous attempt failed.",
		}, []string{"endpoint", "reason"}),
		LimiterWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pandabridge_pandapon_rate_limiter_wait_seconds",
			Help:    "Time an HTTP attempt waited for the client's rate limiter.",
			Buckets: []float64{0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 5},
		}),
		CircuitState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pandabridge_pandapon_circuit_state",
			Help: "State of the circuit breaker around PandaPon: 0 closed, 1 half-open, 2 open.",
		}),
		CircuitTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_pandapon_circuit_transitions_total",
			Help: "Circuit breaker state changes, by the state entered.",
		}, []string{"to"}),
	}
	m.circuit = &circuitCollector{Gauge: m.CircuitState}
	for _, to := range []string{"closed", "half-open", "open"} {
		// At 0 from the start: increase() over a series that appears at 1
		// misses that first change, and the circuit alert counts openings.
		m.CircuitTrips.WithLabelValues(to)
	}
	reg.MustRegister(m.Requests, m.Duration, m.Retries, m.LimiterWait, m.circuit, m.CircuitTrips)
	return m
}

// endpointLabels caches "METHOD /path" per endpoint: building it on every
// call would allocate.
var (
	endpointLabelsMu sync.RWMutex
	endpointLabels   = map[pandapon.Endpoint]string{}
)

func endpointLabel(ep pandapon.Endpoint) string {
	endpointLabelsMu.RLock()
	label, ok := endpointLabels[ep]
	endpointLabelsMu.RUnlock()
	if !ok {
		label = ep.Method + " " + ep.Path
		endpointLabelsMu.Lock()
		endpointLabels[ep] = label
		endpointLabelsMu.Unlock()
	}
	return label
}

// CallDone implements pandapon.Observer.
func (m *PandaPonMetrics) CallDone(ep pandapon.Endpoint, outcome string, code int64, d time.Duration, _ int) {
	c := ""
	if outcome == pandapon.OutcomeBusinessError {
		c = strconv.FormatInt(code, 10)
	}
	m.Requests.WithLabelValues(endpointLabel(ep), outcome, c).Inc()
	m.Duration.WithLabelValues(endpointLabel(ep), outcome).Observe(d.Seconds())
}

// Retried implements pandapon.Observer.
func (m *PandaPonMetrics) Retried(ep pandapon.Endpoint, reason string) {
	m.Retries.WithLabelValues(endpointLabel(ep), reason).Inc()
}

// LimiterWaited implements pandapon.Observer.
func (m *PandaPonMetrics) LimiterWaited(d time.Duration) { m.LimiterWait.Observe(d.Seconds()) }

// CircuitChanged implements pandapon.Observer.
func (m *PandaPonMetrics) CircuitChanged(_, to string) {
	state := map[string]float64{"closed": 0, "half-open": 1, "open": 2}[to]
	m.CircuitState.Set(state)
	m.CircuitTrips.WithLabelValues(to).Inc()
}

// NotAnsweredYet implements pandapon.Observer; the failed calls are
// counted by CallDone already.
func (m *PandaPonMetrics) NotAnsweredYet(int, time.Duration) {}

// Version is the module version the binary was built from ("(devel)" for
// a local build).
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// RegisterBuildInfo registers pandabridge_build_info{version,goversion} 1.
func RegisterBuildInfo(reg prometheus.Registerer, binary string) {
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pandabridge_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"binary": binary, "version": Version(), "goversion": goVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// TracingEnabled reports whether the standard OpenTelemetry variables ask
// for trace export: OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and OTEL_TRACES_EXPORTER and
// OTEL_SDK_DISABLED do not turn it off.
func TracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Propagator is the W3C Trace Context propagator used for the CloudEvents
// distributed-tracing extension (traceparent, tracestate).
var Propagator = propagation.TraceContext{}

// SetupTracing returns the tracer provider to use: a no-op one (zero cost)
// unless TracingEnabled, else an SDK provider exporting spans with OTLP over
// HTTP, configured by the standard OTEL_EXPORTER_OTLP_* variables (endpoint,
// headers, timeout, compression, TLS) and OTEL_SERVICE_NAME /
// OTEL_RESOURCE_ATTRIBUTES. The shutdown function flushes pending spans.
func SetupTracing(ctx context.Context, serviceName string) (trace.TracerProvider, func(context.Context) error, error) {
	if !TracingEnabled(os.Getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_*: creating the OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(serviceName), semconv.ServiceVersion(Version())))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	if env, eerr := resource.New(ctx, resource.WithFromEnv()); eerr == nil {
		if merged, merr := resource.Merge(res, env); merr == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
