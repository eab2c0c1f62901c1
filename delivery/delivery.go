// Package delivery delivers refund.updated events to subscribers' HTTP
// URLs (webhooks out), for systems that cannot read NATS.
//
// Each configured Target gets its own durable pull consumer on the output
// stream, "pandabridge-webhook-<name>", filtered on <prefix>.refund.updated,
// and its own workers, HTTP client, concurrency cap and rate limit: a slow
// or dead target never delays another target, nor the PandaPon pipeline,
// which does not know the targets exist.
//
// # What a target receives
//
// One POST per event, a CloudEvent in binary content mode (the CloudEvents
// HTTP binding, header values verbatim as sdk-go writes them: ce-specversion, ce-id, ce-source, ce-type, ce-subject, ce-time,
// ce-causationid, ce-traceparent, ... headers; Content-Type
// application/json; the body is the event data, byte for byte), signed the
// Standard Webhooks way (package webhooks): webhook-id is the event id, so a
// receiver de-duplicates on it; webhook-timestamp and webhook-signature are
// computed afresh for each attempt. Redirects are not followed.
//
// # Retries, ordering, dead letters
//
//   - 2xx: delivered; the message is acknowledged.
//   - 410 Gone: the target says it will never take it; dead-lettered at once.
//   - Anything else (other status, timeout, network error): retried with
//     jittered exponential backoff (BackoffMin × 2^(attempt-1), capped at
//     BackoffMax, at least the target's Retry-After up to BackoffMax), until
//     Horizon has passed since the event was stored in the output stream;
//     the last attempt is made at the horizon, then the event is
//     dead-lettered to <prefix>.dlq.webhook.<name> with the reason.
//   - Events of one refund (the event subject) are delivered one at a time,
//     in stream order, within a process: while one is being retried, later
//     events of the same refund wait behind it, so a target never sees an
//     older state after a newer one. Other refunds go on, up to Concurrency
//     POSTs at once. Retries are waited for in the process (the message is
//     held and marked in progress every AckWait/3) rather than handed back
//     to the server, precisely to keep that order.
//   - An event is acknowledged only after the target answered 2xx (or it is
//     dead-lettered): if the process dies, the server redelivers it, and a
//     receiver sees the same webhook-id again.
//
// # Replay
//
// A dead letter is the original message byte for byte plus
// Pandabridge-Dlq-Reason, -Deliveries (POST attempts made), -Stream-Seq
// (its sequence in the stream it came from), Pandabridge-Dlq-Stream (that
// stream) and Pandabridge-Webhook-Target (the target name); its Nats-Msg-Id
// is "<event id>/webhook/<target>" so that two targets giving up on the same
// event at once both keep their dead letter. Replaying it, as the DLQ
// tooling does for any dead letter, publishes it to its original subject
// (events.Subjects.OriginalOfDeadLetter): <prefix>.webhook.<name>, which the
// stream <PREFIX>_WEBHOOKS stores and the target's second durable consumer,
// "pandabridge-webhook-<name>-replay", delivers to that target only, with a
// fresh horizon.
package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pull"
	"github.com/pandabridge/pandabridge/topology"
	"github.com/pandabridge/pandabridge/webhooks"
)

// Dead-letter headers: the contract's three (the same names as the
// pipeline's) and two more saying where the dead letter comes from.
const (
	HeaderDLQReason     = topology.HeaderDLQReason
	HeaderDLQDeliveries = topology.HeaderDLQDeliveries
	HeaderDLQStreamSeq  = topology.HeaderDLQStreamSeq
	// HeaderDLQStream names the stream the message was consumed from.
	HeaderDLQStream = "Pandabridge-Dlq-Stream"
	// HeaderWebhookTarget names the target a webhook dead letter was for.
	HeaderWebhookTarget = "Pandabridge-Webhook-Target"
)

// Defaults for Config fields left zero.
const (
	DefaultAckWait      = 30 * time.Second
	DefaultDrainTimeout = 20 * time.Second
	// UserAgent is sent with every POST.
	UserAgent = "pandabridge-webhooks/1"
	// consumerPrefix starts every target's durable consumer name.
	consumerPrefix = "pandabridge-webhook-"
	// maxResponseBody is how much of a response is read (then discarded)
	// so that the connection can be reused.
	maxResponseBody = 64 << 10
)

