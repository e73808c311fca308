package mvcc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/metastore-dev/metastore/etcdformat"
)

// castagnoli is the CRC-32 table etcd hashes with.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// KVHash is the result of HashKV, in etcd's terms.
type KVHash struct {
	// Hash is a CRC-32C over every version a read at or below Revision and
	// at or above CompactRevision can see.
	Hash uint32
	// CompactRevision is the store's compacted revision (-1 if never).
	CompactRevision int64
	// Revision is the revision hashed up to.
	Revision int64
}

// HashKV hashes the key-value history up to rev (0 means the current
// revision) with etcd's algorithm, so that a store holding the same history
// as an etcd member (a migrated one, or one fed the same writes) reports
// the same number at every revision. The bytes are etcd's: a CRC-32C
// seeded with "key", then for each selected version in revision order its
// key-bucket key (main, sub, tombstone mark) and its marshalled
// mvccpb.KeyValue (etcdformat.KVHasher).
//
// The selection is etcd 3.6's (kvHasher with the index's Keep(rev)), stated
// logically so that it does not depend on how far the background compactor
// has got: every version with a mod revision in (compacted, rev]; and from
// at or below the compacted revision, each key's newest version there if it
// is not a tombstone and — as long as any key is live at rev — the key has
// not changed since up to rev.
//
// At the revision of one of the last 10 compactions since the store opened
// it answers, as etcd, with the hash taken while compacting there (against
// the previous compaction; see compactionHashes).
//
// It also returns the current revision (etcd's header revision). Any other
// rev below the compacted revision is ErrCompacted; above the current one,
// ErrFutureRev.
func (s *Store) HashKV(ctx context.Context, rev int64) (KVHash, int64, error) {
	// NB: as in Read: the revision before the snapshot (which may then see
	// more, never less), the compacted revision after it.
	cur := s.rev.Load()
	// As etcd's hashStorage: a revision at which a compaction ran is
	// answered with the hash taken then, even below the compacted revision.
	if h, ok := s.compactHashes.get(rev); ok && rev > 0 {
		return h, cur, nil
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	compactRev := s.compactRev.Load()
	if rev > 0 && rev < compactRev {
		return KVHash{}, 0, ErrCompacted
	}
	if rev > cur {
		return KVHash{}, cur, ErrFutureRev
	}
	if rev <= 0 {
		rev = cur
	}
	h, err := hashView(ctx, snap, rev, compactRev, false)
	if err != nil {
		return KVHash{}, 0, err
	}
	return KVHash{Hash: h, CompactRevision: compactRev, Revision: rev}, cur, nil
}

// hashView computes etcd's HashKV over snap at rev with compactRev as the
// compacted revision. atCompaction selects the variant etcd computes while
// compacting at rev (its kvHasher with the index's Compact(rev) set, which
// keeps tombstones at rev, instead of Keep(rev)).
func hashView(ctx context.Context, snap *pebble.Snapshot, rev, compactRev int64, atCompaction bool) (uint32, error) {
	ov, err := oldVersions(ctx, snap, rev, compactRev)
	if err != nil {
		return 0, err
	}
	old := ov.kept
	if !ov.liveAtRev && !(atCompaction && ov.tombAtRev) {
		// NB: etcd filters old versions by its index's Keep(rev) (or
		// Compact(rev)) set only when that set is not empty; with no key
		// live (or, compacting, deleted) at rev it hashes every stored one.
		old = append(old, ov.changed...)
	}
	sortByRevision(old)
	vh, err := newVersionHasher(snap)
	if err != nil {
		return 0, err
	}
	defer vh.close()
	for _, o := range old {
		if err := vh.add(ctx, o.key, o.main, o.sub); err != nil {
			return 0, err
		}
	}
	// Everything after the compacted revision, in order, from the change log.
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: appendLogKey(nil, max(compactRev+1, 0), 0),
		UpperBound: appendLogKey(nil, rev+1, 0),
	})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var vk []byte
	for ok := it.First(); ok; ok = it.Next() {
		lk := it.Key()
		if len(lk) != logKeyLen {
			return 0, errCorruptKey
		}
		main, sub := logKeyRev(lk), int64(binary.BigEndian.Uint32(lk[9:]))
		vk = appendVersionKey(vk[:0], it.Value(), main)
		if err := vh.add(ctx, vk, main, sub); err != nil {
			return 0, err
		}
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	return vh.sum(ctx)
}

// hashChunk is how many versions a versionHasher reads per pass.
const hashChunk = 4096

