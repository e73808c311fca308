package server

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock fires After channels only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	added   chan struct{}
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(0, 0), added: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	c.mu.Unlock()
	c.added <- struct{}{}
	return ch
}

// waitSleep waits until the loop sleeps in After.
func (c *fakeClock) waitSleep(t *testing.T) {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(5 * time.Second):
		t.Fatal("loop never slept")
	}
}

// tick moves time on by d, waking the sleepers that are due.
func (c *fakeClock) tick(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
	c.mu.Unlock()
}

type compactRecorder struct {
	mu   sync.Mutex
	revs []int64
}

func (r *compactRecorder) compact(_ context.Context, rev int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revs = append(r.revs, rev)
	return nil
}

func (r *compactRecorder) get() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.revs...)
}

func TestAutoCompactPeriodic(t *testing.T) {
	clk := newFakeClock()
	var rev atomic.Int64
	rec := &compactRecorder{}
	ac := &autoCompactor{period: time.Hour, rev: rev.Load, compact: rec.compact, clock: clk, lg: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ac.run(ctx); close(done) }()

	// The revision grows by 10 every 6 minutes (a tenth of the period); it
	// changes only while the loop sleeps, so every sample is deterministic.
	for i := 1; i <= 30; i++ {
		clk.waitSleep(t)
		rev.Store(int64(i * 10))
		clk.tick(6 * time.Minute)
	}
	clk.waitSleep(t)
	cancel()
	<-done
	// As etcd: once a period has passed it compacts to the revision sampled
	// one period earlier, skipping revision 0 (t=60m would give 0, so the first
	// compaction is at t=66m to 10), then hourly to the revision an hour
	// before (t=126m → 110).
	got := rec.get()
	want := []int64{10, 110}
	if !slices.Equal(got, want) {
		t.Fatalf("compactions = %v, want %v", got, want)
	}
}

func TestAutoCompactRevision(t *testing.T) {
	clk := newFakeClock()
	var rev atomic.Int64
	rec := &compactRecorder{}
	ac := &autoCompactor{retention: 100, rev: rev.Load, compact: rec.compact, clock: clk, lg: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ac.run(ctx); close(done) }()

	for _, r := range []int64{50, 150, 150, 400} {
		clk.waitSleep(t)
		rev.Store(r)
		clk.tick(revisionCompactInterval)
	}
	clk.waitSleep(t)
	cancel()
	<-done
	// 50-100 <= 0: skipped; 150 → 50; unchanged → skipped; 400 → 300.
	got := rec.get()
	if len(got) != 2 || got[0] != 50 || got[1] != 300 {
		t.Fatalf("compactions = %v, want [50 300]", got)
	}
}
