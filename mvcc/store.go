package mvcc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors returned by the store. The server maps them to etcd's rpctypes.
var (
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	ErrClosed    = errors.New("mvcc: store is closed")
	// ErrFailed means a write to disk failed (a full disk, an fsync error);
	// the store refuses all further writes until it is reopened, since
	// Pebble's commit pipeline cannot continue after a failed WAL write or
	// sync. Reads keep working. Errors wrapping it also wrap the cause.
	ErrFailed = errors.New("mvcc: storage failed; refusing writes")
)

// Metadata names under the 'm' prefix.
const (
	metaRev              = "rev"
	metaCompactScheduled = "compact_scheduled"
	metaCompactDone      = "compact_done"
)

// Options configure a Store.
type Options struct {
	// FS overrides the filesystem (tests use vfs.NewMem or error injection).
	FS vfs.FS
	// Logger receives background errors; nil discards them.
	Logger *slog.Logger
	// CompactionBatch is how many change-log entries one compaction step
	// handles before committing and letting writers in. Default 1000.
	CompactionBatch int
	// CacheSize is Pebble's block cache in bytes. Default 64 MiB.
	CacheSize int64
	// LatestCacheBytes bounds the memory that remembers the newest
	// version of lately written keys, so that overwriting them reads no
	// table (latestcache.go). Default 16 MiB; negative turns it off.
	LatestCacheBytes int64
}

func (o *Options) ensureDefaults() {
	if o.CompactionBatch <= 0 {
		o.CompactionBatch = 1000
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LatestCacheBytes == 0 {
		o.LatestCacheBytes = latestCacheMax
	}
}

// Store is the MVCC key-value store over Pebble. Reads may be issued from any
// goroutine; writes go through one Batch at a time (see NewBatch).
type Store struct {
	db   *pebble.DB
	opts Options

	rev        atomic.Int64          // newest committed revision
	written    atomic.Int64          // bytes of the batches committed since Open
	compactRev atomic.Int64          // reads below this fail with ErrCompacted
	liveKeys   atomic.Int64          // keys whose newest version is live (livekeys.go)
	failErr    atomic.Pointer[error] // ErrFailed wrapping the first cause; nil while healthy

	writeMu sync.Mutex // one Batch (or compaction step commit) at a time

	compactor     *compactor
	compactHashes compactionHashes // etcd's hashes taken at compactions

	reads     readPool      // idle read views (readpool.go)
	stats     storeStats    // stats.go
	readGen   atomic.Uint64 // advanced by Pebble flushes and compactions
	readStale chan struct{} // tells the compactor goroutine to drop stale views

	recent recentKeys // keys possibly in the memtables (recentkeys.go); under writeMu
	hot    hotKeys    // newest versions of keys read often (hotkeys.go)

	hotWritten []uint64 // a finished Batch's written, reused; under writeMu
	// prevWatchers counts the watchers that want prev_kv: while there are
	// none, puts leave the previous value out of their events (batch.go).
	prevWatchers atomic.Int64
}

// memTableSize is Pebble's memtable size. Pebble keeps the arena of the
// last flushed memtable for reuse, so about twice this is resident after a
// burst of writes, and a crash leaves up to this much WAL to replay (and
// flush) before Open returns. MVCC writes never overwrite a key in the
// memtable, so a larger one saves no writes. See RATIONALE.md ("16 MiB
// memtables", and why they were briefly reverted).
const memTableSize = 16 << 20

// Open opens (or creates) a store in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.ensureDefaults()
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	s := &Store{opts: opts, readStale: make(chan struct{}, 1)}
	po := &pebble.Options{
		Cache:                       cache,
		Comparer:                    comparer,
		FS:                          opts.FS,
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		Logger:                      pebbleLogger{lg: opts.Logger, s: s},
		EventListener:               s.readEvents(),
	}
	po.Levels[0].FilterPolicy = filterPolicy // the other levels inherit it
	gate := newCompactionGate()              // compactgate.go: no compaction until Open returns
	po.Experimental.CompactionScheduler = gate
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("mvcc: open %s: %w", dir, err)
	}
	gate.start()
	s.db = db
	done, scheduled, err := s.loadState()
	if err != nil {
		db.Close()
		return nil, err
	}
	s.recent.seed = maphash.MakeSeed()
	s.recent.latest.max = int(min(opts.LatestCacheBytes, 1<<30))
	s.recent.reset(s.rev.Load())
	s.hot.seed = s.recent.seed
	s.hot.enable(s.rev.Load())
	s.compactor = startCompactor(s, done, scheduled)
	return s, nil
}