// versionHasher feeds versions, named in revision order, to etcd's
// KVHasher. A point Get per version would build Pebble's merging iterator
// over every memtable and level once per version (HashKV took ~20x
// etcd's time that way); instead it reads a chunk of versions through one
// iterator, seeking in key order so that each seek may go on from the
// last, and then hashes the chunk in revision order. Memory is bounded by
// one chunk's marshalled versions.
type versionHasher struct {
	h  *etcdformat.KVHasher
	it *pebble.Iterator

	keys  []byte       // the chunk's version keys, back to back
	refs  []versionRef // the chunk, in revision order
	order []int        // indexes into refs, in key order
	out   []byte       // the chunk's marshalled KeyValues
}

type versionRef struct {
	keyStart, keyEnd int // in keys
	main, sub        int64
	outStart, outEnd int // in out, once read
	tombstone        bool
}

func newVersionHasher(snap *pebble.Snapshot) (*versionHasher, error) {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return nil, err
	}
	return &versionHasher{h: etcdformat.NewKVHasher(), it: it}, nil
}

func (vh *versionHasher) close() { vh.it.Close() }

// add queues the version stored under key (copied) at main/sub; the next
// in revision order after the previous add.
func (vh *versionHasher) add(ctx context.Context, key []byte, main, sub int64) error {
	start := len(vh.keys)
	vh.keys = append(vh.keys, key...)
	vh.refs = append(vh.refs, versionRef{keyStart: start, keyEnd: len(vh.keys), main: main, sub: sub})
	if len(vh.refs) < hashChunk {
		return nil
	}
	return vh.flush(ctx)
}

func (vh *versionHasher) key(i int) []byte {
	return vh.keys[vh.refs[i].keyStart:vh.refs[i].keyEnd]
}

// flush reads the queued versions in key order and hashes them in
// revision order.
func (vh *versionHasher) flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	vh.order = vh.order[:0]
	for i := range vh.refs {
		vh.order = append(vh.order, i)
	}
	slices.SortFunc(vh.order, func(a, b int) int { return bytes.Compare(vh.key(a), vh.key(b)) })
	vh.out = vh.out[:0]
	for _, i := range vh.order {
		k := vh.key(i)
		if !vh.it.SeekGE(k) || !bytes.Equal(vh.it.Key(), k) {
			if err := vh.it.Error(); err != nil {
				return err
			}
			return fmt.Errorf("mvcc: change log names a missing version %x: %w", k, errCorruptKey)
		}
		v, err := vh.it.ValueAndErr()
		if err != nil {
			return err
		}
		rec, err := decodeVersionValue(v)
		if err != nil {
			return err
		}
		kv, err := recordToKV(k, rec)
		if err != nil {
			return err
		}
		r := &vh.refs[i]
		r.outStart, r.tombstone = len(vh.out), rec.tombstone
		if vh.out, err = etcdformat.MarshalKV(vh.out, rec.tombstone, &kv); err != nil {
			return err
		}
		r.outEnd = len(vh.out)
	}
	for _, r := range vh.refs {
		vh.h.Write(r.main, r.sub, r.tombstone, vh.out[r.outStart:r.outEnd])
	}
	vh.refs, vh.keys = vh.refs[:0], vh.keys[:0]
	return nil
}

// sum hashes what is still queued and returns the hash.
func (vh *versionHasher) sum(ctx context.Context) (uint32, error) {
	if err := vh.flush(ctx); err != nil {
		return 0, err
	}
	return vh.h.Sum32(), nil
}

// compactionHashes keeps the hashes taken at the last compactions, as
// etcd's hashStorage: HashKV at such a revision answers with it (with the
// previous compaction as CompactRevision). In memory only, as etcd's.
type compactionHashes struct {
	mu     sync.Mutex
	hashes []KVHash // by Revision
}

const compactionHashesMax = 10 // etcd's hashStorageMaxSize

func (c *compactionHashes) store(h KVHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hashes = append(c.hashes, h)
	sort.Slice(c.hashes, func(i, j int) bool { return c.hashes[i].Revision < c.hashes[j].Revision })
	if len(c.hashes) > compactionHashesMax {
		c.hashes = c.hashes[len(c.hashes)-compactionHashesMax:]
	}
}

// CompactionHashes returns the hashes taken at the last compactions since
// the store opened (at most 10, by revision): what etcd's compaction hash
// check compares between members.
func (s *Store) CompactionHashes() []KVHash {
	s.compactHashes.mu.Lock()
	defer s.compactHashes.mu.Unlock()
	return slices.Clone(s.compactHashes.hashes)
}

func (c *compactionHashes) get(rev int64) (KVHash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hashes {
		if h.Revision == rev {
			return h, true
		}
	}
	return KVHash{}, false
}

