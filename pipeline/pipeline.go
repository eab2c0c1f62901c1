// Package pipeline moves input events from JetStream through a handler and
// publishes its outputs: the engine of cmd/consumer.
//
// Guarantees, for each input message:
//   - it is acknowledged only after every output it produced is stored by
//     JetStream (outputs carry a deterministic Nats-Msg-Id, so a redelivered
//     input yields no second copy within the output stream's duplicate
//     window);
//   - an input that can never be processed (not a CloudEvent, unknown type,
//     invalid data) is published at once to the dead-letter subject, byte for
//     byte with Pandabridge-Dlq-* headers, then terminated;
//   - a transient failure is redelivered with exponential backoff
//     (NakWithDelay, at least the server's Retry-After); on the
//     MaxDeliveries-th failed delivery it is dead-lettered instead; one
//     whose outcome is unknown (*handlers.UnknownOutcomeError: a submission
//     PandaPon may still be carrying out) no sooner than its RecheckAfter,
//     also when the drain deadline cut it off;
//   - a dead letter that cannot be stored (the dead-letter stream is
//     unavailable or full) is tried again on every redelivery, with the
//     backoff, until it is: the server's own delivery limit is off, so it
//     never gives up on a message silently. One too large to store whole
//     is stored without its payload (Pandabridge-Dlq-Payload-Omitted);
//   - a message is never left unacknowledged long enough for the server to
//     redeliver it while it is still held: every held message is marked in
//     progress every AckWait/3;
//   - inputs for one refund are handled one at a time in arrival order;
//     different refunds run concurrently, up to Concurrency at once.
//
// Nothing is lost if the process dies at any instant: an input whose ack did
// not reach the server is redelivered, and handling it again is idempotent.
//
// How it runs: a fetch loop pulls only as many messages as there are free
// MaxInFlight slots (explicit finite pull requests, so no prefetched message
// waits unobserved); a fixed pool of Concurrency workers runs the handler
// for the head input of each refund; outputs are published asynchronously
// and a single acker goroutine waits for their PubAcks in order, then acks
// the input and lets the refund's next input run. A worker is therefore
// free again as soon as PandaPon has answered, not a broker round trip
// later.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pull"
	"github.com/pandabridge/pandabridge/topology"
)

// Dead-letter headers added to the original message (contract; defined
// with the dead-letter format in topology).
const (
	HeaderDLQReason     = topology.HeaderDLQReason
	HeaderDLQDeliveries = topology.HeaderDLQDeliveries
	HeaderDLQStreamSeq  = topology.HeaderDLQStreamSeq
)

// Defaults for Config fields left zero.
const (
	DefaultConcurrency    = 32
	DefaultAckWait        = 30 * time.Second
	DefaultMaxDeliveries  = 5
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 5 * time.Minute
	DefaultHandlerTimeout = time.Minute
	DefaultDrainTimeout   = 20 * time.Second
	// minMaxAckPending is the least MaxAckPending of the durable consumer.
	// An input waiting for a delayed redelivery (after a transient failure)
	// holds one of these server-side slots until its delay ends: after a
	// PandaPon outage, more waiting inputs than MaxAckPending would keep
	// new ones from being delivered although every replica is idle. (It
	// was JetStream's default, 1000, until the operator trial of
	// 2026-12-07 showed that.) The server's cost per slot is small.
	minMaxAckPending = 10000
)

// Handler is what the pipeline runs for each valid input.
type Handler interface {
	Handle(ctx context.Context, in events.Input) ([]handlers.Output, error)
}

