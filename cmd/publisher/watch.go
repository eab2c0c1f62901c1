package main

import (
	"context"
	"errors"
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
	policy := jetstream.DeliverNewPolicy
	if *fromStart {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := c.js.OrderedConsumer(sctx, c.topo.OutputStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  policy,
	})
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	it, err := cons.Messages()
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
		return 1
	}
	defer it.Stop()
	printed := 0
	for *count == 0 || printed < *count {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return 0
			}
			fmt.Fprintf(c.stderr, "publisher watch: %v\n", err)
			return 1
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
