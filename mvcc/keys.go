package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Pebble key layout. Each keyspace has a one-byte prefix:
//
//	'k' esc(userKey) 0x00 0x01 ^rev(8, big-endian)   one version of a user key
//	'r' rev(8) sub(4)                                  change log: what changed at rev
//	'm' name                                           store metadata
//	'L' id(8)                                          a lease's record (opaque to mvcc)
//	'A' id(8) userKey                                  a key attached to lease id
//
// esc() doubles as an order-preserving escape: 0x00 becomes 0x00 0xFF and the
// key ends with the terminator 0x00 0x01, so encoded user keys sort exactly as
// the raw keys do and no encoded key is a prefix of another. The inverted
// revision makes the versions of one key adjacent, newest first, so "the
// newest version at or below R" is a single SeekGE.
const (
	prefixKey    = 'k'
	prefixLog    = 'r'
	prefixMeta   = 'm'
	prefixLease  = 'L'
	prefixAttach = 'A'
	// raftLogPrefix is the Raft log's (server/raftnode's DefaultLogPrefix),
	// which may share the database: mvcc never reads or copies it.
	raftLogPrefix = 'R'
	escByte       = 0x00
	escEscaped    = 0xFF
	escTerm       = 0x01
	escNextKey    = 0x02 // sorts after every version of the preceding user key
	revSuffixLen  = 8
	logKeyLen     = 1 + 8 + 4
)

var errCorruptKey = errors.New("mvcc: corrupt key encoding")

// appendUserKey appends 'k' esc(key) 0x00 0x01.
func appendUserKey(dst, key []byte) []byte {
	dst = append(dst, prefixKey)
	for {
		i := bytes.IndexByte(key, escByte)
		if i < 0 {
			dst = append(dst, key...)
			break
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, escEscaped)
		key = key[i+1:]
	}
	return append(dst, escByte, escTerm)
}

// appendVersionKey appends the Pebble key of key's version at rev.
func appendVersionKey(dst, key []byte, rev int64) []byte {
	dst = appendUserKey(dst, key)
	return binary.BigEndian.AppendUint64(dst, ^uint64(rev))
}

// versionKeyRev returns the revision encoded in a version key.
func versionKeyRev(k []byte) int64 {
	return int64(^binary.BigEndian.Uint64(k[len(k)-revSuffixLen:]))
}

// versionKeyPrefix returns the part of a version key shared by every version
// of the same user key ('k' esc(key) 0x00 0x01).
func versionKeyPrefix(k []byte) []byte {
	return k[:len(k)-revSuffixLen]
}

// nextUserKeyBound returns the smallest Pebble key above every version of the
// user key whose version-key prefix is p. It overwrites the terminator of a
// copy of p.
func nextUserKeyBound(dst, p []byte) []byte {
	dst = append(dst[:0], p...)
	dst[len(dst)-1] = escNextKey
	return dst
}

// decodeUserKey extracts the raw user key from a version key.
func decodeUserKey(k []byte) ([]byte, error) {
	if len(k) < 1+2+revSuffixLen || k[0] != prefixKey {
		return nil, errCorruptKey
	}
	enc := k[1 : len(k)-revSuffixLen-2]
	return appendDecodedUserKey(make([]byte, 0, len(enc)), enc)
}

// appendDecodedUserKey appends the raw user key whose escaped form is enc.
func appendDecodedUserKey(dst, enc []byte) ([]byte, error) {
	for {
		i := bytes.IndexByte(enc, escByte)
		if i < 0 {
			return append(dst, enc...), nil
		}
		if i+1 >= len(enc) || enc[i+1] != escEscaped {
			return nil, errCorruptKey
		}
		dst = append(dst, enc[:i+1]...)
		enc = enc[i+2:]
	}
}

// scratch holds the buffers of an iterator that is repositioned again and
// again (a pooled read view, a batch's iterator), so reads build their
// bounds and seek keys without allocating.
type scratch struct {
	// bounds alternate: Pebble may compare new bounds with the previous
	// ones, which must stay intact until SetBounds returns.
	bounds [2][]byte
	flip   int
	seek   []byte
	next   []byte
}

// rangeBounds returns Pebble iterator bounds covering user keys in etcd's
// [key, end) convention as the mvcc layer sees it: end == nil means the single
// key; an empty non-nil end means every key >= key. The bounds are valid
// until the next call but one.
func (sc *scratch) rangeBounds(key, end []byte) (lower, upper []byte) {
	sc.flip ^= 1
	buf := appendUserKey(sc.bounds[sc.flip][:0], key)
	n := len(buf)
	switch {
	case end == nil:
		buf = append(buf, buf...)
		buf[len(buf)-1] = escNextKey
	case len(end) == 0:
		buf = append(buf, prefixKey+1)
	default:
		buf = appendUserKey(buf, end)
	}
	sc.bounds[sc.flip] = buf
	return buf[:n:n], buf[n:]
}

