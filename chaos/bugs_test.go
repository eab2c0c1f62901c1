package chaos_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// An output publish whose JetStream acknowledgement never arrives (the NATS
// node that carried it died, as in
// TestClusterNodeLossWithConsumersSharingTheDurable) must not hold its
// refund for the whole PANDABRIDGE_HANDLER_TIMEOUT, nor the inputs behind it
// for the first publish's whole bound (the pipeline's publishTimeout,
// 10 s): 3 s after the publish (pubAckRetryAfter) the output is published
// again, and the output's Nats-Msg-Id makes the repeat harmless. Before any
// bound, one refund's inputs stalled 55-58 s here; with only the 10 s
// bound, 10 s.
//
// The test loses the acknowledgement on purpose: the output stream is
// replaced by a plain subscriber that never answers; the consumer's stream
// watcher recreates the stream within 2 s, and the test does too, so only
// the first publish is lost. The output must then be stored well within the
// first publish's bound (6 s after the publish is the bar), and within the
// handler timeout (half of it is the bar).
func TestLostPublishAckIsRetriedLongBeforeTheHandlerTimeout(t *testing.T) {
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: 1})
	b := connectBus(t, ns.URL, 1)
	const handlerTimeout = 30 * time.Second
	// One input in flight: the pipeline is full while the PubAck is lost,
	// so the repeat must not need a free publish slot.
	c := startConsumer(t, "consumer", consumerEnv(ns.URL, sb.URL, "PANDABRIDGE_HANDLER_TIMEOUT="+handlerTimeout.String(),
		"PANDABRIDGE_CONCURRENCY=1", "PANDABRIDGE_MAX_IN_FLIGHT=1"))
	c.waitConsuming(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.js.DeleteStream(ctx, b.topo.OutputStream); err != nil {
		t.Fatal(err)
	}
	var swallowed atomic.Int32
	silent, err := b.nc.Subscribe(b.topo.Subjects.Of(events.TypeRefundUpdated), func(*nats.Msg) { swallowed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	testkit.Publish(t, b.js, testkit.Lookup(sandbox.GeneratedRefundID(0)))
	testkit.Eventually(t, 10*time.Second, func() bool { return swallowed.Load() > 0 }, "the output publish to be in flight")
	lost := time.Now()

	if err := silent.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.topo.EnsureStreams(ctx, b.js); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	testkit.Eventually(t, handlerTimeout+10*time.Second, every(100*time.Millisecond, func() bool {
		n, err := b.streamMsgs(b.topo.OutputStream)
		return err == nil && n == 1
	}), "the output to be stored")
	// Bounded on its own means well under the handler timeout.
	if took := time.Since(restored); took > handlerTimeout/2 {
		t.Errorf("the output was stored %s after the output stream came back, want within %s: a publish whose ack was lost waits for the handler timeout (%s) instead of being bounded and retried",
			took.Round(100*time.Millisecond), handlerTimeout/2, handlerTimeout)
	}
	const bar = 6 * time.Second
	if took := time.Since(lost); took > bar {
		t.Errorf("the output was stored %s after its first publish was lost, want within %s: without a PubAck the acker, and every input behind it, waits for the first publish's whole bound (10 s) before publishing it again",
			took.Round(100*time.Millisecond), bar)
	} else {
		t.Logf("output stored %s after its first publish was lost", took.Round(100*time.Millisecond))
	}
}
