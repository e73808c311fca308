package policy

import (
	"bufio"
	"context"
	"math"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// rssBytes is the process's resident set (the server runs in the test
// process), or 0 where /proc is missing.
func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)*99/100]
}

// TestSandboxHostileLoopIsolation: hostile modules of every class (a
// loop, a call fan-out, deep recursion, a table bulk loop, host calls
// growing with their argument, loops whose body is 80,000 instructions or
// calls an 80,000-instruction leaf, a log flood) are called in turn in a
// loop, on their own prefixes, while another prefix is served:
// its p99 stays within a few ms of its baseline, every hostile call ends
// within 2× its deadline plus scheduling, and the process's RSS stays
// under the policies' configured memory plus a documented overhead.
func TestSandboxHostileLoopIsolation(t *testing.T) {
	skipUnderRace(t)
	dir := t.TempDir()
	mods := wasmtest.Modules()
	const deadline = 5 * time.Millisecond
	names := []string{"loop", "recursion", "deep-recursion", "table-fill-loop", "random-loop",
		"wide-loop-small", "leaf-loop-small", "fanout-noloop", "log-flood", "poll-subs", "fdwrite-iovecs"}
	var pols []config.Policy
	for _, name := range names {
		p := module(t, dir, name, mods[name], []string{"authorize"}, nil)
		p.Match.Prefixes = []string{"/" + name + "/"}
		p.Limits.AuthorizeTimeout = deadline
		p.Limits.Instances = 2
		pols = append(pols, p)
	}
	rss0 := rssBytes()
	m := start(t, pols, nil)
	c := m.Client(t)
	ctx := context.Background()

	measure := func(n int) []time.Duration {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			start := time.Now()
			if _, err := c.Put(ctx, "/other/k", "v"); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	measure(50) // warm up
	base := p99(measure(400))
	rssIdle := rssBytes()

	// One client calls the hostile modules in turn, in a loop, as fast
	// as it can, while the RSS is sampled.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var worst time.Duration
	var worstName string
	var hostile atomic.Int64
	var rssMax atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		hc := m.Client(t)
		for i := 0; !stop.Load(); i++ {
			name := names[i%len(names)]
			start := time.Now()
			_, err := hc.Put(ctx, "/"+name+"/k", "v")
			took := time.Since(start)
			if err == nil {
				t.Errorf("%s: allowed", name)
			}
			hostile.Add(1)
			if took > worst {
				worst, worstName = took, name
			}
		}
	}()
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if r := rssBytes(); r > rssMax.Load() {
				rssMax.Store(r)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	// A few ms over the baseline (measured on 2 shared cores: +1.5 to
	// +2 ms); -race slows every step several times.
	slack, e2e := 5*time.Millisecond, 2*deadline+20*time.Millisecond // the Put's own round trip
	if framework.RaceEnabled() {
		slack, e2e = 5*slack, 5*e2e
	}
	// One p99 of 400 Puts on two shared cores can catch a hiccup of the
	// machine itself (CI saw 11.6 ms against 3.8 once, then 3 passes in
	// a row): the bound must hold in one of three measurements. Hostile
	// policies that really slowed the other prefix would slow all three.
	under := p99(measure(400))
	for try := 1; try < 3 && under > base+slack; try++ {
		under = min(under, p99(measure(400)))
	}
	stop.Store(true)
	wg.Wait()
	rssLoaded := rssMax.Load()

	// What the policies may hold: instances × (memory + tables + 4 ×
	// stack), as wasmhost.Limits counts it.
	var limit int64
	for range names {
		limit += 2 * (16<<20 + 8*100_000*8 + 4*2<<20)
	}
	t.Logf("other prefix p99: %v idle, %v while %d hostile modules are called in a loop (%d hostile calls, worst %v by %s against %v)",
		base, under, len(names), hostile.Load(), worst, worstName, deadline)
	t.Logf("RSS: %d MiB before start, %d MiB idle, at most %d MiB under hostile load; policies' limit %d MiB",
		rss0>>20, rssIdle>>20, rssLoaded>>20, limit>>20)
	if under > base+slack {
		t.Errorf("other prefix p99 %v under hostile load, baseline %v", under, base)
	}
	if worst > e2e {
		t.Errorf("worst hostile Put %v (%s) against a %v deadline", worst, worstName, deadline)
	}
	// The overhead: the Go runtime, the store, compiled code (~1 MB a
	// fixture) and the test's own clients: 256 MiB.
	if rss0 > 0 && rssLoaded > rssIdle+limit+256<<20 {
		t.Errorf("RSS %d MiB under hostile load, over idle %d MiB + limits %d MiB + 256 MiB", rssLoaded>>20, rssIdle>>20, limit>>20)
	}
}

// TestSandboxConcurrentHostileIsolation: one client per hostile module,
// eleven at once on a server with fewer cores, each calling its policy in
// a loop so that every call burns its whole deadline of CPU. Go cannot
// preempt a guest, so without a bound they held every P and another
// prefix's p99 went from ~2 to ~24 ms; the host's CPU slots leave one P to
// everything else (wasmhost.Options.GuestSlots), so the p99 of its reads
// stays within a few ms of the baseline. Idle and hostile phases
// alternate, so that the load of whatever else runs on the machine weighs
// on both alike. The hostile policies are throttled, and that is counted.
func TestSandboxConcurrentHostileIsolation(t *testing.T) {
	skipUnderRace(t)
	dir := t.TempDir()
	mods := wasmtest.Modules()
	const deadline = 5 * time.Millisecond
	names := []string{"loop", "recursion", "deep-recursion", "table-fill-loop", "random-loop",
		"wide-loop-small", "leaf-loop-small", "fanout-noloop", "log-flood", "poll-subs", "fdwrite-iovecs"}
	var pols []config.Policy
	for _, name := range names {
		p := module(t, dir, name, mods[name], []string{"authorize"}, nil)
		p.Match.Prefixes = []string{"/" + name + "/"}
		p.Limits.AuthorizeTimeout = deadline
		p.Limits.Instances = 2
		pols = append(pols, p)
	}
	m := start(t, pols, nil)
	c := m.Client(t)
	ctx := context.Background()
	// Reads: a write's fsync would add the disk's noise to what is
	// measured here, the CPU left to other prefixes.
	if _, err := c.Put(ctx, "/other/k", "v"); err != nil {
		t.Fatal(err)
	}
	measure := func(n int, into *[]time.Duration) {
		for i := 0; i < n; i++ {
			start := time.Now()
			if _, err := c.Get(ctx, "/other/k"); err != nil {
				t.Fatal(err)
			}
			*into = append(*into, time.Since(start))
		}
	}
	var warm, idle, loaded []time.Duration
	measure(50, &warm)
	clients := make([]*clientv3.Client, len(names))
	for i := range names {
		clients[i] = m.Client(t)
	}
	var hostile atomic.Int64
	var sched []time.Duration
	for round := 0; round < 3; round++ {
		measure(200, &idle)
		var stop atomic.Bool
		var wg sync.WaitGroup
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					if _, err := clients[i].Put(ctx, "/"+name+"/k", "v"); err == nil {
						t.Errorf("%s: allowed", name)
						return
					}
					hostile.Add(1)
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		before := schedLatencies()
		measure(200, &loaded)
		sched = append(sched, schedP99(before, schedLatencies()))
		stop.Store(true)
		wg.Wait()
	}
	base, under := p99(idle), p99(loaded)
	t.Logf("other prefix p99: %v idle, %v while %d clients call hostile modules in a loop at once (%d hostile calls)",
		base, under, len(names), hostile.Load())
	// The server runs in this process: how long its runnable goroutines
	// waited for a P tells what the guests took from what the OS took.
	t.Logf("Go scheduling latency p99 in the hostile phases: %v", sched)
	slack := 5 * time.Millisecond
	if framework.RaceEnabled() {
		slack *= 5
	}
	if under > base+slack {
		t.Errorf("other prefix p99 %v under concurrent hostile load, baseline %v", under, base)
	}
	// Every policy whose calls ran to their deadline is throttled (not
	// deep-recursion: it fails at the stack limit first).
	body := scrape(t, m)
	throttled := 0
	for _, name := range names {
		timedOut := strings.Contains(body, `metastore_policy_errors_total{hook="authorize",kind="timeout",policy="`+name+`"}`)
		isThrottled := strings.Contains(body, `metastore_policy_throttled_total{policy="`+name+`"}`)
		if isThrottled {
			throttled++
		}
		if timedOut && !isThrottled {
			t.Errorf("%s timed out but was not throttled", name)
		}
	}
	if throttled < len(names)-2 || !strings.Contains(body, "metastore_policy_cpu_waits_total{") {
		t.Errorf("%d of %d hostile policies counted as throttled; cpu waits counted: %v", throttled, len(names),
			strings.Contains(body, "metastore_policy_cpu_waits_total{"))
	}
}

// schedLatencies is the Go scheduler's histogram of how long goroutines
// waited, runnable, for a P.
func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	return &metrics.Float64Histogram{Buckets: h.Buckets, Counts: slices.Clone(h.Counts)}
}

// schedP99 is the p99 (a bucket's upper bound) of the waits between two
// readings.
func schedP99(a, b *metrics.Float64Histogram) time.Duration {
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	var acc uint64
	for i := range b.Counts {
		acc += b.Counts[i] - a.Counts[i]
		if acc*100 >= total*99 && acc > 0 {
			hi := b.Buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = b.Buckets[i]
			}
			return time.Duration(hi * float64(time.Second))
		}
	}
	return 0
}

// skipUnderRace skips a latency-isolation test in a -race build: there the
// race detector's cost in the test's own clients, and the rest of the suite
// running beside it, are what gets measured. `make test` runs these tests
// again without -race, alone, after the parallel suite (test-isolation).
func skipUnderRace(t *testing.T) {
	t.Helper()
	if framework.RaceEnabled() {
		t.Skip("latency isolation is asserted without -race (make test-isolation)")
	}
}
