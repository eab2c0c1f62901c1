package testkit

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauge returns the value of the unlabelled gauge name as g exports it now
// (gathering it, so a GaugeFunc or a collector's refresh runs); it fails
// the test when g has no such metric.
func Gauge(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
