package pandapon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testSecret = "S3cr3t-that-must-never-leak"

// attempt is what the test server saw of one HTTP request.
type attempt struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// recordingServer answers each request with the next reply (the last one
// repeats) and records every attempt.
type recordingServer struct {
	*httptest.Server
	mu       sync.Mutex
	attempts []attempt
}

type reply struct {
	status int
	header map[string]string
	body   string
	hang   time.Duration // wait this long (or until the client gives up) first
}

func newRecordingServer(t *testing.T, replies ...reply) *recordingServer {
	t.Helper()
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rs.mu.Lock()
		n := len(rs.attempts)
		rs.attempts = append(rs.attempts, attempt{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), b})
		rs.mu.Unlock()
		rp := replies[min(n, len(replies)-1)]
		if rp.hang > 0 {
			select {
			case <-time.After(rp.hang):
			case <-r.Context().Done():
				return
			}
		}
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rp.status)
		io.WriteString(w, rp.body)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) seen() []attempt {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]attempt(nil), rs.attempts...)
}

func newTestClient(t *testing.T, baseURL string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		BaseURL:      baseURL,
		Credentials:  Credentials{AccessKey: "test-key", AccessSecret: testSecret, UserID: "42"},
		RateLimit:    -1,
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const okQuery = `{"requestId":null,"code":200,"developId":null,"msg":"成功","data":{"distributorId":"2100005349129","refundOrderAggregate":{"refundOrder":{"refundId":"110002687818","refundStatus":"100"}}}}`

// assertNoSecret fails if err's text contains the secret.
func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), testSecret) {
		t.Errorf("error text contains the access secret: %v", err)
	}
}

// assertSignedAfresh checks that every attempt carried all five headers, a
// valid signature, and a nonce no other attempt used.
func assertSignedAfresh(t *testing.T, as []attempt) {
	t.Helper()
	nonces := map[string]bool{}
	for i, a := range as {
		for _, h := range []string{HeaderAccessKey, HeaderTimestamp, HeaderNonce, HeaderUserID, HeaderSignature} {
			if a.header.Get(h) == "" {
				t.Errorf("attempt %d: header %s missing", i+1, h)
			}
		}
		n := a.header.Get(HeaderNonce)
		if nonces[n] {
			t.Errorf("attempt %d reused nonce %s: retries must be re-signed", i+1, n)
		}
		nonces[n] = true
		want := Sign(a.header.Get(HeaderAccessKey), a.header.Get(HeaderTimestamp), n, testSecret)
		if got := a.header.Get(HeaderSignature); got != want {
			t.Errorf("attempt %d: signature %s, want %s", i+1, got, want)
		}
	}
}

func TestRetriesServerErrorsAndSignsEachAttempt(t *testing.T) {
	rs := newRecordingServer(t,
		reply{status: 503, body: "busy"},
		reply{status: 502, body: "bad gateway"},
		reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, nil)
	resp, err := c.QueryRefund(context.Background(), "110002687818")
	if err != nil {
		t.Fatalf("QueryRefund after two 5xx: %v", err)
	}
	as := rs.seen()
	if len(as) != 3 || resp.Attempts != 3 {
		t.Fatalf("server saw %d attempts, response says %d; want 3", len(as), resp.Attempts)
	}
	assertSignedAfresh(t, as)
	for _, a := range as {
		if a.method != "GET" || a.path != "/open/order/refund/query" || a.query != "refundId=110002687818" {
			t.Errorf("request %s %s?%s", a.method, a.path, a.query)
		}
	}
}

func TestSubmissionIsRetriedOnlyWhenProvablyNotProcessed(t *testing.T) {
	desc := "test"
	r := ReturnLogistics{RefundID: "110000303674", LogisticsCompanyCode: "SF", LogisticsNo: "SF00111test", BuyerPhone: "15068763422", ReturnGoodsDesc: &desc}
	// A 5xx or a timeout may come after PandaPon recorded the parcel: no
	// retry, the caller re-queries first.
	for _, rp := range []reply{{status: 500}, {status: 502}, {hang: 10 * time.Second, status: 200}} {
		rs := newRecordingServer(t, rp, reply{status: 200, body: `{"code":200,"msg":"SUCCESS","data":{}}`})
		c := newTestClient(t, rs.URL, func(c *Config) { c.AttemptTimeout = 100 * time.Millisecond })
		if _, err := c.SubmitReturnLogistics(context.Background(), r); !errors.Is(err, ErrTransient) {
			t.Errorf("after %+v: err = %v, want transient", rp, err)
		}
		if n := len(rs.seen()); n != 1 {
			t.Errorf("after %+v: %d submissions sent, want 1: a repeat could record the parcel twice", rp, n)
		}
	}
}

