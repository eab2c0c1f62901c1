package sandbox

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"
)

// delay waits for d, returning false early when ctx is done. It is how the
// sandbox adds Faults.Latency, and it never returns true before d has
// passed.
//
// A Go timer is not precise enough for that job: while a process is idle the
// runtime waits for its next timer in epoll with a whole-millisecond timeout,
// so a 50 ms timer fires 0–1.1 ms late, about 0.65 ms on average on the
// benchmark host (BenchmarkDelay). That silently made the sandbox's "50 ms"
// about 50.65 ms, and capped every pandabench contestant at about 98.7 % of
// the ideal C/latency it is judged against. On Linux, delay therefore wakes
// from a timerfd (delay_linux.go), which the netpoller reports to the
// nanosecond, and lands within about 0.1 ms of d; elsewhere, or if the
// timerfd cannot be created, it uses a Go timer.
func delay(ctx context.Context, d time.Duration) bool {
	if c := sharedAlarm(); c != nil {
		return c.wait(ctx, d)
	}
	return timerWait(ctx, d)
}

// timerWait sleeps for d on a Go timer; it returns false early when ctx is
// done.
func timerWait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// An alarm wakes waiters at their deadlines from one clock that fires at
// the earliest pending deadline. A waiter whose context ends stays queued
// until its deadline, harmlessly.
type alarm struct {
	set func(d time.Duration) error // fire once, d from now (d > 0)

	mu      sync.Mutex
	pending deadlineHeap
	armed   time.Time // when the clock fires next; zero: not set
	broken  error     // the clock failed: every wait falls back to a Go timer
}

// wait sleeps until d from now, or until ctx is done (false).
func (a *alarm) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	w := deadline{at: time.Now().Add(d), done: make(chan struct{})}
	a.mu.Lock()
	if a.broken != nil {
		a.mu.Unlock()
		return timerWait(ctx, d)
	}
	heap.Push(&a.pending, w)
	if a.armed.IsZero() || w.at.Before(a.armed) {
		a.arm(w.at)
	}
	a.mu.Unlock()
	select {
	case <-w.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// fired releases every waiter whose deadline has passed and sets the clock
// for the next one; the clock's reader calls it each time the clock fires.
func (a *alarm) fired() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = time.Time{}
	now := time.Now()
	for len(a.pending) > 0 && !a.pending[0].at.After(now) {
		close(heap.Pop(&a.pending).(deadline).done)
	}
	if len(a.pending) > 0 {
		a.arm(a.pending[0].at)
	}
}

// failLocked gives up on the clock: the pending waiters are released at
// their deadlines by Go timers, and later waits use Go timers. a.mu is held.
func (a *alarm) failLocked(err error) {
	a.broken = err
	a.armed = time.Time{}
	for _, w := range a.pending {
		time.AfterFunc(time.Until(w.at), func() { close(w.done) })
	}
	a.pending = nil
}

// arm sets the clock for at; a.mu is held.
func (a *alarm) arm(at time.Time) {
	// A deadline already passed still goes through the clock (1 ns), so
	// that waiters are only ever released by fired (or failLocked).
	if err := a.set(max(time.Until(at), time.Nanosecond)); err != nil {
		a.failLocked(fmt.Errorf("setting the clock: %w", err))
		return
	}
	a.armed = at
}

type deadline struct {
	at   time.Time
	done chan struct{} // closed at at
}

// deadlineHeap is a container/heap of deadlines, earliest first.
type deadlineHeap []deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)        { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
