package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

func TestFaultKinds(t *testing.T) {
	tests := []struct {
		name       string
		faults     sandbox.Faults
		kind       string
		wantStatus int
		check      func(t *testing.T, r response)
	}{
		{"server error", sandbox.Faults{ServerErrorRate: 1}, sandbox.FaultServerError, http.StatusServiceUnavailable, nil},
		{"rate limit, default Retry-After", sandbox.Faults{RateLimitRate: 1}, sandbox.FaultRateLimit, http.StatusTooManyRequests,
			func(t *testing.T, r response) {
				if got := r.header.Get("Retry-After"); got != "1" {
					t.Errorf("Retry-After = %q, want 1", got)
				}
			}},
		{"rate limit, Retry-After rounded up", sandbox.Faults{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond}, sandbox.FaultRateLimit,
			http.StatusTooManyRequests, func(t *testing.T, r response) {
				if got := r.header.Get("Retry-After"); got != "2" {
					t.Errorf("Retry-After = %q, want 2 (1.5 s rounded up)", got)
				}
			}},
		{"timeout answers 504 after Hang", sandbox.Faults{TimeoutRate: 1, Hang: 20 * time.Millisecond}, sandbox.FaultTimeout,
			http.StatusGatewayTimeout, nil},
		{"malformed body", sandbox.Faults{MalformedRate: 1}, sandbox.FaultMalformed, http.StatusOK,
			func(t *testing.T, r response) {
				if json.Valid(r.body) {
					t.Errorf("malformed body is valid JSON: %s", r.body)
				}
				if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
					t.Errorf("Content-Type %q, want application/json (the body only looks like an envelope)", r.header.Get("Content-Type"))
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := start(t, sandbox.Options{Faults: tt.faults})
			r := submit(t, srv.URL, submission(sandbox.SeedAwaitingReturn, "SF1"))
			if r.status != tt.wantStatus {
				t.Fatalf("HTTP %d, want %d\n%s", r.status, tt.wantStatus, r.body)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			st := srv.Stats()
			if st.FaultsInjected[tt.kind] != 1 || st.Requests[sandbox.PathSubmitLogistics] != 1 {
				t.Errorf("Stats = %+v, want 1 %s fault and 1 request", st, tt.kind)
			}
			if st.AcceptedSubmissions != 0 || st.Refused != 0 {
				t.Errorf("faulted request reached the API: %+v", st)
			}
			if rs, _ := srv.Refund(sandbox.SeedAwaitingReturn); rs.RefundStatus != 20 || rs.LogisticsNo != "" {
				t.Errorf("faulted submission changed the refund: %+v", rs)
			}
		})
	}
}

func TestFaultsApplyBeforeAuthentication(t *testing.T) {
	srv := start(t, sandbox.Options{Faults: sandbox.Faults{ServerErrorRate: 1}})
	r := send(t, newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)) // unsigned
	if r.status != http.StatusServiceUnavailable || srv.Stats().Refused != 0 {
		t.Errorf("unsigned request under a 100%% server-error fault: HTTP %d, Refused %d; want 503 and 0", r.status, srv.Stats().Refused)
	}
}

func TestFaultedSubmissionSucceedsWhenRetriedAfterFaultsClear(t *testing.T) {
	srv := start(t, sandbox.Options{Faults: sandbox.Faults{ServerErrorRate: 1}})
	if r := submit(t, srv.URL, submission(sandbox.SeedAwaitingReturn, "SF1")); r.status != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d, want 503", r.status)
	}
	srv.SetFaults(sandbox.Faults{})
	wantCode(t, submit(t, srv.URL, submission(sandbox.SeedAwaitingReturn, "SF1")), sandbox.CodeSuccess)
}

func TestFaultTimeoutEndsWhenClientGivesUp(t *testing.T) {
	sb := sandbox.New(sandbox.Options{Faults: sandbox.Faults{TimeoutRate: 1, Hang: time.Hour}})
	ts := httptest.NewServer(sb)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req := newRequest(t, ctx, http.MethodGet, queryURL(ts.URL, sandbox.SeedRefundOnly), nil)
	creds.SignRequest(req.Header, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("hanging request answered HTTP %d", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the client's deadline", err)
	}
	// httptest's Close waits for every handler: it returns only if the
	// hanging handler noticed the client leave.
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("handler still hanging 10 s after the client gave up")
	}
	if got := sb.Stats().FaultsInjected[sandbox.FaultTimeout]; got != 1 {
		t.Errorf("timeout faults = %d, want 1", got)
	}
}

func TestFaultLatency(t *testing.T) {
	srv := start(t, sandbox.Options{Faults: sandbox.Faults{Latency: 30 * time.Millisecond}})
	begin := time.Now()
	wantCode(t, query(t, srv.URL, sandbox.SeedRefundOnly), sandbox.CodeSuccess)
	if d := time.Since(begin); d < 30*time.Millisecond {
		t.Errorf("answered after %v, want at least the 30ms latency", d)
	}
}

