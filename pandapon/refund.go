package pandapon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// After-sales (reverse order) endpoints. Adding another one is a variable
// here and a method of a few lines below.
var (
	// EndpointQueryRefund is "reverse single query".
	EndpointQueryRefund = Endpoint{Method: "GET", Path: "/open/order/refund/query", RetrySafe: true}

	// EndpointSubmitReturnLogistics is "return logistics submission".
	//
	// It is not RetrySafe: after an ambiguous failure (a timeout or a reset
	// connection once the request was sent) PandaPon may have recorded the
	// parcel, and pandabridge promises never to submit the same logistics
	// twice. The client repeats it only when the request provably was not
	// processed (HTTP 429, connection refused); any other failure goes back
	// to the caller, whose next attempt queries the refund first and finds
	// the parcel if it was recorded (see handlers). PandaPon would refuse a
	// repeat anyway (the refund has left status 20), but it is never sent.
	EndpointSubmitReturnLogistics = Endpoint{Method: "POST", Path: "/open/order/refund/render/submit/logistics", RetrySafe: false}

	// EndpointCancelRefund is "reverse order cancellation"; the refundId is
	// appended to the path. Cancelling a closed refund is refused, so a
	// duplicate does no harm.
	EndpointCancelRefund = Endpoint{Method: "GET", Path: "/open/order/refund/cancel/", RetrySafe: true}

	// EndpointSubmitRefundMessage is "submit a message in reverse". Not
	// RetrySafe: a duplicate would post the message twice.
	EndpointSubmitRefundMessage = Endpoint{Method: "POST", Path: "/open/order/refund/submit/message", RetrySafe: false}

	// EndpointQueryRefundList is "reverse single list query" (read-only).
	EndpointQueryRefundList = Endpoint{Method: "POST", Path: "/open/order/refund/queryList", RetrySafe: true}
)

// QueryRefund returns the current state of a refund. Its Data is the query's
// data object: distributorId, currency, refundOrderAggregate and whatever
// else PandaPon sent.
func (c *Client) QueryRefund(ctx context.Context, refundID string) (*Response, error) {
	if refundID == "" {
		return nil, errors.New("pandapon: QueryRefund: empty refundId")
	}
	return c.callObject(ctx, EndpointQueryRefund, "", url.Values{"refundId": {refundID}}, nil)
}

// ReturnLogistics is the body of a return logistics submission. All fields
// are required by PandaPon; ReturnGoodsDesc may be nil (sent as null).
type ReturnLogistics struct {
	RefundID             string  `json:"refundId"`
	LogisticsCompanyCode string  `json:"logisticsCompanyCode"`
	LogisticsNo          string  `json:"logisticsNo"`
	BuyerPhone           string  `json:"buyerPhone"`
	ReturnGoodsDesc      *string `json:"returnGoodsDesc"`
}

// SubmitReturnLogistics records the return parcel of a return-and-refund.
// Its Data holds currency, distributorId, logisticsCompanyList and the
// updated refundOrderAggregate. See EndpointSubmitReturnLogistics for when
// it is retried.
func (c *Client) SubmitReturnLogistics(ctx context.Context, r ReturnLogistics) (*Response, error) {
	switch {
	case r.RefundID == "":
		return nil, errors.New("pandapon: SubmitReturnLogistics: empty refundId")
	case r.LogisticsCompanyCode == "":
		return nil, errors.New("pandapon: SubmitReturnLogistics: empty logisticsCompanyCode")
	case r.LogisticsNo == "":
		return nil, errors.New("pandapon: SubmitReturnLogistics: empty logisticsNo")
	case r.BuyerPhone == "":
		return nil, errors.New("pandapon: SubmitReturnLogistics: empty buyerPhone")
	}
	return c.callObject(ctx, EndpointSubmitReturnLogistics, "", nil, r)
}

// CancelRefund cancels a refund the buyer no longer wants. Its Data holds
// cancelSuccess, currency, distributorId and refundOrderAggregate.
func (c *Client) CancelRefund(ctx context.Context, refundID string) (*Response, error) {
	if refundID == "" {
		return nil, errors.New("pandapon: CancelRefund: empty refundId")
	}
	return c.callObject(ctx, EndpointCancelRefund, refundID, nil, nil)
}

// RefundMessage is the body of a message submission.
type RefundMessage struct {
	RefundID      string   `json:"refundId"`
	RefundMessage string   `json:"refundMessage"`
	RefundImages  []string `json:"refundImages"`
}

// SubmitRefundMessage adds a message to a refund's conversation. It is not
// retried after an ambiguous failure (see EndpointSubmitRefundMessage).
func (c *Client) SubmitRefundMessage(ctx context.Context, m RefundMessage) (*Response, error) {
	return c.Call(ctx, EndpointSubmitRefundMessage, "", nil, m)
}

// RefundListQuery is the body of a list query; zero fields are omitted.
type RefundListQuery struct {
	RefundID        string `json:"refundId,omitempty"`
	PurchaseOrderID string `json:"purchaseOrderId,omitempty"`
	SalesOrderID    string `json:"salesOrderId,omitempty"`
	RefundStatus    *int   `json:"refundStatus,omitempty"`
	RefundStartTime int64  `json:"refundStartTime,omitempty"`
	RefundEndTime   int64  `json:"refundEndTime,omitempty"`
	PageNo          int    `json:"pageNo,omitempty"`
	PageSize        int    `json:"pageSize"`
}

// QueryRefundList lists refunds matching q, one page at a time.
func (c *Client) QueryRefundList(ctx context.Context, q RefundListQuery) (*Response, error) {
	return c.Call(ctx, EndpointQueryRefundList, "", nil, q)
}