// Config configures a Pipeline.
type Config struct {
	Topology topology.Topology
	// Concurrency is how many inputs are handled at once (default 32).
	Concurrency int
	// MaxInFlight caps inputs this process has received and not yet
	// settled, including those waiting behind an earlier input for the same
	// refund (default 2 × Concurrency: enough to keep every worker busy
	// while some refunds wait, without holding more memory and ack waits).
	// The durable consumer's MaxAckPending, shared by all replicas, is set
	// to max(10000, 4 × (MaxInFlight + MaxQueued)).
	MaxInFlight int
	// MaxQueued caps inputs waiting behind an earlier input of the same
	// refund that do not count against MaxInFlight (default
	// 4 × MaxInFlight). Without it one refund with a backlog could fill
	// every MaxInFlight slot and idle the workers while other refunds'
	// inputs wait on the server; beyond it, further queued inputs hold a
	// MaxInFlight slot again, which is what finally slows fetching down.
	MaxQueued int
	// AckWait is the consumer's ack wait (default 30 s); held messages are
	// marked in progress every AckWait/3.
	AckWait time.Duration
	// MaxDeliveries is how many deliveries a transiently failing input gets
	// before it is dead-lettered (default 5).
	MaxDeliveries int
	// BackoffMin and BackoffMax bound the redelivery delay after a
	// transient failure: a ceiling of BackoffMin × 2^(delivery-1), capped
	// at BackoffMax, and a delay drawn uniformly between half the ceiling
	// and the ceiling (defaults 1 s and 5 min).
	BackoffMin, BackoffMax time.Duration
	// HandlerTimeout bounds one handling, PandaPon retries included
	// (default 1 min).
	HandlerTimeout time.Duration
	// DrainTimeout bounds shutdown: handlers still running after it are
	// cancelled and their inputs handed back (default 20 s).
	DrainTimeout time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	// OnPublished, if set, is called after each output is stored.
	OnPublished func(subject string, e event.Event)
	// TracerProvider traces each handling as a consumer span continuing the
	// input's traceparent (nil: no tracing, no cost).
	TracerProvider trace.TracerProvider
	// Gate, when set, paces the pulls beyond free slots (pull.Gate). The
	// consumer passes the PandaPon client: while PandaPon's circuit breaker
	// is open nothing is pulled, so inputs wait in the stream instead of
	// using up MaxDeliveries on refusals, and one input at a time is pulled
	// as a probe while it is half-open and until a first call succeeds.
	// nil: pulls are bounded by free slots only.
	Gate pull.Gate
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2 * c.Concurrency
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 4 * c.MaxInFlight
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliveries <= 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
}

// Pipeline consumes the input stream with one durable pull consumer.
type Pipeline struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	repeats jetstream.JetStream // for outputs published again (awaitPubAck)
	handler Handler
	log     *slog.Logger
	m       *Metrics
	tracer  trace.Tracer
	tracing bool

	ready    atomic.Bool
	stopping atomic.Bool
	ackFloor atomic.Uint64 // the consumer's ack floor at watchConsumer's last poll

	held     chan struct{} // MaxInFlight slots
	runnable chan *job     // head inputs of their refund, for the workers
	acks     chan *pending // published inputs waiting for their PubAcks, in order
	jobs     sync.WaitGroup

	mu       sync.Mutex
	keys     map[string][]*job // inputs queued behind a busy refund; presence = busy
	queued   int               // queued inputs that gave their MaxInFlight slot back
	inflight map[*job]struct{} // held messages, for in-progress signals

	// drain is the parent of every handler's context; cancelRunning
	// cancels it with errDrainDeadline. One context for all, rather than
	// one per input, keeps a cancelCtx and a map entry off the hot path.
	drain       context.Context
	cancelDrain context.CancelCauseFunc
}

// job is one received input message.
type job struct {
	msg      jetstream.Msg
	received time.Time
	meta     *jetstream.MsgMetadata
	in       events.Input
	key      string // refund id; "" for an undecodable message
	typ      string // event type for labels ("unknown" when undecodable)
	invalid  error  // set when the message can never be processed
	queued   bool   // waiting behind its refund without a MaxInFlight slot
}

// pending is an input whose outputs were sent with PublishMsgAsync.
type pending struct {
	j       *job
	futures []jetstream.PubAckFuture
	outs    []handlers.Output
	span    trace.Span
	sent    time.Time // when the futures were published
}

