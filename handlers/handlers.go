// Package handlers decides what each input event does: which PandaPon calls
// it makes and which output event it yields. It does no messaging itself;
// the pipeline package delivers inputs and publishes the outputs.
//
// Outcomes of Handle:
//   - outputs and a nil error: publish them, then acknowledge the input;
//   - an error matching pandapon.ErrTransient: PandaPon could not be reached
//     or answered unusably; redeliver the input later;
//   - an *UnknownOutcomeError: a submission may or may not have been
//     carried out; redeliver the input no sooner than its RecheckAfter;
//   - any other error: a programming or configuration fault; the pipeline
//     treats it like a transient one (bounded redeliveries, then the
//     dead-letter subject) so nothing is lost.
//
// A business error from PandaPon is not an error here: it becomes a
// refund.request.failed output.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/submitlease"
)

// PandaPon is the part of *pandapon.Client the handlers use.
type PandaPon interface {
	QueryRefund(ctx context.Context, refundID string) (*pandapon.Response, error)
	SubmitReturnLogistics(ctx context.Context, r pandapon.ReturnLogistics) (*pandapon.Response, error)
}

// Output is one event to publish on a subject.
type Output struct {
	Subject string
	Event   event.Event
}

// Handler handles the two input event types. Its zero value is not usable:
// set PandaPon; Source defaults to "pandabridge".
type Handler struct {
	PandaPon PandaPon
	// Source is the source attribute of every output event.
	Source   string
	Subjects events.Subjects
	// RecheckDelay is how long a return.shipped whose submission may have
	// been carried out without an answer (UnknownOutcomeError) waits before
	// PandaPon's state is checked again (default DefaultRecheckDelay). It is
	// also the hold of the submission leases (see Leases).
	RecheckDelay time.Duration
	// Leases, when set, keeps replicas from submitting the same parcel at
	// once, or while an earlier submission of it may still be carried out:
	// a submission first takes the parcel's lease (for the handling's
	// deadline plus RecheckDelay), and an input that finds it held is
	// rechecked when it frees (UnknownOutcomeError). Without it, only
	// inputs handled by the same process are kept apart, and a redelivery
	// after the process died is not held back at all.
	Leases Leases
}

// Leases is the part of *submitlease.Store the handlers use.
type Leases interface {
	Acquire(ctx context.Context, refundID, logisticsNo, holder string, hold time.Duration) (*submitlease.Lease, error)
}

// DefaultSource is the source of output events unless configured.
const DefaultSource = "pandabridge"

// DefaultRecheckDelay is the default Handler.RecheckDelay: six times
// PandaPon's default attempt timeout, for a submission PandaPon was still
// working on when the client stopped waiting.
const DefaultRecheckDelay = time.Minute

// UnknownOutcomeError reports a submission whose request reached PandaPon
// (or may have) without a usable answer: a timeout, a reset connection, a
// 5xx, a truncated body, or a shutdown cancelling it in flight. PandaPon may
// still be carrying it out, so querying at once could see the parcel
// missing and submit it a second time. The input must be redelivered no
// sooner than RecheckAfter; its handling then starts with a query, as
// always, and submits only if the parcel is still not recorded.
type UnknownOutcomeError struct {
	RecheckAfter time.Duration
	Err          error
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("return logistics submission may have been carried out without an answer (check again in %s): %v", e.RecheckAfter, e.Err)
}

func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// Handle performs the input's request and returns its single output. See the
// package documentation for what errors mean.
func (h *Handler) Handle(ctx context.Context, in events.Input) ([]Output, error) {
	switch {
	case in.Lookup != nil:
		return h.lookup(ctx, in)
	case in.ReturnShipped != nil:
		return h.returnShipped(ctx, in)
	}
	return nil, fmt.Errorf("handlers: input %s of type %s has no data", in.Event.ID(), in.Event.Type())
}

// lookup queries the refund and publishes its state.
func (h *Handler) lookup(ctx context.Context, in events.Input) ([]Output, error) {
	resp, err := h.PandaPon.QueryRefund(ctx, in.RefundID())
	if err != nil {
		return h.failedOr(in, err, "PandaPon refused the refund query")
	}
	return h.updated(in, resp), nil
}

