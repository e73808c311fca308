package mvcc

import (
	"bytes"

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

// splitVersionKey returns the length of k's prefix: for a key of the 'k'
// keyspace, up to and including the first terminator (0x00 0x01), else all
// of k. For a version key ('k' esc(key) 0x00 0x01 ^rev) that is the key
// without its revision.
//
// NB: Pebble needs Compare(a, b) to equal "prefixes byte-wise, then
// suffixes" for every key it meets, including the shortened separators it
// makes for index blocks (such as a version prefix followed by seven 0xff
// bytes): a rule that only recognized whole 8-byte revisions split those
// differently from the version keys around them and broke that order.
// Escaping makes 0x00 0x01 appear in a 'k' key only as the terminator, so
// no key's prefix ending in it can be a proper prefix of another key's
// prefix, which is what makes the two orders agree
// (TestComparerSplitOrder).
func splitVersionKey(k []byte) int {
	if len(k) < 3 || k[0] != prefixKey {
		return len(k)
	}
	if i := bytes.Index(k[1:], terminator); i >= 0 {
		return 1 + i + len(terminator)
	}
	return len(k)
}

// terminator ends an escaped user key.
var terminator = []byte{escByte, escTerm}
