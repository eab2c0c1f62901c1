package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// refundStatus values (PandaPon mirrors Taobao's enumeration).
const (
	StatusNone              = 0   // none applied
	StatusWaitSellerAgree   = 10  // applied, waiting for seller
	StatusWaitBuyerReturn   = 20  // seller agreed, waiting for the buyer's return
	StatusWaitSellerConfirm = 30  // returned, waiting for seller to confirm receipt
	StatusSucceeded         = 100 // refund succeeded (final)
	StatusSellerRefused     = -10 // seller refused
	StatusClosed            = -20 // refund closed (final)
)

// refundType values.
const (
	RefundTypeRefundOnly      = 1 // refund only
	RefundTypeReturnAndRefund = 2 // return goods and refund
)

// goodsStatus values the state machine uses (1 not shipped, 3 not
// received, 4 received and 6 seller confirmed receipt also exist).
const (
	GoodsStatusShipped  = 2 // shipped
	GoodsStatusSentBack = 5 // sent back
)

var statusText = map[int]string{
	StatusNone:              "none applied",
	StatusWaitSellerAgree:   "applied, waiting for seller",
	StatusWaitBuyerReturn:   "seller agreed, waiting for the buyer's return",
	StatusWaitSellerConfirm: "returned, waiting for seller to confirm receipt",
	StatusSucceeded:         "refund succeeded, final",
	StatusSellerRefused:     "seller refused",
	StatusClosed:            "refund closed, final",
}

func describeStatus(n int) string {
	if t, ok := statusText[n]; ok {
		return fmt.Sprintf("%d (%s)", n, t)
	}
	return fmt.Sprintf("%d (unknown)", n)
}

// logisticsCompanies names the logistics company codes the sandbox knows.
// Other codes are accepted and recorded with a null name.
var logisticsCompanies = map[string]string{
	"SF":     "顺丰速运",
	"YTO":    "圆通速递",
	"ZTO":    "中通快递",
	"STO":    "申通快递",
	"YUNDA":  "韵达快递",
	"EMS":    "中国邮政EMS",
	"JD":     "京东物流",
	"DBL":    "德邦快递",
	"123456": "test", // the submission page's example
}

// RefundState is a snapshot of the fields of a simulated refund that the
// state machine reads and writes.
type RefundState struct {
	RefundID             string
	RefundType           int // 1 refund only, 2 return goods and refund
	RefundStatus         int // see the Status constants
	GoodsStatus          int
	LogisticsNo          string // "" until recorded
	LogisticsCompanyCode string // from either spelling, logisticsCompanyCode or logisticCompanyCode
	// LogisticsSubmissions counts the submissions this sandbox accepted for
	// the refund (a seed's pre-recorded logistics is not counted); a
	// correct client keeps it at most 1.
	LogisticsSubmissions int
}

// refund is one simulated refund: the data object its query returns, kept
// as an ordered JSON tree so that its type mess survives every change.
type refund struct {
	data        *object // distributorId, currency, refundOrderAggregate, extras
	encoded     []byte  // appendJSON(data); replaced, never modified, on change
	submissions int
}

func newRefund(text string) *refund {
	rf := &refund{data: mustParseObject(text)}
	rf.encode()
	return rf
}

func (rf *refund) encode() { rf.encoded = appendJSON(nil, rf.data) }

func (rf *refund) aggregate() *object { return rf.data.obj("refundOrderAggregate", true) }
func (rf *refund) order() *object     { return rf.aggregate().obj("refundOrder", true) }
func (rf *refund) logistics() *object { return rf.aggregate().obj("logistics", true) }

// companyCodeKey is the spelling of the company code key this refund uses.
func companyCodeKey(company *object) string {
	if company != nil && company.has("logisticCompanyCode") && !company.has("logisticsCompanyCode") {
		return "logisticCompanyCode"
	}
	return "logisticsCompanyCode"
}