func TestFaultLatencyEndsWhenClientGivesUp(t *testing.T) {
	sb := sandbox.New(sandbox.Options{Faults: sandbox.Faults{Latency: time.Hour}})
	ts := httptest.NewServer(sb)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req := newRequest(t, ctx, http.MethodGet, queryURL(ts.URL, sandbox.SeedRefundOnly), nil)
	creds.SignRequest(req.Header, time.Now())
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("delayed request answered HTTP %d before the client's deadline", resp.StatusCode)
	}
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("handler still delaying 10 s after the client gave up")
	}
}

func TestRefundFaultsAffectOnlyThatRefund(t *testing.T) {
	srv := start(t, sandbox.Options{})
	srv.SetRefundFaults(sandbox.SeedAwaitingReturn, sandbox.Faults{ServerErrorRate: 1})

	if r := query(t, srv.URL, sandbox.SeedAwaitingReturn); r.status != http.StatusServiceUnavailable {
		t.Errorf("query of the faulted refund: HTTP %d, want 503", r.status)
	}
	if r := submit(t, srv.URL, submission(json.Number(sandbox.SeedAwaitingReturn), "SF1")); r.status != http.StatusServiceUnavailable {
		t.Errorf("submission naming the faulted refund (as a number): HTTP %d, want 503", r.status)
	}
	if r := send(t, signed(t, http.MethodGet, srv.URL+"/open/order/refund/cancel/"+sandbox.SeedAwaitingReturn, nil)); r.status != http.StatusServiceUnavailable {
		t.Errorf("cancel of the faulted refund: HTTP %d, want 503", r.status)
	}
	wantCode(t, query(t, srv.URL, sandbox.SeedRefundOnly), sandbox.CodeSuccess)
	wantCode(t, submit(t, srv.URL, submission(sandbox.SeedReturned, "SF1")), sandbox.CodeStateConflict)

	// Per-refund faults replace the sandbox-wide ones for that refund.
	srv.SetFaults(sandbox.Faults{RateLimitRate: 1})
	srv.SetRefundFaults(sandbox.SeedAwaitingReturn, sandbox.Faults{MalformedRate: 1})
	if r := query(t, srv.URL, sandbox.SeedAwaitingReturn); r.status != http.StatusOK || json.Valid(r.body) {
		t.Errorf("faulted refund under sandbox-wide rate limit: HTTP %d valid JSON %v, want its own malformed fault", r.status, json.Valid(r.body))
	}
	if r := query(t, srv.URL, sandbox.SeedRefundOnly); r.status != http.StatusTooManyRequests {
		t.Errorf("other refund: HTTP %d, want the sandbox-wide 429", r.status)
	}

	// Zero faults clear the override.
	srv.SetFaults(sandbox.Faults{})
	srv.SetRefundFaults(sandbox.SeedAwaitingReturn, sandbox.Faults{})
	wantCode(t, query(t, srv.URL, sandbox.SeedAwaitingReturn), sandbox.CodeSuccess)

	st := srv.Stats()
	want := map[string]int{sandbox.FaultServerError: 3, sandbox.FaultMalformed: 1, sandbox.FaultRateLimit: 1}
	for k, v := range want {
		if st.FaultsInjected[k] != v {
			t.Errorf("FaultsInjected = %v, want %v", st.FaultsInjected, want)
			break
		}
	}
}

func TestFaultDecisionsAreReproducibleAndProportional(t *testing.T) {
	faults := sandbox.Faults{ServerErrorRate: 0.2, RateLimitRate: 0.2, TimeoutRate: 0.2, MalformedRate: 0.2, Hang: time.Nanosecond}
	run := func() []int {
		sb := sandbox.New(sandbox.Options{Faults: faults, RandSeed: 42})
		var statuses []int
		for range 200 {
			req := httptest.NewRequest(http.MethodGet, queryURL("http://sandbox", sandbox.SeedRefundOnly), nil)
			creds.SignRequest(req.Header, time.Now())
			rec := httptest.NewRecorder()
			sb.ServeHTTP(rec, req)
			statuses = append(statuses, rec.Code)
		}
		return statuses
	}
	a, b := run(), run()
	count := map[int]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d: HTTP %d in one run and %d in the other with the same RandSeed", i, a[i], b[i])
		}
		count[a[i]]++
	}
	// 200 OK covers malformed (0.2) and success (0.2); each error 0.2.
	for status, want := range map[int]int{503: 40, 429: 40, 504: 40, 200: 80} {
		if c := count[status]; c < want/2 || c > want*2 {
			t.Errorf("HTTP %d answered %d times of 200, want about %d", status, c, want)
		}
	}
}

func TestFaultsValidate(t *testing.T) {
	for _, tt := range []struct {
		f    sandbox.Faults
		want string
	}{
		{sandbox.Faults{}, ""},
		{sandbox.Faults{ServerErrorRate: 0.5, RateLimitRate: 0.5}, ""},
		{sandbox.Faults{ServerErrorRate: 1.5}, "ServerErrorRate"},
		{sandbox.Faults{MalformedRate: -0.1}, "MalformedRate"},
		{sandbox.Faults{TimeoutRate: 0.6, RateLimitRate: 0.6}, "sum"},
		{sandbox.Faults{Hang: -time.Second}, "Hang"},
	} {
		err := tt.f.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v.Validate() = %v, want an error about %q", tt.f, err, tt.want)
		}
	}
}
