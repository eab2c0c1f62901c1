package events

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

func TestOutputIDIsDeterministic(t *testing.T) {
	a := OutputID("erp/warehouse-7", "in-1")
	if a != OutputID("erp/warehouse-7", "in-1") {
		t.Fatal("the same input gave two output ids: a redelivered input would publish a second, different event")
	}
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 5 {
		t.Errorf("OutputID = %q (%v); want a version-5 UUID", a, err)
	}
	// Pinned: a changed namespace or name layout would give every output a
	// new id, and answers published before an upgrade would no longer be
	// de-duplicated against those after it.
	if want := "61c3e807-ff2b-5f50-a54c-0f761ea5cc08"; a != want {
		t.Errorf("OutputID = %s, want %s", a, want)
	}
	for _, other := range [][2]string{
		{"erp/warehouse-8", "in-1"},
		{"erp/warehouse-7", "in-2"},
		{"erp/warehouse-7in-1", ""}, // the separator keeps source and id apart
		{"erp/warehouse-", "7in-1"},
	} {
		if OutputID(other[0], other[1]) == a {
			t.Errorf("OutputID%q equals OutputID of another input", other)
		}
	}
}

// TestOutputIDIsTheNameBasedUUID: OutputID is uuid.NewSHA1 over the name
// its contract states, for short names and for names past its stack buffer.
func TestOutputIDIsTheNameBasedUUID(t *testing.T) {
	long := strings.Repeat("erp/warehouse-", 30)
	for _, in := range [][2]string{
		{"erp/warehouse-7", "in-1"}, {"", ""}, {"s", ""}, {"", "id"},
		{long, "in-1"}, {"erp", long},
		{long[:238], "x"}, {long[:239], "x"}, // 256 bytes with the namespace and separator: the stack buffer's size, and one more
		{"https://user@erp.example/a?b#c", "01J9Z3 ünïcode"},
	} {
		want := uuid.NewSHA1(outputIDNamespace, []byte(in[0]+"\x00"+in[1])).String()
		if got := OutputID(in[0], in[1]); got != want {
			t.Errorf("OutputID(%.20q…, %.20q…) = %s, want %s", in[0], in[1], got, want)
		}
	}
}

func TestNewRefundUpdatedFollowsOutputAttributes(t *testing.T) {
	in := inputEvent(t, TypeReturnShipped, goodReturn)
	in.SetExtension(ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in.SetExtension(ExtTracestate, "pp=1")
	data := []byte(pandaPonQueryData)
	answered := time.Date(2025, 5, 14, 16, 19, 37, 123456789, time.FixedZone("CST", 8*3600))

	e := NewRefundUpdated(in, "pandabridge", "110002687818", data, answered)
	twice := NewRefundUpdated(in, "pandabridge", "110002687818", data, answered.Add(time.Second))

	if e.SpecVersion() != event.CloudEventsVersionV1 || e.Type() != TypeRefundUpdated || e.Source() != "pandabridge" ||
		e.Subject() != "110002687818" || e.DataContentType() != ContentTypeJSON {
		t.Errorf("attributes: %s", e.Context)
	}
	if e.ID() != OutputID(in.Source(), in.ID()) || twice.ID() != e.ID() {
		t.Errorf("id %q, on repeat %q; want OutputID(input) both times", e.ID(), twice.ID())
	}
	if got := e.Time(); !got.Equal(answered) || got.Location() != time.UTC {
		t.Errorf("time = %v; want %v in UTC", got, answered)
	}
	ext := e.Extensions()
	if ext[ExtCausationID] != in.ID() {
		t.Errorf("causationid = %v, want %q", ext[ExtCausationID], in.ID())
	}
	if ext[ExtTraceparent] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || ext[ExtTracestate] != "pp=1" {
		t.Errorf("trace context not copied: %v", ext)
	}
	if !bytes.Equal(e.Data(), data) {
		t.Errorf("data re-encoded:\n got %s\nwant %s", e.Data(), data)
	}
	if !bytes.Contains(e.Data(), []byte("3582133814705377121")) || !bytes.Contains(e.Data(), []byte("12.50")) {
		t.Error("numbers lost digits")
	}
	if err := e.Validate(); err != nil {
		t.Errorf("sdk-go finds the output invalid: %v", err)
	}
}

func TestOutputsSurviveNATSByteForByte(t *testing.T) {
	in := inputEvent(t, TypeRefundLookupRequested, `{"refundId":110002687818}`)
	e := NewRefundUpdated(in, "pandabridge", "110002687818", []byte(pandaPonQueryData), time.Now())
	msg, err := EncodeNATS(Subjects{}.Of(TypeRefundUpdated), e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg.Data, []byte(pandaPonQueryData)) {
		t.Errorf("payload differs from PandaPon's data")
	}
	got, err := DecodeNATS(msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, e, got)
}

func TestTraceContextIsOptional(t *testing.T) {
	in := inputEvent(t, TypeRefundLookupRequested, `{"refundId":"1"}`)
	e := NewRefundUpdated(in, "pandabridge", "1", []byte(`{}`), time.Now())
	if _, ok := e.Extensions()[ExtTraceparent]; ok {
		t.Error("traceparent invented for an input without one")
	}
	in.SetExtension(ExtTraceparent, " padded ") // not carriable in a NATS header
	e = NewRefundUpdated(in, "pandabridge", "1", []byte(`{}`), time.Now())
	if _, ok := e.Extensions()[ExtTraceparent]; ok {
		t.Error("a traceparent NATS cannot carry was copied; publishing the output would fail")
	}
	if _, err := EncodeNATS("pandapon.refund.updated", e); err != nil {
		t.Errorf("output not encodable: %v", err)
	}
}

func TestNewRefundRequestFailed(t *testing.T) {
	in := inputEvent(t, TypeReturnShipped, goodReturn)
	f := RefundRequestFailed{RefundID: "110002687818", RequestType: TypeReturnShipped, Code: 40001, Msg: "退货物流已提交 <x>", Reason: "PandaPon refused the return logistics."}
	e, err := NewRefundRequestFailed(in, "pandabridge", f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"refundId":"110002687818","requestType":"return.shipped","code":40001,"msg":"退货物流已提交 <x>","requestId":null,"reason":"PandaPon refused the return logistics."}`
	if string(e.Data()) != want {
		t.Errorf("data\n got %s\nwant %s", e.Data(), want)
	}
	if e.Type() != TypeRefundRequestFailed || e.Subject() != "110002687818" || e.ID() != OutputID(in.Source(), in.ID()) ||
		e.Extensions()[ExtCausationID] != in.ID() {
		t.Errorf("attributes: %s", e.Context)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*RefundRequestFailed)
	}{
		{"data.refundId", func(f *RefundRequestFailed) { f.RefundID = "" }},
		{"data.requestType", func(f *RefundRequestFailed) { f.RequestType = TypeRefundUpdated }},
		{"data.reason", func(f *RefundRequestFailed) { f.Reason = "" }},
	} {
		bad := f
		tc.mutate(&bad)
		_, err := NewRefundRequestFailed(in, "pandabridge", bad, time.Now())
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("bad %s: %v", tc.field, err)
		}
	}
}
