package submitlease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/internal/testkit"
)

func newStore(t *testing.T) (*Store, func() error) {
	t.Helper()
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	s := New(js, topo.SubmissionsBucket)
	recreate := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteKeyValue(ctx, topo.SubmissionsBucket); err != nil {
			return err
		}
		return topo.EnsureStreams(ctx, js)
	}
	return s, recreate
}

// withDeadline is a context ending d from now, as a handler's does.
func withDeadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestLeaseKeepsASecondSubmissionOut(t *testing.T) {
	s, _ := newStore(t)
	const hold = time.Minute
	first, err := s.Acquire(withDeadline(t, time.Minute), "110000303674", "SF 123/45", "input-1", hold)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(withDeadline(t, time.Minute), "110000303674", "SF 123/45", "input-2", hold)
	held, ok := errors.AsType[*HeldError](err)
	// Held until the holder's deadline (1 min) plus the hold (1 min) plus
	// the clock skew margin.
	if !ok || held.Holder != "input-1" || held.State != "submitting" || held.RetryIn < 110*time.Second || held.RetryIn > 2*time.Minute+ClockSkewMargin {
		t.Fatalf("second Acquire: %#v, want a HeldError naming input-1, free in about 2 min", err)
	}
	if !strings.Contains(err.Error(), `parcel "SF 123/45" of refund 110000303674 is being submitted by input input-1`) {
		t.Errorf("error %q does not name the parcel and its holder", err)
	}
	// Another parcel, or the same number on another refund, is free.
	for _, p := range [][2]string{{"110000303674", "SF 999"}, {"110000300003", "SF 123/45"}} {
		if _, err := s.Acquire(withDeadline(t, time.Minute), p[0], p[1], "input-3", hold); err != nil {
			t.Errorf("Acquire(%s, %s): %v", p[0], p[1], err)
		}
	}
	ctx := context.Background()
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(withDeadline(t, time.Minute), "110000303674", "SF 123/45", "input-2", hold); err != nil {
		t.Errorf("Acquire after Release: %v", err)
	}
}

// TestLeaseOutlivesTheHoldersDeadline: a holder delayed before sending (a
// 429's Retry-After, the rate limiter) may send until its deadline; the
// lease must not go stale one hold after it was taken.
func TestLeaseOutlivesTheHoldersDeadline(t *testing.T) {
	s, _ := newStore(t)
	const hold = time.Minute
	if _, err := s.Acquire(withDeadline(t, 5*time.Minute), "1", "SF1", "input-1", hold); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(2 * hold) } // twice the hold later, deadline not passed
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold); !isHeld(err) {
		t.Fatalf("Acquire while the holder may still send: %v, want held", err)
	}
	s.now = func() time.Time { return time.Now().Add(5*time.Minute + hold + 2*ClockSkewMargin) } // deadline + hold passed
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold); err != nil {
		t.Fatalf("Acquire of a stale lease: %v", err)
	}
}

