package events

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestIdentify(t *testing.T) {
	for _, c := range []struct {
		name string
		h    nats.Header
		data string
		want Identity
	}{
		{"binary, refundId in data", nats.Header{"ce-id": {"a"}, "ce-type": {"return.shipped"}, "ce-source": {"erp"}},
			`{"refundId":"110000303674"}`, Identity{Type: "return.shipped", ID: "a", Source: "erp", RefundID: "110000303674"}},
		{"header names in any case, subject first", nats.Header{"Ce-Id": {"b"}, "CE-SUBJECT": {"7"}}, `{"refundId":"8"}`,
			Identity{ID: "b", RefundID: "7"}},
		{"structured, number refundId", nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}},
			`{"id":"st-1","type":"refund.lookup.requested","source":"erp","data":{"refundId":110002687818}}`,
			Identity{Type: "refund.lookup.requested", ID: "st-1", Source: "erp", RefundID: "110002687818"}},
		{"structured, broken", nats.Header{"Content-Type": {"application/cloudevents+json"}}, `{"id":`, Identity{}},
		{"nothing readable", nats.Header{"X-Other": {"1"}}, `refundId=1`, Identity{}},
		{"refundId not a scalar", nil, `{"refundId":{"a":1}}`, Identity{}},
	} {
		if got := Identify(c.h, []byte(c.data)); got != c.want {
			t.Errorf("%s: Identify = %+v, want %+v", c.name, got, c.want)
		}
	}
}
