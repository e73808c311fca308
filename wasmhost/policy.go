package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Decision is the outcome of one policy call.
//
// Kind may be set while Err is nil: a problem that was counted but did not
// change the guest's verdict (KindBadReason: a DENY whose reason could not
// be used keeps its DENY, with a host-written Reason).
type Decision struct {
	Verdict Verdict
	// Reason explains a Deny (from the guest, or the failure when on_error
	// decided).
	Reason string
	// Mutation is the replacement request message after Mutated.
	Mutation []byte
	// Err is the policy failure that on_error turned into Verdict, or nil.
	Err error
	// Kind classifies Err.
	Kind ErrorKind
}

// Policy is one configured policy: its current module version, pool and
// guard. It is safe for concurrent use.
type Policy struct {
	host *Host
	name string

	cur atomic.Pointer[version]
	// reloadMu guards the swap (not the load); swapped is the sequence
	// number of the reload whose version serves.
	reloadMu  sync.Mutex
	reloadSeq atomic.Uint64
	swapped   uint64
	closed    atomic.Bool

	guard  guard
	misses atomic.Uint64

	// CPU slots (cpu.go): until when the policy is throttled (monotonic),
	// and the waits for a slot.
	throttledUntil  atomic.Int64
	throttles       atomic.Uint64
	cpuWaits        atomic.Uint64
	cpuWaitTimeouts atomic.Uint64

	logLimit   *rate.Limiter
	logDropped atomic.Int64

	// observe is Config.Observe, or Events.Call bound to the name.
	observe func(Hook, Verdict, time.Duration)
}

// Guest log lines are rate-limited per policy.
const (
	logRate  = 100 // lines per second
	logBurst = 200
)

// Load compiles, validates and initialises the policy's module; the
// returned policy has a warm pool. The error names the file and problem.
func (h *Host) Load(ctx context.Context, cfg Config) (*Policy, error) {
	p := &Policy{host: h, name: cfg.Name, logLimit: rate.NewLimiter(logRate, logBurst), observe: cfg.Observe}
	if f := h.events.Call; p.observe == nil && f != nil {
		p.observe = func(hook Hook, v Verdict, d time.Duration) { f(cfg.Name, hook, v, d) }
	}
	v, err := p.compileWithin(ctx, cfg)
	if err != nil {
		h.reportLoad(cfg.Name, err)
		return nil, err
	}
	p.guard.init(v.limits)
	p.cur.Store(v)
	return p, nil
}

func (h *Host) reportLoad(name string, err error) {
	if f := h.events.Error; f != nil {
		f(name, HookAuthorize, KindLoad, err)
	}
}

// Name is the policy's configured name.
func (p *Policy) Name() string { return p.name }

// Has reports whether the current module implements hook.
func (p *Policy) Has(hook Hook) bool { return p.cur.Load().hooks[hook] }

// SHA256 is the hex digest of the module serving now.
func (p *Policy) SHA256() string { return p.cur.Load().sha256 }

// Authorize runs policy_authorize on an encoded request (AppendRequest).
func (p *Policy) Authorize(ctx context.Context, req []byte) Decision {
	return p.Call(ctx, HookAuthorize, req)
}

// Admit runs policy_admit on an encoded admission request
// (AppendAdmission).
func (p *Policy) Admit(ctx context.Context, req []byte) Decision {
	return p.Call(ctx, HookAdmit, req)
}

var (
	errNoHook = errors.New("wasmhost: the module does not implement this hook")
	errClosed = errors.New("wasmhost: policy closed")
)

// waitFor is how long a call queues for an idle instance: PoolWait, but
// never less than the call's own deadline (the caller's context may end
// it sooner).
//
// NB: bounding the wait by the deadline alone made benign calls fail under
// load: with more callers than instances, or right after an instance was
// discarded or recycled while its replacement was being made, a waiter
// timed out in a few milliseconds and on_error decided the request.
func (l *Limits) waitFor(hook Hook) time.Duration {
	d := l.AuthorizeTimeout
	if hook == HookAdmit {
		d = l.AdmitTimeout
	}
	return max(d, l.PoolWait)
}