// New returns a pipeline reading from nc with h. It does no I/O.
func New(nc *nats.Conn, h Handler, cfg Config) (*Pipeline, error) {
	cfg.setDefaults()
	// Outputs are published asynchronously, at most one per input in
	// flight. An output whose PubAck is late is published again through
	// repeats, a context with its own limit, so that a full pipeline whose
	// PubAcks were all lost can still repeat them; when the repeat's PubAck
	// wins, the input is done while its first publish stays pending (until
	// publishTimeout), hence twice the limit here.
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(2*cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	repeats, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	_, noopTracing := cfg.TracerProvider.(noop.TracerProvider)
	p := &Pipeline{
		cfg: cfg, nc: nc, js: js, repeats: repeats, handler: h, log: cfg.Logger, m: cfg.Metrics,
		tracer:   cfg.TracerProvider.Tracer("github.com/pandabridge/pandabridge/pipeline"),
		tracing:  !noopTracing,
		held:     make(chan struct{}, cfg.MaxInFlight),
		runnable: make(chan *job, cfg.MaxInFlight),
		acks:     make(chan *pending, cfg.MaxInFlight),
		keys:     map[string][]*job{},
		inflight: map[*job]struct{}{},
	}
	p.drain, p.cancelDrain = context.WithCancelCause(context.Background())
	ready := p.Ready
	cfg.Metrics.ready.Store(&ready)
	return p, nil
}

// publishTimeout bounds the wait for a PubAck, and a dead letter's publish.
const publishTimeout = 10 * time.Second

// Ready reports whether the pipeline is connected to NATS with its streams
// and consumer in place (the /readyz condition).
func (p *Pipeline) Ready() bool {
	return p.ready.Load() && !p.stopping.Load() && p.nc.IsConnected()
}

// Run sets up the streams and the consumer (retrying while NATS is
// unavailable) and consumes until ctx is done. Then it stops fetching, hands
// back inputs not yet started, lets running handlers finish within
// DrainTimeout, waits for the outputs' PubAcks and acks, flushes, and
// returns nil. It returns an error only when it cannot consume at all.
func (p *Pipeline) Run(ctx context.Context) error {
	cons, err := p.setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	bg, stopBG := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	bgWG.Go(func() { p.heartbeat(bg) })
	bgWG.Go(func() { p.watchConsumer(bg, cons) })
	var workers sync.WaitGroup
	for range p.cfg.Concurrency {
		workers.Go(p.work)
	}
	ackerDone := make(chan struct{})
	go func() { p.acker(); close(ackerDone) }()

	p.log.Info("consuming", "stream", p.cfg.Topology.InputStream, "consumer", p.cfg.Topology.Durable,
		"concurrency", p.cfg.Concurrency, "max_in_flight", p.cfg.MaxInFlight)
	p.fetchLoop(ctx, cons)

	// Shutdown: fetching has stopped; inputs not started are handed back
	// by the workers (stopping), running ones finish or are cancelled.
	p.stopping.Store(true)
	p.ready.Store(false)
	done := make(chan struct{})
	go func() { p.jobs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.DrainTimeout):
		p.cancelRunning()
		p.log.Warn("drain deadline reached, cancelled running handlers", "drain_timeout", p.cfg.DrainTimeout)
		<-done
	}
	close(p.runnable)
	workers.Wait()
	close(p.acks)
	<-ackerDone
	stopBG()
	bgWG.Wait()
	if err := p.nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.log.Warn("flushing acks", "error", err)
	}
	p.log.Info("stopped consuming")
	return nil
}

// fetchLoop pulls inputs while ctx lasts, never more than there are free
// MaxInFlight slots, gathering a quarter of them while busy: a pull costs
// the broker about as much as a message.
func (p *Pipeline) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	pull.Loop(ctx, cons, pull.Options{
		Slots:    p.held,
		MaxBatch: 256,
		MinBatch: p.cfg.MaxInFlight / 4,
		Logger:   p.log.With("stream", p.cfg.Topology.InputStream),
		Gate:     p.cfg.Gate,
	}, p.accept)
}

