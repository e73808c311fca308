package lease

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manual clock. Its timers fire when Advance passes their
// deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), at: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.armed && !t.at.After(c.now) {
			t.armed = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

type fakeTimer struct {
	c     *fakeClock
	ch    chan time.Time
	at    time.Time
	armed bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	select { // as time.Timer since Go 1.23: a stale value is dropped
	case <-t.ch:
	default:
	}
	t.at, t.armed = t.c.now.Add(d), true
	if d <= 0 {
		t.armed = false
		t.ch <- t.c.now
	}
}

func (t *fakeTimer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.armed = false
}

// newManual returns a lessor without its goroutine: the test calls
// expired() with the fake clock's time.
func newManual(t *testing.T, cfg Config) (*Lessor, *fakeClock) {
	t.Helper()
	c := newFakeClock()
	cfg.Clock = c
	cfg.manual = true
	le := New(cfg)
	t.Cleanup(le.Stop)
	return le, c
}

func expireNow(le *Lessor) []int64 {
	ids, _ := le.expired(le.now())
	return ids
}

// revokeExpired reports the expired leases and revokes them, as the server
// does.
func revokeExpired(le *Lessor) []int64 {
	ids := expireNow(le)
	for _, id := range ids {
		le.Revoke(id)
	}
	return ids
}

func TestExpiryOrder(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(3, 30)
	le.Grant(1, 10)
	le.Grant(2, 20)
	le.Grant(5, 10) // same deadline as 1
	le.Grant(4, 5)

	if ids, wait := le.expired(le.now()); len(ids) != 0 || wait != 5*time.Second {
		t.Fatalf("at start: expired %v, wait %v; want none, 5s", ids, wait)
	}
	c.Advance(5*time.Second - 1)
	if ids := revokeExpired(le); len(ids) != 0 {
		t.Fatalf("1ns before the first deadline: %v expired", ids)
	}
	c.Advance(1)
	if ids := revokeExpired(le); !slices.Equal(ids, []int64{4}) {
		t.Fatalf("at 5s: expired %v, want [4]", ids)
	}
	c.Advance(5 * time.Second)
	ids := revokeExpired(le)
	slices.Sort(ids) // equal deadlines: any order
	if !slices.Equal(ids, []int64{1, 5}) {
		t.Fatalf("at 10s: expired %v, want [1 5]", ids)
	}
	c.Advance(time.Hour)
	if ids := revokeExpired(le); !slices.Equal(ids, []int64{2, 3}) {
		t.Fatalf("later: expired %v, want [2 3] in deadline order", ids)
	}
}

func TestRenewPostponesExpiry(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(1, 10)
	le.Grant(2, 10)
	c.Advance(8 * time.Second)
	if ttl, err := le.Renew(context.Background(), 1); err != nil || ttl != 10 {
		t.Fatalf("Renew = %d, %v", ttl, err)
	}
	c.Advance(2 * time.Second)
	if ids := revokeExpired(le); !slices.Equal(ids, []int64{2}) {
		t.Fatalf("expired %v, want [2]", ids)
	}
	if info, ok := le.Lookup(1); !ok || info.Remaining != 8*time.Second || info.TTL != 10 {
		t.Fatalf("Lookup(1) = %+v, %v", info, ok)
	}
	c.Advance(8 * time.Second)
	if ids := revokeExpired(le); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("expired %v, want [1]", ids)
	}
}

func TestExpiredLeaseIsNotRenewed(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(1, 5)
	c.Advance(5 * time.Second)
	// Expired but not yet revoked: Renew waits for the revocation (etcd).
	done := make(chan error, 1)
	go func() {
		_, err := le.Renew(context.Background(), 1)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Renew of an expired lease returned %v before the revocation", err)
	case <-time.After(50 * time.Millisecond):
	}
	if ids := expireNow(le); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("expired %v, want [1]", ids)
	}
	le.Revoke(1)
	if err := <-done; !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Renew = %v, want ErrLeaseNotFound", err)
	}
	if _, err := le.Renew(context.Background(), 1); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Renew after revoke = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	le.Grant(2, 5)
	c.Advance(6 * time.Second)
	cancel()
	if _, err := le.Renew(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("Renew with a cancelled context = %v", err)
	}
}

