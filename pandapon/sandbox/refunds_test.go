package sandbox_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

func TestQuerySeedRefundOnlyIsTheQueryPage(t *testing.T) {
	srv := start(t, sandbox.Options{})
	r := query(t, srv.URL, sandbox.SeedRefundOnly)
	wantCode(t, r, sandbox.CodeSuccess)
	if r.env.Msg != "成功" || string(r.env.RequestID) != "null" || string(r.env.DevelopID) != "null" {
		t.Errorf("envelope msg %q requestId %s developId %s, want 成功, null, null as on the query page",
			r.env.Msg, r.env.RequestID, r.env.DevelopID)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	d := tree(t, r.env.Data)
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"distributorId"}, "2100005349129"},
		{[]string{"refundOrderAggregate", "refundOrder", "refundId"}, "110002687818"},
		{[]string{"refundOrderAggregate", "refundOrder", "payOrderId"}, "3582133814705377121"},
		{[]string{"refundOrderAggregate", "refundOrder", "refundStatus"}, "100"},
		{[]string{"refundOrderAggregate", "refundOrder", "refundType"}, json.Number("1")},
		{[]string{"refundOrderAggregate", "refundOrder", "refundFee"}, json.Number("392")},
		{[]string{"refundOrderAggregate", "refundOrder", "canEditFee"}, nil},
		{[]string{"refundOrderAggregate", "purchaseOrderLine", "supplierId"}, json.Number("3937219703")},
		{[]string{"refundOrderAggregate", "purchaseOrderLine", "purchaseOrderId"}, json.Number("200028508720")},
		{[]string{"refundOrderAggregate", "purchaseOrderLine", "purchaseOrderLineId"}, json.Number("200028508721")},
		{[]string{"refundOrderAggregate", "purchaseOrderLine", "price"}, nil},
		{[]string{"refundOrderAggregate", "purchaseOrderLine", "properties", "食品口味"}, "瓜子仁5包(试吃)"},
		{[]string{"refundOrderAggregate", "logistics", "receiverAddress"}, nil},
		{[]string{"refundOrderAggregate", "logistics", "logisticsCompany", "logisticsCompanyCode"}, nil},
	} {
		if got := at(t, d, c.path...); got != c.want {
			t.Errorf("%s = %#v, want %#v", strings.Join(c.path, "."), got, c.want)
		}
	}
	// Key order follows the page, so the raw text reads like it.
	if !strings.HasPrefix(string(r.body), `{"requestId":null,"code":200,"developId":null,"msg":"成功","data":{"distributorId":"2100005349129","currency":"CNY","refundOrderAggregate":{"logistics":{"receiverAddress":null,`) {
		t.Errorf("body does not start like the query page:\n%s", r.body)
	}
}

func TestQuerySeedAwaitingReturn(t *testing.T) {
	srv := start(t, sandbox.Options{})
	r := query(t, srv.URL, sandbox.SeedAwaitingReturn)
	wantCode(t, r, sandbox.CodeSuccess)
	d := tree(t, r.env.Data)
	ro := at(t, d, "refundOrderAggregate", "refundOrder").(map[string]any)
	if ro["refundType"] != json.Number("2") || ro["refundStatus"] != "20" || ro["goodsStatus"] != json.Number("2") {
		t.Errorf("refundType %v refundStatus %#v goodsStatus %v, want 2, \"20\", 2", ro["refundType"], ro["refundStatus"], ro["goodsStatus"])
	}
	if got := at(t, d, "refundOrderAggregate", "logistics", "logisticsNo"); got != nil {
		t.Errorf("logisticsNo = %#v before any submission, want null", got)
	}
	if got := at(t, d, "refundOrderAggregate", "purchaseOrderLine", "properties", "propName"); got != "test" {
		t.Errorf("properties.propName = %#v, want the {propId,propName,valueId,valueName} shape", got)
	}
	if got := at(t, d, "refundOrderAggregate", "purchaseOrderLine", "supplierId"); got != "2206891060210" {
		t.Errorf("supplierId = %#v, want the string id", got)
	}
}