// TestUnansweredLeaseHoldsFromTheStamp: after a submission without an
// answer the hold runs from that moment, for everyone, its own input too;
// then the lease is taken over, and the old holder's late release does not
// free the new holder's lease.
func TestUnansweredLeaseHoldsFromTheStamp(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const hold = time.Minute
	old, err := s.Acquire(withDeadline(t, time.Hour), "1", "SF1", "input-1", hold)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Unanswered(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", hold)
	held, ok := errors.AsType[*HeldError](err)
	if !ok || held.State != "unanswered" || held.RetryIn < 50*time.Second || held.RetryIn > hold+ClockSkewMargin {
		t.Fatalf("Acquire right after an unanswered submission: %v, want held for about the hold (not the holder's 1 h deadline)", err)
	}
	if !strings.Contains(err.Error(), "was submitted without an answer by input input-1") {
		t.Errorf("error %q does not say the submission got no answer", err)
	}
	s.now = func() time.Time { return time.Now().Add(hold + 2*ClockSkewMargin) }
	taken, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", hold)
	if err != nil {
		t.Fatalf("Acquire one hold after the stamp: %v", err)
	}
	if !taken.TookOver {
		t.Error("a lease that replaced a stale one does not say TookOver")
	}
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	s.now = time.Now
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-3", hold); !isHeld(err) {
		t.Fatalf("Acquire after a stale release: %v, want held", err)
	}
	if err := taken.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func isHeld(err error) bool {
	_, ok := errors.AsType[*HeldError](err)
	return ok
}

func TestStoreBindsARecreatedBucket(t *testing.T) {
	s, recreate := newStore(t)
	ctx := context.Background()
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := recreate(); err != nil {
		t.Fatal(err)
	}
	// The first call may still use the deleted bucket's handle and fail;
	// within two calls the store works on the new bucket.
	_, err := s.Acquire(ctx, "1", "SF1", "input-2", time.Minute)
	if err != nil {
		if _, err = s.Acquire(ctx, "1", "SF1", "input-2", time.Minute); err != nil {
			t.Fatalf("Acquire on the recreated bucket: %v", err)
		}
	}
}

func TestKey(t *testing.T) {
	k := Key("110000303674", "SF 123/45")
	if !strings.HasPrefix(k, "110000303674.") || len(k) != len("110000303674.")+32 || strings.ContainsAny(k, " /") {
		t.Errorf("Key = %q", k)
	}
	if Key("1", "a") == Key("1", "b") || Key("1", "a") == Key("2", "a") {
		t.Error("different parcels share a key")
	}
	if k := Key("1.*>", "a"); strings.ContainsAny(k[:len(k)-33], ".*>") {
		t.Errorf("Key of a refund id with key metacharacters = %q", k)
	}
}

// TestOnlyOneReplicaTakesOverAStaleLease: two replicas read the same stale
// lease; the compare-and-swap lets exactly one replace it.
func TestOnlyOneReplicaTakesOverAStaleLease(t *testing.T) {
	a, _ := newStore(t)
	if _, err := a.Acquire(withDeadline(t, time.Second), "1", "SF1", "input-1", time.Second); err != nil {
		t.Fatal(err)
	}
	b := New(a.js, a.bucket) // another replica's store
	later := func() time.Time { return time.Now().Add(time.Minute) }
	a.now, b.now = later, later
	var bothRead sync.WaitGroup
	bothRead.Add(2)
	for _, s := range []*Store{a, b} {
		s.beforeTakeover = func() { bothRead.Done(); bothRead.Wait() }
	}
	errs := make(chan error, 2)
	for i, s := range []*Store{a, b} {
		go func() {
			_, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", fmt.Sprintf("input-%d", i+2), time.Second)
			errs <- err
		}()
	}
	var won, held int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			won++
		case isHeld(err):
			held++
		default:
			t.Errorf("Acquire: %v", err)
		}
	}
	if won != 1 || held != 1 {
		t.Errorf("%d replicas took the stale lease over and %d were held, want 1 and 1", won, held)
	}
}

// lostAnswers is a bucket whose writes (Create, Update) fail in the ways
// a write without an answer can, set by mode:
//
//   - "lost": stored, then reported failed (a timeout);
//   - "lost at deadline": stored, then reported failed when the caller's
//     context ends, with its error, as a real timeout is;
//   - "late": reported failed at once, stored after the first read (a
//     write still on its way while the writer reads);
//   - "unsent": reported failed, never stored;
//   - "refused": refused by the server (an API error), never stored;
//   - "no responders": nobody received it (a stream without a leader).
//
// Modes in then apply to the next writes, one each, before mode does.
type lostAnswers struct {
	jetstream.KeyValue
	mu     sync.Mutex
	mode   string
	then   []string
	only   string // "Create" or "Update": the mode applies to that write alone
	late   func() // the pending "late" write
	reads  int
	writes []time.Time // when each write (of the only kind, if set) was made
}

func (b *lostAnswers) set(mode string) {
	b.mu.Lock()
	b.mode = mode
	b.mu.Unlock()
}

