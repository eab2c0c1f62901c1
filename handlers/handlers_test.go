package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
)

// scriptedPandaPon answers queries from a list (the last repeats) and
// submissions with one fixed answer, counting calls.
type scriptedPandaPon struct {
	queries   []string // data objects, or "" for a transient error
	submitErr error
	submitted int
	queried   int
}

func aggregate(status int, logisticsNo string) string {
	b, _ := json.Marshal(map[string]any{"refundOrderAggregate": map[string]any{
		"refundOrder": map[string]any{"refundId": "1", "refundStatus": status},
		"logistics":   map[string]any{"logisticsNo": logisticsNo},
	}})
	return string(b)
}

func (s *scriptedPandaPon) QueryRefund(context.Context, string) (*pandapon.Response, error) {
	d := s.queries[min(s.queried, len(s.queries)-1)]
	s.queried++
	if d == "" {
		return nil, &pandapon.TransientError{Endpoint: "GET /open/order/refund/query", HTTPStatus: 503}
	}
	return &pandapon.Response{Data: json.RawMessage(d), ReceivedAt: time.Now()}, nil
}

func (s *scriptedPandaPon) SubmitReturnLogistics(context.Context, pandapon.ReturnLogistics) (*pandapon.Response, error) {
	s.submitted++
	if s.submitErr != nil {
		return nil, s.submitErr
	}
	return &pandapon.Response{Data: json.RawMessage(aggregate(30, "SF1")), ReceivedAt: time.Now()}, nil
}

func returnShipped(t *testing.T) events.Input {
	t.Helper()
	in, err := events.ParseInput(testkit.ReturnShipped("1", "SF", "SF1"))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

var refused = &pandapon.APIError{Endpoint: "POST /open/order/refund/render/submit/logistics", Code: 409, Msg: "refund 1 is in status 30"}

func TestReturnShippedOutcomes(t *testing.T) {
	tests := []struct {
		name          string
		pp            *scriptedPandaPon
		wantType      string
		wantTransient bool
		wantSubmitted int
	}{
		{"submits when nothing is recorded", &scriptedPandaPon{queries: []string{aggregate(20, "")}}, events.TypeRefundUpdated, false, 1},
		{"already recorded: no submission", &scriptedPandaPon{queries: []string{aggregate(30, "SF1")}}, events.TypeRefundUpdated, false, 0},
		{"refused but recorded meanwhile is a success", &scriptedPandaPon{queries: []string{aggregate(20, ""), aggregate(30, "SF1")}, submitErr: refused}, events.TypeRefundUpdated, false, 1},
		{"refused and another parcel recorded", &scriptedPandaPon{queries: []string{aggregate(30, "OTHER")}, submitErr: refused}, events.TypeRefundRequestFailed, false, 1},
		{"refused, re-query fails: retry later", &scriptedPandaPon{queries: []string{aggregate(20, ""), ""}, submitErr: refused}, "", true, 1},
		{"query fails: retry later, nothing submitted", &scriptedPandaPon{queries: []string{""}}, "", true, 0},
		{"submission transient: retry later", &scriptedPandaPon{queries: []string{aggregate(20, "")}, submitErr: &pandapon.TransientError{HTTPStatus: 502}}, "", true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{PandaPon: tc.pp}
			outs, err := h.Handle(context.Background(), returnShipped(t))
			if tc.wantTransient {
				if !errors.Is(err, pandapon.ErrTransient) || outs != nil {
					t.Fatalf("got %v, %v; want a transient error and no output", outs, err)
				}
			} else {
				if err != nil || len(outs) != 1 {
					t.Fatalf("got %d outputs, %v; want one output", len(outs), err)
				}
				if outs[0].Event.Type() != tc.wantType {
					t.Errorf("output %s, want %s", outs[0].Event.Type(), tc.wantType)
				}
			}
			if tc.pp.submitted != tc.wantSubmitted {
				t.Errorf("submitted %d times, want %d", tc.pp.submitted, tc.wantSubmitted)
			}
		})
	}
}

func TestRequestFailedCarriesPandaPonsAnswer(t *testing.T) {
	h := &Handler{PandaPon: &scriptedPandaPon{queries: []string{aggregate(30, "OTHER")}, submitErr: refused}, Source: "test"}
	outs, err := h.Handle(context.Background(), returnShipped(t))
	if err != nil {
		t.Fatal(err)
	}
	var f events.RefundRequestFailed
	if err := json.Unmarshal(outs[0].Event.Data(), &f); err != nil {
		t.Fatal(err)
	}
	if f.Code != 409 || f.Msg != refused.Msg || f.RequestType != events.TypeReturnShipped || f.RefundID != "1" || f.RequestID != nil || f.Reason == "" {
		t.Errorf("refund.request.failed data %s", outs[0].Event.Data())
	}
	if outs[0].Subject != "pandapon.refund.request.failed" || outs[0].Event.Source() != "test" {
		t.Errorf("published to %s with source %s", outs[0].Subject, outs[0].Event.Source())
	}
}
