package events

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// wantInvalid asserts err is a *ValidationError naming field and value, and
// matching ErrInvalid.
func wantInvalid(t *testing.T, err error, field, value string) *ValidationError {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want it refused naming %s", field)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %q does not match ErrInvalid: a consumer would retry it forever instead of dead-lettering it", err)
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error %q is %T, not *ValidationError", err, err)
	}
	if verr.Field != field {
		t.Errorf("error %q names field %q, want %q", err, verr.Field, field)
	}
	if verr.Value != value {
		t.Errorf("error %q shows value %q, want %q", err, verr.Value, value)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error text %q spans lines; it could not go in a dead-letter header", err)
	}
	return verr
}

const goodReturn = `{"refundId":"110002687818","logisticsCompanyCode":"SF","logisticsNo":"SF00111test","buyerPhone":"15068763422","returnGoodsDesc":"test"}`

func TestParseReturnShippedAcceptsTheContractExample(t *testing.T) {
	d, err := ParseReturnShipped([]byte(goodReturn))
	if err != nil {
		t.Fatal(err)
	}
	if d.RefundID != "110002687818" || d.LogisticsCompanyCode != "SF" || d.LogisticsNo != "SF00111test" ||
		d.BuyerPhone != "15068763422" || d.ReturnGoodsDesc == nil || *d.ReturnGoodsDesc != "test" {
		t.Errorf("decoded %+v", d)
	}
}

func TestParseReturnShippedDescriptionIsOptional(t *testing.T) {
	for name, data := range map[string]string{
		"null":   `{"refundId":1,"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P","returnGoodsDesc":null}`,
		"absent": `{"refundId":1,"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P"}`,
	} {
		d, err := ParseReturnShipped([]byte(data))
		if err != nil {
			t.Fatalf("%s description refused: %v", name, err)
		}
		if d.ReturnGoodsDesc != nil {
			t.Errorf("%s description decoded as %q, want nil", name, *d.ReturnGoodsDesc)
		}
	}
	d, err := ParseReturnShipped([]byte(`{"refundId":1,"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P","returnGoodsDesc":""}`))
	if err != nil || d.ReturnGoodsDesc == nil || *d.ReturnGoodsDesc != "" {
		t.Errorf("empty description: %v, %v; want kept as empty string", d.ReturnGoodsDesc, err)
	}
}

func TestParseReturnShippedAllowsUnknownFields(t *testing.T) {
	data := `{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P","warehouse":{"id":7},"note":null}`
	if _, err := ParseReturnShipped([]byte(data)); err != nil {
		t.Fatalf("unknown fields refused: %v", err)
	}
}

