package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestOnFinishHooks(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	hook := func(name string) func(bool) {
		return func(committed bool) {
			// Hooks run before the next batch may start, with the batch's
			// revision already published.
			got = append(got, name+map[bool]string{true: ":committed", false: ":aborted"}[committed])
			if committed && s.Rev() != 2 {
				t.Errorf("hook sees store revision %d, want 2", s.Rev())
			}
		}
	}

	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	if _, _, err := tx.Put([]byte("k"), []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	tx.End()
	b.OnFinish(hook("a"))
	b.OnFinish(hook("b"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}

	b, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	b.OnFinish(hook("c"))
	b.Abort()

	want := []string{"a:committed", "b:committed", "c:aborted"}
	if len(got) != len(want) {
		t.Fatalf("hooks ran %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hooks ran %v, want %v", got, want)
		}
	}
}

// TestEmptyRangeKeepsBatchIterator is a regression test: a range whose end
// sorts before its key used to position the batch's Pebble iterator with a
// lower bound above its upper bound, after which (with attachment keys in
// the sstables, after a reopen) the next put of the batch missed the key's
// previous version.
func TestEmptyRangeKeepsBatchIterator(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	step := func(f func(tx *WriteTxn)) {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		f(tx)
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	put := func(tx *WriteTxn, k string, lease int64) *mvccpb.KeyValue {
		_, prev, err := tx.Put([]byte(k), []byte("v"), lease)
		if err != nil {
			t.Error(err) // not Fatal: the batch must still be committed
		}
		return prev
	}
	step(func(tx *WriteTxn) { put(tx, "a", 1); put(tx, "a\x00", 1) })
	step(func(tx *WriteTxn) { put(tx, "c", 1); put(tx, "a\x00b", 2); put(tx, "b", 1) })
	step(func(tx *WriteTxn) { put(tx, "b\xff", 0) })
	s.Close()
	if s, err = Open("db", Options{FS: fs}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	step(func(tx *WriteTxn) {
		put(tx, "ab", 2)
		if kvs, err := tx.DeleteRange([]byte("b\xff"), []byte("\x00")); err != nil || len(kvs) != 0 {
			t.Errorf("inverted delete: %v, %v", kvs, err)
		}
		if prev := put(tx, "a\x00b", 1); prev == nil || prev.ModRevision != 3 {
			t.Errorf("put after an empty range: prev %v, want the version at revision 3", prev)
		}
	})
}
