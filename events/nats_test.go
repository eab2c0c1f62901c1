package events

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// assertSameEvent compares every attribute, every extension (by its
// canonical string, the only form binary mode has) and the data bytes.
func assertSameEvent(t *testing.T, want, got event.Event) {
	t.Helper()
	if got.Context == nil {
		t.Fatalf("decoded event has no attributes; want %s", want.Context)
	}
	for _, a := range []struct{ name, want, got string }{
		{"specversion", want.SpecVersion(), got.SpecVersion()},
		{"id", want.ID(), got.ID()},
		{"source", want.Source(), got.Source()},
		{"type", want.Type(), got.Type()},
		{"subject", want.Subject(), got.Subject()},
		{"datacontenttype", want.DataContentType(), got.DataContentType()},
		{"dataschema", want.DataSchema(), got.DataSchema()},
	} {
		if a.got != a.want {
			t.Errorf("%s = %q, want %q", a.name, a.got, a.want)
		}
	}
	if !got.Time().Equal(want.Time()) {
		t.Errorf("time = %v, want %v", got.Time(), want.Time())
	}
	wantExt, gotExt := formatted(t, want.Extensions()), formatted(t, got.Extensions())
	if !maps.Equal(wantExt, gotExt) {
		t.Errorf("extensions = %v, want %v", gotExt, wantExt)
	}
	if !bytes.Equal(got.Data(), want.Data()) {
		t.Errorf("data = %q, want %q", got.Data(), want.Data())
	}
}

func formatted(t *testing.T, ext map[string]interface{}) map[string]string {
	t.Helper()
	out := make(map[string]string, len(ext))
	for k, v := range ext {
		s, err := types.Format(v)
		if err != nil {
			t.Fatalf("extension %s: %v", k, err)
		}
		out[k] = s
	}
	return out
}

