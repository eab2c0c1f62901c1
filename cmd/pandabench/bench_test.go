package main

// Micro-benchmarks of the consumer's hot path, piece by piece, with
// allocs/op:
//
//	go test -run XXX -bench . -benchmem ./cmd/pandabench/
//
// They use the same full-size PandaPon data as the end-to-end benchmark
// (a generated sandbox refund, about 1.4 kB).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/telemetry"
	"github.com/pandabridge/pandabridge/topology"
)

var creds = pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret}

// queryBody returns the full HTTP body the sandbox answers for a generated
// refund's query.
func queryBody(tb testing.TB) []byte {
	tb.Helper()
	sb := sandbox.New(sandbox.Options{GeneratedRefunds: 1})
	req := httptest.NewRequest(http.MethodGet, "http://sandbox/open/order/refund/query?refundId="+sandbox.GeneratedRefundID(0), nil)
	creds.SignRequest(req.Header, time.Now())
	rec := httptest.NewRecorder()
	sb.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("sandbox: HTTP %d", rec.Code)
	}
	return rec.Body.Bytes()
}

func lookupInput(i int) event.Event {
	ev := event.New()
	ev.SetID("pb1s1dr-" + strconv.Itoa(i))
	ev.SetSource(inputSource)
	ev.SetType(events.TypeRefundLookupRequested)
	ev.SetTime(time.Now().UTC())
	ev.SetDataContentType(events.ContentTypeJSON)
	ev.DataEncoded = []byte(`{"refundId":"` + sandbox.GeneratedRefundID(i) + `"}`)
	return ev
}

// cannedTransport answers every request with the same body, in memory.
type cannedTransport struct{ body []byte }

func (t cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(t.body)),
		Request:    req,
	}, nil
}

