package sandbox

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDelayIsNeverShort runs many overlapping delays, registered in an order
// that is not their deadlines' order, and checks that each one lasts at
// least its duration.
func TestDelayIsNeverShort(t *testing.T) {
	if runtime.GOOS == "linux" && sharedAlarm() == nil {
		t.Fatal("no timerfd alarm on Linux: the sandbox's latency falls back to Go timers, up to 1.1 ms late")
	}
	var wg sync.WaitGroup
	for i := range 200 {
		d := time.Duration(1+rand.IntN(30)) * time.Millisecond
		if i%7 == 0 {
			d += time.Duration(rand.IntN(1000)) * time.Microsecond
		}
		wg.Go(func() {
			start := time.Now()
			if !delay(t.Context(), d) {
				t.Errorf("delay(%s) returned false with a live context", d)
			}
			if got := time.Since(start); got < d {
				t.Errorf("delay(%s) returned after %s", d, got)
			}
		})
	}
	wg.Wait()
}

// TestDelayWakesAnEarlierDeadlineFirst checks that a short delay registered
// while a long one is pending re-arms the clock, and that a cancelled delay
// returns false at once.
func TestDelayWakesAnEarlierDeadlineFirst(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	long := make(chan bool, 1)
	go func() { long <- delay(ctx, time.Hour) }()
	// The long delay may not have registered yet; either order must work.
	if !within(t, 10*time.Second, func() bool { return delay(t.Context(), 5*time.Millisecond) }) {
		t.Fatal("short delay returned false")
	}
	select {
	case v := <-long:
		t.Fatalf("the hour-long delay returned (%v) with the short one", v)
	default:
	}
	cancel()
	select {
	case v := <-long:
		if v {
			t.Error("cancelled delay returned true")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled delay did not return")
	}
}

// TestAlarmFallsBackToTimersWhenItsClockFails: a waiter pending when the
// clock fails, and every later one, still wakes at its deadline.
func TestAlarmFallsBackToTimersWhenItsClockFails(t *testing.T) {
	var sets atomic.Int32
	a := &alarm{set: func(time.Duration) error {
		if sets.Add(1) == 1 {
			return nil // armed, but this clock never fires
		}
		return errors.New("clock gone")
	}}
	pending := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		a.wait(t.Context(), 20*time.Millisecond)
		pending <- time.Since(start)
	}()
	for sets.Load() == 0 {
		runtime.Gosched()
	}
	// An earlier deadline re-arms the clock, which fails.
	t0 := time.Now()
	if !a.wait(t.Context(), 2*time.Millisecond) || time.Since(t0) < 2*time.Millisecond {
		t.Error("the waiter whose arming failed did not wait its 2 ms")
	}
	var got time.Duration
	select {
	case got = <-pending:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter pending when the clock failed never woke")
	}
	if got < 20*time.Millisecond {
		t.Errorf("the waiter pending when the clock failed woke after %s, want ≥ 20 ms", got)
	}
	t0 = time.Now()
	if !a.wait(t.Context(), 3*time.Millisecond) || time.Since(t0) < 3*time.Millisecond {
		t.Error("a wait after the failure did not wait its 3 ms")
	}
	a.mu.Lock()
	broken := a.broken
	a.mu.Unlock()
	if broken == nil || sets.Load() != 2 {
		t.Errorf("broken = %v after %d sets; want the clock's error, after 2", broken, sets.Load())
	}
}

// BenchmarkDelay reports how late a 50 ms delay wakes, the sandbox's alarm
// against a plain Go timer, with one waiter at a time (an idle process, the
// timer's worst case) and with 64 overlapping ones (pandabench's S2).
func BenchmarkDelay(b *testing.B) {
	for _, impl := range []struct {
		name string
		wait func(context.Context, time.Duration) bool
	}{{"timer", timerWait}, {"alarm", delay}} {
		for _, waiters := range []int{1, 64} {
			b.Run(impl.name+"/waiters="+strconv.Itoa(waiters), func(b *testing.B) {
				const d = 50 * time.Millisecond
				var late atomic.Int64
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range waiters {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							start := time.Now()
							impl.wait(context.Background(), d)
							late.Add(int64(time.Since(start) - d))
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(late.Load())/float64(b.N)/1e3, "µs-late/op")
			})
		}
	}
}

// within runs f, failing the test if it takes longer than limit.
func within(t *testing.T, limit time.Duration, f func() bool) bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v
	case <-time.After(limit):
		t.Fatalf("still waiting after %s", limit)
		return false
	}
}
