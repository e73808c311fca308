package etcdformat

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// StorageVersion is the storage schema version a Writer stamps: etcd 3.6's.
// etcd 3.6 and etcdutl read it; etcd 3.5 ignores the key.
const StorageVersion = "3.6.0"

// writeBatch is how many records go into one bbolt transaction. bbolt keeps
// a transaction's dirty pages in memory, so this bounds the writer's memory
// (≈ writeBatch pages in the worst, random-order case) while keeping the
// number of commits low.
const writeBatch = 8192

// Writer builds an etcd database file. It is not safe for concurrent use.
// Records may come in any order (bbolt sorts them), but versions in
// revision order are appended, which is much faster and keeps pages full.
type Writer struct {
	db *bolt.DB
	tx *bolt.Tx
	n  int
}

// Create creates a new etcd database at path (which must not exist) with
// every bucket of etcd's schema.
func Create(path string) (*Writer, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("etcdformat: %s exists", path)
	}
	// NB: no fsync while building: the file is a temporary, read once
	// complete; Close syncs it once.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true})
	if err != nil {
		return nil, err
	}
	w := &Writer{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{BucketKey, BucketMeta, BucketLease, BucketAlarm, BucketCluster,
			BucketMembers, BucketMembersRemoved, BucketAuth, BucketAuthUsers, BucketAuthRoles} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(BucketMeta).Put(metaStorageVersion, []byte(StorageVersion))
	})
	if err != nil {
		db.Close()
		os.Remove(path)
		return nil, err
	}
	return w, nil
}

func (w *Writer) put(bucket, k, v []byte) error {
	if w.tx == nil {
		tx, err := w.db.Begin(true)
		if err != nil {
			return err
		}
		w.tx = tx
	}
	b := w.tx.Bucket(bucket)
	// As etcd's backend: revisions arrive in order, so pages split near full.
	b.FillPercent = 0.9
	if err := b.Put(k, v); err != nil {
		return err
	}
	if w.n++; w.n >= writeBatch {
		return w.commit()
	}
	return nil
}

func (w *Writer) commit() error {
	if w.tx == nil {
		return nil
	}
	err := w.tx.Commit()
	w.tx, w.n = nil, 0
	return err
}

// PutVersion stores one version of a key at revision (main, sub). A
// tombstone is stored as etcd stores it: the key alone.
func (w *Writer) PutVersion(main, sub int64, tombstone bool, kv *mvccpb.KeyValue) error {
	// NB: bbolt keeps the slices until the transaction commits: no reuse.
	k := AppendRevKey(make([]byte, 0, RevKeyLen+1), main, sub, tombstone)
	v, err := MarshalKV(nil, tombstone, kv)
	if err != nil {
		return err
	}
	return w.put(BucketKey, k, v)
}

// MarshalKV returns the bytes etcd stores (and hashes) for a version.
func MarshalKV(dst []byte, tombstone bool, kv *mvccpb.KeyValue) ([]byte, error) {
	if tombstone {
		return appendMarshal(dst, &mvccpb.KeyValue{Key: kv.Key})
	}
	return appendMarshal(dst, kv)
}

func appendMarshal(dst []byte, kv *mvccpb.KeyValue) ([]byte, error) {
	n := kv.Size()
	dst = slices.Grow(dst, n) // amortized: callers append many in a row
	m, err := kv.MarshalToSizedBuffer(dst[len(dst) : len(dst)+n])
	return dst[:len(dst)+m], err
}

// PutLease stores a lease record.
func (w *Writer) PutLease(l Lease) error {
	return w.put(BucketLease, binary.BigEndian.AppendUint64(nil, uint64(l.ID)), l.Marshal())
}

// PutUser stores an auth user (its password field is the bcrypt hash).
func (w *Writer) PutUser(u *authpb.User) error {
	v, err := u.Marshal()
	if err != nil {
		return err
	}
	return w.put(BucketAuthUsers, u.Name, v)
}

// PutRole stores an auth role.
func (w *Writer) PutRole(r *authpb.Role) error {
	v, err := r.Marshal()
	if err != nil {
		return err
	}
	return w.put(BucketAuthRoles, r.Name, v)
}

// SetAuth stores the auth switch and revision.
func (w *Writer) SetAuth(enabled bool, rev uint64) error {
	v := []byte{0}
	if enabled {
		v[0] = 1
	}
	if err := w.put(BucketAuth, authEnabledKey, v); err != nil {
		return err
	}
	return w.put(BucketAuth, authRevisionKey, binary.BigEndian.AppendUint64(nil, rev))
}

// SetCompact stores the compaction revisions (etcd keeps them as revision
// keys with sub 0). rev < 0 (never compacted) stores nothing.
func (w *Writer) SetCompact(scheduled, finished int64) error {
	if scheduled >= 0 {
		if err := w.put(BucketMeta, metaScheduledCompact, AppendRevKey(nil, scheduled, 0, false)); err != nil {
			return err
		}
	}
	if finished >= 0 {
		return w.put(BucketMeta, metaFinishedCompact, AppendRevKey(nil, finished, 0, false))
	}
	return nil
}

// SetConsistentIndex stores the raft position (etcdutl's restore rewrites
// it for the new cluster).
func (w *Writer) SetConsistentIndex(index, term uint64) error {
	if err := w.put(BucketMeta, metaConsistentIndex, binary.BigEndian.AppendUint64(nil, index)); err != nil {
		return err
	}
	return w.put(BucketMeta, metaTerm, binary.BigEndian.AppendUint64(nil, term))
}

// Close commits what is pending, syncs the file and closes it.
func (w *Writer) Close() error {
	err := w.commit()
	if err == nil {
		err = w.db.Sync()
	}
	if cerr := w.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Abort discards what is pending and closes the file; the caller removes it.
func (w *Writer) Abort() {
	if w.tx != nil {
		w.tx.Rollback()
		w.tx = nil
	}
	w.db.Close()
}
