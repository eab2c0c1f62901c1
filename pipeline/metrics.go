package pipeline

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/events"
)

// Metrics are the pipeline's Prometheus collectors. Labels are low
// cardinality: event types and outcomes, never refund ids.
type Metrics struct {
	// Consumed counts handled inputs by type and outcome: "published"
	// (outputs stored, input acked), "retry" (redelivery requested),
	// "dead_lettered", "handed_back" (returned at shutdown).
	Consumed *prometheus.CounterVec
	// Published counts outputs stored by JetStream, by type.
	Published *prometheus.CounterVec
	// DeadLettered counts dead letters by input type and kind ("invalid",
	// "max_deliveries").
	DeadLettered *prometheus.CounterVec
	// DeadLetterFailed counts attempts to dead-letter an input that could
	// not be stored, by input type; the input is tried again later.
	DeadLetterFailed *prometheus.CounterVec
	// HandleSeconds is the time from receiving an input to settling it.
	HandleSeconds *prometheus.HistogramVec
	// InFlight is the number of inputs received and not yet settled.
	InFlight prometheus.Gauge
	// ConsumerPending and ConsumerAckPending mirror the durable consumer's
	// num_pending and num_ack_pending, polled; they keep their last value
	// while the consumer cannot be asked (see Ready).
	ConsumerPending, ConsumerAckPending prometheus.Gauge
	// Ready is 1 while the pipeline using these metrics is ready (the
	// /readyz condition: connected to NATS, streams and durable consumer in
	// place), else 0; read at scrape time.
	Ready prometheus.GaugeFunc

	ready atomic.Pointer[func() bool] // set by New
}

// NewMetrics creates the collectors and registers them with reg (when
// non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_events_consumed_total",
			Help: "Input events settled, by type and outcome (published, retry, dead_lettered, handed_back).",
		}, []string{"type", "outcome"}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_events_published_total",
			Help: "Output events stored by JetStream, by type.",
		}, []string{"type"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_events_dead_lettered_total",
			Help: "Input messages moved to the dead-letter subject, by type and kind (invalid, max_deliveries).",
		}, []string{"type", "kind"}),
		DeadLetterFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pandabridge_dead_letter_failures_total",
			Help: "Attempts to dead-letter an input that could not be stored (dead-letter stream unavailable or full), by type; the input is tried again after the backoff.",
		}, []string{"type"}),
		HandleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pandabridge_handle_duration_seconds",
			Help:    "Time from receiving an input event to settling it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"type", "outcome"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pandabridge_events_in_flight",
			Help: "Input events received and not yet settled.",
		}),
		ConsumerPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pandabridge_consumer_pending_messages",
			Help: "Messages in the input stream not yet delivered to the durable consumer (num_pending).",
		}),
		ConsumerAckPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pandabridge_consumer_ack_pending_messages",
			Help: "Messages delivered and not yet acknowledged, across all replicas (num_ack_pending).",
		}),
	}
	m.Ready = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pandabridge_ready",
		Help: "1 while the consumer is ready (/readyz 200: connected to NATS, streams and durable consumer in place), else 0.",
	}, func() float64 {
		if f := m.ready.Load(); f != nil && (*f)() {
			return 1
		}
		return 0
	})
	// The dead-letter series exist at 0 from the start: increase() over a
	// series that appears at 1 is 0, so the first dead letter of a kind
	// would raise no alert.
	for _, typ := range []string{events.TypeRefundLookupRequested, events.TypeReturnShipped, "unknown"} {
		m.DeadLettered.WithLabelValues(typ, "invalid")
		m.DeadLetterFailed.WithLabelValues(typ)
		if typ != "unknown" { // an unknown type is invalid at once
			m.DeadLettered.WithLabelValues(typ, "max_deliveries")
		}
	}
	if reg != nil {
		reg.MustRegister(m.Consumed, m.Published, m.DeadLettered, m.DeadLetterFailed, m.HandleSeconds, m.InFlight, m.ConsumerPending, m.ConsumerAckPending, m.Ready)
	}
	return m
}