// setup ensures streams and consumer, retrying with backoff until it works
// or ctx ends.
func (p *Pipeline) setup(ctx context.Context) (jetstream.Consumer, error) {
	wait := 250 * time.Millisecond
	for {
		cons, err := p.ensure(ctx, 0)
		if err == nil {
			p.ready.Store(true)
			return cons, nil
		}
		p.log.Warn("setting up JetStream, will retry", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// ensure creates what is missing; a consumer it has to create starts at
// stream sequence startSeq (0: the first stored message).
func (p *Pipeline) ensure(ctx context.Context, startSeq uint64) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.cfg.Topology.EnsureStreams(ctx, p.js); err != nil {
		return nil, err
	}
	return p.cfg.Topology.EnsureConsumer(ctx, p.js, topology.ConsumerSettings{
		AckWait: p.cfg.AckWait,
		// The pipeline counts deliveries and dead-letters; a server-side
		// limit would strand a message whose dead letter could not be
		// stored (the server stops delivering it, nobody settles it).
		MaxDeliver: -1,
		// Each process bounds what it holds (MaxInFlight); the server-wide
		// cap only has to leave room for every replica's share.
		MaxAckPending: max(minMaxAckPending, 4*(p.cfg.MaxInFlight+p.cfg.MaxQueued)),
		StartSeq:      startSeq,
	})
}

// watchConsumer polls the consumer's info and the streams every 2 s: it
// keeps Ready truthful (a stream or the consumer may be deleted, NATS may
// restart), recreates what is missing, and updates the lag gauges.
//
// It remembers the consumer's ack floor in the input stream (the highest
// sequence up to which every input is acknowledged), so that a consumer an
// operator deleted (or whose state was lost) is recreated delivering from
// just after it, not from the stream's first message: everything it had
// acknowledged (up to 7 days of inputs) would otherwise be handled again.
// Inputs acknowledged above the floor (after the last poll, or while an
// earlier input waits for its redelivery) are handled again, harmlessly,
// and inputs waiting for a delayed redelivery come back at once (the
// submission leases still hold a return parcel back). If the input stream
// itself was recreated meanwhile (its creation time changed), its
// sequences mean nothing and delivery starts at its first message.
func (p *Pipeline) watchConsumer(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var streamBorn time.Time   // the input stream's creation time, read once per consumer
	var consumerBorn time.Time // that consumer's creation time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(ictx)
		if err == nil {
			// The output and dead-letter streams matter as much: without
			// them every input would fail. EnsureStreams recreates a
			// missing one and leaves existing ones alone.
			err = p.cfg.Topology.EnsureStreams(ictx, p.js)
		}
		if err == nil && !info.Created.Equal(consumerBorn) {
			// A consumer cannot outlive its stream: the stream it reads is
			// the same as long as the consumer is.
			if s, serr := p.js.Stream(ictx, p.cfg.Topology.InputStream); serr == nil {
				streamBorn, consumerBorn = s.CachedInfo().Created, info.Created
			}
		}
		if err == nil && info.Created.Equal(consumerBorn) {
			p.ackFloor.Store(info.AckFloor.Stream)
		}
		cancel()
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				// Recreate what an operator or a store loss removed.
				start, rerr := p.resumeAt(ctx, p.ackFloor.Load(), streamBorn)
				if rerr == nil {
					_, rerr = p.ensure(ctx, start)
				}
				if rerr != nil {
					p.log.Warn("recreating consumer, will retry", "error", rerr)
				}
			}
			if ctx.Err() == nil {
				p.ready.Store(false)
			}
			continue
		}
		if !p.stopping.Load() {
			p.ready.Store(true)
		}
		p.m.ConsumerPending.Set(float64(info.NumPending))
		p.m.ConsumerAckPending.Set(float64(info.NumAckPending))
	}
}

