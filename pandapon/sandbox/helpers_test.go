package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// creds are the credentials a sandbox with default Options accepts.
var creds = pandapon.Credentials{
	AccessKey:    sandbox.DefaultAccessKey,
	AccessSecret: sandbox.DefaultAccessSecret,
	UserID:       "2100007341207",
}

func start(t testing.TB, opts sandbox.Options) *sandbox.Server {
	t.Helper()
	srv, err := sandbox.Start("", opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// envelope is PandaPon's response envelope, ids kept raw to tell null from
// string.
type envelope struct {
	RequestID json.RawMessage `json:"requestId"`
	Code      int             `json:"code"`
	DevelopID json.RawMessage `json:"developId"`
	Msg       string          `json:"msg"`
	Data      json.RawMessage `json:"data"`
}

type response struct {
	status int
	header http.Header
	body   []byte
	env    envelope // zero unless the body is an envelope
}

// newRequest builds an unsigned request; body is marshalled unless it is a
// string (sent as is) or nil.
func newRequest(t testing.TB, ctx context.Context, method, u string, body any) *http.Request {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func signed(t testing.TB, method, u string, body any) *http.Request {
	t.Helper()
	req := newRequest(t, context.Background(), method, u, body)
	creds.SignRequest(req.Header, time.Now())
	return req
}

func send(t testing.TB, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	out := response{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && json.Valid(b) {
		if err := json.Unmarshal(b, &out.env); err != nil {
			t.Fatalf("body is not an envelope: %v\n%s", err, b)
		}
	}
	return out
}

func queryURL(base, refundID string) string {
	return base + sandbox.PathQuery + "?refundId=" + url.QueryEscape(refundID)
}

func query(t testing.TB, base, refundID string) response {
	t.Helper()
	return send(t, signed(t, http.MethodGet, queryURL(base, refundID), nil))
}

func submit(t testing.TB, base string, body any) response {
	t.Helper()
	return send(t, signed(t, http.MethodPost, base+sandbox.PathSubmitLogistics, body))
}

// submission is a valid logistics submission body for refundID.
func submission(refundID any, logisticsNo string) map[string]any {
	return map[string]any{
		"refundId":             refundID,
		"logisticsCompanyCode": "SF",
		"logisticsNo":          logisticsNo,
		"buyerPhone":           "15068763422",
		"returnGoodsDesc":      "test",
	}
}

// wantCode fails unless r is an HTTP 200 envelope with code.
func wantCode(t testing.TB, r response, code int) {
	t.Helper()
	if r.status != http.StatusOK || r.env.Code != code {
		t.Fatalf("got HTTP %d code %d msg %q, want HTTP 200 code %d\n%s", r.status, r.env.Code, r.env.Msg, code, r.body)
	}
}

// tree decodes JSON with UseNumber, so numbers keep their literal.
func tree(t testing.TB, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return m
}

// at walks a decoded tree along keys.
func at(t testing.TB, m map[string]any, keys ...string) any {
	t.Helper()
	var v any = m
	for i, k := range keys {
		o, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is %T, not an object", strings.Join(keys[:i], "."), v)
		}
		if v, ok = o[k]; !ok {
			t.Fatalf("%s is missing", strings.Join(keys[:i+1], "."))
		}
	}
	return v
}

// eventually polls cond until it holds, failing after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("after %v: %s", timeout, what)
		case <-tick.C:
		}
	}
}
