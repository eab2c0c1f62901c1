// Command pandabench is pandabridge's end-to-end benchmark: in one process
// tree on 127.0.0.1 it runs an embedded JetStream server and the PandaPon
// sandbox (with added latency), and pits contestants against each other on
// the same inputs:
//
//	consumer   the real cmd/consumer binary, configured by its environment
//	baseline   a straightforward nats.go pipeline (pandabench -role baseline):
//	           pull consume, C workers, signed HTTP GET, synchronous publish, ack
//	raw        the JetStream ceiling (pandabench -role raw): pull consume and
//	           async publish of a canned output, no HTTP
//	inprocess  the consumer's pipeline+handlers+pandapon wired as cmd/consumer
//	           does, in a pandabench child that can write a CPU profile
//
// Each contestant is a child process, so its CPU (/proc/<pid>/stat) and peak
// RSS (VmHWM) are its own. Every run asserts correctness: exactly N outputs
// with N distinct causation ids, the right type, subject and data, no
// redelivery, nothing dead-lettered. See docs/performance.md.
//
// Usage:
//
//	go run ./cmd/pandabench                       # S1,S2,S3 drain+steady, consumer,baseline,raw
//	go run ./cmd/pandabench -quick                # seconds: small N
//	go run ./cmd/pandabench -scenarios S1 -modes drain -contestants inprocess -cpuprofile /tmp/prof
//	go run ./cmd/pandabench -scenarios S1 -modes drain -repeat 5   # medians of 5 interleaved rounds
//	go run ./cmd/pandabench -soak                 # 1M events through the consumer, RSS over time
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Scenario is one workload of the issue.
type Scenario struct {
	Name    string
	Latency time.Duration // added by the sandbox to every request
	C       int           // concurrency of every contestant
	N       int           // events of a backlog drain
	// SteadyRate is the arrival rate of the steady mode (events/s).
	SteadyRate float64
}

// Ideal is C/latency, the throughput of C perfectly overlapped calls; 0 when
// the upstream adds no latency.
func (s Scenario) Ideal() float64 {
	if s.Latency <= 0 {
		return 0
	}
	return float64(s.C) / s.Latency.Seconds()
}

var defaultScenarios = []Scenario{
	{Name: "S1", Latency: 0, C: 16, N: 50_000, SteadyRate: 2500},
	{Name: "S2", Latency: 50 * time.Millisecond, C: 64, N: 20_000, SteadyRate: 640},
	{Name: "S3", Latency: 50 * time.Millisecond, C: 256, N: 20_000, SteadyRate: 2560},
}

// Options are the command-line flags.
type Options struct {
	Scenarios      []string
	Modes          []string
	Contestants    []string
	Events         int
	Quick          bool
	Soak           bool
	SoakEvents     int
	ConsumerBin    string
	Timeout        time.Duration
	RunTimeout     time.Duration
	SteadyDuration time.Duration
	SteadyRate     float64
	Refunds        int
	CPUProfileDir  string
	LogLevel       string
	VerifyData     bool
	Strict         bool
	Verbose        bool
	ChildLogDir    string
	// GOMAXPROCS, when positive, is set for every contestant (not for the
	// broker and sandbox in this process): a container with a CPU limit of
	// 1, as deploy/k8s has, gets GOMAXPROCS 1 from Go's runtime.
	GOMAXPROCS int
	// Repeat is how many rounds of each scenario and mode run; contestants
	// take turns within a round, in an order rotated every round, and the
	// targets are judged on the medians over the rounds.
	Repeat int
	// BaselinePool is the baseline's idle HTTP connections per host: 0 is
	// http.DefaultTransport's own (2), as the straightforward code has it;
	// -1 is the concurrency C; n > 0 is n.
	BaselinePool int
}