func newClient(tb testing.TB, tr http.RoundTripper, baseURL string, observed bool) *pandapon.Client {
	tb.Helper()
	cfg := pandapon.Config{
		BaseURL:       baseURL,
		Credentials:   creds,
		RateLimit:     1e9,
		MaxConcurrent: 64,
		Transport:     tr,
		Breaker:       pandapon.BreakerConfig{ConsecutiveFailures: 20},
	}
	if observed {
		cfg.Observer = telemetry.NewPandaPonMetrics(prometheus.NewRegistry())
	}
	c, err := pandapon.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkDecodeInput: events.DecodeNATS + ParseInput of a lookup, what
// the pipeline does for each received message.
func BenchmarkDecodeInput(b *testing.B) {
	msg, err := events.EncodeNATS("pandapon.refund.lookup.requested", lookupInput(7))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e, err := events.DecodeNATS(msg.Header, msg.Data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := events.ParseInput(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildOutput: NewRefundUpdated + EncodeNATS with full-size data.
func BenchmarkBuildOutput(b *testing.B) {
	in := lookupInput(7)
	data := []byte(`{"refundOrderAggregate":{}}`)
	if env, err := decodeData(queryBody(b)); err == nil {
		data = env
	}
	b.ReportAllocs()
	for b.Loop() {
		e := events.NewRefundUpdated(in, handlers.DefaultSource, "120000000007", data, time.Now())
		if _, err := events.EncodeNATS("pandapon.refund.updated", e); err != nil {
			b.Fatal(err)
		}
	}
}

func decodeData(body []byte) ([]byte, error) {
	i := bytes.Index(body, []byte(`"data":`))
	if i < 0 {
		return nil, fmt.Errorf("no data")
	}
	return bytes.TrimSuffix(body[i+len(`"data":`):], []byte("}")), nil
}

// BenchmarkSignRequest: the five system headers with a fresh nonce.
func BenchmarkSignRequest(b *testing.B) {
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		creds.SignRequest(h, time.Now())
	}
}

// BenchmarkQueryRefundInMemory: the pandapon client's own cost per call
// (limiter, retryablehttp, signing, breaker, envelope decoding, metrics
// observer), against an in-memory transport returning the full-size body.
func BenchmarkQueryRefundInMemory(b *testing.B) {
	c := newClient(b, cannedTransport{queryBody(b)}, "http://pandapon.invalid", true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.QueryRefund(ctx, "120000000000"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueryRefundLoopback: one call over loopback HTTP to the sandbox
// (the sandbox's CPU is in this process too).
func BenchmarkQueryRefundLoopback(b *testing.B) {
	srv, err := sandbox.Start("127.0.0.1:0", sandbox.Options{GeneratedRefunds: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c := newClient(b, nil, srv.URL, true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.QueryRefund(ctx, sandbox.GeneratedRefundID(0)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerLookup: handlers.Handler.Handle for a lookup with the
// in-memory PandaPon: client + output event.
func BenchmarkHandlerLookup(b *testing.B) {
	h := &handlers.Handler{PandaPon: newClient(b, cannedTransport{queryBody(b)}, "http://pandapon.invalid", true)}
	in, err := events.ParseInput(lookupInput(0))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Handle(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSlogPerJob: what a per-job logger costs when the level discards
// the line: Logger.With of three attributes plus a discarded Info.
func BenchmarkSlogPerJob(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.ReportAllocs()
	for b.Loop() {
		l := log.With("event_id", "pb1s1dr-7", "event_type", events.TypeRefundLookupRequested, "refund_id", "120000000007")
		l.Info("handled", "outputs", 1, "duration", time.Millisecond)
	}
}

// jetStreamBench starts an embedded server with the output stream.
func jetStreamBench(b *testing.B) (jetstream.JetStream, topology.Topology) {
	b.Helper()
	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	topo := topology.New("mb")
	if err := topo.EnsureStreams(context.Background(), js); err != nil {
		b.Fatal(err)
	}
	return js, topo
}

func outputMsgs(b *testing.B, n int) []*nats.Msg {
	data, _ := decodeData(queryBody(b))
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		e := events.NewRefundUpdated(lookupInput(i), handlers.DefaultSource, "120000000007", data, time.Now())
		m, err := events.EncodeNATS("mb.refund.updated", e)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	return msgs
}

// BenchmarkPublishOutputSync: one output published and its ack awaited,
// what the pipeline does per event today (one round trip per output).
func BenchmarkPublishOutputSync(b *testing.B) {
	js, _ := jetStreamBench(b)
	msgs := outputMsgs(b, b.N)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := js.PublishMsg(ctx, msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishOutputAsync: the same outputs published asynchronously
// with acks awaited in bulk (up to 4096 in flight).
func BenchmarkPublishOutputAsync(b *testing.B) {
	js, _ := jetStreamBench(b)
	msgs := outputMsgs(b, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for js.PublishAsyncPending() >= 4000 {
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := js.PublishMsgAsync(msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
}

// stubHandler answers every lookup with the full-size data, no HTTP.
type stubHandler struct {
	data []byte
	subj string
}

func (h stubHandler) Handle(_ context.Context, in events.Input) ([]handlers.Output, error) {
	e := events.NewRefundUpdated(in.Event, handlers.DefaultSource, in.RefundID(), h.data, time.Now())
	return []handlers.Output{{Subject: h.subj, Event: e}}, nil
}

// BenchmarkPipelineNoHTTP: the pipeline alone (fetch, decode, schedule,
// publish, ack) on an embedded JetStream with a handler that makes no HTTP
// call; b.N inputs preloaded, time until all b.N outputs are stored.
// ns/op is per event; allocs/op include the in-process NATS server's.
func BenchmarkPipelineNoHTTP(b *testing.B) {
	js, topo := jetStreamBench(b)
	nc := js.Conn()
	data, _ := decodeData(queryBody(b))
	for i := range b.N {
		m, err := events.EncodeNATS(topo.Subjects.Of(events.TypeRefundLookupRequested), lookupInput(i%4096))
		if err != nil {
			b.Fatal(err)
		}
		m.Header[events.HeaderMsgID] = []string{"in-" + strconv.Itoa(i)} // distinct ids despite the cycling refunds
		m.Header["ce-id"] = []string{"in-" + strconv.Itoa(i)}
		for js.PublishAsyncPending() >= 4000 {
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	var done atomic.Int64
	all := make(chan struct{})
	p, err := pipeline.New(nc, stubHandler{data: data, subj: topo.Subjects.Of(events.TypeRefundUpdated)}, pipeline.Config{
		Topology:    topo,
		Concurrency: 16,
		OnPublished: func(string, event.Event) {
			if done.Add(1) == int64(b.N) {
				close(all)
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { stopped <- p.Run(ctx) }()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d outputs", done.Load(), b.N)
	}
	b.StopTimer()
	cancel()
	if err := <-stopped; err != nil {
		b.Fatal(err)
	}
}