// keyBounds returns the bounds of every version of key (valid as those of
// rangeBounds).
func (sc *scratch) keyBounds(key []byte) (lower, upper []byte) {
	return sc.rangeBounds(key, nil)
}

// appendLogKey appends the change-log key of (rev, sub).
func appendLogKey(dst []byte, rev int64, sub int) []byte {
	dst = append(dst, prefixLog)
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev))
	return binary.BigEndian.AppendUint32(dst, uint32(sub))
}

// logKeyRev decodes the revision of a change-log key.
func logKeyRev(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[1:9]))
}

// appendLeaseKey appends the key of lease id's record. Ids are signed on
// the wire; the two's-complement bits keep one record per id.
func appendLeaseKey(dst []byte, id int64) []byte {
	dst = append(dst, prefixLease)
	return binary.BigEndian.AppendUint64(dst, uint64(id))
}

// appendAttachKey appends the key recording that key is attached to lease
// id. The id is fixed-length, so the user key needs no escaping: the keys
// attached to one lease are one contiguous, byte-ordered range.
func appendAttachKey(dst []byte, id int64, key []byte) []byte {
	dst = append(dst, prefixAttach)
	dst = binary.BigEndian.AppendUint64(dst, uint64(id))
	return append(dst, key...)
}

// attachBounds returns the bounds of every attachment of lease id.
func attachBounds(id int64) (lower, upper []byte) {
	lower = appendAttachKey(nil, id, nil)
	upper = append([]byte(nil), lower...)
	for i := len(upper) - 1; i >= 0; i-- { // lower+1 as a 9-byte big-endian number
		upper[i]++
		if upper[i] != 0 {
			break
		}
	}
	return lower, upper
}

func metaKey(name string) []byte {
	return append([]byte{prefixMeta}, name...)
}

// Version record: kind(1) uvarint(sub) uvarint(create) uvarint(version)
// varint(lease) value; a tombstone is kind(1) uvarint(sub). The mod
// revision is in the key. The sub-revision (the change's index within its
// revision) is what etcd's key bucket and HashKV encode; records written
// before it was kept (kinds 1 and 2) decode with sub 0.
const (
	kindPut          byte = 1 // without sub: kind create version lease value
	kindTombstone    byte = 2 // without sub: kind
	kindPutSub       byte = 3
	kindTombstoneSub byte = 4
)

func appendVersionValue(dst []byte, sub int, create, version, lease int64, value []byte) []byte {
	dst = append(dst, kindPutSub)
	dst = binary.AppendUvarint(dst, uint64(sub))
	dst = binary.AppendUvarint(dst, uint64(create))
	dst = binary.AppendUvarint(dst, uint64(version))
	dst = binary.AppendVarint(dst, lease)
	return append(dst, value...)
}

func appendTombstoneValue(dst []byte, sub int) []byte {
	return binary.AppendUvarint(append(dst, kindTombstoneSub), uint64(sub))
}

// versionRecord is a decoded version; Value aliases the source buffer.
type versionRecord struct {
	tombstone bool
	sub       int64
	create    int64
	version   int64
	lease     int64
	value     []byte
}

func decodeVersionValue(b []byte) (versionRecord, error) {
	if len(b) == 0 {
		return versionRecord{}, errCorruptKey
	}
	var rec versionRecord
	kind := b[0]
	b = b[1:]
	if kind == kindPutSub || kind == kindTombstoneSub {
		sub, n := binary.Uvarint(b)
		if n <= 0 {
			return versionRecord{}, errCorruptKey
		}
		rec.sub, b = int64(sub), b[n:]
	}
	switch kind {
	case kindTombstone, kindTombstoneSub:
		rec.tombstone = true
		return rec, nil
	case kindPut, kindPutSub:
	default:
		return versionRecord{}, errCorruptKey
	}
	create, n := binary.Uvarint(b)
	if n <= 0 {
		return versionRecord{}, errCorruptKey
	}
	b = b[n:]
	version, n := binary.Uvarint(b)
	if n <= 0 {
		return versionRecord{}, errCorruptKey
	}
	b = b[n:]
	lease, n := binary.Varint(b)
	if n <= 0 {
		return versionRecord{}, errCorruptKey
	}
	rec.create, rec.version, rec.lease, rec.value = int64(create), int64(version), lease, b[n:]
	return rec, nil
}
