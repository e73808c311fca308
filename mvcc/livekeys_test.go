package mvcc

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestLiveKeys: the live-key count follows creates and deletes (in one
// batch, one txn, a DeleteRange), not overwrites or aborted batches; it
// survives a restart, and a database whose count is missing or stale (an
// older binary wrote after it) is counted again; a replaced store takes
// its new contents' count.
func TestLiveKeys(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	e := &latestEnv{t: t, s: s, where: "memtable"}
	want := func(what string, n int64) {
		t.Helper()
		if got := e.s.LiveKeys(); got != n {
			t.Fatalf("%s: LiveKeys %d, want %d", what, got, n)
		}
		c, err := countLiveKeys(e.s.DB())
		if err != nil || c != n {
			t.Fatalf("%s: counted %d, %v; want %d", what, c, err, n)
		}
	}
	want("empty", 0)
	e.batch(
		func(tx *WriteTxn) { e.put(tx, "a", "1", 0); e.put(tx, "b", "1", 0) },
		func(tx *WriteTxn) { e.put(tx, "a", "2", 0); e.put(tx, "c", "1", 0) },
	)
	want("three creates and an overwrite", 3)
	e.batch(func(tx *WriteTxn) { e.del(tx, "a", "c") }, func(tx *WriteTxn) { e.del(tx, "zz", "") })
	want("DeleteRange of two, delete of none", 1)
	e.batch(func(tx *WriteTxn) { e.del(tx, "c", ""); e.put(tx, "c", "2", 0); e.put(tx, "d", "1", 0) })
	want("delete and put again in one txn, and a create", 2)

	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	e.put(tx, "x", "1", 0)
	tx.End()
	b.Abort()
	want("aborted batch", 2)

	for i := 0; i < 10; i++ {
		e.batch(func(tx *WriteTxn) { e.put(tx, fmt.Sprint("k", i), "v", 0) })
	}
	want("ten more", 12)
	reopen := func() {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open("db", Options{FS: fs}); err != nil {
			t.Fatal(err)
		}
		e.s = s
	}
	reopen()
	want("after a restart", 12)

	// A stale count (as an older binary leaves it: not written at the
	// store's revision) and a missing one are counted again.
	if err := s.DB().Set(metaKey(metaLiveKeys), appendLiveKeys(nil, 99, s.Rev()-1), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	reopen()
	want("stale count", 12)
	if err := s.DB().Delete(metaKey(metaLiveKeys), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	reopen()
	want("missing count", 12)

	src := newLatestEnv(t, "flushed")
	src.batch(func(tx *WriteTxn) { src.put(tx, "only", "1", 0) })
	if err := s.Replace(copyInto(t, s, src.s)); err != nil {
		t.Fatal(err)
	}
	want("after replace", 1)
}