func (b *lostAnswers) write(ctx context.Context, op string, do func(context.Context) (uint64, error)) (uint64, error) {
	b.mu.Lock()
	mode := b.mode
	if b.only != "" && b.only != op {
		mode = ""
	} else {
		b.writes = append(b.writes, time.Now())
		if len(b.then) > 0 {
			mode, b.then = b.then[0], b.then[1:]
		}
	}
	b.mu.Unlock()
	switch mode {
	case "lost", "lost at deadline":
		if _, err := do(ctx); err != nil {
			return 0, err
		}
		if mode == "lost" {
			return 0, nats.ErrTimeout
		}
		<-ctx.Done()
		return 0, ctx.Err()
	case "late":
		b.mu.Lock()
		b.late = func() { _, _ = do(context.Background()) }
		b.mu.Unlock()
		return 0, nats.ErrTimeout
	case "unsent":
		return 0, nats.ErrTimeout
	case "refused":
		return 0, &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}
	case "no responders":
		return 0, nats.ErrNoResponders
	}
	return do(ctx)
}

func (b *lostAnswers) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return b.write(ctx, "Create", func(ctx context.Context) (uint64, error) { return b.KeyValue.Create(ctx, key, value, opts...) })
}

func (b *lostAnswers) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return b.write(ctx, "Update", func(ctx context.Context) (uint64, error) { return b.KeyValue.Update(ctx, key, value, rev) })
}

func (b *lostAnswers) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := b.KeyValue.Get(ctx, key)
	b.mu.Lock()
	b.reads++
	late := b.late
	b.late = nil
	b.mu.Unlock()
	if late != nil {
		late()
	}
	return e, err
}

func newLossyStore(t *testing.T) (*Store, *lostAnswers) {
	s, _ := newStore(t)
	b := &lostAnswers{}
	s.wrapKV = func(kv jetstream.KeyValue) jetstream.KeyValue { b.KeyValue = kv; return b }
	s.readBackFor = 2 * time.Second
	return s, b
}

// TestLeaseWhoseAnswerWasLostIsHeld: a lease stored while its answer was
// lost (a NATS node dying at that moment) is found by reading it back, so
// the submission goes ahead now instead of its own input being held off
// until the lease goes stale (the holder's deadline plus the hold, about 2
// minutes with the defaults). So is one still on its way when the first
// read comes back, and one whose failure was the caller's deadline.
func TestLeaseWhoseAnswerWasLostIsHeld(t *testing.T) {
	for _, mode := range []string{"lost", "late", "lost at deadline"} {
		t.Run(mode, func(t *testing.T) {
			s, b := newLossyStore(t)
			const hold = time.Minute
			deadline := time.Minute
			if mode == "lost at deadline" {
				deadline = 300 * time.Millisecond
			}
			b.set(mode)
			l, err := s.Acquire(withDeadline(t, deadline), "1", "SF1", "input-1", hold)
			if err != nil {
				t.Fatalf("Acquire whose stored lease lost its answer: %v, want the lease", err)
			}
			if l.TookOver {
				t.Error("a freshly created lease says TookOver")
			}
			b.set("")
			// It is a real lease: it keeps another copy out, and its
			// revision is right, so that Release works on it.
			if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold); !isHeld(err) {
				t.Fatalf("second Acquire: %v, want held", err)
			}
			if err := l.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold); err != nil {
				t.Fatalf("Acquire after the read-back lease was released: %v", err)
			}
		})
	}
}

