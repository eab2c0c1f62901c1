package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of the issue.
const (
	targetS1Ratio  = 1.7
	targetS1CPU    = 60 * time.Microsecond
	targetS2Ideal  = 0.97
	targetS3Ideal  = 0.90
	targetRSSC256  = 40 << 20
	soakFlatFactor = 1.10
)

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

// baselineOf returns the baseline's result for r's scenario, mode and round.
func baselineOf(results []Result, r Result) (Result, bool) {
	for _, b := range results {
		if b.Contestant == contBaseline && b.Scenario.Name == r.Scenario.Name && b.Mode == r.Mode && b.Round == r.Round && b.Err == nil && b.Rate > 0 {
			return b, true
		}
	}
	return Result{}, false
}

func report(w io.Writer, o Options, results []Result) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintf(w, "\npandabench: %s/%s, %d CPUs, GOMAXPROCS %d (contestants: %s), %s; baseline HTTP pool: %s%s\n\n", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), contestantProcsText(o), runtime.Version(), baselinePoolText(o.BaselinePool), consumerTuning())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scen\tmode\tcontestant\tN\tC\tupstream\tevents/s\t% ideal\t× baseline\tCPU µs/ev\tbroker+sbx µs/ev\tpeak RSS MB\tp50 ms\tp95 ms\tp99 ms\tmax ms\tcheck\t")
	for _, r := range results {
		name := r.Contestant
		if o.Repeat > 1 {
			name = fmt.Sprintf("%s #%d", r.Contestant, r.Round+1)
		}
		ideal, ratio := "-", "-"
		if i := r.Scenario.Ideal(); i > 0 && r.Mode == modeDrain && r.Rate > 0 && r.Contestant != contRaw {
			ideal = fmt.Sprintf("%.1f%%", 100*r.Rate/i)
		}
		if b, ok := baselineOf(results, r); ok && r.Mode == modeDrain && r.Rate > 0 {
			ratio = fmt.Sprintf("%.2f", r.Rate/b.Rate)
		}
		p50, p95, p99, pmax := "-", "-", "-", "-"
		if r.Mode == modeSteady && r.P50 > 0 {
			p50, p95, p99, pmax = ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max)
		}
		check := "ok"
		if r.Err != nil {
			check = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%.0f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Scenario.Name, r.Mode, name, r.N, r.Scenario.C, r.Scenario.Latency, r.Rate, ideal, ratio,
			us(r.CPU), us(r.ParentCPU), mb(r.PeakRSS), p50, p95, p99, pmax, check)
	}
	tw.Flush()

	for _, r := range results {
		var notes []string
		if r.Err != nil {
			notes = append(notes, "FAILED: "+strings.ReplaceAll(r.Err.Error(), "\n", "\n    "))
		}
		if r.Mode == modeDrain && r.Startup > 0 {
			notes = append(notes, fmt.Sprintf("start→first output %s, first→last %s", r.Startup.Round(time.Millisecond), r.Wall.Round(time.Millisecond)))
		}
		if r.MaxGap > 250*time.Millisecond {
			notes = append(notes, fmt.Sprintf("STALL: longest pause between two outputs %s", r.MaxGap.Round(time.Millisecond)))
		}
		if r.Late > 0 && r.Mode == modeSteady {
			notes = append(notes, fmt.Sprintf("%d outputs more than 1 s after their input", r.Late))
		}
		if r.TotalCPU > 0 {
			notes = append(notes, fmt.Sprintf("whole-life CPU %s", r.TotalCPU.Round(time.Millisecond)))
		}
		if len(r.Metrics) > 0 {
			notes = append(notes, fmt.Sprintf("consumer outcomes %v", r.Metrics))
		}
		if r.Mode == modeSoak {
			notes = append(notes, soakSummary(r))
		}
		notes = append(notes, r.Notes...)
		if len(notes) > 0 {
			round := ""
			if o.Repeat > 1 {
				round = fmt.Sprintf(" #%d", r.Round+1)
			}
			fmt.Fprintf(w, "  %s/%s/%s%s: %s\n", r.Scenario.Name, r.Mode, r.Contestant, round, strings.Join(notes, "; "))
		}
	}

	if o.Repeat > 1 {
		fmt.Fprintf(w, "\nTargets (ratios within each round; medians of %d rounds):\n", o.Repeat)
	} else {
		fmt.Fprintln(w, "\nTargets (ratios within this run):")
	}
	for _, line := range targetLines(results) {
		fmt.Fprintln(w, "  "+line)
	}

	fmt.Fprintln(w, "\nGo benchmark format (benchstat):")
	// The -N suffix is GOMAXPROCS, as go test writes it: the contestants'.
	procs := contestantProcs(o)
	if procs == 0 {
		procs = runtime.NumCPU()
	}
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/pandabridge/pandabridge/cmd/pandabench\n", runtime.GOOS, runtime.GOARCH)
	for _, r := range results {
		if r.Err != nil || r.Rate <= 0 {
			continue
		}
		fmt.Fprintf(w, "BenchmarkE2E/%s/%s/%s-%d\t%d\t%.0f ns/op\t%.1f events/s\t%.2f cpu-us/event\t%.2f broker-us/event\t%.2f peak-rss-MB",
			r.Scenario.Name, r.Mode, r.Contestant, procs, r.N, float64(time.Second)/r.Rate, r.Rate, us(r.CPU), us(r.ParentCPU), mb(r.PeakRSS))
		if i := r.Scenario.Ideal(); i > 0 && r.Mode == modeDrain && r.Contestant != contRaw {
			fmt.Fprintf(w, "\t%.2f %%ideal", 100*r.Rate/i)
		}
		if b, ok := baselineOf(results, r); ok && r.Mode == modeDrain {
			fmt.Fprintf(w, "\t%.3f x-baseline", r.Rate/b.Rate)
		}
		if r.Mode == modeSteady {
			fmt.Fprintf(w, "\t%s p50-ms\t%s p95-ms\t%s p99-ms", ms(r.P50), ms(r.P95), ms(r.P99))
		}
		fmt.Fprintln(w)
	}
}

