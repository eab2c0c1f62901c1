package ingest

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// answeredFuture is a PubAckFuture whose acknowledgement has arrived.
type answeredFuture struct{ ok chan *jetstream.PubAck }

func (f answeredFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f answeredFuture) Err() <-chan error            { return nil }
func (f answeredFuture) Msg() *nats.Msg               { return nil }

// TestAckAlreadyInIsTakenAfterTheTimeout: in a batch, the wait for an early
// event's ack can use up the publish timeout; a later event whose ack is
// already in was stored and must be reported so, not picked at random
// against the expired context.
func TestAckAlreadyInIsTakenAfterTheTimeout(t *testing.T) {
	h := &Handler{log: slog.New(slog.DiscardHandler), m: NewMetrics(nil)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := pending{index: 1, typ: "refund.lookup.requested", msg: nats.NewMsg("pandapon.refund.lookup.requested"), id: "e1"}
	for range 200 {
		f := answeredFuture{ok: make(chan *jetstream.PubAck, 1)}
		f.ok <- &jetstream.PubAck{Stream: "PANDAPON_INPUT", Sequence: 7}
		if r := h.awaitAck(ctx, p, f); r.Status != http.StatusAccepted || r.Sequence != 7 {
			t.Fatalf("result %+v for a stored event, want 202 with sequence 7", r)
		}
	}
}
