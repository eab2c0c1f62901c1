// Package gcfloor keeps the garbage collector from running often while the
// live heap is small, by raising GOGC so that the heap goal reaches a floor.
//
// Go sets the heap goal at the end of every cycle,
//
//	goal = live + (live + stacks + globals) × GOGC/100, at least 4 MiB × GOGC/100
//
// (live: the heap marked live by the cycle; stacks and globals: the bytes of
// goroutine stacks and globals it scanned), and starts the next cycle at a
// trigger somewhat below the goal (70–95 % of the way from live to goal). A
// consumer whose working set is a few MB therefore collects every few MB of
// allocation: at C = 16 the pandabridge consumer allocates about 15 kB per
// event and, at 10,000 events/s, runs dozens of cycles a second. A Tuner
// re-computes GOGC at the end of every cycle so that the next goal is the
// floor:
//
//	GOGC = max(base, min(MaxPercent, floor × 100 / 4 MiB, (floor − live) × 100 / (live + stacks + globals)))
//
// where base is the GOGC in force when Start was called (100 unless the GOGC
// environment variable says otherwise). The inputs come from runtime/metrics
// ("/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes":
// the pacer's own, read without stopping the world); the middle bound keeps
// the runtime's 4 MiB × GOGC/100 minimum goal from overshooting the floor.
// MaxPercent (1000) caps the rest: with a floor above 40 MiB, a process with
// little live heap gets a goal between 40 MiB (the minimum goal at GOGC
// 1000) and the floor.
//
// Once the default goal exceeds the floor the formula gives less than base,
// so a large heap is collected as without a Tuner, from the cycle after the
// one in which it grew (GOGC is adjusted after each cycle, on the runtime's
// finalizer goroutine): the floor costs at most the difference between the
// floor and the default goal, and only while the heap is small. GOMEMLIMIT
// keeps working, because the runtime collects when the memory limit is
// reached whatever GOGC says: set it too.
//
// This is the heap-floor idea of bytedance/gopkg's util/gctuner, restricted to
// raising GOGC and written against runtime/metrics instead of ReadMemStats.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// MaxPercent bounds the GOGC a Tuner sets: with a very small live heap (a
// process that has just started) the floor alone would ask for thousands.
const MaxPercent = 1000

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with GOGC. (GOEXPERIMENT=heapminimum512kib lowers it, which makes the bound
// below merely conservative.)
const heapMinimum = 4 << 20

const (
	metricLive    = "/gc/heap/live:bytes"
	metricStacks  = "/gc/scan/stack:bytes"
	metricGlobals = "/gc/scan/globals:bytes"
	metricGOGC    = "/gc/gogc:percent"
)

// Heap is what the garbage collector's pacer knew at the end of a cycle.
type Heap struct {
	Live    uint64 // heap bytes marked live
	Stacks  uint64 // goroutine stack bytes scanned
	Globals uint64 // global variable bytes scanned
}

// Tuner adjusts GOGC after every garbage collection until Stop. A nil
// *Tuner and the zero value are inactive: Stop does nothing and Percent
// reports the GOGC in force.
type Tuner struct {
	floor uint64 // 0: inactive
	base  int

	mu      sync.Mutex // orders tune's SetGCPercent against Stop's
	stopped bool
	percent atomic.Int64
	tunings atomic.Uint64    // collections seen, for tests
	samples []metrics.Sample // used only by the finalizer goroutine, one call at a time
}

// sentinel is the object whose finalizer runs once per collection. It holds a
// pointer, so it is never placed by the tiny allocator, whose objects'
// finalizers may never run.
type sentinel struct{ t *Tuner }

// Start installs a Tuner with the given floor and returns it. Only
// one Tuner should run per process: two would overwrite each other's GOGC.
//
// Start returns nil, and changes nothing, when floor is 0 or the garbage
// collector is off (GOGC=off): there is nothing to raise.
func Start(floor Size) *Tuner {
	base := currentPercent()
	if floor == 0 || base < 0 {
		return nil
	}
	t := &Tuner{floor: uint64(floor), base: base, samples: []metrics.Sample{{Name: metricLive}, {Name: metricStacks}, {Name: metricGlobals}}}
	t.percent.Store(int64(base))
	runtime.SetFinalizer(&sentinel{t: t}, onGC)
	return t
}

// onGC runs on the runtime's finalizer goroutine after each collection in
// which the sentinel was found unreachable, and re-arms itself until Stop.
func onGC(s *sentinel) {
	if s.t.tune() {
		runtime.SetFinalizer(s, onGC)
	}
}

// tune sets GOGC for the heap the last cycle left, unless stopped; it
// reports whether the Tuner is still running.
func (t *Tuner) tune() bool {
	metrics.Read(t.samples)
	var v [3]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	p := Percent(t.base, t.floor, Heap{Live: v[0], Stacks: v[1], Globals: v[2]})
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.tunings.Add(1)
	if int64(p) != t.percent.Load() {
		t.percent.Store(int64(p))
		debug.SetGCPercent(p)
	}
	return true
}

// Percent is the GOGC a Tuner sets after a cycle that left h: the one that
// makes the next heap goal the floor, between base and the lesser of
// MaxPercent and floor × 100 / 4 MiB. A live heap of 0 (no cycle has ended
// yet) gives base.
func Percent(base int, floor uint64, h Heap) int {
	if h.Live == 0 || h.Live >= floor {
		return base
	}
	need := (floor - h.Live) * 100 / (h.Live + h.Stacks + h.Globals)
	need = min(need, MaxPercent, floor*100/heapMinimum)
	return max(base, int(need))
}

// Percent returns the GOGC the Tuner last set (its base until the first
// collection, and again after Stop), or the GOGC in force when t is nil or
// inactive.
func (t *Tuner) Percent() int {
	if t == nil || t.floor == 0 {
		return currentPercent()
	}
	return int(t.percent.Load())
}

// Stop ends the tuning and restores the base GOGC; once it has returned the
// Tuner changes GOGC no more. Stop may be called more than once.
func (t *Tuner) Stop() {
	if t == nil || t.floor == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	t.percent.Store(int64(t.base))
	debug.SetGCPercent(t.base)
}

// currentPercent reads GOGC without changing it (-1 when off).
func currentPercent() int {
	s := []metrics.Sample{{Name: metricGOGC}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	p := s[0].Value.Uint64()
	if p > 1<<31 { // "off" is reported as the maximal value, not -1
		return -1
	}
	return int(p)
}
