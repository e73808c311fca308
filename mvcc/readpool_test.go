package mvcc

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func putCommitted(t testing.TB, s *Store, key, value string) {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	if _, _, err := tx.Put([]byte(key), []byte(value), 0); err != nil {
		t.Fatal(err)
	}
	tx.End()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

func idleViews(s *Store) int {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	return len(s.reads.free)
}

// TestReadViewReuse: a view is reused while the revision stands still, never
// after a commit; a view held across a commit keeps reading at its own
// revision and is then closed rather than pooled; Close closes idle views
// (Pebble reports leaked iterators otherwise).
func TestReadViewReuse(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	putCommitted(t, s, "k", "1")

	v1, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	v1.End()
	v2, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if v2 != v1 {
		t.Fatal("a view was not reused while the revision stood still")
	}
	// v2 stays open across a commit.
	putCommitted(t, s, "k", "2")
	rr, err := v2.Range(ctx, []byte("k"), nil, RangeOptions{})
	if err != nil || v2.Rev() != 2 || string(rr.KVs[0].Value) != "1" {
		t.Fatalf("held view after a commit: rev %d, %v, %v; want its own revision 2 and value 1", v2.Rev(), rr, err)
	}
	v2.End()
	if n := idleViews(s); n != 0 {
		t.Fatalf("%d idle views after the revision moved on; a stale view was pooled", n)
	}
	v3, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if v3 == v2 {
		t.Fatal("a stale view was reused")
	}
	rr, err = v3.Range(ctx, []byte("k"), nil, RangeOptions{})
	if err != nil || v3.Rev() != 3 || string(rr.KVs[0].Value) != "2" {
		t.Fatalf("fresh view: rev %d, %v, %v; want revision 3 and value 2", v3.Rev(), rr, err)
	}
	// Bounds of a reused view are replaced by the next read's.
	putCommitted(t, s, "j", "x")
	v3.End()
	for _, c := range []struct {
		key, end string
		want     int
	}{{"a", "z", 2}, {"k", "", 1}, {"j", "k", 1}, {"a", "b", 0}, {"j", "", 1}} {
		var end []byte
		if c.end != "" {
			end = []byte(c.end)
		}
		rr, err := s.Range(ctx, []byte(c.key), end, RangeOptions{})
		if err != nil || len(rr.KVs) != c.want || rr.Count != c.want {
			t.Fatalf("range %q-%q: %v, %v; want %d keys", c.key, c.end, rr, err, c.want)
		}
	}
	if n := idleViews(s); n != 1 {
		t.Fatalf("%d idle views after sequential reads, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close with an idle view: %v", err)
	}
}

// TestReadViewsDroppedOnFlush: idle views pin Pebble's memtables and files,
// so a flush makes them stale and they are closed without another read.
func TestReadViewsDroppedOnFlush(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putCommitted(t, s, "k", "v")
	v, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	v.End()
	if n := idleViews(s); n != 1 {
		t.Fatalf("%d idle views, want 1", n)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for idleViews(s) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle view still open 10s after a flush")
		}
		time.Sleep(time.Millisecond)
	}
	v2, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v {
		t.Fatal("a view from before the flush was reused")
	}
	v2.End()
}

// TestReadViewHammer: readers on many goroutines while one writer commits a
// revision after another and compacts behind itself. Every revision rewrites
// key "k" with its own number, so a read that sees an older state than the
// revision it was started after, or a view reused across a commit, shows up
// as a wrong value. Reads at older revisions still readable must see them.
func TestReadViewHammer(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem(), CompactionBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	putCommitted(t, s, "k", "2")
	const writes = 300
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for r := 0; r < 8; r++ {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				before := s.Rev()
				tx, err := s.Read()
				if err != nil {
					errc <- err
					return
				}
				err = func() error {
					defer tx.End()
					if tx.Rev() < before {
						return fmt.Errorf("view at revision %d started after revision %d", tx.Rev(), before)
					}
					rev := int64(0)
					if n%3 == 0 { // an older revision, if still readable
						rev = max(tx.FirstRev(), tx.Rev()-5, 2)
					}
					rr, err := tx.Range(ctx, []byte("k"), nil, RangeOptions{Rev: rev})
					if err != nil {
						return fmt.Errorf("read at %d of view %d (compacted %d): %w", rev, tx.Rev(), tx.FirstRev(), err)
					}
					want := tx.Rev()
					if rev != 0 {
						want = rev
					}
					if len(rr.KVs) != 1 || string(rr.KVs[0].Value) != strconv.FormatInt(want, 10) || rr.KVs[0].ModRevision != want {
						return fmt.Errorf("read at %d of view %d: %v, want the value written at %d", rev, tx.Rev(), rr.KVs, want)
					}
					return nil
				}()
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	for i := 0; i < writes; i++ {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		if _, _, err := tx.Put([]byte("k"), []byte(strconv.FormatInt(b.Rev()+1, 10)), 0); err != nil {
			t.Fatal(err)
		}
		tx.End()
		if i%10 == 9 {
			if _, err := b.Compact(b.Rev() - 3); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			if err := s.DB().Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
