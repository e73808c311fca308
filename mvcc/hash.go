package mvcc

import (
	"context"
	"encoding/binary"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"
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
// revision), as etcd's HashKV: every version with a mod revision in
// (compacted, rev], plus each key's newest version at or below the compacted
// revision unless that version is a tombstone. The selection is logical, not
// physical, so the result does not depend on how far the background
// compactor has got: two stores with the same history and compaction give the
// same hash, across restarts. The numbers differ from etcd's, which hashes
// its bbolt encoding.
//
// It also returns the current revision (etcd's header revision). rev below the
// compacted revision is ErrCompacted; above the current one, ErrFutureRev.
func (s *Store) HashKV(ctx context.Context, rev int64) (KVHash, int64, error) {
	// NB: as in Read: the revision before the iterator (which may then see
	// more, never less), the compacted revision after it.
	cur := s.rev.Load()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return KVHash{}, 0, err
	}
	defer it.Close()
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
	h := crc32.New(castagnoli)
	var vlen [binary.MaxVarintLen64]byte
	var prevPrefix []byte
	sawOld := false // a version <= compactRev of the current key was seen
	var n int
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return KVHash{}, 0, err
			}
		}
		k := it.Key()
		prefix := versionKeyPrefix(k)
		if string(prefix) != string(prevPrefix) {
			prevPrefix = append(prevPrefix[:0], prefix...)
			sawOld = false
		}
		r := versionKeyRev(k)
		if r > rev {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return KVHash{}, 0, err
		}
		if r <= compactRev {
			// Only the newest version at or below the compacted revision
			// survives compaction, and only if it is not a tombstone.
			if sawOld {
				continue
			}
			sawOld = true
			rec, err := decodeVersionValue(v)
			if err != nil {
				return KVHash{}, 0, err
			}
			if rec.tombstone {
				continue
			}
		}
		// A version key is self-delimiting; the value is length-prefixed.
		h.Write(k)
		h.Write(vlen[:binary.PutUvarint(vlen[:], uint64(len(v)))])
		h.Write(v)
	}
	if err := it.Error(); err != nil {
		return KVHash{}, 0, err
	}
	return KVHash{Hash: h.Sum32(), CompactRevision: compactRev, Revision: rev}, cur, nil
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
