package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/submitlease"
	"github.com/pandabridge/pandabridge/topology"
)

// env is a running pipeline wired exactly as cmd/consumer wires it: real
// NATS, real sandbox over HTTP, real signed client.
type env struct {
	t       *testing.T
	nats    string
	js      jetstream.JetStream
	sb      *sandbox.Server
	client  *pandapon.Client
	topo    topology.Topology
	outputs *testkit.Collector
	dlq     *testkit.Collector
	stop    func()             // stops the pipeline and waits for Run to return
	last    *pipeline.Pipeline // the pipeline run started last
}

type option func(*pipeline.Config, *sandbox.Options, *pandapon.Config)

func start(t *testing.T, opts ...option) *env {
	t.Helper()
	pcfg := pipeline.Config{Concurrency: 8, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: 10 * time.Second}
	sopts := sandbox.Options{GeneratedRefunds: 300}
	ccfg := pandapon.Config{RateLimit: -1, RetryWaitMin: time.Millisecond, RetryWaitMax: 10 * time.Millisecond, MaxRetries: 1}
	for _, o := range opts {
		o(&pcfg, &sopts, &ccfg)
	}
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sopts)
	ccfg.BaseURL = sb.URL
	ccfg.Credentials = pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret}
	client, err := pandapon.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	_, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	e := &env{t: t, nats: ns.URL, js: js, sb: sb, client: client, topo: topo}
	e.outputs = testkit.Collect(t, js, topo.OutputStream, topo.Subjects.Outputs()...)
	e.dlq = testkit.Collect(t, js, topo.DLQStream, topo.Subjects.DeadLetters())
	pcfg.Topology = topo
	e.stop = e.run(&handlers.Handler{PandaPon: client, Subjects: topo.Subjects}, pcfg)
	return e
}