// sdkEvent is an event as a third party would build it with sdk-go.
func sdkEvent(t testing.TB) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
	e.SetSource("https://erp.example.com/warehouse/7")
	e.SetType(TypeReturnShipped)
	e.SetSubject("110002687818")
	e.SetTime(time.Date(2025, 5, 14, 8, 19, 37, 82_123_456, time.UTC))
	e.SetDataSchema("https://example.com/schemas/return.shipped.json")
	e.SetExtension(ExtCausationID, "order-42")
	e.SetExtension(ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	e.SetExtension("attempt", 3)
	e.SetExtension("urgent", true)
	if err := e.SetData(event.ApplicationJSON, []byte(`{"refundId":110002687818,"logisticsCompanyCode":"SF","logisticsNo":"SF00111test","buyerPhone":"15068763422","returnGoodsDesc":"箱子 12.50 kg","n":3582133814705377121}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEncodeNATSWritesBinaryModeHeaders(t *testing.T) {
	e := sdkEvent(t)
	msg, err := EncodeNATS("pandapon.return.shipped", e)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion":      "1.0",
		"ce-id":               e.ID(),
		"ce-source":           e.Source(),
		"ce-type":             TypeReturnShipped,
		"ce-subject":          "110002687818",
		"ce-time":             "2025-05-14T08:19:37.082123456Z",
		"ce-dataschema":       "https://example.com/schemas/return.shipped.json",
		"ce-causationid":      "order-42",
		"ce-traceparent":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"ce-attempt":          "3",
		"ce-urgent":           "true",
		HeaderContentType:     ContentTypeJSON,
		jetstream.MsgIDHeader: e.ID(),
	}
	got := map[string]string{}
	for k, v := range msg.Header {
		if len(v) != 1 {
			t.Errorf("header %s has %d values", k, len(v))
		}
		got[k] = v[0]
	}
	if !maps.Equal(got, want) {
		t.Errorf("headers\n got %v\nwant %v", got, want)
	}
	if msg.Subject != "pandapon.return.shipped" || !bytes.Equal(msg.Data, e.Data()) {
		t.Errorf("subject %q, payload %q", msg.Subject, msg.Data)
	}
	if HeaderMsgID != jetstream.MsgIDHeader {
		t.Errorf("HeaderMsgID %q is not JetStream's %q", HeaderMsgID, jetstream.MsgIDHeader)
	}
}

func TestEncodeNATSTimeIsUTC(t *testing.T) {
	e := sdkEvent(t)
	e.SetTime(time.Date(2025, 5, 14, 16, 19, 37, 0, time.FixedZone("CST", 8*3600)))
	msg, err := EncodeNATS("s", e)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("ce-time"); got != "2025-05-14T08:19:37Z" {
		t.Errorf("ce-time = %q, want UTC", got)
	}
}

func TestEncodeNATSRefusesWhatNATSWouldAlter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*event.Event)
		field  string
	}{
		{"newline in subject attribute", func(e *event.Event) { s := "a\r\nb"; v1(e).Subject = &s }, "subject"},
		{"padded extension", func(e *event.Event) { v1(e).Extensions["causationid"] = " x" }, "causationid"},
		{"control character in type", func(e *event.Event) { v1(e).Type = "a\x01" }, "type"},
		{"missing id", func(e *event.Event) { v1(e).ID = "" }, "id"},
		{"bad extension name", func(e *event.Event) { v1(e).Extensions["Bad-Name"] = "x" }, `extension "Bad-Name"`},
		// Not strings, so checkEvent does not see their text: EncodeNATS
		// checks what they format to.
		{"control character in a URI extension", func(e *event.Event) {
			v1(e).Extensions["ref"] = types.URIRef{URL: url.URL{Opaque: "a\x01b"}}
		}, "ref"},
		{"newline in a *string extension", func(e *event.Event) { s := "a\nb"; v1(e).Extensions["note"] = &s }, "note"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sdkEvent(t)
			tc.mutate(&e)
			_, err := EncodeNATS("pandapon.x", e)
			if err == nil {
				t.Fatal("encoded; NATS would have changed the value in transit")
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || verr.Field != tc.field || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v; want a ValidationError on %s", err, tc.field)
			}
		})
	}
	if _, err := EncodeNATS("", sdkEvent(t)); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty subject: %v", err)
	}
}

// The interop tests prove that our hand-written mapping and sdk-go's own
// binding machinery read the same messages the same way.

func TestInteropBinaryReadBySDK(t *testing.T) {
	want := sdkEvent(t)
	msg, err := EncodeNATS("pandapon.return.shipped", want)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMessage(msg.Header, msg.Data)
	if enc := m.ReadEncoding(); enc != binding.EncodingBinary {
		t.Fatalf("sdk-go sees encoding %v, want binary", enc)
	}
	got, err := binding.ToEvent(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, *got)
	if err := got.Validate(); err != nil {
		t.Errorf("sdk-go finds the decoded event invalid: %v", err)
	}

	ours, err := DecodeNATS(msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, ours)
	assertSameEvent(t, *got, ours)
}

func TestInteropMetadataReader(t *testing.T) {
	want := sdkEvent(t)
	msg, err := EncodeNATS("s", want)
	if err != nil {
		t.Fatal(err)
	}
	mr, ok := NewMessage(msg.Header, msg.Data).(binding.MessageMetadataReader)
	if !ok {
		t.Fatal("NewMessage is not a binding.MessageMetadataReader")
	}
	_, id := mr.GetAttribute(spec.ID)
	_, ct := mr.GetAttribute(spec.DataContentType)
	if id != want.ID() || ct != ContentTypeJSON {
		t.Errorf("GetAttribute: id %v, datacontenttype %v", id, ct)
	}
	if v := mr.GetExtension(ExtCausationID); v != "order-42" {
		t.Errorf("GetExtension(causationid) = %v", v)
	}
	if v := mr.GetExtension("absent"); v != nil {
		t.Errorf("GetExtension(absent) = %v, want nil", v)
	}
}

func TestInteropStructuredWrittenBySDK(t *testing.T) {
	want := sdkEvent(t)
	payload, err := format.JSON.Marshal(&want)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{ContentTypeStructured, "application/cloudevents+json; charset=utf-8", "Application/CloudEvents+JSON"} {
		h := nats.Header{HeaderContentType: {ct}}
		got, err := DecodeNATS(h, payload)
		if err != nil {
			t.Fatalf("Content-Type %q: %v", ct, err)
		}
		assertSameEvent(t, want, got)
	}
	// And sdk-go reads it through NewMessage the same way.
	got, err := binding.ToEvent(context.Background(), NewMessage(nats.Header{HeaderContentType: {ContentTypeStructured}}, payload))
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, *got)
}

func TestInteropStructuredDataForms(t *testing.T) {
	// Events whose data travel as a string, as base64 and as embedded JSON:
	// our decoder must read sdk-go's output exactly as sdk-go does.
	mk := func(ct string, data []byte, b64 bool) event.Event {
		e := sdkEvent(t)
		e.SetDataContentType(ct)
		e.DataEncoded = data
		e.DataBase64 = b64
		return e
	}
	for name, e := range map[string]event.Event{
		"text":         mk("text/plain", []byte("hello \"world\"\n"), false),
		"base64":       mk("application/octet-stream", []byte{0, 1, 2, 0xff}, true),
		"json charset": mk("application/json; charset=utf-8", []byte(`{"a":[1,2.50]}`), false),
		"vendor +json": mk("application/vnd.x+json", []byte(`{"a":1}`), false),
		"no data":      mk("application/json", nil, false),
	} {
		t.Run(name, func(t *testing.T) {
			payload, err := format.JSON.Marshal(&e)
			if err != nil {
				t.Fatal(err)
			}
			var sdk event.Event
			if err := format.JSON.Unmarshal(payload, &sdk); err != nil {
				t.Fatal(err)
			}
			ours, err := DecodeNATS(nats.Header{HeaderContentType: {ContentTypeStructured}}, payload)
			if err != nil {
				t.Fatalf("%s: %v", payload, err)
			}
			assertSameEvent(t, sdk, ours)
			assertSameEvent(t, e, ours)
			if ours.DataBase64 != sdk.DataBase64 {
				t.Errorf("DataBase64 = %v, sdk-go %v", ours.DataBase64, sdk.DataBase64)
			}
		})
	}
}

func TestInteropSDKWritesWeRead(t *testing.T) {
	// sdk-go's generic binding.Write of an event message, into a binary
	// writer that keeps the ce- convention: DecodeNATS reads it back.
	want := sdkEvent(t)
	w := &headerWriter{h: nats.Header{}}
	enc, err := binding.Write(context.Background(), binding.ToMessage(&want), nil, w)
	if err != nil {
		t.Fatal(err)
	}
	if enc != binding.EncodingBinary {
		t.Fatalf("sdk-go wrote encoding %v", enc)
	}
	got, err := DecodeNATS(w.h, w.data)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, got)

	// sdk-go's event message can also be turned into our NATS message via
	// binding.ToEvent, and survives EncodeNATS/DecodeNATS.
	e, err := binding.ToEvent(context.Background(), binding.ToMessage(&want))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := EncodeNATS("s", *e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := binding.ToEvent(context.Background(), NewMessage(msg.Header, msg.Data))
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, *back)
}

func TestDecodeNATSAcceptsHeaderCaseVariants(t *testing.T) {
	want := sdkEvent(t)
	msg, err := EncodeNATS("s", want)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	for k, v := range msg.Header {
		if strings.HasPrefix(k, HeaderPrefix) {
			k = "Ce-" + strings.ToUpper(k[3:4]) + k[4:] // as an HTTP bridge canonicalises
		} else if k == HeaderContentType {
			k = "content-type"
		}
		h[k] = v
	}
	got, err := DecodeNATS(h, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, got)
	sdk, err := binding.ToEvent(context.Background(), NewMessage(h, msg.Data))
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, want, *sdk)
}

func TestDecodeNATSPrefersContentTypeOverCEDatacontenttype(t *testing.T) {
	h := binaryHeader()
	h.Set("ce-datacontenttype", "text/plain")
	got, err := DecodeNATS(h, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.DataContentType() != ContentTypeJSON {
		t.Errorf("datacontenttype %q, want Content-Type's", got.DataContentType())
	}
	h.Del(HeaderContentType)
	got, err = DecodeNATS(h, []byte(`{}`))
	if err != nil || got.DataContentType() != "text/plain" {
		t.Errorf("ce-datacontenttype alone (as sdk-go's JetStream writer sends it): %q, %v", got.DataContentType(), err)
	}
}

func TestDecodeNATSIgnoresForeignHeaders(t *testing.T) {
	h := binaryHeader()
	h.Set(HeaderMsgID, "x")
	h.Set("Pandabridge-Dlq-Reason", "whatever")
	h.Set("traceparent", "not ours")
	got, err := DecodeNATS(h, []byte(`{"refundId":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Extensions()) != 0 {
		t.Errorf("foreign headers became extensions: %v", got.Extensions())
	}
}

func binaryHeader() nats.Header {
	return nats.Header{
		"ce-specversion":  {"1.0"},
		"ce-id":           {"in-1"},
		"ce-source":       {"erp"},
		"ce-type":         {TypeRefundLookupRequested},
		HeaderContentType: {ContentTypeJSON},
	}
}

func TestDecodeNATSRefusesWhatIsNotACloudEvent(t *testing.T) {
	for name, h := range map[string]nats.Header{
		"no headers":                    nil,
		"plain JSON":                    {HeaderContentType: {ContentTypeJSON}},
		"batch":                         {HeaderContentType: {"application/cloudevents-batch+json"}},
		"ce headers but no specversion": {"ce-id": {"1"}, "ce-type": {TypeReturnShipped}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeNATS(h, []byte(`{"refundId":"1"}`))
			if !errors.Is(err, ErrNotCloudEvent) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v; want ErrNotCloudEvent and ErrInvalid", err)
			}
		})
	}
}

