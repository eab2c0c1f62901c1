package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/gcfloor"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/submitlease"
	"github.com/pandabridge/pandabridge/telemetry"
	"github.com/pandabridge/pandabridge/topology"
)

// The environment of a pandabench child. Besides these it reads the
// consumer's own variables: NATS_URL, PANDAPON_BASE_URL,
// PANDAPON_ACCESS_KEY, PANDAPON_ACCESS_SECRET, PANDABRIDGE_CONCURRENCY,
// PANDAPON_MAX_CONCURRENT, PANDAPON_RATE_LIMIT, PANDABRIDGE_SUBJECT_PREFIX,
// PANDABRIDGE_LOG_LEVEL.
const (
	envRole       = "PANDABENCH_ROLE"          // baseline, raw, inprocess
	envCPUProfile = "PANDABENCH_CPUPROFILE"    // file to write a CPU profile of the whole run to
	envPool       = "PANDABENCH_BASELINE_POOL" // Options.BaselinePool
)

// roleConfig is what every role reads from the environment.
type roleConfig struct {
	natsURL, baseURL     string
	accessKey, secret    string
	concurrency, maxConc int
	rateLimit            float64
	topo                 topology.Topology
	logLevel             slog.Level
	baselinePool         int
}

func readRoleConfig() (roleConfig, error) {
	c := roleConfig{
		natsURL:   os.Getenv("NATS_URL"),
		baseURL:   os.Getenv("PANDAPON_BASE_URL"),
		accessKey: os.Getenv("PANDAPON_ACCESS_KEY"),
		secret:    os.Getenv("PANDAPON_ACCESS_SECRET"),
		topo:      topology.New(orDefault(os.Getenv("PANDABRIDGE_SUBJECT_PREFIX"), events.DefaultSubjectPrefix)),
		logLevel:  slog.LevelWarn,
	}
	var err error
	if c.concurrency, err = strconv.Atoi(orDefault(os.Getenv("PANDABRIDGE_CONCURRENCY"), "32")); err != nil || c.concurrency < 1 {
		return c, fmt.Errorf("PANDABRIDGE_CONCURRENCY: want a positive integer")
	}
	if c.maxConc, err = strconv.Atoi(orDefault(os.Getenv("PANDAPON_MAX_CONCURRENT"), "0")); err != nil {
		return c, fmt.Errorf("PANDAPON_MAX_CONCURRENT: want an integer")
	}
	if c.maxConc == 0 {
		c.maxConc = c.concurrency
	}
	if c.rateLimit, err = strconv.ParseFloat(orDefault(os.Getenv("PANDAPON_RATE_LIMIT"), "50"), 64); err != nil {
		return c, fmt.Errorf("PANDAPON_RATE_LIMIT: want a number")
	}
	if c.baselinePool, err = strconv.Atoi(orDefault(os.Getenv(envPool), "0")); err != nil || c.baselinePool < -1 {
		return c, fmt.Errorf("%s: want -1, 0 or a positive integer", envPool)
	}
	if l := os.Getenv("PANDABRIDGE_LOG_LEVEL"); l != "" {
		if err := c.logLevel.UnmarshalText([]byte(l)); err != nil {
			return c, fmt.Errorf("PANDABRIDGE_LOG_LEVEL: %w", err)
		}
	}
	if c.natsURL == "" || c.baseURL == "" {
		return c, errors.New("NATS_URL and PANDAPON_BASE_URL are required")
	}
	return c, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// writeProfile writes the named runtime/pprof profile to path.
func writeProfile(path, name string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("writing the %s profile: %w", name, err)
	}
	return f.Close()
}

// startCPUProfile starts a CPU profile of this process into path; stop
// ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runRole runs this process as a contestant until SIGTERM or SIGINT.
func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := readRoleConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pandabench -role %s: %v\n", role, err)
		return 2
	}
	if path := os.Getenv(envCPUProfile); path != "" {
		stopProfile, err := startCPUProfile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pandabench: %v\n", err)
			return 1
		}
		defer func() {
			stopProfile()
			// Next to it, where the run's allocations came from (sampled
			// at runtime.MemProfileRate): go tool pprof -sample_index
			// alloc_space. The profile covers allocations up to the last
			// completed collection, hence one more.
			runtime.GC()
			if err := writeProfile(strings.TrimSuffix(path, ".pprof")+".allocs.pprof", "allocs"); err != nil {
				fmt.Fprintf(os.Stderr, "pandabench: %v\n", err)
			}
		}()
	}
	switch role {
	case contBaseline:
		err = runBaseline(ctx, cfg)
	case contRaw:
		err = runRaw(ctx, cfg)
	case contInProcess:
		err = runInProcess(ctx, cfg)
	default:
		err = fmt.Errorf("unknown role %q (want baseline, raw, inprocess)", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pandabench -role %s: %v\n", role, err)
		return 1
	}
	return 0
}

