package events

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compileSchema compiles the embedded schema of eventType.
func compileSchema(t *testing.T, eventType string) *jsonschema.Schema {
	t.Helper()
	raw, ok := Schema(eventType)
	if !ok {
		t.Fatalf("no schema for %s", eventType)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("schema of %s is not JSON: %v", eventType, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	url := "mem:///" + eventType + ".json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("schema of %s does not compile: %v", eventType, err)
	}
	return sch
}

func schemaAccepts(t *testing.T, sch *jsonschema.Schema, data string) (bool, error) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(data))
	if err != nil {
		return false, err // not JSON: no schema can accept it
	}
	err = sch.Validate(v)
	return err == nil, err
}

func TestEverySchemaIsEmbeddedAndCompiles(t *testing.T) {
	for _, typ := range SchemaTypes() {
		compileSchema(t, typ)
	}
	if _, ok := Schema("nope"); ok {
		t.Error("Schema of an unknown type reported true")
	}
	if _, ok := Schema("../doc.go"); ok {
		t.Error("Schema escaped the schema directory")
	}
	// The files are also on disk for people who read the repository.
	for _, typ := range SchemaTypes() {
		disk, err := os.ReadFile("schemas/" + typ + ".json")
		emb, _ := Schema(typ)
		if err != nil || !bytes.Equal(disk, emb) {
			t.Errorf("schemas/%s.json on disk differs from the embedded one (%v)", typ, err)
		}
	}
}

// TestSchemasAgreeWithGoValidation checks, payload by payload, that the JSON
// Schema given to other teams accepts exactly what ParseInput accepts. The
// only known difference: JSON Schema compares numbers by value, so it sees
// 1e3, 1.0 and -0 as the integers 1000, 1 and 0, while the Go validation
// reads the literal and refuses them.
func TestSchemasAgreeWithGoValidation(t *testing.T) {
	const (
		rest = `"logisticsCompanyCode":"SF","logisticsNo":"SF00111test","buyerPhone":"15068763422"`
	)
	type row struct {
		data       string
		goAccepts  bool
		schemaOnly bool // the schema accepts it although Go refuses it (see above)
	}
	tables := map[string][]row{
		TypeRefundLookupRequested: {
			{`{"refundId":"110002687818"}`, true, false},
			{`{"refundId":110002687818}`, true, false},
			{`{"refundId":3582133814705377121}`, true, false},
			{`{"refundId":"0"}`, true, false},
			{`{"refundId":0}`, true, false},
			{`{"refundId":"1","extra":[1,2]}`, true, false},
			{`{"refundId":""}`, false, false},
			{`{"refundId":"  "}`, false, false},
			{`{"refundId":" 1"}`, false, false},
			{`{"refundId":"1\n"}`, false, false},
			{`{"refundId":"12a"}`, false, false},
			{`{"refundId":1.5}`, false, false},
			{`{"refundId":-1}`, false, false},
			{`{"refundId":true}`, false, false},
			{`{"refundId":null}`, false, false},
			{`{"refundId":{}}`, false, false},
			{`{"RefundId":"1"}`, false, false},
			{`{}`, false, false},
			{`[]`, false, false},
			{`"110002687818"`, false, false},
			{`110002687818`, false, false},
			{`null`, false, false},
			{`{"refundId":1e3}`, false, true},
			{`{"refundId":1.0}`, false, true},
			{`{"refundId":-0}`, false, true},
		},
		TypeReturnShipped: {
			{`{"refundId":"110000303674",` + rest + `,"returnGoodsDesc":"test"}`, true, false},
			{`{"refundId":110000303674,` + rest + `,"returnGoodsDesc":null}`, true, false},
			{`{"refundId":"1",` + rest + `}`, true, false},
			{`{"refundId":"1",` + rest + `,"returnGoodsDesc":""}`, true, false},
			{`{"refundId":"1",` + rest + `,"unknown":{"x":1}}`, true, false},
			{`{"refundId":"1","logisticsCompanyCode":" ","logisticsNo":"N","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"\t\n","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":"\u3000\u00a0\u0085"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":" N ","buyerPhone":"\u3000P"}`, true, false},
			{`{"refundId":"1","logisticsCompanyCode":"","logisticsNo":"N","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N","buyerPhone":""}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":"N"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsNo":"N","buyerPhone":"P"}`, false, false},
			{`{` + rest + `}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":"SF","logisticsNo":7,"buyerPhone":"P"}`, false, false},
			{`{"refundId":"1","logisticsCompanyCode":null,"logisticsNo":"N","buyerPhone":"P"}`, false, false},
			{`{"refundId":"1",` + rest + `,"returnGoodsDesc":5}`, false, false},
			{`{"refundId":"1",` + rest + `,"returnGoodsDesc":["a"]}`, false, false},
			{`{"refundId":"",` + rest + `}`, false, false},
			{`{"refundId":"  ",` + rest + `}`, false, false},
			{`{"refundId":2.5,` + rest + `}`, false, false},
			{`{"refundId":-7,` + rest + `}`, false, false},
			{`{"refundId":false,` + rest + `}`, false, false},
			{`[{"refundId":"1",` + rest + `}]`, false, false},
			{`"x"`, false, false},
			{`{"refundId":1e3,` + rest + `}`, false, true},
		},
	}
	for typ, rows := range tables {
		sch := compileSchema(t, typ)
		for _, r := range rows {
			_, goErr := ParseInput(inputEvent(t, typ, r.data))
			if (goErr == nil) != r.goAccepts {
				t.Errorf("%s %s: Go validation accepted=%v (%v), want %v", typ, r.data, goErr == nil, goErr, r.goAccepts)
			}
			ok, schErr := schemaAccepts(t, sch, r.data)
			if want := r.goAccepts || r.schemaOnly; ok != want {
				t.Errorf("%s %s: schema accepted=%v, Go accepted=%v: they disagree (%v)", typ, r.data, ok, goErr == nil, schErr)
			}
		}
	}
}

