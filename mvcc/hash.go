package mvcc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"

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
// It also returns the current revision (etcd's header revision). rev below the
// compacted revision is ErrCompacted; above the current one, ErrFutureRev.
func (s *Store) HashKV(ctx context.Context, rev int64) (KVHash, int64, error) {
	// NB: as in Read: the revision before the snapshot (which may then see
	// more, never less), the compacted revision after it.
	cur := s.rev.Load()
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
	h := etcdformat.NewKVHasher()
	var kvbuf []byte
	write := func(k []byte, main, sub int64, rec versionRecord) error {
		kv, err := recordToKV(k, rec)
		if err != nil {
			return err
		}
		if kvbuf, err = etcdformat.MarshalKV(kvbuf[:0], rec.tombstone, &kv); err != nil {
			return err
		}
		h.Write(main, sub, rec.tombstone, kvbuf)
		return nil
	}
	old, changed, liveAtRev, err := oldVersions(ctx, snap, rev, compactRev)
	if err != nil {
		return KVHash{}, 0, err
	}
	if !liveAtRev {
		// NB: etcd filters old versions by its index's Keep(rev) only when
		// that set is not empty; with no live key at rev it hashes every
		// stored one.
		old = append(old, changed...)
	}
	sortByRevision(old)
	for i, o := range old {
		if i&4095 == 4095 {
			if err := ctx.Err(); err != nil {
				return KVHash{}, 0, err
			}
		}
		rec, err := getVersion(snap, o.key)
		if err != nil {
			return KVHash{}, 0, err
		}
		if err := write(o.key, o.main, rec.sub, rec); err != nil {
			return KVHash{}, 0, err
		}
	}
	// Everything after the compacted revision, in order, from the change log.
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: appendLogKey(nil, max(compactRev+1, 0), 0),
		UpperBound: appendLogKey(nil, rev+1, 0),
	})
	if err != nil {
		return KVHash{}, 0, err
	}
	defer it.Close()
	var vk []byte
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return KVHash{}, 0, err
			}
		}
		lk := it.Key()
		if len(lk) != logKeyLen {
			return KVHash{}, 0, errCorruptKey
		}
		main, sub := logKeyRev(lk), int64(binary.BigEndian.Uint32(lk[9:]))
		vk = appendVersionKey(vk[:0], it.Value(), main)
		rec, err := getVersion(snap, vk)
		if err != nil {
			return KVHash{}, 0, err
		}
		if err := write(vk, main, sub, rec); err != nil {
			return KVHash{}, 0, err
		}
	}
	if err := it.Error(); err != nil {
		return KVHash{}, 0, err
	}
	return KVHash{Hash: h.Sum32(), CompactRevision: compactRev, Revision: rev}, cur, nil
}

// oldVersion is a version at or below the compacted revision that HashKV
// hashes: its Pebble key, revision and sub-revision.
type oldVersion struct {
	key       []byte
	main, sub int64
}

// oldVersions returns each key's newest version at or below compactRev
// (what reads at or above compactRev can see of the compacted past) unless
// it is a tombstone: kept for keys with no version in (compactRev, rev],
// changed for the others; and whether any key is live at rev.
func oldVersions(ctx context.Context, snap *pebble.Snapshot, rev, compactRev int64) (kept, changed []oldVersion, liveAtRev bool, err error) {
	if compactRev < 0 {
		return nil, nil, false, nil
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return nil, nil, false, err
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
				return nil, nil, false, err
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
				return nil, nil, false, err
			}
			if rec, err = decodeVersionValue(v); err != nil {
				return nil, nil, false, err
			}
		}
		first := !seenRev
		seenRev = true
		if first && !rec.tombstone {
			liveAtRev = true
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
				changed = append(changed, o)
			} else {
				kept = append(kept, o)
			}
		}
		touched = false // skip the rest of this key
	}
	return kept, changed, liveAtRev, it.Error()
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