// loadState reads the revision and the compaction state from the database
// into the store, and returns the compaction's progress.
func (s *Store) loadState() (done, scheduled int64, err error) {
	rev, err := s.metaInt(metaRev)
	if err != nil {
		return 0, 0, err
	}
	if rev == 0 {
		rev = 1 // an empty store is at revision 1, as etcd's
	}
	if scheduled, err = s.metaInt(metaCompactScheduled); err != nil {
		return 0, 0, err
	}
	compactRev := scheduled
	if raw, err := s.Meta(metaCompactScheduled); err == nil && raw == nil {
		// Never compacted: as etcd, even revision 0 may still be compacted.
		compactRev = -1
	}
	if done, err = s.metaInt(metaCompactDone); err != nil {
		return 0, 0, err
	}
	if err := s.loadLiveKeys(rev); err != nil {
		return 0, 0, err
	}
	s.rev.Store(rev)
	s.compactRev.Store(compactRev)
	return done, scheduled, nil
}

// Close stops background work and closes Pebble. Pending compaction resumes
// at the next Open.
func (s *Store) Close() error {
	s.compactor.stop()
	s.reads.close()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.flushForClose()
	return s.db.Close()
}

// closeFlushTimeout bounds how long Close waits for the memtable flush.
const closeFlushTimeout = 10 * time.Second

// flushForClose writes the memtables to tables before Pebble closes, so the
// next Open finds an empty WAL: Open replays the WAL into memtables and
// waits for them to be flushed before it returns, which with 64 MiB
// memtables was most of a restart (0.6–1.9 s with 1M keys). Everything
// flushed was already durable in the WAL; a flush that fails (a full
// disk) only leaves the replay to the next Open, and Close waits for it at
// most closeFlushTimeout.
func (s *Store) flushForClose() {
	if s.failErr.Load() != nil {
		return // the commit pipeline is unusable, and a flush would rotate the WAL
	}
	done, err := s.db.AsyncFlush()
	if err != nil {
		s.opts.Logger.Warn("flush before close failed; the next start replays the WAL", "err", err)
		return
	}
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.opts.Logger.Warn("flush before close timed out; the next start replays the WAL", "timeout", closeFlushTimeout)
	}
}

// Rev returns the newest committed revision.
func (s *Store) Rev() int64 { return s.rev.Load() }

// CompactRev returns the revision of the latest compaction (-1 if none).
// Reads at revisions below it fail with ErrCompacted.
func (s *Store) CompactRev() int64 { return s.compactRev.Load() }

// DB exposes Pebble for maintenance (size, manual compaction, snapshots).
func (s *Store) DB() *pebble.DB { return s.db }

// WrittenBytes returns the bytes of every Batch committed since the store
// was opened, as Pebble encodes them (versions, change log, metadata). It
// only grows, and costs an atomic load: a caller that measures the
// database's size now and then (Pebble's metrics are too costly to read on
// every request) adds the growth since its last measurement, so that data
// still in the memtable and WAL counts as soon as it is committed.
func (s *Store) WrittenBytes() int64 { return s.written.Load() }