func TestQuerySeedReturned(t *testing.T) {
	srv := start(t, sandbox.Options{})
	r := query(t, srv.URL, sandbox.SeedReturned)
	wantCode(t, r, sandbox.CodeSuccess)
	d := tree(t, r.env.Data)
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"refundOrderAggregate", "refundOrder", "refundStatus"}, "30"},
		{[]string{"refundOrderAggregate", "refundOrder", "goodsStatus"}, json.Number("5")},
		{[]string{"refundOrderAggregate", "refundOrder", "payOrderId"}, "2597049687002736161"},
		{[]string{"refundOrderAggregate", "logistics", "logisticsNo"}, "43523253245352543"},
		{[]string{"refundOrderAggregate", "logistics", "logisticsCompany", "logisticCompanyCode"}, "123456"},
		{[]string{"refundOrderAggregate", "logistics", "receiverAddress", "receiver"}, "test"},
	} {
		if got := at(t, d, c.path...); got != c.want {
			t.Errorf("%s = %#v, want %#v", strings.Join(c.path, "."), got, c.want)
		}
	}
	st, ok := srv.Refund(sandbox.SeedReturned)
	want := sandbox.RefundState{RefundID: sandbox.SeedReturned, RefundType: 2, RefundStatus: 30, GoodsStatus: 5,
		LogisticsNo: "43523253245352543", LogisticsCompanyCode: "123456"}
	if !ok || st != want {
		t.Errorf("Refund = %+v, %v; want %+v", st, ok, want)
	}
}

func TestGeneratedRefundsRotateTheTypeMess(t *testing.T) {
	const n = 12
	srv := start(t, sandbox.Options{GeneratedRefunds: n})

	r0 := query(t, srv.URL, sandbox.GeneratedRefundID(0))
	wantCode(t, r0, sandbox.CodeSuccess)
	for _, lit := range []string{`"exchangeRate":12.50`, `"payOrderId":3582133814700000000`} {
		if !strings.Contains(string(r0.body), lit) {
			t.Errorf("generated refund 0 does not carry %s byte for byte:\n%s", lit, r0.body)
		}
	}
	if got := at(t, tree(t, r0.env.Data), "refundOrderAggregate", "refundOrder", "payOrderId"); got != json.Number("3582133814700000000") {
		t.Errorf("payOrderId decoded with UseNumber = %#v, want the 19-digit number", got)
	}

	seen := map[string]bool{}
	kind := func(v any) string {
		switch v := v.(type) {
		case nil:
			return "null"
		case string:
			return "string"
		case json.Number:
			return "number"
		case map[string]any:
			if _, ok := v["propId"]; ok {
				return "propObject"
			}
			if _, ok := v["receiver"]; ok {
				return "address"
			}
			return "freeMap"
		}
		return fmt.Sprintf("%T", v)
	}
	for i := range n {
		id := sandbox.GeneratedRefundID(i)
		r := query(t, srv.URL, id)
		wantCode(t, r, sandbox.CodeSuccess)
		d := tree(t, r.env.Data)
		ro := at(t, d, "refundOrderAggregate", "refundOrder").(map[string]any)
		if fmt.Sprint(ro["refundId"]) != id || fmt.Sprint(ro["refundType"]) != "2" || fmt.Sprint(ro["refundStatus"]) != "20" {
			t.Errorf("refund %d: refundId %v refundType %v refundStatus %v, want %s, 2, 20", i, ro["refundId"], ro["refundType"], ro["refundStatus"], id)
		}
		seen["refundId:"+kind(ro["refundId"])] = true
		seen["refundStatus:"+kind(ro["refundStatus"])] = true
		seen["payOrderId:"+kind(ro["payOrderId"])] = true
		seen["receiverAddress:"+kind(at(t, d, "refundOrderAggregate", "logistics", "receiverAddress"))] = true
		seen["properties:"+kind(at(t, d, "refundOrderAggregate", "purchaseOrderLine", "properties"))] = true
		seen["purchaseOrderId:"+kind(at(t, d, "refundOrderAggregate", "purchaseOrderLine", "purchaseOrderId"))] = true
	}
	for _, want := range []string{
		"refundId:string", "refundId:number", "refundStatus:string", "refundStatus:number",
		"payOrderId:string", "payOrderId:number", "receiverAddress:address", "receiverAddress:string",
		"receiverAddress:null", "properties:propObject", "properties:freeMap",
		"purchaseOrderId:string", "purchaseOrderId:number",
	} {
		if !seen[want] {
			t.Errorf("no generated refund has %s", want)
		}
	}

	wantCode(t, query(t, srv.URL, sandbox.GeneratedRefundID(n)), sandbox.CodeNotFound)
}