// resumeAt is where a recreated consumer starts: just after floor if the
// input stream is still the one floor was read from, else 0 (its first
// message; also when the stream is gone). An error (the stream cannot be
// looked up, say during a leader election) means: do not recreate it now,
// a guess of 0 would replay the whole stream.
func (p *Pipeline) resumeAt(ctx context.Context, floor uint64, streamBorn time.Time) (uint64, error) {
	if floor == 0 {
		return 0, nil
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := p.js.Stream(ictx, p.cfg.Topology.InputStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking up stream %s: %w", p.cfg.Topology.InputStream, err)
	}
	if !s.CachedInfo().Created.Equal(streamBorn) {
		return 0, nil
	}
	p.log.Warn("the durable consumer is gone: recreating it after its last known ack floor",
		"consumer", p.cfg.Topology.Durable, "stream", p.cfg.Topology.InputStream, "start_seq", floor+1)
	return floor + 1, nil
}

// heartbeat marks every held message in progress every AckWait/3, so that
// neither a slow PandaPon nor a queue behind one refund lets the ack wait
// expire.
func (p *Pipeline) heartbeat(ctx context.Context) {
	t := time.NewTicker(p.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Under the lock: settling a message untracks it first (settleMsg),
		// so no in-progress signal can follow its Nak and undo the delay.
		// InProgress only buffers a publish, so the lock is held briefly.
		p.mu.Lock()
		for j := range p.inflight {
			_ = j.msg.InProgress()
		}
		p.mu.Unlock()
	}
}

// settleMsg stops the in-progress signals for j, then acks, naks or
// terminates its message with action.
func (p *Pipeline) settleMsg(j *job, action func() error) error {
	p.mu.Lock()
	delete(p.inflight, j)
	p.mu.Unlock()
	return action()
}

// accept decodes a message (it holds a MaxInFlight slot) and makes it
// runnable, or queues it behind the input being handled for the same refund.
func (p *Pipeline) accept(msg jetstream.Msg) {
	j := &job{msg: msg, received: time.Now(), typ: "unknown"}
	j.meta, _ = msg.Metadata()
	e, err := events.DecodeNATS(msg.Headers(), msg.Data())
	if err == nil {
		j.typ = labelType(e.Type())
		j.in, err = events.ParseInput(e)
	}
	if err != nil {
		j.invalid = err
	} else {
		j.key = j.in.RefundID()
	}
	p.jobs.Add(1)
	p.m.InFlight.Inc()
	p.mu.Lock()
	p.inflight[j] = struct{}{}
	if j.key != "" {
		if q, busy := p.keys[j.key]; busy {
			gaveBack := p.queued < p.cfg.MaxQueued
			if gaveBack {
				j.queued = true
				p.queued++
			}
			p.keys[j.key] = append(q, j)
			p.mu.Unlock()
			if gaveBack {
				// Its slot goes back to fetching other refunds. (Not
				// j.queued: finish may already have made j runnable.)
				<-p.held
			}
			return
		}
		p.keys[j.key] = nil
	}
	p.mu.Unlock()
	p.runnable <- j // never blocks: capacity MaxInFlight
}

// work is one of the Concurrency workers.
func (p *Pipeline) work() {
	for j := range p.runnable {
		if pd, st := p.settle(j); pd != nil {
			p.acks <- pd // never blocks: capacity MaxInFlight
		} else {
			p.finish(j, st)
		}
	}
}

// acker waits for the PubAcks of published inputs in publication order,
// then acks each input (or redelivers it if a publish failed).
func (p *Pipeline) acker() {
	for pd := range p.acks {
		var err error
		for _, f := range pd.futures {
			if err = p.awaitPubAck(f, pd.sent); err != nil {
				break
			}
		}
		var st settlement
		if err != nil {
			err = fmt.Errorf("publishing output: %w", err)
			pd.span.RecordError(err)
			st = p.failed(pd.j, err, false)
		} else {
			st = p.published(pd.j, pd.outs)
		}
		pd.span.End()
		p.finish(pd.j, st)
	}
}

// pubAckRetryAfter is how long after an output's asynchronous publish the
// acker, still without its PubAck, publishes it again (asynchronously, with
// the same Nats-Msg-Id, so that a repeat is harmless) and takes whichever
// PubAck comes first. A healthy cluster answers in milliseconds. A PubAck
// lost with the node that was storing the output (its stream's leader)
// never comes, and the acker, which takes PubAcks in publication order,
// would hold every input behind it for the first publish's whole bound
// (publishTimeout): 10 s of stall in the chaos suite's cluster-node-loss.
// The first publish keeps that bound, so a slow cluster's late PubAck still
// counts, and costs a duplicate publish, not a stall.
const pubAckRetryAfter = 3 * time.Second

// awaitPubAck waits for the PubAck of f, published at sent, publishing it
// again after pubAckRetryAfter (see there). When every publish of it has
// failed (a reconnect fails every pending publish at once, or each reached
// publishTimeout) the output may still be stored although its acks were
// lost: it is published once more, synchronously (republish), and a
// duplicate ack proves it is stored.
func (p *Pipeline) awaitPubAck(f jetstream.PubAckFuture, sent time.Time) error {
	firstOk, firstErr := f.Ok(), f.Err()
	select { // it has come: no timer, and no repeat if sent long ago
	case <-firstOk:
		return nil
	default:
	}
	again := time.NewTimer(time.Until(sent.Add(pubAckRetryAfter)))
	defer again.Stop()
	var retryOk <-chan *jetstream.PubAck
	var retryErr <-chan error
	var lastErr error
	waiting := 1 // publishes of f without an outcome yet
	for waiting > 0 {
		select {
		case <-firstOk:
			return nil
		case <-retryOk:
			return nil
		case lastErr = <-firstErr:
			firstOk, firstErr = nil, nil
			waiting--
		case lastErr = <-retryErr:
			retryOk, retryErr = nil, nil
			waiting--
		case <-again.C:
			select { // the first's outcome may have come with the timer
			case <-firstOk:
				return nil
			case lastErr = <-firstErr:
				firstOk, firstErr = nil, nil
				waiting--
				continue
			default:
			}
			r, err := p.repeats.PublishMsgAsync(f.Msg())
			if err != nil { // the first is still awaited
				p.log.Warn("could not publish an output again whose PubAck is late; waiting for the first publish's",
					slog.String("subject", f.Msg().Subject), slog.String("error", err.Error()))
				continue
			}
			retryOk, retryErr = r.Ok(), r.Err()
			waiting++
		}
	}
	if err := p.republish(f.Msg()); err != nil {
		return fmt.Errorf("%w; again: %w", lastErr, err)
	}
	return nil
}

// republish publishes msg synchronously within publishTimeout.
func (p *Pipeline) republish(msg *nats.Msg) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, msg)
	return err
}

