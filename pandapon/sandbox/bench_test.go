package sandbox_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// BenchmarkQuery measures the handler alone (no network): authentication,
// routing and encoding of a cached refund.
func BenchmarkQuery(b *testing.B) {
	sb := sandbox.New(sandbox.Options{GeneratedRefunds: 1})
	target := queryURL("http://sandbox", sandbox.GeneratedRefundID(0))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		creds.SignRequest(req.Header, time.Now()) // a fresh nonce each time
		rec := httptest.NewRecorder()
		sb.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
		}
	}
}