// Call runs one hook. A failure of any kind yields the on_error verdict with
// Err set; the instance that failed is discarded.
func (p *Policy) Call(ctx context.Context, hook Hook, req []byte) Decision {
	if p.observe == nil {
		return p.call(ctx, hook, req)
	}
	// monotonic reads one clock; time.Now reads the wall clock too.
	start := monotonic()
	d := p.call(ctx, hook, req)
	p.observe(hook, d.Verdict, time.Duration(monotonic()-start))
	return d
}

func (p *Policy) call(ctx context.Context, hook Hook, req []byte) Decision {
	for {
		v := p.cur.Load()
		if !v.hooks[hook] {
			return p.failed(v, hook, &callError{kind: KindBadResult, err: errNoHook})
		}
		if len(req) > v.limits.RequestBytes {
			return p.failed(v, hook, badResult("request is %d bytes, over the %d-byte limit", len(req), v.limits.RequestBytes))
		}
		inst, err := v.pool.get(ctx, v.limits.waitFor(hook))
		if err == errRetired {
			if p.cur.Load() != v {
				continue // a reload swapped versions; use the new one
			}
			return p.failed(v, hook, &callError{kind: KindInit, err: errClosed})
		}
		if err != nil {
			var ce *callError
			if !errors.As(err, &ce) {
				ce = &callError{kind: KindTimeout, err: err}
			}
			return p.failed(v, hook, ce)
		}
		verdict, reason, mutation, cerr := inst.call(hook, req)
		if inst.slot != 0 {
			inst.releaseSlot()
		}
		if cerr != nil && cerr.kind == KindBadReason {
			return p.badReason(v, inst, hook, cerr)
		}
		if cerr != nil {
			// A call that ran to its deadline or fuel budget throttles its
			// policy; one whose deadline passed waiting for a CPU slot did
			// not run long itself.
			if (inst.timedOut && !inst.slotTimedOut) || inst.fuelOut {
				p.markThrottled()
			}
			v.pool.put(inst, "error")
			return p.failed(v, hook, cerr)
		}
		v.pool.put(inst, inst.recycleReason())
		p.guard.ok(p)
		return Decision{Verdict: verdict, Reason: reason, Mutation: mutation}
	}
}

// badReason keeps a DENY whose reason could not be read: the verdict is
// final once returned. The reason is written by the host, the problem
// counted; the instance goes only if reading the reason trapped.
func (p *Policy) badReason(v *version, inst *instance, hook Hook, ce *callError) Decision {
	discard := inst.recycleReason()
	if ce.broken {
		discard = "error"
	}
	v.pool.put(inst, discard)
	p.reportError(hook, KindBadReason, ce.err)
	return Decision{
		Verdict: Deny,
		Reason:  fmt.Sprintf("denied by policy %q (its reason was unusable: %v)", p.name, ce.err),
		Kind:    KindBadReason,
	}
}

// Fail reports a failure found outside the guest call (an adapter's check
// of the result, such as a mutation that leaves its lane: KindBadMutation)
// and returns the on_error decision, as a failed call would.
func (p *Policy) Fail(hook Hook, kind ErrorKind, err error) Decision {
	return p.failed(p.cur.Load(), hook, &callError{kind: kind, err: err})
}

// failed reports a failed call and applies on_error.
func (p *Policy) failed(v *version, hook Hook, ce *callError) Decision {
	p.reportError(hook, ce.kind, ce.err)
	switch ce.kind {
	case KindTrap, KindTimeout, KindOOM, KindBadResult, KindFuel, KindBadMutation, KindTable, KindStack:
		p.guard.failure(p)
	}
	return Decision{
		Verdict: v.cfg.OnError.verdict(hook),
		Reason:  fmt.Sprintf("policy %q failed (%s): %v", p.name, ce.kind, ce.err),
		Err:     ce,
		Kind:    ce.kind,
	}
}

func (p *Policy) reportError(hook Hook, kind ErrorKind, err error) {
	if f := p.host.events.Error; f != nil {
		f(p.name, hook, kind, err)
	}
}

func (p *Policy) log(level int32, msg []byte) {
	f := p.host.events.Log
	if f == nil {
		return
	}
	if !p.logLimit.Allow() {
		n := p.logDropped.Add(1)
		if d := p.host.events.LogDropped; d != nil && n%logBurst == 1 {
			d(p.name, int(n))
		}
		return
	}
	f(p.name, level, string(msg))
}

