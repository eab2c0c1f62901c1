package telemetry_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/callbacks"
	"github.com/pandabridge/pandabridge/delivery"
	"github.com/pandabridge/pandabridge/ingest"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/telemetry"
)

// exportedFamilies returns the metric names the consumer and publisher
// serve export, with the series suffixes of histograms.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	pm := telemetry.NewPandaPonMetrics(reg)
	telemetry.RegisterBuildInfo(reg, "consumer")
	// publisher serve's collectors.
	im := ingest.NewMetrics(reg)
	cm := callbacks.NewMetrics(reg)
	dm := delivery.NewMetrics(reg)
	im.Requests.WithLabelValues("binary", "202").Inc()
	im.Events.WithLabelValues("t", "accepted").Inc()
	im.AuthFailures.WithLabelValues("r").Inc()
	im.Duration.WithLabelValues("binary").Observe(1)
	cm.Received.WithLabelValues("9", "stored").Inc()
	cm.Lookups.WithLabelValues("new").Inc()
	cm.Rejected.WithLabelValues("wrong_token").Inc()
	dm.Deliveries.WithLabelValues("t", "delivered").Inc()
	dm.Attempts.WithLabelValues("t", "2xx").Inc()
	dm.AttemptSeconds.WithLabelValues("t").Observe(1)
	dm.DeadLettered.WithLabelValues("t", "horizon").Inc()
	dm.InFlight.WithLabelValues("t").Set(1)
	dm.Latency.WithLabelValues("t").Observe(1)
	// Touch every vector so that it is gathered.
	m.Consumed.WithLabelValues("t", "o").Inc()
	m.Published.WithLabelValues("t").Inc()
	m.DeadLettered.WithLabelValues("t", "k").Inc()
	m.DeadLetterFailed.WithLabelValues("t").Inc()
	m.HandleSeconds.WithLabelValues("t", "o").Observe(1)
	pm.CallDone(pandapon.EndpointQueryRefund, "success", 0, time.Second, 1)
	pm.Retried(pandapon.EndpointQueryRefund, "http_5xx")
	pm.CircuitChanged("closed", "open")
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			names[f.GetName()+s] = true
		}
	}
	return names
}

// TestDashboardAndAlertsUseExportedMetrics keeps the Grafana dashboard and
// the alert rules in step with the metrics: a renamed metric would leave an
// empty panel or an alert that never fires.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	names := exportedFamilies(t)
	dash, err := os.ReadFile("../deploy/observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if len(d.Panels) < 8 {
		t.Errorf("dashboard has %d panels", len(d.Panels))
	}
	alerts, err := os.ReadFile("../deploy/observability/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PandabridgeConsumerLagGrowing", "PandabridgeNotReady", "PandabridgeConsumerStalled", "PandabridgeDeadLetters",
		"PandabridgeDeadLettersNotStored", "PandabridgePandaPonCircuitOpen", "PandabridgePandaPonErrorRate"} {
		if !strings.Contains(string(alerts), "alert: "+want) {
			t.Errorf("alerts.yaml lacks %s", want)
		}
	}
	metric := regexp.MustCompile(`pandabridge_[a-z_]+`)
	for file, text := range map[string]string{"grafana-dashboard.json": string(dash), "alerts.yaml": string(alerts)} {
		used := metric.FindAllString(text, -1)
		if len(used) == 0 {
			t.Errorf("%s uses no pandabridge metric", file)
		}
		for _, name := range used {
			if !names[name] {
				t.Errorf("%s uses %s, which the consumer does not export", file, name)
			}
		}
	}
}

// TestDashboardFiltersByNamespace: like the alerts, the dashboard tells
// deployments apart. It has a namespace variable ("All" matches series
// without the label too), and every metric it reads is filtered by it.
func TestDashboardFiltersByNamespace(t *testing.T) {
	dash, err := os.ReadFile("../deploy/observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Templating struct {
			List []struct {
				Name, AllValue string
				IncludeAll     bool
			}
		}
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range d.Templating.List {
		if v.Name == "namespace" {
			found = true
			if !v.IncludeAll || v.AllValue != ".*" {
				t.Errorf(`namespace variable: includeAll %v, allValue %q; want true and ".*" (which also matches series without the label)`, v.IncludeAll, v.AllValue)
			}
		}
	}
	if !found {
		t.Error("the dashboard has no namespace variable")
	}
	selector := regexp.MustCompile(`pandabridge_[a-z_]+(\{[^}]*\})?`)
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			for _, m := range selector.FindAllStringSubmatch(target.Expr, -1) {
				if !strings.Contains(m[1], `namespace=~"$namespace"`) {
					t.Errorf("panel %q reads %s without the namespace filter", p.Title, m[0])
				}
			}
		}
	}
}
