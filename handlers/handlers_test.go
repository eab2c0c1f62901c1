package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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
		{"recorded, other members of unexpected shapes: no submission", &scriptedPandaPon{queries: []string{
			`{"refundOrderAggregate":{"refundOrder":{"refundStatus":"thirty"},"logistics":{"logisticsNo":"SF1","logisticsCompany":"SF"}}}`}, submitErr: refused},
			events.TypeRefundUpdated, false, 0},
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

// TestSubmissionWithUnknownOutcomeIsRecheckedLater: a submission that
// reached PandaPon without an answer may still be carried out, so the
// input must not be handled again at once; one that provably did not reach
// it is an ordinary transient failure.
func TestSubmissionWithUnknownOutcomeIsRecheckedLater(t *testing.T) {
	for _, tc := range []struct {
		name      string
		submitErr error
		delay     time.Duration // of the Handler
		want      time.Duration // RecheckAfter; 0: not an UnknownOutcomeError
	}{
		{"timed out after sending", &pandapon.TransientError{Sent: true, Err: context.DeadlineExceeded}, 0, DefaultRecheckDelay},
		{"5xx, configured delay", &pandapon.TransientError{Sent: true, HTTPStatus: 502}, 3 * time.Second, 3 * time.Second},
		{"unusable answer", &pandapon.ResponseError{HTTPStatus: 200, BodyPrefix: "<html>"}, 0, DefaultRecheckDelay},
		{"429: refused before processing", &pandapon.TransientError{HTTPStatus: 429}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pp := &scriptedPandaPon{queries: []string{aggregate(20, "")}, submitErr: tc.submitErr}
			outs, err := (&Handler{PandaPon: pp, RecheckDelay: tc.delay}).Handle(context.Background(), returnShipped(t))
			if outs != nil || !errors.Is(err, pandapon.ErrTransient) {
				t.Fatalf("got %v, %v; want no output and a transient error", outs, err)
			}
			ue, ok := errors.AsType[*UnknownOutcomeError](err)
			if tc.want == 0 {
				if ok {
					t.Errorf("err = %v, want an ordinary transient error", err)
				}
				return
			}
			if !ok || ue.RecheckAfter != tc.want {
				t.Fatalf("err = %v, want an UnknownOutcomeError with RecheckAfter %s", err, tc.want)
			}
		})
	}
}

// TestUnreadableLogisticsSubmitsNothing: when PandaPon's answer does not
// say whether the parcel is recorded, nothing is submitted.
func TestUnreadableLogisticsSubmitsNothing(t *testing.T) {
	pp := &scriptedPandaPon{queries: []string{`{"refundOrderAggregate":{"logistics":"SF1 via SF"}}`}}
	outs, err := (&Handler{PandaPon: pp}).Handle(context.Background(), returnShipped(t))
	if outs != nil || err == nil {
		t.Fatalf("got %v, %v; want an error", outs, err)
	}
	for _, want := range []string{`parcel "SF1"`, `refundOrderAggregate.logistics is "SF1 via SF"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if pp.submitted != 0 {
		t.Errorf("submitted %d times without knowing whether the parcel is recorded", pp.submitted)
	}
}