// ConsumerName is the durable consumer delivering the output stream to a
// target: "pandabridge-webhook-<name>".
func ConsumerName(target string) string { return consumerPrefix + target }

// ReplayConsumerName is the durable consumer delivering replays to a
// target: "pandabridge-webhook-<name>-replay".
func ReplayConsumerName(target string) string { return consumerPrefix + target + "-replay" }

// ReplaySubject is where replayed dead letters of a target are published:
// "<prefix>.webhook.<name>".
func ReplaySubject(s events.Subjects, target string) string { return s.Of("webhook." + target) }

// DeadLetterSubject is where a target's undeliverable events go:
// "<prefix>.dlq.webhook.<name>".
func DeadLetterSubject(s events.Subjects, target string) string {
	return s.DeadLetter(ReplaySubject(s, target))
}

// ReplayStreamName is the stream of replays: "<PREFIX>_WEBHOOKS".
func ReplayStreamName(s events.Subjects) string {
	p := s.Prefix
	if p == "" {
		p = events.DefaultSubjectPrefix
	}
	return strings.ToUpper(strings.ReplaceAll(p, "-", "_")) + "_WEBHOOKS"
}

// ReplayStreamConfig is the replay stream's configuration: every
// <prefix>.webhook.> subject, file storage, limits retention, the smallest
// de-duplication window (a replay repeated on purpose is delivered again).
func ReplayStreamConfig(topo topology.Topology) jetstream.StreamConfig {
	t := topology.New(topo.Subjects.Prefix)
	replicas, maxAge := topo.Replicas, topo.MaxAge
	if replicas <= 0 {
		replicas = t.Replicas
	}
	if maxAge <= 0 {
		maxAge = t.MaxAge
	}
	return jetstream.StreamConfig{
		Name:        ReplayStreamName(topo.Subjects),
		Description: "pandabridge: replayed webhook dead letters, one subject per target",
		Subjects:    []string{topo.Subjects.Of("webhook.>")},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      maxAge,
		Duplicates:  topology.DLQDuplicateWindow,
		Discard:     jetstream.DiscardOld,
	}
}

// Config configures a Deliverer.
type Config struct {
	// Targets to deliver to; each is validated and given its defaults.
	Targets []Target
	// Topology names the streams; its streams are created when missing,
	// with the replay stream.
	Topology topology.Topology
	// AckWait of the consumers (default 30s); held messages are marked in
	// progress every AckWait/3.
	AckWait time.Duration
	// DrainTimeout bounds shutdown: POSTs still running after it are
	// cancelled and their events handed back (default 20s).
	DrainTimeout time.Duration
	// Transport sends the POSTs (default: a clone of
	// http.DefaultTransport per target).
	Transport http.RoundTripper
	Logger    *slog.Logger
	Metrics   *Metrics
}

// Deliverer runs every target's consumers.
type Deliverer struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	m       *Metrics
	workers []*worker
	ready   atomic.Bool
}

