package mvcc

import (
	"encoding/binary"
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"
)

// A put's lookup of its key's newest version (WriteTxn.latest) seeks every
// memtable's skiplist, even for a key never written: no filter covers the
// memtables, and that seek was most of a put's apply. recentKeys lets a put
// skip them, exactly. It holds the hashes of every key written since the
// tables last caught up (a superset: a hash collision or a write that was
// aborted only sends a lookup down the full path). A key not in it has no
// version in the memtables or the batch, so a seek that reads the tables
// alone (Pebble's OnlyReadGuaranteedDurable) finds its newest version.
//
// Which writes the tables hold is read from the tables themselves: every
// batch writes the store's revision (metaRev) in the same Pebble batch as
// its versions, memtables are flushed in commit order, and revisions grow
// with commits, so a table-only view whose metaRev is F holds every
// version written at or below F. A generation of hashes whose newest
// revision is at or below F can go. Everything written before the set
// began (cover) must be in the tables too: until a view shows F ≥ cover the
// set is not used (after Open, until the memtables the WAL replay filled
// are flushed; Replace and Import flush before they reset it, since their
// revisions need not follow the ones before).
type recentKeys struct {
	seed   maphash.Seed
	gens   []recentGen // oldest first
	n      int         // hashes held, over every generation
	cover  int64       // writes above it are in gens; those at or below predate the set
	ready  bool        // a table-only view has shown F ≥ cover
	durRev int64       // F, as last read
	durGen uint64      // Store.readGen when F was read; ^0: to read
	off    bool        // never used again (a reset whose flush failed)
	seeks  int64       // lookups answered by the tables alone (tests)
	latest latestCache // the newest versions of keys written lately (latestcache.go)
}

// recentGen is the hashes written between two flushes seen, and the newest
// revision any of them was written at.
type recentGen struct {
	keys   map[uint64]struct{}
	maxRev int64
}

// recentKeysMax bounds the hashes held (~16 B each): past it the set starts
// over, unused until the tables catch up. Memtables hold far fewer keys.
// A variable for tests.
var recentKeysMax = 1 << 20

// durableIterOptions read the tables only, with every level's filters.
var durableIterOptions = pebble.IterOptions{OnlyReadGuaranteedDurable: true, UseL6Filters: true}

// reset forgets every hash; writes at or below cover must be in the tables
// before the set is used again. The caller holds writeMu.
func (r *recentKeys) reset(cover int64) {
	r.latest.reset()
	clear(r.gens)
	r.gens = r.gens[:0]
	r.n = 0
	r.cover = cover
	r.ready = false
	r.durRev = 0
	r.durGen = ^uint64(0)
}

func (r *recentKeys) hash(key []byte) uint64 { return maphash.Bytes(r.seed, key) }

// has reports whether a key of hash h may have been written since the
// tables last caught up.
func (r *recentKeys) has(h uint64) bool {
	for i := len(r.gens) - 1; i >= 0; i-- {
		if _, ok := r.gens[i].keys[h]; ok {
			return true
		}
	}
	return false
}

// add records a write of the key of hash h at rev.
func (r *recentKeys) add(h uint64, rev int64) {
	if r.n >= recentKeysMax {
		// Starts over: this write and everything before it (rev is the
		// batch's newest) must reach the tables first.
		r.reset(rev)
		return
	}
	if len(r.gens) == 0 {
		r.gens = append(r.gens, recentGen{keys: make(map[uint64]struct{})})
	}
	g := &r.gens[len(r.gens)-1]
	if _, ok := g.keys[h]; !ok {
		g.keys[h] = struct{}{}
		r.n++
	}
	g.maxRev = max(g.maxRev, rev)
}

// caughtUp takes F from it (a table-only view created at Store.readGen
// gen): generations at or below F are dropped, the newest is closed to
// further writes, and the set becomes usable once F reaches cover.
func (r *recentKeys) caughtUp(it *pebble.Iterator, gen uint64) error {
	f, err := durableRev(it)
	if err != nil {
		return err
	}
	r.durGen = gen
	if f <= r.durRev && r.ready {
		return nil
	}
	r.durRev = f
	if f >= r.cover {
		r.ready = true
	}
	i := 0
	for i < len(r.gens) && r.gens[i].maxRev <= f {
		r.n -= len(r.gens[i].keys)
		i++
	}
	r.gens = append(r.gens[:0], r.gens[i:]...)
	clear(r.gens[len(r.gens):cap(r.gens)])
	if n := len(r.gens); n > 0 && len(r.gens[n-1].keys) > 0 {
		// A new generation starts, so that this one goes as soon as the
		// tables pass its newest write; the sizes of the last one are a
		// good first guess.
		r.gens = append(r.gens, recentGen{keys: make(map[uint64]struct{}, len(r.gens[n-1].keys))})
	}
	return nil
}

// durableRev is the store revision a table-only view holds: revision 1 (the
// empty store) if no batch reached the tables yet.
func durableRev(it *pebble.Iterator) (int64, error) {
	k := metaKey(metaRev)
	if !it.SeekGE(k) || string(it.Key()) != string(k) {
		return 1, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, errCorruptKey
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// resetRecent empties the set after the database's contents were replaced
// (a snapshot, an import) at revision rev: the replacing writes need not
// have revisions above the earlier ones, so the memtables are flushed
// first, and every table-only view created afterwards holds them. The
// caller holds writeMu.
func (s *Store) resetRecent(rev int64) {
	s.recent.latest.reset() // NB: even when the set is off
	if s.recent.off {
		return
	}
	if err := s.db.Flush(); err != nil {
		s.opts.Logger.Warn("flush after replacing the store's contents failed; puts seek the memtables from now on", "err", err)
		s.recent.off = true
		return
	}
	s.recent.reset(rev)
}
