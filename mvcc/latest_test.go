package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// latestEnv runs the lookup tests with the committed versions in the
// memtable, flushed to tables (the prefix seek goes through their bloom
// filters), or compacted to the last level (whose filters are read too).
type latestEnv struct {
	t     *testing.T
	s     *Store
	where string
}

func newLatestEnv(t *testing.T, where string) *latestEnv {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &latestEnv{t: t, s: s, where: where}
}

// settle moves what is committed to where the test wants it.
func (e *latestEnv) settle() {
	e.t.Helper()
	if e.where == "memtable" {
		return
	}
	if err := e.s.DB().Flush(); err != nil {
		e.t.Fatal(err)
	}
	if e.where == "compacted" {
		if err := e.s.DB().Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			e.t.Fatal(err)
		}
	}
}

// batch runs each function as one transaction of a single batch, commits
// it and settles.
func (e *latestEnv) batch(txns ...func(tx *WriteTxn)) {
	e.t.Helper()
	b, err := e.s.NewBatch()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range txns {
		tx := b.Txn()
		f(tx)
		tx.End()
	}
	if err := b.Commit(); err != nil {
		e.t.Fatal(err)
	}
	e.settle()
}

func (e *latestEnv) put(tx *WriteTxn, key, value string, lease int64) *mvccpb.KeyValue {
	e.t.Helper()
	_, prev, err := tx.Put([]byte(key), []byte(value), lease)
	if err != nil {
		e.t.Fatal(err)
	}
	return prev
}

func (e *latestEnv) del(tx *WriteTxn, key, end string) {
	e.t.Helper()
	var endB []byte
	if end != "" {
		endB = []byte(end)
	}
	if _, err := tx.DeleteRange([]byte(key), endB); err != nil {
		e.t.Fatal(err)
	}
}

// wantKV checks a KeyValue (nil for none) against key=value@mod c=create v=version l=lease.
func (e *latestEnv) wantKV(what string, got *mvccpb.KeyValue, want string) {
	e.t.Helper()
	s := "nil"
	if got != nil {
		s = fmt.Sprintf("%s=%s@%d c=%d v=%d l=%d", got.Key, got.Value, got.ModRevision, got.CreateRevision, got.Version, got.Lease)
	}
	if s != want {
		e.t.Fatalf("%s (%s): %s, want %s", what, e.where, s, want)
	}
}

