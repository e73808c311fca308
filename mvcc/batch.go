package mvcc

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// RevisionEvents are the changes committed at one revision, in sub-revision
// order. They feed watchers after the batch is durable.
type RevisionEvents struct {
	Rev    int64
	Events []mvccpb.Event
	// prevOmitted: a put event of a key that had a live version has no
	// PrevKv (WriteTxn.PutPrev); the hub reads it from Pebble for
	// watchers that want it.
	prevOmitted bool
}

// Batch groups the writes of many requests (each a WriteTxn) into one Pebble
// commit: one fsync for every request that was waiting. Only one Batch exists
// at a time; NewBatch blocks until the previous one is committed or aborted.
type Batch struct {
	s        *Store
	b        *pebble.Batch
	it       *pebble.Iterator // over the indexed batch: reads see earlier writes; nil until used (view)
	lit      *pebble.Iterator // the same, unbounded, for latest's prefix seeks; nil until used
	dur      *pebble.Iterator // the tables alone, for keys not in Store.recent; nil until used
	startRev int64
	rev      int64 // newest revision assigned so far
	compact  int64 // compaction scheduled by this batch, if compacts
	compacts bool
	live     int64 // change of the live-key count
	events   []RevisionEvents
	buf      []byte
	vbuf     []byte  // a version's value as Put encodes it (the batch copies it)
	sc       scratch // for reads through it
	done     bool
	hooks    []func(committed bool)

	// written is the hashes of the keys written, for Store.hot.
	written []uint64
}

// NewBatch starts a write batch at the newest committed revision.
func (s *Store) NewBatch() (*Batch, error) {
	s.writeMu.Lock()
	if err := s.Failed(); err != nil {
		s.writeMu.Unlock()
		return nil, err
	}
	rev := s.rev.Load()
	return &Batch{s: s, b: s.db.NewIndexedBatch(), startRev: rev, rev: rev, written: s.hotWritten[:0]}, nil
}

// view returns the batch's iterator for ranges, creating it on first use:
// a batch of puts never needs it.
func (b *Batch) view() (*pebble.Iterator, error) {
	if b.it == nil {
		it, err := b.b.NewIter(&pebble.IterOptions{})
		if err != nil {
			return nil, err
		}
		b.it = it
	}
	return b.it, nil
}

// Rev returns the newest revision assigned in the batch.
func (b *Batch) Rev() int64 { return b.rev }

// CompactRev returns the compacted revision as this batch sees it.
func (b *Batch) CompactRev() int64 {
	if b.compacts {
		return max(b.s.compactRev.Load(), b.compact)
	}
	return b.s.compactRev.Load()
}

// Events returns the changes of every revision in the batch, oldest first.
// Valid after Commit too.
func (b *Batch) Events() []RevisionEvents { return b.events }

// SetMeta stores a metadata value with the batch.
func (b *Batch) SetMeta(name string, value []byte) error {
	return b.b.Set(metaKey(name), value, nil)
}

// DeleteMeta removes a metadata value with the batch.
func (b *Batch) DeleteMeta(name string) error {
	return b.b.Delete(metaKey(name), nil)
}

// DeleteRaftLog removes a Raft member's log and hard state (prefix 'R')
// with the batch: a restored store starts a new cluster.
func (b *Batch) DeleteRaftLog() error {
	return b.b.DeleteRange([]byte{raftLogPrefix}, []byte{raftLogPrefix + 1}, nil)
}

// Commit makes the batch durable (one synced Pebble commit) and publishes its
// revision to readers. After an error the store refuses further writes: the
// caller must not acknowledge any request of the batch.
func (b *Batch) Commit() error { return b.commit(pebble.Sync) }

// CommitUnsynced is Commit without the fsync: the batch reaches Pebble's WAL
// (and readers) but may be lost in a crash. For a Raft member, whose
// applied entries are already durable in its log: a lost apply batch is
// applied again from the log on restart, and the next synced write (the
// log's own) makes it durable.
func (b *Batch) CommitUnsynced() error { return b.commit(pebble.NoSync) }

