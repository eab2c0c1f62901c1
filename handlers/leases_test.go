package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/submitlease"
)

// TestLeaseHoldsWhileTheHolderMayStillSend: replica A takes the parcel's
// lease, but its submission is delayed (a 429 with Retry-After) and sent
// later. Replica B, handling a second copy of the parcel, must not submit
// until A can no longer send (its deadline) plus the hold; by then
// PandaPon's state shows the parcel and B submits nothing.
func TestLeaseHoldsWhileTheHolderMayStillSend(t *testing.T) {
	var mu sync.Mutex
	recorded := ""
	var posts, carriedOut atomic.Int32
	pandaPon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			mu.Lock()
			no := recorded
			mu.Unlock()
			fmt.Fprintf(w, `{"code":200,"data":{"refundOrderAggregate":{"logistics":{"logisticsNo":%q}}}}`, no)
			return
		}
		if posts.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		carriedOut.Add(1)
		time.Sleep(500 * time.Millisecond) // PandaPon at work
		mu.Lock()
		recorded = "SF1"
		mu.Unlock()
		fmt.Fprint(w, `{"code":200,"data":{"refundOrderAggregate":{"logistics":{"logisticsNo":"SF1"}}}}`)
	}))
	defer pandaPon.Close()
	client, err := pandapon.New(pandapon.Config{BaseURL: pandaPon.URL, RateLimit: -1,
		Credentials: pandapon.Credentials{AccessKey: "k", AccessSecret: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	leases := submitlease.New(js, testkit.EnsureStreams(t, js).SubmissionsBucket)
	const hold, deadline = time.Second, 3 * time.Second
	h := &Handler{PandaPon: client, RecheckDelay: hold, Leases: leases}
	inA, errA := events.ParseInput(testkit.ReturnShipped("1", "SF", "SF1"))
	inB, errB := events.ParseInput(testkit.ReturnShipped("1", "SF", "SF1")) // the same parcel, another event id
	if err := errors.Join(errA, errB); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	aDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline) // the pipeline's HandlerTimeout
		defer cancel()
		_, err := h.Handle(ctx, inA)
		aDone <- err
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return posts.Load() == 1 }, "A's first, refused, submission")
	_, err = h.Handle(context.Background(), inB)
	ue, ok := errors.AsType[*UnknownOutcomeError](err)
	if !ok {
		t.Fatalf("B while A holds the lease: %v, want an UnknownOutcomeError", err)
	}
	if recheckAt := time.Since(start) + ue.RecheckAfter; recheckAt < deadline+hold {
		t.Errorf("B rechecks %s after A took the lease, before A's deadline plus the hold (%s)", recheckAt, deadline+hold)
	}
	if err := <-aDone; err != nil {
		t.Fatalf("A: %v", err)
	}
	// Redelivered once A's submission is done, B answers from the state.
	outs, err := h.Handle(context.Background(), inB)
	if err != nil || len(outs) != 1 || outs[0].Event.Type() != events.TypeRefundUpdated {
		t.Fatalf("B redelivered: %v, %v; want refund.updated", outs, err)
	}
	if n := carriedOut.Load(); n != 1 {
		t.Errorf("PandaPon carried out %d submissions of the parcel, want 1", n)
	}
}