// TestWriteLostWithItsNodeIsMadeAgain: a write that was never stored (lost
// with the node it was sent to, before a new leader was elected) is made
// again while the key is still as it was, so the lease is taken once the
// bucket answers, instead of the input failing after the read-back.
func TestWriteLostWithItsNodeIsMadeAgain(t *testing.T) {
	for _, op := range []string{"Create", "Update"} {
		t.Run(op, func(t *testing.T) {
			s, b := newLossyStore(t)
			const hold = time.Second
			if op == "Update" { // a stale lease to take over
				if _, err := s.Acquire(withDeadline(t, time.Second), "1", "SF1", "input-1", hold); err != nil {
					t.Fatal(err)
				}
				s.now = func() time.Time { return time.Now().Add(time.Minute) }
			}
			b.only = op
			b.mu.Lock()
			b.then, b.writes = []string{"unsent", "no responders"}, nil
			b.mu.Unlock()
			l, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold)
			if err != nil {
				t.Fatalf("Acquire whose first write was lost, and the second unheard: %v, want the lease", err)
			}
			if got := len(b.writes); got != 3 {
				t.Errorf("%d writes, want 3 (lost, unheard, stored)", got)
			}
			if l.TookOver != (op == "Update") {
				t.Errorf("TookOver = %v for a lease taken by %s", l.TookOver, op)
			}
			if err := l.Release(context.Background()); err != nil {
				t.Fatalf("Release (wrong revision?): %v", err)
			}
			if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-3", hold); err != nil {
				t.Fatalf("Acquire after the lease was released: %v", err)
			}
		})
	}
}

// TestRewriteBeatenByTheFirstCopyIsHeld: the first write was still on its
// way when the read-back wrote again; the rewrite's conflict is the first
// copy landing, which is this attempt's lease.
func TestRewriteBeatenByTheFirstCopyIsHeld(t *testing.T) {
	s, b := newLossyStore(t)
	b.mu.Lock()
	b.then = []string{"late"} // stored after the first read
	b.mu.Unlock()
	l, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute)
	if err != nil {
		t.Fatalf("Acquire whose rewrite lost to its own first copy: %v, want the lease", err)
	}
	if got := len(b.writes); got != 2 {
		t.Errorf("%d writes, want 2: the first and the rewrite that conflicted with it", got)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatalf("Release (wrong revision?): %v", err)
	}
}

// TestLastRewriteLeavesTimeToReadItBack: a rewrite may be stored with its
// answer lost too, so none is made in the read-back's last stretch (here
// half of its 2 s), which is left for reading.
func TestLastRewriteLeavesTimeToReadItBack(t *testing.T) {
	s, b := newLossyStore(t)
	b.set("unsent")
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute); err == nil {
		t.Fatal("Acquire whose writes were never stored took the lease")
	}
	returned := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.writes) < 2 {
		t.Fatalf("%d writes, want the write made again", len(b.writes))
	}
	if gap := returned.Sub(b.writes[len(b.writes)-1]); gap < 900*time.Millisecond {
		t.Errorf("the last write was made %s before the read-back gave up, want at least the 1 s margin", gap.Round(time.Millisecond))
	}
}

// TestNoWriteAfterTheCallersDeadline: the read-back writes again only while
// the caller may still submit; after its deadline it only reads.
func TestNoWriteAfterTheCallersDeadline(t *testing.T) {
	s, b := newLossyStore(t)
	b.set("unsent")
	deadline := time.Now().Add(300 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if _, err := s.Acquire(ctx, "1", "SF1", "input-1", time.Minute); err == nil {
		t.Fatal("Acquire whose writes were never stored took the lease")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.writes) < 2 {
		t.Errorf("%d writes before the deadline, want the write made again", len(b.writes))
	}
	for _, w := range b.writes {
		if w.After(deadline) {
			t.Errorf("a write %s after the caller's deadline", w.Sub(deadline))
		}
	}
}

// TestRefusedRewriteStopsWriting: once the bucket refuses the write made
// again, the read-back only waits for an earlier copy.
func TestRefusedRewriteStopsWriting(t *testing.T) {
	s, b := newLossyStore(t)
	b.mu.Lock()
	b.then = []string{"unsent"}
	b.mu.Unlock()
	b.set("refused")
	_, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute)
	if !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("Acquire: %v, want the first write's timeout", err)
	}
	if got := len(b.writes); got != 2 {
		t.Errorf("%d writes, want 2: the lost one and the refused one", got)
	}
}