func (b *Batch) commit(opts *pebble.WriteOptions) error {
	if b.done {
		return fmt.Errorf("mvcc: batch already finished")
	}
	committed := false
	defer func() { b.release(committed) }()
	if b.b.Empty() && !b.compacts {
		committed = true
		return nil
	}
	var revBuf [8]byte
	binary.BigEndian.PutUint64(revBuf[:], uint64(b.rev))
	if err := b.b.Set(metaKey(metaRev), revBuf[:], nil); err != nil {
		return err
	}
	live := b.s.liveKeys.Load() + b.live
	b.buf = appendLiveKeys(b.buf[:0], live, b.rev)
	if err := b.b.Set(metaKey(metaLiveKeys), b.buf, nil); err != nil {
		return err
	}
	if b.compacts {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], uint64(b.compact))
		if err := b.b.Set(metaKey(metaCompactScheduled), c[:], nil); err != nil {
			return err
		}
	}
	// NB: before the revision can be published (hotkeys.go).
	b.s.hot.invalidate(b.written, b.rev)
	if err := b.b.Commit(opts); err != nil {
		return b.s.fail(err)
	}
	// NB: a failed WAL write or sync reaches us through the logger's Fatalf
	// while Pebble's Commit returns nil; the revision must not advance.
	if err := b.s.Failed(); err != nil {
		return err
	}
	b.s.written.Add(int64(b.b.Len()))
	b.s.liveKeys.Store(live)
	b.s.rev.Store(b.rev)
	if b.compacts {
		// As etcd: a compaction's hash is taken only when the previous
		// compaction had completed; over a snapshot of now, before any
		// version it removes is gone.
		if prev := b.s.compactRev.Load(); b.s.compactor.isDone(prev) {
			b.s.compactor.addHashJob(compactionHashJob{snap: b.s.db.NewSnapshot(), prev: prev, rev: b.compact})
		}
		b.s.compactRev.Store(b.compact)
		b.s.compactor.schedule(b.compact)
	}
	committed = true
	return nil
}

// Abort discards the batch.
func (b *Batch) Abort() {
	if !b.done {
		b.release(false)
	}
}

func (b *Batch) release(committed bool) {
	b.done = true
	if b.it != nil {
		b.it.Close()
	}
	if b.lit != nil {
		b.lit.Close()
	}
	if b.dur != nil {
		b.dur.Close()
	}
	b.b.Close()
	if !committed {
		// Its writes may be in the cache, and no other batch is running.
		b.s.recent.latest.reset()
	}
	// NB: hooks run before the next batch can start, so state they publish
	// is in place for every request of the next batch.
	for _, f := range b.hooks {
		f(committed)
	}
	b.hooks = nil
	if cap(b.written) <= 1<<16 {
		b.s.hotWritten = b.written[:0]
	}
	b.written = nil
	b.s.writeMu.Unlock()
}

// Compact schedules a compaction at rev, effective when the batch commits:
// reads below rev then fail with ErrCompacted and obsolete versions are
// removed in the background. The returned channel closes once the removal is
// done (etcd's physical compaction).
func (b *Batch) Compact(rev int64) (<-chan struct{}, error) {
	if rev <= b.CompactRev() {
		return nil, ErrCompacted
	}
	if rev > b.rev {
		return nil, ErrFutureRev
	}
	b.compact, b.compacts = rev, true
	return b.s.compactor.waitFor(rev), nil
}

// Txn starts a write transaction: every change in it gets revision Rev()+1.
// Transactions of one batch run one after another.
func (b *Batch) Txn() *WriteTxn {
	return &WriteTxn{b: b, beginRev: b.rev}
}

// WriteTxn is one request's view and writes within a Batch.
type WriteTxn struct {
	b           *Batch
	beginRev    int64
	changes     []mvccpb.Event
	prevOmitted bool // a put left its event's PrevKv out (PutPrev)
}

var _ ReadView = (*WriteTxn)(nil)

// Rev returns the revision before this transaction.
func (t *WriteTxn) Rev() int64 { return t.beginRev }

// FirstRev returns the compacted revision.
func (t *WriteTxn) FirstRev() int64 { return t.b.CompactRev() }

// Changes returns the events this transaction produced so far.
func (t *WriteTxn) Changes() []mvccpb.Event { return t.changes }

func (t *WriteTxn) writeRev() int64 { return t.beginRev + 1 }

// readRev is the revision a read inside the txn sees: its own writes included.
func (t *WriteTxn) readRev() int64 {
	if len(t.changes) > 0 {
		return t.beginRev + 1
	}
	return t.beginRev
}

// Range reads [key, end), seeing the writes made earlier in the batch and
// in this transaction.
func (t *WriteTxn) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	it, err := t.b.view()
	if err != nil {
		return nil, err
	}
	return rangeKeys(ctx, it, true, &t.b.sc, key, end, t.readRev(), t.FirstRev(), ro)
}

