package pull_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pull"
)

// Loop never hands over more messages than there are slots, and every
// message arrives exactly once while the caller settles them.
func TestLoopHoldsNoMoreThanItsSlots(t *testing.T) {
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	const n, slots = 50, 3
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("s.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
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
