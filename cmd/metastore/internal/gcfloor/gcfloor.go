package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a Tuner. Zero values take the defaults.
type Options struct {
	// MaxFloor is the most headroom the floor keeps above the live heap.
	// Default 64 MiB.
	MaxFloor int64
	// Spacing is the time between collections the floor aims for while
	// the server allocates: the headroom is what it allocates in that long,
	// up to MaxFloor. Default 1 s.
	Spacing time.Duration
	// Tick is how often the allocation rate is sampled between
	// collections; a rate no longer seen halves every Tick. Default 250 ms.
	Tick time.Duration
	// IdleCollectEvery is the shortest time between two idle collections
	// (see Tuner). Default 10 s.
	IdleCollectEvery time.Duration
	// OnIdle, if set, runs on the Tuner's goroutine after each idle
	// collection; main returns the C heap's free pages there.
	OnIdle func()
	// GCPercent is the GOGC the Tuner never goes below, and restores on
	// Stop. Default 100, Go's own default.
	GCPercent int
}

func (o *Options) ensureDefaults() {
	if o.MaxFloor <= 0 {
		o.MaxFloor = 64 << 20
	}
	if o.Spacing <= 0 {
		o.Spacing = time.Second
	}
	if o.Tick <= 0 {
		o.Tick = 250 * time.Millisecond
	}
	if o.GCPercent <= 0 {
		o.GCPercent = 100
	}
	if o.IdleCollectEvery <= 0 {
		o.IdleCollectEvery = 10 * time.Second
	}
}

// Runtime metrics the Tuner reads (Go 1.21+; none stops the world).
const (
	metricLive    = "/gc/heap/live:bytes"
	metricAllocs  = "/gc/heap/allocs:bytes"
	metricStacks  = "/gc/scan/stack:bytes"
	metricGlobals = "/gc/scan/globals:bytes"
	metricObjects = "/memory/classes/heap/objects:bytes"
	metricUnused  = "/memory/classes/heap/unused:bytes"
	metricFree    = "/memory/classes/heap/free:bytes"
)

// minHeapBytes is the Go runtime's minimum heap goal at GOGC=100; the
// runtime scales it by GOGC/100 (mgcpacer.go, defaultHeapMinimum).
const minHeapBytes = 4 << 20

// maxPercent bounds the GOGC the Tuner sets; with a live heap of a few
// hundred KiB the floor would otherwise ask for absurd values.
const maxPercent = 10000

// Tuner adjusts GOGC in the background; see the package documentation.
//
// When the server goes idle (allocating less than MaxFloor/16 a second)
// while the heap holds more than live + MaxFloor/4 (the garbage of a busy
// period, the free pages under the floor and GOGC's own headroom, which an
// idle process does not need), the Tuner returns it: debug.FreeOSMemory (a
// collection, then every free page back to the OS), then Options.OnIdle.
// Left alone it would stay: an idle process allocates too little to reach
// the lowered goal, and the runtime returns free pages only in the wake of
// a collection, the next forced one two minutes later. It does so at most
// once per IdleCollectEvery.
type Tuner struct {
	opts    Options
	prev    int           // GOGC before Start, restored by Stop
	gcDone  chan struct{} // a collection finished (cap 1)
	stopc   chan struct{}
	donec   chan struct{}
	stopped atomic.Bool
	once    sync.Once

	// Owned by the run goroutine.
	samples []metrics.Sample
	allocs  uint64    // cumulative allocation at the last rate sample
	sampled time.Time // when it was taken
	rate    float64   // bytes allocated per second, decaying
	percent int       // GOGC in force
	forced  time.Time // last idle collection

	idleGCs atomic.Int64 // idle collections run, for tests
}

// Start starts a Tuner. Stop it to restore the GOGC it found.
func Start(opts Options) *Tuner {
	opts.ensureDefaults()
	t := &Tuner{
		opts:   opts,
		gcDone: make(chan struct{}, 1),
		stopc:  make(chan struct{}),
		donec:  make(chan struct{}),
		samples: []metrics.Sample{
			{Name: metricLive}, {Name: metricAllocs}, {Name: metricStacks}, {Name: metricGlobals},
			{Name: metricObjects}, {Name: metricUnused}, {Name: metricFree},
		},
	}
	t.percent = opts.GCPercent
	t.prev = debug.SetGCPercent(opts.GCPercent)
	metrics.Read(t.samples)
	t.allocs, t.sampled = t.samples[1].Value.Uint64(), time.Now()
	t.armGCHook()
	go t.run()
	return t
}

