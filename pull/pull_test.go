package pull_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pull"
)

// testGate is a pull.Gate of functions; unused adds up what Release is told.
type testGate struct {
	admit  func(context.Context) int
	unused *atomic.Int64
}

func (g testGate) Admit(ctx context.Context) int { return g.admit(ctx) }
func (g testGate) Release(n int)                 { g.unused.Add(int64(n)) }

// consumerOf returns a durable pull consumer of a new stream on an embedded
// server, holding n messages on subjects s.0 … s.<n-1>.
func consumerOf(ctx context.Context, t *testing.T, n int) jetstream.Consumer {
	t.Helper()
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("s.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	return cons
}

// Loop never hands over more messages than there are slots, and every
// message arrives exactly once while the caller settles them.
func TestLoopHoldsNoMoreThanItsSlots(t *testing.T) {
	const n, slots = 50, 3
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons := consumerOf(ctx, t, n)
	held := make(chan struct{}, slots)
	var mu sync.Mutex
	seen := map[string]int{}
	peak := 0
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		pull.Loop(loopCtx, cons, pull.Options{Slots: held, MaxBatch: 10, MinBatch: 2}, func(m jetstream.Msg) {
			mu.Lock()
			seen[m.Subject()]++
			peak = max(peak, len(held))
			mu.Unlock()
			go func() { // settle later, as a worker would
				_ = m.Ack()
				<-held
			}()
		})
		close(done)
	}()
	testkit.Eventually(t, 15*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n }, "all %d messages", n)
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if peak > slots {
		t.Errorf("%d messages held at once with %d slots", peak, slots)
	}
	for subj, c := range seen {
		if c != 1 {
			t.Errorf("%s handed over %d times", subj, c)
		}
	}
}

// TestLoopPullsNoMoreThanAdmitted: each pull takes at most what Admit
// returned, also while messages are held and Loop would gather MinBatch
// slots; nothing is pulled while Admit blocks; and a Loop whose ctx ends
// while Admit blocks returns and gives that slot back.
func TestLoopPullsNoMoreThanAdmitted(t *testing.T) {
	const n = 30
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons := consumerOf(ctx, t, n)
	held := make(chan struct{}, n+1) // +1: the slot Loop holds while asking Admit
	var seen, unused atomic.Int64
	asked := make(chan int64) // Admit sends how many were seen when asked
	grants := make(chan int)  // and returns what the test sends back
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pull.Loop(loopCtx, cons, pull.Options{Slots: held, MaxBatch: 10, MinBatch: 4,
			Gate: testGate{admit: func(ctx context.Context) int {
				select {
				case asked <- seen.Load():
				case <-ctx.Done():
					return 0
				}
				select {
				case g := <-grants:
					return g
				case <-ctx.Done():
					return 0
				}
			}, unused: &unused}}, func(m jetstream.Msg) {
			seen.Add(1) // and keep its slot: Loop sees a busy caller
			_ = m.Ack()
		})
	}()
	want := int64(0)
	// 100: more than MaxBatch; the last 10 find only the 5 left.
	for _, grant := range []int{1, 1, 3, 100, 10, 10} {
		if got := <-asked; got != want {
			t.Fatalf("Admit asked with %d messages pulled, want %d", got, want)
		}
		grants <- grant
		want = min(want+int64(min(grant, 10)), n)
	}
	// Loop is back in Admit only after handing over the whole pull: by
	// then exactly what was granted has arrived.
	if got := <-asked; got != want {
		t.Fatalf("%d messages pulled after grants of 1, 1, 3, 100, 10 and 10 (MaxBatch 10, %d stored), want %d", got, n, want)
	}
	if got := unused.Load(); got != 5 {
		t.Errorf("Release was told of %d admissions not used, want 5 (the last pull of 10 found 5)", got)
	}
	stop() // while Admit blocks
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not return after its ctx ended while Admit blocked")
	}
	if len(held) != int(want) {
		t.Errorf("%d slots held after Loop returned, want the %d of the messages pulled", len(held), want)
	}
}