// latestIterOptions are those of a batch's lit. L6 filters are read too:
// most keys a put writes are new or live only in the last level, and a
// filter saves the seek into it.
var latestIterOptions = pebble.IterOptions{UseL6Filters: true}

// latest reads the newest live version of key (of hash h in Store.recent)
// into kv and reports whether there is one. One prefix seek: the bloom
// filters (see comparer) skip every table that does not hold the key,
// where a bounded SeekGE seeks every level; and a key not written since
// the tables last caught up is sought in the tables alone, skipping the
// memtables (recentkeys.go).
func (t *WriteTxn) latest(key []byte, h uint64, kv *mvccpb.KeyValue) (bool, error) {
	b := t.b
	it, err := b.durable(h)
	if err != nil {
		return false, err
	}
	if it != nil {
		b.s.recent.seeks++
		return b.seekLatest(it, key, kv)
	}
	if b.lit == nil {
		it, err := b.b.NewIter(&latestIterOptions)
		if err != nil {
			return false, err
		}
		b.lit = it
	} else {
		// NB: refreshes the iterator's view of the batch (earlier writes).
		b.lit.SetOptions(&latestIterOptions)
	}
	return b.seekLatest(b.lit, key, kv)
}

// durable returns the batch's table-only view if it can answer for the key
// of hash h, else nil. The first call after the tables changed creates the
// view even if not, so that Store.recent catches up with them. NB: the view
// lives for one batch, not in the store: one held across batches would pin
// the tables a compaction or a defragmentation replaced.
func (b *Batch) durable(h uint64) (*pebble.Iterator, error) {
	r := &b.s.recent
	if r.off {
		return nil, nil
	}
	if b.dur == nil {
		// NB: loaded before the view is created, so the view is at least
		// as new as the generation recorded.
		gen := b.s.readGen.Load()
		if gen == r.durGen && (!r.ready || r.has(h)) {
			return nil, nil
		}
		it, err := b.s.db.NewIter(&durableIterOptions)
		if err != nil {
			return nil, err
		}
		b.dur = it
		if gen != r.durGen {
			if err := r.caughtUp(it, gen); err != nil {
				return nil, err
			}
		}
	}
	if !r.ready || r.has(h) {
		return nil, nil
	}
	return b.dur, nil
}

func (b *Batch) seekLatest(it *pebble.Iterator, key []byte, kv *mvccpb.KeyValue) (bool, error) {
	// Revision -1 sorts before every version of key: the seek lands on
	// the newest.
	b.sc.seek = appendVersionKey(b.sc.seek[:0], key, -1)
	if !it.SeekPrefixGE(b.sc.seek) {
		return false, it.Error()
	}
	k := it.Key()
	v, err := it.ValueAndErr()
	if err != nil {
		return false, err
	}
	rec, err := decodeVersionValue(v)
	if err != nil || rec.tombstone {
		return false, err
	}
	if *kv, err = recordToKV(k, rec); err != nil {
		return false, err
	}
	return true, nil
}

// putKVs holds what a Put allocates for its event, in one allocation: the
// new version, the previous one and, for a transaction's first change, the
// room of its change list (most transactions make one).
type putKVs struct {
	kv, prev mvccpb.KeyValue
	ev       [1]mvccpb.Event
}

// Put writes a new version of key and returns the revision it was written
// at and the previous live version (nil if none). A lease other than the
// previous version's moves the key's attachment (as etcd's put detaches the
// old lease and attaches the new one).
func (t *WriteTxn) Put(key, value []byte, lease int64) (int64, *mvccpb.KeyValue, error) {
	return t.PutPrev(key, value, lease, true)
}

