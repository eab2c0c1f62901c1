package pandapon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testSubmission() ReturnLogistics {
	desc := "test"
	return ReturnLogistics{RefundID: "110000303674", LogisticsCompanyCode: "SF", LogisticsNo: "SF00111test", BuyerPhone: "15068763422", ReturnGoodsDesc: &desc}
}

// TestMayHaveBeenProcessed: a failed submission says whether PandaPon may
// have carried it out, which decides whether the caller must wait before
// checking PandaPon's state and submitting again.
func TestMayHaveBeenProcessed(t *testing.T) {
	refusedURL := func() string { // a port nothing listens on
		rs := newRecordingServer(t, reply{status: 200})
		rs.Close()
		return rs.URL
	}()
	tests := []struct {
		name    string
		replies []reply
		url     string
		want    bool
	}{
		{"timeout after sending", []reply{{hang: 10 * time.Second, status: 200}}, "", true},
		{"5xx", []reply{{status: 503}}, "", true},
		{"429 then 500", []reply{{status: 429}, {status: 500}}, "", true},
		{"unusable answer", []reply{{status: 200, body: "<html>proxy</html>"}}, "", true},
		{"429 every time: refused before processing", []reply{{status: 429}}, "", false},
		{"connection refused: nothing sent", nil, refusedURL, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url
			if url == "" {
				url = newRecordingServer(t, tt.replies...).URL
			}
			c := newTestClient(t, url, func(c *Config) { c.AttemptTimeout = 200 * time.Millisecond; c.MaxRetries = 2 })
			_, err := c.SubmitReturnLogistics(context.Background(), testSubmission())
			if err == nil {
				t.Fatal("submission succeeded")
			}
			if got := MayHaveBeenProcessed(err); got != tt.want {
				t.Errorf("MayHaveBeenProcessed(%v) = %v, want %v", err, got, tt.want)
			}
		})
	}
	t.Run("circuit open: nothing sent", func(t *testing.T) {
		rs := newRecordingServer(t, reply{status: 503})
		c := newTestClient(t, rs.URL, func(c *Config) { c.MaxRetries = 0; c.Breaker.ConsecutiveFailures = 1 })
		c.QueryRefund(context.Background(), "1") // opens the breaker
		_, err := c.SubmitReturnLogistics(context.Background(), testSubmission())
		if !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("err = %v, want the circuit open", err)
		}
		if MayHaveBeenProcessed(err) {
			t.Errorf("MayHaveBeenProcessed(%v) = true for a request never sent", err)
		}
	})
	t.Run("queries are not tracked", func(t *testing.T) {
		rs := newRecordingServer(t, reply{status: 503})
		c := newTestClient(t, rs.URL, func(c *Config) { c.MaxRetries = 0 })
		_, err := c.QueryRefund(context.Background(), "1")
		if MayHaveBeenProcessed(err) {
			t.Errorf("MayHaveBeenProcessed(%v) = true for a RetrySafe query", err)
		}
	})
}

// TestRedirectIsNotFollowed: a redirect would turn the submission into a
// body-less GET and hand the signed headers to another host.
func TestRedirectIsNotFollowed(t *testing.T) {
	elsewhere := newRecordingServer(t, reply{status: 200, body: okQuery})
	for _, status := range []int{http.StatusFound, http.StatusPermanentRedirect} {
		gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+r.URL.Path+"?token=abc", status)
		}))
		t.Cleanup(gateway.Close)
		c := newTestClient(t, gateway.URL, nil)
		_, err := c.SubmitReturnLogistics(context.Background(), testSubmission())
		var re *ResponseError
		if !errors.As(err, &re) || re.HTTPStatus != status {
			t.Fatalf("HTTP %d: err = %v, want a ResponseError with that status", status, err)
		}
		if !strings.Contains(err.Error(), "redirect to \""+elsewhere.URL) || strings.Contains(err.Error(), "token=abc") {
			t.Errorf("error %q should name the Location without its query", err)
		}
		if n := len(elsewhere.seen()); n != 0 {
			t.Fatalf("the redirect target got %d requests", n)
		}
	}
}

// TestTruncatedBodyIsAnError: a body that ends before its Content-Length is
// not a short answer but a broken one.
func TestTruncatedBodyIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"+okQuery[:40])
			}()
		}
	}()
	c := newTestClient(t, "http://"+ln.Addr().String(), func(c *Config) { c.MaxRetries = 0 })
	_, err = c.QueryRefund(context.Background(), "1")
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v, want a transient error wrapping io.ErrUnexpectedEOF", err)
	}
	if !strings.Contains(err.Error(), "40 of the 500 bytes") {
		t.Errorf("error %q should say how much of the body arrived", err)
	}
}

func TestRecordedLogisticsNo(t *testing.T) {
	tests := []struct {
		data, want, wantErr string
	}{
		{`{"refundOrderAggregate":{"logistics":{"logisticsNo":"SF1"}}}`, "SF1", ""},
		{`{"refundOrderAggregate":{"logistics":{"logisticsNo":12345678901234567890}}}`, "12345678901234567890", ""},
		// Other members of any shape do not matter.
		{`{"refundOrderAggregate":{"refundOrder":{"refundStatus":"thirty"},"logistics":{"logisticsNo":"SF1","logisticsCompany":"SF"}}}`, "SF1", ""},
		{`{"refundOrderAggregate":{"logistics":{"logisticsNo":null}}}`, "", ""},
		{`{"refundOrderAggregate":{"logistics":null}}`, "", ""},
		{`{"refundOrderAggregate":{}}`, "", ""},
		{`{"distributorId":"1"}`, "", ""},
		{`{"refundOrderAggregate":{"logistics":"SF1 via SF"}}`, "", `refundOrderAggregate.logistics is "SF1 via SF", not an object`},
		{`{"refundOrderAggregate":{"logistics":{"logisticsNo":{"no":"SF1"}}}}`, "", "refundOrderAggregate.logistics.logisticsNo"},
	}
	for _, tt := range tests {
		got, err := RecordedLogisticsNo([]byte(tt.data))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("RecordedLogisticsNo(%s) error = %v, want one containing %q", tt.data, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("RecordedLogisticsNo(%s) = %q, %v; want %q", tt.data, got, err, tt.want)
		}
	}
}