// finish releases a settled input: its slot, its refund (whose next input
// becomes runnable), its metrics and its log line.
func (p *Pipeline) finish(j *job, st settlement) {
	p.mu.Lock()
	delete(p.inflight, j)
	var next *job
	inherit := false
	if j.key != "" {
		if q := p.keys[j.key]; len(q) > 0 {
			next, q[0] = q[0], nil
			p.keys[j.key] = q[1:]
			if next.queued { // it takes over j's MaxInFlight slot
				next.queued, inherit = false, true
				p.queued--
			}
		} else {
			delete(p.keys, j.key)
		}
	}
	p.mu.Unlock()
	if next != nil {
		p.runnable <- next
	}
	if !inherit {
		<-p.held
	}
	took := time.Since(j.received)
	p.m.InFlight.Dec()
	p.m.Consumed.WithLabelValues(j.typ, st.outcome).Inc()
	p.m.HandleSeconds.WithLabelValues(j.typ, st.outcome).Observe(took.Seconds())
	if p.log.Enabled(context.Background(), st.level) {
		attrs := append(p.eventAttrs(j), slog.String("outcome", st.outcome), slog.Duration("duration", took))
		p.log.LogAttrs(context.Background(), st.level, "handled", append(attrs, st.attrs...)...)
	}
	p.jobs.Done()
}

// errDrainDeadline cancels handlers still running when the drain deadline
// passes.
var errDrainDeadline = errors.New("shutdown drain deadline reached")

// cancelRunning cancels the handlers still running at the drain deadline,
// and any that would start after it.
func (p *Pipeline) cancelRunning() {
	p.cancelDrain(errDrainDeadline)
}

// eventAttrs identify the input on every log line about it.
func (p *Pipeline) eventAttrs(j *job) []slog.Attr {
	var id, refund string
	if j.invalid == nil {
		id, refund = j.in.Event.ID(), j.in.RefundID()
	} else { // whatever can be read of it, for the operator
		seen := events.Identify(j.msg.Headers(), j.msg.Data())
		id, refund = seen.ID, seen.RefundID
	}
	return []slog.Attr{slog.String("event_id", id), slog.String("event_type", j.typ), slog.String("refund_id", refund),
		slog.Int("delivery", p.deliveries(j))}
}

// settlement is how an input was settled, for its one "handled" log line.
type settlement struct {
	outcome string // published, retry, dead_lettered, handed_back
	level   slog.Level
	attrs   []slog.Attr
}

func (s settlement) with(attrs ...slog.Attr) settlement {
	s.attrs = append(s.attrs, attrs...)
	return s
}

var (
	settledPublished    = settlement{outcome: "published", level: slog.LevelInfo}
	settledRetry        = settlement{outcome: "retry", level: slog.LevelWarn}
	settledDeadLettered = settlement{outcome: "dead_lettered", level: slog.LevelWarn}
	settledHandedBack   = settlement{outcome: "handed_back", level: slog.LevelInfo}
)

// release tells the Gate that an input it may have admitted as a probe is
// settled without calling PandaPon, so that the next need not wait for it.
func (p *Pipeline) release() {
	if p.cfg.Gate != nil {
		p.cfg.Gate.Release(1)
	}
}

// settle handles one input. It either settles it (acks, naks or
// dead-letters it and returns how) or, when outputs were published
// asynchronously, returns them as pending for the acker.
func (p *Pipeline) settle(j *job) (*pending, settlement) {
	if p.stopping.Load() {
		_ = p.settleMsg(j, j.msg.Nak) // not started: hand back for another replica
		return nil, settledHandedBack.with(slog.String("reason", "shutdown before it started"))
	}
	if j.invalid != nil {
		p.release()
		return nil, p.deadLetter(j, "invalid", "invalid input: "+j.invalid.Error())
	}
	if d := p.deliveries(j); d > p.cfg.MaxDeliveries {
		p.release()
		return nil, p.deadLetter(j, "max_deliveries", fmt.Sprintf(
			"delivered %d times (limit %d) without being settled; the consumer may have died while handling it", d, p.cfg.MaxDeliveries))
	}

	hctx, hcancel := context.WithTimeout(p.drain, p.cfg.HandlerTimeout)
	defer hcancel()
	hctx, span := p.startSpan(hctx, j)

	outs, err := p.handle(hctx, j)
	var futures []jetstream.PubAckFuture
	if err == nil {
		futures, err = p.publish(hctx, j, span, outs)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.End()
		// Past the drain deadline every failure hands its input back,
		// also that of a handler whose own timeout had ended it first.
		return nil, p.failed(j, err, context.Cause(p.drain) == errDrainDeadline)
	}
	return &pending{j: j, futures: futures, outs: outs, span: span, sent: time.Now()}, settlement{}
}