// run starts a pipeline on its own connection and returns its stop func.
func (e *env) run(h pipeline.Handler, cfg pipeline.Config) func() {
	e.t.Helper()
	nc, err := nats.Connect(e.nats, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := pipeline.New(nc, h, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.last = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testkit.Eventually(e.t, 10*time.Second, p.Ready, "pipeline ready")
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
			nc.Close()
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) publish(ev event.Event) { e.t.Helper(); testkit.Publish(e.t, e.js, ev) }

// outputFor waits for the output caused by input id and returns it.
func (e *env) outputFor(inputID string) event.Event {
	e.t.Helper()
	var out event.Event
	testkit.Eventually(e.t, 15*time.Second, func() bool {
		for _, o := range e.outputs.Events(e.t) {
			if o.Extensions()[events.ExtCausationID] == inputID {
				out = o
				return true
			}
		}
		return false
	}, "the output of input %s", inputID)
	return out
}

// settled waits until the durable consumer has nothing pending or unacked.
func (e *env) settled() {
	e.t.Helper()
	testkit.Eventually(e.t, 15*time.Second, func() bool {
		info := testkit.ConsumerInfo(e.t, e.js, e.topo)
		return info.NumPending == 0 && info.NumAckPending == 0
	}, "every input acknowledged")
}

func refundView(t *testing.T, e event.Event) pandapon.RefundView {
	t.Helper()
	v, err := pandapon.ParseRefundView(e.Data())
	if err != nil {
		t.Fatalf("refund.updated data is not an aggregate: %v\n%s", err, e.Data())
	}
	return v
}

func TestLookupPublishesRefundUpdatedWithPandaPonDataUnchanged(t *testing.T) {
	e := start(t)
	in := testkit.Lookup("110002687818")
	in.SetExtension(events.ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	e.publish(in)
	out := e.outputFor(in.ID())

	want, err := e.client.QueryRefund(context.Background(), "110002687818")
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Data()) != string(want.Data) {
		t.Errorf("refund.updated data differs from PandaPon's data:\n got %s\nwant %s", out.Data(), want.Data)
	}
	if !strings.Contains(string(out.Data()), `"payOrderId":"3582133814705377121"`) {
		t.Errorf("19-digit payOrderId lost: %s", out.Data())
	}
	checks := map[string][2]string{
		"type":            {out.Type(), events.TypeRefundUpdated},
		"source":          {out.Source(), handlers.DefaultSource},
		"subject":         {out.Subject(), "110002687818"},
		"id":              {out.ID(), events.OutputID(in.Source(), in.ID())},
		"causationid":     {fmt.Sprint(out.Extensions()[events.ExtCausationID]), in.ID()},
		"traceparent":     {fmt.Sprint(out.Extensions()[events.ExtTraceparent]), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"datacontenttype": {out.DataContentType(), "application/json"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("output %s = %q, want %q", name, c[0], c[1])
		}
	}
	msg := e.outputs.Msgs()[0]
	if got := msg.Headers().Get(jetstream.MsgIDHeader); got != out.ID() {
		t.Errorf("Nats-Msg-Id %q, want the event id %q", got, out.ID())
	}
	if msg.Subject() != "pandapon.refund.updated" {
		t.Errorf("output subject %s", msg.Subject())
	}
	e.settled()
}

func TestStructuredModeInputIsAccepted(t *testing.T) {
	e := start(t)
	in := testkit.Lookup("110000303674")
	payload, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("pandapon.refund.lookup.requested")
	msg.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	msg.Data = payload
	testkit.PublishMsg(t, e.js, msg)
	out := e.outputFor(in.ID())
	if v := refundView(t, out); v.RefundID != "110000303674" {
		t.Errorf("refund %s, want 110000303674", v.RefundID)
	}
}

func TestReturnShippedSubmitsOnceEvenWhenRepeated(t *testing.T) {
	e := start(t)
	refund := sandbox.GeneratedRefundID(7)
	first := testkit.ReturnShipped(refund, "SF", "SF1234567890")
	e.publish(first)
	out := e.outputFor(first.ID())
	v := refundView(t, out)
	if v.RefundStatus.Value != 30 || v.LogisticsNo != "SF1234567890" {
		t.Errorf("after return.shipped: status %d logisticsNo %q, want 30 and SF1234567890", v.RefundStatus.Value, v.LogisticsNo)
	}

	// The same parcel reported again, by a new event: answered with the
	// current state, without a second submission.
	again := testkit.ReturnShipped(refund, "SF", "SF1234567890")
	e.publish(again)
	out2 := e.outputFor(again.ID())
	if v := refundView(t, out2); v.RefundStatus.Value != 30 || v.LogisticsNo != "SF1234567890" {
		t.Errorf("repeat answered with status %d logisticsNo %q", v.RefundStatus.Value, v.LogisticsNo)
	}
	st := e.sb.Stats()
	if st.AcceptedSubmissions != 1 || st.Requests[sandbox.PathSubmitLogistics] != 1 {
		t.Errorf("sandbox accepted %d submissions of %d requests; want exactly 1 of 1", st.AcceptedSubmissions, st.Requests[sandbox.PathSubmitLogistics])
	}
	if rs, _ := e.sb.Refund(refund); rs.LogisticsSubmissions != 1 {
		t.Errorf("refund %s holds %d submissions", refund, rs.LogisticsSubmissions)
	}
	e.settled()
}

func TestRedeliveredReturnShippedYieldsOneOutputAndOneSubmission(t *testing.T) {
	e := start(t)
	refund := sandbox.GeneratedRefundID(8)
	in := testkit.ReturnShipped(refund, "YTO", "YT000111")
	e.publish(in)
	e.outputFor(in.ID())
	e.settled()

	// Deliver the very same event again, as a redelivery after a lost ack
	// would (the input stream would drop it by Nats-Msg-Id, so strip it).
	msg, err := events.EncodeNATS("pandapon.return.shipped", in)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Del(jetstream.MsgIDHeader)
	testkit.PublishMsg(t, e.js, msg)
	e.settled()

	if n := len(e.outputs.Msgs()); n != 1 {
		t.Errorf("%d outputs stored for one event delivered twice, want 1 (same output id, deduplicated)", n)
	}
	if st := e.sb.Stats(); st.AcceptedSubmissions != 1 || st.Requests[sandbox.PathSubmitLogistics] != 1 {
		t.Errorf("submissions accepted %d, requested %d; want 1 and 1", st.AcceptedSubmissions, st.Requests[sandbox.PathSubmitLogistics])
	}
}

func TestBusinessErrorPublishesRequestFailedWithoutRetry(t *testing.T) {
	e := start(t)
	in := testkit.Lookup("999999999999")
	e.publish(in)
	out := e.outputFor(in.ID())
	if out.Type() != events.TypeRefundRequestFailed {
		t.Fatalf("output type %s, want refund.request.failed", out.Type())
	}
	var f struct {
		RefundID, RequestType, Msg, Reason string
		Code                               json.Number
		RequestID                          *string
	}
	if err := json.Unmarshal(out.Data(), &f); err != nil {
		t.Fatal(err)
	}
	if f.RefundID != "999999999999" || f.RequestType != events.TypeRefundLookupRequested || f.Code != "404" || f.Msg == "" || f.Reason == "" {
		t.Errorf("refund.request.failed data %s", out.Data())
	}
	if msgs := e.outputs.Msgs(); msgs[0].Subject() != "pandapon.refund.request.failed" {
		t.Errorf("published on %s", msgs[0].Subject())
	}
	e.settled()
	if n := e.sb.Stats().Requests[sandbox.PathQuery]; n != 1 {
		t.Errorf("PandaPon was asked %d times; a business error must not be retried", n)
	}
}

func TestTransientFailuresAreRetriedUntilTheySucceed(t *testing.T) {
	e := start(t)
	refund := sandbox.GeneratedRefundID(3)
	e.sb.SetRefundFaults(refund, sandbox.Faults{ServerErrorRate: 1})
	in := testkit.Lookup(refund)
	e.publish(in)
	// Client retries (2 attempts) and pipeline redeliveries both happen.
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sb.Stats().FaultsInjected["server_error"] >= 4 },
		"PandaPon to be asked repeatedly while failing")
	if len(e.outputs.Msgs()) != 0 {
		t.Fatal("an output was published while PandaPon was failing")
	}
	e.sb.SetRefundFaults(refund, sandbox.Faults{})
	out := e.outputFor(in.ID())
	if out.Type() != events.TypeRefundUpdated {
		t.Errorf("output %s, want refund.updated", out.Type())
	}
	e.settled()
	if n := len(e.dlq.Msgs()); n != 0 {
		t.Errorf("%d dead letters for a failure that cleared", n)
	}
}

func TestTransientFailureDeadLettersAfterMaxDeliveries(t *testing.T) {
	e := start(t, func(p *pipeline.Config, _ *sandbox.Options, _ *pandapon.Config) { p.MaxDeliveries = 3 })
	refund := sandbox.GeneratedRefundID(4)
	e.sb.SetRefundFaults(refund, sandbox.Faults{ServerErrorRate: 1})
	in := testkit.Lookup(refund)
	e.publish(in)
	dl := e.dlq.WaitN(t, 1, 15*time.Second)[0]
	if got := dl.Headers().Get(pipeline.HeaderDLQDeliveries); got != "3" {
		t.Errorf("%s = %q, want 3", pipeline.HeaderDLQDeliveries, got)
	}
	if reason := dl.Headers().Get(pipeline.HeaderDLQReason); !strings.Contains(reason, "delivery 3 of 3") || !strings.Contains(reason, "503") {
		t.Errorf("reason %q should say it failed on the last delivery with HTTP 503", reason)
	}
	if dl.Subject() != "pandapon.dlq.refund.lookup.requested" {
		t.Errorf("dead letter on %s", dl.Subject())
	}
	e.settled()
	if n := len(e.outputs.Msgs()); n != 0 {
		t.Errorf("%d outputs for an input that never succeeded", n)
	}
}

func TestInvalidInputsAreDeadLetteredAtOnceAndDoNotBlock(t *testing.T) {
	e := start(t)
	mk := func(subject string, header nats.Header, data string) *nats.Msg {
		m := nats.NewMsg(subject)
		for k, v := range header {
			m.Header[k] = v
		}
		m.Data = []byte(data)
		return m
	}
	binary := func(typ, id string) nats.Header {
		return nats.Header{"ce-specversion": {"1.0"}, "ce-id": {id}, "ce-source": {"erp"}, "ce-type": {typ}, "Content-Type": {"application/json"}, "X-Erp-Batch": {"42"}}
	}
	tests := []struct {
		name, subject, reasonHas string
		msg                      *nats.Msg
	}{
		{"not a CloudEvent", "pandapon.refund.lookup.requested", "not a CloudEvent",
			mk("pandapon.refund.lookup.requested", nats.Header{"X-Erp-Batch": {"42"}}, `{"refundId":"110002687818"}`)},
		{"unknown type", "pandapon.refund.lookup.requested", "refund.deleted",
			mk("pandapon.refund.lookup.requested", binary("refund.deleted", "bad-1"), `{"refundId":"1"}`)},
		{"missing logisticsNo", "pandapon.return.shipped", "data.logisticsNo",
			mk("pandapon.return.shipped", binary("return.shipped", "bad-2"), `{"refundId":"1","logisticsCompanyCode":"SF","buyerPhone":"1"}`)},
		{"fractional refundId", "pandapon.refund.lookup.requested", "data.refundId",
			mk("pandapon.refund.lookup.requested", binary("refund.lookup.requested", "bad-3"), `{"refundId":1.5}`)},
		{"data not JSON", "pandapon.refund.lookup.requested", "data",
			mk("pandapon.refund.lookup.requested", binary("refund.lookup.requested", "bad-4"), `refundId=1`)},
		{"broken structured event", "pandapon.refund.lookup.requested", "",
			mk("pandapon.refund.lookup.requested", nats.Header{"Content-Type": {"application/cloudevents+json"}}, `{"specversion":"1.0","id":`)},
	}
	for _, tc := range tests {
		testkit.PublishMsg(t, e.js, tc.msg)
	}
	valid := testkit.Lookup("110002687818")
	e.publish(valid)
	e.outputFor(valid.ID())

	// Invalid inputs have no refund to order them by, so they are
	// dead-lettered concurrently: match them by their input sequence.
	bySeq := map[string]jetstream.Msg{}
	for _, dl := range e.dlq.WaitN(t, len(tests), 10*time.Second) {
		bySeq[dl.Headers().Get(pipeline.HeaderDLQStreamSeq)] = dl
	}
	if len(bySeq) != len(tests) {
		t.Fatalf("%d dead letters, want %d", len(bySeq), len(tests))
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dl, ok := bySeq[fmt.Sprint(i+1)]
			if !ok {
				t.Fatalf("no dead letter for input sequence %d", i+1)
			}
			if want := strings.Replace(tc.subject, "pandapon.", "pandapon.dlq.", 1); dl.Subject() != want {
				t.Errorf("dead letter subject %s, want %s", dl.Subject(), want)
			}
			if string(dl.Data()) != string(tc.msg.Data) {
				t.Errorf("payload changed: %q, want %q", dl.Data(), tc.msg.Data)
			}
			for k, v := range tc.msg.Header {
				if !slices.Equal(dl.Headers()[k], v) {
					t.Errorf("header %s = %q, want the original %q", k, dl.Headers()[k], v)
				}
			}
			reason := dl.Headers().Get(pipeline.HeaderDLQReason)
			if reason == "" || !strings.Contains(reason, tc.reasonHas) {
				t.Errorf("reason %q should mention %q", reason, tc.reasonHas)
			}
			if got := dl.Headers().Get(pipeline.HeaderDLQDeliveries); got != "1" {
				t.Errorf("deliveries %q, want 1 (dead-lettered at once)", got)
			}
		})
	}
	e.settled()
	if n := len(e.outputs.Msgs()); n != 1 {
		t.Errorf("%d outputs, want 1: invalid inputs publish nothing", n)
	}
}