func TestRetriesPostWithSameBody(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 429}, reply{status: 200, body: `{"code":200,"msg":"SUCCESS","data":{"currency":"CNY"}}`})
	c := newTestClient(t, rs.URL, nil)
	desc := "test"
	_, err := c.SubmitReturnLogistics(context.Background(), ReturnLogistics{RefundID: "110000303674", LogisticsCompanyCode: "SF", LogisticsNo: "SF00111test", BuyerPhone: "15068763422", ReturnGoodsDesc: &desc})
	if err != nil {
		t.Fatal(err)
	}
	as := rs.seen()
	if len(as) != 2 {
		t.Fatalf("%d attempts, want 2", len(as))
	}
	assertSignedAfresh(t, as)
	want := `{"refundId":"110000303674","logisticsCompanyCode":"SF","logisticsNo":"SF00111test","buyerPhone":"15068763422","returnGoodsDesc":"test"}`
	for i, a := range as {
		if string(a.body) != want {
			t.Errorf("attempt %d body %s, want %s", i+1, a.body, want)
		}
		if a.header.Get("Content-Type") != "application/json" {
			t.Errorf("attempt %d Content-Type %q", i+1, a.header.Get("Content-Type"))
		}
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 429, header: map[string]string{"Retry-After": "1"}}, reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, nil)
	start := time.Now()
	if _, err := c.QueryRefund(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	if n := len(rs.seen()); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
	// RetryWaitMax is 5 ms, so only Retry-After can explain a 1 s wait.
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %s, before the 1 s Retry-After", waited)
	}
	assertSignedAfresh(t, rs.seen())
}

func TestRetryAfterBeyondCapReturnsTransientWithWait(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 429, header: map[string]string{"Retry-After": "120"}})
	c := newTestClient(t, rs.URL, func(c *Config) { c.RetryAfterMax = time.Second })
	_, err := c.QueryRefund(context.Background(), "1")
	var te *TransientError
	if !errors.As(err, &te) || !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v, want *TransientError", err)
	}
	if te.RetryAfter != 120*time.Second || te.HTTPStatus != 429 || te.Attempts != 1 {
		t.Errorf("TransientError %+v, want RetryAfter 2m0s, HTTP 429, 1 attempt", te)
	}
	if n := len(rs.seen()); n != 1 {
		t.Errorf("%d attempts, want 1 (Retry-After above the cap must not be waited for)", n)
	}
	assertNoSecret(t, err)
}

func TestRetriesUsedUp(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 503, body: "down"})
	c := newTestClient(t, rs.URL, func(c *Config) { c.MaxRetries = 2 })
	_, err := c.QueryRefund(context.Background(), "1")
	var te *TransientError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *TransientError", err)
	}
	if te.Attempts != 3 || len(rs.seen()) != 3 || te.HTTPStatus != 503 {
		t.Errorf("%+v; server saw %d; want 3 attempts ending in 503", te, len(rs.seen()))
	}
	if !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "GET /open/order/refund/query") {
		t.Errorf("error %q should name the status and endpoint", err)
	}
	assertNoSecret(t, err)
}

func TestBusinessErrorIsNotRetried(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 200, body: `{"requestId":"abc-123","code":404,"developId":null,"msg":"refund 9 not found","data":null}`})
	c := newTestClient(t, rs.URL, nil)
	_, err := c.QueryRefund(context.Background(), "9")
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Code != 404 || ae.Msg != "refund 9 not found" || ae.RequestID.Value != "abc-123" || ae.Endpoint != "GET /open/order/refund/query" {
		t.Errorf("APIError %+v", ae)
	}
	if errors.Is(err, ErrTransient) {
		t.Error("a business error must not be transient")
	}
	if n := len(rs.seen()); n != 1 {
		t.Errorf("%d attempts, want 1: business errors are not retried", n)
	}
	assertNoSecret(t, err)
}