func (rf *refund) state(id string) RefundState {
	o, l := rf.order(), rf.logistics()
	st := RefundState{
		RefundID:             id,
		RefundType:           o.intField("refundType"),
		RefundStatus:         o.intField("refundStatus"),
		GoodsStatus:          o.intField("goodsStatus"),
		LogisticsNo:          l.stringField("logisticsNo"),
		LogisticsSubmissions: rf.submissions,
	}
	if c := l.obj("logisticsCompany", false); c != nil {
		st.LogisticsCompanyCode = c.stringField(companyCodeKey(c))
	}
	return st
}

// Refund returns a snapshot of the refund's state; false when there is no
// such refund.
func (s *Sandbox) Refund(refundID string) (RefundState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf := s.refundLocked(refundID)
	if rf == nil {
		return RefundState{}, false
	}
	return rf.state(refundID), true
}

// refundLocked returns the refund, building a generated one on first use;
// nil when it does not exist. s.mu must be held for writing.
func (s *Sandbox) refundLocked(id string) *refund {
	if rf := s.refunds[id]; rf != nil {
		return rf
	}
	i, ok := generatedIndex(id, s.generated)
	if !ok {
		return nil
	}
	rf := newRefund(generatedData(i))
	s.refunds[id] = rf
	return rf
}

// queryData returns the encoded data of the refund's query answer.
func (s *Sandbox) queryData(id string) ([]byte, bool) {
	s.mu.RLock()
	rf := s.refunds[id]
	var b []byte
	if rf != nil {
		b = rf.encoded
	}
	s.mu.RUnlock()
	if rf != nil {
		return b, true
	}
	if _, ok := generatedIndex(id, s.generated); !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refundLocked(id).encoded, true
}

// query answers GET /open/order/refund/query?refundId=ID.
func (s *Sandbox) query(x *exchange) {
	id := strings.TrimSpace(x.refundID)
	if id == "" {
		s.reply(x, http.StatusOK, CodeBadRequest, "missing query parameter refundId", nil)
		return
	}
	data, ok := s.queryData(id)
	if !ok {
		s.reply(x, http.StatusOK, CodeNotFound, "refund "+id+" not found", nil)
		return
	}
	s.reply(x, http.StatusOK, CodeSuccess, "成功", data)
}

// submission is a parsed logistics submission body.
type submission struct {
	refundID, companyCode, logisticsNo, buyerPhone string
	returnGoodsDesc                                any // string or nil
}

// parseSubmission validates the body; it returns a message naming the
// first bad field, or "".
func parseSubmission(body []byte) (submission, string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return submission{}, "request body must be a JSON object with refundId, logisticsCompanyCode, logisticsNo, buyerPhone and returnGoodsDesc"
	}
	var sub submission
	id, ok := idText(fields["refundId"])
	if !ok {
		return sub, "field refundId must be a string or an integer"
	}
	if id == "" {
		return sub, "missing required field refundId"
	}
	sub.refundID = id
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"logisticsCompanyCode", &sub.companyCode},
		{"logisticsNo", &sub.logisticsNo},
		{"buyerPhone", &sub.buyerPhone},
	} {
		raw, present := fields[f.name]
		if !present || string(raw) == "null" {
			return sub, "missing required field " + f.name
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return sub, "field " + f.name + " must be a string"
		}
		if strings.TrimSpace(v) == "" {
			return sub, "missing required field " + f.name + " (empty)"
		}
		*f.dst = v
	}
	if raw, ok := fields["returnGoodsDesc"]; ok && string(raw) != "null" {
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return sub, "field returnGoodsDesc must be a string or null"
		}
		sub.returnGoodsDesc = v
	}
	return sub, ""
}

// submitLogistics answers POST /open/order/refund/render/submit/logistics.
func (s *Sandbox) submitLogistics(x *exchange) {
	if x.bodyErr != "" {
		s.reply(x, http.StatusOK, CodeBadRequest, x.bodyErr, nil)
		return
	}
	sub, msg := parseSubmission(x.body)
	if msg != "" {
		s.reply(x, http.StatusOK, CodeBadRequest, msg, nil)
		return
	}
	code, msg, data := s.applySubmission(sub)
	if code == CodeSuccess {
		msg = "SUCCESS"
	}
	s.reply(x, http.StatusOK, code, msg, data)
}