// TestGatedStartDoesNotWaitOnInvalidInputs: with the PandaPon client as
// its Gate, a consumer that has had no answer from PandaPon yet pulls one
// input at a time, each waiting for the one before to call PandaPon. An
// invalid input never calls: the pipeline gives its admission back, so a
// backlog of them is dead-lettered at once instead of holding each next
// input for the probe start timeout (5 s each).
func TestGatedStartDoesNotWaitOnInvalidInputs(t *testing.T) {
	e := start(t, func(_ *pipeline.Config, _ *sandbox.Options, cc *pandapon.Config) {
		cc.Breaker = pandapon.BreakerConfig{ConsecutiveFailures: 5}
	})
	e.stop() // to start again with the gate, the backlog waiting
	const invalid = 5
	for i := range invalid {
		m := nats.NewMsg("pandapon.refund.lookup.requested")
		m.Header = nats.Header{"ce-specversion": {"1.0"}, "ce-id": {fmt.Sprint("bad-", i)}, "ce-source": {"erp"}, "ce-type": {"refund.deleted"}}
		m.Data = []byte(`{"refundId":"1"}`)
		testkit.PublishMsg(t, e.js, m)
	}
	valid := testkit.Lookup("110002687818")
	e.publish(valid)
	started := time.Now()
	e.run(&handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, pipeline.Config{
		Topology: e.topo, Concurrency: 8, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Gate: e.client})
	e.outputFor(valid.ID())
	if took := time.Since(started); took > 4*time.Second {
		t.Errorf("the valid input behind %d invalid ones was answered after %s: invalid inputs held the gate", invalid, took)
	}
	if n := len(e.dlq.WaitN(t, invalid, 10*time.Second)); n != invalid {
		t.Errorf("%d dead letters, want %d", n, invalid)
	}
}

