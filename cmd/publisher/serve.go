package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pandabridge/pandabridge/callbacks"
	"github.com/pandabridge/pandabridge/delivery"
	"github.com/pandabridge/pandabridge/ingest"
	"github.com/pandabridge/pandabridge/internal/envconf"
	"github.com/pandabridge/pandabridge/internal/natsconn"
	"github.com/pandabridge/pandabridge/telemetry"
	"github.com/pandabridge/pandabridge/topology"
	"github.com/pandabridge/pandabridge/webhooks"
)

// ServeConfig is the configuration of "publisher serve", read from the
// environment on top of Config (NATS_URL, NATS_CREDS,
// PANDABRIDGE_SUBJECT_PREFIX, PANDABRIDGE_SOURCE, PANDABRIDGE_PUBLISH_TIMEOUT).
type ServeConfig struct {
	// Addr is the listener of /events, /pandapon/callback/{token},
	// /healthz, /readyz and /metrics.
	Addr string `envconfig:"PANDABRIDGE_INGEST_ADDR" default:":8081"`
	// MaxBytes bounds a request body of /events and of the callback (413
	// beyond).
	MaxBytes int64 `envconfig:"PANDABRIDGE_INGEST_MAX_BYTES" default:"1048576"`
	// TokensFile holds bearer tokens accepted on /events, one per line.
	TokensFile string `envconfig:"PANDABRIDGE_INGEST_TOKENS_FILE"`
	// SecretsFile holds Standard Webhooks secrets accepted on /events, one
	// per line (whsec_<base64> or raw).
	SecretsFile string `envconfig:"PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE"`
	// SignatureTolerance is how far webhook-timestamp may be from now, and
	// how long an accepted webhook-id is refused as a replay.
	SignatureTolerance time.Duration `envconfig:"PANDABRIDGE_INGEST_SIGNATURE_TOLERANCE" default:"5m"`
	// AllowUnauthenticated lets serve start without any authentication of
	// /events.
	AllowUnauthenticated bool `envconfig:"PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED" default:"false"`
	// CallbackTokenFile holds the secret path segment of PandaPon's
	// callback URL; unset disables the callback endpoint.
	CallbackTokenFile string `envconfig:"PANDABRIDGE_CALLBACK_TOKEN_FILE"`
	// CallbackTimeout bounds storing one callback (PandaPon wants 200 within
	// 1 s).
	CallbackTimeout time.Duration `envconfig:"PANDABRIDGE_CALLBACK_TIMEOUT" default:"800ms"`
	// WebhookTargetsFile is the JSON array of webhook targets; unset means
	// no outbound webhooks.
	WebhookTargetsFile string `envconfig:"PANDABRIDGE_WEBHOOK_TARGETS_FILE"`
	// DrainTimeout bounds shutdown: in-flight requests and webhook POSTs.
	DrainTimeout time.Duration `envconfig:"PANDABRIDGE_DRAIN_TIMEOUT" default:"20s"`
	// Streams created when missing (same meaning as for the consumer).
	StreamReplicas  int           `envconfig:"PANDABRIDGE_STREAM_REPLICAS" default:"1"`
	StreamMaxAge    time.Duration `envconfig:"PANDABRIDGE_STREAM_MAX_AGE" default:"168h"`
	DuplicateWindow time.Duration `envconfig:"PANDABRIDGE_DUPLICATE_WINDOW" default:"1h"`
	LogLevel        string        `envconfig:"PANDABRIDGE_LOG_LEVEL" default:"info"`
	LogFormat       string        `envconfig:"PANDABRIDGE_LOG_FORMAT" default:"json"`
}

// serveSetup is what ServeConfig's files hold, read and checked.
type serveSetup struct {
	tokens        []string
	secrets       []webhooks.Secret
	callbackToken string
	targets       []delivery.Target
	level         slog.Level
}