// Meta returns the stored metadata value for name, or nil.
func (s *Store) Meta(name string) ([]byte, error) {
	v, closer, err := s.db.Get(metaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mvcc: read meta %q: %w", name, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// ScanMeta calls fn for every committed metadata entry whose name starts
// with prefix, in name order. value is valid only during the call.
func (s *Store) ScanMeta(prefix string, fn func(name string, value []byte) error) error {
	lower := metaKey(prefix)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixSuccessor(lower)})
	if err != nil {
		return fmt.Errorf("mvcc: scan meta %q: %w", prefix, err)
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("mvcc: scan meta %q: %w", prefix, err)
		}
		if err := fn(string(it.Key()[1:]), v); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

// prefixSuccessor is the smallest key greater than every key starting with
// p (p is never all 0xff here: it starts with a keyspace byte).
func prefixSuccessor(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func (s *Store) metaInt(name string) (int64, error) {
	v, err := s.Meta(name)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("mvcc: meta %q: %w", name, errCorruptKey)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// RangeOptions select what a Range returns.
type RangeOptions struct {
	// Limit caps the number of returned KVs; 0 means no limit. Count is
	// always over the whole range.
	Limit int64
	// Rev is the revision to read at; 0 or less means the view's revision.
	Rev int64
	// Count asks for the count only; no KVs are returned.
	Count bool
	// StopAtLimit ends the scan at the Limit-th live key instead of counting
	// the rest of the range; Count is then the number of KVs returned. A
	// range read in pieces (RangeStream) pays for each piece only.
	StopAtLimit bool
	// KeysOnly leaves values out of the returned KVs.
	KeysOnly bool
	// Into, if set, is where the result goes (Range returns it): a caller
	// reading one key hands in a RangeResult whose KVs has room for it,
	// allocated together with its own response (one allocation per Get
	// fewer). Its KVs' contents are overwritten.
	Into *RangeResult
}

// RangeResult is the outcome of a Range.
type RangeResult struct {
	KVs []mvccpb.KeyValue
	// Rev is the view's current revision (etcd's header revision), not the
	// revision read at.
	Rev int64
	// Count is the number of live keys in the range at the read revision.
	Count int
}

// ReadView is what range and compare evaluation need; both committed reads
// and write transactions provide it.
type ReadView interface {
	// Range reads keys in [key, end) (etcd's convention; see RangeOptions).
	Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error)
	// Rev is the revision the view reads at by default.
	Rev() int64
	// FirstRev is the oldest revision the view can read (the compacted one).
	FirstRev() int64
}

// Read returns a consistent read-only view at the newest committed revision.
// The caller must End it and not use it afterwards (views are reused).
func (s *Store) Read() (*ReadTxn, error) {
	for {
		hotGen := s.hot.gen.Load() // before the revision (hotkeys.go)
		tag := s.currentTag()
		t := s.reads.get(tag)
		if t == nil {
			it, err := s.db.NewIter(&pebble.IterOptions{})
			if err != nil {
				return nil, err
			}
			t = &ReadTxn{s: s, it: it, tag: tag, hotGen: hotGen}
		}
		// NB: the iterator fixes the point in time; the compact revision is
		// read after it was created, so versions a concurrent compaction
		// deletes stay visible to every read the check lets through.
		t.firstRev = s.compactRev.Load()
		if t.firstRev <= t.tag.rev {
			s.stats.openReads.Add(1)
			return t, nil
		}
		// Revisions past the view's and a compaction beyond it committed
		// meanwhile: a read at the view's own revision would fail as
		// compacted. The view is stale; take a newer one.
		t.it.Close()
	}
}

// Range is a one-shot read at the newest committed revision.
func (s *Store) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	tx, err := s.Read()
	if err != nil {
		return nil, err
	}
	defer tx.End()
	return tx.Range(ctx, key, end, ro)
}

// ReadTxn is a point-in-time read view. Not safe for concurrent use.
type ReadTxn struct {
	s        *Store
	it       *pebble.Iterator
	tag      viewTag
	firstRev int64
	hotGen   uint64 // Store.hot's generation, loaded before tag.rev
	sc       scratch
}

var _ ReadView = (*ReadTxn)(nil)

// Rev returns the revision of the view.
func (t *ReadTxn) Rev() int64 { return t.tag.rev }

// FirstRev returns the compacted revision as of the view's creation.
func (t *ReadTxn) FirstRev() int64 { return t.firstRev }

// Range reads [key, end) at ro.Rev (or the view's revision).
func (t *ReadTxn) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	rev := ro.Rev
	if rev <= 0 {
		rev = t.tag.rev
	}
	if end != nil || rev > t.tag.rev || rev < t.firstRev {
		return rangeKeys(ctx, t.it, false, &t.sc, key, end, t.tag.rev, t.firstRev, ro)
	}
	// One key: maybe a hot one (hotkeys.go).
	hot := &t.s.hot
	x := hot.hash(key)
	if kv, ok := hot.get(x, key, rev, t.hotGen); ok {
		res := newRangeResult(t.tag.rev, true, ro.Into)
		res.Count = 1
		if !ro.Count {
			if ro.KeysOnly {
				kv.Value = nil
			}
			res.KVs = append(res.KVs, kv)
		}
		return res, nil
	}
	res, err := rangeKeys(ctx, t.it, false, &t.sc, key, end, t.tag.rev, t.firstRev, ro)
	if err == nil && len(res.KVs) == 1 && !ro.KeysOnly && hot.admit(x) {
		hot.add(x, &res.KVs[0], rev, t.hotGen)
	}
	return res, err
}

