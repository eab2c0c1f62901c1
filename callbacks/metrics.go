package callbacks

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the callback endpoint's collectors; labels are bounded.
type Metrics struct {
	// Received counts callbacks by message_type ("3", "8", "9", "other",
	// "unparseable", "none") and outcome (lookup_requested, stored,
	// no_refund_id, duplicate, verification, failed).
	Received *prometheus.CounterVec
	// Lookups counts refund.lookup.requested derived from callbacks: "new"
	// or "duplicate" (already stored: a repeated callback).
	Lookups *prometheus.CounterVec
	// Rejected counts requests refused before reading: wrong_token (404),
	// too_large (413).
	Rejected *prometheus.CounterVec
	// Duration is the time to answer a POST, storage included.
	Duration prometheus.Histogram
}

// NewMetrics creates the collectors and registers them with reg (when
// non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_callbacks_received_total",
			Help: "PandaPon callbacks answered, by message type (3, 8, 9, other, unparseable, none) and outcome (lookup_requested, stored, no_refund_id, duplicate, verification, failed).",
		}, []string{"message_type", "outcome"}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_callbacks_lookups_total",
			Help: "refund.lookup.requested events derived from PandaPon callbacks, by outcome (new, duplicate).",
		}, []string{"outcome"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_callbacks_rejected_total",
			Help: "Requests to the callback endpoint refused, by reason (wrong_token, too_large).",
		}, []string{"reason"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pandabridge_callbacks_duration_seconds",
			Help:    "Time to answer a PandaPon callback, JetStream acks included (PandaPon wants it under 1 s).",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Lookups, m.Rejected, m.Duration)
	}
	return m
}
