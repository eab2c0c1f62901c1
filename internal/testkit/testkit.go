// Package testkit starts the real parts tests need — an embedded NATS server
// with JetStream, the PandaPon sandbox over HTTP on 127.0.0.1 — and offers
// helpers to publish inputs and collect outputs. Everything started is
// stopped by t.Cleanup.
package testkit

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/topology"
)

// NATS starts an embedded server on a free port with its store in a test
// temporary directory. If the test fails, the server's last warnings and
// errors are added to its log (a JetStream failure's cause is often only
// there).
func NATS(t testing.TB) *embeddednats.Server {
	t.Helper()
	warnings := &embeddednats.WarningLog{}
	s, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Logger: warnings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs after Shutdown
		if w := warnings.Since(0); t.Failed() && w != "" {
			t.Logf("the NATS server's last warnings and errors: %s", w)
		}
	})
	t.Cleanup(s.Shutdown)
	return s
}

// Connect dials url and returns the connection and its JetStream context.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Sandbox serves a PandaPon sandbox on 127.0.0.1.
func Sandbox(t testing.TB, opts sandbox.Options) *sandbox.Server {
	t.Helper()
	s, err := sandbox.Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// EnsureStreams creates pandabridge's streams for the default prefix.
func EnsureStreams(t testing.TB, js jetstream.JetStream) topology.Topology {
	t.Helper()
	topo := topology.New(events.DefaultSubjectPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topo.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	return topo
}

// NewInput builds an input event with a fresh id and the given data.
func NewInput(eventType string, data any) event.Event {
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource("testkit")
	e.SetType(eventType)
	e.SetTime(time.Now().UTC())
	b, _ := json.Marshal(data)
	e.SetDataContentType(events.ContentTypeJSON)
	e.DataEncoded = b
	return e
}

// Lookup builds a refund.lookup.requested event.
func Lookup(refundID string) event.Event {
	return NewInput(events.TypeRefundLookupRequested, map[string]string{"refundId": refundID})
}

// ReturnShipped builds a return.shipped event.
func ReturnShipped(refundID, company, logisticsNo string) event.Event {
	return NewInput(events.TypeReturnShipped, map[string]any{
		"refundId": refundID, "logisticsCompanyCode": company, "logisticsNo": logisticsNo,
		"buyerPhone": "15068763422", "returnGoodsDesc": nil,
	})
}

// Publish stores e in binary mode on its type's subject and waits for the
// ack.
func Publish(t testing.TB, js jetstream.JetStream, e event.Event) {
	t.Helper()
	msg, err := events.EncodeNATS(events.Subjects{}.Of(e.Type()), e)
	if err != nil {
		t.Fatal(err)
	}
	PublishMsg(t, js, msg)
}

// PublishMsg stores msg as is and waits for the ack.
func PublishMsg(t testing.TB, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publishing to %s: %v", msg.Subject, err)
	}
}

// Collector records every message stored on a stream's subjects, from the
// first one, with an ordered consumer.
type Collector struct {
	mu   sync.Mutex
	msgs []jetstream.Msg
	cc   jetstream.ConsumeContext
}

// Collect starts collecting messages of stream filtered by subjects.
func Collect(t testing.TB, js jetstream.JetStream, stream string, subjects ...string) *Collector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{}
	c.cc, err = cons.Consume(func(m jetstream.Msg) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cc.Stop)
	return c
}

// Msgs returns the messages collected so far.
func (c *Collector) Msgs() []jetstream.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]jetstream.Msg(nil), c.msgs...)
}

// Events decodes the collected messages; a message that is not a
// CloudEvent fails the test.
func (c *Collector) Events(t testing.TB) []event.Event {
	t.Helper()
	var out []event.Event
	for _, m := range c.Msgs() {
		e, err := events.DecodeNATS(m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("output on %s is not a CloudEvent: %v", m.Subject(), err)
		}
		out = append(out, e)
	}
	return out
}

// WaitN waits until at least n messages were collected (at most timeout).
func (c *Collector) WaitN(t testing.TB, n int, timeout time.Duration) []jetstream.Msg {
	t.Helper()
	Eventually(t, timeout, func() bool { return len(c.Msgs()) >= n }, "%d messages collected", n)
	return c.Msgs()
}

// Eventually polls cond every 5 ms until it holds, failing the test after
// timeout with the formatted description.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ConsumerInfo returns the durable consumer's info.
func ConsumerInfo(t testing.TB, js jetstream.JetStream, topo topology.Topology) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, topo.InputStream, topo.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
