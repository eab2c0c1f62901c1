package callbacks_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/pandabridge/pandabridge/callbacks"
	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/topology"
)

const token = "cb-token-0123456789abcdef"

type env struct {
	t    *testing.T
	ns   *embeddednats.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	topo topology.Topology
	url  string
	m    *callbacks.Metrics
}

func start(t *testing.T) *env {
	t.Helper()
	ns := testkit.NATS(t)
	nc, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := callbacks.EnsureStream(ctx, js, topo.Subjects, callbacks.StreamSettings{}); err != nil {
		t.Fatal(err)
	}
	m := callbacks.NewMetrics(nil)
	mux := http.NewServeMux()
	mux.Handle("/pandapon/callback/{token}", callbacks.New(callbacks.Config{
		JetStream: js, Conn: nc, Subjects: topo.Subjects, Token: token, Source: "test", Metrics: m,
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{t: t, ns: ns, nc: nc, js: js, topo: topo, url: srv.URL + "/pandapon/callback/" + token, m: m}
}

func (e *env) post(url, body string) (int, time.Duration) {
	e.t.Helper()
	start := time.Now()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Error(err)
		return 0, 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func (e *env) msgs(stream string) []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) raw() []*jetstream.RawStreamMsg     { return e.msgs(callbacks.StreamName(e.topo.Subjects)) }
func (e *env) lookups() []*jetstream.RawStreamMsg { return e.msgs(e.topo.InputStream) }

func (e *env) received(messageType, outcome string) float64 {
	var m dto.Metric
	if err := e.m.Received.WithLabelValues(messageType, outcome).Write(&m); err != nil {
		e.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func refundCallback(refundID string, ts int64) string {
	body := fmt.Sprintf(`{\"refundId\":\"%s\",\"refundStatus\":20}`, refundID)
	return fmt.Sprintf(`{"messageType":9,"messageBody":"%s","messagePlatform":0,"timestamp":%d}`, body, ts)
}

func TestRefundCallbackIsStoredAndBecomesALookup(t *testing.T) {
	e := start(t)
	body := refundCallback("110000303674", 1700000000000)
	if code, took := e.post(e.url, body); code != http.StatusOK || took > time.Second {
		t.Fatalf("callback answered %d in %s; PandaPon wants 200 within 1000 ms", code, took)
	}
	raw := e.raw()
	if len(raw) != 1 || string(raw[0].Data) != body || raw[0].Subject != "pandapon.callback.raw" {
		t.Fatalf("raw stream: want the body byte for byte on pandapon.callback.raw, got %d messages", len(raw))
	}
	if h := raw[0].Header; h.Get(callbacks.HeaderMessageType) != "9" || h.Get(callbacks.HeaderRefundIDs) != "110000303674" ||
		h.Get(callbacks.HeaderReceivedAt) == "" {
		t.Errorf("raw headers %v lack the message type, refund ids or reception time", h)
	}
	lk := e.lookups()
	if len(lk) != 1 {
		t.Fatalf("input stream holds %d lookups, want 1", len(lk))
	}
	ev, err := events.DecodeNATS(lk[0].Header, lk[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	in, err := events.ParseInput(ev)
	if err != nil || in.Lookup == nil || in.RefundID() != "110000303674" || ev.Subject() != "110000303674" || ev.Source() != "test" {
		t.Fatalf("stored lookup is not a valid refund.lookup.requested for the refund: %v %v", ev, err)
	}
	if e.received("9", "lookup_requested") != 1 {
		t.Error("the callback is not counted as lookup_requested")
	}
}

func TestCallbackStormYieldsBoundedLookups(t *testing.T) {
	e := start(t)
	bodies := []string{refundCallback("120000000001", 1700000000000), refundCallback("120000000001", 1700000005000)}
	const repeats = 500
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
		bad     []int
	)
	work := make(chan string)
	for range 16 {
		wg.Go(func() {
			for b := range work {
				code, took := e.post(e.url, b)
				mu.Lock()
				slowest = max(slowest, took)
				if code != http.StatusOK {
					bad = append(bad, code)
				}
				mu.Unlock()
			}
		})
	}
	for i := range 2 * repeats {
		work <- bodies[i%2]
	}
	close(work)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d callbacks were not answered 200: %v", len(bad), 2*repeats, bad[:min(len(bad), 5)])
	}
	if slowest > time.Second {
		t.Errorf("slowest callback took %s; PandaPon wants 200 within 1000 ms", slowest)
	}
	if n := len(e.lookups()); n != 2 {
		t.Fatalf("1000 callbacks (2 distinct, 500 times each) caused %d lookups, want 2", n)
	}
	if n := len(e.raw()); n != 2 {
		t.Fatalf("raw stream holds %d callbacks, want the 2 distinct ones", n)
	}
	if d := e.received("9", "duplicate"); d != 2*repeats-2 {
		t.Errorf("duplicates counted: %v, want %d", d, 2*repeats-2)
	}
}

func TestLookupIDIsDeterministic(t *testing.T) {
	e := start(t)
	body := refundCallback("110002687818", 1)
	e.post(e.url, body)
	ev, err := events.DecodeNATS(e.lookups()[0].Header, e.lookups()[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	// Known answer: the id must not change across restarts and upgrades,
	// or a callback repeated across an upgrade would cause a second lookup.
	const want = "7a4f4c2a-5f9a-51b0-8121-d72cec22ad81"
	if got := callbacks.LookupID("110002687818", "ce0c2b7bad0a0a1ef4a3fb6a5b7d35f1e5b3f6bb1dab5e05e67b6dc3ee2d7b1f"); got != want {
		t.Fatalf("LookupID = %s, want %s: changing it breaks de-duplication of callbacks repeated across an upgrade", got, want)
	}
	if ev.ID() != callbacks.LookupID("110002687818", e.raw()[0].Header.Get(callbacks.HeaderBodySHA256)) {
		t.Fatalf("lookup id %s is not LookupID(refund, body hash)", ev.ID())
	}
}

func TestUnknownMessageTypeIsStoredAndCounted(t *testing.T) {
	e := start(t)
	body := `{"messageType":42,"messageBody":"{\"orderId\":\"1\"}","messagePlatform":1,"timestamp":1}`
	if code, _ := e.post(e.url, body); code != http.StatusOK {
		t.Fatalf("unknown type answered %d, want 200", code)
	}
	if n := len(e.raw()); n != 1 {
		t.Fatalf("unknown type: %d raw messages stored, want 1", n)
	}
	if n := len(e.lookups()); n != 0 {
		t.Fatalf("unknown type without a refund id caused %d lookups", n)
	}
	if e.received("other", "stored") != 1 {
		t.Error("unknown type is not counted as message_type=other, outcome=stored")
	}
	// An order message (type 3) is stored without lookup too.
	e.post(e.url, `{"messageType":3,"messageBody":{"orderId":"7"},"messagePlatform":0,"timestamp":2}`)
	if e.received("3", "stored") != 1 || len(e.lookups()) != 0 {
		t.Error("order status callback: want stored and counted, no lookup")
	}
	// Type 9 without a refund id: stored, counted, no lookup.
	e.post(e.url, `{"messageType":9,"messageBody":"{}","timestamp":3}`)
	if e.received("9", "no_refund_id") != 1 || len(e.lookups()) != 0 {
		t.Error("refund callback without refund id: want stored and counted no_refund_id, no lookup")
	}
}

func TestUnparseableCallbackIsStoredAndAnswered200(t *testing.T) {
	e := start(t)
	if code, _ := e.post(e.url, "this is not json"); code != http.StatusOK {
		t.Fatalf("answered %d, want 200", code)
	}
	if len(e.raw()) != 1 || e.received("unparseable", "stored") != 1 {
		t.Fatal("an unparseable callback must be stored and counted")
	}
}

func TestURLVerificationGets200(t *testing.T) {
	e := start(t)
	if code, _ := e.post(e.url, ""); code != http.StatusOK {
		t.Fatalf("empty POST answered %d, want 200", code)
	}
	resp, err := http.Get(e.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET answered %d, want 200", resp.StatusCode)
	}
	if len(e.raw()) != 0 {
		t.Error("a verification request was stored")
	}
}

func TestWrongTokenIs404(t *testing.T) {
	e := start(t)
	base := strings.TrimSuffix(e.url, token)
	for _, u := range []string{base + "wrong-token-0123456789abc", base + token[:len(token)-1], base + token + "x"} {
		code, _ := e.post(u, refundCallback("1", 1))
		if code != http.StatusNotFound {
			t.Errorf("POST %s answered %d, want 404", strings.TrimPrefix(u, base), code)
		}
	}
	if len(e.raw())+len(e.lookups()) != 0 {
		t.Fatal("a callback with a wrong token was stored")
	}
}

func TestOversizeCallbackIs413(t *testing.T) {
	e := start(t)
	code, _ := e.post(e.url, `{"messageType":9,"messageBody":"`+strings.Repeat("x", 2<<20)+`"}`)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("answered %d, want 413", code)
	}
}

func TestNATSDownIs503(t *testing.T) {
	e := start(t)
	e.ns.Server.Shutdown()
	e.ns.Server.WaitForShutdown()
	testkit.Eventually(t, 5*time.Second, func() bool { return !e.nc.IsConnected() }, "the client to notice NATS is down")
	code, took := e.post(e.url, refundCallback("1", 1))
	if code != http.StatusServiceUnavailable || took > time.Second {
		t.Fatalf("NATS down: answered %d in %s, want 503 at once (PandaPon pushes again)", code, took)
	}
}

func TestParseFindsRefundIDs(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		typ        int64
		ids        []string
	}{
		{"body as JSON string", `{"messageType":9,"messageBody":"{\"refundId\":\"110000303674\"}"}`, 9, []string{"110000303674"}},
		{"body as object, number id", `{"messageType":"9","messageBody":{"refundId":110000303674}}`, 9, []string{"110000303674"}},
		{"big number keeps every digit", `{"messageType":9,"messageBody":{"refund_id":123456789012345678901234}}`, 9, []string{"123456789012345678901234"}},
		{"reverseOrderId", `{"messageType":9,"messageBody":{"reverseOrderId":"55"}}`, 9, []string{"55"}},
		{"nested and in arrays", `{"messageType":9,"messageBody":{"data":{"items":[{"RefundId":"1"},{"refundId":"2"},{"refundId":"1"}]}}}`, 9, []string{"1", "2"}},
		{"not digits", `{"messageType":9,"messageBody":{"refundId":"R-1"}}`, 9, nil},
		{"float", `{"messageType":9,"messageBody":{"refundId":1.5}}`, 9, nil},
		{"string that is not JSON", `{"messageType":9,"messageBody":"refund 1 changed"}`, 9, nil},
		{"no messageType", `{"messageBody":{"refundId":"7"}}`, -1, []string{"7"}},
		{"too deep", `{"messageType":9,"messageBody":{"a":{"b":{"c":{"d":{"refundId":"1"}}}}}}`, 9, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := callbacks.Parse([]byte(tc.body))
			if !cb.Valid || cb.MessageType != tc.typ {
				t.Fatalf("Parse = %+v, want valid with messageType %d", cb, tc.typ)
			}
			got := slices.Clone(cb.RefundIDs)
			slices.Sort(got)
			if !slices.Equal(got, tc.ids) {
				t.Fatalf("refund ids = %v, want %v", got, tc.ids)
			}
		})
	}
	if cb := callbacks.Parse([]byte("[1]")); cb.Valid {
		t.Error("a JSON array is not a callback")
	}
}

func TestValidateToken(t *testing.T) {
	if err := callbacks.ValidateToken("short"); err == nil || strings.Contains(err.Error(), "short") {
		t.Errorf("short token: err = %v; want an error that does not show the token", err)
	}
	if err := callbacks.ValidateToken("has/slash-0123456789abcdef"); err == nil {
		t.Error("a token with '/' must be refused")
	}
	if err := callbacks.ValidateToken(token); err != nil {
		t.Error(err)
	}
}
