package events

import (
	"errors"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/nats-io/nats.go"
)

// fuzzHeader builds a header from a compact text form, one "key: value" per
// line, so the fuzzer can explore names, cases, repeats and values.
func fuzzHeader(s string) nats.Header {
	h := nats.Header{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h.Add(k, strings.TrimPrefix(v, " "))
	}
	return h
}

func mustBeInvalid(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %q does not match ErrInvalid", err)
	}
	if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error text %q spans lines", err)
	}
}

func FuzzDecodeNATS(f *testing.F) {
	e := sdkEvent(f)
	msg, err := EncodeNATS("s", e)
	if err != nil {
		f.Fatal(err)
	}
	var bin strings.Builder
	for k, vs := range msg.Header {
		for _, v := range vs {
			bin.WriteString(k + ": " + v + "\n")
		}
	}
	structured, err := format.JSON.Marshal(&e)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bin.String(), msg.Data)
	f.Add("Content-Type: "+ContentTypeStructured, structured)
	f.Add("Content-Type: application/cloudevents+json; charset=utf-8", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":1}`))
	f.Add("Content-Type: "+ContentTypeStructured, []byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"x","ext":2147483648}`))
	f.Add("Content-Type: "+ContentTypeStructured, []byte(`{"data_base64":1,"specversion":"1.0"}`)) // panics sdk-go v2.16.2
	f.Add("ce-specversion: 1.0\nCe-Id: 1\nce-id: 2\nce-source: s\nce-type: t\nce-time: 2025-01-01T00:00:00Z\nce-x-y: 1", []byte(`{}`))
	f.Add("ce-specversion: 1.0\nce-id: 1\nce-source: %zz\nce-type: t\nce-dataschema: ::", []byte(nil))
	f.Add("Content-Type: application/json", []byte(`{"refundId":"1"}`))
	f.Fuzz(func(t *testing.T, header string, data []byte) {
		h := fuzzHeader(header)
		got, err := DecodeNATS(h, data)
		mustBeInvalid(t, err)
		if err != nil {
			return
		}
		// Whatever decodes is a valid event that survives our own mapping.
		if verr := checkEvent(&got); verr != nil {
			t.Fatalf("decoded an invalid event: %v", verr)
		}
		_, err = ParseInput(got)
		mustBeInvalid(t, err)
		if _, err := EncodeStructured(got); err != nil {
			mustBeInvalid(t, err)
		}
		// What we decode and can encode comes back the same.
		msg, err := EncodeNATS("s", got)
		mustBeInvalid(t, err)
		if err != nil {
			return
		}
		again, err := DecodeNATS(msg.Header, msg.Data)
		if err != nil {
			t.Fatalf("re-decoding our own encoding: %v", err)
		}
		assertSameEvent(t, got, again)
	})
}

func FuzzParseInput(f *testing.F) {
	for _, s := range []string{
		goodReturn,
		`{"refundId":110002687818}`,
		`{"refundId":1.5}`, `{"refundId":-1}`, `{"refundId":"  "}`, `{"refundId":1e3}`,
		`null`, `[]`, `"x"`, ``, `{"refundId":"1","returnGoodsDesc":{}}`,
		`{"refundId":"110002687818"}`, `{"refundId":""}`, `{"refundId":"1\"}`, `{"refundId":"12"}}`,
		`{"refundId":"1","refundId":"2"}`, `{"refundId":"١"}`, `{"refundId":"12" }`,
	} {
		f.Add(TypeReturnShipped, s)
		f.Add(TypeRefundLookupRequested, s)
	}
	f.Add("refund.updated", `{}`)
	f.Fuzz(func(t *testing.T, typ, data string) {
		e := inputEvent(t, TypeReturnShipped, `{}`)
		v1(&e).Type = typ
		e.DataEncoded = []byte(data)
		in, err := ParseInput(e)
		mustBeInvalid(t, err)
		if err == nil && !allDigits(in.RefundID()) {
			t.Fatalf("accepted refundId %q", in.RefundID())
		}
		// The lookup shortcut gives what decoding the object gives.
		fast, ferr := parseLookup("data", []byte(data))
		slow, serr := parseLookupObject("data", []byte(data))
		if fast != slow || (ferr == nil) != (serr == nil) || (ferr != nil && ferr.Error() != serr.Error()) {
			t.Fatalf("parseLookup(%q) = %v, %v; decoding the object gives %v, %v", data, fast, ferr, slow, serr)
		}
	})
}

func FuzzParseReturnShipped(f *testing.F) {
	f.Add([]byte(goodReturn))
	f.Add([]byte(`{"refundId":3582133814705377121,"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P","returnGoodsDesc":null}`))
	f.Add([]byte(`{"refundId":"","logisticsCompanyCode":1}`))
	f.Add([]byte(`{"refundId":"1\u0000"}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseReturnShipped(data)
		mustBeInvalid(t, err)
		if err != nil {
			return
		}
		if !allDigits(string(d.RefundID)) || d.LogisticsCompanyCode == "" || d.LogisticsNo == "" || d.BuyerPhone == "" {
			t.Fatalf("accepted %+v", d)
		}
	})
}
