package mvcc

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestPutSkipsMemtablesExactly: once the tables hold everything written
// before, a put of a key not written since is answered by the tables alone,
// and every other put (a key in the memtable, in the same batch, deleted
// in the memtable) still sees its newest write.
func TestPutSkipsMemtablesExactly(t *testing.T) {
	e := newLatestEnv(t, "memtable")
	e.batch(func(tx *WriteTxn) { e.put(tx, "t", "1", 0) }, func(tx *WriteTxn) { e.put(tx, "d", "1", 0) }) // revs 2, 3
	if err := e.s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	seeks := e.s.recent.seeks
	e.batch(func(tx *WriteTxn) { e.wantKV("new key", e.put(tx, "n", "1", 0), "nil") }) // rev 4
	if got := e.s.recent.seeks - seeks; got != 1 {
		t.Fatalf("lookups from the tables alone: %d, want 1 (the set is not used)", got)
	}
	e.batch(
		func(tx *WriteTxn) { e.wantKV("flushed key", e.put(tx, "t", "2", 7), "t=1@2 c=2 v=1 l=0") }, // rev 5
		func(tx *WriteTxn) { e.wantKV("memtable key", e.put(tx, "n", "2", 0), "n=1@4 c=4 v=1 l=0") },
		func(tx *WriteTxn) { e.wantKV("same batch", e.put(tx, "t", "3", 0), "t=2@5 c=2 v=2 l=7") },
		func(tx *WriteTxn) { e.del(tx, "d", "") }, // rev 8
	)
	e.batch(func(tx *WriteTxn) { e.wantKV("deleted in the memtable", e.put(tx, "d", "2", 0), "nil") })
	// A flush lets the set drop what the tables now hold: the same keys
	// are then answered by the tables, still exactly.
	if err := e.s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	seeks = e.s.recent.seeks
	e.batch(
		func(tx *WriteTxn) { e.wantKV("flushed overwrite", e.put(tx, "t", "4", 0), "t=3@7 c=2 v=3 l=0") },
		func(tx *WriteTxn) { e.wantKV("flushed recreate", e.put(tx, "d", "3", 0), "d=2@9 c=9 v=1 l=0") },
	)
	if got := e.s.recent.seeks - seeks; got != 2 {
		t.Fatalf("lookups from the tables alone after the flush: %d, want 2", got)
	}
	if e.s.recent.n != 2 {
		t.Fatalf("hashes held: %d, want 2 (t, d of the last batch)", e.s.recent.n)
	}
}

// TestPutAfterReplaceWithOlderRevisions: contents replaced by a snapshot
// older than the store's own tables (revisions go back) are what a put
// sees, although the old tables' revision is above the new one's.
func TestPutAfterReplaceWithOlderRevisions(t *testing.T) {
	src := newLatestEnv(t, "memtable")
	dst := newLatestEnv(t, "flushed")
	src.batch(func(tx *WriteTxn) { src.put(tx, "k", "src", 0) }) // rev 2
	for i := 0; i < 5; i++ {
		dst.batch(func(tx *WriteTxn) { dst.put(tx, fmt.Sprint("x", i), "dst", 0) }) // revs 2-6
	}
	dst.batch(func(tx *WriteTxn) { dst.put(tx, "y", "dst", 0) }) // a set the tables cover
	if err := dst.s.Replace(copyInto(t, dst.s, src.s)); err != nil {
		t.Fatal(err)
	}
	dst.where = "memtable"
	dst.batch(
		func(tx *WriteTxn) { dst.wantKV("key gone with the replace", dst.put(tx, "x0", "after", 0), "nil") },
		func(tx *WriteTxn) { dst.wantKV("replaced key", dst.put(tx, "k", "after", 0), "k=src@2 c=2 v=1 l=0") },
	)
	if dst.s.recent.seeks == 0 {
		t.Fatal("no lookup was answered by the tables alone after the replace")
	}
}

// TestPutAfterCrashReplay: versions a crash left only in the WAL (replayed
// into a memtable at Open) are found; the set is not used before the
// tables hold them.
func TestPutAfterCrashReplay(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s, err := Open("db", Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	e := &latestEnv{t: t, s: s, where: "memtable"}
	e.batch(func(tx *WriteTxn) { e.put(tx, "a", "1", 0) }) // rev 2, synced
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	e.batch(func(tx *WriteTxn) { e.put(tx, "b", "1", 0) }) // rev 3, synced, WAL only
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s, err = Open("db", Options{FS: crashed})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e = &latestEnv{t: t, s: s, where: "memtable"}
	e.batch(
		func(tx *WriteTxn) { e.wantKV("replayed key", e.put(tx, "b", "2", 0), "b=1@3 c=3 v=1 l=0") },
		func(tx *WriteTxn) { e.wantKV("flushed key", e.put(tx, "a", "2", 0), "a=1@2 c=2 v=1 l=0") },
	)
}

// TestRecentKeysStartOver: past its bound the set starts over and is not
// used until the tables hold everything it forgot.
func TestRecentKeysStartOver(t *testing.T) {
	defer func(n int) { recentKeysMax = n }(recentKeysMax)
	recentKeysMax = 3
	e := newLatestEnv(t, "memtable")
	e.batch(func(tx *WriteTxn) { e.put(tx, "a", "1", 0) })
	if err := e.s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	e.batch(
		func(tx *WriteTxn) { e.put(tx, "b", "1", 0) },
		func(tx *WriteTxn) { e.put(tx, "c", "1", 0) },
		func(tx *WriteTxn) { e.put(tx, "d", "1", 0) },
		func(tx *WriteTxn) { e.put(tx, "e", "1", 0) }, // starts over
		func(tx *WriteTxn) { e.wantKV("forgotten, same batch", e.put(tx, "b", "2", 0), "b=1@3 c=3 v=1 l=0") },
	)
	e.batch(func(tx *WriteTxn) { e.wantKV("forgotten", e.put(tx, "c", "2", 0), "c=1@4 c=4 v=1 l=0") })
	if err := e.s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	seeks := e.s.recent.seeks
	e.batch(func(tx *WriteTxn) { e.wantKV("after the flush", e.put(tx, "d", "2", 0), "d=1@5 c=5 v=1 l=0") })
	if e.s.recent.seeks == seeks {
		t.Fatal("the set was not used again once the tables caught up")
	}
}

// TestImportAbortStopsTableLookups: versions an aborted import left behind
// carry no revision the tables can vouch for.
func TestImportAbortStopsTableLookups(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	im, err := s.Import(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Put([]byte("k"), 5, 0, false, 5, 1, 0, []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := im.b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	im.Abort()
	e := &latestEnv{t: t, s: s, where: "flushed"}
	e.batch(func(tx *WriteTxn) { e.put(tx, "a", "1", 0) })
	e.batch(func(tx *WriteTxn) { e.wantKV("aborted import's key", e.put(tx, "k", "2", 0), "k=v@5 c=5 v=1 l=0") })
	if s.recent.seeks != 0 {
		t.Fatalf("lookups from the tables alone after an aborted import: %d", s.recent.seeks)
	}
}