func TestQueryErrors(t *testing.T) {
	srv := start(t, sandbox.Options{})
	r := query(t, srv.URL, "999")
	wantCode(t, r, sandbox.CodeNotFound)
	if r.env.Msg != "refund 999 not found" {
		t.Errorf("msg %q", r.env.Msg)
	}
	if len(r.env.RequestID) == 0 || r.env.RequestID[0] != '"' {
		t.Errorf("error requestId = %s, want a string to report", r.env.RequestID)
	}

	r = send(t, signed(t, http.MethodGet, srv.URL+sandbox.PathQuery, nil))
	wantCode(t, r, sandbox.CodeBadRequest)
	if !strings.Contains(r.env.Msg, "refundId") {
		t.Errorf("missing refundId refused with %q, want it named", r.env.Msg)
	}

	r = send(t, signed(t, http.MethodGet, srv.URL+"/open/order/refund/nope", nil))
	if r.status != http.StatusNotFound || r.env.Code != sandbox.CodeNotFound {
		t.Errorf("unknown path: HTTP %d code %d, want 404 envelope", r.status, r.env.Code)
	}

	r = send(t, signed(t, http.MethodPost, queryURL(srv.URL, sandbox.SeedRefundOnly), nil))
	if r.status != http.StatusMethodNotAllowed || r.env.Code != sandbox.CodeMethodNotAllowed || r.header.Get("Allow") != http.MethodGet {
		t.Errorf("POST on query: HTTP %d code %d Allow %q, want 405 envelope and Allow GET", r.status, r.env.Code, r.header.Get("Allow"))
	}

	st := srv.Stats()
	if st.BusinessErrors != 4 || st.Requests[sandbox.PathQuery] != 3 || st.Requests[sandbox.PathUnknown] != 1 {
		t.Errorf("Stats = %+v, want 4 business errors, 3 query and 1 unknown requests", st)
	}
}

func TestSubmitLogisticsMovesRefundToReturned(t *testing.T) {
	srv := start(t, sandbox.Options{})
	r := submit(t, srv.URL, submission(sandbox.SeedAwaitingReturn, "SF00111test"))
	wantCode(t, r, sandbox.CodeSuccess)
	if r.env.Msg != "SUCCESS" || r.env.RequestID[0] != '"' || string(r.env.DevelopID) != `"`+sandbox.DevelopID+`"` {
		t.Errorf("envelope msg %q requestId %s developId %s, want SUCCESS and string ids as on the submission page",
			r.env.Msg, r.env.RequestID, r.env.DevelopID)
	}
	d := tree(t, r.env.Data)
	if got := at(t, d, "logisticsCompanyList").([]any)[0].(map[string]any)["logisticCompanyCode"]; got != "SF" {
		t.Errorf("logisticsCompanyList[0].logisticCompanyCode = %#v", got)
	}
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"currency"}, "CNY"},
		{[]string{"distributorId"}, "345645363464"},
		{[]string{"refundOrderAggregate", "refundOrder", "refundStatus"}, "30"}, // stays a string
		{[]string{"refundOrderAggregate", "refundOrder", "goodsStatus"}, json.Number("5")},
		{[]string{"refundOrderAggregate", "logistics", "logisticsNo"}, "SF00111test"},
		{[]string{"refundOrderAggregate", "logistics", "buyerPhone"}, "15068763422"},
		{[]string{"refundOrderAggregate", "logistics", "returnGoodsDesc"}, "test"},
		{[]string{"refundOrderAggregate", "logistics", "logisticsCompany", "logisticCompanyCode"}, "SF"},
		{[]string{"refundOrderAggregate", "logistics", "logisticsCompany", "logisticsCompanyName"}, "顺丰速运"},
	} {
		if got := at(t, d, c.path...); got != c.want {
			t.Errorf("%s = %#v, want %#v", strings.Join(c.path, "."), got, c.want)
		}
	}

	want := sandbox.RefundState{RefundID: sandbox.SeedAwaitingReturn, RefundType: 2, RefundStatus: 30, GoodsStatus: 5,
		LogisticsNo: "SF00111test", LogisticsCompanyCode: "SF", LogisticsSubmissions: 1}
	if st, _ := srv.Refund(sandbox.SeedAwaitingReturn); st != want {
		t.Errorf("Refund = %+v, want %+v", st, want)
	}
	q := tree(t, query(t, srv.URL, sandbox.SeedAwaitingReturn).env.Data)
	if got := at(t, q, "refundOrderAggregate", "refundOrder", "refundStatus"); got != "30" {
		t.Errorf("query after submission shows refundStatus %#v, want \"30\"", got)
	}
	if st := srv.Stats(); st.AcceptedSubmissions != 1 || st.BusinessErrors != 0 {
		t.Errorf("Stats = %+v, want 1 accepted submission and no errors", st)
	}
}