func soakSummary(r Result) string {
	if len(r.RSS) == 0 {
		return "no RSS samples"
	}
	at := func(frac float64) rssSample {
		want := int(frac * float64(r.N))
		for _, s := range r.RSS {
			if s.Events >= want {
				return s
			}
		}
		return r.RSS[len(r.RSS)-1]
	}
	var parts []string
	for _, f := range []float64{0.1, 0.2, 0.4, 0.6, 0.8, 1.0} {
		s := at(f)
		parts = append(parts, fmt.Sprintf("%d%%:%.1fMB", int(f*100), mb(s.RSS)))
	}
	ref, last := at(0.2), r.RSS[len(r.RSS)-1]
	verdict := "flat"
	if float64(last.RSS) > soakFlatFactor*float64(ref.RSS) {
		verdict = "GROWING"
	}
	return fmt.Sprintf("RSS by progress %s — %s (last %.1f MB vs %.1f MB at 20%%)", strings.Join(parts, " "), verdict, mb(last.RSS), mb(ref.RSS))
}

func find(results []Result, scen, mode, cont string, round int) (Result, bool) {
	for _, r := range results {
		if r.Scenario.Name == scen && r.Mode == mode && r.Contestant == cont && r.Round == round && r.Err == nil && r.Rate > 0 {
			return r, true
		}
	}
	return Result{}, false
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// rounds returns the rounds present in results, in order.
func rounds(results []Result) []int {
	var out []int
	for _, r := range results {
		if !slices.Contains(out, r.Round) {
			out = append(out, r.Round)
		}
	}
	slices.Sort(out)
	return out
}

// median returns the median of vs (the mean of the middle two for an even
// count); vs must not be empty.
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// spread lists the per-round values behind a median, smallest first, and
// how many of the rounds they are; it says nothing when there is one value
// of one round.
func spread(vs []float64, format string, rounds int) string {
	if len(vs) < 2 && rounds < 2 {
		return ""
	}
	parts := make([]string, 0, len(vs))
	for _, v := range slices.Sorted(slices.Values(vs)) {
		parts = append(parts, fmt.Sprintf(format, v))
	}
	of := fmt.Sprintf("%d rounds", len(vs))
	if len(vs) < rounds {
		of = fmt.Sprintf("%d of %d rounds (the others failed)", len(vs), rounds)
	}
	return fmt.Sprintf(" [median of %s: %s]", of, strings.Join(parts, ", "))
}

// targetLines evaluates the targets for the real consumer: ratios
// are taken within a round, and every figure is the median over the rounds.
func targetLines(results []Result) []string {
	var out []string
	type s1round struct{ ratio, consumer, baseline float64 }
	var s1 []s1round
	var cpus, s2, s3 []float64
	all := rounds(results)
	for _, rd := range all {
		if c, ok := find(results, "S1", modeDrain, contConsumer, rd); ok {
			cpus = append(cpus, us(c.CPU))
			if b, ok := find(results, "S1", modeDrain, contBaseline, rd); ok {
				s1 = append(s1, s1round{c.Rate / b.Rate, c.Rate, b.Rate})
			}
		}
		if c, ok := find(results, "S2", modeDrain, contConsumer, rd); ok {
			s2 = append(s2, c.Rate/c.Scenario.Ideal())
		}
		if c, ok := find(results, "S3", modeDrain, contConsumer, rd); ok {
			s3 = append(s3, c.Rate/c.Scenario.Ideal())
		}
	}
	if len(s1) > 0 {
		ratios := make([]float64, len(s1))
		for i, r := range s1 {
			ratios[i] = r.ratio
		}
		ratio := median(ratios)
		rates := ""
		if len(s1)%2 == 1 { // the rates of the round whose ratio is the median
			slices.SortFunc(s1, func(a, b s1round) int { return cmp.Compare(a.ratio, b.ratio) })
			rates = fmt.Sprintf(" (%.0f vs %.0f)", s1[len(s1)/2].consumer, s1[len(s1)/2].baseline)
		}
		out = append(out, fmt.Sprintf("%s S1 events/s ≥ %.1f× baseline: %.2f×%s%s", verdict(ratio >= targetS1Ratio), targetS1Ratio, ratio, rates, spread(ratios, "%.2f", len(all))))
	}
	if len(cpus) > 0 {
		cpu := median(cpus)
		out = append(out, fmt.Sprintf("%s S1 pipeline CPU ≤ %s/event: %.1f µs%s", verdict(cpu <= us(targetS1CPU)), targetS1CPU, cpu, spread(cpus, "%.1f", len(all))))
	}
	ideal := func(name string, target float64, fs []float64) {
		if len(fs) == 0 {
			return
		}
		sc, _ := scenarioByName(name)
		f := median(fs)
		pct := make([]float64, len(fs))
		for i, v := range fs {
			pct[i] = 100 * v
		}
		out = append(out, fmt.Sprintf("%s %s ≥ %.0f%% of ideal %.0f/s: %.1f%% (%.0f/s)%s", verdict(f >= target), name, 100*target, sc.Ideal(), 100*f, f*sc.Ideal(), spread(pct, "%.1f%%", len(all))))
	}
	ideal("S2", targetS2Ideal, s2)
	ideal("S3", targetS3Ideal, s3)
	var peak int64
	seen := false
	for _, r := range results {
		if r.Contestant == contConsumer && r.Scenario.C == 256 && r.PeakRSS > 0 {
			peak, seen = max(peak, r.PeakRSS), true
		}
	}
	if seen {
		out = append(out, fmt.Sprintf("%s peak RSS ≤ 40 MB at C=256: %.1f MB (the highest of every run)", verdict(peak <= targetRSSC256), mb(peak)))
	}
	for _, r := range results {
		if r.Mode == modeSoak && r.Contestant == contConsumer {
			out = append(out, "soak: "+soakSummary(r))
		}
	}
	for _, r := range results {
		if r.Err != nil {
			out = append(out, fmt.Sprintf("FAIL correctness %s/%s/%s", r.Scenario.Name, r.Mode, r.Contestant))
		}
	}
	if len(out) == 0 {
		out = append(out, "(no consumer results to judge)")
	}
	return out
}

func targetsMet(results []Result) bool {
	for _, l := range targetLines(results) {
		if strings.HasPrefix(l, "MISS") || strings.HasPrefix(l, "FAIL") || strings.Contains(l, "GROWING") {
			return false
		}
	}
	return true
}

// baselinePoolText describes Options.BaselinePool.
func baselinePoolText(n int) string {
	switch {
	case n == 0:
		return "Go's default (2 idle per host)"
	case n < 0:
		return "C idle per host"
	}
	return fmt.Sprintf("%d idle per host", n)
}

// contestantProcs is the GOMAXPROCS the contestants run with, as
// runtimeTuning passes it: -gomaxprocs, else an inherited GOMAXPROCS, else 0
// (Go's default).
func contestantProcs(o Options) int {
	if o.GOMAXPROCS > 0 {
		return o.GOMAXPROCS
	}
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && n > 0 {
		return n
	}
	return 0
}

// contestantProcsText describes contestantProcs for the report's header.
func contestantProcsText(o Options) string {
	if n := contestantProcs(o); n > 0 {
		return strconv.Itoa(n)
	}
	return "Go's default"
}

// consumerTuning names the runtime settings passed through to the
// contestants, so that a report says what it measured.
func consumerTuning() string {
	var set []string
	for _, name := range passedThrough {
		if v := os.Getenv(name); v != "" && name != "GOMAXPROCS" { // the header shows it already
			set = append(set, name+"="+v)
		}
	}
	if len(set) == 0 {
		return ""
	}
	return "; " + strings.Join(set, " ")
}