func main() {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (Options, string, error) {
	fs := flag.NewFlagSet("pandabench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var scen, modes, cont, role string
	fs.StringVar(&scen, "scenarios", "S1,S2,S3", "scenarios to run: S1 (0 ms, C=16, 50k), S2 (50 ms, C=64, 20k), S3 (50 ms, C=256, 20k)")
	fs.StringVar(&modes, "modes", "drain,steady", "modes: drain (inputs preloaded) and/or steady (inputs published at a fixed rate)")
	fs.StringVar(&cont, "contestants", "consumer,baseline,raw", "contestants: consumer, baseline, raw, inprocess")
	fs.IntVar(&o.Events, "events", 0, "events per drain run (0: the scenario's N, or the -quick size)")
	fs.BoolVar(&o.Quick, "quick", false, "small runs for a smoke test (2k/1k events, 2 s steady)")
	fs.BoolVar(&o.Soak, "soak", false, "instead of the scenarios: -soak-events through the contestants at S1 settings, sampling RSS (memory flatness)")
	fs.IntVar(&o.SoakEvents, "soak-events", 1_000_000, "events of -soak")
	fs.StringVar(&o.ConsumerBin, "consumer-bin", "", "consumer binary to run (default: go build ./cmd/consumer into a temporary directory)")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "bound on the whole benchmark")
	fs.DurationVar(&o.RunTimeout, "run-timeout", 3*time.Minute, "bound on one run")
	fs.DurationVar(&o.SteadyDuration, "steady-duration", 10*time.Second, "how long the steady mode publishes")
	fs.Float64Var(&o.SteadyRate, "rate", 0, "steady arrival rate in events/s (0: the scenario's: S1 2500, S2 640, S3 2560 = 50% of ideal)")
	fs.IntVar(&o.Refunds, "refunds", 4096, "distinct sandbox refunds the inputs cycle through")
	fs.StringVar(&o.CPUProfileDir, "cpuprofile", "", "directory for CPU profiles of the pandabench children (inprocess, baseline, raw), next to each (.allocs.pprof) where the run allocated, and of the parent (broker, sandbox, collector) during every run (.parent.pprof)")
	fs.StringVar(&o.LogLevel, "consumer-log-level", "warn", "PANDABRIDGE_LOG_LEVEL of the consumer (info logs one line per event)")
	fs.BoolVar(&o.VerifyData, "verify-data", true, "after each run read back every stored output and compare it with the sandbox's data")
	fs.BoolVar(&o.Strict, "strict", false, "exit 1 when a target of the issue is missed (correctness failures always exit 1)")
	fs.BoolVar(&o.Verbose, "v", false, "progress details on stderr")
	fs.StringVar(&o.ChildLogDir, "child-logs", "", "directory to write each contestant's stderr to (default: kept in memory, last lines shown on failure)")
	fs.IntVar(&o.GOMAXPROCS, "gomaxprocs", 0, "GOMAXPROCS of every contestant, not of the broker and sandbox (0: Go's default; 1 is what deploy/k8s's CPU limit of 1 gives)")
	fs.IntVar(&o.Repeat, "repeat", 1, "rounds of every scenario and mode, contestants interleaved in a rotating order; targets are judged on the medians")
	fs.IntVar(&o.BaselinePool, "baseline-pool", 0, "idle HTTP connections per host of the baseline: 0 = Go's default transport (2), the straightforward code's; -1 = C, the tuned variant")
	fs.StringVar(&role, "role", "", "internal: run as a contestant (baseline, raw, inprocess), configured by the environment")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	o.Scenarios = splitList(scen)
	o.Modes = splitList(modes)
	o.Contestants = splitList(cont)
	for _, s := range o.Scenarios {
		if _, ok := scenarioByName(s); !ok {
			return o, "", fmt.Errorf("-scenarios: unknown scenario %q (want S1, S2, S3)", s)
		}
	}
	for _, m := range o.Modes {
		if m != modeDrain && m != modeSteady {
			return o, "", fmt.Errorf("-modes: unknown mode %q (want drain, steady)", m)
		}
	}
	for _, c := range o.Contestants {
		switch c {
		case contConsumer, contBaseline, contRaw, contInProcess:
		default:
			return o, "", fmt.Errorf("-contestants: unknown contestant %q (want consumer, baseline, raw, inprocess)", c)
		}
	}
	if o.GOMAXPROCS < 0 {
		return o, "", fmt.Errorf("-gomaxprocs %d: must be 0 (Go's default) or positive", o.GOMAXPROCS)
	}
	if o.Repeat < 1 {
		return o, "", fmt.Errorf("-repeat %d: must be at least 1", o.Repeat)
	}
	if o.Refunds < 1 {
		return o, "", errors.New("-refunds must be at least 1")
	}
	return o, role, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func scenarioByName(name string) (Scenario, bool) {
	for _, s := range defaultScenarios {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return Scenario{}, false
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, role, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "pandabench:", err)
		return 2
	}
	if role != "" {
		return runRole(role)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	results, err := Bench(ctx, o, stderr)
	report(stdout, o, results)
	if err != nil {
		fmt.Fprintln(stderr, "pandabench:", err)
		return 1
	}
	failed := false
	for _, r := range results {
		if r.Err != nil {
			failed = true
		}
	}
	if failed {
		fmt.Fprintln(stderr, "pandabench: correctness failures (see the check column)")
		return 1
	}
	if o.Strict && !targetsMet(results) {
		fmt.Fprintln(stderr, "pandabench: targets missed")
		return 1
	}
	return 0
}
