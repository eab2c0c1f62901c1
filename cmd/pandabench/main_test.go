package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// TestRepeatInterleavesRounds runs two real rounds and checks that each
// contestant ran once per round, in a rotated order, and that the ratio
// column compares contestants of the same round.
func TestRepeatInterleavesRounds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the baseline twice")
	}
	o, _, err := parseFlags([]string{"-scenarios", "S1", "-modes", "drain", "-contestants", "baseline,raw", "-events", "200", "-refunds", "32", "-repeat", "2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	o.Timeout, o.RunTimeout = time.Minute, 30*time.Second
	o.ChildLogDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	results, err := Bench(ctx, o, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"S1-drain-baseline-r1.log", "S1-drain-baseline-r2.log", "S1-drain-raw-r1.log", "S1-drain-raw-r2.log"} {
		if _, err := os.Stat(filepath.Join(o.ChildLogDir, f)); err != nil {
			t.Errorf("each round keeps its own child log: %v", err)
		}
	}
	var order []string
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s round %d: %v", r.Contestant, r.Round, r.Err)
		}
		order = append(order, fmt.Sprintf("%s#%d", r.Contestant, r.Round))
	}
	if got, want := strings.Join(order, " "), "baseline#0 raw#0 raw#1 baseline#1"; got != want {
		t.Errorf("run order %q, want %q", got, want)
	}
	var out bytes.Buffer
	report(&out, o, results)
	for _, want := range []string{"baseline #2", "raw #1", "medians of 2 rounds"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, r := range results {
		if b, ok := baselineOf(results, r); !ok || b.Round != r.Round {
			t.Errorf("%s round %d compared with baseline round %d (found %v)", r.Contestant, r.Round, b.Round, ok)
		}
	}
}

// TestCPUProfiles: -cpuprofile writes, for a profiled child, its CPU and
// allocation profiles, and for every run the parent's (broker, sandbox,
// collector), each a gzipped pprof protobuf.
func TestCPUProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the raw contestant")
	}
	o, _, err := parseFlags([]string{"-scenarios", "S1", "-modes", "drain", "-contestants", "raw", "-events", "200", "-refunds", "32"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	o.Timeout, o.RunTimeout = time.Minute, 30*time.Second
	o.CPUProfileDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	results, err := Bench(ctx, o, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Err != nil {
		t.Fatalf("results %+v", results)
	}
	for _, f := range []string{"S1-drain-raw.pprof", "S1-drain-raw.allocs.pprof", "S1-drain-raw.parent.pprof"} {
		b, err := os.ReadFile(filepath.Join(o.CPUProfileDir, f))
		if err != nil {
			t.Error(err)
			continue
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: %d bytes, not a gzipped profile", f, len(b))
		}
	}
}

// TestTargetsUseMedians: with rounds, every target is judged on the median
// of per-round figures, and the per-round values are shown.
func TestTargetsUseMedians(t *testing.T) {
	s1, s2 := defaultScenarios[0], defaultScenarios[1]
	var results []Result
	for round, f := range []struct{ consumer, baseline, cpuUS, s2 float64 }{
		{9000, 6000, 70, 0.960}, // ratio 1.50
		{9500, 5000, 55, 0.975}, // ratio 1.90
		{8800, 5000, 58, 0.980}, // ratio 1.76
	} {
		results = append(results,
			Result{Scenario: s1, Mode: modeDrain, Contestant: contConsumer, Round: round, Rate: f.consumer, CPU: time.Duration(f.cpuUS * float64(time.Microsecond))},
			Result{Scenario: s1, Mode: modeDrain, Contestant: contBaseline, Round: round, Rate: f.baseline},
			Result{Scenario: s2, Mode: modeDrain, Contestant: contConsumer, Round: round, Rate: f.s2 * s2.Ideal()},
		)
	}
	got := strings.Join(targetLines(results), "\n")
	for _, want := range []string{
		"PASS S1 events/s ≥ 1.7× baseline: 1.76× (8800 vs 5000) [median of 3 rounds: 1.50, 1.76, 1.90]",
		"PASS S1 pipeline CPU ≤ 60µs/event: 58.0 µs [median of 3 rounds: 55.0, 58.0, 70.0]",
		"PASS S2 ≥ 97% of ideal 1280/s: 97.5% (1248/s) [median of 3 rounds: 96.0%, 97.5%, 98.0%]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("targets lack %q:\n%s", want, got)
		}
	}
	// A failed round is said, not hidden.
	results[4].Err = errors.New("correctness")
	if got := strings.Join(targetLines(results), "\n"); !strings.Contains(got, "[median of 2 of 3 rounds (the others failed): 1.50, 1.76]") {
		t.Errorf("with round 2's S1 baseline failed, the targets do not say so:\n%s", got)
	}
	if median([]float64{4, 1, 3, 2}) != 2.5 {
		t.Error("median of an even count is not the mean of the middle two")
	}
	if got := rotate([]string{"a", "b", "c"}, 4); strings.Join(got, "") != "bca" {
		t.Errorf("rotate by 4 of abc = %v", got)
	}
}

// TestRuntimeTuning: what a contestant's environment gets of the runtime
// settings, -gomaxprocs winning over an inherited GOMAXPROCS.
func TestRuntimeTuning(t *testing.T) {
	t.Setenv("GOMAXPROCS", "4")
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("PANDABRIDGE_GC_HEAP_FLOOR", "64MiB")
	last := func(vars []string, key string) string {
		v := ""
		for _, kv := range vars {
			if k, val, _ := strings.Cut(kv, "="); k == key {
				v = val
			}
		}
		return v
	}
	o, _, err := parseFlags([]string{"-gomaxprocs", "1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	vars := runtimeTuning([]string{"PATH=/bin"}, o)
	if got := last(vars, "GOMAXPROCS"); got != "1" {
		t.Errorf("-gomaxprocs 1 with GOMAXPROCS=4 inherited: a child sees GOMAXPROCS=%q, want 1 (%v)", got, vars)
	}
	if got := last(vars, "PANDABRIDGE_GC_HEAP_FLOOR"); got != "64MiB" {
		t.Errorf("PANDABRIDGE_GC_HEAP_FLOOR not passed through: %v", vars)
	}
	if got := last(vars, "GOGC"); got != "" {
		t.Errorf("an empty GOGC was passed: %v", vars)
	}
	if got := last(runtimeTuning(nil, Options{}), "GOMAXPROCS"); got != "4" {
		t.Errorf("without -gomaxprocs a child sees GOMAXPROCS=%q, want the inherited 4", got)
	}
	if _, _, err := parseFlags([]string{"-gomaxprocs", "-1"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "-gomaxprocs -1") {
		t.Errorf("-gomaxprocs -1: error %v, want one naming the flag and value", err)
	}
	var out bytes.Buffer
	report(&out, o, []Result{{Scenario: defaultScenarios[0], Mode: modeDrain, Contestant: contBaseline, N: 1, Rate: 1}})
	if !strings.Contains(out.String(), "(contestants: 1)") || !strings.Contains(out.String(), "PANDABRIDGE_GC_HEAP_FLOOR=64MiB") {
		t.Errorf("the report header does not say what the contestants ran with:\n%s", out.String())
	}
}
