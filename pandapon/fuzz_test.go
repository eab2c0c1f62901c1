package pandapon

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeEnvelope feeds arbitrary response bodies to the envelope
// decoder and the refund view, as a broken proxy or a changed PandaPon
// would. Neither may panic; errors are fine. A body that decodes must keep
// its data object byte for byte (the pass-through the contract promises)
// and carry a valid code; the view of any data must not panic either.
//
// Seed corpus: testdata/fuzz/FuzzDecodeEnvelope (the documentation pages'
// envelopes, the sandbox's type mess and its fault bodies).
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(`{"requestId":null,"code":200,"developId":null,"msg":"成功","data":` + string(seedQueryData) + `}`))
	f.Add([]byte(`{"requestId":"9f1c","code":"409","msg":"logistics SF1 already submitted","data":null}`))
	f.Add([]byte(`{"code":200,"data":{"refundOrderAggregate":{"refundOrder":{"refundId":110002687818,"refundStatus":"30"},"logistics":{"logisticsNo":1234567890123456789,"logisticsCompany":{"logisticCompanyCode":"SF"}}}}}`))
	f.Add([]byte(`{"requestId":null,"code":200,"developId":null,"msg":"成功","data":{"distributorId":"2100005349129","currency":"CNY","refundOrderAggregate":{"logistics":{"receiverAddress":nu`))
	f.Add([]byte("<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head></html>"))
	f.Add([]byte(`{"code":null}`))
	f.Add([]byte(`{"code":2e2,"data":[]}`))
	f.Add([]byte(`{"code":200,"Data":{"a":1},"data":{"b":2}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = ParseRefundView(body)
		env, err := decodeEnvelope(body)
		if err != nil {
			return
		}
		if !env.Code.Valid {
			t.Fatalf("decoded an envelope without a valid code from %q", body)
		}
		if env.Data != nil && !bytes.Contains(body, env.Data) {
			t.Fatalf("data %q is not a part of the body %q: it was re-encoded, not kept byte for byte", env.Data, body)
		}
		if bytes.Equal(env.Data, []byte("null")) {
			t.Fatalf("data null kept as %q, want nil", env.Data)
		}
		// The view keeps literal text: ids and numbers as sent, every digit.
		v, err := ParseRefundView(env.Data)
		if err != nil || bytes.IndexByte(env.Data, '\\') >= 0 || !utf8.Valid(env.Data) {
			return // escapes and invalid UTF-8 are legitimately rewritten
		}
		for _, s := range []string{v.RefundID, v.LogisticsNo, v.LogisticsCompanyCode} {
			if !bytes.Contains(env.Data, []byte(s)) {
				t.Fatalf("view field %q is not in the data %q: a value was rewritten", s, env.Data)
			}
		}
	})
}
