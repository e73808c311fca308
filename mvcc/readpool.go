package mvcc

import (
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Read views are reused. Creating and closing a Pebble iterator was about
// half the CPU of a one-key Range (building the merging iterator over every
// memtable and level, then zeroing its large allocation under GC write
// barriers), while a read at revision R needs only an iterator that sees
// every write through R:
//
//   - everything a ReadTxn reads (the 'k' versions and the 'A' lease
//     attachments) changes only together with the revision, so an iterator
//     created after revision R was published still sees the newest state
//     while the revision is R;
//   - an older view is also safe against compaction: compaction removes only
//     versions that no read at or above its revision can see, it starts only
//     after that revision is published, and Read loads the compacted
//     revision after the iterator was created (see Read).
//
// So End keeps the view in a small pool while the store's revision is still
// the view's, and Read takes it back if that is still so. A pooled iterator
// pins the memtables and sstables of its creation; Pebble's flush and
// compaction events therefore advance a generation that makes every pooled
// view stale, and the compactor goroutine closes the idle ones, so that a
// quiet store does not hold obsolete files (a defragment frees its space).

// readPoolSize bounds the idle views kept: enough for every request in
// flight on a busy server, small next to Pebble's caches (an idle iterator
// is a few KiB).
const readPoolSize = 64

// readPool is a LIFO of idle read views. Views are pushed only while
// current and currency only moves forward, so when the top is stale the
// views below it almost always are too: get then drops them all.
type readPool struct {
	mu     sync.Mutex
	free   []*ReadTxn
	closed bool
}

// viewTag identifies the store state a view was created in.
type viewTag struct {
	rev int64  // the store revision loaded before the iterator was created
	gen uint64 // the pool generation (Pebble flushes and compactions)
}

func (s *Store) currentTag() viewTag {
	return viewTag{rev: s.rev.Load(), gen: s.readGen.Load()}
}

// get returns an idle view created in state tag, or nil. Stale views it
// finds are closed outside the lock.
func (p *readPool) get(tag viewTag) *ReadTxn {
	p.mu.Lock()
	n := len(p.free)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	t := p.free[n-1]
	if t.tag == tag {
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return t
	}
	stale := p.takeAllLocked()
	p.mu.Unlock()
	closeViews(stale)
	return nil
}

// put keeps t for reuse if the pool has room; it reports false if the
// caller must close t instead.
func (p *readPool) put(t *ReadTxn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.free) >= readPoolSize {
		return false
	}
	p.free = append(p.free, t)
	return true
}

// dropStale closes every idle view not created in state tag. NB: it checks
// them all: a view can be pushed just after the state moved on (End checked
// it a moment before), below a current one.
func (p *readPool) dropStale(tag viewTag) {
	var stale []*ReadTxn
	p.mu.Lock()
	kept := p.free[:0]
	for _, t := range p.free {
		if t.tag == tag {
			kept = append(kept, t)
		} else {
			stale = append(stale, t)
		}
	}
	clear(p.free[len(kept):])
	p.free = kept
	p.mu.Unlock()
	closeViews(stale)
}

// close closes every idle view and refuses new ones (before Pebble closes:
// it reports open iterators as leaked).
func (p *readPool) close() {
	p.mu.Lock()
	p.closed = true
	stale := p.takeAllLocked()
	p.mu.Unlock()
	closeViews(stale)
}

func (p *readPool) takeAllLocked() []*ReadTxn {
	out := p.free
	p.free = make([]*ReadTxn, 0, readPoolSize)
	return out
}

func closeViews(ts []*ReadTxn) {
	for _, t := range ts {
		t.it.Close()
	}
}

// readEvents makes Pebble's flushes and compactions retire the pooled
// views, which pin the memtables and files those replace. NB: Pebble calls
// these with its mutex held: they only bump a counter and signal.
func (s *Store) readEvents() *pebble.EventListener {
	bump := func() {
		s.readGen.Add(1)
		select {
		case s.readStale <- struct{}{}:
		default:
		}
	}
	return &pebble.EventListener{
		FlushEnd:      func(pebble.FlushInfo) { bump() },
		CompactionEnd: func(pebble.CompactionInfo) { bump() },
	}
}
