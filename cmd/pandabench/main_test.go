package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the pandabench children (baseline,
// raw, inprocess) that Bench starts by re-executing itself.
func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(m.Run())
}

// TestSmoke runs small drains and a short steady arrival for the real
// consumer, the baseline and the raw ceiling, and requires every run to be
// correct: exactly N outputs with N distinct causation ids, PandaPon's data
// byte for byte, no redelivery, nothing dead-lettered.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the consumer")
	}
	o := Options{
		Scenarios:      []string{"S1", "S2"},
		Modes:          []string{modeDrain, modeSteady},
		Contestants:    []string{contConsumer, contBaseline, contRaw},
		Events:         300,
		SteadyDuration: time.Second,
		SteadyRate:     200,
		Refunds:        64,
		Timeout:        2 * time.Minute,
		RunTimeout:     45 * time.Second,
		LogLevel:       "warn",
		VerifyData:     true,
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	var log bytes.Buffer
	results, err := Bench(ctx, o, &log)
	var out bytes.Buffer
	report(&out, o, results)
	t.Log("\n" + log.String() + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * 2 * 3; len(results) != want {
		t.Fatalf("%d results, want %d", len(results), want)
	}
	for _, r := range results {
		name := r.Scenario.Name + "/" + r.Mode + "/" + r.Contestant
		if r.Err != nil {
			t.Errorf("%s: %v", name, r.Err)
			continue
		}
		if r.Rate <= 0 || r.CPU < 0 {
			t.Errorf("%s: rate %.0f/s, CPU %s: not measured", name, r.Rate, r.CPU)
		}
		if r.Mode == modeSteady && (r.P50 <= 0 || r.P99 < r.P50) {
			t.Errorf("%s: latency p50 %s p99 %s: not measured", name, r.P50, r.P99)
		}
		if r.PeakRSS <= 0 {
			t.Errorf("%s: no peak RSS", name)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, _, err := parseFlags([]string{"-scenarios", "S1, s3", "-contestants", "consumer,inprocess", "-quick"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Scenarios) != 2 || len(o.Contestants) != 2 || !o.Quick {
		t.Fatalf("parsed %+v", o)
	}
	for _, args := range [][]string{{"-scenarios", "S9"}, {"-modes", "burst"}, {"-contestants", "other"}} {
		if _, _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

func TestInputIDRoundTrip(t *testing.T) {
	for _, i := range []int{0, 7, 49_999} {
		got, ok := parseInputID("pb3s1dr", inputID("pb3s1dr", i))
		if !ok || got != i {
			t.Errorf("%d: got %d %v", i, got, ok)
		}
	}
	for _, id := range []string{"", "pb3s1dr", "pb3s1dr-", "pb3s1drx-1", "pb4s1dr-1", "pb3s1dr-x"} {
		if _, ok := parseInputID("pb3s1dr", id); ok {
			t.Errorf("%q accepted", id)
		}
	}
	if got := refundIDOf([]byte(`{"refundId":"120000000007"}`)); got != "120000000007" {
		t.Errorf("refundIDOf: %q", got)
	}
}

// TestBuildMatchesDockerfile: the benchmark measures the consumer the
// production image ships, so its build flags must be the Dockerfile's.
func TestBuildMatchesDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var build string
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		if strings.HasPrefix(line, "RUN ") && strings.Contains(line, "go build") && strings.Contains(line, "./cmd/consumer") {
			build = line
		}
	}
	if build == "" {
		t.Fatal("no RUN ... go build ... ./cmd/consumer line in the Dockerfile")
	}
	words := strings.Fields(build)
	for _, want := range append(append([]string{}, productionBuild.env...), productionBuild.flags...) {
		// The Dockerfile's shell quotes a flag with spaces.
		if name, value, ok := strings.Cut(want, "="); ok && strings.Contains(value, " ") {
			want = name + `="` + value + `"`
		}
		if !strings.Contains(build, want) {
			t.Errorf("the Dockerfile's build does not have %s:\n%s", want, strings.Join(words, " "))
		}
	}
}

func TestBaselinePoolFlag(t *testing.T) {
	for arg, want := range map[string]string{"0": "Go's default (2 idle per host)", "-1": "C idle per host", "8": "8 idle per host"} {
		o, _, err := parseFlags([]string{"-baseline-pool", arg}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		report(&out, o, []Result{{Scenario: defaultScenarios[0], Mode: modeDrain, Contestant: contBaseline, N: 1, Rate: 1}})
		if !strings.Contains(out.String(), "baseline HTTP pool: "+want) {
			t.Errorf("-baseline-pool %s: report header does not say %q:\n%s", arg, want, out.String())
		}
	}
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	t.Setenv("PANDAPON_BASE_URL", "http://127.0.0.1:1")
	t.Setenv(envPool, "-2")
	if _, err := readRoleConfig(); err == nil || !strings.Contains(err.Error(), envPool) {
		t.Errorf("%s=-2: error %v, want one naming the variable", envPool, err)
	}
}
