package etcdformat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
)

// Bucket names of etcd's schema (server/storage/schema/bucket.go).
var (
	BucketKey            = []byte("key")
	BucketMeta           = []byte("meta")
	BucketLease          = []byte("lease")
	BucketAlarm          = []byte("alarm")
	BucketCluster        = []byte("cluster")
	BucketMembers        = []byte("members")
	BucketMembersRemoved = []byte("members_removed")
	BucketAuth           = []byte("auth")
	BucketAuthUsers      = []byte("authUsers")
	BucketAuthRoles      = []byte("authRoles")
)

// Keys of the meta and auth buckets.
var (
	metaScheduledCompact = []byte("scheduledCompactRev")
	metaFinishedCompact  = []byte("finishedCompactRev")
	metaConsistentIndex  = []byte("consistent_index")
	metaTerm             = []byte("term")
	metaStorageVersion   = []byte("storageVersion")
	authEnabledKey       = []byte("authEnabled")
	authRevisionKey      = []byte("authRevision")
)

// RevKeyLen is the length of a key-bucket key without the tombstone mark:
// main(8, big-endian) '_' sub(8, big-endian).
const RevKeyLen = 8 + 1 + 8

const tombstoneMark = 't'

// ErrBadRevKey is returned for a key-bucket key that is not etcd's encoding.
var ErrBadRevKey = errors.New("etcdformat: bad revision key")

// AppendRevKey appends etcd's key-bucket key of revision (main, sub), with
// the tombstone mark when the version is a deletion.
func AppendRevKey(dst []byte, main, sub int64, tombstone bool) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(main))
	dst = append(dst, '_')
	dst = binary.BigEndian.AppendUint64(dst, uint64(sub))
	if tombstone {
		dst = append(dst, tombstoneMark)
	}
	return dst
}

// ParseRevKey decodes a key-bucket key.
func ParseRevKey(k []byte) (main, sub int64, tombstone bool, err error) {
	switch {
	case len(k) == RevKeyLen:
	case len(k) == RevKeyLen+1 && k[RevKeyLen] == tombstoneMark:
		tombstone = true
	default:
		return 0, 0, false, fmt.Errorf("%w: %x", ErrBadRevKey, k)
	}
	if k[8] != '_' {
		return 0, 0, false, fmt.Errorf("%w: %x", ErrBadRevKey, k)
	}
	return int64(binary.BigEndian.Uint64(k[:8])), int64(binary.BigEndian.Uint64(k[9:17])), tombstone, nil
}

// KVHasher computes etcd's HashKV value: a CRC-32C seeded with the key
// bucket's name, then the key-bucket key and stored value of every hashed
// version, in revision order (etcd's kvHasher over an UnsafeForEach of the
// bucket). Which versions are hashed is the caller's business (see
// mvcc.Store.HashKV); the bytes and their order are this type's.
type KVHasher struct {
	h   hash.Hash32
	buf []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewKVHasher starts a hash.
func NewKVHasher() *KVHasher {
	h := crc32.New(castagnoli)
	h.Write(BucketKey)
	return &KVHasher{h: h}
}

// Write adds one version: its revision key and its stored value (a
// marshalled mvccpb.KeyValue; for a tombstone, one holding only the key).
func (k *KVHasher) Write(main, sub int64, tombstone bool, value []byte) {
	k.buf = AppendRevKey(k.buf[:0], main, sub, tombstone)
	k.h.Write(k.buf)
	k.h.Write(value)
}

// Sum32 returns the hash so far.
func (k *KVHasher) Sum32() uint32 { return k.h.Sum32() }