func (s *Sandbox) applySubmission(sub submission) (code int, msg string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf := s.refundLocked(sub.refundID)
	if rf == nil {
		return CodeNotFound, "refund " + sub.refundID + " not found", nil
	}
	st := rf.state(sub.refundID)
	if st.RefundType != RefundTypeReturnAndRefund {
		what := "is not a return"
		if st.RefundType == RefundTypeRefundOnly {
			what = "is refund only"
		}
		return CodeStateConflict, fmt.Sprintf("refund %s %s (refundType %d): there are no goods to return, logistics cannot be submitted",
			sub.refundID, what, st.RefundType), nil
	}
	if st.LogisticsNo != "" && st.LogisticsNo == sub.logisticsNo {
		s.count(func(s *Stats) { s.DuplicateSubmissions++ })
		return CodeStateConflict, fmt.Sprintf("logistics %s already submitted for refund %s", sub.logisticsNo, sub.refundID), nil
	}
	if st.RefundStatus != StatusWaitBuyerReturn {
		return CodeStateConflict, fmt.Sprintf("refund %s is in refundStatus %s: return logistics can only be submitted in status %s",
			sub.refundID, describeStatus(st.RefundStatus), describeStatus(StatusWaitBuyerReturn)), nil
	}

	var name any
	if n, ok := logisticsCompanies[sub.companyCode]; ok {
		name = n
	}
	l := rf.logistics()
	l.set("logisticsNo", sub.logisticsNo)
	l.set("buyerPhone", sub.buyerPhone)
	l.set("returnGoodsDesc", sub.returnGoodsDesc)
	company := l.obj("logisticsCompany", true)
	company.set(companyCodeKey(company), sub.companyCode)
	company.set("logisticsCompanyName", name)
	o := rf.order()
	o.setIntKeepKind("refundStatus", StatusWaitSellerConfirm)
	o.setIntKeepKind("goodsStatus", GoodsStatusSentBack)
	rf.submissions++
	rf.encode()
	s.count(func(s *Stats) { s.AcceptedSubmissions++ })

	list := newObject()
	list.set("logisticsCompanyName", name)
	list.set("logisticCompanyCode", sub.companyCode) // the submission page's spelling
	d := newObject()
	d.set("currency", valueOrNull(rf.data, "currency"))
	d.set("distributorId", valueOrNull(rf.data, "distributorId"))
	d.set("logisticsCompanyList", []any{list})
	d.set("refundOrderAggregate", rf.aggregate())
	return CodeSuccess, "", appendJSON(nil, d)
}

func valueOrNull(o *object, key string) any {
	v, _ := o.get(key)
	return v
}

// cancel answers GET /open/order/refund/cancel/{refundId}: a refund in
// status 10 or 20 is closed (-20).
func (s *Sandbox) cancel(x *exchange) {
	code, msg, data := s.applyCancel(x.refundID)
	if code == CodeSuccess {
		msg = "SUCCESS"
	}
	s.reply(x, http.StatusOK, code, msg, data)
}

func (s *Sandbox) applyCancel(id string) (code int, msg string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf := s.refundLocked(id)
	if rf == nil {
		return CodeNotFound, "refund " + id + " not found", nil
	}
	st := rf.state(id)
	if st.RefundStatus != StatusWaitSellerAgree && st.RefundStatus != StatusWaitBuyerReturn {
		return CodeStateConflict, fmt.Sprintf("refund %s is in refundStatus %s: only refunds in status %d or %d can be cancelled",
			id, describeStatus(st.RefundStatus), StatusWaitSellerAgree, StatusWaitBuyerReturn), nil
	}
	rf.order().setIntKeepKind("refundStatus", StatusClosed)
	rf.encode()
	s.count(func(s *Stats) { s.AcceptedCancellations++ })
	d := newObject()
	d.set("cancelSuccess", true)
	d.set("currency", valueOrNull(rf.data, "currency"))
	d.set("distributorId", valueOrNull(rf.data, "distributorId"))
	d.set("refundOrderAggregate", rf.aggregate())
	return CodeSuccess, "", appendJSON(nil, d)
}
