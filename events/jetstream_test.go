package events

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// runJetStream starts an in-process NATS server with JetStream on a random
// local port, its store in a temporary directory.
func runJetStream(t *testing.T) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestJetStreamRoundTrip(t *testing.T) {
	nc := runJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subjects := Subjects{}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       "PANDAPON_OUT",
		Subjects:   subjects.Outputs(),
		Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}

	in := sdkEvent(t)
	want := NewRefundUpdated(in, "pandabridge", "110002687818", []byte(pandaPonQueryData), time.Now())
	msg, err := EncodeNATS(subjects.Of(TypeRefundUpdated), want)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("first publish reported as duplicate")
	}

	// The same output again (a redelivered input): JetStream drops it.
	again, err := EncodeNATS(subjects.Of(TypeRefundUpdated), NewRefundUpdated(in, "pandabridge", "110002687818", []byte(pandaPonQueryData), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	ack2, err := js.PublishMsg(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if !ack2.Duplicate || ack2.Sequence != ack.Sequence {
		t.Errorf("second publish of the same output: duplicate=%v seq=%d; want dropped as a duplicate of seq %d", ack2.Duplicate, ack2.Sequence, ack.Sequence)
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(10) // stored before the PubAck, so available at once
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("stream holds %d messages; want exactly 1", len(got))
	}
	m := got[0]
	h := m.Headers()
	for _, name := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-causationid", "ce-traceparent", HeaderContentType, jetstream.MsgIDHeader} {
		if h.Get(name) == "" {
			t.Errorf("stored message lacks header %s; headers %v", name, h)
		}
	}
	if h.Get(jetstream.MsgIDHeader) != want.ID() {
		t.Errorf("Nats-Msg-Id %q, want the event id %q", h.Get(jetstream.MsgIDHeader), want.ID())
	}
	dec, err := DecodeNATS(h, m.Data())
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, dec)
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
}