func TestRevokeRate(t *testing.T) {
	const n, rate = 5000, 1000
	le, c := newManual(t, Config{RevokeRate: rate})
	for i := int64(1); i <= n; i++ {
		le.Grant(i, 10)
	}
	c.Advance(10 * time.Second)
	// Half a second's worth at once, then the rate.
	first, wait := le.expired(le.now())
	if len(first) != rate/2 {
		t.Fatalf("first batch %d leases, want %d", len(first), rate/2)
	}
	if wait != 10*time.Millisecond {
		t.Fatalf("wait after the burst = %v, want 10ms (1%% of a second's budget)", wait)
	}
	total := len(first)
	seen := map[int64]bool{}
	for _, id := range first {
		seen[id] = true
	}
	elapsed := time.Duration(0)
	for total < n {
		c.Advance(100 * time.Millisecond)
		elapsed += 100 * time.Millisecond
		ids := expireNow(le)
		if len(ids) != rate/10 {
			t.Fatalf("after %v: %d leases in 100ms, want %d", elapsed, len(ids), rate/10)
		}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("lease %d reported twice", id)
			}
			seen[id] = true
		}
		total += len(ids)
	}
	if elapsed != 4500*time.Millisecond {
		t.Fatalf("all %d expired leases reported after %v, want 4.5s at %d/s", n, elapsed, rate)
	}
}

func TestUnrevokedLeaseIsReportedAgain(t *testing.T) {
	le, c := newManual(t, Config{RetryInterval: 3 * time.Second})
	le.Grant(1, 5)
	c.Advance(5 * time.Second)
	if ids := expireNow(le); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("expired %v", ids)
	}
	c.Advance(3*time.Second - 1)
	if ids := expireNow(le); len(ids) != 0 {
		t.Fatalf("reported again before the retry interval: %v", ids)
	}
	c.Advance(1)
	if ids := expireNow(le); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("not reported again after the retry interval: %v", ids)
	}
	le.Revoke(1)
	c.Advance(time.Hour)
	if ids := expireNow(le); len(ids) != 0 {
		t.Fatalf("revoked lease reported: %v", ids)
	}
	if len(le.heap) != 0 {
		t.Fatalf("heap holds %d entries after revoke", len(le.heap))
	}
}

func TestRevokeRemovesHeapEntry(t *testing.T) {
	le, _ := newManual(t, Config{})
	for i := int64(1); i <= 3000; i++ {
		le.Grant(i, 100+i%7)
	}
	for i := int64(1); i <= 3000; i += 2 {
		le.Revoke(i)
	}
	if len(le.heap) != 1500 || le.Len() != 1500 {
		t.Fatalf("heap %d, leases %d; want 1500", len(le.heap), le.Len())
	}
	for i, e := range le.heap {
		if e.l.heapIdx != i {
			t.Fatalf("entry %d has heapIdx %d", i, e.l.heapIdx)
		}
		if i > 0 && le.heap[(i-1)/2].deadline > e.deadline {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

func TestLeasesSortedByExpiry(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(10, 30)
	le.Grant(20, 10)
	le.Grant(30, 20)
	c.Advance(time.Second)
	var ids []int64
	for _, info := range le.Leases() {
		ids = append(ids, info.ID)
	}
	if !slices.Equal(ids, []int64{20, 30, 10}) {
		t.Fatalf("Leases() order %v, want [20 30 10]", ids)
	}
}

func TestRestoreAddsGraceThatCheckpointsLeaveOut(t *testing.T) {
	le, c := newManual(t, Config{RestartGrace: 2 * time.Second})
	le.Restore(1, 60, 20) // checkpointed with 20s left
	le.Restore(2, 60, 0)  // never checkpointed: full TTL
	le.Restore(3, 60, 20)
	if info, _ := le.Lookup(1); info.Remaining != 22*time.Second {
		t.Fatalf("restored remaining %v, want 20s + 2s grace", info.Remaining)
	}
	if info, _ := le.Lookup(2); info.Remaining != 62*time.Second {
		t.Fatalf("restored remaining %v, want 60s + 2s grace", info.Remaining)
	}
	c.Advance(3 * time.Second)
	if _, err := le.Renew(context.Background(), 3); err != nil { // earns its time back
		t.Fatal(err)
	}
	got := le.Checkpoints()
	want := []Checkpoint{{ID: 1, RemainingTTL: 17}, {ID: 2, RemainingTTL: 57}, {ID: 3, RemainingTTL: 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("Checkpoints() = %v, want %v (grace excluded, renewed lease back to full TTL)", got, want)
	}
	for _, cp := range got {
		le.Checkpointed(cp.ID, cp.RemainingTTL)
	}
	if got := le.Checkpoints(); len(got) != 0 {
		t.Fatalf("nothing changed, yet Checkpoints() = %v", got)
	}
	// A renewed restored lease expires at its renewal + TTL, not later.
	c.Advance(60 * time.Second)
	ids := revokeExpired(le)
	slices.Sort(ids)
	if !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Fatalf("expired %v, want [1 2 3]", ids)
	}
}

func TestRenewOfRestoredLeaseReschedules(t *testing.T) {
	le, c := newManual(t, Config{RestartGrace: 10 * time.Second})
	le.Restore(1, 5, 0) // expires at 15s
	c.Advance(time.Second)
	if _, err := le.Renew(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	// Now due at 6s, earlier than the restored deadline.
	c.Advance(5 * time.Second)
	if ids := revokeExpired(le); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("expired %v at 6s, want [1]", ids)
	}
}

func TestCheckpointsOfExpiredLease(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(1, 10)
	c.Advance(4*time.Second + time.Millisecond)
	if got := le.Checkpoints(); !slices.Equal(got, []Checkpoint{{1, 6}}) {
		t.Fatalf("Checkpoints() = %v, want 6s (rounded up)", got)
	}
	c.Advance(time.Hour)
	expireNow(le)
	if got := le.Checkpoints(); !slices.Equal(got, []Checkpoint{{1, -1}}) {
		t.Fatalf("Checkpoints() of an expired lease = %v, want -1 (expired)", got)
	}
	// Restored as expired: due at once, without the restart grace.
	le2, _ := newManual(t, Config{RestartGrace: time.Minute})
	le2.Restore(1, 10, -1)
	if ids := expireNow(le2); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("lease restored as expired not due at once: %v", ids)
	}
	if got := le2.Checkpoints(); len(got) != 0 {
		t.Fatalf("Checkpoints() after restoring an expired lease = %v, want none", got)
	}
}

// TestExpiryLoop runs the real goroutine with the fake clock.
func TestExpiryLoop(t *testing.T) {
	c := newFakeClock()
	le := New(Config{Clock: c})
	defer le.Stop()
	le.Grant(1, 5)
	le.Grant(2, 3)
	recv := func() []int64 {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ids := <-le.Expired():
				return ids
			case <-deadline:
				t.Fatal("no expiry reported")
			case <-time.After(time.Millisecond):
				c.Advance(0) // let a timer armed after the last Advance fire
			}
		}
	}
	c.Advance(3 * time.Second)
	if ids := recv(); !slices.Equal(ids, []int64{2}) {
		t.Fatalf("expired %v, want [2]", ids)
	}
	le.Revoke(2)
	c.Advance(2 * time.Second)
	if ids := recv(); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("expired %v, want [1]", ids)
	}
}