// failed settles an input whose handling or publishing failed: handed
// back at the drain deadline, dead-lettered on its last delivery, else
// redelivered after a backoff.
func (p *Pipeline) failed(j *job, err error, drainDeadline bool) settlement {
	if drainDeadline {
		if d, ok := recheckAfter(err); ok {
			// A submission cut off in flight: another replica must not
			// query PandaPon before it has had time to finish it.
			_ = p.settleMsg(j, func() error { return j.msg.NakWithDelay(d) })
			return settledHandedBack.with(slog.String("reason", "drain deadline reached while handling"), slog.Any("error", err),
				slog.Duration("retry_in", d))
		}
		_ = p.settleMsg(j, j.msg.Nak)
		return settledHandedBack.with(slog.String("reason", "drain deadline reached while handling"), slog.Any("error", err))
	}
	deliveries := p.deliveries(j)
	if deliveries >= p.cfg.MaxDeliveries {
		return p.deadLetter(j, "max_deliveries", fmt.Sprintf(
			"failed on delivery %d of %d: %v", deliveries, p.cfg.MaxDeliveries, err))
	}
	delay := p.backoff(deliveries, err)
	_ = p.settleMsg(j, func() error { return j.msg.NakWithDelay(delay) })
	return settledRetry.with(slog.Any("error", err), slog.Duration("retry_in", delay))
}

// published acks an input whose outputs JetStream has stored.
func (p *Pipeline) published(j *job, outs []handlers.Output) settlement {
	st := settledPublished
	if err := p.settleMsg(j, j.msg.Ack); err != nil {
		st = st.with(slog.String("ack_error", err.Error()+"; the input will be redelivered and handled idempotently"))
	}
	for _, o := range outs {
		p.m.Published.WithLabelValues(o.Event.Type()).Inc()
		if p.cfg.OnPublished != nil {
			p.cfg.OnPublished(o.Subject, o.Event)
		}
		if p.log.Enabled(context.Background(), slog.LevelInfo) {
			st = st.with(slog.String("output_type", o.Event.Type()), slog.String("output_id", o.Event.ID()))
			if o.Event.Type() == events.TypeRefundRequestFailed {
				st = st.with(refusalAttrs(o.Event.Data())...)
			}
		}
	}
	return st
}

// refusalAttrs logs PandaPon's answer carried by a refund.request.failed.
func refusalAttrs(data []byte) []slog.Attr {
	var f events.RefundRequestFailed
	if json.Unmarshal(data, &f) != nil {
		return nil
	}
	rid := "null"
	if f.RequestID != nil {
		rid = *f.RequestID
	}
	return []slog.Attr{slog.Int64("pandapon_code", f.Code), slog.String("pandapon_msg", f.Msg), slog.String("pandapon_request_id", rid)}
}

// startSpan starts the handling span, continuing the trace of the input's
// traceparent/tracestate extensions (CloudEvents distributed tracing).
func (p *Pipeline) startSpan(ctx context.Context, j *job) (context.Context, trace.Span) {
	if !p.tracing {
		return ctx, trace.SpanFromContext(ctx) // a no-op span: tracing costs nothing
	}
	carrier := propagation.MapCarrier{}
	for _, k := range []string{events.ExtTraceparent, events.ExtTracestate} {
		if v, ok := j.in.Event.Extensions()[k].(string); ok {
			carrier[k] = v
		}
	}
	if len(carrier) > 0 {
		ctx = propagation.TraceContext{}.Extract(ctx, carrier)
	}
	return p.tracer.Start(ctx, "pandabridge handle "+j.typ, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", j.msg.Subject()),
			attribute.String("cloudevents.event_id", j.in.Event.ID()),
			attribute.String("cloudevents.event_type", j.typ),
			attribute.String("pandabridge.refund_id", j.in.RefundID()),
		))
}

// handle runs the handler, turning a panic into an error so that one bad
// input cannot take the process down.
func (p *Pipeline) handle(ctx context.Context, j *job) (outs []handlers.Output, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return p.handler.Handle(ctx, j.in)
}