// End releases the view: it is kept for reuse while it is still current.
func (t *ReadTxn) End() {
	t.s.stats.openReads.Add(-1)
	if t.it.Error() == nil && t.tag == t.s.currentTag() && t.s.reads.put(t) {
		return
	}
	t.it.Close()
}

// PinnedView is a point-in-time read view that holds a Pebble snapshot rather
// than an iterator, for reads spread over a long time (a range streamed to a
// slow client): each Range opens and closes its own iterator, so memtables
// and files are not pinned between reads, only the snapshot's sequence
// number (which keeps versions a compaction deletes meanwhile readable, so
// the view never turns compacted). Safe for concurrent use; End it once.
type PinnedView struct {
	s        *Store
	snap     *pebble.Snapshot
	rev      int64
	firstRev int64
}

var _ ReadView = (*PinnedView)(nil)

// ReadPinned returns a PinnedView at the newest committed revision.
func (s *Store) ReadPinned() *PinnedView {
	rev := s.rev.Load()
	snap := s.db.NewSnapshot()
	// NB: as in Read, the compacted revision is loaded after the point in
	// time is fixed.
	s.stats.openReads.Add(1)
	return &PinnedView{snap: snap, rev: rev, firstRev: s.compactRev.Load(), s: s}
}

// Rev returns the revision of the view.
func (v *PinnedView) Rev() int64 { return v.rev }

// FirstRev returns the compacted revision as of the view's creation.
func (v *PinnedView) FirstRev() int64 { return v.firstRev }

// Range reads [key, end) at ro.Rev (or the view's revision).
func (v *PinnedView) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	it, err := v.snap.NewIter(&pebble.IterOptions{})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var sc scratch // per call: the view is used concurrently
	return rangeKeys(ctx, it, false, &sc, key, end, v.rev, v.firstRev, ro)
}

// End releases the view.
func (v *PinnedView) End() {
	v.s.stats.openReads.Add(-1)
	v.snap.Close()
}