func TestConcurrentRenewAndExpiry(t *testing.T) {
	le, c := newManual(t, Config{RetryInterval: time.Hour})
	const n = 200
	for i := int64(1); i <= n; i++ {
		le.Grant(i, 1)
	}
	// Renewals race with the expiry check at the deadline: every lease is
	// either renewed (and not reported) or reported (and its renewal
	// waits for the revocation), never both.
	c.Advance(time.Second - 1)
	var wg sync.WaitGroup
	renewed := make([]bool, n+1)
	ctx, cancel := context.WithCancel(context.Background())
	for i := int64(1); i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := le.Renew(ctx, i)
			renewed[i] = err == nil
		}()
	}
	c.Advance(1)
	reported := expireNow(le)
	for _, id := range reported {
		le.Revoke(id)
	}
	cancel()
	wg.Wait()
	for _, id := range reported {
		if renewed[id] {
			t.Fatalf("lease %d both renewed and reported expired", id)
		}
	}
	for i := int64(1); i <= n; i++ {
		if !renewed[i] && !slices.Contains(reported, i) {
			t.Fatalf("lease %d neither renewed nor reported", i)
		}
	}
}

// TestPromote: a new leader's lessor gives every lease, even one a
// follower's clock had reported expired, its checkpointed remaining TTL
// (or full TTL) plus the extension from now, as etcd's Promote.
func TestPromote(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(1, 10)
	le.Grant(2, 10)
	le.Checkpointed(2, 4) // 4s left when last persisted
	c.Advance(20 * time.Second)
	if ids := expireNow(le); len(ids) != 2 {
		t.Fatalf("follower's clock: expired %v", ids)
	}
	le.Promote(time.Second)
	if info, ok := le.Lookup(1); !ok || info.Remaining != 11*time.Second {
		t.Fatalf("lease 1 after promote: %+v %v, want 11s", info, ok)
	}
	if info, ok := le.Lookup(2); !ok || info.Remaining != 5*time.Second {
		t.Fatalf("lease 2 after promote: %+v %v, want 5s", info, ok)
	}
	// The extension is not earned: checkpoints leave it out.
	for _, cp := range le.Checkpoints() {
		if cp.ID == 2 && cp.RemainingTTL != 4 {
			t.Fatalf("checkpoint after promote: %+v", cp)
		}
	}
	c.Advance(5 * time.Second)
	if ids := expireNow(le); !slices.Equal(ids, []int64{2}) {
		t.Fatalf("after 5s: expired %v, want [2]", ids)
	}
	if ttl, err := le.Renew(context.Background(), 1); err != nil || ttl != 10 {
		t.Fatalf("renew after promote: %d %v", ttl, err)
	}
}
