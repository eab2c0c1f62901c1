package telemetry_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/telemetry"
)

// TestCircuitGaugeLeavesOpenWithoutCalls: once the breaker's open timeout
// has passed, a scrape shows it half-open even if no input made a call
// since; the critical alert on an open circuit then stops.
func TestCircuitGaugeLeavesOpenWithoutCalls(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer down.Close()
	reg := prometheus.NewRegistry()
	pm := telemetry.NewPandaPonMetrics(reg)
	client, err := pandapon.New(pandapon.Config{
		BaseURL:     down.URL,
		Credentials: pandapon.Credentials{AccessKey: "k", AccessSecret: "s"},
		RateLimit:   -1, MaxRetries: -1,
		Breaker:  pandapon.BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 100 * time.Millisecond},
		Observer: pm,
	})
	if err != nil {
		t.Fatal(err)
	}
	pm.RefreshCircuitWith(func() { client.CircuitState() })
	state := func() float64 { return testkit.Gauge(t, reg, "pandabridge_pandapon_circuit_state") }
	transitions := func() map[string]float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range families {
			if f.GetName() == "pandabridge_pandapon_circuit_transitions_total" {
				for _, m := range f.GetMetric() {
					got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		return got
	}
	if got := transitions(); !maps.Equal(got, map[string]float64{"closed": 0, "half-open": 0, "open": 0}) {
		t.Errorf("transitions before any = %v, want every state's series at 0 (the circuit alert takes their increase)", got)
	}
	for range 2 {
		_, _ = client.QueryRefund(context.Background(), "1")
	}
	if s := state(); s != 2 {
		t.Fatalf("circuit state %v after two failures, want 2 (open)", s)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return state() == 1 }, "the circuit gauge to show half-open without a call")
	if got := transitions(); got["open"] != 1 || got["half-open"] != 1 {
		t.Errorf("transitions = %v, want one to open and one to half-open", got)
	}
}
