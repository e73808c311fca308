package apply

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metastore-dev/metastore/mvcc"
)

// ErrStopped is returned by Propose once the loop is stopping.
var ErrStopped = errors.New("apply: server stopped")

// Loop is the single-node proposer: callers queue requests, and one goroutine
// takes every request waiting, applies them into one batch, makes the batch
// durable with one fsync, publishes its events and only then answers each
// caller. A Raft log can later take the queue's place without changing Apply.
type Loop struct {
	store    *mvcc.Store
	applier  *Applier
	onCommit func([]mvcc.RevisionEvents)
	onBatch  func(BatchStats)
	maxBatch int

	queue   chan *proposal
	applied atomic.Uint64 // requests applied, persisted with each batch

	mu      sync.RWMutex // held for reading while sending to queue
	stopped bool
	stopc   chan struct{}
	donec   chan struct{}
}

// LoopOptions configure a Loop.
type LoopOptions struct {
	// OnCommit receives the events of each durable batch, on the loop's
	// goroutine, before any caller of that batch is answered. It must not
	// block (the watch hub queues them).
	OnCommit func([]mvcc.RevisionEvents)
	// OnBatch receives timings of each batch, on the loop's goroutine,
	// after its callers are answered (metrics). It must not block.
	OnBatch func(BatchStats)
	// MaxBatch caps how many requests share one commit. Default 1024.
	MaxBatch int
	// QueueSize is how many requests may wait. Default 4096.
	QueueSize int
}

// BatchStats describe one batch for observability.
type BatchStats struct {
	// Requests is the number of requests in the batch.
	Requests int
	// Apply is the time spent applying them; Commit the synced commit.
	Apply, Commit time.Duration
	// Err is the error that failed the whole batch, if any.
	Err error
}

type proposal struct {
	req     *Request
	tenants *[]Tenant   // a new tenants list (SetTenants), instead of req
	conf    *ConfChange // a membership change, instead of req
	res     Result
	done    chan struct{}
}

const metaAppliedIndex = "applied_index"

// NewLoop starts the apply goroutine; Stop ends it.
func NewLoop(s *mvcc.Store, a *Applier, opts LoopOptions) (*Loop, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	l := &Loop{
		store:    s,
		applier:  a,
		onCommit: opts.OnCommit,
		onBatch:  opts.OnBatch,
		maxBatch: opts.MaxBatch,
		queue:    make(chan *proposal, opts.QueueSize),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
	}
	raw, err := s.Meta(metaAppliedIndex)
	if err != nil {
		return nil, err
	}
	if len(raw) == 8 {
		l.applied.Store(binary.BigEndian.Uint64(raw))
	}
	go l.run()
	return l, nil
}

// AppliedIndex counts the requests applied since the store was created
// (etcd's raft index on a single member).
func (l *Loop) AppliedIndex() uint64 { return l.applied.Load() }

// Pending returns the number of requests waiting for the loop.
func (l *Loop) Pending() int { return len(l.queue) }

// Propose queues r and waits until it is applied and durable. If ctx ends
// first, Propose returns ctx's error; the request may still be applied.
func (l *Loop) Propose(ctx context.Context, r *Request) (Result, error) {
	return l.propose(ctx, &proposal{req: r, done: make(chan struct{})})
}

// ProposeConfChange is Propose for a membership change (etcd's
// ProposeConfChange): it is applied in order with the requests and counts
// toward the applied index, as a raft configuration-change entry does.
func (l *Loop) ProposeConfChange(ctx context.Context, cc *ConfChange) (Result, error) {
	return l.propose(ctx, &proposal{conf: cc, done: make(chan struct{})})
}

func (l *Loop) propose(ctx context.Context, p *proposal) (Result, error) {
	l.mu.RLock()
	if l.stopped {
		l.mu.RUnlock()
		return Result{}, ErrStopped
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		l.mu.RUnlock()
		return Result{}, ctx.Err()
	}
	l.mu.RUnlock()
	select {
	case <-p.done:
		return p.res, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// SetTenants replaces the tenants Apply counts. It runs on the apply
// goroutine, between batches, in a batch of its own, so that a new or
// moved tenant is counted from a store holding every write before it and
// accounted from the next write on; the counts it persists are written by
// the Applier in that batch (Applier.SetTenants), never by the caller. The
// counts are this member's derived data, not part of the replicated state:
// each member recounts on its own. It waits for the commit; if ctx ends
// first, the change may still happen.
func (l *Loop) SetTenants(ctx context.Context, tenants []Tenant) error {
	res, err := l.propose(ctx, &proposal{tenants: &tenants, done: make(chan struct{})})
	if err != nil {
		return err
	}
	return res.Err
}

// Stop refuses new requests, applies every request already queued and waits
// for the loop to exit.
func (l *Loop) Stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		<-l.donec
		return
	}
	l.stopped = true
	l.mu.Unlock()
	close(l.stopc)
	<-l.donec
}

func (l *Loop) run() {
	defer close(l.donec)
	batch := make([]*proposal, 0, l.maxBatch)
	for {
		select {
		case p := <-l.queue:
			batch = append(batch[:0], p)
		case <-l.stopc:
			// No sender remains (Stop held the lock); finish what is queued.
			for {
				batch = batch[:0]
				for len(batch) < l.maxBatch {
					select {
					case p := <-l.queue:
						batch = append(batch, p)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				l.applySplit(batch)
			}
		}
	fill:
		for len(batch) < l.maxBatch {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		l.applySplit(batch)
	}
}

// applySplit applies a batch of proposals, tenant changes each in a batch
// of their own at their place in the queue.
func (l *Loop) applySplit(batch []*proposal) {
	from := 0
	for i, p := range batch {
		if p.tenants == nil {
			continue
		}
		if i > from {
			l.applyBatch(batch[from:i])
		}
		l.applyTenants(p)
		from = i + 1
	}
	if from < len(batch) {
		l.applyBatch(batch[from:])
	}
}

func (l *Loop) applyTenants(p *proposal) {
	b, err := l.store.NewBatch()
	if err == nil {
		if err = l.applier.SetTenants(l.store, b, *p.tenants); err == nil {
			err = b.Commit()
		} else {
			b.Abort()
		}
	}
	p.res = Result{Err: err}
	close(p.done)
}

func (l *Loop) applyBatch(batch []*proposal) {
	var st BatchStats
	if l.onBatch != nil {
		st.Requests = len(batch)
		defer func() { l.onBatch(st) }()
	}
	start := time.Now()
	b, err := l.store.NewBatch()
	if err != nil {
		st.Err = err
		for _, p := range batch {
			p.res = Result{Err: err}
			close(p.done)
		}
		return
	}
	for _, p := range batch {
		if p.conf != nil {
			p.res = l.applier.ApplyConfChange(b, p.conf)
			continue
		}
		p.res = l.applier.Apply(b, p.req)
	}
	applied := l.applied.Load() + uint64(len(batch))
	err = b.SetMeta(metaAppliedIndex, binary.BigEndian.AppendUint64(nil, applied))
	applyDone := time.Now()
	st.Apply = applyDone.Sub(start)
	if err == nil {
		err = b.Commit()
		st.Commit = time.Since(applyDone)
	} else {
		b.Abort()
	}
	st.Err = err
	if err == nil {
		l.applied.Store(applied)
	}
	if err != nil {
		for _, p := range batch {
			p.res = Result{Err: err}
		}
	} else if l.onCommit != nil {
		if ev := b.Events(); len(ev) > 0 {
			l.onCommit(ev)
		}
	}
	for _, p := range batch {
		close(p.done)
	}
}
