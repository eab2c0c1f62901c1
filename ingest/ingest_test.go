package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/ingest"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/topology"
	"github.com/pandabridge/pandabridge/webhooks"
)

const testToken = "test-token-0123456789abcdef"

var testSecret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type env struct {
	t    *testing.T
	ns   *embeddednats.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	topo topology.Topology
	srv  *httptest.Server
	m    *ingest.Metrics
}

type option func(*ingest.Config)

func withMaxBytes(n int64) option { return func(c *ingest.Config) { c.MaxBytes = n } }
func withoutAuth() option         { return func(c *ingest.Config) { c.Auth = nil } }

func start(t *testing.T, opts ...option) *env {
	t.Helper()
	ns := testkit.NATS(t)
	nc, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	sec, err := webhooks.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	m := ingest.NewMetrics(nil)
	cfg := ingest.Config{
		JetStream: js, Conn: nc, Subjects: topo.Subjects, PublishTimeout: 2 * time.Second,
		Auth:    ingest.NewAuth([]string{testToken}, webhooks.NewVerifier([]webhooks.Secret{sec})),
		Metrics: m,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv := httptest.NewServer(ingest.New(cfg))
	t.Cleanup(srv.Close)
	return &env{t: t, ns: ns, nc: nc, js: js, topo: topo, srv: srv, m: m}
}

// binary builds a binary-mode request of a lookup.
func (e *env) binary(id, data string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/events", strings.NewReader(data))
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-source", "erp")
	req.Header.Set("ce-type", events.TypeRefundLookupRequested)
	req.Header.Set("ce-time", "2026-01-02T03:04:05Z")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	return req
}

func structured(id, eventType, data string) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"erp","type":%q,"datacontenttype":"application/json","data":%s}`, id, eventType, data)
}

func (e *env) post(contentType, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/events", strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return req
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("HTTP %d %s", a.status, a.body) }

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func (a answer) problem(t *testing.T) ingest.Problem {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != ingest.ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %s (%s)", ct, ingest.ContentTypeProblem, a)
	}
	var p ingest.Problem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("problem body: %v (%s)", err, a)
	}
	if p.Status != a.status || p.Type == "" || p.Title == "" {
		t.Fatalf("problem %+v is not a complete RFC 9457 problem for %d", p, a.status)
	}
	return p
}

func (a answer) accepted(t *testing.T) ingest.Accepted {
	t.Helper()
	if a.status != http.StatusAccepted {
		t.Fatalf("want 202, got %s", a)
	}
	var acc ingest.Accepted
	if err := json.Unmarshal(a.body, &acc); err != nil {
		t.Fatal(err)
	}
	return acc
}

// stored returns the messages of the input stream.
func (e *env) stored() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.topo.InputStream)
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

func TestBinaryModeEventIsStoredBeforeTheAnswer(t *testing.T) {
	e := start(t)
	id := uuid.NewString()
	a := do(t, e.binary(id, `{"refundId":110002687818}`))
	acc := a.accepted(t)
	if acc.Accepted != 1 || len(acc.Results) != 1 || acc.Results[0].ID != id || acc.Results[0].Sequence == 0 ||
		acc.Results[0].Stream != e.topo.InputStream || acc.Results[0].Subject != "pandapon.refund.lookup.requested" {
		t.Fatalf("202 body %s does not say where the event is stored", a.body)
	}
	// Stored when answered: no waiting.
	msgs := e.stored()
	if len(msgs) != 1 {
		t.Fatalf("input stream holds %d messages when the 202 arrived, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Header.Get("Nats-Msg-Id") != id || m.Header.Get("ce-id") != id || m.Header.Get("ce-source") != "erp" {
		t.Errorf("stored headers %v: want ce-id and Nats-Msg-Id %s", m.Header, id)
	}
	ev, err := events.DecodeNATS(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	in, err := events.ParseInput(ev)
	if err != nil || in.RefundID() != "110002687818" {
		t.Fatalf("stored event is not the input sent: %v %v", in.RefundID(), err)
	}
}

func TestStructuredModeEventIsStored(t *testing.T) {
	e := start(t)
	id := uuid.NewString()
	a := do(t, e.post("application/cloudevents+json; charset=utf-8", structured(id, events.TypeReturnShipped,
		`{"refundId":"110000303674","logisticsCompanyCode":"SF","logisticsNo":"SF1","buyerPhone":"150","returnGoodsDesc":null}`)))
	a.accepted(t)
	msgs := e.stored()
	if len(msgs) != 1 || msgs[0].Subject != "pandapon.return.shipped" || msgs[0].Header.Get("ce-id") != id {
		t.Fatalf("want the return.shipped stored in binary mode on its subject, got %d messages", len(msgs))
	}
}

func TestBatchStoresEveryEvent(t *testing.T) {
	e := start(t)
	var parts, ids []string
	for i := range 20 {
		id := uuid.NewString()
		ids = append(ids, id)
		parts = append(parts, structured(id, events.TypeRefundLookupRequested, fmt.Sprintf(`{"refundId":"%d"}`, 120000000000+i)))
	}
	a := do(t, e.post(ingest.ContentTypeBatch, "["+strings.Join(parts, ",")+"]"))
	acc := a.accepted(t)
	if acc.Accepted != 20 || len(acc.Results) != 20 {
		t.Fatalf("202 reports %d accepted, want 20", acc.Accepted)
	}
	for i, r := range acc.Results {
		if r.Index != i || r.ID != ids[i] || r.Status != http.StatusAccepted {
			t.Errorf("result %d = %+v, want event %s accepted", i, r, ids[i])
		}
	}
	if n := len(e.stored()); n != 20 {
		t.Fatalf("input stream holds %d events, want 20", n)
	}
}

func TestBatchWithOneInvalidEventPublishesNothing(t *testing.T) {
	e := start(t)
	batch := "[" + structured(uuid.NewString(), events.TypeRefundLookupRequested, `{"refundId":"1"}`) + "," +
		structured("bad-1", events.TypeRefundLookupRequested, `{"refundId":"12a"}`) + "," +
		structured("bad-2", "refund.deleted", `{"refundId":"1"}`) + "]"
	a := do(t, e.post(ingest.ContentTypeBatch, batch))
	if a.status != http.StatusBadRequest {
		t.Fatalf("want 400, got %s", a)
	}
	p := a.problem(t)
	if p.Field != "data.refundId" || p.Index == nil || *p.Index != 1 || len(p.Errors) != 2 ||
		p.Errors[0].ID != "bad-1" || p.Errors[1].Index != 2 || p.Errors[1].Field != "type" {
		t.Fatalf("problem %s does not name each invalid event and field", a.body)
	}
	if n := len(e.stored()); n != 0 {
		t.Fatalf("%d events of a refused batch were published; a batch must be all or nothing", n)
	}
}

func TestBatchRefusesRepeatedIDsAndEmptyOrMalformedBatches(t *testing.T) {
	e := start(t)
	id := uuid.NewString()
	for name, tc := range map[string]struct{ body, field string }{
		"repeated id": {"[" + structured(id, events.TypeRefundLookupRequested, `{"refundId":"1"}`) + "," +
			structured(id, events.TypeRefundLookupRequested, `{"refundId":"2"}`) + "]", "id"},
		"empty":        {"[]", "body"},
		"not an array": {structured(id, events.TypeRefundLookupRequested, `{"refundId":"1"}`), "body"},
	} {
		t.Run(name, func(t *testing.T) {
			a := do(t, e.post(ingest.ContentTypeBatch, tc.body))
			if a.status != http.StatusBadRequest || a.problem(t).Field != tc.field {
				t.Fatalf("want 400 naming %q, got %s", tc.field, a)
			}
		})
	}
	if n := len(e.stored()); n != 0 {
		t.Fatalf("%d events stored from refused batches", n)
	}
}

func TestInvalidEventIs400NamingTheField(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name  string
		req   func() *http.Request
		field string
	}{
		{"refundId missing", func() *http.Request { return e.binary(uuid.NewString(), `{}`) }, "data.refundId"},
		{"refundId not digits", func() *http.Request { return e.binary(uuid.NewString(), `{"refundId":"abc"}`) }, "data.refundId"},
		{"data not JSON", func() *http.Request { return e.binary(uuid.NewString(), `{refundId`) }, "data"},
		{"unknown type", func() *http.Request {
			r := e.binary(uuid.NewString(), `{"refundId":"1"}`)
			r.Header.Set("ce-type", "refund.deleted")
			return r
		}, "type"},
		{"bad time", func() *http.Request {
			r := e.binary(uuid.NewString(), `{"refundId":"1"}`)
			r.Header.Set("ce-time", "yesterday")
			return r
		}, "time"},
		{"no id", func() *http.Request {
			r := e.binary("", `{"refundId":"1"}`)
			r.Header.Del("ce-id")
			return r
		}, "id"},
		{"wrong specversion", func() *http.Request {
			r := e.binary(uuid.NewString(), `{"refundId":"1"}`)
			r.Header.Set("ce-specversion", "0.3")
			return r
		}, "specversion"},
		{"data not JSON content type", func() *http.Request {
			r := e.binary(uuid.NewString(), `refundId=1`)
			r.Header.Set("Content-Type", "text/plain")
			return r
		}, "datacontenttype"},
		{"structured not JSON", func() *http.Request { return e.post(ingest.ContentTypeStructured, `{"specversion":`) }, "payload"},
		{"return.shipped without logisticsNo", func() *http.Request {
			return e.post(ingest.ContentTypeStructured, structured(uuid.NewString(), events.TypeReturnShipped,
				`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"","buyerPhone":"1"}`))
		}, "data.logisticsNo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.req())
			if a.status != http.StatusBadRequest {
				t.Fatalf("want 400, got %s", a)
			}
			if p := a.problem(t); p.Field != tc.field || p.Detail == "" {
				t.Fatalf("problem names field %q (detail %q), want %q", p.Field, p.Detail, tc.field)
			}
		})
	}
	if n := len(e.stored()); n != 0 {
		t.Fatalf("%d invalid events were stored", n)
	}
}

func TestOversizeBodyIs413(t *testing.T) {
	e := start(t, withMaxBytes(1024))
	big := `{"refundId":"1","pad":"` + strings.Repeat("x", 2000) + `"}`
	a := do(t, e.binary(uuid.NewString(), big))
	if a.status != http.StatusRequestEntityTooLarge || a.problem(t).Type != ingest.ProblemTooLarge {
		t.Fatalf("with Content-Length: want 413, got %s", a)
	}
	// Without Content-Length (chunked), the limit holds while reading.
	req := e.binary(uuid.NewString(), "")
	req.Body = io.NopCloser(io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	if a := do(t, req); a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: want 413, got %s", a)
	}
	// Just below the limit is fine.
	if a := do(t, e.binary(uuid.NewString(), `{"refundId":"1"}`)); a.status != http.StatusAccepted {
		t.Fatalf("small event: want 202, got %s", a)
	}
}

func TestUnknownContentTypeIs415(t *testing.T) {
	e := start(t)
	for _, ct := range []string{"text/plain", "", "application/cloudevents+xml", "application/json", "not a / media type"} {
		a := do(t, e.post(ct, `{"specversion":"1.0"}`))
		if a.status != http.StatusUnsupportedMediaType || a.problem(t).Field != "Content-Type" {
			t.Errorf("Content-Type %q: want 415 naming Content-Type, got %s", ct, a)
		}
	}
}

func TestOnlyPOST(t *testing.T) {
	e := start(t)
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if a := do(t, req); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "POST" {
		t.Fatalf("GET: want 405 with Allow: POST, got %s", a)
	}
}

func TestRepeatedEventIsStoredOnce(t *testing.T) {
	e := start(t)
	id := uuid.NewString()
	do(t, e.binary(id, `{"refundId":"1"}`)).accepted(t)
	acc := do(t, e.binary(id, `{"refundId":"1"}`)).accepted(t)
	if !acc.Results[0].Duplicate {
		t.Errorf("a repeat is not flagged duplicate: %+v", acc.Results[0])
	}
	if n := len(e.stored()); n != 1 {
		t.Fatalf("the same event posted twice is stored %d times", n)
	}
}

func signed(e *env, secret, id string, at time.Time, body string) *http.Request {
	req := e.post(ingest.ContentTypeStructured, body)
	req.Header.Del("Authorization")
	sec, err := webhooks.ParseSecret(secret)
	if err != nil {
		e.t.Fatal(err)
	}
	webhooks.SetHeaders(req.Header, sec, id, at, []byte(body))
	return req
}

func TestAuthentication(t *testing.T) {
	e := start(t)
	body := func() string {
		return structured(uuid.NewString(), events.TypeRefundLookupRequested, `{"refundId":"1"}`)
	}
	unauthorized := func(t *testing.T, a answer) {
		t.Helper()
		if a.status != http.StatusUnauthorized {
			t.Fatalf("want 401, got %s", a)
		}
		p := a.problem(t)
		if p.Detail != "" || p.Field != "" || strings.Contains(string(a.body), "signature") || strings.Contains(string(a.body), "token") {
			t.Fatalf("a 401 must not say why: %s", a.body)
		}
	}
	t.Run("no credentials", func(t *testing.T) {
		req := e.post(ingest.ContentTypeStructured, body())
		req.Header.Del("Authorization")
		unauthorized(t, do(t, req))
	})
	t.Run("wrong bearer token", func(t *testing.T) {
		req := e.post(ingest.ContentTypeStructured, body())
		req.Header.Set("Authorization", "Bearer "+testToken+"x")
		unauthorized(t, do(t, req))
	})
	t.Run("prefix of the token", func(t *testing.T) {
		req := e.post(ingest.ContentTypeStructured, body())
		req.Header.Set("Authorization", "Bearer "+testToken[:10])
		unauthorized(t, do(t, req))
	})
	t.Run("basic auth", func(t *testing.T) {
		req := e.post(ingest.ContentTypeStructured, body())
		req.SetBasicAuth("u", testToken)
		unauthorized(t, do(t, req))
	})
	t.Run("bearer token", func(t *testing.T) {
		do(t, e.post(ingest.ContentTypeStructured, body())).accepted(t)
	})
	t.Run("valid signature", func(t *testing.T) {
		do(t, signed(e, testSecret, "msg_"+uuid.NewString(), time.Now(), body())).accepted(t)
	})
	t.Run("signature by another secret", func(t *testing.T) {
		unauthorized(t, do(t, signed(e, "whsec_"+strings.Repeat("QUFB", 8), "msg_x", time.Now(), body())))
	})
	t.Run("stale signature", func(t *testing.T) {
		unauthorized(t, do(t, signed(e, testSecret, "msg_old", time.Now().Add(-10*time.Minute), body())))
	})
	t.Run("tampered body", func(t *testing.T) {
		req := signed(e, testSecret, "msg_t", time.Now(), body())
		req.Body = io.NopCloser(strings.NewReader(body()))
		req.ContentLength = -1
		unauthorized(t, do(t, req))
	})
	t.Run("replayed signature", func(t *testing.T) {
		b, id, at := body(), "msg_"+uuid.NewString(), time.Now()
		before := len(e.stored())
		do(t, signed(e, testSecret, id, at, b)).accepted(t)
		unauthorized(t, do(t, signed(e, testSecret, id, at, b)))
		if n := len(e.stored()) - before; n != 1 {
			t.Fatalf("original and replay stored %d events, want 1", n)
		}
	})
	refused := 0.0
	for _, r := range []string{"missing_credentials", "bad_token", "bad_signature", "bad_timestamp", "replayed"} {
		var m dto.Metric
		if err := e.m.AuthFailures.WithLabelValues(r).Write(&m); err != nil {
			t.Fatal(err)
		}
		refused += m.GetCounter().GetValue()
	}
	if refused != 8 {
		t.Errorf("pandabridge_ingest_auth_failures_total sums to %v, want 8", refused)
	}
}

func TestWithoutAuthEveryoneMayPost(t *testing.T) {
	e := start(t, withoutAuth())
	req := e.post(ingest.ContentTypeStructured, structured(uuid.NewString(), events.TypeRefundLookupRequested, `{"refundId":"1"}`))
	req.Header.Del("Authorization")
	do(t, req).accepted(t)
}

func TestNATSDownIs503ThenStoredWhenItIsBack(t *testing.T) {
	e := start(t)
	port := e.ns.Addr().(*net.TCPAddr).Port
	e.ns.Server.Shutdown()
	e.ns.Server.WaitForShutdown()
	testkit.Eventually(t, 5*time.Second, func() bool { return !e.nc.IsConnected() }, "the client to notice NATS is down")

	id := uuid.NewString()
	a := do(t, e.binary(id, `{"refundId":"1"}`))
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || a.problem(t).Type != ingest.ProblemUnavailable {
		t.Fatalf("NATS down: want 503 with Retry-After, got %s", a)
	}
	batch := "[" + structured(uuid.NewString(), events.TypeRefundLookupRequested, `{"refundId":"1"}`) + "]"
	if a := do(t, e.post(ingest.ContentTypeBatch, batch)); a.status != http.StatusServiceUnavailable {
		t.Fatalf("NATS down, batch: want 503, got %s", a)
	}

	ns, err := embeddednats.Start(embeddednats.Options{Port: port, StoreDir: e.ns.StoreDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	var last answer
	testkit.Eventually(t, 15*time.Second, func() bool {
		last = do(t, e.binary(id, `{"refundId":"1"}`))
		return last.status == http.StatusAccepted
	}, "202 once NATS is back (last: %v)", &last)
	if n := len(e.stored()); n != 1 {
		t.Fatalf("after the retry the input stream holds %d events, want 1", n)
	}
}

func TestPublishTimeoutIs503(t *testing.T) {
	// A stream that does not exist: JetStream never acks.
	ns := testkit.NATS(t)
	nc, js := testkit.Connect(t, ns.URL)
	srv := httptest.NewServer(ingest.New(ingest.Config{JetStream: js, Conn: nc, PublishTimeout: 200 * time.Millisecond}))
	t.Cleanup(srv.Close)
	body := structured(uuid.NewString(), events.TypeRefundLookupRequested, `{"refundId":"1"}`)
	resp, err := http.Post(srv.URL+"/events", ingest.ContentTypeStructured, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("event no stream stores: want 503, got %d", resp.StatusCode)
	}
}
