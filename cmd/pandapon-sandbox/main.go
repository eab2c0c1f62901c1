// Command pandapon-sandbox serves an in-memory simulation of PandaPon's
// after-sales API (package pandapon/sandbox) for local development.
//
//	go run ./cmd/pandapon-sandbox -h
//
// It prints its URL and the (public, sandbox-only) credentials it accepts,
// logs one line per request to stderr, and exits 0 after a graceful
// shutdown on SIGINT or SIGTERM. Bad flag values exit 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks a bad flag value: exit status 2, like flag's own errors.
var errUsage = errors.New("usage")

type config struct {
	addr     string
	opts     sandbox.Options
	unitFlag string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("pandapon-sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pandapon-sandbox [flags]\n\n"+
			"Serves a simulation of PandaPon's after-sales API (refund query, logistics\n"+
			"submission, cancellation) with the seed and generated refunds in memory.\n"+
			"It is a sandbox: its credentials are public test values.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	f := &c.opts.Faults
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8090", "listen address")
	fs.IntVar(&c.opts.GeneratedRefunds, "generate", 100, "number of generated refunds (return and refund, status 20) besides the seeds")
	fs.StringVar(&c.opts.AccessKey, "access-key", sandbox.DefaultAccessKey, "the access-key accepted")
	fs.StringVar(&c.opts.AccessSecret, "access-secret", sandbox.DefaultAccessSecret, "the access secret accepted (a sandbox value, printed at start)")
	fs.StringVar(&c.unitFlag, "timestamp-unit", "ms", "unit of the timestamp header: ms or s")
	fs.Int64Var(&c.opts.RandSeed, "seed", 0, "seed of fault decisions (0 = fixed default)")
	fs.DurationVar(&f.Latency, "latency", 0, "latency added to every request")
	fs.Float64Var(&f.ServerErrorRate, "error-rate", 0, "fraction of requests answered HTTP 503")
	fs.Float64Var(&f.RateLimitRate, "rate-limit-rate", 0, "fraction of requests answered HTTP 429 with Retry-After")
	fs.DurationVar(&f.RetryAfter, "retry-after", sandbox.DefaultRetryAfter, "Retry-After of a 429 (rounded up to whole seconds)")
	fs.Float64Var(&f.TimeoutRate, "timeout-rate", 0, "fraction of requests that hang for -hang, then answer HTTP 504")
	fs.DurationVar(&f.Hang, "hang", sandbox.DefaultHang, "how long a timed-out request hangs (ends early if the client gives up)")
	fs.Float64Var(&f.MalformedRate, "malformed-rate", 0, "fraction of requests answered HTTP 200 with a truncated, non-JSON body")
	if err := fs.Parse(args); err != nil {
		return c, err // flag has printed the error and usage
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	bad := func(name, value, why string) error {
		return fmt.Errorf("%w: invalid value %q for flag -%s: %s", errUsage, value, name, why)
	}
	unit, err := pandapon.ParseTimestampUnit(c.unitFlag)
	if err != nil {
		return c, bad("timestamp-unit", c.unitFlag, "want ms or s")
	}
	c.opts.TimestampUnit = unit
	if c.opts.GeneratedRefunds < 0 {
		return c, bad("generate", fmt.Sprint(c.opts.GeneratedRefunds), "must not be negative")
	}
	if c.opts.AccessKey == "" || c.opts.AccessSecret == "" {
		return c, fmt.Errorf("%w: -access-key and -access-secret must not be empty", errUsage)
	}
	sum := 0.0
	for _, r := range []struct {
		name string
		v    float64
	}{{"error-rate", f.ServerErrorRate}, {"rate-limit-rate", f.RateLimitRate}, {"timeout-rate", f.TimeoutRate}, {"malformed-rate", f.MalformedRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			return c, bad(r.name, fmt.Sprint(r.v), "must be between 0 and 1")
		}
		sum += r.v
	}
	if sum > 1+1e-9 {
		return c, fmt.Errorf("%w: -error-rate, -rate-limit-rate, -timeout-rate and -malformed-rate sum to %v, must be at most 1", errUsage, sum)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"latency", f.Latency}, {"retry-after", f.RetryAfter}, {"hang", f.Hang}} {
		if d.v < 0 {
			return c, bad(d.name, d.v.String(), "must not be negative")
		}
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "pandapon-sandbox:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	case err != nil:
		return 2 // flag has printed it
	}
	c.opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))

	srv, err := sandbox.Start(c.addr, c.opts)
	if err != nil {
		fmt.Fprintf(stderr, "pandapon-sandbox: listen on %s: %v\n", c.addr, err)
		return 1
	}
	printBanner(stdout, srv, c)

	<-ctx.Done()
	fmt.Fprintln(stdout, "pandapon-sandbox: shutting down")
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "pandapon-sandbox: shutdown: %v\n", err)
		return 1
	}
	return 0
}

func printBanner(w io.Writer, srv *sandbox.Server, c config) {
	o := c.opts
	fmt.Fprintf(w, "PandaPon SANDBOX (a simulation, not PandaPon) listening on %s\n", srv.URL)
	fmt.Fprintf(w, "  accepts access-key %q and access-secret %q (sandbox test credentials, not real secrets)\n", o.AccessKey, o.AccessSecret)
	fmt.Fprintf(w, "  timestamp header in %s, within %v; every nonce-str may be used once\n", o.TimestampUnit, pandapon.MaxClockSkew)
	fmt.Fprintf(w, "  seed refunds: %s (refund only, status 100), %s (return, status 20: submit logistics once), %s (return, status 30, logistics recorded)\n",
		sandbox.SeedRefundOnly, sandbox.SeedAwaitingReturn, sandbox.SeedReturned)
	if o.GeneratedRefunds > 0 {
		fmt.Fprintf(w, "  generated refunds: %s … %s (%d, return, status 20)\n",
			sandbox.GeneratedRefundID(0), sandbox.GeneratedRefundID(o.GeneratedRefunds-1), o.GeneratedRefunds)
	} else {
		fmt.Fprintln(w, "  generated refunds: none")
	}
	f := o.Faults
	if f.Latency == 0 && f.ServerErrorRate+f.RateLimitRate+f.TimeoutRate+f.MalformedRate == 0 {
		fmt.Fprintln(w, "  faults: none")
	} else {
		fmt.Fprintf(w, "  faults: latency %v, 503 %.3g, 429 %.3g (Retry-After %v), hang+504 %.3g (hang %v), malformed %.3g, seed %d\n",
			f.Latency, f.ServerErrorRate, f.RateLimitRate, f.RetryAfter, f.TimeoutRate, f.Hang, f.MalformedRate, o.RandSeed)
	}
	fmt.Fprintf(w, "  endpoints: GET %s?refundId=ID, POST %s, GET %s\n", sandbox.PathQuery, sandbox.PathSubmitLogistics, sandbox.PathCancel)
}