// Reload loads cfg as the policy's new module: compile, validate and
// initialise it off the request path, swap it in atomically, then drain the
// old version (calls in flight finish on it). If the new module fails, the
// old one keeps serving and the error is returned and reported.
//
// A reload that does not finish before ctx ends is abandoned: Reload
// returns a LoadError at once, and the load, left to finish in the
// background (every guest step of it is bounded by the init deadline), is
// thrown away. Reloads never wait for each other's loads; of two that
// overlap, the one started last wins.
func (p *Policy) Reload(ctx context.Context, cfg Config) error {
	if p.closed.Load() {
		return errClosed
	}
	seq := p.reloadSeq.Add(1)
	cfg.Name = p.name
	v, err := p.compileWithin(ctx, cfg)
	if err != nil {
		p.host.reportLoad(p.name, err)
		if f := p.host.events.Reloaded; f != nil {
			f(p.name, err)
		}
		return err
	}
	p.reloadMu.Lock()
	if p.closed.Load() || p.swapped >= seq {
		// Closed meanwhile, or a later reload already swapped its
		// version in: this one is stale.
		p.reloadMu.Unlock()
		v.pool.retire()
		if p.closed.Load() {
			return errClosed
		}
		return &LoadError{Policy: p.name, Path: cfg.Path, Err: errSuperseded}
	}
	p.swapped = seq
	p.guard.init(v.limits)
	old := p.cur.Swap(v)
	p.reloadMu.Unlock()
	old.pool.retire()
	if f := p.host.events.Reloaded; f != nil {
		f(p.name, nil)
	}
	return nil
}

var errSuperseded = errors.New("a later reload of the policy finished first")

// compileWithin runs compile, giving up when ctx ends first: the load goes
// on in the background and its version, if any, is retired when it ends.
func (p *Policy) compileWithin(ctx context.Context, cfg Config) (*version, error) {
	type result struct {
		v   *version
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := p.compile(context.Background(), cfg)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		p.host.background.Add(1)
		go func() {
			defer p.host.background.Done()
			if r := <-done; r.v != nil {
				r.v.pool.retire()
			}
		}()
		return nil, &LoadError{Policy: cfg.Name, Path: cfg.Path,
			Err: fmt.Errorf("load abandoned: %w (it is left to finish in the background and is discarded)", context.Cause(ctx))}
	}
}

// Close retires the pool; calls in flight finish first.
func (p *Policy) Close() {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	if p.closed.Swap(true) {
		return
	}
	p.cur.Load().pool.retire()
}

// Stats is a snapshot of a policy's state, for metrics.
type Stats struct {
	SHA256    string
	Instances int    // live instances
	Misses    uint64 // calls that found no idle instance
	Degraded  bool
	// Throttled: a call ran to its deadline or fuel budget within the last
	// second, so the policy's long calls run in the throttled CPU class
	// (Options.GuestSlots); Throttles counts the times it became so.
	Throttled bool
	Throttles uint64
	// CPUWaits counts calls that waited for a CPU slot, CPUWaitTimeouts
	// those whose deadline passed while waiting.
	CPUWaits        uint64
	CPUWaitTimeouts uint64
	CompileTime     time.Duration
	// MemoryBytes is the linear memory of the idle instances.
	MemoryBytes uint64
}

// Stats returns the current numbers.
func (p *Policy) Stats() Stats {
	v := p.cur.Load()
	s := Stats{
		SHA256:      v.sha256,
		Instances:   v.pool.size(),
		Misses:      p.misses.Load(),
		Degraded:    p.guard.degraded.Load(),
		CompileTime: v.compileTime,

		Throttled:       p.throttled(),
		Throttles:       p.throttles.Load(),
		CPUWaits:        p.cpuWaits.Load(),
		CPUWaitTimeouts: p.cpuWaitTimeouts.Load(),
	}
	for i := range v.pool.shards {
		sh := &v.pool.shards[i]
		sh.mu.Lock()
		for _, inst := range sh.items {
			s.MemoryBytes += uint64(inst.mem.Size())
		}
		sh.mu.Unlock()
	}
	return s
}