// publish sends each output asynchronously; the returned futures resolve
// with JetStream's acknowledgements. An output of an input that carried no
// traceparent gets the handling span's, so a trace started here still
// reaches subscribers.
func (p *Pipeline) publish(ctx context.Context, j *job, span trace.Span, outs []handlers.Output) ([]jetstream.PubAckFuture, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(outs))
	for _, o := range outs {
		if p.tracing && span.SpanContext().IsValid() {
			if _, has := o.Event.Extensions()[events.ExtTraceparent]; !has {
				carrier := propagation.MapCarrier{}
				propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), carrier)
				o.Event.SetExtension(events.ExtTraceparent, carrier["traceparent"])
				if ts := carrier["tracestate"]; ts != "" {
					o.Event.SetExtension(events.ExtTracestate, ts)
				}
			}
		}
		msg, err := events.EncodeNATS(o.Subject, o.Event)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", o.Event.Type(), err)
		}
		f, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			return nil, fmt.Errorf("publishing %s to %s: %w", o.Event.Type(), o.Subject, err)
		}
		if p.log.Enabled(ctx, slog.LevelDebug) {
			p.log.LogAttrs(ctx, slog.LevelDebug, "publishing", append(p.eventAttrs(j), slog.String("output_id", o.Event.ID()),
				slog.String("output_type", o.Event.Type()))...)
		}
		futures = append(futures, f)
	}
	return futures, nil
}

// deadLetter publishes the original message with the reason headers to the
// dead-letter subject and terminates it. If the dead letter cannot be
// stored, the input is redelivered later instead: it is never dropped.
func (p *Pipeline) deadLetter(j *job, kind, reason string) settlement {
	subject := p.cfg.Topology.Subjects.DeadLetter(j.msg.Subject())
	var seq uint64
	if j.meta != nil {
		seq = j.meta.Sequence.Stream
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	dl := topology.NewDeadLetter(subject, j.msg.Headers(), j.msg.Data(), reason, p.deliveries(j), seq)
	_, err := p.js.PublishMsg(ctx, dl)
	if tooLarge(err) {
		// The input plus the reason headers exceeds what NATS or the
		// dead-letter stream accepts: it never will. Store the reason and
		// the way to the input (still in its stream) instead of nothing.
		dl.Data = nil
		dl.Header.Set(topology.HeaderDLQPayloadOmitted, fmt.Sprintf(
			"%d bytes, too large for a dead letter (%v); the input is message %d of stream %s",
			len(j.msg.Data()), err, seq, p.cfg.Topology.InputStream))
		_, err = p.js.PublishMsg(ctx, dl)
	}
	if err != nil {
		p.m.DeadLetterFailed.WithLabelValues(j.typ).Inc()
		delay := p.backoff(p.deliveries(j), err)
		_ = p.settleMsg(j, func() error { return j.msg.NakWithDelay(delay) })
		st := settledRetry.with(slog.String("error", "could not dead-letter: "+err.Error()), slog.String("dlq_reason", reason), slog.Duration("retry_in", delay))
		st.level = slog.LevelError
		return st
	}
	_ = p.settleMsg(j, func() error { return j.msg.TermWithReason(truncate(reason, 200)) })
	p.m.DeadLettered.WithLabelValues(j.typ, kind).Inc()
	return settledDeadLettered.with(slog.String("dlq_subject", subject), slog.String("dlq_reason", reason))
}

// tooLarge reports a publish refused for its size, by the client (the
// server's max_payload) or by the stream (max_msg_size).
func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

func (p *Pipeline) deliveries(j *job) int {
	if j.meta == nil {
		return 1
	}
	return int(j.meta.NumDelivered)
}

// backoff is the redelivery delay after the n-th delivery failed: jittered
// exponential between BackoffMin and BackoffMax, at least what PandaPon
// asked for with Retry-After (capped at BackoffMax), and at least the
// RecheckAfter of a submission with an unknown outcome (not capped: it
// guards against submitting twice).
func (p *Pipeline) backoff(n int, err error) time.Duration {
	ceil := p.cfg.BackoffMin << min(max(n-1, 0), 20)
	if ceil > p.cfg.BackoffMax || ceil <= 0 {
		ceil = p.cfg.BackoffMax
	}
	d := ceil/2 + rand.N(ceil/2+1)
	var te *pandapon.TransientError
	if errors.As(err, &te) && te.RetryAfter > d {
		d = min(te.RetryAfter, p.cfg.BackoffMax)
	}
	if r, ok := recheckAfter(err); ok && r > d {
		d = r
	}
	return d
}

// recheckAfter is the delay an *handlers.UnknownOutcomeError asks for.
func recheckAfter(err error) (time.Duration, bool) {
	if ue, ok := errors.AsType[*handlers.UnknownOutcomeError](err); ok {
		return ue.RecheckAfter, true
	}
	return 0, false
}

func typeOf(msg jetstream.Msg) string {
	return labelType(msg.Headers().Get(events.HeaderPrefix + "type"))
}

// labelType keeps metric labels to a fixed set: an input type or "unknown".
func labelType(t string) string {
	switch t {
	case events.TypeRefundLookupRequested, events.TypeReturnShipped:
		return t
	}
	return "unknown"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