func TestRefundRequestFailedOutputMatchesItsSchema(t *testing.T) {
	sch := compileSchema(t, TypeRefundRequestFailed)
	in := inputEvent(t, TypeReturnShipped, goodReturn)
	reqID := "0b1c4a2e"
	for _, f := range []RefundRequestFailed{
		{RefundID: "110002687818", RequestType: TypeReturnShipped, Code: 500012, Msg: "逆向单状态不允许 <submit> & co", RequestID: &reqID, Reason: "PandaPon refused the return logistics."},
		{RefundID: "1", RequestType: TypeRefundLookupRequested, Code: -1, Msg: "", RequestID: nil, Reason: "PandaPon refused the lookup."},
	} {
		e, err := NewRefundRequestFailed(in, "pandabridge", f, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := schemaAccepts(t, sch, string(e.Data())); !ok {
			t.Errorf("refund.request.failed data %s does not match its schema: %v", e.Data(), err)
		}
	}
}

func TestRefundUpdatedSchemaAcceptsPandaPonAnswers(t *testing.T) {
	sch := compileSchema(t, TypeRefundUpdated)
	if ok, err := schemaAccepts(t, sch, pandaPonQueryData); !ok {
		t.Errorf("PandaPon's documented answer does not match the refund.updated schema: %v", err)
	}
	for _, bad := range []string{`{}`, `[]`, `{"distributorId":1,"currency":"CNY"}`, `{"distributorId":1,"currency":"CNY","refundOrderAggregate":[]}`} {
		if ok, _ := schemaAccepts(t, sch, bad); ok {
			t.Errorf("refund.updated schema accepts %s", bad)
		}
	}
}

// pandaPonQueryData is a refund query answer's data in the shape of the API
// documentation, with the numbers that must survive: a 19-digit id and a
// decimal written 12.50.
const pandaPonQueryData = `{
  "distributorId": "2208857218",
  "currency": "CNY",
  "refundOrderAggregate": {
    "logistics": {"logisticsNo": "SF00111test", "logisticsCompanyCode": "SF"},
    "refundOrder": {"refundId": 110002687818, "refundStatus": 20, "refundFee": 1250, "payOrderId": 3582133814705377121, "ratio": 12.50},
    "purchaseOrderLine": {"purchaseOrderLineId": "3582133814705377121", "properties": {"颜色": "红"}}
  },
  "futureField": null
}`