// TestLostWriteDoesNotClaimAnothersLease: reading back after a failed
// write finds another holder's entry; that is not this attempt's lease.
func TestLostWriteDoesNotClaimAnothersLease(t *testing.T) {
	s, b := newLossyStore(t)
	other := New(s.js, s.bucket) // another replica, whose writes work
	if _, err := other.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	b.set("unsent") // as if the Create had not been answered
	if l, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", time.Minute); err == nil {
		t.Fatalf("Acquire over another's lease after an unanswered write: got a lease (%+v), want an error", l)
	}
}

// TestUnstoredLeaseIsAFailure: a write that got no answer and was not
// stored is reported as the failure it is (after the read-back), and holds
// nothing.
func TestUnstoredLeaseIsAFailure(t *testing.T) {
	s, b := newLossyStore(t)
	b.set("unsent")
	_, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute)
	if !errors.Is(err, nats.ErrTimeout) || isHeld(err) {
		t.Fatalf("Acquire whose write was not stored: %v, want the timeout", err)
	}
	b.set("")
	if _, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute); err != nil {
		t.Fatalf("Acquire after the failed one: %v", err)
	}
}

// TestRefusedWriteIsNotReadBack: the server's refusal means nothing was
// stored; Acquire fails at once, without reading back.
func TestRefusedWriteIsNotReadBack(t *testing.T) {
	s, b := newLossyStore(t)
	b.set("refused")
	_, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-1", time.Minute)
	if _, ok := errors.AsType[*jetstream.APIError](err); !ok {
		t.Fatalf("Acquire whose write was refused: %v, want the API error", err)
	}
	if b.reads != 0 {
		t.Errorf("%d reads after a refused write, want none", b.reads)
	}
}

// TestTakeoverWhoseAnswerWasLostIsHeld: the same for the compare-and-swap
// that replaces a stale lease; the lease read back still says TookOver.
func TestTakeoverWhoseAnswerWasLostIsHeld(t *testing.T) {
	for _, mode := range []string{"lost", "late"} {
		t.Run(mode, func(t *testing.T) {
			s, b := newLossyStore(t)
			const hold = time.Second
			if _, err := s.Acquire(withDeadline(t, time.Second), "1", "SF1", "input-1", hold); err != nil {
				t.Fatal(err)
			}
			s.now = func() time.Time { return time.Now().Add(time.Minute) } // stale
			b.only = "Update"
			b.set(mode)
			l, err := s.Acquire(withDeadline(t, time.Minute), "1", "SF1", "input-2", hold)
			if err != nil {
				t.Fatalf("takeover whose answer was lost: %v, want the lease", err)
			}
			if !l.TookOver {
				t.Error("a lease that replaced a stale one does not say TookOver")
			}
			b.set("")
			if err := l.Unanswered(context.Background()); err != nil {
				t.Fatalf("Unanswered on the read-back lease (wrong revision?): %v", err)
			}
		})
	}
}

// TestWriteErrorsAreSortedByWhatTheyProve: a key conflict is a held lease
// whichever code the bucket's replication gives it; a refusal proves the
// write was not stored; a timeout proves nothing.
func TestWriteErrorsAreSortedByWhatTheyProve(t *testing.T) {
	wrongLast := func(code jetstream.ErrorCode) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: code, Description: "wrong last sequence: 7"})
	}
	for _, c := range []struct {
		name            string
		err             error
		exists, refused bool
	}{
		{"key exists", jetstream.ErrKeyExists, true, true},
		{"wrong last sequence (R1)", wrongLast(jetstream.JSErrCodeStreamWrongLastSequence), true, true},
		{"wrong last sequence (R3)", wrongLast(jetstream.JSErrCodeStreamWrongLastSequenceConstant), true, true},
		{"no stream response", jetstream.ErrNoStreamResponse, false, true},
		{"no responders", nats.ErrNoResponders, false, true},
		{"timeout", nats.ErrTimeout, false, false},
		{"deadline", context.DeadlineExceeded, false, false},
	} {
		if got := keyExists(c.err); got != c.exists {
			t.Errorf("%s: keyExists = %v, want %v", c.name, got, c.exists)
		}
		if got := refused(c.err); got != c.refused {
			t.Errorf("%s: refused = %v, want %v", c.name, got, c.refused)
		}
	}
}
