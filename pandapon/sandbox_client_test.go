package pandapon_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// The client against the sandbox over real HTTP: every endpoint, the
// sandbox's verification of the client's signatures, and its faults.

func newClient(t *testing.T, url string, mod func(*pandapon.Config)) *pandapon.Client {
	t.Helper()
	cfg := pandapon.Config{
		BaseURL:      url,
		Credentials:  pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret, UserID: "2100007341207"},
		RateLimit:    -1,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := pandapon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestQueryEachSeedAgainstSandbox(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: 4})
	c := newClient(t, sb.URL, nil)
	for _, tc := range []struct {
		id             string
		status, typ    int64
		logisticsNo    string
		mustContainRaw string
	}{
		{sandbox.SeedRefundOnly, 100, 1, "", `"payOrderId":"3582133814705377121"`},
		{sandbox.SeedAwaitingReturn, 20, 2, "", ""},
		{sandbox.SeedReturned, 30, 2, "43523253245352543", ""},
		{sandbox.GeneratedRefundID(3), 20, 2, "", `"payOrderId":35821338147`},
	} {
		resp, err := c.QueryRefund(context.Background(), tc.id)
		if err != nil {
			t.Fatalf("QueryRefund(%s): %v", tc.id, err)
		}
		v, err := resp.Refund()
		if err != nil {
			t.Fatal(err)
		}
		if v.RefundID != tc.id || v.RefundStatus.Value != tc.status || v.RefundType.Value != tc.typ || v.LogisticsNo != tc.logisticsNo {
			t.Errorf("refund %s: view %+v", tc.id, v)
		}
		if tc.mustContainRaw != "" && !strings.Contains(string(resp.Data), tc.mustContainRaw) {
			t.Errorf("refund %s: data lacks %s", tc.id, tc.mustContainRaw)
		}
	}
	// A generated refund with a decimal literal keeps it exactly.
	resp, err := c.QueryRefund(context.Background(), sandbox.GeneratedRefundID(0))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resp.Data), `"exchangeRate":12.50`) {
		t.Errorf("12.50 did not stay 12.50: %s", resp.Data)
	}
}

func TestSubmitReturnLogisticsAgainstSandbox(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{})
	c := newClient(t, sb.URL, nil)
	r := pandapon.ReturnLogistics{RefundID: sandbox.SeedAwaitingReturn, LogisticsCompanyCode: "SF", LogisticsNo: "SF00111test", BuyerPhone: "15068763422"}
	resp, err := c.SubmitReturnLogistics(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := resp.Refund(); v.RefundStatus.Value != 30 || v.GoodsStatus.Value != 5 || v.LogisticsNo != "SF00111test" || v.LogisticsCompanyCode != "SF" {
		t.Errorf("after submission: %+v", v)
	}
	_, err = c.SubmitReturnLogistics(context.Background(), r)
	var ae *pandapon.APIError
	if !errors.As(err, &ae) || ae.Code != sandbox.CodeStateConflict {
		t.Fatalf("second submission: %v, want business error %d", err, sandbox.CodeStateConflict)
	}
	if st := sb.Stats(); st.AcceptedSubmissions != 1 || st.DuplicateSubmissions != 1 {
		t.Errorf("sandbox stats %+v", st)
	}
}

func TestCancelRefundAgainstSandbox(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: 1})
	c := newClient(t, sb.URL, nil)
	resp, err := c.CancelRefund(context.Background(), sandbox.GeneratedRefundID(0))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := resp.Refund(); v.RefundStatus.Value != -20 {
		t.Errorf("after cancellation: status %d, want -20", v.RefundStatus.Value)
	}
}

func TestUnknownRefundIsBusinessError(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{})
	_, err := newClient(t, sb.URL, nil).QueryRefund(context.Background(), "42")
	var ae *pandapon.APIError
	if !errors.As(err, &ae) || ae.Code != sandbox.CodeNotFound || errors.Is(err, pandapon.ErrTransient) {
		t.Fatalf("err = %v, want a non-transient business error %d", err, sandbox.CodeNotFound)
	}
	if n := sb.Stats().Requests[sandbox.PathQuery]; n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestWrongSecretIsRefusedAndNeverShown(t *testing.T) {
	const wrong = "wrong-secret-value-do-not-print"
	sb := testkit.Sandbox(t, sandbox.Options{})
	c := newClient(t, sb.URL, func(cfg *pandapon.Config) { cfg.Credentials.AccessSecret = wrong })
	_, err := c.QueryRefund(context.Background(), sandbox.SeedRefundOnly)
	var ae *pandapon.APIError
	if !errors.As(err, &ae) || ae.Code != sandbox.CodeUnauthorized {
		t.Fatalf("err = %v, want the sandbox's refusal %d", err, sandbox.CodeUnauthorized)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), sandbox.DefaultAccessSecret) {
		t.Errorf("error shows a secret: %v", err)
	}
	if sb.Stats().Refused != 1 {
		t.Errorf("sandbox refused %d requests, want 1", sb.Stats().Refused)
	}
}

func TestSecondsTimestampsAgainstSandbox(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{TimestampUnit: pandapon.Seconds})
	ms := newClient(t, sb.URL, nil)
	if _, err := ms.QueryRefund(context.Background(), sandbox.SeedRefundOnly); err == nil {
		t.Error("a sandbox expecting seconds accepted milliseconds")
	}
	s := newClient(t, sb.URL, func(cfg *pandapon.Config) { cfg.Credentials.TimestampUnit = pandapon.Seconds })
	if _, err := s.QueryRefund(context.Background(), sandbox.SeedRefundOnly); err != nil {
		t.Errorf("seconds refused: %v", err)
	}
}

func TestSandboxFaultsAreRetriedAndResignedByTheClient(t *testing.T) {
	sb := testkit.Sandbox(t, sandbox.Options{})
	c := newClient(t, sb.URL, func(cfg *pandapon.Config) { cfg.MaxRetries = 4 })
	// Every request fails until the fault is cleared by the test's third
	// look: the sandbox refuses a reused nonce, so success after retries
	// proves each attempt was signed afresh.
	sb.SetRefundFaults(sandbox.SeedRefundOnly, sandbox.Faults{RateLimitRate: 1, RetryAfter: time.Second})
	done := make(chan error, 1)
	go func() {
		_, err := c.QueryRefund(context.Background(), sandbox.SeedRefundOnly)
		done <- err
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return sb.Stats().FaultsInjected[sandbox.FaultRateLimit] >= 2 }, "two 429s")
	sb.SetRefundFaults(sandbox.SeedRefundOnly, sandbox.Faults{})
	if err := <-done; err != nil {
		t.Fatalf("after 429s with Retry-After: %v", err)
	}
	if st := sb.Stats(); st.Refused != 0 {
		t.Errorf("%d attempts refused: retries must carry a fresh nonce and signature", st.Refused)
	}

	sb.SetRefundFaults(sandbox.SeedRefundOnly, sandbox.Faults{MalformedRate: 1})
	_, err := c.QueryRefund(context.Background(), sandbox.SeedRefundOnly)
	var re *pandapon.ResponseError
	if !errors.As(err, &re) || re.HTTPStatus != 200 || re.BodyPrefix == "" {
		t.Errorf("malformed body: %v, want a ResponseError with status and body", err)
	}
}