// ensure creates the streams (when missing) and the durable pull consumer
// the way anyone would: explicit acks, every input subject, nats.go's
// defaults for the rest (AckWait 30 s, MaxAckPending 1000).
func ensure(ctx context.Context, js jetstream.JetStream, topo topology.Topology) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := topo.EnsureStreams(ctx, js); err != nil {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, topo.InputStream, jetstream.ConsumerConfig{
		Durable:        topo.Durable,
		FilterSubjects: topo.Subjects.Inputs(),
		AckPolicy:      jetstream.AckExplicitPolicy,
	})
}

// runBaseline is the straightforward pipeline, written the obvious way:
//
//   - one durable pull consumer, cons.Consume handing messages to C worker
//     goroutines over an unbuffered channel;
//   - each worker: events.DecodeNATS + events.ParseInput, a GET
//     /open/order/refund/query signed with pandapon.Credentials.SignRequest
//     through one http.Client with a 10 s timeout and Go's default
//     transport, whose pool keeps 2 idle connections per host (with
//     -baseline-pool, a clone keeping C or n), io.ReadAll, json.Unmarshal
//     of the envelope (data kept raw, as the output must carry it byte for
//     byte), then
//     events.NewRefundUpdated + events.EncodeNATS, a synchronous
//     js.PublishMsg, and msg.Ack();
//   - any failure: msg.Nak() (redelivered at once). No retries, no rate
//     limit, no ordering per refund, no metrics, no logging per event.
func runBaseline(ctx context.Context, cfg roleConfig) error {
	nc, err := nats.Connect(cfg.natsURL, nats.Name("pandabench-baseline"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := ensure(ctx, js, cfg.topo)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if pool := cfg.baselinePool; pool != 0 {
		if pool < 0 {
			pool = cfg.concurrency
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = max(tr.MaxIdleConns, pool)
		tr.MaxIdleConnsPerHost = pool
		client.Transport = tr
	}
	creds := pandapon.Credentials{AccessKey: cfg.accessKey, AccessSecret: pandapon.Secret(cfg.secret)}
	outSubject := cfg.topo.Subjects.Of(events.TypeRefundUpdated)
	queryURL := cfg.baseURL + "/open/order/refund/query?refundId="

	msgs := make(chan jetstream.Msg)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	})
	if err != nil {
		return err
	}
	handle := func(m jetstream.Msg) error {
		e, err := events.DecodeNATS(m.Headers(), m.Data())
		if err != nil {
			return err
		}
		in, err := events.ParseInput(e)
		if err != nil {
			return err
		}
		if in.Lookup == nil {
			return fmt.Errorf("baseline handles lookups only, got %s", e.Type())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, queryURL+url.QueryEscape(in.RefundID()), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		creds.SignRequest(req.Header, time.Now())
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var env pandapon.Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			return err
		}
		if env.Code.Value != pandapon.CodeSuccess {
			return fmt.Errorf("PandaPon code %d: %s", env.Code.Value, env.Msg)
		}
		out := events.NewRefundUpdated(e, handlers.DefaultSource, in.RefundID(), env.Data, time.Now())
		msg, err := events.EncodeNATS(outSubject, out)
		if err != nil {
			return err
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return err
		}
		return m.Ack()
	}
	var wg sync.WaitGroup
	for range cfg.concurrency {
		wg.Go(func() {
			for {
				select {
				case m := <-msgs:
					if err := handle(m); err != nil {
						_ = m.Nak()
						fmt.Fprintf(os.Stderr, "baseline: %v\n", err)
					}
				case <-ctx.Done():
					return
				}
			}
		})
	}
	<-ctx.Done()
	cc.Stop()
	wg.Wait()
	return nc.Drain()
}

// runRaw is the JetStream ceiling: pull consume, async publish of a canned
// output of the same size as PandaPon's data, ack each input once its
// output is stored. No HTTP, no CloudEvent decoding.
func runRaw(ctx context.Context, cfg roleConfig) error {
	nc, err := nats.Connect(cfg.natsURL, nats.Name("pandabench-raw"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	cons, err := ensure(ctx, js, cfg.topo)
	if err != nil {
		return err
	}
	payload := make([]byte, 2600)
	for i := range payload {
		payload[i] = 'x'
	}
	outSubject := cfg.topo.Subjects.Of(events.TypeRefundUpdated)
	type pending struct {
		f jetstream.PubAckFuture
		m jetstream.Msg
	}
	acks := make(chan pending, 4096)
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		for p := range acks {
			select {
			case <-p.f.Ok():
				_ = p.m.Ack()
			case <-p.f.Err():
				_ = p.m.Nak()
			}
		}
	}()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		h := m.Headers()
		id := hdr(h, "ce-id")
		out := &nats.Msg{Subject: outSubject, Data: payload, Header: nats.Header{
			events.HeaderMsgID: {"raw-" + id},
			"ce-type":          {events.TypeRefundUpdated},
			"ce-subject":       {refundIDOf(m.Data())},
			events.HeaderPrefix + events.ExtCausationID: {id},
		}}
		for {
			f, err := js.PublishMsgAsync(out)
			if err == nil {
				acks <- pending{f, m}
				return
			}
			if ctx.Err() != nil {
				_ = m.Nak()
				return
			}
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Second):
	}
	close(acks)
	<-ackDone
	return nc.Drain()
}

// refundIDOf reads {"refundId":"..."} of a lookup input without a JSON
// decoder (the raw ceiling decodes nothing).
func refundIDOf(data []byte) string {
	const key = `"refundId":"`
	s := string(data)
	for i := 0; i+len(key) <= len(s); i++ {
		if s[i:i+len(key)] == key {
			rest := s[i+len(key):]
			for j := 0; j < len(rest); j++ {
				if rest[j] == '"' {
					return rest[:j]
				}
			}
		}
	}
	return ""
}

// runInProcess wires the consumer's engine exactly as cmd/consumer's serve
// does (pandapon client, handlers, pipeline with a Prometheus registry, JSON
// slog), minus the /healthz and /metrics listener, so that it can be
// profiled with runtime/pprof.
func runInProcess(ctx context.Context, cfg roleConfig) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	// As cmd/consumer's startGCFloor: a floor when set, unless GOGC is.
	if v := os.Getenv("PANDABRIDGE_GC_HEAP_FLOOR"); v != "" && os.Getenv("GOGC") == "" {
		floor, err := gcfloor.ParseSize(v)
		if err != nil {
			return fmt.Errorf("PANDABRIDGE_GC_HEAP_FLOOR: %w", err)
		}
		defer gcfloor.Start(floor).Stop()
	}
	tp, shutdownTracing, err := telemetry.SetupTracing(ctx, "pandabridge-consumer")
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	telemetry.RegisterBuildInfo(reg, "consumer")
	metrics := pipeline.NewMetrics(reg)
	ppMetrics := telemetry.NewPandaPonMetrics(reg)
	// The consumer's defaults (cmd/consumer/config.go) for what the
	// benchmark does not set.
	client, err := pandapon.New(pandapon.Config{
		BaseURL: cfg.baseURL,
		Credentials: pandapon.Credentials{
			AccessKey: cfg.accessKey, AccessSecret: pandapon.Secret(cfg.secret), TimestampUnit: pandapon.Milliseconds,
		},
		RateLimit:      cfg.rateLimit,
		MaxConcurrent:  cfg.maxConc,
		AttemptTimeout: 10 * time.Second,
		MaxRetries:     3,
		RetryAfterMax:  10 * time.Second,
		Breaker:        pandapon.BreakerConfig{ConsecutiveFailures: 20, OpenTimeout: 30 * time.Second, HalfOpenRequests: 1},
		Observer:       ppMetrics,
		TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	ppMetrics.RefreshCircuitWith(func() { client.CircuitState() })
	nc, err := nats.Connect(cfg.natsURL,
		nats.Name("pandabridge-consumer"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	h := &handlers.Handler{PandaPon: client, Source: handlers.DefaultSource, Subjects: cfg.topo.Subjects,
		Leases: submitlease.New(js, cfg.topo.SubmissionsBucket)}
	p, err := pipeline.New(nc, h, pipeline.Config{
		Topology:       cfg.topo,
		Concurrency:    cfg.concurrency,
		Logger:         log,
		Metrics:        metrics,
		TracerProvider: tp,
		Gate:           client,
	})
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return err
	}
	return nc.Drain()
}
