package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	inA, inB := returnShipped(t), returnShipped(t) // the same parcel, two event ids

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

// scriptedPandaPonServer answers queries with the parcel recorded or not,
// and counts submissions; a POST runs hangPost first (nil: answer at once).
type scriptedPandaPonServer struct {
	*httptest.Server
	mu       sync.Mutex
	recorded string
	gets     atomic.Int32
	posts    atomic.Int32
	afterGet func(n int32) // runs after the n-th query was answered
}

func newScriptedPandaPonServer(t *testing.T, hangPost bool) *scriptedPandaPonServer {
	s := &scriptedPandaPonServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			s.mu.Lock()
			no := s.recorded
			s.mu.Unlock()
			fmt.Fprintf(w, `{"code":200,"data":{"refundOrderAggregate":{"logistics":{"logisticsNo":%q}}}}`, no)
			if n := s.gets.Add(1); s.afterGet != nil {
				s.afterGet(n)
			}
			return
		}
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client leaving
		s.posts.Add(1)
		if hangPost {
			<-r.Context().Done() // no answer: the client gives up
			return
		}
		s.record("SF1")
		fmt.Fprint(w, `{"code":200,"data":{"refundOrderAggregate":{"logistics":{"logisticsNo":"SF1"}}}}`)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *scriptedPandaPonServer) record(no string) {
	s.mu.Lock()
	s.recorded = no
	s.mu.Unlock()
}

func leasedHandler(t *testing.T, baseURL string, hold time.Duration) (*Handler, jetstream.JetStream, string) {
	t.Helper()
	client, err := pandapon.New(pandapon.Config{BaseURL: baseURL, RateLimit: -1, AttemptTimeout: 300 * time.Millisecond,
		Credentials: pandapon.Credentials{AccessKey: "k", AccessSecret: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	bucket := testkit.EnsureStreams(t, js).SubmissionsBucket
	return &Handler{PandaPon: client, RecheckDelay: hold, Leases: submitlease.New(js, bucket)}, js, bucket
}

// TestUnansweredSubmissionHoldsOtherCopies: A's submission gets no answer;
// a second copy of the parcel arriving right after must not submit.
func TestUnansweredSubmissionHoldsOtherCopies(t *testing.T) {
	pp := newScriptedPandaPonServer(t, true)
	h, _, _ := leasedHandler(t, pp.URL, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.Handle(ctx, returnShipped(t)); !isUnknownOutcome(err) {
		t.Fatalf("A: %v, want an UnknownOutcomeError", err)
	}
	_, err := h.Handle(ctx, returnShipped(t))
	held, ok := errors.AsType[*submitlease.HeldError](err)
	if !isUnknownOutcome(err) || !ok || held.State != "unanswered" {
		t.Fatalf("B: %v, want an UnknownOutcomeError for a lease held unanswered", err)
	}
	if n := pp.posts.Load(); n != 1 {
		t.Errorf("%d submissions reached PandaPon, want 1", n)
	}
}

// TestTakeoverQueriesAgain: B's query said "not recorded", but PandaPon
// carried the stale lease holder's submission out while that query was
// under way. Having taken the lease over, B must query again, and submit
// nothing.
func TestTakeoverQueriesAgain(t *testing.T) {
	pp := newScriptedPandaPonServer(t, false)
	pp.afterGet = func(n int32) {
		if n == 1 {
			pp.record("SF1") // the old holder's submission lands
		}
	}
	h, js, bucket := leasedHandler(t, pp.URL, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	// A lease whose holder could send until an hour ago: stale.
	stale := fmt.Sprintf(`{"holder":"input-A","state":"submitting","until":%q,"hold":"1s"}`, time.Now().Add(-time.Hour).Format(time.RFC3339Nano))
	if _, err := kv.Put(ctx, submitlease.Key("1", "SF1"), []byte(stale)); err != nil {
		t.Fatal(err)
	}
	outs, err := h.Handle(ctx, returnShipped(t))
	if err != nil || len(outs) != 1 || outs[0].Event.Type() != events.TypeRefundUpdated {
		t.Fatalf("B: %v, %v; want refund.updated", outs, err)
	}
	if n := pp.posts.Load(); n != 0 {
		t.Errorf("%d submissions reached PandaPon, want 0: the parcel was recorded when B took the lease over", n)
	}
	if n := pp.gets.Load(); n != 2 {
		t.Errorf("%d queries, want 2 (before taking the lease, and after taking it over)", n)
	}
}

func isUnknownOutcome(err error) bool {
	_, ok := errors.AsType[*UnknownOutcomeError](err)
	return ok
}
