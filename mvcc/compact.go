package mvcc

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// compactor removes versions that no read at or above the compacted revision
// can see, and the change log below it. It works from the change log, so its
// cost follows the number of changes since the previous compaction, not the
// number of keys; and it commits in small steps so writers are never held up
// for long (etcd-io/etcd #10072, #19406).
type compactor struct {
	s *Store

	mu      sync.Mutex
	done    int64 // compaction finished through this revision
	target  int64 // newest scheduled compaction
	waiters []compactWaiter
	// hashJobs are the compactions whose etcd hash is still to be taken.
	hashJobs []compactionHashJob

	kick  chan struct{}
	stopc chan struct{}
	donec chan struct{}
}

type compactWaiter struct {
	rev int64
	ch  chan struct{}
}

func startCompactor(s *Store, done, target int64) *compactor {
	c := &compactor{
		s:      s,
		done:   done,
		target: target,
		kick:   make(chan struct{}, 1),
		stopc:  make(chan struct{}),
		donec:  make(chan struct{}),
	}
	go c.run()
	if target > done {
		c.kick <- struct{}{}
	}
	return c
}

func (c *compactor) stop() {
	close(c.stopc)
	<-c.donec
}

// schedule asks for compaction through rev.
func (c *compactor) schedule(rev int64) {
	c.mu.Lock()
	if rev > c.target {
		c.target = rev
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// waitFor returns a channel closed once compaction through rev is done.
func (c *compactor) waitFor(rev int64) <-chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done >= rev {
		close(ch)
		return ch
	}
	c.waiters = append(c.waiters, compactWaiter{rev: rev, ch: ch})
	return ch
}

func (c *compactor) finish(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = rev
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.rev <= rev {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// isDone reports whether compaction through rev is finished.
func (c *compactor) isDone(rev int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done >= rev
}

func (c *compactor) addHashJob(j compactionHashJob) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.stopc:
		// NB: checked under mu: once stopped, run has dropped its jobs (or
		// will, after this append); a job added later would leak its
		// snapshot and keep Pebble from closing.
		j.snap.Close()
	default:
		c.hashJobs = append(c.hashJobs, j)
	}
}

// takeHashes takes the pending compactions' hashes (before the versions
// they cover are removed; each works on its own snapshot anyway).
func (c *compactor) takeHashes() {
	c.mu.Lock()
	jobs := c.hashJobs
	c.hashJobs = nil
	c.mu.Unlock()
	for _, j := range jobs {
		h, err := hashView(stopContext(c.stopc), j.snap, j.rev, j.prev, true)
		j.snap.Close()
		if err != nil {
			if err != context.Canceled {
				c.s.opts.Logger.Error("compaction hash failed", "revision", j.rev, "err", err)
			}
			continue
		}
		c.s.compactHashes.store(KVHash{Hash: h, CompactRevision: j.prev, Revision: j.rev})
	}
}

// dropHashJobs releases the snapshots of hashes not taken.
func (c *compactor) dropHashJobs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.hashJobs {
		j.snap.Close()
	}
	c.hashJobs = nil
}

// stopContext is a context canceled when stopc closes.
type stopContext <-chan struct{}

func (stopContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c stopContext) Done() <-chan struct{}     { return c }
func (stopContext) Value(any) any               { return nil }
func (c stopContext) Err() error {
	select {
	case <-c:
		return context.Canceled
	default:
		return nil
	}
}

func (c *compactor) run() {
	defer close(c.donec)
	defer c.dropHashJobs()
	for {
		select {
		case <-c.stopc:
			return
		case <-c.s.readStale:
			// Pebble replaced memtables or files that idle read views pin.
			c.s.reads.dropStale(c.s.currentTag())
			continue
		case <-c.kick:
		}
		for {
			c.mu.Lock()
			from, target := c.done, c.target
			c.mu.Unlock()
			if target <= from {
				break
			}
			c.takeHashes()
			start := time.Now()
			if err := c.compact(from, target); err != nil {
				if err != errStopped {
					c.s.opts.Logger.Error("compaction failed; will retry at next schedule", "target", target, "err", err)
				}
				break
			}
			if o := c.s.stats.compactionObserver(); o != nil {
				o.CompactionDone(time.Since(start))
			}
			c.finish(target)
		}
	}
}

type stoppedError struct{}

func (stoppedError) Error() string { return "mvcc: compactor stopped" }

var errStopped error = stoppedError{}

// compact removes what compaction at target makes obsolete, given that every
// compaction through from is already done.
func (c *compactor) compact(from, target int64) error {
	lower := appendLogKey(nil, from, 0)
	upper := appendLogKey(nil, target+1, 0)
	var seen map[string]struct{}
	for {
		select {
		case <-c.stopc:
			return errStopped
		default:
		}
		// One step: up to CompactionBatch change-log entries.
		it, err := c.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return err
		}
		seen = make(map[string]struct{}, c.s.opts.CompactionBatch)
		n := 0
		var next []byte
		for ok := it.First(); ok; ok = it.Next() {
			if n == c.s.opts.CompactionBatch {
				next = append([]byte(nil), it.Key()...)
				break
			}
			n++
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			seen[string(v)] = struct{}{}
		}
		if err := it.Error(); err != nil {
			it.Close()
			return err
		}
		it.Close()

		b := c.s.db.NewBatch()
		for key := range seen {
			if err := c.compactKey(b, []byte(key), target); err != nil {
				b.Close()
				return err
			}
		}
		versions := int(b.Count()) // compactKey's deletions, before the log's
		last := next == nil
		if last {
			// Every obsolete version is gone: drop the change log below target.
			if err := b.DeleteRange(appendLogKey(nil, 0, 0), appendLogKey(nil, target, 0), nil); err != nil {
				b.Close()
				return err
			}
			var d [8]byte
			binary.BigEndian.PutUint64(d[:], uint64(target))
			if err := b.Set(metaKey(metaCompactDone), d[:], nil); err != nil {
				b.Close()
				return err
			}
		}
		pause, err := c.commit(b, last)
		if err != nil {
			b.Close()
			return err
		}
		if o := c.s.stats.compactionObserver(); o != nil {
			o.CompactionStep(pause, versions)
		}
		b.Close()
		if last {
			return nil
		}
		lower = next
	}
}

// commit commits one compaction step. It holds the store's write lock so
// that no step commits after a write failed: Pebble's commit pipeline is
// unusable then, and a commit could hang or be lost.
// It returns how long it held the lock.
func (c *compactor) commit(b *pebble.Batch, sync bool) (time.Duration, error) {
	c.s.writeMu.Lock()
	start := time.Now()
	defer c.s.writeMu.Unlock()
	if err := c.s.Failed(); err != nil {
		return time.Since(start), err
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := b.Commit(opts); err != nil {
		return time.Since(start), c.s.fail(err)
	}
	return time.Since(start), c.s.Failed() // a failed commit is reported through Fatalf
}

// compactKey deletes the versions of key older than its newest version at or
// below target, and that version too if it is a tombstone.
func (c *compactor) compactKey(b *pebble.Batch, key []byte, target int64) error {
	prefix := appendUserKey(nil, key)
	it, err := c.s.db.NewIter(&pebble.IterOptions{
		LowerBound: binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), ^uint64(target)),
		UpperBound: nextUserKeyBound(nil, prefix),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	first := true
	for ok := it.First(); ok; ok = it.Next() {
		if first {
			first = false
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			rec, err := decodeVersionValue(v)
			if err != nil {
				return err
			}
			if !rec.tombstone {
				continue // the version reads at target see: keep
			}
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
	}
	return it.Error()
}