// compactionHashJob is a compaction's hash to take: over the snapshot taken
// when it was committed (so before any of its versions are removed).
type compactionHashJob struct {
	snap      *pebble.Snapshot
	prev, rev int64
}

// oldVersion is a version at or below the compacted revision that HashKV
// hashes: its Pebble key, revision and sub-revision.
type oldVersion struct {
	key       []byte
	main, sub int64
}

// oldSet is what oldVersions finds.
type oldSet struct {
	// kept and changed are each key's newest version at or below the
	// compacted revision (what reads at or above it can see of the
	// compacted past) unless it is a tombstone: kept for keys with no
	// version in (compacted, rev], changed for the others.
	kept, changed []oldVersion
	// liveAtRev: some key's newest version at or below rev is live;
	// tombAtRev: some key was deleted exactly at rev.
	liveAtRev, tombAtRev bool
}

// oldVersions scans every key once (see oldSet).
func oldVersions(ctx context.Context, snap *pebble.Snapshot, rev, compactRev int64) (oldSet, error) {
	var ov oldSet
	if compactRev < 0 {
		return ov, nil // nothing is old; the flags matter only for old versions
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return oldSet{}, err
	}
	defer it.Close()
	var (
		prefix  []byte
		seenRev bool // a version <= rev of the current key was seen
		touched bool // ... and one in (compactRev, rev]
		n       int
	)
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return oldSet{}, err
			}
		}
		k := it.Key()
		if p := versionKeyPrefix(k); string(p) != string(prefix) {
			prefix = append(prefix[:0], p...)
			seenRev, touched = false, false
		} else if seenRev && !touched {
			continue // the newest version <= compactRev is behind us
		}
		r := versionKeyRev(k)
		if r > rev {
			continue
		}
		var rec versionRecord
		if !seenRev || r <= compactRev {
			v, err := it.ValueAndErr()
			if err != nil {
				return oldSet{}, err
			}
			if rec, err = decodeVersionValue(v); err != nil {
				return oldSet{}, err
			}
		}
		first := !seenRev
		seenRev = true
		if first && !rec.tombstone {
			ov.liveAtRev = true
		}
		if first && rec.tombstone && r == rev {
			ov.tombAtRev = true
		}
		if r > compactRev {
			touched = true
			continue
		}
		// The newest version <= compactRev of this key; older ones are
		// compacted away.
		if !rec.tombstone {
			o := oldVersion{key: append([]byte(nil), k...), main: r, sub: rec.sub}
			if touched {
				ov.changed = append(ov.changed, o)
			} else {
				ov.kept = append(ov.kept, o)
			}
		}
		touched = false // skip the rest of this key
	}
	return ov, it.Error()
}

func sortByRevision(vs []oldVersion) {
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].main != vs[j].main {
			return vs[i].main < vs[j].main
		}
		return vs[i].sub < vs[j].sub
	})
}

// getVersion reads and decodes one version.
func getVersion(snap *pebble.Snapshot, key []byte) (versionRecord, error) {
	v, closer, err := snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return versionRecord{}, fmt.Errorf("mvcc: change log names a missing version %x: %w", key, errCorruptKey)
	}
	if err != nil {
		return versionRecord{}, err
	}
	defer closer.Close()
	rec, err := decodeVersionValue(v)
	if err != nil {
		return versionRecord{}, err
	}
	rec.value = append([]byte(nil), rec.value...)
	return rec, nil
}

// Hash hashes the store's whole physical state (versions, change log and
// metadata), as etcd's Hash hashes its whole backend, and returns it with
// the current revision. Unlike HashKV it changes as background compaction
// progresses and includes member-specific metadata; it is meant for tests
// and debugging, as in etcd.
func (s *Store) Hash(ctx context.Context) (uint32, int64, error) {
	cur := s.rev.Load()
	it, err := s.db.NewIter(&pebble.IterOptions{})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	h := crc32.New(castagnoli)
	var lens [2 * binary.MaxVarintLen64]byte
	var n int
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
		}
		if k := it.Key(); len(k) > 0 && k[0] == raftLogPrefix {
			// A Raft member's log is the member's, not the store's.
			if ok = it.SeekGE([]byte{raftLogPrefix + 1}); !ok {
				break
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, 0, err
		}
		// Length-prefixed, since meta keys and values have no framing.
		l := binary.PutUvarint(lens[:], uint64(len(it.Key())))
		l += binary.PutUvarint(lens[l:], uint64(len(v)))
		h.Write(lens[:l])
		h.Write(it.Key())
		h.Write(v)
	}
	if err := it.Error(); err != nil {
		return 0, 0, err
	}
	return h.Sum32(), cur, nil
}