func TestSubmitLogisticsOnEveryGeneratedRefund(t *testing.T) {
	const n = 8
	srv := start(t, sandbox.Options{GeneratedRefunds: n})
	for i := range n {
		id := sandbox.GeneratedRefundID(i)
		var refundID any = id
		if i%2 == 1 {
			refundID = json.Number(id) // refundId may arrive as a number
		}
		body := submission(refundID, fmt.Sprintf("YT%010d", i))
		if i%3 == 0 {
			delete(body, "returnGoodsDesc") // optional
		} else if i%3 == 1 {
			body["returnGoodsDesc"] = nil
		}
		r := submit(t, srv.URL, body)
		wantCode(t, r, sandbox.CodeSuccess)
		status := at(t, tree(t, r.env.Data), "refundOrderAggregate", "refundOrder", "refundStatus")
		if want := map[bool]any{true: "30", false: json.Number("30")}[i%4 < 2]; status != want {
			t.Errorf("refund %d: refundStatus %#v after submission, want %#v (same JSON kind as before)", i, status, want)
		}
		if st, _ := srv.Refund(id); st.RefundStatus != 30 || st.GoodsStatus != 5 || st.LogisticsSubmissions != 1 {
			t.Errorf("refund %d: state %+v, want status 30, goods 5, 1 submission", i, st)
		}
	}
}

func TestSubmitLogisticsRefusals(t *testing.T) {
	tests := []struct {
		name     string
		body     any
		wantCode int
		wantMsg  string
	}{
		{"same logisticsNo again", submission(sandbox.SeedReturned, "43523253245352543"), sandbox.CodeStateConflict,
			"logistics 43523253245352543 already submitted for refund 110000300003"},
		{"wrong status", submission(sandbox.SeedReturned, "SF999"), sandbox.CodeStateConflict,
			"refund 110000300003 is in refundStatus 30 (returned, waiting for seller to confirm receipt)"},
		{"refund only", submission(sandbox.SeedRefundOnly, "SF999"), sandbox.CodeStateConflict,
			"refund 110002687818 is refund only (refundType 1)"},
		{"unknown refund", submission("123", "SF999"), sandbox.CodeNotFound, "refund 123 not found"},
		{"not JSON", "refundId=1", sandbox.CodeBadRequest, "request body must be a JSON object"},
		{"refundId of wrong type", submission(true, "SF999"), sandbox.CodeBadRequest, "field refundId must be a string or an integer"},
		{"buyerPhone as number", func() any {
			b := submission(sandbox.SeedAwaitingReturn, "SF999")
			b["buyerPhone"] = 15068763422
			return b
		}(), sandbox.CodeBadRequest, "field buyerPhone must be a string"},
	}
	for _, field := range []string{"refundId", "logisticsCompanyCode", "logisticsNo", "buyerPhone"} {
		missing := submission(sandbox.SeedAwaitingReturn, "SF999")
		delete(missing, field)
		empty := submission(sandbox.SeedAwaitingReturn, "SF999")
		empty[field] = " "
		null := submission(sandbox.SeedAwaitingReturn, "SF999")
		null[field] = nil
		tests = append(tests,
			struct {
				name     string
				body     any
				wantCode int
				wantMsg  string
			}{"missing " + field, missing, sandbox.CodeBadRequest, "missing required field " + field},
			struct {
				name     string
				body     any
				wantCode int
				wantMsg  string
			}{"empty " + field, empty, sandbox.CodeBadRequest, "missing required field " + field},
			struct {
				name     string
				body     any
				wantCode int
				wantMsg  string
			}{"null " + field, null, sandbox.CodeBadRequest, "missing required field " + field},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := start(t, sandbox.Options{})
			before, _ := srv.Refund(sandbox.SeedAwaitingReturn)
			r := submit(t, srv.URL, tt.body)
			wantCode(t, r, tt.wantCode)
			if !strings.Contains(r.env.Msg, tt.wantMsg) {
				t.Errorf("msg %q does not say %q", r.env.Msg, tt.wantMsg)
			}
			st := srv.Stats()
			if st.AcceptedSubmissions != 0 || st.BusinessErrors != 1 {
				t.Errorf("Stats = %+v, want no accepted submission and 1 business error", st)
			}
			wantDup := 0
			if strings.Contains(tt.wantMsg, "already submitted") {
				wantDup = 1
			}
			if st.DuplicateSubmissions != wantDup {
				t.Errorf("DuplicateSubmissions = %d, want %d", st.DuplicateSubmissions, wantDup)
			}
			if after, _ := srv.Refund(sandbox.SeedAwaitingReturn); after != before {
				t.Errorf("refused submission changed the refund: %+v → %+v", before, after)
			}
		})
	}
}

