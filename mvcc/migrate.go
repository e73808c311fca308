package mvcc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Migration in and out of the store (etcd's database, see etcdformat).
// Both sides work on whole histories: every version a read at or above the
// compacted revision can see, with its exact revision, sub-revision,
// create revision, version and lease.

// ExportView is a consistent, read-only view of the whole store (one
// Pebble snapshot) for copying it out. Close releases it.
type ExportView struct {
	snap       *pebble.Snapshot
	rev        int64
	compactRev int64 // -1 if never compacted
}

// Export opens a consistent view of the store as of the last committed
// batch.
func (s *Store) Export() (*ExportView, error) {
	snap := s.db.NewSnapshot()
	e := &ExportView{snap: snap, rev: 1, compactRev: -1}
	// The revisions come from the snapshot's own metadata, so they agree
	// with its data whatever commits meanwhile.
	get := func(name string) (int64, bool, error) {
		v, closer, err := snap.Get(metaKey(name))
		if errors.Is(err, pebble.ErrNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		defer closer.Close()
		if len(v) != 8 {
			return 0, false, fmt.Errorf("mvcc: meta %q: %w", name, errCorruptKey)
		}
		return int64(binary.BigEndian.Uint64(v)), true, nil
	}
	if r, ok, err := get(metaRev); err != nil {
		snap.Close()
		return nil, err
	} else if ok {
		e.rev = r
	}
	if c, ok, err := get(metaCompactScheduled); err != nil {
		snap.Close()
		return nil, err
	} else if ok {
		e.compactRev = c
	}
	return e, nil
}

// Rev is the view's current revision.
func (e *ExportView) Rev() int64 { return e.rev }

// CompactRev is the view's compacted revision, -1 if never compacted.
func (e *ExportView) CompactRev() int64 { return e.compactRev }

// Close releases the view.
func (e *ExportView) Close() error { return e.snap.Close() }

// Versions calls f with every version a read at or above the compacted
// revision can see — all versions after it, and each key's newest version
// at or below it unless that is a tombstone — in revision order (as etcd's
// key bucket holds them, so a bbolt writer appends). kv (a tombstone carries
// only Key and ModRevision) is valid only during the call.
func (e *ExportView) Versions(ctx context.Context, f func(kv *mvccpb.KeyValue, sub int64, tombstone bool) error) error {
	ov, err := oldVersions(ctx, e.snap, e.rev, e.compactRev)
	if err != nil {
		return err
	}
	old := append(ov.kept, ov.changed...)
	sortByRevision(old)
	emit := func(k []byte, sub int64, rec versionRecord) error {
		kv, err := recordToKV(k, rec)
		if err != nil {
			return err
		}
		return f(&kv, sub, rec.tombstone)
	}
	for i, o := range old {
		if i&4095 == 4095 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rec, err := getVersion(e.snap, o.key)
		if err != nil {
			return err
		}
		if err := emit(o.key, rec.sub, rec); err != nil {
			return err
		}
	}
	// After the compacted revision: the change log names every version.
	it, err := e.snap.NewIter(&pebble.IterOptions{
		LowerBound: appendLogKey(nil, max(e.compactRev+1, 0), 0),
		UpperBound: appendLogKey(nil, e.rev+1, 0),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	var vk []byte
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		lk := it.Key()
		if len(lk) != logKeyLen {
			return errCorruptKey
		}
		main := logKeyRev(lk)
		vk = appendVersionKey(vk[:0], it.Value(), main)
		rec, err := getVersion(e.snap, vk)
		if err != nil {
			return err
		}
		if err := emit(vk, int64(binary.BigEndian.Uint32(lk[9:])), rec); err != nil {
			return err
		}
	}
	return it.Error()
}

// Leases calls f with every lease record (opaque to mvcc) in the view.
func (e *ExportView) Leases(f func(id int64, record []byte) error) error {
	it, err := e.snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLease}, UpperBound: []byte{prefixLease + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return fmt.Errorf("mvcc: lease record key %x: %w", k, errCorruptKey)
		}
		if err := f(int64(binary.BigEndian.Uint64(k[1:])), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// Meta returns the view's metadata value for name, or nil.
func (e *ExportView) Meta(name string) ([]byte, error) {
	v, closer, err := e.snap.Get(metaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// ScanMeta calls fn for every metadata entry of the view whose name starts
// with prefix, in name order.
func (e *ExportView) ScanMeta(prefix string, fn func(name string, value []byte) error) error {
	lower := metaKey(prefix)
	it, err := e.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixSuccessor(lower)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(string(it.Key()[1:]), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// importBatchBytes is the size at which an import commits its batch.
const importBatchBytes = 4 << 20

// Importer bulk-loads a history into an empty store. It holds the store's
// write lock from Import to Finish or Abort.
type Importer struct {
	s          *Store
	b          *pebble.Batch
	logFloor   int64 // change-log entries start at this revision
	done       int64 // compaction done, -1 for none
	scheduled  int64 // compaction scheduled, -1 for none
	rev        int64
	buf        []byte
	finished   bool
	importedKV int
	live       int64 // keys whose newest version is live (counted by attachLeases)
}

// ErrNotEmpty is returned by Import for a store that already holds data.
var ErrNotEmpty = errors.New("mvcc: import needs an empty store")

// Import starts a bulk load into the store, which must be empty. done and
// scheduled are the compaction already completed in the source and the one
// it had scheduled (-1: none); the source holds no version that compaction
// at done removes.
func (s *Store) Import(done, scheduled int64) (*Importer, error) {
	s.writeMu.Lock()
	if s.rev.Load() != 1 || s.compactRev.Load() != -1 {
		s.writeMu.Unlock()
		return nil, ErrNotEmpty
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		s.writeMu.Unlock()
		return nil, err
	}
	empty := !it.First()
	it.Close()
	if !empty {
		s.writeMu.Unlock()
		return nil, ErrNotEmpty
	}
	scheduled = max(scheduled, done)
	s.hot.disable() // until Finish; an aborted import leaves it off
	return &Importer{s: s, b: s.db.NewBatch(), logFloor: max(done, 0), done: done, scheduled: scheduled, rev: 1}, nil
}

// Put stores one version: key at revision (main, sub), a tombstone or a
// value with its create revision, version and lease. Versions may come in
// any order; each (key, main) at most once.
func (im *Importer) Put(key []byte, main, sub int64, tombstone bool, create, version, lease int64, value []byte) error {
	if main < 1 || sub < 0 || sub > 1<<31 {
		return fmt.Errorf("mvcc: import: bad revision %d_%d", main, sub)
	}
	im.rev = max(im.rev, main)
	if tombstone && main <= im.done {
		return nil // invisible to every read the store can still serve
	}
	im.buf = appendVersionKey(im.buf[:0], key, main)
	var val []byte
	if tombstone {
		val = appendTombstoneValue(nil, int(sub))
	} else {
		val = appendVersionValue(make([]byte, 0, len(value)+20), int(sub), create, version, lease, value)
	}
	if err := im.b.Set(im.buf, val, nil); err != nil {
		return err
	}
	if main >= im.logFloor {
		im.buf = appendLogKey(im.buf[:0], main, int(sub))
		if err := im.b.Set(im.buf, key, nil); err != nil {
			return err
		}
	}
	im.importedKV++
	return im.maybeCommit()
}

// Versions returns how many versions were imported.
func (im *Importer) Versions() int { return im.importedKV }

// Rev returns the newest revision imported or marked so far.
func (im *Importer) Rev() int64 { return im.rev }

// ScheduleCompaction makes the store compacted at rev (at least) once
// finished; the versions it removes go in the background, as after any
// compaction.
func (im *Importer) ScheduleCompaction(rev int64) { im.scheduled = max(im.scheduled, rev) }

// MarkRev raises the store's revision to at least rev (a revision that
// changed nothing, such as etcd's bumped revision marker).
func (im *Importer) MarkRev(rev int64) { im.rev = max(im.rev, rev) }

// SetLease stores a lease record (opaque to mvcc).
func (im *Importer) SetLease(id int64, record []byte) error {
	im.buf = appendLeaseKey(im.buf[:0], id)
	if err := im.b.Set(im.buf, record, nil); err != nil {
		return err
	}
	return im.maybeCommit()
}

// SetMeta stores a metadata value.
func (im *Importer) SetMeta(name string, value []byte) error {
	if err := im.b.Set(metaKey(name), value, nil); err != nil {
		return err
	}
	return im.maybeCommit()
}

func (im *Importer) maybeCommit() error {
	if im.b.Len() < importBatchBytes {
		return nil
	}
	// NB: unsynced: Finish syncs once, and a failed import is thrown away.
	if err := im.b.Commit(pebble.NoSync); err != nil {
		return err
	}
	im.b.Close()
	im.b = im.s.db.NewBatch()
	return nil
}

// Finish records the lease attachments of the newest versions, the
// revision (at least rev) and the compaction, syncs, and makes the store
// serve the imported history.
func (im *Importer) Finish(rev int64) error {
	if im.finished {
		return errors.New("mvcc: import already finished")
	}
	defer im.release()
	if err := im.b.Commit(pebble.NoSync); err != nil {
		return err
	}
	im.b.Close()
	im.b = im.s.db.NewBatch()
	if err := im.attachLeases(); err != nil {
		return err
	}
	im.rev = max(im.rev, rev, im.scheduled)
	if err := im.b.Set(metaKey(metaLiveKeys), appendLiveKeys(nil, im.live, im.rev), nil); err != nil {
		return err
	}
	if err := im.b.Set(metaKey(metaRev), binary.BigEndian.AppendUint64(nil, uint64(im.rev)), nil); err != nil {
		return err
	}
	if im.scheduled >= 0 {
		if err := im.b.Set(metaKey(metaCompactScheduled), binary.BigEndian.AppendUint64(nil, uint64(im.scheduled)), nil); err != nil {
			return err
		}
	}
	if im.done >= 0 {
		if err := im.b.Set(metaKey(metaCompactDone), binary.BigEndian.AppendUint64(nil, uint64(im.done)), nil); err != nil {
			return err
		}
	}
	if err := im.b.Commit(pebble.Sync); err != nil {
		return im.s.fail(err)
	}
	if err := im.s.db.Flush(); err != nil {
		return err
	}
	im.s.liveKeys.Store(im.live)
	im.s.rev.Store(im.rev)
	im.s.recent.reset(im.rev) // flushed above
	im.s.hot.enable(im.rev)
	if im.scheduled >= 0 {
		im.s.compactRev.Store(im.scheduled)
		if im.scheduled > im.done {
			im.s.compactor.schedule(im.scheduled)
		}
	}
	return nil
}

// attachLeases records, for every key whose newest version is live with a
// lease, the attachment WriteTxn.Put would have made.
func (im *Importer) attachLeases() error {
	it, err := im.s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var prefix, key []byte
	im.live = 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		p := versionKeyPrefix(k)
		if string(p) == string(prefix) {
			continue // an older version
		}
		prefix = append(prefix[:0], p...)
		rec, err := decodeVersionValue(it.Value())
		if err != nil {
			return err
		}
		if !rec.tombstone {
			im.live++
		}
		if rec.tombstone || rec.lease == 0 {
			continue
		}
		if key, err = appendDecodedUserKey(key[:0], k[1:len(k)-revSuffixLen-2]); err != nil {
			return err
		}
		im.buf = appendAttachKey(im.buf[:0], rec.lease, key)
		if err := im.b.Set(im.buf, nil, nil); err != nil {
			return err
		}
		if err := im.maybeCommit(); err != nil {
			return err
		}
	}
	return it.Error()
}

// Abort stops the import; what was written stays in the store, which the
// caller discards.
func (im *Importer) Abort() {
	if !im.finished {
		// The imported versions carry no revision the tables can vouch
		// for.
		im.s.recent.off = true
		im.release()
	}
}

func (im *Importer) release() {
	im.finished = true
	im.b.Close()
	im.s.writeMu.Unlock()
}
