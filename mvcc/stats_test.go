package mvcc

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

type compactionRecorder struct {
	mu       sync.Mutex
	steps    int
	versions int
	done     int
}

func (r *compactionRecorder) CompactionStep(pause time.Duration, versions int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps++
	r.versions += versions
}

func (r *compactionRecorder) CompactionDone(took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done++
}

// TestStoreStats: open read views are counted until they end, pooled or
// not; a compaction reports its steps, the versions it deleted and its end.
func TestStoreStats(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem(), CompactionBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := &compactionRecorder{}
	s.SetCompactionObserver(rec)

	// Five keys, each written three times: 10 obsolete versions at the end.
	for round := range 3 {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			if _, _, err := tx.Put([]byte(k), []byte{byte(round)}, 0); err != nil {
				t.Fatal(err)
			}
		}
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}

	r1, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	p := s.ReadPinned()
	if n := s.OpenReads(); n != 3 {
		t.Fatalf("open reads %d, want 3", n)
	}
	r1.End()
	p.End()
	if n := s.OpenReads(); n != 1 {
		t.Fatalf("open reads %d after two ends, want 1", n)
	}
	r2.End()
	r3, err := s.Read() // from the pool
	if err != nil {
		t.Fatal(err)
	}
	if n := s.OpenReads(); n != 1 {
		t.Fatalf("open reads %d with a pooled view taken, want 1", n)
	}
	r3.End()
	if n := s.OpenReads(); n != 0 {
		t.Fatalf("open reads %d after every end, want 0", n)
	}

	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.Compact(s.Rev())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("compaction did not finish")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.done != 1 || rec.versions != 10 || rec.steps < 2 {
		t.Fatalf("compaction observed: %d done, %d versions in %d steps; want 1, 10, at least 2", rec.done, rec.versions, rec.steps)
	}
}