// New returns a deliverer; it does no I/O. Targets are validated (errors
// name the target and field) and must each have a secret.
func New(nc *nats.Conn, cfg Config) (*Deliverer, error) {
	if err := ValidateTargets(cfg.Targets); err != nil {
		return nil, err
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	cfg.Topology = withDefaults(cfg.Topology)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	d := &Deliverer{cfg: cfg, nc: nc, js: js, log: cfg.Logger, m: cfg.Metrics}
	for _, t := range cfg.Targets {
		t.setDefaults()
		if t.Secret.IsZero() {
			return nil, fmt.Errorf("target %q: secretFile: no secret loaded", t.Name)
		}
		d.workers = append(d.workers, newWorker(d, t))
		// At 0 from the start, so that the first dead letter of a target
		// raises the increase()-based alert.
		for _, reason := range []string{"horizon", "gone", "invalid"} {
			cfg.Metrics.DeadLettered.WithLabelValues(t.Name, reason)
		}
	}
	return d, nil
}

// Ready reports whether every target's consumers are in place and NATS is
// connected.
func (d *Deliverer) Ready() bool { return d.ready.Load() && d.nc.IsConnected() }

// Run creates the streams and consumers (retrying while NATS is
// unavailable) and delivers until ctx is done; then it stops fetching, hands
// back events not being posted, lets running POSTs finish within
// DrainTimeout, and returns nil.
func (d *Deliverer) Run(ctx context.Context) error {
	if len(d.workers) == 0 {
		d.ready.Store(true)
		<-ctx.Done()
		return nil
	}
	wait := 250 * time.Millisecond
	for {
		err := d.setup(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		d.log.Warn("webhooks: setting up consumers, will retry", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
	d.ready.Store(true)
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { d.watch(ctx) })
	wg.Wait()
	d.ready.Store(false)
	return nil
}

// watchInterval is how often the streams and consumers are re-checked.
const watchInterval = 5 * time.Second

// watch re-ensures the streams and every target's consumers every
// watchInterval, so that a stream or durable deleted at runtime is
// recreated (a recreated durable starts from its target's deliver policy)
// and Ready tells the truth meanwhile.
func (d *Deliverer) watch(ctx context.Context) {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.setup(ctx); err != nil {
			if ctx.Err() == nil {
				d.ready.Store(false)
				d.log.Warn("webhooks: re-checking streams and consumers", "error", err)
			}
			continue
		}
		d.ready.Store(ctx.Err() == nil)
	}
}

func (d *Deliverer) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.cfg.Topology.EnsureStreams(ctx, d.js); err != nil {
		return err
	}
	rcfg := ReplayStreamConfig(d.cfg.Topology)
	if _, err := d.js.Stream(ctx, rcfg.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := d.js.CreateStream(ctx, rcfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("creating stream %s: %w", rcfg.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("looking up stream %s: %w", rcfg.Name, err)
	}
	for _, w := range d.workers {
		if err := w.ensure(ctx); err != nil {
			return err
		}
	}
	return nil
}

// worker delivers to one target.
type worker struct {
	d       *Deliverer
	t       Target
	label   string
	client  *http.Client
	limiter *rate.Limiter
	slots   chan struct{}
	held    chan struct{}
	cons    []source // guarded by mu; replaced, never modified, by ensure

	stopping   atomic.Bool
	stopCtx    context.Context // cancelled when shutdown starts
	stop       context.CancelFunc
	hardCtx    context.Context // cancelled at the drain deadline
	hardCancel context.CancelFunc
	wg         sync.WaitGroup

	mu       sync.Mutex
	keys     map[string][]*job
	inflight map[*job]struct{}
}

// source is one of a target's consumers.
type source struct {
	stream string
	cons   jetstream.Consumer
}

type job struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	e       event.Event
	header  http.Header // CloudEvents headers of the POST
	body    []byte
	invalid error
	release func()
}

func newWorker(d *Deliverer, t Target) *worker {
	tr := d.cfg.Transport
	if tr == nil {
		dt := http.DefaultTransport.(*http.Transport).Clone()
		dt.MaxIdleConnsPerHost = t.Concurrency
		tr = dt
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if t.RateLimit > 0 {
		lim = rate.NewLimiter(rate.Limit(t.RateLimit), t.Burst)
	}
	w := &worker{
		d: d, t: t, label: t.Name,
		client: &http.Client{Transport: tr, Timeout: t.Timeout.Duration,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		limiter:  lim,
		slots:    make(chan struct{}, t.Concurrency),
		held:     make(chan struct{}, t.MaxInFlight),
		keys:     map[string][]*job{},
		inflight: map[*job]struct{}{},
	}
	w.stopCtx, w.stop = context.WithCancel(context.Background())
	w.hardCtx, w.hardCancel = context.WithCancel(context.Background())
	return w
}

// ensure creates or updates the target's two consumers. The deliver policy
// of an existing consumer is kept (the server cannot change it).
func (w *worker) ensure(ctx context.Context) error {
	topo := w.d.cfg.Topology
	policy := jetstream.DeliverNewPolicy
	if w.t.DeliverPolicy == DeliverAll {
		policy = jetstream.DeliverAllPolicy
	}
	srcs := make([]source, 0, 2)
	for _, c := range []struct {
		stream, name, filter, desc string
		policy                     jetstream.DeliverPolicy
	}{
		{topo.OutputStream, ConsumerName(w.t.Name), topo.Subjects.Of(events.TypeRefundUpdated),
			"pandabridge webhooks: refund.updated to target " + w.t.Name, policy},
		{ReplayStreamName(topo.Subjects), ReplayConsumerName(w.t.Name), ReplaySubject(topo.Subjects, w.t.Name),
			"pandabridge webhooks: replayed dead letters to target " + w.t.Name, jetstream.DeliverAllPolicy},
	} {
		cfg := jetstream.ConsumerConfig{
			Durable:       c.name,
			Description:   c.desc,
			FilterSubject: c.filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: c.policy,
			AckWait:       w.d.cfg.AckWait,
			MaxDeliver:    -1, // the horizon decides, not a count
			MaxAckPending: max(1000, 4*w.t.MaxInFlight),
		}
		if existing, err := w.d.js.Consumer(ctx, c.stream, c.name); err == nil {
			old := existing.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("looking up consumer %s: %w", c.name, err)
		}
		cons, err := w.d.js.CreateOrUpdateConsumer(ctx, c.stream, cfg)
		if err != nil {
			return fmt.Errorf("creating consumer %s on stream %s: %w", c.name, c.stream, err)
		}
		srcs = append(srcs, source{stream: c.stream, cons: cons})
	}
	// Under mu: the watch re-ensures while run may be reading the sources.
	w.mu.Lock()
	w.cons = srcs
	w.mu.Unlock()
	return nil
}

// run fetches from both consumers until ctx is done, then shuts down.
func (w *worker) run(ctx context.Context) {
	log := w.d.log.With("target", w.t.Name)
	hb, stopHB := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { w.heartbeat(hb) })
	var fetchers sync.WaitGroup
	w.mu.Lock()
	srcs := w.cons
	w.mu.Unlock()
	for i, s := range srcs {
		// The first source is the output stream; the others (replays of
		// dead letters) are rare and fetch one message at a time, so that
		// their idle pulls do not hold the target's slots.
		batch := 1
		if i == 0 {
			batch = max(2*w.t.Concurrency, 1)
		}
		fetchers.Go(func() { w.fetch(ctx, s, batch, log) })
	}
	log.Info("webhooks: delivering", "concurrency", w.t.Concurrency, "rate_limit", w.t.RateLimit, "horizon", w.t.Horizon.Duration)
	fetchers.Wait()

	// Shutdown: fetching has stopped (the last pull ended within
	// pull.DefaultWait, so no message is left in a buffer); wake retries,
	// hand back what waits.
	w.stopping.Store(true)
	w.stop()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.d.cfg.DrainTimeout):
		log.Warn("webhooks: drain deadline reached, cancelling POSTs in flight", "drain_timeout", w.d.cfg.DrainTimeout)
		w.hardCancel()
		<-done
	}
	w.hardCancel()
	stopHB()
	bg.Wait()
	log.Info("webhooks: stopped")
}

// fetch pulls finite batches of at most maxBatch messages, never more than
// there are free in-flight slots: every message received is accepted at
// once and kept alive by the heartbeat, so none waits unobserved in a
// client buffer until its ack wait expires and it is delivered twice.
func (w *worker) fetch(ctx context.Context, s source, maxBatch int, log *slog.Logger) {
	pull.Loop(ctx, s.cons, pull.Options{Slots: w.held, MaxBatch: maxBatch, Logger: log.With("stream", s.stream)}, w.accept)
}

// heartbeat marks every held message in progress every AckWait/3.
func (w *worker) heartbeat(ctx context.Context) {
	t := time.NewTicker(w.d.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		held := make([]*job, 0, len(w.inflight))
		for j := range w.inflight {
			held = append(held, j)
		}
		w.mu.Unlock()
		for _, j := range held {
			_ = j.msg.InProgress()
		}
	}
}

// accept decodes a message, drops it when the target's filters exclude it,
// and otherwise queues it behind earlier events of the same refund.
func (w *worker) accept(msg jetstream.Msg) {
	j := &job{msg: msg, release: func() { <-w.held }}
	j.meta, _ = msg.Metadata()
	e, err := events.DecodeNATS(msg.Headers(), msg.Data())
	if err == nil {
		j.e = e
		err = j.prepare()
	}
	if err != nil {
		j.invalid = err
	} else if !w.matches(e) {
		_ = msg.Ack()
		j.release()
		w.d.m.Deliveries.WithLabelValues(w.label, "filtered").Inc()
		return
	}
	w.d.m.InFlight.WithLabelValues(w.label).Inc()
	w.mu.Lock()
	w.inflight[j] = struct{}{}
	key := ""
	if j.invalid == nil {
		key = j.e.Subject()
	}
	if key != "" {
		if q, busy := w.keys[key]; busy {
			w.keys[key] = append(q, j)
			w.mu.Unlock()
			return
		}
		w.keys[key] = nil
	}
	w.mu.Unlock()
	w.wg.Go(func() { w.runKey(key, j) })
}

// prepare renders the event as the headers and body of a binary-mode
// HTTP request once (the CloudEvents HTTP binding, header values verbatim as
// sdk-go writes them); each attempt copies them and signs anew.
func (j *job) prepare() error {
	h := http.Header{}
	ec := j.e.Context.AsV1()
	h.Set(events.HeaderPrefix+"specversion", event.CloudEventsVersionV1)
	h.Set(events.HeaderPrefix+"id", ec.ID)
	h.Set(events.HeaderPrefix+"source", ec.Source.String())
	h.Set(events.HeaderPrefix+"type", ec.Type)
	if ec.Subject != nil {
		h.Set(events.HeaderPrefix+"subject", *ec.Subject)
	}
	if ec.Time != nil && !ec.Time.IsZero() {
		h.Set(events.HeaderPrefix+"time", ec.Time.UTC().Format(time.RFC3339Nano))
	}
	if ec.DataSchema != nil {
		h.Set(events.HeaderPrefix+"dataschema", ec.DataSchema.String())
	}
	for name, v := range ec.Extensions {
		s, err := types.Format(v)
		if err != nil {
			return fmt.Errorf("extension %s: %w", name, err)
		}
		h.Set(events.HeaderPrefix+name, s)
	}
	ct := ec.GetDataContentType()
	if ct == "" {
		ct = events.ContentTypeJSON
	}
	h.Set(events.HeaderContentType, ct)
	j.header, j.body = h, j.e.Data()
	return nil
}

// withDefaults fills the zero fields of a topology as topology.New does.
func withDefaults(t topology.Topology) topology.Topology {
	d := topology.New(t.Subjects.Prefix)
	if t.InputStream == "" {
		t.InputStream = d.InputStream
	}
	if t.OutputStream == "" {
		t.OutputStream = d.OutputStream
	}
	if t.DLQStream == "" {
		t.DLQStream = d.DLQStream
	}
	if t.Durable == "" {
		t.Durable = d.Durable
	}
	if t.Replicas == 0 {
		t.Replicas = d.Replicas
	}
	if t.MaxAge == 0 {
		t.MaxAge = d.MaxAge
	}
	if t.DuplicateWindow == 0 {
		t.DuplicateWindow = d.DuplicateWindow
	}
	return t
}

// matches applies the target's refundIds and statuses filters.
func (w *worker) matches(e event.Event) bool {
	if len(w.t.RefundIDs) == 0 && len(w.t.Statuses) == 0 {
		return true
	}
	refundID := e.Subject()
	var view *pandapon.RefundView
	if refundID == "" || len(w.t.Statuses) > 0 {
		v, err := pandapon.ParseRefundView(e.Data())
		if err == nil {
			view = &v
			if refundID == "" {
				refundID = v.RefundID
			}
		}
	}
	if len(w.t.RefundIDs) > 0 && !slices.Contains(w.t.RefundIDs, refundID) {
		return false
	}
	if len(w.t.Statuses) > 0 {
		if view == nil || !view.RefundStatus.Valid || !slices.Contains(w.t.Statuses, view.RefundStatus.Value) {
			return false
		}
	}
	return true
}

// runKey delivers j and then every event queued behind it for the same
// refund, in order. Key "" has no queue.
func (w *worker) runKey(key string, j *job) {
	for j != nil {
		w.settle(j)
		if key == "" {
			return
		}
		w.mu.Lock()
		q := w.keys[key]
		if len(q) == 0 {
			delete(w.keys, key)
			j = nil
		} else {
			j, q[0] = q[0], nil
			w.keys[key] = q[1:]
		}
		w.mu.Unlock()
	}
}

// settle delivers one event: POST until 2xx, 410 or the horizon.
func (w *worker) settle(j *job) {
	start := time.Now()
	outcome, attrs := w.deliver(j)
	w.mu.Lock()
	delete(w.inflight, j)
	w.mu.Unlock()
	j.release()
	w.d.m.InFlight.WithLabelValues(w.label).Dec()
	w.d.m.Deliveries.WithLabelValues(w.label, outcome).Inc()
	level := slog.LevelInfo
	if outcome == "dead_lettered" || outcome == "retry" {
		level = slog.LevelWarn
	}
	id, refund := j.msg.Headers().Get(events.HeaderPrefix+"id"), ""
	if j.invalid == nil {
		id, refund = j.e.ID(), j.e.Subject()
	}
	w.d.log.LogAttrs(context.Background(), level, "webhook settled", append([]slog.Attr{
		slog.String("target", w.t.Name), slog.String("event_id", id), slog.String("refund_id", refund),
		slog.String("outcome", outcome), slog.Duration("duration", time.Since(start))}, attrs...)...)
}

// attemptResult classifies one POST.
type attemptResult struct {
	class      string // the "result" metric label
	status     int
	retryAfter time.Duration
	err        error
}

func (r attemptResult) delivered() bool { return r.status >= 200 && r.status < 300 }

func (r attemptResult) String() string {
	if r.err != nil {
		return r.class + ": " + r.err.Error()
	}
	return "HTTP " + strconv.Itoa(r.status)
}

func (w *worker) deliver(j *job) (string, []slog.Attr) {
	if w.stopping.Load() {
		_ = j.msg.Nak()
		return "handed_back", nil
	}
	if j.invalid != nil {
		return w.deadLetter(j, "invalid", "not a deliverable CloudEvent: "+j.invalid.Error(), 0)
	}
	stored := time.Now()
	if j.meta != nil {
		stored = j.meta.Timestamp
	}
	deadline := stored.Add(w.t.Horizon.Duration)
	var last attemptResult
	for attempt := 1; ; attempt++ {
		if w.stopping.Load() {
			_ = j.msg.Nak()
			return "handed_back", []slog.Attr{slog.Int("attempts", attempt-1)}
		}
		if err := w.limiter.Wait(w.stopCtx); err != nil {
			_ = j.msg.Nak()
			return "handed_back", []slog.Attr{slog.Int("attempts", attempt-1)}
		}
		select {
		case w.slots <- struct{}{}:
		case <-w.stopCtx.Done():
			_ = j.msg.Nak()
			return "handed_back", []slog.Attr{slog.Int("attempts", attempt-1)}
		}
		last = w.post(j)
		<-w.slots
		switch {
		case last.delivered():
			if err := j.msg.Ack(); err != nil {
				w.d.log.Warn("webhooks: ack failed; the event will be delivered again with the same webhook-id",
					"target", w.t.Name, "event_id", j.e.ID(), "error", err)
			}
			w.d.m.Latency.WithLabelValues(w.label).Observe(time.Since(stored).Seconds())
			return "delivered", []slog.Attr{slog.Int("attempts", attempt), slog.Int("status", last.status)}
		case last.status == http.StatusGone:
			return w.deadLetter(j, "gone", fmt.Sprintf("target %s answered 410 Gone on attempt %d: it will never accept this event", w.t.Name, attempt), attempt)
		}
		now := time.Now()
		if !now.Before(deadline) {
			return w.deadLetter(j, "horizon", fmt.Sprintf("not delivered to target %s within the horizon of %s after %d attempts; last attempt: %s",
				w.t.Name, w.t.Horizon.Duration, attempt, last), attempt)
		}
		delay := min(w.backoff(attempt, last.retryAfter), deadline.Sub(now))
		w.d.log.Debug("webhooks: attempt failed, will retry", "target", w.t.Name, "event_id", j.e.ID(),
			"attempt", attempt, "result", last.String(), "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-w.stopCtx.Done():
			t.Stop()
			_ = j.msg.Nak()
			return "handed_back", []slog.Attr{slog.Int("attempts", attempt), slog.String("last", last.String())}
		}
	}
}

// post makes one signed attempt.
func (w *worker) post(j *job) attemptResult {
	ctx, cancel := context.WithTimeout(w.hardCtx, w.t.Timeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.t.URL, bytes.NewReader(j.body))
	if err != nil {
		return w.record(attemptResult{class: "network", err: errors.New("building the request failed")}, 0)
	}
	for k, v := range j.header {
		req.Header[k] = slices.Clone(v)
	}
	req.Header.Set("User-Agent", UserAgent)
	webhooks.SetHeaders(req.Header, w.t.Secret, j.e.ID(), time.Now(), j.body)
	start := time.Now()
	resp, err := w.client.Do(req)
	took := time.Since(start)
	if err != nil {
		class := "network"
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			class = "timeout"
		}
		// The error may quote the URL, which may hold credentials (in a
		// form net/http rewrote, so matching the configured text is not
		// enough): keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return w.record(attemptResult{class: class, err: errors.New("POST [target URL]: " + redact(err.Error(), w.t.URL))}, took)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
	r := attemptResult{status: resp.StatusCode, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	switch {
	case r.delivered():
		r.class = "2xx"
	case resp.StatusCode == http.StatusGone:
		r.class = "410"
	case resp.StatusCode == http.StatusTooManyRequests:
		r.class = "429"
	default:
		r.class = strconv.Itoa(resp.StatusCode/100) + "xx"
	}
	return w.record(r, took)
}

func (w *worker) record(r attemptResult, took time.Duration) attemptResult {
	w.d.m.Attempts.WithLabelValues(w.label, r.class).Inc()
	w.d.m.AttemptSeconds.WithLabelValues(w.label).Observe(took.Seconds())
	return r
}

// redact removes the target URL (which may hold credentials) from s.
func redact(s, url string) string {
	if url == "" {
		return s
	}
	return strings.ReplaceAll(s, url, "[target URL]")
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// backoff is the wait after the n-th failed attempt: jittered exponential
// between BackoffMin and BackoffMax, at least Retry-After (capped).
func (w *worker) backoff(n int, after time.Duration) time.Duration {
	lo, hi := w.t.BackoffMin.Duration, w.t.BackoffMax.Duration
	ceil := lo << min(max(n-1, 0), 30)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	d := ceil/2 + rand.N(ceil/2+1)
	if after > d {
		d = min(after, hi)
	}
	return d
}

// deadLetter stores the original message with the reason on the target's
// dead-letter subject and terminates it. If the dead letter cannot be
// stored, the message is handed back for a later attempt: never dropped.
func (w *worker) deadLetter(j *job, kind, reason string, attempts int) (string, []slog.Attr) {
	subject := DeadLetterSubject(w.d.cfg.Topology.Subjects, w.t.Name)
	var seq uint64
	if j.meta != nil {
		seq = j.meta.Sequence.Stream
	}
	dl := topology.NewDeadLetter(subject, j.msg.Headers(), j.msg.Data(), reason, attempts, seq)
	dl.Header.Set(HeaderWebhookTarget, w.t.Name)
	id := j.msg.Headers().Get(events.HeaderMsgID)
	if j.invalid == nil {
		id = j.e.ID()
	}
	if j.meta != nil {
		dl.Header.Set(HeaderDLQStream, j.meta.Stream)
		if id == "" {
			id = j.meta.Stream + "-" + strconv.FormatUint(j.meta.Sequence.Stream, 10)
		}
	}
	dl.Header.Set(events.HeaderMsgID, id+"/webhook/"+w.t.Name)
	// Keep trying while the DLQ is unavailable: handing the event back
	// would let the refund's next event overtake it at the target. The
	// heartbeat keeps the message alive meanwhile; only shutdown hands it
	// back.
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := w.d.js.PublishMsg(ctx, dl)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			// The DLQ stream is gone: recreate it (existing streams are
			// left as they are).
			ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = w.d.cfg.Topology.EnsureStreams(ectx, w.d.js)
			ecancel()
		}
		delay := w.backoff(try, 0)
		w.d.log.Warn("webhooks: could not dead-letter, will try again", "target", w.t.Name, "error", err, "retry_in", delay)
		select {
		case <-w.stopCtx.Done():
			_ = j.msg.Nak()
			return "handed_back", []slog.Attr{slog.String("error", "could not dead-letter before shutdown: "+err.Error()), slog.String("dlq_reason", reason)}
		case <-time.After(delay):
		}
	}
	_ = j.msg.TermWithReason(truncate(reason, 200))
	w.d.m.DeadLettered.WithLabelValues(w.label, kind).Inc()
	return "dead_lettered", []slog.Attr{slog.String("dlq_subject", subject), slog.String("dlq_reason", reason), slog.Int("attempts", attempts)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
