package mvcc

import (
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// comparer is Pebble's byte-wise comparer with a Split that cuts the
// revision off a version key: every version of one user key shares a
// prefix, so the tables' bloom filters are built over user keys and a
// lookup of a key's newest version (WriteTxn.latest) is a prefix seek that
// skips every table not holding the key.
//
// NB: the name stays Pebble's default: Pebble refuses to open a database
// written under another comparer name, and the order is unchanged (Split
// only chooses what the filters hash). Tables written before filters were
// kept (and tables a Raft snapshot ingests) carry no filter and are simply
// seeked. A binary without this Split opens the database as before; it
// configures no filter, so it never consults the filters written here.
var comparer = func() *pebble.Comparer {
	c := *pebble.DefaultComparer
	c.Split = splitVersionKey
	return &c
}()

// filterPolicy is the bloom filter of every level (10 bits per key: about
// 1% false positives).
var filterPolicy = bloom.FilterPolicy(10)

// splitVersionKey returns the length of k without its revision if k is a
// version key ('k' esc(key) 0x00 0x01 ^rev), else len(k). Escaping makes
// 0x00 0x01 appear only as the terminator, so a key of the 'k' keyspace
// with the terminator 8 bytes before its end is a version key, and a bare
// prefix (a seek key or bound) never looks like one.
func splitVersionKey(k []byte) int {
	n := len(k)
	if n >= 1+2+revSuffixLen && k[0] == prefixKey && k[n-revSuffixLen-2] == escByte && k[n-revSuffixLen-1] == escTerm {
		return n - revSuffixLen
	}
	return n
}
