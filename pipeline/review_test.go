package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pipeline"
)

// slowRefund handles inputs of one refund slowly and records when each
// input was handled.
type slowRefund struct {
	refund string
	delay  time.Duration
	mu     sync.Mutex
	done   map[string]time.Time
}

func (h *slowRefund) Handle(ctx context.Context, in events.Input) ([]handlers.Output, error) {
	if in.RefundID() == h.refund {
		time.Sleep(h.delay)
	}
	h.mu.Lock()
	h.done[in.Event.ID()] = time.Now()
	h.mu.Unlock()
	return nil, nil
}

func (h *slowRefund) handled(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.done[id]
	return ok
}

// A refund with a backlog must not take every MaxInFlight slot: an input
// of another refund published behind the backlog is handled while the
// backlog is still being worked through, not after it.
func TestRefundWithABacklogDoesNotBlockOtherRefunds(t *testing.T) {
	e := start(t)
	e.stop()
	const backlog = 30
	h := &slowRefund{refund: "999", delay: 200 * time.Millisecond, done: map[string]time.Time{}}
	var hot []string
	for range backlog {
		in := testkit.Lookup("999")
		hot = append(hot, in.ID())
		e.publish(in)
	}
	cold := testkit.Lookup("110002687818")
	e.publish(cold)
	e.run(h, pipeline.Config{Topology: e.topo, Concurrency: 4, MaxInFlight: 8})
	testkit.Eventually(t, 10*time.Second, func() bool { return h.handled(cold.ID()) }, "the other refund's input")
	pending := 0
	for _, id := range hot {
		if !h.handled(id) {
			pending++
		}
	}
	if pending < backlog/2 {
		t.Errorf("the other refund's input waited until only %d of %d backlog inputs were left: it was blocked behind them", pending, backlog)
	}
}

// A poison input published with a JetStream precondition (for example
// jetstream.WithExpectStream) is still dead-lettered: the precondition is
// an instruction to the server, not data, and would fail on the DLQ stream.
func TestPoisonWithPublishPreconditionIsDeadLettered(t *testing.T) {
	e := start(t)
	m := nats.NewMsg("pandapon.refund.lookup.requested")
	m.Header.Set("Nats-Expected-Stream", e.topo.InputStream)
	m.Header.Set("X-Erp", "kept")
	m.Data = []byte(`not a cloudevent`)
	testkit.PublishMsg(t, e.js, m)
	dl := e.dlq.WaitN(t, 1, 10*time.Second)[0]
	if dl.Headers().Get("X-Erp") != "kept" || string(dl.Data()) != "not a cloudevent" {
		t.Errorf("dead letter lost the original: headers %v, payload %q", dl.Headers(), dl.Data())
	}
	if dl.Headers().Get("Nats-Expected-Stream") != "" {
		t.Error("the publish precondition was copied into the dead letter")
	}
	e.settled()
}

// A deleted output stream is noticed and recreated: readiness drops while
// it is missing and outputs flow again once it is back.
func TestDeletedOutputStreamIsRecreated(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, e.topo.OutputStream); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, err := e.js.Stream(ctx, e.topo.OutputStream)
		return err == nil
	}, "the output stream to be recreated")
	in := testkit.Lookup("110002687818")
	e.publish(in)
	out := testkit.Collect(t, e.js, e.topo.OutputStream, e.topo.Subjects.Outputs()...)
	out.WaitN(t, 1, 10*time.Second)
}