func (e *latestEnv) read(key string) *mvccpb.KeyValue {
	e.t.Helper()
	rr, err := e.s.Range(context.Background(), []byte(key), nil, RangeOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(rr.KVs) == 0 {
		return nil
	}
	return &rr.KVs[0]
}

// TestPutFindsLatestVersion: a Put's previous version (and so its create
// revision and version) comes from the newest write of the key wherever it
// is: an earlier batch in the memtable or in tables, an earlier txn of the
// same batch, the same txn; a tombstone, a DeleteRange's included, and a
// compacted-away history read as no key.
func TestPutFindsLatestVersion(t *testing.T) {
	for _, where := range []string{"memtable", "flushed", "compacted"} {
		t.Run(where, func(t *testing.T) {
			e := newLatestEnv(t, where)
			var prev *mvccpb.KeyValue
			e.batch(func(tx *WriteTxn) { e.wantKV("first put", e.put(tx, "a", "1", 0), "nil") }) // rev 2
			e.batch(func(tx *WriteTxn) { prev = e.put(tx, "a", "2", 0) })                        // rev 3
			e.wantKV("overwrite", prev, "a=1@2 c=2 v=1 l=0")
			e.wantKV("read", e.read("a"), "a=2@3 c=2 v=2 l=0")

			// Delete, then put again: a new life of the key.
			e.batch(func(tx *WriteTxn) { e.del(tx, "a", "") })            // rev 4
			e.batch(func(tx *WriteTxn) { prev = e.put(tx, "a", "3", 0) }) // rev 5
			e.wantKV("put after delete", prev, "nil")
			e.wantKV("read", e.read("a"), "a=3@5 c=5 v=1 l=0")

			// Two txns of one batch (group commit) write the same key.
			var p1, p2 *mvccpb.KeyValue
			e.batch(
				func(tx *WriteTxn) { p1 = e.put(tx, "b", "1", 0) }, // rev 6
				func(tx *WriteTxn) { p2 = e.put(tx, "b", "2", 0) }, // rev 7
				func(tx *WriteTxn) { p2 = e.put(tx, "a", "4", 0) }, // rev 8
			)
			e.wantKV("first txn", p1, "nil")
			e.wantKV("earlier txn of the batch", p2, "a=3@5 c=5 v=1 l=0")
			e.wantKV("read", e.read("b"), "b=2@7 c=6 v=2 l=0")

			// A DeleteRange in one txn, a put in the next, same batch.
			e.batch(
				func(tx *WriteTxn) { e.del(tx, "a", "c") },         // rev 9
				func(tx *WriteTxn) { p1 = e.put(tx, "b", "3", 0) }, // rev 10
			)
			e.wantKV("put after DeleteRange in the batch", p1, "nil")
			e.wantKV("read", e.read("b"), "b=3@10 c=10 v=1 l=0")
			e.wantKV("read", e.read("a"), "nil")

			// Delete then put in one txn (etcd's server refuses the request;
			// the store treats it as a new life of the key at the txn's rev).
			e.batch(func(tx *WriteTxn) {
				e.del(tx, "b", "")
				p1 = e.put(tx, "b", "4", 0)
				p2 = e.put(tx, "c", "1", 0)
			}) // rev 11
			e.wantKV("put after delete in one txn", p1, "nil")
			e.wantKV("read", e.read("b"), "b=4@11 c=11 v=1 l=0")

			// A put reads its own txn's earlier writes (two keys, the second
			// written twice by separate txns in one batch after a read).
			e.batch(func(tx *WriteTxn) {
				rr, err := tx.Range(context.Background(), []byte("c"), nil, RangeOptions{})
				if err != nil || len(rr.KVs) != 1 {
					t.Fatalf("range in txn: %v %v", rr, err)
				}
				p1 = e.put(tx, "c", "2", 0)
			}) // rev 12
			e.wantKV("after a read in the txn", p1, "c=1@11 c=11 v=1 l=0")
		})
	}
}

// TestPutAfterCompactedTombstone: once compaction removed a deleted key's
// versions (its tombstone included), a put starts the key's life anew, as
// it does while the tombstone is still there.
func TestPutAfterCompactedTombstone(t *testing.T) {
	for _, where := range []string{"memtable", "flushed", "compacted"} {
		t.Run(where, func(t *testing.T) {
			e := newLatestEnv(t, where)
			e.batch(func(tx *WriteTxn) { e.put(tx, "k", "1", 0) }) // rev 2
			e.batch(func(tx *WriteTxn) { e.put(tx, "k", "2", 0) }) // rev 3
			e.batch(func(tx *WriteTxn) { e.del(tx, "k", "") })     // rev 4
			e.batch(func(tx *WriteTxn) { e.put(tx, "x", "1", 0) }) // rev 5
			b, err := e.s.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			done, err := b.Compact(5)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			<-done
			e.settle()
			n := 0
			lower, upper := (&scratch{}).keyBounds([]byte("k"))
			it, err := e.s.DB().NewIter(nil)
			if err != nil {
				t.Fatal(err)
			}
			for ok := it.SeekGE(lower); ok && bytes.Compare(it.Key(), upper) < 0; ok = it.Next() {
				n++
			}
			it.Close()
			if n != 0 {
				t.Fatalf("%d versions of k left after the compaction", n)
			}
			var prev *mvccpb.KeyValue
			e.batch(func(tx *WriteTxn) { prev = e.put(tx, "k", "3", 0) }) // rev 6
			e.wantKV("put after compacted tombstone", prev, "nil")
			e.wantKV("read", e.read("k"), "k=3@6 c=6 v=1 l=0")
		})
	}
}

// TestPutMovesLeaseFromTables: the previous version's lease, found in
// tables, is detached when a put changes it.
func TestPutMovesLeaseFromTables(t *testing.T) {
	for _, where := range []string{"memtable", "flushed", "compacted"} {
		t.Run(where, func(t *testing.T) {
			e := newLatestEnv(t, where)
			e.batch(func(tx *WriteTxn) { e.put(tx, "k", "1", 7) })
			var prev *mvccpb.KeyValue
			e.batch(func(tx *WriteTxn) { prev = e.put(tx, "k", "2", 8) })
			e.wantKV("prev", prev, "k=1@2 c=2 v=1 l=7")
			rt, err := e.s.Read()
			if err != nil {
				t.Fatal(err)
			}
			defer rt.End()
			for id, want := range map[int64]int{7: 0, 8: 1} {
				keys, err := rt.LeaseKeys(id)
				if err != nil || len(keys) != want {
					t.Fatalf("lease %d keys %q, %v; want %d", id, keys, err, want)
				}
			}
		})
	}
}

// TestPutAfterReplace: after the store's contents are replaced (a Raft
// snapshot installed), a put continues the new contents' history of the
// key, not the old one's.
func TestPutAfterReplace(t *testing.T) {
	src := newLatestEnv(t, "flushed")
	dst := newLatestEnv(t, "flushed")
	for i := 0; i < 3; i++ {
		src.batch(func(tx *WriteTxn) { src.put(tx, "k", fmt.Sprint("src", i), 0) }) // revs 2-4
	}
	dst.batch(func(tx *WriteTxn) { dst.put(tx, "k", "dst", 0) }) // rev 2
	if err := dst.s.Replace(copyInto(t, dst.s, src.s)); err != nil {
		t.Fatal(err)
	}
	var prev *mvccpb.KeyValue
	dst.batch(func(tx *WriteTxn) { prev = dst.put(tx, "k", "after", 0) })
	dst.wantKV("prev after replace", prev, "k=src2@4 c=2 v=3 l=0")
	dst.wantKV("read", dst.read("k"), "k=after@5 c=2 v=4 l=0")
}

// TestTablesCarryBloomFilters: flushed and compacted tables are written
// with the bloom filter latest's prefix seeks rely on to skip them.
func TestTablesCarryBloomFilters(t *testing.T) {
	e := newLatestEnv(t, "compacted")
	e.batch(func(tx *WriteTxn) { e.put(tx, "k", "1", 0) })
	levels, err := e.s.DB().SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tables := range levels {
		for _, tbl := range tables {
			n++
			if got := tbl.Properties.FilterPolicyName; got != filterPolicy.Name() {
				t.Errorf("table %v: filter policy %q, want %q", tbl.FileNum, got, filterPolicy.Name())
			}
		}
	}
	if n == 0 {
		t.Fatal("no table after a compaction")
	}
}

// TestDatabaseOpensWithoutTheSplit: the comparer keeps Pebble's default
// name, so a database with filtered tables opens with Pebble's defaults (an
// older binary, a maintenance tool) and a store reopened afterwards still
// finds every key's latest version.
func TestDatabaseOpensWithoutTheSplit(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	e := &latestEnv{t: t, s: s, where: "flushed"}
	e.batch(func(tx *WriteTxn) { e.put(tx, "a", "1", 0) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: pebbleLogger{lg: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatalf("open with Pebble's default comparer: %v", err)
	}
	if err := db.Set(appendVersionKey(nil, []byte("b"), 3), appendVersionValue(nil, 0, 3, 1, 0, []byte("1")), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open("db", Options{FS: fs}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.s = s
	var pa, pb *mvccpb.KeyValue
	e.batch(func(tx *WriteTxn) { pa = e.put(tx, "a", "2", 0); pb = e.put(tx, "b", "2", 0) })
	e.wantKV("a, from a filtered table", pa, "a=1@2 c=2 v=1 l=0")
	e.wantKV("b, from a table without a filter", pb, "b=1@3 c=3 v=1 l=0")
}
