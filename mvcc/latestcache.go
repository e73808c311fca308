package mvcc

import "bytes"

// latestCache remembers, for the keys overwritten lately, what a put needs from
// the key's newest version besides its value: its revision, create
// revision, version and lease, or that it is a tombstone. A put of a key
// that sits only in Pebble's tables otherwise reads the data block of its
// newest version in every level that holds one of its versions (bloom
// filters pass for older versions too), and those blocks are seldom cached:
// flushes and compactions keep writing new ones. That read was about a
// third of the server's CPU per put once a benchmark's keys were
// overwritten. Values are not kept: a put learns the previous value only
// when someone needs it (the request's prev_kv, a watcher with prev_kv),
// and then reads Pebble as before.
//
// A key enters the cache when a put finds a previous version (a load of
// new keys would only churn it) and stays while it is written. Entries are
// exact: every put and delete of a cached key updates its entry as it
// writes the version, an aborted batch empties the cache, and so does
// replacing the store's contents (recentKeys.reset). Memory is bounded: two
// generations of at most latestCacheMax/2 bytes each; when the newer one
// is full the older one is dropped, so keys rewritten within about a
// generation stay. Keys are hashed (Store.recent's hash) into maps without
// pointers, so the garbage collector does not scan them; the key bytes sit
// in an arena per generation and are compared on every hit, so a hash
// collision only costs a lookup in Pebble. Used under Store.writeMu.
type latestCache struct {
	max  int // bytes of both generations; 0: off
	cur  latestGen
	prev latestGen
}

type latestGen struct {
	m     map[uint64]latestEntry
	arena []byte // the keys, back to back
	bytes int    // an estimate of what the generation holds
}

// latestEntry is the newest version of a key: version 0 a tombstone.
type latestEntry struct {
	mod, create, version, lease int64
	off, n                      uint32 // the key in the generation's arena
}

// latestEntryBytes estimates an entry's memory besides its key: the map's
// slot (hash and entry) with its control byte and load factor.
const latestEntryBytes = 64

// latestCacheMax is the cache's default bound in bytes: a working set of
// some 200,000 short keys, or 100,000 of Kubernetes' (~80 B).
const latestCacheMax = 16 << 20

func (c *latestCache) get(h uint64, key []byte) (latestEntry, bool) {
	if e, ok := c.cur.get(h, key); ok {
		return e, true
	}
	return c.prev.get(h, key)
}

func (g *latestGen) get(h uint64, key []byte) (latestEntry, bool) {
	e, ok := g.m[h]
	if !ok || !bytes.Equal(g.arena[e.off:e.off+e.n], key) {
		return latestEntry{}, false
	}
	return e, true
}

// set records e as the newest version of key (of hash h).
func (c *latestCache) set(h uint64, key []byte, e latestEntry) {
	if c.max <= 0 || len(key) > c.max/64 {
		// NB: a long key is not worth its room; an entry it replaces goes.
		c.drop(h)
		return
	}
	if c.cur.m == nil {
		// NB: not sized after prev: the one before it may not be
		// collected yet.
		c.cur.m = make(map[uint64]latestEntry)
	}
	if old, ok := c.cur.m[h]; ok && bytes.Equal(c.cur.arena[old.off:old.off+old.n], key) {
		e.off, e.n = old.off, old.n
		c.cur.m[h] = e
		return
	}
	if len(c.prev.m) > 0 {
		delete(c.prev.m, h) // shadowed from now on
	}
	e.off, e.n = uint32(len(c.cur.arena)), uint32(len(key))
	c.cur.arena = append(c.cur.arena, key...)
	c.cur.m[h] = e
	c.cur.bytes += latestEntryBytes + len(key)
	if c.cur.bytes >= c.max/2 {
		c.prev = c.cur
		c.cur = latestGen{}
	}
}

// drop forgets the key of hash h, whatever it is.
func (c *latestCache) drop(h uint64) {
	delete(c.cur.m, h)
	delete(c.prev.m, h)
}

// reset forgets every entry.
func (c *latestCache) reset() {
	c.cur, c.prev = latestGen{}, latestGen{}
}