// recordingHandler wraps the real handler to observe concurrency.
type recordingHandler struct {
	next     pipeline.Handler
	jitter   bool
	mu       sync.Mutex
	running  map[string]int
	overlaps []string
	order    map[string][]string // refund -> event ids in handling order
	inflight atomic.Int64
	peak     atomic.Int64
}

func (h *recordingHandler) Handle(ctx context.Context, in events.Input) ([]handlers.Output, error) {
	id := in.RefundID()
	h.mu.Lock()
	h.running[id]++
	if h.running[id] > 1 {
		h.overlaps = append(h.overlaps, id)
	}
	h.order[id] = append(h.order[id], in.Event.ID())
	h.mu.Unlock()
	n := h.inflight.Add(1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	if h.jitter {
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // shuffles completion order
	}
	defer func() {
		h.inflight.Add(-1)
		h.mu.Lock()
		h.running[id]--
		h.mu.Unlock()
	}()
	return h.next.Handle(ctx, in)
}

func newRecordingHandler(e *env, jitter bool) *recordingHandler {
	return &recordingHandler{
		next:    &handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects},
		jitter:  jitter,
		running: map[string]int{}, order: map[string][]string{},
	}
}

func TestEventsOfOneRefundRunOneAtATimeInArrivalOrder(t *testing.T) {
	e := start(t)
	e.stop() // replace the default pipeline with an observed one
	h := newRecordingHandler(e, true)
	refunds := []string{"110002687818", sandbox.GeneratedRefundID(1), sandbox.GeneratedRefundID(2)}
	published := map[string][]string{}
	for i := range 60 {
		r := refunds[i%len(refunds)]
		in := testkit.Lookup(r)
		e.publish(in)
		published[r] = append(published[r], in.ID())
	}
	e.run(h, pipeline.Config{Topology: e.topo, Concurrency: 16})
	e.outputs.WaitN(t, 60, 20*time.Second)
	e.settled()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.overlaps) > 0 {
		t.Errorf("events of one refund ran concurrently for refunds %v", h.overlaps)
	}
	for _, r := range refunds {
		if !slices.Equal(h.order[r], published[r]) {
			t.Errorf("refund %s handled in order %v, published %v", r, h.order[r], published[r])
		}
	}
	// Outputs of one refund are stored in the order handled.
	got := map[string][]string{}
	for _, o := range e.outputs.Events(t) {
		got[o.Subject()] = append(got[o.Subject()], fmt.Sprint(o.Extensions()[events.ExtCausationID]))
	}
	for _, r := range refunds {
		if !slices.Equal(got[r], published[r]) {
			t.Errorf("outputs of refund %s in order %v, want %v", r, got[r], published[r])
		}
	}
}

func TestSlowPandaPonDoesNotSerialiseDifferentRefunds(t *testing.T) {
	e := start(t, func(_ *pipeline.Config, s *sandbox.Options, _ *pandapon.Config) {
		s.Faults = sandbox.Faults{Latency: 100 * time.Millisecond}
	})
	e.stop()
	h := newRecordingHandler(e, false)
	const n, concurrency = 64, 32
	for i := range n {
		e.publish(testkit.Lookup(sandbox.GeneratedRefundID(i)))
	}
	e.run(h, pipeline.Config{Topology: e.topo, Concurrency: concurrency})
	e.outputs.WaitN(t, n, 30*time.Second)
	if p := h.peak.Load(); p < concurrency/2 {
		t.Errorf("at most %d handlers ran at once with a 100 ms PandaPon and concurrency %d: the stream is serialised", p, concurrency)
	}
	if p := h.peak.Load(); p > concurrency {
		t.Errorf("%d handlers ran at once, above the limit %d", p, concurrency)
	}
}