// rangeKeys is the one read algorithm: for each user key in range, one seek to
// its newest version at or below the read revision.
func rangeKeys(ctx context.Context, it *pebble.Iterator, batchView bool, sc *scratch, key, end []byte, curRev, firstRev int64, ro RangeOptions) (*RangeResult, error) {
	rev := ro.Rev
	if rev > curRev {
		return &RangeResult{Rev: curRev, Count: -1}, ErrFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < firstRev {
		return &RangeResult{Count: -1}, ErrCompacted
	}
	res := newRangeResult(curRev, end == nil, ro.Into)
	if len(end) > 0 && bytes.Compare(key, end) >= 0 {
		// An empty range. NB: Pebble does not support an iterator whose lower
		// bound is above its upper bound; positioning one can leave an
		// indexed batch's iterator misplaced for the next seek.
		return res, nil
	}
	lower, upper := sc.rangeBounds(key, end)
	setBounds(it, batchView, lower, upper)
	ok := it.First()
	for n := 0; ok; n++ {
		if n&1023 == 1023 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		k := it.Key()
		prefix := versionKeyPrefix(k)
		if versionKeyRev(k) > rev {
			// Newer than the read revision: seek to the newest version <= rev.
			// NB: k is invalid after the seek; seekBuf keeps the prefix.
			sc.seek = binary.BigEndian.AppendUint64(append(sc.seek[:0], prefix...), ^uint64(rev))
			if !it.SeekGE(sc.seek) {
				break
			}
			k = it.Key()
			if !bytesHasPrefix(k, sc.seek[:len(sc.seek)-revSuffixLen]) {
				continue // no version of this key at or below rev
			}
			prefix = versionKeyPrefix(k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		rec, err := decodeVersionValue(v)
		if err != nil {
			return nil, err
		}
		if !rec.tombstone {
			res.Count++
			if !ro.Count && (ro.Limit <= 0 || int64(len(res.KVs)) < ro.Limit) {
				if ro.KeysOnly {
					rec.value = nil
				}
				kv, err := recordToKV(k, rec)
				if err != nil {
					return nil, err
				}
				res.KVs = append(res.KVs, kv)
				if ro.StopAtLimit && int64(len(res.KVs)) == ro.Limit {
					break
				}
			}
		}
		if end == nil {
			break // a single key: its versions were the whole range
		}
		sc.next = nextUserKeyBound(sc.next, prefix)
		ok = it.SeekGE(sc.next)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	return res, nil
}

// setBounds repositions an iterator's bounds. Over an indexed batch it uses
// SetOptions, which also refreshes the iterator's view of the batch so that a
// transaction reads its own writes.
func setBounds(it *pebble.Iterator, batchView bool, lower, upper []byte) {
	if batchView {
		it.SetOptions(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		return
	}
	it.SetBounds(lower, upper)
}

// oneKeyResult is a result with room for one KV, in one allocation.
type oneKeyResult struct {
	res RangeResult
	kv  [1]mvccpb.KeyValue
}

func newRangeResult(rev int64, oneKey bool, into *RangeResult) *RangeResult {
	if into != nil {
		*into = RangeResult{Rev: rev, KVs: into.KVs[:0]}
		return into
	}
	if !oneKey {
		return &RangeResult{Rev: rev}
	}
	r := &oneKeyResult{res: RangeResult{Rev: rev}}
	r.res.KVs = r.kv[:0]
	return &r.res
}

func bytesHasPrefix(b, p []byte) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == string(p)
}

// recordToKV copies a version into a KeyValue that owns its memory: key and
// value share one allocation (each capped, so appending to one never
// writes into the other).
func recordToKV(k []byte, rec versionRecord) (mvccpb.KeyValue, error) {
	if len(k) < 1+2+revSuffixLen || k[0] != prefixKey {
		return mvccpb.KeyValue{}, errCorruptKey
	}
	enc := k[1 : len(k)-revSuffixLen-2]
	buf := make([]byte, 0, len(enc)+len(rec.value))
	buf, err := appendDecodedUserKey(buf, enc)
	if err != nil {
		return mvccpb.KeyValue{}, err
	}
	n := len(buf)
	kv := mvccpb.KeyValue{
		Key:            buf[:n:n],
		CreateRevision: rec.create,
		ModRevision:    versionKeyRev(k),
		Version:        rec.version,
		Lease:          rec.lease,
	}
	if len(rec.value) > 0 {
		kv.Value = append(buf, rec.value...)[n:]
	}
	return kv, nil
}

// Failed returns nil while the store accepts writes, else ErrFailed wrapping
// the disk error that stopped it.
func (s *Store) Failed() error {
	if p := s.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the store failed for good (first cause wins) and returns the
// error writes get from now on.
func (s *Store) fail(cause error) error {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	if s.failErr.CompareAndSwap(nil, &err) {
		s.opts.Logger.Error("disk write failed; the store refuses writes until it is restarted (reads keep working)", "err", cause)
	}
	return *s.failErr.Load()
}

// pebbleLogger routes Pebble's own log lines to slog.
type pebbleLogger struct {
	lg *slog.Logger
	s  *Store
}

// fatalCommitPrefix starts the Fatalf Pebble logs, on the committing
// goroutine, when a batch's WAL write or sync failed.
const fatalCommitPrefix = "pebble: fatal commit error"

func (l pebbleLogger) Infof(format string, args ...any) {
	l.lg.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.lg.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf stops the process, except for a failed commit: Pebble reports
// that on the committing goroutine and then returns nil from Commit, so the
// store records it, Batch.Commit turns it into ErrFailed (never
// acknowledged) and every later write is refused, while reads of what was
// committed keep being served. NB: Pebble's commit pipeline is unusable
// after this, which is why nothing may commit again in this process.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.lg.Error(msg, "component", "pebble")
	if strings.HasPrefix(format, fatalCommitPrefix) {
		var cause error = errors.New(msg)
		for _, a := range args {
			if err, ok := a.(error); ok {
				cause = err
				break
			}
		}
		l.s.fail(cause)
		return
	}
	panic(msg)
}
