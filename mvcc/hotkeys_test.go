package mvcc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// getKey reads one key through a fresh view at rev (0: the view's).
func getKey(t *testing.T, s *Store, key string, ro RangeOptions) (*RangeResult, error) {
	t.Helper()
	tx, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.End()
	return tx.Range(context.Background(), []byte(key), nil, ro)
}

// wantKey reads key as getKey and checks the result is value at mod (""
// with mod 0: absent).
func wantKey(t *testing.T, s *Store, key string, ro RangeOptions, value string, mod int64) {
	t.Helper()
	rr, err := getKey(t, s, key, ro)
	if err != nil {
		t.Fatalf("read %q %+v: %v", key, ro, err)
	}
	if mod == 0 {
		if len(rr.KVs) != 0 || rr.Count != 0 {
			t.Fatalf("read %q %+v: %v (count %d), want nothing", key, ro, rr.KVs, rr.Count)
		}
		return
	}
	if rr.Count != 1 || rr.Rev != s.Rev() {
		t.Fatalf("read %q %+v: count %d rev %d, want 1 and %d", key, ro, rr.Count, rr.Rev, s.Rev())
	}
	if ro.Count {
		if len(rr.KVs) != 0 {
			t.Fatalf("count-only read %q returned %v", key, rr.KVs)
		}
		return
	}
	if len(rr.KVs) != 1 {
		t.Fatalf("read %q %+v: %v, want one KV", key, ro, rr.KVs)
	}
	kv := rr.KVs[0]
	if string(kv.Key) != key || string(kv.Value) != value || kv.ModRevision != mod {
		t.Fatalf("read %q %+v: %s=%q at %d, want %q at %d", key, ro, kv.Key, kv.Value, kv.ModRevision, value, mod)
	}
}

func deleteCommitted(t *testing.T, s *Store, key string) {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	if _, err := tx.DeleteRange([]byte(key), nil); err != nil {
		t.Fatal(err)
	}
	tx.End()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestHotKeysExact: a key read often is answered from the set (hits grow)
// with exactly what the tables hold: keys-only and count-only reads, reads
// at older revisions (from the entry when nothing newer preceded it, else
// from Pebble), after a put, a delete, a compaction and a replace of the
// store's contents.
func TestHotKeysExact(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putCommitted(t, s, "k", "v2")    // rev 2
	putCommitted(t, s, "other", "x") // rev 3
	for range 3 {
		wantKey(t, s, "k", RangeOptions{}, "v2", 2)
	}
	hits := s.hot.hits.Load()
	if hits == 0 {
		t.Fatal("a key read three times was never answered from the hot set")
	}
	wantKey(t, s, "k", RangeOptions{KeysOnly: true}, "", 2)
	wantKey(t, s, "k", RangeOptions{Count: true}, "", 2)
	wantKey(t, s, "k", RangeOptions{Limit: 1}, "v2", 2)
	wantKey(t, s, "k", RangeOptions{Rev: 2}, "v2", 2) // older than the entry, after its version
	wantKey(t, s, "k", RangeOptions{Rev: 1}, "", 0)   // before it
	if s.hot.hits.Load() < hits+4 {
		t.Fatalf("hits %d, want at least %d", s.hot.hits.Load(), hits+4)
	}
	if _, err := getKey(t, s, "k", RangeOptions{Rev: 9}); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("read at a future revision: %v, want ErrFutureRev", err)
	}

	putCommitted(t, s, "k", "v4") // rev 4
	for range 3 {
		wantKey(t, s, "k", RangeOptions{}, "v4", 4)
	}
	wantKey(t, s, "k", RangeOptions{Rev: 3}, "v2", 2) // the entry's version is newer: Pebble
	deleteCommitted(t, s, "k")                        // rev 5
	for range 3 {
		wantKey(t, s, "k", RangeOptions{}, "", 0)
	}
	wantKey(t, s, "k", RangeOptions{Rev: 4}, "v4", 4)

	putCommitted(t, s, "k", "v6") // rev 6
	for range 3 {
		wantKey(t, s, "k", RangeOptions{}, "v6", 6)
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.Compact(6)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	<-done
	wantKey(t, s, "k", RangeOptions{}, "v6", 6)
	if _, err := getKey(t, s, "k", RangeOptions{Rev: 5}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the compaction: %v, want ErrCompacted", err)
	}

	// Replaced by a store where k has another value at a lower revision.
	src, err := Open("src", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	putCommitted(t, src, "k", "other") // rev 2
	if err := s.Replace(copyInto(t, s, src)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantKey(t, s, "k", RangeOptions{}, "other", 2)
	}
	putCommitted(t, s, "k", "v3") // rev 3
	wantKey(t, s, "k", RangeOptions{}, "v3", 3)
}

// TestHotKeysLimits: a value too large is never held, and the set stays
// within its bound however many keys are read.
func TestHotKeysLimits(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := string(make([]byte, hotValueMax))
	putCommitted(t, s, "big", big)
	for range 3 {
		wantKey(t, s, "big", RangeOptions{}, big, 2)
	}
	if n := s.hot.hits.Load(); n != 0 {
		t.Fatalf("a %d-byte value was answered from the hot set", len(big))
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for i := range hotKeysMax + 100 {
		tx := b.Txn()
		if _, _, err := tx.Put(fmt.Appendf(nil, "k%05d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		tx.End()
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for i := range hotKeysMax + 100 {
			wantKey(t, s, fmt.Sprintf("k%05d", i), RangeOptions{}, "v", int64(3+i))
		}
	}
	s.hot.mu.RLock()
	n := len(s.hot.m)
	s.hot.mu.RUnlock()
	if n == 0 || n > hotKeysMax {
		t.Fatalf("%d entries, want 1..%d", n, hotKeysMax)
	}
}

// TestHotKeysHammer: readers on many goroutines read key "k" while one
// writer commits revisions that write "k" only now and then (so entries
// live long enough to be used), others other keys. The writer records, for
// every revision, the revision of k's newest version there before
// committing it; a read that sees anything else at its revision (an entry
// that outlived a write, one added from an older view) fails.
func TestHotKeysHammer(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const writes = 2000
	var kAt [writes + 3]atomic.Int64 // kAt[r]: k's newest version at revision r
	putCommitted(t, s, "k", "2")
	kAt[2].Store(2)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for r := range 6 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				tx, err := s.Read()
				if err != nil {
					errc <- err
					return
				}
				rev := int64(0)
				if n%4 == r%4 {
					rev = max(2, tx.Rev()-int64(n%7))
				}
				rr, err := tx.Range(ctx, []byte("k"), nil, RangeOptions{Rev: rev})
				at := tx.Rev()
				tx.End()
				if rev != 0 {
					at = rev
				}
				if err != nil {
					errc <- err
					return
				}
				want := kAt[at].Load()
				if len(rr.KVs) != 1 || rr.KVs[0].ModRevision != want || string(rr.KVs[0].Value) != strconv.FormatInt(want, 10) {
					errc <- fmt.Errorf("read at %d: %v, want k's version of revision %d", at, rr.KVs, want)
					return
				}
			}
		})
	}
	for i := range writes {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		rev := b.Rev() + 1
		key, prev := "other", kAt[rev-1].Load()
		if i%5 == 0 {
			key, prev = "k", rev
		}
		kAt[rev].Store(prev)
		tx := b.Txn()
		if _, _, err := tx.Put([]byte(key), []byte(strconv.FormatInt(rev, 10)), 0); err != nil {
			t.Fatal(err)
		}
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if len(errc) > 0 {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if s.hot.hits.Load() == 0 {
		t.Fatal("no read was answered from the hot set")
	}
}
