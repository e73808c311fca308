package wasmhost

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// pool keeps a version's warm instances. Idle instances sit in shards
// (one per P, picked at random) so that concurrent callers rarely meet on a
// lock; a background goroutine keeps the number of live instances at the
// target, so instantiation never happens on a caller's goroutine.
type pool struct {
	v      *version
	shards []poolShard

	// handoff passes an instance straight to a waiting caller.
	handoff chan *instance
	waiters atomic.Int32

	live    atomic.Int32 // instances created and not yet discarded
	target  int32
	refill  chan struct{}
	stop    chan struct{}
	done    chan struct{}
	retired atomic.Bool

	// initErr is the last instantiation failure, nil once one succeeds;
	// with no live instance, callers fail at once instead of waiting.
	initErr atomic.Pointer[error]

	closeOnce sync.Once
}

type poolShard struct {
	mu    sync.Mutex
	items []*instance
	_     [40]byte // keep shards on separate cache lines
}

var errRetired = errors.New("wasmhost: version retired")

func newPool(v *version) *pool {
	n := max(v.limits.Instances, 1)
	return &pool{
		v:       v,
		shards:  make([]poolShard, n),
		handoff: make(chan *instance),
		target:  int32(n),
		refill:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// start adds the instances created at load and starts the filler.
func (p *pool) start(warm []*instance) {
	p.live.Store(int32(len(warm)))
	for _, inst := range warm {
		p.push(inst)
	}
	go p.fill()
	p.kick()
}

func (p *pool) kick() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

func (p *pool) push(inst *instance) {
	s := &p.shards[rand.Uint32()%uint32(len(p.shards))]
	s.mu.Lock()
	s.items = append(s.items, inst)
	s.mu.Unlock()
}

func (p *pool) tryGet() *instance {
	n := uint32(len(p.shards))
	first := rand.Uint32() % n
	for i := uint32(0); i < n; i++ {
		s := &p.shards[(first+i)%n]
		s.mu.Lock()
		if k := len(s.items); k > 0 {
			inst := s.items[k-1]
			s.items[k-1] = nil
			s.items = s.items[:k-1]
			s.mu.Unlock()
			return inst
		}
		s.mu.Unlock()
	}
	return nil
}

// get returns an idle instance, waiting up to wait for one.
func (p *pool) get(ctx context.Context, wait time.Duration) (*instance, error) {
	if inst := p.tryGet(); inst != nil {
		return inst, nil
	}
	if p.retired.Load() {
		return nil, errRetired
	}
	if f := p.v.policy.host.events.PoolMiss; f != nil {
		f(p.v.cfg.Name)
	}
	p.v.policy.misses.Add(1)
	p.kick()
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// A put that raced with the first tryGet may have pushed to a shard
	// before it saw a waiter; the short re-check tick covers it.
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
	for {
		if inst := p.tryGet(); inst != nil {
			return inst, nil
		}
		if p.live.Load() == 0 {
			if e := p.initErr.Load(); e != nil {
				return nil, &callError{kind: KindInit, err: *e}
			}
		}
		select {
		case inst := <-p.handoff:
			return inst, nil
		case <-tick.C:
		case <-timer.C:
			return nil, &callError{kind: KindTimeout, err: errors.New("no idle instance within the deadline")}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.stop:
			return nil, errRetired
		}
	}
}

// put returns an instance after a call; discard says why it must go
// instead ("" keeps it).
func (p *pool) put(inst *instance, discard string) {
	if discard == "" && p.retired.Load() {
		discard = "retired"
	}
	if discard != "" {
		p.discard(inst, discard)
		return
	}
	if p.waiters.Load() > 0 {
		select {
		case p.handoff <- inst:
			return
		default:
		}
	}
	p.push(inst)
	// Close may have drained the shards between the check above and the
	// push; take it back out if so.
	if p.retired.Load() {
		p.drain()
	}
}

func (p *pool) discard(inst *instance, reason string) {
	inst.close()
	if f := p.v.policy.host.events.InstanceDiscarded; f != nil {
		f(p.v.cfg.Name, reason)
	}
	if p.live.Add(-1) == 0 && p.retired.Load() {
		p.release()
	}
	p.kick()
}

// fill keeps live at target, instantiating off the request path, with
// backoff while instantiation fails or the policy is degraded.
func (p *pool) fill() {
	defer close(p.done)
	backoff := time.Duration(0)
	for {
		select {
		case <-p.stop:
			return
		case <-p.refill:
		}
		for p.live.Load() < p.target && !p.retired.Load() {
			if p.v.policy.guard.degraded.Load() && backoff == 0 {
				backoff = 50 * time.Millisecond
			}
			if backoff > 0 {
				select {
				case <-p.stop:
					return
				case <-time.After(backoff):
				}
			}
			inst, err := p.v.newInstance()
			if err != nil {
				p.initErr.Store(&err)
				p.v.policy.reportError(HookAuthorize, KindInit, err)
				backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
				continue
			}
			p.initErr.Store(nil)
			if !p.v.policy.guard.degraded.Load() {
				backoff = 0
			}
			p.live.Add(1)
			p.put(inst, "")
		}
	}
}

// drain closes every idle instance.
func (p *pool) drain() {
	for {
		inst := p.tryGet()
		if inst == nil {
			return
		}
		p.discard(inst, "retired")
	}
}

// retire stops the filler, closes idle instances and lets busy ones be
// closed as they come back; the runtime is released with the last one.
func (p *pool) retire() {
	if p.retired.Swap(true) {
		return
	}
	close(p.stop)
	<-p.done
	p.drain()
	if p.live.Load() == 0 {
		p.release()
	}
}

func (p *pool) release() {
	p.closeOnce.Do(p.v.close)
}

// size is the number of live instances.
func (p *pool) size() int { return int(p.live.Load()) }
