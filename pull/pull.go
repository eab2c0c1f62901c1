// Package pull consumes a JetStream pull consumer in finite batches bounded
// by the caller's free slots: the consumer engine and the webhook deliverer
// both use it.
//
// Why not nats.go's long-lived Messages iterator: it prefetches messages
// that then wait, unobserved and without in-progress signals, in a client
// buffer while every slot is busy (their ack wait expires and they are
// delivered twice), and a pull request the server dropped was only noticed
// at its 30 s expiry (an observed 30 s stall). Here every message received
// is handed over at once, and each pull ends within Options.Wait.
package pull

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for Options fields left zero.
const (
	DefaultWait   = 500 * time.Millisecond
	DefaultGather = 5 * time.Millisecond
)

// Options configure Loop.
type Options struct {
	// Slots holds one token per message the caller may hold; Loop puts a
	// token in before pulling a message and the caller takes it out when
	// the message is settled. Tokens of messages that did not arrive are
	// taken out by Loop.
	Slots chan struct{}
	// MaxBatch bounds one pull (default 1).
	MaxBatch int
	// MinBatch: while messages are held, gather at least this many free
	// slots (or wait Gather) before pulling again, so that a busy process
	// does not send one pull per settled message (default 1: no gathering).
	MinBatch int
	// Gather bounds the wait for MinBatch slots (default 5 ms).
	Gather time.Duration
	// Wait is how long one pull stays open for more messages (default
	// 500 ms). It is also the longest a dropped pull goes unnoticed and
	// how long Loop may take to return once ctx ends.
	Wait time.Duration
	// Logger receives a warning per failed pull (default: discard).
	Logger *slog.Logger
	// Gate, when set, paces the pulls (nil: MaxBatch each).
	Gate Gate
}

// Gate paces Loop's pulls by something other than free slots: the consumer
// passes the PandaPon client, which admits nothing while its circuit
// breaker is open and one input at a time while it probes.
type Gate interface {
	// Admit is asked before each pull, while Loop holds one slot, how many
	// messages may be pulled now; the pull takes at most that many. It may
	// block while none may, and returns at least 1 unless ctx has ended.
	Admit(ctx context.Context) int
	// Release gives back n admissions whose messages will not do the
	// gated work: Loop calls it after a pull that brought fewer messages
	// than Admit allowed (a probe the pull found nothing for); the caller
	// may for a message it settles without doing it (an invalid input).
	Release(n int)
}

// Loop pulls from cons until ctx ends and passes each message to accept,
// which must not block for long. A pull is not bound to ctx: cancelling
// one midway would strand the messages already sent for it until their ack
// wait expires; instead the last pull ends within Options.Wait. Failed
// pulls are retried with backoff (100 ms to 5 s).
func Loop(ctx context.Context, cons jetstream.Consumer, o Options, accept func(jetstream.Msg)) {
	o.MaxBatch = max(o.MaxBatch, 1)
	o.MinBatch = min(max(o.MinBatch, 1), o.MaxBatch)
	if o.Gather <= 0 {
		o.Gather = DefaultGather
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	gather := time.NewTimer(0)
	errWait := 100 * time.Millisecond
	for ctx.Err() == nil {
		select {
		case o.Slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		limit := o.MaxBatch
		if o.Gate != nil {
			limit = min(o.Gate.Admit(ctx), o.MaxBatch)
			if limit < 1 || ctx.Err() != nil {
				<-o.Slots
				continue
			}
		}
		n := 1
		if o.MinBatch > 1 && len(o.Slots) > 1 { // busy: gather a batch
			gather.Reset(o.Gather)
		gathering:
			for n < min(o.MinBatch, limit) {
				select {
				case o.Slots <- struct{}{}:
					n++
				case <-gather.C:
					break gathering
				}
			}
			gather.Stop()
		}
	more:
		for n < limit {
			select {
			case o.Slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(o.Wait))
		got := 0
		if err == nil {
			for msg := range batch.Messages() {
				got++
				accept(msg)
			}
			err = batch.Error()
		}
		for range n - got {
			<-o.Slots
		}
		if o.Gate != nil && got < limit {
			o.Gate.Release(limit - got)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			o.Logger.Warn("pulling messages, will retry", "error", err, "retry_in", errWait)
			select {
			case <-ctx.Done():
			case <-time.After(errWait):
			}
			errWait = min(2*errWait, 5*time.Second)
			continue
		}
		errWait = 100 * time.Millisecond
	}
}