func TestNonRetrySafePostIsNotRepeatedAfterServerError(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 500}, reply{status: 200, body: `{"code":200,"msg":"SUCCESS","data":true}`})
	c := newTestClient(t, rs.URL, nil)
	_, err := c.SubmitRefundMessage(context.Background(), RefundMessage{RefundID: "1", RefundMessage: "hi"})
	if !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v, want transient", err)
	}
	if n := len(rs.seen()); n != 1 {
		t.Errorf("%d attempts: a message may have been posted, a retry could post it twice", n)
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	rs := newRecordingServer(t, reply{hang: 10 * time.Second, status: 200, body: okQuery}, reply{status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, func(c *Config) { c.AttemptTimeout = 200 * time.Millisecond })
	resp, err := c.QueryRefund(context.Background(), "1")
	if err != nil {
		t.Fatalf("QueryRefund after one hanging attempt: %v", err)
	}
	if resp.Attempts != 2 {
		t.Errorf("Attempts = %d, want 2", resp.Attempts)
	}
	assertSignedAfresh(t, rs.seen())
}

func TestCallerDeadlineBoundsTheWholeCall(t *testing.T) {
	rs := newRecordingServer(t, reply{hang: 10 * time.Second, status: 200, body: okQuery})
	c := newTestClient(t, rs.URL, func(c *Config) { c.AttemptTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.QueryRefund(ctx, "1")
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want transient wrapping context.DeadlineExceeded", err)
	}
	assertNoSecret(t, err)
}

func TestNetworkErrorIsTransient(t *testing.T) {
	rs := newRecordingServer(t, reply{status: 200})
	url := rs.URL
	rs.Close() // nothing listens there any more
	c := newTestClient(t, url, func(c *Config) { c.MaxRetries = 1 })
	_, err := c.QueryRefund(context.Background(), "1")
	var te *TransientError
	if !errors.As(err, &te) || te.Attempts != 2 || te.HTTPStatus != 0 {
		t.Fatalf("err = %#v, want TransientError after 2 attempts with no HTTP status", err)
	}
	assertNoSecret(t, err)
}

func TestMalformedResponseNamesStatusAndBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"html page", 200, "<html><body>Gateway says hi</body></html>"},
		{"truncated json", 200, `{"code":200,"data":{"refundOrderAggre`},
		{"json without code", 200, `{"hello":"world"}`},
		{"404 page", 404, "404 page not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRecordingServer(t, reply{status: tc.status, body: tc.body})
			c := newTestClient(t, rs.URL, nil)
			_, err := c.QueryRefund(context.Background(), "1")
			var re *ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want *ResponseError", err)
			}
			if re.HTTPStatus != tc.status || !strings.Contains(err.Error(), fmt.Sprintf("HTTP %d", tc.status)) {
				t.Errorf("error %q should carry HTTP %d", err, tc.status)
			}
			if re.BodyPrefix != tc.body || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.body)) {
				t.Errorf("error %q should quote the start of the body", err)
			}
			if n := len(rs.seen()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

func TestDataIsPassedThroughByteForByte(t *testing.T) {
	data := `{"distributorId":2100005349129,"currency":"CNY","fxRate":12.50,"newField":{"nested":[1,2.000,"x"]},` +
		`"refundOrderAggregate":{"refundOrder":{"refundId":110002687818,"payOrderId":3582133814705377121,"refundStatus":20,"refundType":"2","goodsStatus":null},` +
		`"logistics":{"logisticsNo":43523253245352543,"logisticsCompany":{"logisticCompanyCode":"123456","logisticsCompanyName":"test"}}}}`
	rs := newRecordingServer(t, reply{status: 200, body: `{"requestId":7,"code":"200","developId":3455555555555552,"msg":"成功","data":` + data + `}`})
	c := newTestClient(t, rs.URL, nil)
	resp, err := c.QueryRefund(context.Background(), "110002687818")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Data, []byte(data)) {
		t.Errorf("data changed in transit:\n got %s\nwant %s", resp.Data, data)
	}
	for _, lit := range []string{"3582133814705377121", "12.50", "2.000", `"newField"`} {
		if !bytes.Contains(resp.Data, []byte(lit)) {
			t.Errorf("data lost %s", lit)
		}
	}
	if resp.RequestID.Value != "7" {
		t.Errorf("numeric requestId read as %q", resp.RequestID.Value)
	}
	v, err := resp.Refund()
	if err != nil {
		t.Fatal(err)
	}
	want := RefundView{RefundID: "110002687818", RefundStatus: FlexInt{20, true}, RefundType: FlexInt{2, true},
		LogisticsNo: "43523253245352543", LogisticsCompanyCode: "123456"}
	if v != want {
		t.Errorf("view %+v, want %+v", v, want)
	}
}