// PutPrev is Put that reads the previous version's value only if
// prevValue or a watcher wants it (Store.prevWatchers): otherwise the
// returned previous version has no value, and the event none (its
// revision says so: RevisionEvents.prevOmitted), which spares most puts
// of a key written lately any read of Pebble (latestcache.go).
func (t *WriteTxn) PutPrev(key, value []byte, lease int64, prevValue bool) (int64, *mvccpb.KeyValue, error) {
	rev := t.writeRev()
	a := new(putKVs)
	b := t.b
	h := b.s.recent.hash(key)
	found, omitted := false, false
	e, cached := b.s.recent.latest.get(h, key)
	if cached && (e.version == 0 || !prevValue && b.s.prevWatchers.Load() == 0) {
		if e.version > 0 {
			found, omitted = true, true
			a.prev = mvccpb.KeyValue{Key: key, CreateRevision: e.create, ModRevision: e.mod, Version: e.version, Lease: e.lease}
		}
	} else {
		var err error
		if found, err = t.latest(key, h, &a.prev); err != nil {
			return 0, nil, err
		}
	}
	b.s.recent.add(h, rev)
	b.written = append(b.written, h)
	var prev *mvccpb.KeyValue
	create, version := rev, int64(1)
	if found {
		prev = &a.prev
		create, version = prev.CreateRevision, prev.Version+1
	} else {
		b.live++
	}
	b.buf = appendVersionKey(b.buf[:0], key, rev)
	b.vbuf = appendVersionValue(b.vbuf[:0], len(t.changes), create, version, lease, value)
	if err := b.b.Set(b.buf, b.vbuf, nil); err != nil {
		return 0, nil, err
	}
	if found || cached {
		// NB: a key is cached from its first overwrite on: a load of new
		// keys would only churn the cache.
		b.s.recent.latest.set(h, key, latestEntry{mod: rev, create: create, version: version, lease: lease})
	}
	if err := t.logChange(key); err != nil {
		return 0, nil, err
	}
	if prevLease := prevLeaseOf(prev); prevLease != lease {
		if prevLease != 0 {
			if err := t.detach(prevLease, key); err != nil {
				return 0, nil, err
			}
		}
		if lease != 0 {
			if err := t.attach(lease, key); err != nil {
				return 0, nil, err
			}
		}
	}
	a.kv = mvccpb.KeyValue{
		Key:            key,
		Value:          value,
		CreateRevision: create,
		ModRevision:    rev,
		Version:        version,
		Lease:          lease,
	}
	if t.changes == nil {
		t.changes = a.ev[:0]
	}
	ev := mvccpb.Event{Type: mvccpb.PUT, Kv: &a.kv, PrevKv: prev}
	if omitted {
		ev.PrevKv = nil
		t.prevOmitted = true
	}
	t.changes = append(t.changes, ev)
	return rev, prev, nil
}

func prevLeaseOf(prev *mvccpb.KeyValue) int64 {
	if prev == nil {
		return 0
	}
	return prev.Lease
}

// DeleteRange writes a tombstone for every live key in [key, end), detaches
// them from their leases and returns the deleted key-values.
func (t *WriteTxn) DeleteRange(key, end []byte) ([]mvccpb.KeyValue, error) {
	rr, err := t.Range(context.Background(), key, end, RangeOptions{})
	if err != nil {
		return nil, err
	}
	rev := t.writeRev()
	t.b.live -= int64(len(rr.KVs))
	for i := range rr.KVs {
		prev := &rr.KVs[i]
		t.b.buf = appendVersionKey(t.b.buf[:0], prev.Key, rev)
		t.b.vbuf = appendTombstoneValue(t.b.vbuf[:0], len(t.changes))
		h := t.b.s.recent.hash(prev.Key)
		t.b.s.recent.add(h, rev)
		t.b.written = append(t.b.written, h)
		if err := t.b.b.Set(t.b.buf, t.b.vbuf, nil); err != nil {
			return nil, err
		}
		if _, ok := t.b.s.recent.latest.get(h, prev.Key); ok {
			t.b.s.recent.latest.set(h, prev.Key, latestEntry{mod: rev})
		}
		if err := t.logChange(prev.Key); err != nil {
			return nil, err
		}
		if prev.Lease != 0 {
			if err := t.detach(prev.Lease, prev.Key); err != nil {
				return nil, err
			}
		}
		t.changes = append(t.changes, mvccpb.Event{
			Type:   mvccpb.DELETE,
			Kv:     &mvccpb.KeyValue{Key: prev.Key, ModRevision: rev},
			PrevKv: prev,
		})
	}
	return rr.KVs, nil
}

// logChange records key in the revision-ordered change log.
func (t *WriteTxn) logChange(key []byte) error {
	t.b.buf = appendLogKey(t.b.buf[:0], t.writeRev(), len(t.changes))
	return t.b.b.Set(t.b.buf, key, nil)
}

// End finishes the transaction; if it changed anything the batch's revision
// advances.
func (t *WriteTxn) End() {
	if len(t.changes) == 0 {
		return
	}
	t.b.rev = t.writeRev()
	t.b.events = append(t.b.events, RevisionEvents{Rev: t.b.rev, Events: t.changes, prevOmitted: t.prevOmitted})
}