func TestParseReturnShippedRefusesEachBadField(t *testing.T) {
	base := `"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P"`
	for _, tc := range []struct {
		name, data, field, value string
	}{
		{"empty logisticsNo", `{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"","buyerPhone":"P"}`, "logisticsNo", `""`},
		{"missing logisticsNo", `{"refundId":"1","logisticsCompanyCode":"SF","buyerPhone":"P"}`, "logisticsNo", ""},
		{"null logisticsCompanyCode", `{"refundId":"1","logisticsCompanyCode":null,"logisticsNo":"N","buyerPhone":"P"}`, "logisticsCompanyCode", "null"},
		{"numeric buyerPhone", `{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":15068763422}`, "buyerPhone", "15068763422"},
		{"missing buyerPhone", `{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N"}`, "buyerPhone", ""},
		{"empty logisticsCompanyCode", `{"refundId":"1","logisticsCompanyCode":"","logisticsNo":"N","buyerPhone":"P"}`, "logisticsCompanyCode", `""`},
		{"numeric description", `{` + base + `,"returnGoodsDesc":5}`, "returnGoodsDesc", "5"},
		{"object description", `{` + base + `,"returnGoodsDesc":{"a": 1}}`, "returnGoodsDesc", `{"a":1}`},
		{"missing refundId", `{"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P"}`, "refundId", ""},
		{"float refundId", `{"refundId":1.5,"logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P"}`, "refundId", "1.5"},
		{"field names are case-sensitive", `{"RefundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"P"}`, "refundId", ""},
		{"array", `[{"refundId": "1"}]`, "data", `[{"refundId":"1"}]`},
		{"null", `null`, "data", "null"},
		{"string", `"x"`, "data", `"x"`},
		{"empty", ``, "data", ""},
		{"blank", " \n", "data", ""},
		{"not JSON", `{"refundId":`, "data", `"{\"refundId\":"`},
		{"trailing garbage", `{"refundId":"1"} x`, "data", `"{\"refundId\":\"1\"} x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseReturnShipped([]byte(tc.data))
			wantInvalid(t, err, tc.field, tc.value)
		})
	}
}

func TestValidationErrorTextNamesFieldAndValue(t *testing.T) {
	e := inputEvent(t, TypeReturnShipped, `{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"","buyerPhone":"P"}`)
	_, err := ParseInput(e)
	wantInvalid(t, err, "data.logisticsNo", `""`)
	if got, want := err.Error(), `data.logisticsNo: "" must be a non-empty string`; got != want {
		t.Errorf("error text %q, want %q", got, want)
	}
	_, err = ParseInput(inputEvent(t, TypeReturnShipped, `{"refundId":"1","logisticsCompanyCode":"SF","buyerPhone":"P"}`))
	if got, want := err.Error(), `data.logisticsNo is missing; it must be a non-empty string`; got != want {
		t.Errorf("error text %q, want %q", got, want)
	}
}

// TestBlankRequiredStringsAreRefused: a required string of white space only
// is as good as empty, and would reach PandaPon as a blank tracking number,
// carrier or phone; a value with surrounding spaces is left as sent.
func TestBlankRequiredStringsAreRefused(t *testing.T) {
	for _, field := range []string{"logisticsCompanyCode", "logisticsNo", "buyerPhone"} {
		for _, blank := range []string{` `, `\t`, `\u3000`, ` \n `} { // JSON escapes
			v := map[string]string{"logisticsCompanyCode": `"SF"`, "logisticsNo": `"SF1"`, "buyerPhone": `"P"`}
			v[field] = `"` + blank + `"`
			data := `{"refundId":"1","logisticsCompanyCode":` + v["logisticsCompanyCode"] + `,"logisticsNo":` + v["logisticsNo"] + `,"buyerPhone":` + v["buyerPhone"] + `}`
			_, err := ParseReturnShipped([]byte(data))
			verr := wantInvalid(t, err, field, `"`+blank+`"`)
			if verr != nil && !strings.Contains(verr.Error(), "not only white space") {
				t.Errorf("%s %q: error %q does not say why", field, blank, verr.Error())
			}
		}
	}
	d, err := ParseReturnShipped([]byte(`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":" SF1 ","buyerPhone":"P"}`))
	if err != nil || d.LogisticsNo != " SF1 " {
		t.Errorf(`logisticsNo " SF1 ": %+v, %v; want it accepted as sent`, d, err)
	}
}

func TestValidationErrorValueIsTruncated(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	_, err := ParseRefundLookupRequested([]byte(`{"refundId":"` + long + `"}`))
	verr := wantInvalid(t, err, "refundId", `"`+strings.Repeat("x", maxValueLen-1)+"…")
	if len(verr.Error()) > 200 {
		t.Errorf("error text is %d bytes; a huge value should be cut", len(verr.Error()))
	}
}

func TestValidationErrorTextIsOneLine(t *testing.T) {
	verr := &ValidationError{Field: "header \"x\r\ny\"", Value: "a\nb\x00", Problem: "bad\xff"}
	if s := verr.Error(); strings.ContainsAny(s, "\r\n\x00") || !strings.Contains(s, "bad") {
		t.Errorf("Error() = %q; want one line without control characters", s)
	}
}

func TestRefundIDNumberAndStringNormaliseEqually(t *testing.T) {
	a, err := ParseRefundLookupRequested([]byte(`{"refundId":110002687818}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseRefundLookupRequested([]byte(`{"refundId":"110002687818"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.RefundID != "110002687818" || a != b {
		t.Errorf("number gave %q, string gave %q; want both 110002687818", a.RefundID, b.RefundID)
	}
	// More digits than a float64 holds: every digit kept.
	c, err := ParseRefundLookupRequested([]byte(`{"refundId":3582133814705377121}`))
	if err != nil || c.RefundID != "3582133814705377121" {
		t.Errorf("19-digit id gave %q, %v", c.RefundID, err)
	}
}

func TestRefundIDRefusesNonIntegers(t *testing.T) {
	for _, raw := range []string{`1.5`, `-1`, `1e3`, `1E3`, `1.0`, `-0`, `""`, `"  "`, `" 1"`, `"1a"`, `"-1"`, `"1.5"`, `true`, `null`, `{}`, `[1]`} {
		t.Run(raw, func(t *testing.T) {
			_, err := ParseRefundLookupRequested([]byte(`{"refundId":` + raw + `}`))
			wantInvalid(t, err, "refundId", raw)
		})
	}
}

func TestRefundIDJSONRoundTrip(t *testing.T) {
	var v struct{ ID RefundID }
	if err := jsonUnmarshal(`{"ID":42}`, &v); err != nil || v.ID != "42" {
		t.Fatalf("unmarshal number: %q, %v", v.ID, err)
	}
	b, err := v.ID.MarshalJSON()
	if err != nil || string(b) != `"42"` {
		t.Errorf("marshal: %s, %v; want a JSON string", b, err)
	}
	err = jsonUnmarshal(`{"ID":1.5}`, &v)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("unmarshal 1.5: %v; want ErrInvalid", err)
	}
}

func TestParseInputAcceptsBothInputTypes(t *testing.T) {
	in, err := ParseInput(inputEvent(t, TypeRefundLookupRequested, `{"refundId":110002687818}`))
	if err != nil {
		t.Fatal(err)
	}
	if in.Lookup == nil || in.ReturnShipped != nil || in.RefundID() != "110002687818" {
		t.Errorf("lookup decoded as %+v", in)
	}
	in, err = ParseInput(inputEvent(t, TypeReturnShipped, goodReturn))
	if err != nil {
		t.Fatal(err)
	}
	if in.ReturnShipped == nil || in.Lookup != nil || in.RefundID() != "110002687818" {
		t.Errorf("return.shipped decoded as %+v", in)
	}
}

func TestParseInputAcceptsJSONContentTypes(t *testing.T) {
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.pandabridge+json"} {
		e := inputEvent(t, TypeRefundLookupRequested, `{"refundId":"1"}`)
		if ct == "" {
			e.Context.(*event.EventContextV1).DataContentType = nil
		} else {
			e.SetDataContentType(ct)
		}
		if _, err := ParseInput(e); err != nil {
			t.Errorf("datacontenttype %q refused: %v", ct, err)
		}
	}
}

func TestParseInputRefusesInvalidEvents(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*event.Event)
		field  string
		value  string
		is     error
	}{
		{"unknown type", func(e *event.Event) { e.SetType("refund.updated") }, "type", `"refund.updated"`, ErrUnknownType},
		{"missing type", func(e *event.Event) { v1(e).Type = "" }, "type", "", ErrInvalid},
		{"missing id", func(e *event.Event) { v1(e).ID = "" }, "id", "", ErrInvalid},
		{"blank id", func(e *event.Event) { v1(e).ID = "  " }, "id", `"  "`, ErrInvalid},
		{"id with newline", func(e *event.Event) { v1(e).ID = "a\nb" }, "id", `"a\nb"`, ErrInvalid},
		{"id with trailing space", func(e *event.Event) { v1(e).ID = "a " }, "id", `"a "`, ErrInvalid},
		{"missing source", func(e *event.Event) { e.Context.(*event.EventContextV1).Source.URL.Path = "" }, "source", "", ErrInvalid},
		{"xml data", func(e *event.Event) { e.SetDataContentType("application/xml") }, "datacontenttype", `"application/xml"`, ErrInvalid},
		{"specversion 0.3", func(e *event.Event) { e.Context = e.Context.AsV03() }, "specversion", `"0.3"`, ErrInvalid},
		{"no context", func(e *event.Event) { e.Context = nil }, "specversion", "", ErrInvalid},
		{"no data", func(e *event.Event) { e.DataEncoded = nil }, "data", "", ErrInvalid},
		{"data not an object", func(e *event.Event) { e.DataEncoded = []byte(`[]`) }, "data", "[]", ErrInvalid},
		{"bad refundId", func(e *event.Event) { e.DataEncoded = []byte(`{"refundId":-1}`) }, "data.refundId", "-1", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := inputEvent(t, TypeRefundLookupRequested, `{"refundId":"1"}`)
			tc.mutate(&e)
			_, err := ParseInput(e)
			wantInvalid(t, err, tc.field, tc.value)
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not match %v", err, tc.is)
			}
		})
	}
}

// inputEvent builds an input event with sdk-go, as a producer would.
func inputEvent(t testing.TB, typ, data string) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("in-1")
	e.SetSource("erp/warehouse-7")
	e.SetType(typ)
	e.SetTime(time.Date(2025, 5, 14, 8, 19, 37, 82_000_000, time.UTC))
	if err := e.SetData(event.ApplicationJSON, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return e
}

func v1(e *event.Event) *event.EventContextV1 { return e.Context.(*event.EventContextV1) }