// returnShipped reconciles against PandaPon's current state, then submits
// the return logistics unless PandaPon already records the same parcel.
//
// PandaPon's state is the arbiter, so a redelivered or repeated event never
// submits twice: if the refund already shows this logisticsNo, the current
// state is published without a submission. If the submission is refused,
// the refund is queried once more: a refusal because this very parcel was
// recorded meanwhile (a concurrent duplicate, or a retried request whose
// first attempt was processed) is a success, anything else is published as
// refund.request.failed. With Leases, a submission also needs the parcel's
// lease, which keeps other copies of it (on any replica) from submitting
// while this one may still be carried out.
func (h *Handler) returnShipped(ctx context.Context, in events.Input) ([]Output, error) {
	rs := in.ReturnShipped
	current, done, err := h.queryRecorded(ctx, in)
	if err != nil || done {
		return h.answerOr(in, current, err)
	}
	release, unanswered := func() {}, func() {}
	if h.Leases != nil {
		lease, err := h.Leases.Acquire(ctx, in.RefundID(), rs.LogisticsNo, in.Event.ID(), h.recheckDelay())
		if held, ok := errors.AsType[*submitlease.HeldError](err); ok {
			// Another submission of this parcel is under way, or got no
			// answer less than the hold ago: its outcome will show in
			// PandaPon's state. (One second more, so that the redelivery
			// finds the lease free.)
			return nil, &UnknownOutcomeError{RecheckAfter: held.RetryIn + time.Second, Err: held}
		}
		if err != nil {
			return nil, fmt.Errorf("taking the submission lease before submitting: %w", err)
		}
		// Released when the parcel may be submitted again at once; stamped
		// unanswered after an unknown outcome; kept after a success.
		release = func() { _ = lease.Release(context.WithoutCancel(ctx)) }
		unanswered = func() { _ = lease.Unanswered(context.WithoutCancel(ctx)) }
		if lease.TookOver {
			// The query above may have been answered from a state taken
			// before the old holder's submission was carried out.
			if current, done, err = h.queryRecorded(ctx, in); err != nil || done {
				release()
				return h.answerOr(in, current, err)
			}
		}
	}
	resp, err := h.PandaPon.SubmitReturnLogistics(ctx, pandapon.ReturnLogistics{
		RefundID:             in.RefundID(),
		LogisticsCompanyCode: rs.LogisticsCompanyCode,
		LogisticsNo:          rs.LogisticsNo,
		BuyerPhone:           rs.BuyerPhone,
		ReturnGoodsDesc:      rs.ReturnGoodsDesc,
	})
	if err == nil {
		return h.updated(in, resp), nil
	}
	var apiErr *pandapon.APIError
	if !errors.As(err, &apiErr) {
		if pandapon.MayHaveBeenProcessed(err) {
			unanswered()
			return nil, &UnknownOutcomeError{RecheckAfter: h.recheckDelay(), Err: err}
		}
		release()
		return nil, err
	}
	release() // refused: PandaPon's state decides what happens next
	again, qerr := h.PandaPon.QueryRefund(ctx, in.RefundID())
	if qerr != nil {
		// The refusal is known; the state after it is not. Try again later
		// rather than publish a failure that may be wrong.
		return nil, fmt.Errorf("submission refused (%w), then re-query failed: %w", err, qerr)
	}
	if done, err := recorded(again, rs.LogisticsNo); err != nil || done {
		if err != nil {
			return nil, fmt.Errorf("submission refused (%w), then checking PandaPon's refund: %w", apiErr, err)
		}
		return h.updated(in, again), nil
	}
	return h.failed(in, apiErr, "PandaPon refused the return logistics submission")
}

// queryRecorded queries the refund and reports whether it already holds
// the input's parcel.
func (h *Handler) queryRecorded(ctx context.Context, in events.Input) (*pandapon.Response, bool, error) {
	resp, err := h.PandaPon.QueryRefund(ctx, in.RefundID())
	if err != nil {
		return nil, false, err
	}
	done, err := recorded(resp, in.ReturnShipped.LogisticsNo)
	if err != nil {
		return nil, false, fmt.Errorf("checking PandaPon's refund before submitting: %w", err)
	}
	return resp, done, nil
}

// answerOr answers a return.shipped from PandaPon's state (resp), or turns
// the failure of queryRecorded into its outcome.
func (h *Handler) answerOr(in events.Input, resp *pandapon.Response, err error) ([]Output, error) {
	if err != nil {
		return h.failedOr(in, err, "PandaPon refused the refund query made before submitting the return logistics")
	}
	return h.updated(in, resp), nil
}

// recorded reports whether the refund's state already holds logisticsNo.
// It reads the logistics number alone (pandapon.RecordedLogisticsNo), and
// an unreadable one is an error rather than "not recorded": when in
// doubt, nothing is submitted.
func recorded(resp *pandapon.Response, logisticsNo string) (bool, error) {
	got, err := pandapon.RecordedLogisticsNo(resp.Data)
	if err != nil {
		return false, fmt.Errorf("cannot tell whether parcel %q is recorded: %w", logisticsNo, err)
	}
	return got != "" && got == logisticsNo, nil
}

func (h *Handler) recheckDelay() time.Duration {
	if h.RecheckDelay <= 0 {
		return DefaultRecheckDelay
	}
	return h.RecheckDelay
}

func (h *Handler) source() string {
	if h.Source == "" {
		return DefaultSource
	}
	return h.Source
}

func (h *Handler) updated(in events.Input, resp *pandapon.Response) []Output {
	e := events.NewRefundUpdated(in.Event, h.source(), in.RefundID(), resp.Data, resp.ReceivedAt)
	return []Output{{Subject: h.Subjects.Of(events.TypeRefundUpdated), Event: e}}
}

// failedOr turns a business error into refund.request.failed and returns
// every other error as is.
func (h *Handler) failedOr(in events.Input, err error, reason string) ([]Output, error) {
	var apiErr *pandapon.APIError
	if errors.As(err, &apiErr) {
		return h.failed(in, apiErr, reason)
	}
	return nil, err
}

func (h *Handler) failed(in events.Input, apiErr *pandapon.APIError, reason string) ([]Output, error) {
	f := events.RefundRequestFailed{
		RefundID:    in.RefundID(),
		RequestType: in.Event.Type(),
		Code:        apiErr.Code,
		Msg:         apiErr.Msg,
		Reason:      fmt.Sprintf("%s: code %d, %q", reason, apiErr.Code, apiErr.Msg),
	}
	if apiErr.RequestID.Valid {
		rid := apiErr.RequestID.Value
		f.RequestID = &rid
	}
	e, err := events.NewRefundRequestFailed(in.Event, h.source(), f, apiErr.ReceivedAt)
	if err != nil {
		return nil, fmt.Errorf("handlers: building refund.request.failed: %w", err)
	}
	return []Output{{Subject: h.Subjects.Of(events.TypeRefundRequestFailed), Event: e}}, nil
}