func TestShutdownMidLoadLosesNothing(t *testing.T) {
	e := start(t, func(p *pipeline.Config, s *sandbox.Options, _ *pandapon.Config) {
		s.Faults = sandbox.Faults{Latency: 20 * time.Millisecond}
		p.Concurrency = 8
		p.AckWait = 2 * time.Minute
	})
	const n = 200
	ids := map[string]bool{}
	for i := range n {
		in := testkit.Lookup(sandbox.GeneratedRefundID(i % 150))
		ids[in.ID()] = true
		e.publish(in)
	}
	e.outputs.WaitN(t, n/4, 20*time.Second)
	e.stop() // graceful shutdown mid-load
	stoppedAt := len(e.outputs.Msgs())
	if stoppedAt >= n {
		t.Skipf("all %d inputs were done before shutdown; nothing to test on this machine", n)
	}
	// A new process picks up the rest. Inputs the first one held were
	// handed back (Nak), so they come at once, long before the 2-minute ack
	// wait would have released them.
	e.run(&handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, pipeline.Config{Topology: e.topo, Concurrency: 8, AckWait: 2 * time.Minute})
	e.outputs.WaitN(t, n, time.Minute)
	e.settled()
	seen := map[string]int{}
	for _, o := range e.outputs.Events(t) {
		seen[fmt.Sprint(o.Extensions()[events.ExtCausationID])]++
	}
	var lost, dup int
	for id := range ids {
		switch seen[id] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	t.Logf("inputs %d, outputs %d (%d before shutdown), lost %d, duplicates %d", n, len(e.outputs.Msgs()), stoppedAt, lost, dup)
	if lost != 0 || dup != 0 || len(seen) != n {
		t.Errorf("lost %d, duplicated %d of %d inputs across a graceful restart", lost, dup, n)
	}
}

func TestPanickingHandlerDoesNotKillTheConsumer(t *testing.T) {
	e := start(t, func(p *pipeline.Config, _ *sandbox.Options, _ *pandapon.Config) { p.MaxDeliveries = 2 })
	e.stop()
	h := &panicky{next: &handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, refund: "110000303674"}
	e.run(h, pipeline.Config{Topology: e.topo, MaxDeliveries: 2, BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	bad := testkit.Lookup("110000303674")
	good := testkit.Lookup("110002687818")
	e.publish(bad)
	e.publish(good)
	e.outputFor(good.ID())
	dl := e.dlq.WaitN(t, 1, 10*time.Second)[0]
	if r := dl.Headers().Get(pipeline.HeaderDLQReason); !strings.Contains(r, "panicked") {
		t.Errorf("reason %q should say the handler panicked", r)
	}
}

type panicky struct {
	next   pipeline.Handler
	refund string
}

func (p *panicky) Handle(ctx context.Context, in events.Input) ([]handlers.Output, error) {
	if in.RefundID() == p.refund {
		panic("boom")
	}
	return p.next.Handle(ctx, in)
}

func TestOpenCircuitTurnsAnOutageIntoDelayedRedelivery(t *testing.T) {
	e := start(t, func(p *pipeline.Config, s *sandbox.Options, c *pandapon.Config) {
		s.Faults = sandbox.Faults{ServerErrorRate: 1}
		c.MaxRetries = -1
		c.Breaker = pandapon.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 500 * time.Millisecond}
		p.MaxDeliveries = 100
		p.BackoffMin, p.BackoffMax = 50*time.Millisecond, 100*time.Millisecond
	})
	const n = 20
	var ids []string
	for i := range n {
		in := testkit.Lookup(sandbox.GeneratedRefundID(100 + i))
		ids = append(ids, in.ID())
		e.publish(in)
	}
	// Let the inputs cycle through several redeliveries during the outage.
	testkit.Eventually(t, 20*time.Second, func() bool {
		info := testkit.ConsumerInfo(t, e.js, e.topo)
		return info.NumRedelivered >= n
	}, "every input redelivered during the outage")
	// Inputs waiting for their redelivery hold server-side slots: there are
	// enough of them for a large outage's worth of inputs to leave room for
	// new ones (it was JetStream's default, 1000).
	if got := testkit.ConsumerInfo(t, e.js, e.topo).Config.MaxAckPending; got < 10000 {
		t.Errorf("the durable consumer's MaxAckPending is %d, want at least 10000", got)
	}
	outage := e.sb.Stats().FaultsInjected[sandbox.FaultServerError]
	// Without the breaker every delivery of every input would reach PandaPon.
	if outage >= 2*n {
		t.Errorf("PandaPon received %d failing requests for %d inputs redelivered at least once: the breaker did not hold calls back", outage, n)
	}
	e.sb.SetFaults(sandbox.Faults{})
	for _, id := range ids {
		if out := e.outputFor(id); out.Type() != events.TypeRefundUpdated {
			t.Errorf("input %s: output %s", id, out.Type())
		}
	}
	e.settled()
	if len(e.dlq.Msgs()) != 0 {
		t.Errorf("%d inputs dead-lettered during a PandaPon outage shorter than the delivery budget", len(e.dlq.Msgs()))
	}
	t.Logf("outage: %d failing requests reached PandaPon for %d inputs", outage, n)
}

// TestSlowCommitIsNotSubmittedTwice: PandaPon carries a submission out
// after the client stopped waiting for it. The input must come back only
// after the handler's RecheckDelay, find the parcel recorded, and submit
// nothing again (an immediate redelivery would query too early and submit
// a second time).
func TestSlowCommitIsNotSubmittedTwice(t *testing.T) {
	e := start(t)
	e.stop()
	var posts atomic.Int32
	committed := make(chan struct{})
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			e.sb.Sandbox.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		late := r.Clone(context.Background())
		late.Body = io.NopCloser(bytes.NewReader(body))
		if posts.Add(1) == 1 {
			go func() { // PandaPon finishes the work long after the client gave up
				time.Sleep(800 * time.Millisecond)
				e.sb.Sandbox.ServeHTTP(httptest.NewRecorder(), late)
				close(committed)
			}()
			<-r.Context().Done()
			return
		}
		e.sb.Sandbox.ServeHTTP(w, late)
	}))
	t.Cleanup(gateway.Close)
	client, err := pandapon.New(pandapon.Config{BaseURL: gateway.URL, RateLimit: -1, AttemptTimeout: 300 * time.Millisecond,
		Credentials: pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret}})
	if err != nil {
		t.Fatal(err)
	}
	const recheck = 1500 * time.Millisecond
	e.run(&handlers.Handler{PandaPon: client, Subjects: e.topo.Subjects, RecheckDelay: recheck},
		pipeline.Config{Topology: e.topo, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})

	in := testkit.ReturnShipped(sandbox.GeneratedRefundID(42), "SF", "SF-SLOW-1")
	start := time.Now()
	e.publish(in)
	out := e.outputFor(in.ID())
	took := time.Since(start)
	<-committed
	if v := refundView(t, out); out.Type() != events.TypeRefundUpdated || v.LogisticsNo != "SF-SLOW-1" {
		t.Errorf("output %s with logisticsNo %q, want refund.updated with SF-SLOW-1", out.Type(), v.LogisticsNo)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("the submission reached PandaPon %d times, want 1", n)
	}
	if st := e.sb.Stats(); st.DuplicateSubmissions != 0 || st.AcceptedSubmissions != 1 {
		t.Errorf("sandbox accepted %d submissions and refused %d duplicates, want 1 and 0", st.AcceptedSubmissions, st.DuplicateSubmissions)
	}
	if took < recheck {
		t.Errorf("answered after %s, before the recheck delay %s", took, recheck)
	}
	e.settled()
}

