package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the ingest's Prometheus collectors; labels are bounded (modes,
// status codes, input types, outcomes, reasons).
type Metrics struct {
	// Requests counts answered requests by mode (binary, structured, batch,
	// none when refused before the mode was known) and status code.
	Requests *prometheus.CounterVec
	// Events counts events by type (an input type or "unknown") and outcome:
	// accepted (stored), duplicate (already stored: a retry), invalid,
	// failed (not stored: 503).
	Events *prometheus.CounterVec
	// AuthFailures counts refused requests by reason (missing_credentials,
	// bad_token, bad_signature, bad_timestamp, replayed).
	AuthFailures *prometheus.CounterVec
	// Duration is the time to answer, by mode.
	Duration *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (when
// non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_ingest_requests_total",
			Help: "HTTP ingest requests answered, by mode (binary, structured, batch, none) and status code.",
		}, []string{"mode", "code"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_ingest_events_total",
			Help: "Events received over HTTP, by type and outcome (accepted, duplicate, invalid, failed).",
		}, []string{"type", "outcome"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_ingest_auth_failures_total",
			Help: "HTTP ingest requests refused with 401, by reason.",
		}, []string{"reason"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pandabridge_ingest_request_duration_seconds",
			Help:    "Time to answer an HTTP ingest request (JetStream acks included), by mode.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, []string{"mode"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Events, m.AuthFailures, m.Duration)
	}
	return m
}
