package telemetry_test

import (
	"context"
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
	for range 2 {
		_, _ = client.QueryRefund(context.Background(), "1")
	}
	if s := state(); s != 2 {
		t.Fatalf("circuit state %v after two failures, want 2 (open)", s)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return state() == 1 }, "the circuit gauge to show half-open without a call")
}
