package lease

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/puzpuzpuz/xsync/v4"
)

// Errors of the lessor; the server maps them to etcd's rpctypes.
var (
	ErrLeaseNotFound = errors.New("lease: lease not found")
	ErrStopped       = errors.New("lease: lessor stopped")
)

// Config configures a Lessor. Zero values take the defaults.
type Config struct {
	// Clock is the time source. Default RealClock.
	Clock Clock
	// RevokeRate is how many expired leases are reported per second at most,
	// so that a mass expiry does not flood the apply loop (etcd: 1000).
	// Up to half a second's worth is reported at once. Default 1000.
	RevokeRate int
	// RetryInterval is how long after reporting an expired lease the lessor
	// reports it again if it has not been revoked by then (the revocation
	// may have failed). Default 7s, etcd's request timeout.
	RetryInterval time.Duration
	// RestartGrace is added to the remaining TTL of every lease restored
	// after a restart, so clients can reconnect before their leases expire.
	// It is not persisted by checkpoints (see Checkpoints).
	RestartGrace time.Duration

	// manual leaves the expiry loop unstarted; tests drive expired().
	manual bool
}

func (c *Config) ensureDefaults() {
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.RevokeRate <= 0 {
		c.RevokeRate = 1000
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 7 * time.Second
	}
}

// lease is one live lease. Its expiry is read and renewed without locks;
// the heap fields belong to Lessor.mu.
type lease struct {
	id  int64
	ttl int64 // granted TTL, seconds

	// expiry is the deadline in nanoseconds on the lessor's clock. The lessor
	// negates it when it reports the lease expired, so a renewal racing
	// with the report loses (Renew then waits for the revocation, as etcd).
	expiry atomic.Int64
	// grace is the part of expiry a restart added and no renewal has earned
	// yet (ns); checkpoints leave it out so restarts cannot add up.
	grace atomic.Int64
	// persisted is the remaining TTL (seconds) last checkpointed in the
	// store: 0 for none (the full TTL), -1 for expired.
	persisted atomic.Int64
	revoked   atomic.Bool

	// heapDeadline mirrors heap[heapIdx].deadline for Renew's lock-free
	// check; written under Lessor.mu.
	heapDeadline atomic.Int64
	heapIdx      int
}

// heapEntry is one lease's slot in the expiry heap. The deadline is kept
// in the entry (not only in the lease) so comparisons stay in the slice.
type heapEntry struct {
	deadline int64
	l        *lease
}

// Lessor tracks the expiry of every lease. Renew, Lookup, Exists and
// Leases may be called from any goroutine; Grant, Restore, Revoke and
// Checkpointed are the applier's (one goroutine).
type Lessor struct {
	cfg   Config
	clock Clock
	epoch time.Time

	leases *xsync.Map[int64, *lease]

	mu sync.Mutex
	// heap holds one entry per live lease, ordered by deadline. A renewal
	// does not touch it: an entry whose lease was renewed is moved down
	// when it reaches the top, so the heap costs O(log n) per lease per
	// TTL rather than per keep-alive.
	heap []heapEntry
	// revokedc is closed (and replaced) on a revocation that someone waits
	// for (Renew of an expired lease).
	revokedc chan struct{}
	waiters  int

	// token bucket of the revoke rate; the expiry loop's alone.
	tokens   float64
	tokensAt int64

	// Counters for Stats; renewals use a striped counter because every
	// keep-alive stream increments it.
	granted, revoked atomic.Uint64
	ttls             ttlStats // granted TTLs, etcd's etcd_debugging_lease_ttl_total
	renewed          *xsync.Counter

	kick     chan struct{}
	expiredc chan []int64
	stopc    chan struct{}
	donec    chan struct{}
	stopOnce sync.Once
}

// New starts a lessor with no leases; Restore the persisted ones before
// serving. Stop ends its goroutine.
func New(cfg Config) *Lessor {
	cfg.ensureDefaults()
	le := &Lessor{
		cfg:      cfg,
		clock:    cfg.Clock,
		epoch:    cfg.Clock.Now(),
		leases:   xsync.NewMap[int64, *lease](),
		renewed:  xsync.NewCounter(),
		revokedc: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		expiredc: make(chan []int64),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
	}
	le.tokens = float64(le.burst())
	if cfg.manual {
		close(le.donec)
	} else {
		go le.run()
	}
	return le
}

// Stop ends the expiry loop and releases every Renew waiting for a
// revocation. The lessor still answers lookups.
func (le *Lessor) Stop() {
	le.stopOnce.Do(func() { close(le.stopc) })
	<-le.donec
}

// now is the lessor's clock in nanoseconds since its creation (monotonic).
func (le *Lessor) now() int64 { return int64(le.clock.Now().Sub(le.epoch)) }