func TestDecodeNATSRefusesInvalidBinaryEvents(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(nats.Header)
		field  string
		value  string
	}{
		{"specversion 0.3", func(h nats.Header) { h.Set("ce-specversion", "0.3") }, "specversion", `"0.3"`},
		{"missing id", func(h nats.Header) { h.Del("ce-id") }, "id", ""},
		{"blank source", func(h nats.Header) { h.Set("ce-source", " ") }, "source", `" "`},
		{"missing type", func(h nats.Header) { h.Del("ce-type") }, "type", ""},
		{"bad time", func(h nats.Header) { h.Set("ce-time", "yesterday") }, "time", `"yesterday"`},
		{"bad attribute name", func(h nats.Header) { h.Set("ce-trace-id", "x") }, `header "ce-trace-id"`, ""},
		{"two different ids", func(h nats.Header) { h["ce-id"] = []string{"a", "b"} }, "id", `"b"`},
		{"bad content type", func(h nats.Header) { h.Set(HeaderContentType, "json;;") }, "datacontenttype", `"json;;"`},
		{"control character", func(h nats.Header) { h.Set("ce-subject", "a\x00b") }, "subject", `"a\x00b"`},
		{"relative dataschema", func(h nats.Header) { h.Set("ce-dataschema", "schemas/x.json") }, "dataschema", `"schemas/x.json"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := binaryHeader()
			tc.mutate(h)
			_, err := DecodeNATS(h, []byte(`{}`))
			wantInvalid(t, err, tc.field, tc.value)
		})
	}
}

func TestDecodeNATSRefusesAnAttributeUnderTwoSpellings(t *testing.T) {
	h := binaryHeader()
	h.Set("Ce-Id", "other")
	_, err := DecodeNATS(h, []byte(`{}`))
	var verr *ValidationError
	if !errors.As(err, &verr) || verr.Field != "id" || !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v; want one naming id", err)
	}
	// Which of the two is reported depends on map order; both are named.
	if verr.Value != `"other"` && verr.Value != `"in-1"` {
		t.Errorf("value %s is neither header's", verr.Value)
	}
}

func TestDecodeNATSToleratesRepeatedIdenticalHeaders(t *testing.T) {
	h := binaryHeader()
	h["ce-id"] = []string{"in-1", "in-1"}
	h.Set("Ce-Type", TypeRefundLookupRequested)
	if _, err := DecodeNATS(h, []byte(`{}`)); err != nil {
		t.Errorf("identical repeats refused: %v", err)
	}
}

func TestDecodeNATSRefusesInvalidStructuredEvents(t *testing.T) {
	h := nats.Header{HeaderContentType: {ContentTypeStructured}}
	for _, tc := range []struct {
		name, payload, field, value string
	}{
		{"empty", ``, "payload", ""},
		{"not JSON", `{"specversion":`, "payload", `"{\"specversion\":"`},
		{"array", `[]`, "payload", `[]`},
		{"no specversion", `{"id":"1","source":"s","type":"t"}`, "specversion", ""},
		{"specversion 0.3", `{"specversion":"0.3","id":"1","source":"s","type":"t"}`, "specversion", `"0.3"`},
		{"numeric id", `{"specversion":"1.0","id":1,"source":"s","type":"t"}`, "id", "1"},
		{"missing source", `{"specversion":"1.0","id":"1","type":"t"}`, "source", ""},
		{"bad time", `{"specversion":"1.0","id":"1","source":"s","type":"t","time":"noon"}`, "time", `"noon"`},
		{"data and data_base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":{},"data_base64":"AA=="}`, "data_base64", ""},
		{"bad base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!!"}`, "data_base64", `"!!"`},
		{"numeric base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":1}`, "data_base64", "1"},
		{"numeric base64 first (panics sdk-go's reader)", `{"data_base64":1,"specversion":"1.0","id":"1","source":"s","type":"t"}`, "data_base64", "1"},
		{"object extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","ext":{}}`, "ext", "{}"},
		{"fractional extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","ext":1.5}`, "ext", "1.5"},
		{"bad extension name", `{"specversion":"1.0","id":"1","source":"s","type":"t","Ext":"x"}`, `attribute "Ext"`, ""},
		{"object data for text", `{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":{}}`, "data", "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeNATS(h, []byte(tc.payload))
			wantInvalid(t, err, tc.field, tc.value)
		})
	}
}