// TestOversizedPoisonInputIsDeadLetteredWithoutPayload: an input close to
// NATS's max_payload cannot be stored again with the reason headers. It
// used to be redelivered until the server gave up on it, settled by
// nobody; now its dead letter keeps everything but the payload.
func TestOversizedPoisonInputIsDeadLetteredWithoutPayload(t *testing.T) {
	e := start(t)
	m := nats.NewMsg("pandapon.return.shipped")
	m.Header.Set("Content-Type", "text/plain")
	m.Data = bytes.Repeat([]byte("x"), 1<<20-200) // the embedded server's max_payload is 1 MiB
	testkit.PublishMsg(t, e.js, m)
	dl := e.dlq.WaitN(t, 1, 15*time.Second)[0]
	h := dl.Headers()
	if len(dl.Data()) != 0 {
		t.Errorf("dead letter carries %d bytes of payload, want none", len(dl.Data()))
	}
	omitted := h.Get(topology.HeaderDLQPayloadOmitted)
	for _, want := range []string{fmt.Sprintf("%d bytes", len(m.Data)), "message 1 of stream " + e.topo.InputStream} {
		if !strings.Contains(omitted, want) {
			t.Errorf("%s = %q, want it to contain %q", topology.HeaderDLQPayloadOmitted, omitted, want)
		}
	}
	if h.Get(topology.HeaderDLQReason) == "" || h.Get(topology.HeaderDLQStreamSeq) != "1" || h.Get("Content-Type") != "text/plain" {
		t.Errorf("dead letter headers %v: want the reason, stream sequence 1 and the original headers", h)
	}
	e.settled()
}

// TestDeadLetterOutageDoesNotStrandInputs: while the dead-letter stream
// refuses messages, a poison input keeps coming back, for longer than any
// server-side delivery limit would allow, and is dead-lettered once the
// stream accepts again.
func TestDeadLetterOutageDoesNotStrandInputs(t *testing.T) {
	e := start(t)
	e.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dlq, err := e.js.Stream(ctx, e.topo.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	full := dlq.CachedInfo().Config
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	if _, err := e.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	testkit.PublishMsg(t, e.js, nats.NewMsg(e.topo.Subjects.DeadLetter("pandapon.filler"))) // the stream is now full
	metrics := pipeline.NewMetrics(nil)
	e.run(&handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, pipeline.Config{Topology: e.topo, Metrics: metrics,
		MaxDeliveries: 2, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	bad := testkit.NewInput(events.TypeReturnShipped, map[string]any{"refundId": "110002687818"}) // lacks required fields
	e.publish(bad)
	failures := func() float64 {
		var m dto.Metric
		if err := metrics.DeadLetterFailed.WithLabelValues(events.TypeReturnShipped).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return failures() >= 10 }, "10 failed attempts to dead-letter")
	if err := dlq.Purge(ctx); err != nil { // the operator makes room
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		for _, m := range e.dlq.Msgs() {
			if m.Headers().Get(events.HeaderPrefix+"id") == bad.ID() {
				return true
			}
		}
		return false
	}, "the dead letter of input %s", bad.ID())
	e.settled()
}

// TestRepeatedReturnShippedOnTwoReplicasIsSubmittedOnce: a producer
// publishes the same parcel twice (two event ids) and two replicas take one
// each at the same moment. Both find it unrecorded; the submission lease
// lets one submit, and the other answers from PandaPon's state afterwards.
func TestRepeatedReturnShippedOnTwoReplicasIsSubmittedOnce(t *testing.T) {
	e := start(t, func(_ *pipeline.Config, s *sandbox.Options, _ *pandapon.Config) {
		s.Faults = sandbox.Faults{Latency: 200 * time.Millisecond} // both query before either submits
	})
	e.stop()
	_, js := testkit.Connect(t, e.nats)
	h := &handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects, RecheckDelay: time.Second,
		Leases: submitlease.New(js, e.topo.SubmissionsBucket)}
	// The lease holds the other replica off until the holder's handling
	// deadline plus RecheckDelay: 3 s + 1 s here.
	cfg := pipeline.Config{Topology: e.topo, Concurrency: 1, MaxInFlight: 1, HandlerTimeout: 3 * time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	e.run(h, cfg)
	e.run(h, cfg)
	refund := sandbox.GeneratedRefundID(21)
	first, again := testkit.ReturnShipped(refund, "SF", "SF999"), testkit.ReturnShipped(refund, "SF", "SF999")
	e.publish(first)
	e.publish(again)
	for _, in := range []event.Event{first, again} {
		out := e.outputFor(in.ID())
		if v := refundView(t, out); out.Type() != events.TypeRefundUpdated || v.LogisticsNo != "SF999" {
			t.Errorf("answer to %s: %s with logisticsNo %q, want refund.updated with SF999", in.ID(), out.Type(), v.LogisticsNo)
		}
	}
	if st := e.sb.Stats(); st.Requests[sandbox.PathSubmitLogistics] != 1 || st.AcceptedSubmissions != 1 {
		t.Errorf("PandaPon received %d submissions (%d accepted), want 1", st.Requests[sandbox.PathSubmitLogistics], st.AcceptedSubmissions)
	}
	e.settled()
}

// countingHandler counts handlings per input id.
type countingHandler struct {
	next pipeline.Handler
	mu   sync.Mutex
	n    map[string]int
}

func (h *countingHandler) Handle(ctx context.Context, in events.Input) ([]handlers.Output, error) {
	h.mu.Lock()
	h.n[in.Event.ID()]++
	h.mu.Unlock()
	return h.next.Handle(ctx, in)
}

func (h *countingHandler) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[id]
}

