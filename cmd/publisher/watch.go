package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

func (c *cli) watch(ctx context.Context, args []string) int {
	fs := c.newFlagSet("watch", "[--refund-id ID] [--from-start] [--failed] [--count N]",
		"Prints each refund.updated event published from now on (or from the first one stored, with\n"+
			"--from-start) as one structured-mode CloudEvent JSON object per line, until interrupted.")
	refundID := fs.String("refund-id", "", "only events whose subject (the refund id) is ID")
	fromStart := fs.Bool("from-start", false, "start from the oldest stored event instead of now")
	failed := fs.Bool("failed", false, "also print refund.request.failed events")
	count := fs.Int("count", 0, "exit after printing N events (0: run until interrupted)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if *count < 0 {
		return c.usageError(fs, "--count %d: must not be negative", *count)
	}
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	defer c.close()

	sctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	if err := c.topo.EnsureStreams(sctx, c.js); err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	subjects := []string{c.topo.Subjects.Of(events.TypeRefundUpdated)}
	if *failed {
		subjects = append(subjects, c.topo.Subjects.Of(events.TypeRefundRequestFailed))
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !*fromStart {
		// "From now on" is pinned to a stream sequence: DeliverNewPolicy
		// would be evaluated again each time nats.go recreates the ordered
		// consumer before it delivered anything (after a NATS restart, say),
		// and what was stored in between would never be printed.
		stream, err := c.js.Stream(sctx, c.topo.OutputStream)
		if err != nil {
			fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
			return 1
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = stream.CachedInfo().State.LastSeq + 1
	}
	cons, err := c.js.OrderedConsumer(sctx, c.topo.OutputStream, cfg)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	it, err := cons.Messages()
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	// Next does not return while the ordered consumer is being recreated
	// (after its stream or consumer vanished, nats.go retries that until the
	// iterator is stopped, and Stop waits for the attempt in progress), so
	// it runs in its own goroutine: an interrupt returns at once.
	defer func() { go it.Stop() }()
	msgs, errc, done := make(chan jetstream.Msg), make(chan error, 1), make(chan struct{})
	defer close(done)
	go func() {
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- msg:
			case <-done:
				return
			}
		}
	}()
	printed := 0
	for *count == 0 || printed < *count {
		var msg jetstream.Msg
		select {
		case <-ctx.Done():
			return 0
		case err := <-errc:
			if ctx.Err() != nil {
				return 0
			}
			// Not interrupted: the connection was closed for good, or worse.
			fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
			return 1
		case msg = <-msgs:
		}
		e, err := events.DecodeNATS(msg.Headers(), msg.Data())
		if err != nil {
			fmt.Fprintf(c.stderr, "publisher watch: skipping a message on %s that is not a CloudEvent: %v\n", msg.Subject(), err)
			continue
		}
		if *refundID != "" && e.Subject() != *refundID {
			continue
		}
		line, err := events.EncodeStructured(e)
		if err != nil {
			fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
			continue
		}
		fmt.Fprintf(c.stdout, "%s\n", line)
		printed++
	}
	return 0
}