// Stop ends the tuning and restores the GOGC in force before Start.
func (t *Tuner) Stop() {
	t.once.Do(func() {
		t.stopped.Store(true)
		close(t.stopc)
		<-t.donec
		debug.SetGCPercent(t.prev)
	})
}

// gcSentinel is garbage on purpose: its finalizer runs after the
// collection that found it unreachable, which is how the Tuner learns
// that a collection ended (Go has no callback for it).
type gcSentinel struct{ t *Tuner }

func (t *Tuner) armGCHook() {
	runtime.SetFinalizer(&gcSentinel{t: t}, func(s *gcSentinel) {
		if s.t.stopped.Load() {
			return
		}
		select {
		case s.t.gcDone <- struct{}{}:
		default:
		}
		s.t.armGCHook()
	})
}

func (t *Tuner) run() {
	defer close(t.donec)
	tick := time.NewTicker(t.opts.Tick)
	defer tick.Stop()
	for {
		select {
		case <-t.stopc:
			return
		case <-tick.C:
		case <-t.gcDone:
		}
		t.update(time.Now())
	}
}

// update reads the heap and the allocation rate and sets GOGC.
func (t *Tuner) update(now time.Time) {
	metrics.Read(t.samples)
	live, allocs := t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64()
	scan := live + t.samples[2].Value.Uint64() + t.samples[3].Value.Uint64()
	// Samples closer than a few ms apart (a collection right after a
	// tick) give a noisy rate; the next tick takes it.
	if dt := now.Sub(t.sampled); dt >= t.opts.Tick/8 {
		rate := float64(allocs-t.allocs) / dt.Seconds()
		decayed := t.rate * math.Exp2(-dt.Seconds()/t.opts.Tick.Seconds())
		t.rate = max(rate, decayed)
		t.allocs, t.sampled = allocs, now
	}
	p := gcPercent(t.opts, live, scan, debug.SetMemoryLimit(-1), t.rate)
	if p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
	// Heap memory the process holds: objects (live or not yet swept),
	// unused parts of spans, free pages not yet returned.
	held := t.samples[4].Value.Uint64() + t.samples[5].Value.Uint64() + t.samples[6].Value.Uint64()
	idle := t.rate*t.opts.Spacing.Seconds() < float64(t.opts.MaxFloor)/16
	if idle && p == t.opts.GCPercent && held > live+uint64(t.opts.MaxFloor)/4 &&
		now.Sub(t.forced) >= t.opts.IdleCollectEvery {
		t.forced = now
		t.idleGCs.Add(1)
		debug.FreeOSMemory()
		if t.opts.OnIdle != nil {
			t.opts.OnIdle()
		}
	}
}

// gcPercent is the GOGC that puts the runtime's heap goal at live +
// headroom, never below opts.GCPercent. live is the heap marked live by
// the last collection; scan is what GOGC is a percentage of (live heap,
// goroutine stacks and globals); limit is the memory limit (math.MaxInt64
// when unset); rate is bytes allocated per second.
func gcPercent(opts Options, live, scan uint64, limit int64, rate float64) int {
	headroom := min(float64(opts.MaxFloor), rate*opts.Spacing.Seconds())
	if limit < math.MaxInt64 {
		// Near the memory limit the runtime collects ever more often to
		// stay under it; a floor there would only bring that on sooner.
		headroom = min(headroom, float64(limit)/2-float64(live))
	}
	if headroom <= 0 {
		return opts.GCPercent
	}
	// The runtime's goal for GOGC=p is
	// max(live + scan×p/100, minHeapBytes×p/100).
	p := float64(maxPercent)
	if scan > 0 {
		p = headroom * 100 / float64(scan)
	}
	p = min(p, (float64(live)+headroom)*100/minHeapBytes, maxPercent)
	return max(opts.GCPercent, int(p))
}