// TestDeletedConsumerIsRecreatedAfterItsAckFloor: an operator deletes the
// durable consumer (or its state is lost). The pipeline recreates it, and
// must not replay the input stream's history, up to 7 days of answered
// inputs, to PandaPon and to subscribers beyond the duplicate window.
func TestDeletedConsumerIsRecreatedAfterItsAckFloor(t *testing.T) {
	e := start(t)
	e.stop()
	h := &countingHandler{next: &handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, n: map[string]int{}}
	e.run(h, pipeline.Config{Topology: e.topo, Concurrency: 4})
	var answered []string
	for i := range 3 {
		in := testkit.Lookup(sandbox.GeneratedRefundID(i))
		answered = append(answered, in.ID())
		e.publish(in)
	}
	e.outputs.WaitN(t, 3, 15*time.Second)
	e.settled()
	testkit.Eventually(t, 10*time.Second, func() bool { return pipeline.AckFloorSeen(e.last) == 3 }, "the pipeline to see ack floor 3")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, e.topo.InputStream, e.topo.Durable); err != nil {
		t.Fatal(err)
	}
	var cons jetstream.Consumer
	testkit.Eventually(t, 15*time.Second, func() bool {
		var err error
		cons, err = e.js.Consumer(ctx, e.topo.InputStream, e.topo.Durable)
		return err == nil
	}, "the consumer recreated")
	if cfg := cons.CachedInfo().Config; cfg.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cfg.OptStartSeq != 4 {
		t.Errorf("recreated consumer delivers by %v from %d, want by start sequence from 4", cfg.DeliverPolicy, cfg.OptStartSeq)
	}
	// Inputs published after the loss are handled; the answered ones are not.
	next := testkit.Lookup(sandbox.GeneratedRefundID(3))
	e.publish(next)
	e.outputFor(next.ID())
	e.settled()
	for _, id := range answered {
		if n := h.count(id); n != 1 {
			t.Errorf("answered input %s handled %d times", id, n)
		}
	}
}

// TestRecreatedStreamIsConsumedFromItsStart: when the input stream itself
// was deleted and recreated, the old ack floor means nothing: the new
// consumer starts at the new stream's first message.
func TestRecreatedStreamIsConsumedFromItsStart(t *testing.T) {
	e := start(t)
	for i := range 5 {
		e.publish(testkit.Lookup(sandbox.GeneratedRefundID(i)))
	}
	e.outputs.WaitN(t, 5, 15*time.Second)
	e.settled()
	testkit.Eventually(t, 10*time.Second, func() bool { return pipeline.AckFloorSeen(e.last) == 5 }, "the pipeline to see ack floor 5")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, e.topo.InputStream); err != nil {
		t.Fatal(err)
	}
	// Recreated at once, by another process as it were: the pipeline's next
	// poll finds the consumer missing in a stream that is not the old one.
	if err := e.topo.EnsureStreams(ctx, e.js); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() bool {
		_, err := e.js.Consumer(ctx, e.topo.InputStream, e.topo.Durable)
		return err == nil
	}, "the stream and consumer recreated")
	// Sequence 1 of the new stream is below the old floor: it must be handled.
	in := testkit.Lookup(sandbox.GeneratedRefundID(9))
	e.publish(in)
	e.outputFor(in.ID())
	e.settled()
}

