package pipeline_test

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/pipeline"
)

// TestDeadLetterSeriesExistFromTheStart: the alert on dead letters uses
// increase(), which is 0 for a series that appears at 1; so every dead
// letter series a consumer can produce is exported at 0 before the first.
func TestDeadLetterSeriesExistFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	pipeline.NewMetrics(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string][]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			s := ""
			for _, l := range m.GetLabel() {
				s += l.GetName() + "=" + l.GetValue() + " "
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s{%s} = %v at start, want 0", f.GetName(), s, v)
			}
			series[f.GetName()] = append(series[f.GetName()], s)
		}
	}
	want := map[string][]string{
		"pandabridge_events_dead_lettered_total": {
			"kind=invalid type=refund.lookup.requested ", "kind=invalid type=return.shipped ", "kind=invalid type=unknown ",
			"kind=max_deliveries type=refund.lookup.requested ", "kind=max_deliveries type=return.shipped ",
		},
		"pandabridge_dead_letter_failures_total": {"type=refund.lookup.requested ", "type=return.shipped ", "type=unknown "},
	}
	for name, w := range want {
		got := series[name]
		slices.Sort(got)
		if !slices.Equal(got, w) {
			t.Errorf("%s series at start: %q, want %q", name, got, w)
		}
	}
}

// TestReadyGaugeFollowsReadiness: pandabridge_ready is what /readyz says,
// read when scraped: 1 while consuming, 0 once stopped.
func TestReadyGaugeFollowsReadiness(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := start(t, func(c *pipeline.Config, _ *sandbox.Options, _ *pandapon.Config) { c.Metrics = pipeline.NewMetrics(reg) })
	ready := func() float64 { return testkit.Gauge(t, reg, "pandabridge_ready") }
	testkit.Eventually(t, 10*time.Second, func() bool { return ready() == 1 }, "pandabridge_ready 1")
	e.stop()
	if v := ready(); v != 0 {
		t.Errorf("pandabridge_ready = %v after the pipeline stopped, want 0", v)
	}
}
