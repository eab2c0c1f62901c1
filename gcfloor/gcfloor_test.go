package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name  string
		base  int
		floor uint64
		heap  Heap
		want  int
	}{
		{"no cycle yet", 100, 24 * mb, Heap{}, 100},
		{"small heap raised to the floor", 100, 24 * mb, Heap{Live: 4 * mb}, 500},
		{"stacks and globals count", 100, 24 * mb, Heap{Live: 3 * mb, Stacks: 1 * mb, Globals: mb / 2}, 466},
		{"default goal already at the floor", 100, 24 * mb, Heap{Live: 12 * mb}, 100},
		{"default goal above the floor: base", 100, 24 * mb, Heap{Live: 6 * mb, Stacks: 14 * mb}, 100},
		{"stacks push the default goal near the floor", 100, 24 * mb, Heap{Live: 6 * mb, Stacks: 8 * mb}, 128},
		{"live above the floor: base", 100, 24 * mb, Heap{Live: 40 * mb}, 100},
		{"the 4 MiB minimum goal bounds it", 100, 24 * mb, Heap{Live: 2 * mb}, 600},
		{"MaxPercent bounds it", 100, 256 * mb, Heap{Live: 4 * mb}, MaxPercent},
		{"a higher base is kept", 800, 24 * mb, Heap{Live: 4 * mb}, 800},
		{"a lower base is raised", 50, 24 * mb, Heap{Live: 8 * mb}, 200},
	} {
		if got := Percent(tc.base, tc.floor, tc.heap); got != tc.want {
			t.Errorf("%s: Percent(%d, %d, %+v) = %d, want %d", tc.name, tc.base, tc.floor, tc.heap, got, tc.want)
		}
	}
}

// gcCycles returns the number of completed collections.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// churn allocates total bytes of garbage in 4 kB pieces.
func churn(total int) {
	for i := 0; i < total/4096; i++ {
		sink = make([]byte, 4096)
	}
	sink = nil
}

// restoreGOGC puts back the GOGC in force when the test started.
func restoreGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	debug.SetGCPercent(prev)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
}

// TestFloorCutsCollections is what the package is for: with a small live
// heap, the same allocation runs far fewer collections under a floor.
func TestFloorCutsCollections(t *testing.T) {
	restoreGOGC(t)
	debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64) // a GOMEMLIMIT would cap the goal
	t.Cleanup(func() { debug.SetMemoryLimit(limit) })
	const volume = 512 << 20
	runtime.GC()
	before := gcCycles()
	churn(volume)
	without := gcCycles() - before

	tuner := Start(64 << 20)
	if tuner == nil {
		t.Fatal("Start returned nil with GOGC=100")
	}
	defer tuner.Stop()
	runtime.GC() // the first tuning happens at the end of a cycle
	runtime.GC() // (the finalizer runs after the cycle that found the sentinel)
	waitFor(t, func() bool { return tuner.Percent() > 100 })
	before = gcCycles()
	churn(volume)
	with := gcCycles() - before

	t.Logf("%d MB of garbage: %d collections at GOGC=100, %d with a 64 MiB floor (GOGC %d: the goal is at least 40 MiB)", volume>>20, without, with, tuner.Percent())
	if with*4 > without {
		t.Errorf("with a 64 MB floor: %d collections, want at most a quarter of the %d without", with, without)
	}
	if got := currentPercent(); got != tuner.Percent() {
		t.Errorf("runtime GOGC %d, tuner says %d", got, tuner.Percent())
	}

	tuner.Stop()
	if got := currentPercent(); got != 100 {
		t.Errorf("after Stop GOGC = %d, want the base 100", got)
	}
	if got := tuner.Percent(); got != 100 {
		t.Errorf("after Stop Percent() = %d, want the base 100", got)
	}
	// Stopped means stopped: later collections leave GOGC alone.
	debug.SetGCPercent(150)
	tunings := tuner.tunings.Load()
	for range 5 {
		runtime.GC()
	}
	if got := currentPercent(); got != 150 || tuner.tunings.Load() != tunings {
		t.Errorf("after Stop and 5 collections GOGC = %d (want 150), %d more tunings (want 0)", got, tuner.tunings.Load()-tunings)
	}
}

// TestLargeHeapKeepsBase: a heap whose default goal is above the floor
// (8 MB live, so about 16 MB) is collected as without a tuner, although the
// live heap itself is under the floor.
func TestLargeHeapKeepsBase(t *testing.T) {
	restoreGOGC(t)
	debug.SetGCPercent(100)
	live := make([][]byte, 0, 64)
	for range 64 {
		live = append(live, make([]byte, 128<<10)) // 8 MB kept
	}
	tuner := Start(12 << 20)
	defer tuner.Stop()
	waitFor(t, func() bool { return tuner.tunings.Load() >= 2 })
	if got := tuner.Percent(); got != 100 {
		t.Errorf("with 8 MB live and a 12 MiB floor GOGC = %d, want 100", got)
	}
	runtime.KeepAlive(live)
}

func TestInactive(t *testing.T) {
	restoreGOGC(t)
	if Start(0) != nil {
		t.Error("Start(0) returned a tuner")
	}
	debug.SetGCPercent(-1)
	if Start(24<<20) != nil {
		t.Error("Start with GOGC=off returned a tuner")
	}
	var nilTuner *Tuner
	nilTuner.Stop()
	if got := nilTuner.Percent(); got != -1 {
		t.Errorf("nil tuner Percent with GOGC=off = %d, want -1", got)
	}
	debug.SetGCPercent(100)
	var zero Tuner
	zero.Stop()
	if got := currentPercent(); got != 100 {
		t.Errorf("Stop of a zero Tuner set GOGC to %d, want it left at 100", got)
	}
	if got := zero.Percent(); got != 100 {
		t.Errorf("zero Tuner Percent = %d, want the GOGC in force, 100", got)
	}
}

// waitFor polls cond, running collections so that finalizers get their turn.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		runtime.GC()
		runtime.Gosched()
	}
	t.Fatal("condition not reached after 200 collections")
}