func TestSubmitLogisticsTwiceIsRefusedAsDuplicate(t *testing.T) {
	srv := start(t, sandbox.Options{})
	wantCode(t, submit(t, srv.URL, submission(sandbox.SeedAwaitingReturn, "SF1")), sandbox.CodeSuccess)
	r := submit(t, srv.URL, submission(json.Number(sandbox.SeedAwaitingReturn), "SF1"))
	wantCode(t, r, sandbox.CodeStateConflict)
	if r.env.Msg != "logistics SF1 already submitted for refund 110000303674" {
		t.Errorf("msg %q", r.env.Msg)
	}
	st := srv.Stats()
	if st.AcceptedSubmissions != 1 || st.DuplicateSubmissions != 1 {
		t.Errorf("accepted %d duplicate %d, want 1 and 1", st.AcceptedSubmissions, st.DuplicateSubmissions)
	}
	if rs, _ := srv.Refund(sandbox.SeedAwaitingReturn); rs.LogisticsSubmissions != 1 {
		t.Errorf("LogisticsSubmissions = %d, want 1", rs.LogisticsSubmissions)
	}
}

func TestConcurrentSubmissionsAcceptExactlyOne(t *testing.T) {
	for _, sameNo := range []bool{true, false} {
		t.Run(fmt.Sprintf("same logisticsNo %v", sameNo), func(t *testing.T) {
			srv := start(t, sandbox.Options{GeneratedRefunds: 1})
			id := sandbox.GeneratedRefundID(0)
			codes := make([]int, 50)
			var wg sync.WaitGroup
			for g := range codes {
				wg.Go(func() {
					no := "SF-CONCURRENT"
					if !sameNo {
						no = fmt.Sprintf("SF-%02d", g)
					}
					codes[g] = submit(t, srv.URL, submission(id, no)).env.Code
				})
			}
			wg.Wait()
			count := map[int]int{}
			for _, c := range codes {
				count[c]++
			}
			if count[sandbox.CodeSuccess] != 1 || count[sandbox.CodeStateConflict] != 49 {
				t.Errorf("codes %v, want exactly one 200 and 49 409", count)
			}
			st := srv.Stats()
			wantDup := map[bool]int{true: 49, false: 0}[sameNo]
			if st.AcceptedSubmissions != 1 || st.DuplicateSubmissions != wantDup || st.Requests[sandbox.PathSubmitLogistics] != 50 {
				t.Errorf("Stats = %+v, want 1 accepted, %d duplicates, 50 requests", st, wantDup)
			}
			if rs, _ := srv.Refund(id); rs.LogisticsSubmissions != 1 {
				t.Errorf("LogisticsSubmissions = %d, want 1", rs.LogisticsSubmissions)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	srv := start(t, sandbox.Options{GeneratedRefunds: 3})
	id := sandbox.GeneratedRefundID(2) // refundStatus sent as the number 20
	r := send(t, signed(t, http.MethodGet, srv.URL+"/open/order/refund/cancel/"+id, nil))
	wantCode(t, r, sandbox.CodeSuccess)
	d := tree(t, r.env.Data)
	if d["cancelSuccess"] != true || at(t, d, "refundOrderAggregate", "refundOrder", "refundStatus") != json.Number("-20") {
		t.Errorf("cancel data = %s, want cancelSuccess true and refundStatus -20", r.env.Data)
	}
	if st, _ := srv.Refund(id); st.RefundStatus != sandbox.StatusClosed {
		t.Errorf("status after cancel = %d, want -20", st.RefundStatus)
	}

	r = send(t, signed(t, http.MethodGet, srv.URL+"/open/order/refund/cancel/"+id, nil))
	wantCode(t, r, sandbox.CodeStateConflict)
	if !strings.Contains(r.env.Msg, "refundStatus -20") {
		t.Errorf("second cancel msg %q, want it to name the status", r.env.Msg)
	}
	wantCode(t, submit(t, srv.URL, submission(id, "SF1")), sandbox.CodeStateConflict)
	wantCode(t, send(t, signed(t, http.MethodGet, srv.URL+"/open/order/refund/cancel/42", nil)), sandbox.CodeNotFound)
	if st := srv.Stats(); st.AcceptedCancellations != 1 || st.Requests[sandbox.PathCancel] != 3 {
		t.Errorf("Stats = %+v, want 1 cancellation and 3 cancel requests", st)
	}
}