// callObject is Call for operations whose data must be a JSON object.
func (c *Client) callObject(ctx context.Context, ep Endpoint, suffix string, q url.Values, body any) (*Response, error) {
	r, err := c.Call(ctx, ep, suffix, q, body)
	if err != nil {
		return nil, err
	}
	if len(r.Data) == 0 || r.Data[0] != '{' {
		return nil, &ResponseError{Endpoint: ep.String(), HTTPStatus: 200, BodyPrefix: bodyPrefix(r.Data),
			Err: errors.New("success envelope whose data is not an object")}
	}
	return r, nil
}

// Refund statuses (refundStatus), from the upstream platform's enumeration.
const (
	StatusNone            = 0   // no refund applied
	StatusWaitSeller      = 10  // applied, waiting for the seller
	StatusWaitBuyerReturn = 20  // seller agreed, waiting for the buyer's return
	StatusWaitSellerGoods = 30  // returned, waiting for the seller to confirm receipt
	StatusSuccess         = 100 // refund succeeded (final)
	StatusSellerRefused   = -10 // seller refused
	StatusClosed          = -20 // refund closed (final)
)

// StatusText describes a refundStatus in English, "unknown" for codes
// outside the enumeration.
func StatusText(status int64) string {
	switch status {
	case StatusNone:
		return "no refund applied"
	case StatusWaitSeller:
		return "waiting for seller"
	case StatusWaitBuyerReturn:
		return "waiting for the buyer's return"
	case StatusWaitSellerGoods:
		return "returned, waiting for seller to confirm receipt"
	case StatusSuccess:
		return "refund succeeded"
	case StatusSellerRefused:
		return "seller refused"
	case StatusClosed:
		return "refund closed"
	}
	return "unknown"
}

// Refund types (refundType).
const (
	TypeRefundOnly      = 1
	TypeReturnAndRefund = 2
)

// RefundView is a typed view of the few fields of a refund aggregate that
// the product reads. Each field accepts a JSON string or number; absent and
// null fields are zero (Valid false for the FlexInt ones).
type RefundView struct {
	RefundID             string
	RefundStatus         FlexInt
	RefundType           FlexInt
	GoodsStatus          FlexInt
	LogisticsNo          string
	LogisticsCompanyCode string
}

// aggregateView mirrors the path to each field RefundView needs; every
// other field is skipped by the decoder.
type aggregateView struct {
	RefundOrderAggregate struct {
		RefundOrder struct {
			RefundID     FlexString `json:"refundId"`
			RefundStatus FlexInt    `json:"refundStatus"`
			RefundType   FlexInt    `json:"refundType"`
			GoodsStatus  FlexInt    `json:"goodsStatus"`
		} `json:"refundOrder"`
		Logistics *struct {
			LogisticsNo      FlexString `json:"logisticsNo"`
			LogisticsCompany *struct {
				// Both spellings occur in PandaPon's own examples.
				Code    FlexString `json:"logisticsCompanyCode"`
				CodeNoS FlexString `json:"logisticCompanyCode"`
			} `json:"logisticsCompany"`
		} `json:"logistics"`
	} `json:"refundOrderAggregate"`
}

// Refund decodes the typed view from a query, submission or cancellation
// response's data.
func (r *Response) Refund() (RefundView, error) { return ParseRefundView(r.Data) }

// ParseRefundView decodes the typed view from a data object holding a
// refundOrderAggregate. An error names the field that could not be read.
func ParseRefundView(data []byte) (RefundView, error) {
	var a aggregateView
	if err := json.Unmarshal(data, &a); err != nil {
		return RefundView{}, fmt.Errorf("pandapon: reading refund aggregate: %w", err)
	}
	ro := a.RefundOrderAggregate.RefundOrder
	v := RefundView{
		RefundID:     ro.RefundID.Value,
		RefundStatus: ro.RefundStatus,
		RefundType:   ro.RefundType,
		GoodsStatus:  ro.GoodsStatus,
	}
	if l := a.RefundOrderAggregate.Logistics; l != nil {
		v.LogisticsNo = l.LogisticsNo.Value
		if lc := l.LogisticsCompany; lc != nil {
			v.LogisticsCompanyCode = lc.Code.Value
			if v.LogisticsCompanyCode == "" {
				v.LogisticsCompanyCode = lc.CodeNoS.Value
			}
		}
	}
	return v, nil
}

// RecordedLogisticsNo returns the return parcel's logistics number recorded
// in a data object holding a refundOrderAggregate
// (refundOrderAggregate.logistics.logisticsNo), "" when none is recorded
// (the member or its logistics object is absent or null). Unlike
// ParseRefundView it reads nothing else, so an unexpected shape elsewhere
// in the aggregate cannot hide a recorded parcel; a logistics object or
// number of an unexpected shape is an error naming it, since whether a
// parcel was recorded decides whether it is submitted.
func RecordedLogisticsNo(data []byte) (string, error) {
	var a struct {
		RefundOrderAggregate *struct {
			Logistics json.RawMessage `json:"logistics"`
		} `json:"refundOrderAggregate"`
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return "", fmt.Errorf("pandapon: reading refundOrderAggregate.logistics: %w", err)
	}
	if a.RefundOrderAggregate == nil {
		return "", nil
	}
	raw := bytes.TrimSpace(a.RefundOrderAggregate.Logistics)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] != '{' {
		return "", fmt.Errorf("pandapon: refundOrderAggregate.logistics is %.60s, not an object", raw)
	}
	var l struct {
		LogisticsNo FlexString `json:"logisticsNo"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return "", fmt.Errorf("pandapon: reading refundOrderAggregate.logistics.logisticsNo: %w", err)
	}
	return l.LogisticsNo.Value, nil
}