// load validates sc and reads its files. Errors name the variable (and
// file, line or target); they never contain a secret.
func (sc ServeConfig) load() (serveSetup, error) {
	var st serveSetup
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(sc.Addr) == "" {
		bad("PANDABRIDGE_INGEST_ADDR is empty")
	}
	if sc.MaxBytes <= 0 {
		bad("PANDABRIDGE_INGEST_MAX_BYTES=%d: must be positive", sc.MaxBytes)
	}
	if sc.SignatureTolerance <= 0 {
		bad("PANDABRIDGE_INGEST_SIGNATURE_TOLERANCE=%s: must be positive", sc.SignatureTolerance)
	}
	if sc.CallbackTimeout <= 0 {
		bad("PANDABRIDGE_CALLBACK_TIMEOUT=%s: must be positive", sc.CallbackTimeout)
	}
	if sc.DrainTimeout <= 0 {
		bad("PANDABRIDGE_DRAIN_TIMEOUT=%s: must be positive", sc.DrainTimeout)
	}
	if sc.StreamReplicas < 1 {
		bad("PANDABRIDGE_STREAM_REPLICAS=%d: must be at least 1", sc.StreamReplicas)
	}
	if sc.StreamMaxAge <= 0 {
		bad("PANDABRIDGE_STREAM_MAX_AGE=%s: must be positive", sc.StreamMaxAge)
	}
	if sc.DuplicateWindow <= 0 {
		bad("PANDABRIDGE_DUPLICATE_WINDOW=%s: must be positive", sc.DuplicateWindow)
	}
	if err := st.level.UnmarshalText([]byte(sc.LogLevel)); err != nil {
		bad("PANDABRIDGE_LOG_LEVEL=%q: want debug, info, warn or error", sc.LogLevel)
	}
	if sc.LogFormat != "json" && sc.LogFormat != "text" {
		bad("PANDABRIDGE_LOG_FORMAT=%q: want json or text", sc.LogFormat)
	}
	if sc.TokensFile != "" {
		tokens, err := webhooks.ReadLines(sc.TokensFile)
		switch {
		case err != nil:
			bad("PANDABRIDGE_INGEST_TOKENS_FILE: %v", err)
		case len(tokens) == 0:
			bad("PANDABRIDGE_INGEST_TOKENS_FILE: %s holds no token", sc.TokensFile)
		}
		for i, t := range tokens {
			if len(t) < 16 {
				bad("PANDABRIDGE_INGEST_TOKENS_FILE: %s: token #%d has %d characters; use at least 16", sc.TokensFile, i+1, len(t))
			}
		}
		st.tokens = tokens
	}
	if sc.SecretsFile != "" {
		secrets, err := webhooks.ReadSecretsFile(sc.SecretsFile)
		if err != nil {
			bad("PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE: %v", err)
		}
		st.secrets = secrets
	}
	if sc.TokensFile == "" && sc.SecretsFile == "" && !sc.AllowUnauthenticated {
		bad("POST /events would accept anyone: set PANDABRIDGE_INGEST_TOKENS_FILE and/or PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE, " +
			"or PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED=true")
	}
	if sc.CallbackTokenFile != "" {
		s, err := webhooks.ReadLines(sc.CallbackTokenFile)
		switch {
		case err != nil:
			bad("PANDABRIDGE_CALLBACK_TOKEN_FILE: %v", err)
		case len(s) != 1:
			bad("PANDABRIDGE_CALLBACK_TOKEN_FILE: %s must hold exactly one token, found %d", sc.CallbackTokenFile, len(s))
		default:
			if err := callbacks.ValidateToken(s[0]); err != nil {
				bad("PANDABRIDGE_CALLBACK_TOKEN_FILE: %s: %v", sc.CallbackTokenFile, err)
			}
			st.callbackToken = s[0]
		}
	}
	if sc.WebhookTargetsFile != "" {
		targets, err := delivery.LoadTargets(sc.WebhookTargetsFile)
		if err != nil {
			bad("PANDABRIDGE_WEBHOOK_TARGETS_FILE: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		st.targets = targets
	}
	return st, errors.Join(errs...)
}

// serve runs the HTTP ingest, PandaPon's callback endpoint and the webhook
// deliveries until ctx is done, then shuts down gracefully and returns 0.
func (c *cli) serve(ctx context.Context, args []string) int {
	fs := c.newFlagSet("serve", "",
		"Serves HTTP on PANDABRIDGE_INGEST_ADDR (default :8081):\n"+
			"  POST /events                   CloudEvents over HTTP (binary, structured, batch) into JetStream\n"+
			"  POST /pandapon/callback/TOKEN  PandaPon's message callbacks (PANDABRIDGE_CALLBACK_TOKEN_FILE)\n"+
			"  GET  /healthz /readyz /metrics\n"+
			"and delivers refund.updated to the webhook targets of PANDABRIDGE_WEBHOOK_TARGETS_FILE.\n"+
			"Runs until interrupted. See docs/webhooks.md.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	var sc ServeConfig
	if err := envconf.Process(&sc); err != nil {
		fmt.Fprintf(c.stderr, "publisher serve: configuration: %v\n", err)
		return 2
	}
	st, err := sc.load()
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher serve: configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	opts := &slog.HandlerOptions{Level: st.level}
	var log *slog.Logger
	if sc.LogFormat == "text" {
		log = slog.New(slog.NewTextHandler(c.stderr, opts))
	} else {
		log = slog.New(slog.NewJSONHandler(c.stderr, opts))
	}
	if err := c.runServe(ctx, sc, st, log); err != nil {
		log.Error("publisher serve", "error", err)
		return 1
	}
	return 0
}

func (c *cli) runServe(ctx context.Context, sc ServeConfig, st serveSetup, log *slog.Logger) error {
	nc, err := c.dialServe(log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	topo := topology.New(c.cfg.SubjectPrefix)
	topo.Replicas, topo.MaxAge, topo.DuplicateWindow = sc.StreamReplicas, sc.StreamMaxAge, sc.DuplicateWindow
	cbSettings := callbacks.StreamSettings{Replicas: sc.StreamReplicas, MaxAge: sc.StreamMaxAge, DuplicateWindow: sc.DuplicateWindow}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	telemetry.RegisterBuildInfo(reg, "publisher")

	var auth *ingest.Auth
	if len(st.tokens) > 0 || len(st.secrets) > 0 {
		var v *webhooks.Verifier
		if len(st.secrets) > 0 {
			v = webhooks.NewVerifier(st.secrets, webhooks.WithTolerance(sc.SignatureTolerance))
		}
		auth = ingest.NewAuth(st.tokens, v)
	} else {
		log.Warn("POST /events accepts unauthenticated requests (PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED=true)")
	}
	mux := http.NewServeMux()
	mux.Handle("/events", ingest.New(ingest.Config{
		JetStream: js, Conn: nc, Subjects: topo.Subjects, MaxBytes: sc.MaxBytes,
		PublishTimeout: c.cfg.PublishTimeout, Auth: auth, Metrics: ingest.NewMetrics(reg), Logger: log,
	}))
	if st.callbackToken != "" {
		mux.Handle("/pandapon/callback/{token}", callbacks.New(callbacks.Config{
			JetStream: js, Conn: nc, Subjects: topo.Subjects, Token: st.callbackToken, Source: c.cfg.Source,
			Timeout: sc.CallbackTimeout, MaxBytes: sc.MaxBytes, Metrics: callbacks.NewMetrics(reg), Logger: log,
		}))
	}
	var deliverer *delivery.Deliverer
	if len(st.targets) > 0 {
		deliverer, err = delivery.New(nc, delivery.Config{
			Targets: st.targets, Topology: topo, DrainTimeout: sc.DrainTimeout,
			Metrics: delivery.NewMetrics(reg), Logger: log,
		})
		if err != nil {
			return err
		}
	}

	// Readiness: connected, streams in place (re-created if they vanish),
	// webhook consumers in place.
	var streamsOK atomic.Bool
	ensure := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := topo.EnsureStreams(ctx, js); err != nil {
			return err
		}
		if st.callbackToken != "" {
			return callbacks.EnsureStream(ctx, js, topo.Subjects, cbSettings)
		}
		return nil
	}
	ready := func() bool {
		return nc.IsConnected() && streamsOK.Load() && (deliverer == nil || deliverer.Ready())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: not connected to NATS with streams and webhook consumers in place", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	ln, err := net.Listen("tcp", sc.Addr)
	if err != nil {
		return fmt.Errorf("PANDABRIDGE_INGEST_ADDR=%q: %w", sc.Addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "events", "/events",
		"callbacks", st.callbackToken != "", "webhook_targets", len(st.targets), "authentication", auth != nil)

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		wait := 250 * time.Millisecond
		for {
			err := ensure(bg)
			streamsOK.Store(err == nil)
			if err != nil && bg.Err() == nil {
				log.Warn("setting up JetStream streams, will retry", "error", err)
			}
			if err == nil {
				wait = 2 * time.Second
			} else {
				wait = min(2*wait, 5*time.Second)
			}
			select {
			case <-bg.Done():
				return
			case <-time.After(wait):
			}
		}
	})
	// The deliverer stops with ctx, or when the HTTP server fails.
	dctx, stopDeliveries := context.WithCancel(ctx)
	defer stopDeliveries()
	if deliverer != nil {
		wg.Go(func() {
			if err := deliverer.Run(dctx); err != nil {
				log.Error("webhook deliveries stopped", "error", err)
			}
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	}
	log.Info("shutting down", "drain_timeout", sc.DrainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), sc.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP requests still running at the drain deadline", "error", err)
		_ = srv.Close()
	}
	stopBG()
	stopDeliveries()
	wg.Wait() // the deliverer drains within DrainTimeout
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("draining NATS connection", "error", err)
	}
	log.Info("shut down")
	return runErr
}

// dialServe connects to NATS for a long-running server: it starts even
// when NATS is unreachable (/readyz says 503 until connected), reconnects
// forever, and does not buffer publishes while disconnected, so that a
// request is answered 503 at once instead of waiting.
func (c *cli) dialServe(log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("pandabridge-publisher-serve"),
		nats.Timeout(c.cfg.PublishTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
	}
	opts = append(opts, natsconn.Logging(log, c.cfg.NATSURL)...)
	if c.cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.cfg.NATSCreds))
	}
	nc, err := nats.Connect(c.cfg.NATSURL, opts...)
	if err != nil {
		return nil, natsConnectError(c.cfg.NATSURL, err)
	}
	return nc, nil
}