func seconds(s int64) int64 {
	if s > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64 / 2 // beyond any clock; still safe to add to
	}
	return s * int64(time.Second)
}

// Grant registers a lease just granted in the store: it expires ttl
// seconds from now.
func (le *Lessor) Grant(id, ttl int64) {
	le.granted.Add(1)
	le.ttls.observe(ttl)
	le.add(id, ttl, le.now()+seconds(ttl), 0, 0)
}

// Restore registers a lease read from the store at start-up: remaining is
// its last checkpointed remaining TTL in seconds (0 for none: the full TTL;
// negative: it had expired). A live lease expires after its remaining TTL
// plus the restart grace; an expired one is due at once, without grace (no
// renewal could have saved it).
func (le *Lessor) Restore(id, ttl, remaining int64) {
	now := le.now()
	switch {
	case remaining < 0:
		le.add(id, ttl, now, 0, -1)
	case remaining == 0 || remaining >= ttl:
		grace := int64(le.cfg.RestartGrace)
		le.add(id, ttl, now+seconds(ttl)+grace, grace, 0)
	default:
		grace := int64(le.cfg.RestartGrace)
		le.add(id, ttl, now+seconds(remaining)+grace, grace, remaining)
	}
}

func (le *Lessor) add(id, ttl, expiry, grace, persisted int64) {
	l := &lease{id: id, ttl: ttl}
	l.expiry.Store(expiry)
	l.grace.Store(grace)
	l.persisted.Store(persisted)
	if old, ok := le.leases.LoadAndStore(id, l); ok {
		// The applier never grants an existing id; keep the heap consistent
		// if it ever happens.
		le.remove(old)
	}
	le.mu.Lock()
	le.push(l, expiry)
	top := l.heapIdx == 0
	le.mu.Unlock()
	if top {
		le.wake()
	}
}

// Revoke forgets a lease whose revocation is durable; keep-alives waiting
// for it learn it is gone.
func (le *Lessor) Revoke(id int64) {
	if l, ok := le.leases.LoadAndDelete(id); ok {
		le.revoked.Add(1)
		le.remove(l)
	}
}

func (le *Lessor) remove(l *lease) {
	l.revoked.Store(true)
	le.mu.Lock()
	if l.heapIdx >= 0 && l.heapIdx < len(le.heap) && le.heap[l.heapIdx].l == l {
		le.heapRemove(l.heapIdx)
	}
	if le.waiters > 0 {
		close(le.revokedc)
		le.revokedc = make(chan struct{})
	}
	le.mu.Unlock()
}

// Checkpointed records that the store now holds remaining (seconds; 0 for
// the full TTL, -1 for expired) as the lease's remaining TTL.
func (le *Lessor) Checkpointed(id, remaining int64) {
	if l, ok := le.leases.Load(id); ok {
		l.persisted.Store(remaining)
	}
}

// Exists reports whether the lease is live (granted and not revoked).
func (le *Lessor) Exists(id int64) bool {
	_, ok := le.leases.Load(id)
	return ok
}

// Len returns the number of live leases.
func (le *Lessor) Len() int { return le.leases.Size() }

// Stats are the lessor's counters since it was created.
type Stats struct {
	// Granted and Revoked count leases granted and revoked (by a client or
	// on expiry); Renewed counts successful renewals.
	Granted, Revoked, Renewed uint64
	// TTLs are the granted leases' TTLs (ttlstats.go).
	TTLs TTLHistogram
}

// Stats returns the lessor's counters.
func (le *Lessor) Stats() Stats {
	return Stats{Granted: le.granted.Load(), Revoked: le.revoked.Load(), Renewed: uint64(le.renewed.Value()), TTLs: le.ttls.read()}
}

// Renew extends a lease to its full TTL from now and returns the TTL. A
// lease that has expired is not renewed: as etcd, Renew waits until its
// revocation is applied and returns ErrLeaseNotFound (or ctx's error, or
// ErrStopped).
func (le *Lessor) Renew(ctx context.Context, id int64) (int64, error) {
	ttl, l, err := le.renew(id)
	if l != nil {
		return 0, le.waitRevoked(ctx, l)
	}
	return ttl, err
}

// TryRenew is Renew for a caller that must not wait: done is false, and
// nothing changed, when the lease has expired and its revocation is still
// to be applied (Renew waits for it then).
func (le *Lessor) TryRenew(id int64) (ttl int64, done bool, err error) {
	ttl, l, err := le.renew(id)
	return ttl, l == nil, err
}

