package pipeline_test

import (
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/pipeline"
)

func TestTraceContinuesFromInputThroughPandaPonToOutput(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e := start(t, func(p *pipeline.Config, _ *sandbox.Options, c *pandapon.Config) {
		p.TracerProvider = tp
		c.TracerProvider = tp
	})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	traced := testkit.ReturnShipped(sandbox.GeneratedRefundID(11), "SF", "SF777")
	traced.SetExtension(events.ExtTraceparent, "00-"+traceID+"-00f067aa0ba902b7-01")
	traced.SetExtension(events.ExtTracestate, "erp=batch42")
	untraced := testkit.Lookup("110002687818")
	e.publish(traced)
	e.publish(untraced)

	out := e.outputFor(traced.ID())
	if got := out.Extensions()[events.ExtTraceparent]; got != "00-"+traceID+"-00f067aa0ba902b7-01" {
		t.Errorf("output traceparent %v, want the input's, copied", got)
	}
	if got := out.Extensions()[events.ExtTracestate]; got != "erp=batch42" {
		t.Errorf("output tracestate %v, want the input's", got)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(spansOf(exp, traceID)) >= 3 }, "handle span and 2 PandaPon spans of trace %s", traceID)
	names := map[string]int{}
	for _, s := range spansOf(exp, traceID) {
		names[s.Name]++
		if s.Name == "pandabridge handle return.shipped" && s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("handle span kind %v", s.SpanKind)
		}
	}
	for _, want := range []string{"pandabridge handle return.shipped", "PandaPon GET /open/order/refund/query", "PandaPon POST /open/order/refund/render/submit/logistics"} {
		if names[want] == 0 {
			t.Errorf("trace %s lacks span %q; has %v", traceID, want, names)
		}
	}

	// Without an input traceparent, the output carries the trace started
	// by the handling span.
	out2 := e.outputFor(untraced.ID())
	tp2, _ := out2.Extensions()[events.ExtTraceparent].(string)
	parts := strings.Split(tp2, "-")
	if len(parts) != 4 || len(spansOf(exp, parts[1])) == 0 {
		t.Errorf("output traceparent %q does not name a recorded trace", tp2)
	}
}

func spansOf(exp *tracetest.InMemoryExporter, traceID string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() == traceID {
			out = append(out, s)
		}
	}
	return out
}
