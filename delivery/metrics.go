package delivery

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the webhook delivery collectors. The target label is a
// configured target name (bounded by the targets file).
type Metrics struct {
	// Deliveries counts settled events by target and outcome: delivered,
	// filtered (excluded by the target's filters), dead_lettered,
	// handed_back (at shutdown), retry (the dead letter could not be
	// stored).
	Deliveries *prometheus.CounterVec
	// Attempts counts POSTs by target and result: 2xx, 3xx, 4xx, 410, 429,
	// 5xx, timeout, network.
	Attempts *prometheus.CounterVec
	// AttemptSeconds is the duration of one POST.
	AttemptSeconds *prometheus.HistogramVec
	// DeadLettered counts dead letters by target and reason: horizon,
	// gone, invalid.
	DeadLettered *prometheus.CounterVec
	// InFlight is the events held per target (being posted, waiting for a
	// retry, or queued behind an event of the same refund).
	InFlight *prometheus.GaugeVec
	// Latency is the time from storing an event in the output stream to
	// its delivery.
	Latency *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (when
// non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_webhook_deliveries_total",
			Help: "refund.updated events settled per webhook target, by outcome (delivered, filtered, dead_lettered, handed_back, retry).",
		}, []string{"target", "outcome"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_webhook_attempts_total",
			Help: "Webhook POSTs by target and result (2xx, 3xx, 4xx, 410, 429, 5xx, timeout, network).",
		}, []string{"target", "result"}),
		AttemptSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pandabridge_webhook_attempt_duration_seconds",
			Help:    "Duration of one webhook POST, by target.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}, []string{"target"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_webhook_dead_lettered_total",
			Help: "Events given up for a webhook target, by reason (horizon, gone, invalid).",
		}, []string{"target", "reason"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pandabridge_webhook_in_flight",
			Help: "Events held per webhook target: being posted, waiting for a retry, or queued behind the same refund.",
		}, []string{"target"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pandabridge_webhook_delivery_latency_seconds",
			Help:    "Time from storing an event in the output stream to its delivery, by target.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}, []string{"target"}),
	}
	if reg != nil {
		reg.MustRegister(m.Deliveries, m.Attempts, m.AttemptSeconds, m.DeadLettered, m.InFlight, m.Latency)
	}
	return m
}
