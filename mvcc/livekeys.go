package mvcc

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The live-key count (etcd's etcd_debugging_mvcc_keys_total) is kept in
// the metadata with the revision it was counted at, written by every batch
// with the revision, so reading it is an atomic load and a restart reads
// one value instead of scanning every key. A database whose count is
// missing or was not written at its revision (written before the count was
// kept, by an older binary since, or a snapshot from such a member) is
// counted once when it is loaded.
const metaLiveKeys = "live_keys"

// LiveKeys returns the number of keys whose newest committed version is
// live (not deleted).
func (s *Store) LiveKeys() int64 { return s.liveKeys.Load() }

// appendLiveKeys appends the metadata value of count n at revision rev.
func appendLiveKeys(dst []byte, n, rev int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	return binary.BigEndian.AppendUint64(dst, uint64(rev))
}

// loadLiveKeys reads the live-key count of the database at revision rev,
// or counts the keys and records the count if it is not there.
func (s *Store) loadLiveKeys(rev int64) error {
	raw, err := s.Meta(metaLiveKeys)
	if err != nil {
		return err
	}
	if len(raw) == 16 && int64(binary.BigEndian.Uint64(raw[8:])) == rev {
		s.liveKeys.Store(int64(binary.BigEndian.Uint64(raw)))
		return nil
	}
	n, err := countLiveKeys(s.db)
	if err != nil {
		return fmt.Errorf("mvcc: count live keys: %w", err)
	}
	// NB: unsynced, and a failure only costs the count at the next load.
	if err := s.db.Set(metaKey(metaLiveKeys), appendLiveKeys(nil, n, rev), pebble.NoSync); err != nil {
		s.opts.Logger.Warn("record the live-key count; the next start counts again", "err", err)
	}
	s.liveKeys.Store(n)
	return nil
}

// countLiveKeys counts the user keys whose newest version is live: one seek
// per user key.
func countLiveKeys(r pebble.Reader) (int64, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var n int64
	var next []byte
	for ok := it.First(); ok; ok = it.SeekGE(next) {
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		rec, err := decodeVersionValue(v)
		if err != nil {
			return 0, err
		}
		if !rec.tombstone {
			n++
		}
		next = nextUserKeyBound(next, versionKeyPrefix(it.Key()))
	}
	return n, it.Error()
}