// renew is Renew up to the wait: an expired lease whose revocation is
// pending is returned to be waited for.
func (le *Lessor) renew(id int64) (int64, *lease, error) {
	l, ok := le.leases.Load(id)
	if !ok {
		return 0, nil, ErrLeaseNotFound
	}
	for {
		if l.revoked.Load() {
			return 0, nil, ErrLeaseNotFound
		}
		now := le.now()
		exp := l.expiry.Load()
		if exp <= now { // expired, or already reported (negative)
			return 0, l, nil
		}
		next := now + seconds(l.ttl)
		if !l.expiry.CompareAndSwap(exp, next) {
			continue // renewed concurrently or just reported expired
		}
		if l.grace.Load() != 0 {
			l.grace.Store(0)
		}
		if next < l.heapDeadline.Load() {
			// Only a restored lease (whose deadline includes the grace) can
			// be renewed to an earlier deadline than its heap entry's.
			le.reschedule(l, next)
		}
		le.renewed.Inc()
		return l.ttl, nil, nil
	}
}

func (le *Lessor) waitRevoked(ctx context.Context, l *lease) error {
	for {
		le.mu.Lock()
		if l.revoked.Load() {
			le.mu.Unlock()
			return ErrLeaseNotFound
		}
		le.waiters++
		ch := le.revokedc
		le.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-le.stopc:
			err = ErrStopped
		}
		le.mu.Lock()
		le.waiters--
		le.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (le *Lessor) reschedule(l *lease, deadline int64) {
	le.mu.Lock()
	if l.revoked.Load() || l.heapIdx < 0 || l.heapIdx >= len(le.heap) || le.heap[l.heapIdx].l != l {
		le.mu.Unlock()
		return
	}
	le.heap[l.heapIdx].deadline = deadline
	l.heapDeadline.Store(deadline)
	le.heapFix(l.heapIdx)
	top := l.heapIdx == 0
	le.mu.Unlock()
	if top {
		le.wake()
	}
}

// Info describes a live lease.
type Info struct {
	ID int64
	// TTL is the granted TTL in seconds.
	TTL int64
	// Remaining is the time until the lease expires; zero or negative once
	// it has expired and awaits revocation.
	Remaining time.Duration
}

func (le *Lessor) info(l *lease, now int64) Info {
	exp := l.expiry.Load()
	if exp < 0 {
		exp = -exp
	}
	return Info{ID: l.id, TTL: l.ttl, Remaining: time.Duration(exp - now)}
}

// Lookup returns a live lease's TTL and remaining time.
func (le *Lessor) Lookup(id int64) (Info, bool) {
	l, ok := le.leases.Load(id)
	if !ok {
		return Info{}, false
	}
	return le.info(l, le.now()), true
}

// Leases lists every live lease, soonest expiry first (as etcd's).
func (le *Lessor) Leases() []Info {
	now := le.now()
	out := make([]Info, 0, le.leases.Size())
	le.leases.Range(func(_ int64, l *lease) bool {
		out = append(out, le.info(l, now))
		return true
	})
	slices.SortFunc(out, func(a, b Info) int {
		if a.Remaining != b.Remaining {
			if a.Remaining < b.Remaining {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// Checkpoint is a remaining TTL to persist for a lease.
type Checkpoint struct {
	ID int64
	// RemainingTTL is in seconds: 0 means the full TTL, -1 that the lease
	// has expired.
	RemainingTTL int64
}

// Checkpoints returns, for every lease whose remaining TTL (rounded up to
// whole seconds) differs from the one last persisted, the value to persist.
// The restart grace a lease has not yet earned by a renewal is left out,
// so a lease nobody renews never gains time across restarts: its persisted
// remaining TTL only goes down.
func (le *Lessor) Checkpoints() []Checkpoint {
	now := le.now()
	var out []Checkpoint
	le.leases.Range(func(id int64, l *lease) bool {
		exp := l.expiry.Load()
		if exp < 0 {
			exp = -exp
		}
		rem := exp - now - l.grace.Load()
		var secs int64
		switch {
		case rem <= 0:
			secs = -1 // expired, not yet revoked: due at once after a restart
		case rem >= seconds(l.ttl):
			secs = 0
		default:
			secs = (rem + int64(time.Second) - 1) / int64(time.Second) // ceil, as etcd
			if secs >= l.ttl {
				secs = 0
			}
		}
		if secs != l.persisted.Load() {
			out = append(out, Checkpoint{ID: id, RemainingTTL: secs})
		}
		return true
	})
	slices.SortFunc(out, func(a, b Checkpoint) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Expired delivers the ids of expired leases, in expiry order, at most
// Config.RevokeRate per second. The receiver should propose their
// revocation; an id that is not revoked within Config.RetryInterval is
// delivered again.
func (le *Lessor) Expired() <-chan []int64 { return le.expiredc }

func (le *Lessor) wake() {
	select {
	case le.kick <- struct{}{}:
	default:
	}
}

func (le *Lessor) run() {
	defer close(le.donec)
	timer := le.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ids, wait := le.expired(le.now())
		if len(ids) > 0 {
			select {
			case le.expiredc <- ids:
			case <-le.stopc:
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-timer.C():
		case <-le.kick:
		case <-le.stopc:
			return
		}
	}
}

// idleWait is how long the loop sleeps with nothing scheduled.
const idleWait = time.Hour

func (le *Lessor) burst() int { return max(1, le.cfg.RevokeRate/2) }

// expired pops the leases expired at now, as many as the revoke rate
// allows, and returns them with how long to wait before looking again.
func (le *Lessor) expired(now int64) ([]int64, time.Duration) {
	rate := float64(le.cfg.RevokeRate)
	if now > le.tokensAt {
		le.tokens = min(float64(le.burst()), le.tokens+float64(now-le.tokensAt)*rate/float64(time.Second))
		le.tokensAt = now
	}
	var ids []int64
	le.mu.Lock()
	defer le.mu.Unlock()
	for len(le.heap) > 0 {
		top := &le.heap[0]
		if top.deadline > now {
			return ids, time.Duration(top.deadline - now)
		}
		l := top.l
		exp := l.expiry.Load()
		if exp > now {
			// Renewed since the entry was placed: move it to the new deadline.
			top.deadline = exp
			l.heapDeadline.Store(exp)
			le.heapDown(0)
			continue
		}
		if le.tokens < 1 {
			// Out of budget: wait until a useful batch (1% of a second's
			// worth) has accumulated rather than waking per lease.
			need := float64(max(1, le.cfg.RevokeRate/100)) - le.tokens
			return ids, time.Duration(need / rate * float64(time.Second))
		}
		if exp > 0 && !l.expiry.CompareAndSwap(exp, -exp) {
			continue // a renewal got in first
		}
		le.tokens--
		ids = append(ids, l.id)
		// Look again later in case the revocation does not happen.
		top.deadline = now + int64(le.cfg.RetryInterval)
		l.heapDeadline.Store(top.deadline)
		le.heapDown(0)
	}
	return ids, idleWait
}

// Heap primitives (a binary min-heap on deadline that keeps each lease's
// heapIdx current). Callers hold mu.

func (le *Lessor) push(l *lease, deadline int64) {
	le.heap = append(le.heap, heapEntry{deadline: deadline, l: l})
	l.heapIdx = len(le.heap) - 1
	l.heapDeadline.Store(deadline)
	le.heapUp(l.heapIdx)
}

func (le *Lessor) heapRemove(i int) {
	last := len(le.heap) - 1
	removed := le.heap[i].l
	if i != last {
		le.heapSwap(i, last)
	}
	le.heap[last] = heapEntry{}
	le.heap = le.heap[:last]
	removed.heapIdx = -1
	if i != last {
		le.heapFix(i)
	}
	// Give memory back after a mass revocation.
	if c := cap(le.heap); c > 1024 && len(le.heap) < c/4 {
		le.heap = append(make([]heapEntry, 0, c/2), le.heap...)
	}
}

func (le *Lessor) heapFix(i int) {
	if !le.heapDown(i) {
		le.heapUp(i)
	}
}

func (le *Lessor) heapSwap(i, j int) {
	h := le.heap
	h[i], h[j] = h[j], h[i]
	h[i].l.heapIdx = i
	h[j].l.heapIdx = j
}

func (le *Lessor) heapUp(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if le.heap[p].deadline <= le.heap[i].deadline {
			return
		}
		le.heapSwap(i, p)
		i = p
	}
}

// heapDown sifts entry i down and reports whether it moved.
func (le *Lessor) heapDown(i int) bool {
	start := i
	n := len(le.heap)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && le.heap[r].deadline < le.heap[c].deadline {
			c = r
		}
		if le.heap[i].deadline <= le.heap[c].deadline {
			break
		}
		le.heapSwap(i, c)
		i = c
	}
	return i > start
}

// Promote restarts every lease's clock for a member that has just become
// the leader, as etcd's lessor Promote: followers do not track renewals
// (keep-alives go to the leader), so each lease gets its checkpointed
// remaining TTL (or its full TTL) plus extend from now — never less time
// than the old leader could have promised.
func (le *Lessor) Promote(extend time.Duration) {
	now := le.now()
	le.leases.Range(func(_ int64, l *lease) bool {
		rem := seconds(l.ttl)
		if p := l.persisted.Load(); p > 0 && p < l.ttl {
			rem = seconds(p)
		}
		next := now + int64(extend) + rem
		l.expiry.Store(next)
		l.grace.Store(int64(extend))
		le.reschedule(l, next)
		return true
	})
}