func TestDecodeNATSBinaryWinsOverStructuredContentType(t *testing.T) {
	h := binaryHeader()
	h.Set(HeaderContentType, ContentTypeStructured)
	got, err := DecodeNATS(h, []byte(`{"not":"an event"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != "in-1" {
		t.Errorf("read as structured: %v", got)
	}
}

func TestEncodeStructuredIsOneLineSDKReads(t *testing.T) {
	want := sdkEvent(t)
	want.DataEncoded = []byte("{\n  \"pretty\": 12.50,\n  \"id\": 3582133814705377121\n}")
	b, err := EncodeStructured(want)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(b, "\r\n") {
		t.Errorf("structured JSON spans lines: %s", b)
	}
	var sdk event.Event
	if err := format.JSON.Unmarshal(b, &sdk); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(sdk.Data(), []byte("3582133814705377121")) || !bytes.Contains(sdk.Data(), []byte("12.50")) {
		t.Errorf("numbers changed: %s", sdk.Data())
	}
	ours, err := DecodeNATS(nats.Header{HeaderContentType: {ContentTypeStructured}}, b)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, sdk, ours)
	if _, err := EncodeStructured(event.Event{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("event without attributes: %v", err)
	}
	// Data that claims to be JSON but is not travels as data_base64, as
	// sdk-go writes it, and still comes back byte for byte.
	bad := sdkEvent(t)
	bad.DataEncoded = []byte(`{not json`)
	b, err = EncodeStructured(bad)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeNATS(nats.Header{HeaderContentType: {ContentTypeStructured}}, b)
	if err != nil || string(back.Data()) != `{not json` {
		t.Errorf("non-JSON data: %q, %v (structured %s)", back.Data(), err, b)
	}
}

// headerWriter is a minimal binding.BinaryWriter producing NATS headers
// with the ce- convention, standing in for sdk-go's NATS writer, which is
// not reachable as a module here.
type headerWriter struct {
	h    nats.Header
	data []byte
}

func (w *headerWriter) Start(context.Context) error { return nil }
func (w *headerWriter) End(context.Context) error   { return nil }
func (w *headerWriter) SetAttribute(a spec.Attribute, v interface{}) error {
	s, err := types.Format(v)
	if err != nil {
		return err
	}
	if a.Kind() == spec.DataContentType {
		w.h.Set(HeaderContentType, s)
		return nil
	}
	w.h.Set(HeaderPrefix+a.Name(), s)
	return nil
}
func (w *headerWriter) SetExtension(name string, v interface{}) error {
	s, err := types.Format(v)
	if err != nil {
		return err
	}
	w.h.Set(HeaderPrefix+name, s)
	return nil
}
func (w *headerWriter) SetData(r io.Reader) error {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(r)
	w.data = buf.Bytes()
	return err
}

// TestSourceCacheGivesWhatParsingGives: decoding and building outputs
// through the remembered source gives the source parsing gives, also when
// sources alternate and when one is not a URI-reference.
func TestSourceCacheGivesWhatParsingGives(t *testing.T) {
	var c uriRefCache
	for _, s := range []string{"erp://a", "erp://a", "https://b.example/x?y#z", "erp://a", "%zz", "erp://a", "/relative", "/relative"} {
		got, ok := c.parse(s)
		want := types.ParseURIRef(s)
		if ok != (want != nil) {
			t.Fatalf("parse(%q) ok = %v, ParseURIRef gives %v", s, ok, want)
		}
		if want != nil && (got.String() != want.String() || !reflect.DeepEqual(got, *want)) {
			t.Errorf("parse(%q) = %#v, want %#v", s, got, *want)
		}
		// Formatting the remembered reference gives what String gives,
		// also where that differs from the text parsed.
		if want != nil {
			if f, ok := c.format(got); !ok || f != want.String() {
				t.Errorf("format(parse(%q)) = %q, %v; want %q", s, f, ok, want.String())
			}
		}
	}
	for _, s := range []string{"HTTP://Erp.example/a", "erp://a/%7e", "erp://a/b c"} {
		u := types.ParseURIRef(s)
		inputSources.parse(s)
		if got := sourceText(*u); got != u.String() {
			t.Errorf("sourceText(%q) = %q, want %q", s, got, u.String())
		}
		other := types.ParseURIRef(s + "x")
		if got := sourceText(*other); got != other.String() {
			t.Errorf("sourceText(%q), not remembered, = %q, want %q", s+"x", got, other.String())
		}
	}
	// Concurrently, sources alternating (run with -race).
	sources := []string{"erp://a", "wms://b/c", "https://user@d.example/e"}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				s := sources[(g+i)%len(sources)]
				if got, ok := c.parse(s); !ok || got.String() != types.ParseURIRef(s).String() {
					t.Errorf("concurrent parse(%q) = %v, %v", s, got.String(), ok)
					return
				}
			}
		})
	}
	wg.Wait()
}