func TestRefundViewAcceptsSeedShapes(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       RefundView
	}{
		{"query seed: strings and nulls",
			`{"refundOrderAggregate":{"logistics":{"receiverAddress":null,"logisticsCompany":{"logisticsCompanyCode":null,"logisticsCompanyName":null}},"refundOrder":{"refundStatus":"100","refundType":1,"goodsStatus":1,"refundId":"110002687818"}}}`,
			RefundView{RefundID: "110002687818", RefundStatus: FlexInt{100, true}, RefundType: FlexInt{1, true}, GoodsStatus: FlexInt{1, true}}},
		{"submission seed: logisticCompanyCode spelling",
			`{"refundOrderAggregate":{"logistics":{"logisticsCompany":{"logisticCompanyCode":"123456"},"logisticsNo":"43523253245352543","receiverAddress":"somewhere"},"refundOrder":{"refundStatus":"20","refundType":2,"goodsStatus":4,"refundId":"110000300003"}}}`,
			RefundView{RefundID: "110000300003", RefundStatus: FlexInt{20, true}, RefundType: FlexInt{2, true}, GoodsStatus: FlexInt{4, true}, LogisticsNo: "43523253245352543", LogisticsCompanyCode: "123456"}},
		{"negative status as number, no logistics",
			`{"refundOrderAggregate":{"refundOrder":{"refundStatus":-20,"refundId":1}}}`,
			RefundView{RefundID: "1", RefundStatus: FlexInt{-20, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRefundView([]byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := ParseRefundView([]byte(`{"refundOrderAggregate":{"refundOrder":{"refundStatus":"twenty"}}}`)); err == nil {
		t.Error("refundStatus \"twenty\" accepted")
	}
}

func TestConcurrencyCapIsShared(t *testing.T) {
	const limit, calls = 3, 12
	var inflight, peak, total atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		total.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		inflight.Add(-1)
		io.WriteString(w, okQuery)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(c *Config) { c.MaxConcurrent = limit })
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Go(func() {
			_, err := c.QueryRefund(context.Background(), "1")
			errs <- err
		})
	}
	// Let one request through each time the cap is full.
	for released := 0; released < calls; released++ {
		waitFor(t, "cap to fill", func() bool {
			return inflight.Load() == int64(min(limit, calls-released))
		})
		release <- struct{}{}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if peak.Load() != limit || total.Load() != calls {
		t.Errorf("peak %d concurrent of %d requests, want peak %d", peak.Load(), total.Load(), limit)
	}
}

func TestRateLimitIsShared(t *testing.T) {
	var total atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		total.Add(1)
		io.WriteString(w, okQuery)
	}))
	defer srv.Close()
	// A burst of 4, then one token every 1000 s: within a 10 s deadline
	// exactly 4 requests may be sent, whatever the machine's speed.
	c := newTestClient(t, srv.URL, func(c *Config) { c.RateLimit = 0.001; c.Burst = 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for range 10 {
		wg.Go(func() {
			_, err := c.QueryRefund(ctx, "1")
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrTransient):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if total.Load() != 4 || ok.Load() != 4 || limited.Load() != 6 {
		t.Errorf("server saw %d, %d succeeded, %d limited; want 4, 4, 6", total.Load(), ok.Load(), limited.Load())
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Credentials: Credentials{AccessSecret: "x"}}, "AccessKey"},
		{Config{Credentials: Credentials{AccessKey: "x"}}, "AccessSecret"},
		{Config{Credentials: Credentials{AccessKey: "x", AccessSecret: "y", TimestampUnit: "ns"}}, "TimestampUnit"},
		{Config{BaseURL: "ftp://x", Credentials: Credentials{AccessKey: "x", AccessSecret: "y"}}, "BaseURL"},
		{Config{BaseURL: "http://h#", Credentials: Credentials{AccessKey: "x", AccessSecret: "y"}}, "BaseURL"},
		{Config{BaseURL: "http://h/p?x=1", Credentials: Credentials{AccessKey: "x", AccessSecret: "y"}}, "BaseURL"},
		{Config{BaseURL: "ftp://bob:" + testSecret + "@h", Credentials: Credentials{AccessKey: "x", AccessSecret: "y"}}, "BaseURL"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		assertNoSecret(t, err)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkParseRefundView(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRefundView(seedQueryData); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeQueryResponse(b *testing.B) {
	body := []byte(`{"requestId":null,"code":200,"developId":null,"msg":"成功","data":` + string(seedQueryData) + `}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		env, err := decodeEnvelope(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseRefundView(env.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// seedQueryData is the data object of the "reverse single query" seed page.
var seedQueryData = []byte(`{"distributorId":"2100005349129","currency":"CNY","refundOrderAggregate":{"logistics":{"receiverAddress":null,"returnGoodsDesc":null,"buyerPhone":null,"logisticsCompany":{"logisticsCompanyCode":null,"logisticsCompanyName":null},"sellerAgreeReturnDescribe":null},"refundOrder":{"refundFee":392,"payOrderId":"3582133814705377121","timeoutType":"sAgreeRefundT","sellerRefuseReason":null,"refundStatus":"100","canEditFee":null,"remainingTime":null,"refundType":1,"feeTips":null,"reasonDesc":"我不想要了","goodsStatus":1,"refundDesc":"","reasonId":150013,"timeoutDate":"1698313367000","sellerRefuseReasonDescribe":null,"refundId":"110002687818"},"purchaseOrderLine":{"salesOrderId":"500918-1034477311887409465","supplierId":3937219703,"quantity":1,"totalPrice":392,"itemTitle":"零食瓜子仁蟹黄味整箱小包装坚果炒货小零食小吃批发散装休闲食品","postFee":0,"productFee":392,"salesMarket":"TAOBAO_BUYER","purchaseOrderLineId":200028508721,"createTime":1698216212000,"purchaseOrderId":200028508720,"price":null,"supplierNick":"天天特卖工厂店","currency":"CNY","properties":{"食品口味":"瓜子仁5包(试吃)"},"itemImageUrl":"//img.alicdn.com/imgextra/i1/3937219703/O1CN01RFZg0i2LY1pt3OISk_!!3937219703-0-C2M.jpg"}}}`)

// TestNewRequestURLIsWhatParsingGives: the request URL newRequest fills in
// from the base URL parsed once is the one parsing the joined text gives,
// for every endpoint and for base URLs with ports, prefixes, user info,
// escapes, queries and an empty port (the last ones take the parsing path).
func TestNewRequestURLIsWhatParsingGives(t *testing.T) {
	bases := []string{
		"https://api.pandapon.com",
		"http://127.0.0.1:8080",
		"http://127.0.0.1:8080/",
		"https://API.PandaPon.com/prefix/v1",
		"https://user:p%40ss@api.pandapon.com:443/x",
		"http://[::1]:9/a%2Fb",
		"http://example.com:",
		"http://h.example/%7Eprefix",
	}
	endpoints := []Endpoint{EndpointQueryRefund, EndpointSubmitReturnLogistics, EndpointCancelRefund, EndpointSubmitRefundMessage, EndpointQueryRefundList}
	queries := []url.Values{nil, {"refundId": {"110002687818"}}, {"b": {"x y"}, "a": {"ä&=/"}}}
	fast := 0
	for _, base := range bases {
		c := newTestClient(t, base, nil)
		if c.base != nil {
			fast++
		}
		for _, ep := range endpoints {
			for _, q := range queries {
				for _, suffix := range []string{"", "110002687818", "a b/c"} {
					got, err := c.newRequest(context.Background(), ep, suffix, q, nil)
					if err != nil {
						t.Fatalf("%s %s %q: %v", base, ep, suffix, err)
					}
					want, err := http.NewRequest(ep.Method, c.requestURL(ep, suffix, q), nil)
					if err != nil {
						t.Fatalf("%s %s %q: %v", base, ep, suffix, err)
					}
					if !reflect.DeepEqual(got.URL, want.URL) || got.Host != want.Host || got.URL.String() != want.URL.String() {
						t.Errorf("base %q, %s, suffix %q, query %v:\n got %#v host %q\nwant %#v host %q",
							base, ep, suffix, q, got.URL, got.Host, want.URL, want.Host)
					}
				}
			}
		}
	}
	if fast < 5 {
		t.Errorf("only %d of the base URLs took the parsed-once path; the test no longer covers it", fast)
	}
}
