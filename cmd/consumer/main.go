// Command consumer runs pandabridge: it consumes refund.lookup.requested and
// return.shipped CloudEvents from NATS JetStream, calls PandaPon, and
// publishes refund.updated or refund.request.failed.
//
// Usage:
//
//	consumer          configured by the environment (see README.md)
//	consumer -dev     zero setup: embedded NATS on 127.0.0.1:4222 and the
//	                  PandaPon sandbox in-process (not in a build with
//	                  -tags=nodev, as the production image's is)
//
// It serves /healthz, /readyz and /metrics on PANDABRIDGE_HTTP_ADDR and
// exits 0 after a graceful drain on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/gcfloor"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/internal/natsconn"
	"github.com/pandabridge/pandabridge/internal/redact"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/submitlease"
	"github.com/pandabridge/pandabridge/telemetry"
	"github.com/pandabridge/pandabridge/topology"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// devOptions are the -dev flags.
type devOptions struct {
	enabled     bool
	natsPort    int
	store       string
	sandboxAddr string
	generated   int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dev devOptions
	fs.BoolVar(&dev.enabled, "dev", false, "zero-setup mode: embedded NATS with JetStream on 127.0.0.1 and the PandaPon sandbox in-process")
	// 4222 is embeddednats.DefaultDevPort, written out so that this file
	// does not import embeddednats: -tags=nodev builds link no NATS server.
	fs.IntVar(&dev.natsPort, "dev-nats-port", 4222, "with -dev: port of the embedded NATS server on 127.0.0.1")
	fs.StringVar(&dev.store, "dev-store", "", "with -dev: JetStream store directory (default: a temporary directory removed at exit)")
	fs.StringVar(&dev.sandboxAddr, "dev-sandbox-addr", "127.0.0.1:0", "with -dev: address of the in-process PandaPon sandbox")
	fs.IntVar(&dev.generated, "dev-generate", 100, "with -dev: generated sandbox refunds besides the seeds")
	printConfig := fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: consumer [-dev [flags]]\n\nConsumes refund requests from NATS JetStream, calls PandaPon, publishes refund.updated.\nConfigured by environment variables (see README.md); -dev needs none.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	if dev.enabled && !devModeBuilt {
		fmt.Fprintf(stderr, "consumer: %v\n", errNoDevMode)
		return 2
	}

	cfg, err := loadConfig()
	if err == nil {
		if dev.enabled && os.Getenv("PANDABRIDGE_LOG_FORMAT") == "" {
			cfg.LogFormat = "text"
		}
		if dev.enabled && os.Getenv("PANDABRIDGE_HTTP_ADDR") == "" {
			cfg.HTTPAddr = "127.0.0.1:8080" // like everything -dev starts: loopback only
		}
		err = cfg.Validate(dev.enabled)
	}
	if err != nil {
		fmt.Fprintf(stderr, "consumer: configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	if *printConfig {
		cfg.Print(stdout)
		if dev.enabled {
			fmt.Fprintln(stdout, "# -dev replaces NATS_URL, NATS_CREDS, PANDAPON_BASE_URL, PANDAPON_ACCESS_KEY, PANDAPON_ACCESS_SECRET and"+
				" PANDAPON_TIMESTAMP_UNIT above with its embedded NATS server and sandbox, whose addresses it logs at start")
		}
		return 0
	}
	log := newLogger(stderr, cfg)
	if err := serve(ctx, cfg, dev, log); err != nil {
		log.Error("consumer stopped", "error", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, cfg Config) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs the consumer until ctx ends.
func serve(ctx context.Context, cfg Config, dev devOptions, log *slog.Logger) error {
	var onPublished func(string, event.Event)
	if dev.enabled {
		stopDev, err := startDev(&cfg, dev, log)
		if err != nil {
			return err
		}
		defer stopDev()
		onPublished = func(subject string, e event.Event) { log.Info(describeOutput(e)) }
	}

	defer startGCFloor(cfg.GCHeapFloor, os.Getenv("GOGC"), log).Stop()

	tp, shutdownTracing, err := telemetry.SetupTracing(ctx, "pandabridge-consumer")
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			log.Warn("flushing traces", "error", err)
		}
	}()
	if telemetry.TracingEnabled(os.Getenv) {
		log.Info("tracing enabled: exporting spans with OTLP over HTTP (OTEL_EXPORTER_OTLP_*)")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	telemetry.RegisterBuildInfo(reg, "consumer")
	metrics := pipeline.NewMetrics(reg)
	ppMetrics := telemetry.NewPandaPonMetrics(reg)

	unit, _ := pandapon.ParseTimestampUnit(cfg.PandaPonTimestampUnit)
	maxConc := cfg.PandaPonMaxConcurrent
	if maxConc == 0 {
		maxConc = cfg.Concurrency
	}
	retries := cfg.PandaPonMaxRetries
	if retries == 0 {
		retries = -1 // pandapon.Config reads 0 as "default" and negative as "none"
	}
	client, err := pandapon.New(pandapon.Config{
		BaseURL: cfg.PandaPonBaseURL,
		Credentials: pandapon.Credentials{
			AccessKey: cfg.PandaPonAccessKey, AccessSecret: cfg.PandaPonAccessSecret,
			UserID: cfg.PandaPonUserID, TimestampUnit: unit,
		},
		RateLimit:      cfg.PandaPonRateLimit,
		Burst:          cfg.PandaPonBurst,
		MaxConcurrent:  maxConc,
		AttemptTimeout: cfg.PandaPonTimeout,
		MaxRetries:     retries,
		RetryAfterMax:  cfg.PandaPonRetryAfterMax,
		Breaker: pandapon.BreakerConfig{
			ConsecutiveFailures: cfg.PandaPonBreakerFailures,
			OpenTimeout:         cfg.PandaPonBreakerOpenTimeout,
			HalfOpenRequests:    cfg.PandaPonBreakerHalfOpenRequests,
		},
		Observer:       circuitLogger{ppMetrics, log, cfg.PandaPonBreakerOpenTimeout},
		TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	ppMetrics.RefreshCircuitWith(func() { client.CircuitState() })

	nc, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	topo := topology.New(cfg.SubjectPrefix)
	topo.Durable = cfg.ConsumerName
	topo.Replicas = cfg.StreamReplicas
	topo.MaxAge = cfg.StreamMaxAge
	topo.DuplicateWindow = cfg.DuplicateWindow

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	h := &handlers.Handler{PandaPon: client, Source: cfg.Source, Subjects: topo.Subjects,
		RecheckDelay: cfg.RecheckDelay, Leases: submitlease.New(js, topo.SubmissionsBucket)}
	p, err := pipeline.New(nc, h, pipeline.Config{
		Topology:       topo,
		Concurrency:    cfg.Concurrency,
		MaxInFlight:    cfg.MaxInFlight,
		MaxQueued:      cfg.MaxQueued,
		AckWait:        cfg.AckWait,
		MaxDeliveries:  cfg.MaxDeliveries,
		BackoffMin:     cfg.BackoffMin,
		BackoffMax:     cfg.BackoffMax,
		HandlerTimeout: cfg.HandlerTimeout,
		DrainTimeout:   cfg.DrainTimeout,
		Logger:         log,
		Metrics:        metrics,
		OnPublished:    onPublished,
		TracerProvider: tp,
		Gate:           client,
	})
	if err != nil {
		return err
	}

	srv, err := startHTTP(cfg.HTTPAddr, p, reg, log)
	if err != nil {
		return err
	}
	runErr := p.Run(ctx)

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("draining NATS connection", "error", err)
	}
	log.Info("shut down")
	return runErr
}

// circuitLogger logs the PandaPon circuit breaker's changes, which also
// pause and resume pulling inputs (pipeline.Config.Gate), and passes every
// observation on.
type circuitLogger struct {
	pandapon.Observer
	log         *slog.Logger
	openTimeout time.Duration
}

// CircuitChanged implements pandapon.Observer.
func (c circuitLogger) CircuitChanged(from, to string) {
	switch to {
	case "open":
		c.log.Warn("PandaPon keeps failing: circuit breaker open, not pulling inputs until a probe succeeds",
			"circuit", to, "probe_in", c.openTimeout)
	case "half-open":
		c.log.Info("circuit breaker half-open: the next inputs pulled probe PandaPon, one at a time", "circuit", to)
	case "closed":
		c.log.Info("PandaPon answers again: circuit breaker closed, pulling inputs", "circuit", to)
	}
	c.Observer.CircuitChanged(from, to)
}

// NotAnsweredYet implements pandapon.Observer: before PandaPon's first
// answer the consumer pulls one input at a time (pandapon.Client.Admit),
// which nothing else shows (the breaker is still closed).
func (c circuitLogger) NotAnsweredYet(failures int, next time.Duration) {
	c.log.Warn("PandaPon has not answered this process yet: pulling one input at a time",
		"failures", failures, "next_in", next)
	c.Observer.NotAnsweredYet(failures, next)
}

// startGCFloor starts the garbage collector's heap floor (package gcfloor)
// unless it is 0 or the operator chose a GOGC (gogc, the environment's
// value), which wins. The nil *gcfloor.Tuner it may return is safe to Stop.
func startGCFloor(floor gcfloor.Size, gogc string, log *slog.Logger) *gcfloor.Tuner {
	if gogc != "" {
		if floor != 0 {
			log.Info("GOGC is set: PANDABRIDGE_GC_HEAP_FLOOR is not applied", "GOGC", gogc)
		}
		return nil
	}
	t := gcfloor.Start(floor)
	if t != nil {
		log.Debug("garbage collector heap floor", "floor", floor.String())
	}
	return t
}

// connect dials NATS, retrying in the background when the servers are not
// reachable yet: the process starts, /readyz says 503 until connected.
func connect(cfg Config, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("pandabridge-consumer"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}
	opts = append(opts, natsconn.Logging(log, cfg.NATSURL)...)
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		// A *url.Error quotes the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("connecting to NATS_URL %s: %w", redact.URLs(cfg.NATSURL), err)
	}
	return nc, nil
}

// startHTTP serves /healthz, /readyz and /metrics.
func startHTTP(addr string, p *pipeline.Pipeline, reg *prometheus.Registry, log *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.Ready() {
			http.Error(w, "not ready: not connected to NATS with streams and consumer in place", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PANDABRIDGE_HTTP_ADDR=%q: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server", "error", err)
		}
	}()
	log.Info("serving health and metrics", "addr", ln.Addr().String())
	return srv, nil
}

// describeOutput renders an output event for humans (dev mode).
func describeOutput(e event.Event) string {
	switch e.Type() {
	case events.TypeRefundUpdated:
		v, err := pandapon.ParseRefundView(e.Data())
		if err != nil {
			return fmt.Sprintf("refund.updated refund %s (unreadable aggregate: %v)", e.Subject(), err)
		}
		s := fmt.Sprintf("refund.updated: refund %s is %d (%s)", e.Subject(), v.RefundStatus.Value, pandapon.StatusText(v.RefundStatus.Value))
		if v.LogisticsNo != "" {
			s += fmt.Sprintf(", return parcel %s via %s", v.LogisticsNo, v.LogisticsCompanyCode)
		}
		return s + fmt.Sprintf(" [event %s, caused by %v]", e.ID(), e.Extensions()[events.ExtCausationID])
	case events.TypeRefundRequestFailed:
		return fmt.Sprintf("refund.request.failed: refund %s: %s [event %s]", e.Subject(), e.Data(), e.ID())
	}
	return fmt.Sprintf("%s %s", e.Type(), e.ID())
}
