package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
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