// TestDeadLetteredInputsAreLoggedWithWhatCanBeReadOfThem: the log line of
// an input that failed validation names its event id and refund id when
// they can be read, in binary and structured mode alike, as "publisher dlq
// list" does.
func TestDeadLetteredInputsAreLoggedWithWhatCanBeReadOfThem(t *testing.T) {
	logs := &testkit.SyncBuffer{}
	e := start(t, func(c *pipeline.Config, _ *sandbox.Options, _ *pandapon.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	binary := nats.NewMsg("pandapon.return.shipped")
	binary.Header = nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"bin-5"}, "ce-source": {"erp"}, "ce-type": {"return.shipped"}}
	binary.Data = []byte(`{"refundId":"110000303674","logisticsCompanyCode":"SF","buyerPhone":"1"}`) // no logisticsNo
	structured := nats.NewMsg("pandapon.refund.lookup.requested")
	structured.Header = nats.Header{"Content-Type": {"application/cloudevents+json"}}
	structured.Data = []byte(`{"specversion":"1.0","id":"st-1","source":"erp","type":"refund.lookup.requested","data":{"refundId":110002687818.5}}`)
	testkit.PublishMsg(t, e.js, binary)
	testkit.PublishMsg(t, e.js, structured)
	e.dlq.WaitN(t, 2, 10*time.Second)
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Count(logs.String(), `"outcome":"dead_lettered"`) == 2 }, "two dead_lettered log lines")
	for _, want := range []string{`"event_id":"bin-5","event_type":"return.shipped","refund_id":"110000303674"`,
		`"event_id":"st-1","event_type":"refund.lookup.requested","refund_id":"110002687818.5"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %s:\n%s", want, logs.String())
		}
	}
}

// TestDrainDeadlineCancelsRunningHandlers: a handler still running when
// the drain deadline passes is cancelled with the drain deadline as cause,
// and its input is handed back, neither dead-lettered nor lost: the next
// consumer handles it.
func TestDrainDeadlineCancelsRunningHandlers(t *testing.T) {
	e := start(t)
	e.stop()
	stuck := &stuckHandler{started: make(chan struct{}, 1), causes: make(chan error, 1), release: make(chan struct{})}
	stop := e.run(stuck, pipeline.Config{Topology: e.topo, DrainTimeout: 300 * time.Millisecond, MaxDeliveries: 1})
	t.Cleanup(func() { close(stuck.release) }) // runs before stop: never hang the test
	in := testkit.Lookup("110002687818")
	e.publish(in)
	select {
	case <-stuck.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never started")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case cause := <-stuck.causes:
		if cause == nil || !strings.Contains(cause.Error(), "drain deadline") {
			t.Errorf("the handler's context ended with cause %v, want the drain deadline", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the running handler was not cancelled at the drain deadline")
	}
	<-stopped

	// Handed back: a consumer started now answers it (MaxDeliveries 1
	// would dead-letter an input that had used its delivery by failing).
	e.run(&handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, pipeline.Config{Topology: e.topo, MaxDeliveries: 2})
	e.outputFor(in.ID())
	e.settled()
	if n := len(e.dlq.Msgs()); n != 0 {
		t.Errorf("%d dead letters; the input cut off by the drain deadline must be handed back", n)
	}
}

// TestHandlerOutlivingItsTimeoutPastTheDrainDeadlineIsHandedBack: a
// handler that goes on after its own HandlerTimeout ended its context, and
// fails only once the drain deadline has passed, hands its input back like
// any handler cut off by the deadline: not dead-lettered, answered by the
// next consumer.
func TestHandlerOutlivingItsTimeoutPastTheDrainDeadlineIsHandedBack(t *testing.T) {
	e := start(t)
	e.stop()
	drained := &signalOn{msg: "drain deadline reached, cancelled running handlers", ch: make(chan struct{})}
	h := &lingeringHandler{started: make(chan struct{}, 1), after: drained.ch}
	stop := e.run(h, pipeline.Config{Topology: e.topo, HandlerTimeout: 100 * time.Millisecond,
		DrainTimeout: 300 * time.Millisecond, MaxDeliveries: 1, Logger: slog.New(drained)})
	in := testkit.Lookup("110002687818")
	e.publish(in)
	select {
	case <-h.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never started")
	}
	stop()

	e.run(&handlers.Handler{PandaPon: e.client, Subjects: e.topo.Subjects}, pipeline.Config{Topology: e.topo, MaxDeliveries: 2})
	e.outputFor(in.ID())
	e.settled()
	if n := len(e.dlq.Msgs()); n != 0 {
		t.Errorf("%d dead letters; an input whose handler failed after the drain deadline must be handed back", n)
	}
}

// lingeringHandler outlives its context: it fails only once after is
// closed.
type lingeringHandler struct {
	started chan struct{}
	after   <-chan struct{}
}

func (l *lingeringHandler) Handle(ctx context.Context, _ events.Input) ([]handlers.Output, error) {
	l.started <- struct{}{}
	<-ctx.Done() // its HandlerTimeout
	<-l.after
	return nil, errors.New("failed after the drain deadline")
}

// signalOn is a slog.Handler that closes ch at the first record with
// message msg, and discards every record.
type signalOn struct {
	msg  string
	ch   chan struct{}
	once sync.Once
}

func (s *signalOn) Enabled(context.Context, slog.Level) bool { return true }
func (s *signalOn) Handle(_ context.Context, r slog.Record) error {
	if r.Message == s.msg {
		s.once.Do(func() { close(s.ch) })
	}
	return nil
}
func (s *signalOn) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *signalOn) WithGroup(string) slog.Handler      { return s }

// stuckHandler blocks until its context ends, and reports the cause, or
// until release is closed.
type stuckHandler struct {
	started chan struct{}
	causes  chan error
	release chan struct{}
}

func (s *stuckHandler) Handle(ctx context.Context, _ events.Input) ([]handlers.Output, error) {
	s.started <- struct{}{}
	select {
	case <-ctx.Done():
		s.causes <- context.Cause(ctx)
		return nil, ctx.Err()
	case <-s.release:
		return nil, errors.New("released by the test")
	}
}
