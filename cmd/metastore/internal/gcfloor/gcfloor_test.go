package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

const mib = 1 << 20

func TestGCPercent(t *testing.T) {
	opts := Options{}
	opts.ensureDefaults()
	none := int64(math.MaxInt64)
	for _, tc := range []struct {
		name            string
		live, scan      uint64
		limit           int64
		rate            float64
		wantGoalAtLeast float64 // MiB
		wantGoalAtMost  float64
	}{
		// A busy server with a small live heap: goal about live + 64 MiB.
		{"busy small heap", 8 * mib, 9 * mib, none, 500 * mib, 70, 74},
		// A few hundred KiB live: the runtime's minimum heap scales with
		// GOGC, so the goal must not overshoot through it.
		{"busy tiny heap", mib / 2, mib, none, 500 * mib, 60, 68},
		// Allocating 16 MiB/s aims at one collection a second.
		{"light load", 8 * mib, 9 * mib, none, 16 * mib, 23, 26},
		// Idle: Go's default GOGC, garbage is not kept.
		{"idle", 8 * mib, 9 * mib, none, 0, 16, 18},
		// A large live heap already has more headroom than the floor.
		{"large heap", 200 * mib, 210 * mib, none, 2000 * mib, 400, 415},
		// GOMEMLIMIT=100MiB: the floor stops at half the limit.
		{"limit", 20 * mib, 21 * mib, 100 * mib, 500 * mib, 49, 51},
		// Live heap above half the limit: no floor at all.
		{"limit tight", 60 * mib, 61 * mib, 100 * mib, 500 * mib, 120, 122},
	} {
		p := gcPercent(opts, tc.live, tc.scan, tc.limit, tc.rate)
		goal := max(float64(tc.live)+float64(tc.scan)*float64(p)/100, minHeapBytes*float64(p)/100) / mib
		if goal < tc.wantGoalAtLeast || goal > tc.wantGoalAtMost {
			t.Errorf("%s: GOGC %d gives a heap goal of %.1f MiB, want %.0f–%.0f", tc.name, p, goal, tc.wantGoalAtLeast, tc.wantGoalAtMost)
		}
		if p < opts.GCPercent || p > maxPercent {
			t.Errorf("%s: GOGC %d outside [%d, %d]", tc.name, p, opts.GCPercent, maxPercent)
		}
	}
}

var sink []byte

// floorGoal is the heap goal the GOGC in force gives (the runtime's
// gcPercent goal, before any memory limit) in bytes, and that GOGC.
func floorGoal() (goal float64, percent int) {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: metricLive}, {Name: metricStacks}, {Name: metricGlobals}}
	metrics.Read(s)
	p := float64(s[0].Value.Uint64())
	live := float64(s[1].Value.Uint64())
	scan := live + float64(s[2].Value.Uint64()+s[3].Value.Uint64())
	return max(live+scan*p/100, minHeapBytes*p/100) - live, int(p)
}

func gcCount() uint32 {
	var st debug.GCStats
	debug.ReadGCStats(&st)
	return uint32(st.NumGC)
}

// churn allocates about n bytes of short-lived garbage in 4 KiB pieces.
func churn(n int) {
	for i := 0; i < n/4096; i++ {
		sink = make([]byte, 4096)
	}
}

// TestTunerRaisesTheFloorUnderLoad runs the real Tuner: while the test
// allocates fast the heap goal rises to about live + MaxFloor, so 256 MiB
// of garbage takes a dozen collections at most (at GOGC=100 with this
// small live heap, dozens), and once allocation stops GOGC returns to 100.
func TestTunerRaisesTheFloorUnderLoad(t *testing.T) {
	tu := Start(Options{MaxFloor: 32 * mib, Tick: 50 * time.Millisecond, Spacing: time.Second, IdleCollectEvery: time.Hour})
	defer tu.Stop()
	// Keep allocating until the Tuner has sampled the rate a few times.
	deadline := time.Now().Add(10 * time.Second)
	for g, _ := floorGoal(); g < 24*mib; g, _ = floorGoal() {
		if time.Now().After(deadline) {
			t.Fatalf("heap goal live + %.0f MiB after 10 s of allocation, want ≥ live + 24", g/mib)
		}
		churn(4 * mib)
	}
	base := gcCount()
	churn(256 * mib)
	if n := gcCount() - base; n > 14 {
		t.Errorf("%d collections for 256 MiB of garbage with a 32 MiB floor, want ≤ 14", n)
	}
	// Idle: the rate halves every 50 ms tick, the floor goes.
	deadline = time.Now().Add(10 * time.Second)
	for _, p := floorGoal(); p != 100; _, p = floorGoal() {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d after 10 s idle, want 100", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTunerCollectsWhenIdle: the memory a busy period leaves in the heap
// is returned by the Tuner once the process goes idle, once.
func TestTunerCollectsWhenIdle(t *testing.T) {
	var onIdle atomic.Int64
	tu := Start(Options{
		MaxFloor: 128 * mib, Tick: 50 * time.Millisecond, Spacing: time.Second, IdleCollectEvery: time.Hour,
		OnIdle: func() { onIdle.Add(1) },
	})
	defer tu.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for g, _ := floorGoal(); g < 100*mib; g, _ = floorGoal() {
		if time.Now().After(deadline) {
			t.Fatalf("heap goal live + %.0f MiB after 10 s of allocation, want ≥ live + 100", g/mib)
		}
		churn(4 * mib)
	}
	runtime.GC()
	churn(64 * mib) // well under the floor: no collection frees it
	deadline = time.Now().Add(10 * time.Second)
	for tu.idleGCs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no idle collection within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := tu.idleGCs.Load(); n != 1 {
		t.Errorf("%d idle collections, want 1", n)
	}
	if n := onIdle.Load(); n != 1 {
		t.Errorf("OnIdle ran %d times, want 1", n)
	}
	s := []metrics.Sample{{Name: metricFree}}
	metrics.Read(s)
	if free := s[0].Value.Uint64(); free > 16*mib {
		t.Errorf("%d MiB of free heap pages kept after the idle collection, want ≤ 16", free/mib)
	}
}

// TestTunerYieldsToMemoryLimit: with GOMEMLIMIT at 40 MiB the floor keeps
// the heap goal under half of it.
func TestTunerYieldsToMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(40 * mib)
	defer debug.SetMemoryLimit(prev)
	tu := Start(Options{Tick: 50 * time.Millisecond})
	defer tu.Stop()
	for i := 0; i < 5; i++ {
		churn(64 * mib)
		// Let the Tuner see the heap of the last collection; the rate it
		// measured is still high.
		time.Sleep(60 * time.Millisecond)
		s := []metrics.Sample{{Name: metricLive}}
		metrics.Read(s)
		live := float64(s[0].Value.Uint64())
		if g, p := floorGoal(); p > 100 && live+g > 21*mib {
			t.Fatalf("GOGC %d: heap goal %.0f MiB with a 40 MiB limit, want ≤ 21", p, (live+g)/mib)
		}
	}
}

func TestStopRestoresGOGC(t *testing.T) {
	prev := debug.SetGCPercent(150)
	defer debug.SetGCPercent(prev)
	tu := Start(Options{Tick: time.Millisecond})
	churn(16 * mib)
	tu.Stop()
	tu.Stop() // idempotent
	if p := debug.SetGCPercent(150); p != 150 {
		t.Fatalf("GOGC after Stop %d, want 150", p)
	}
}
