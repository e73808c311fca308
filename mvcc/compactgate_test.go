package mvcc

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// fakeCompactionDB wants `waiting` compactions and allows `allowed` at once.
type fakeCompactionDB struct {
	mu        sync.Mutex
	allowed   int
	waiting   int
	scheduled []pebble.CompactionGrantHandle
}

func (f *fakeCompactionDB) GetAllowedWithoutPermission() int { return f.allowed }
func (f *fakeCompactionDB) GetWaitingCompaction() (bool, pebble.WaitingCompaction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting > 0, pebble.WaitingCompaction{}
}
func (f *fakeCompactionDB) Schedule(h pebble.CompactionGrantHandle) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting--
	f.scheduled = append(f.scheduled, h)
	return true
}
func (f *fakeCompactionDB) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.scheduled)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCompactionGate(t *testing.T) {
	db := &fakeCompactionDB{allowed: 2, waiting: 5}
	g := newCompactionGate()
	g.Register(2, db)
	defer g.Unregister()

	// Before start, nothing runs: neither asked for nor offered.
	if ok, _ := g.TrySchedule(); ok {
		t.Fatal("TrySchedule granted before start")
	}
	g.wake()
	time.Sleep(3 * gateGrantEvery / 2)
	if n := db.count(); n != 0 {
		t.Fatalf("%d compactions offered before start", n)
	}

	// After start, the waiting compactions are offered up to the limit.
	g.start()
	waitFor(t, "2 compactions offered", func() bool { return db.count() == 2 })
	if ok, _ := g.TrySchedule(); ok {
		t.Fatal("TrySchedule granted a third compaction with 2 allowed")
	}
	time.Sleep(3 * gateGrantEvery / 2)
	if n := db.count(); n != 2 {
		t.Fatalf("%d compactions running, want the limit of 2", n)
	}
	// Each Done lets the next one run, until none is waiting.
	db.mu.Lock()
	first := db.scheduled[0]
	db.mu.Unlock()
	first.Done()
	waitFor(t, "a third compaction", func() bool { return db.count() == 3 })
	for i := 1; i < 3; i++ {
		db.mu.Lock()
		h := db.scheduled[i]
		db.mu.Unlock()
		h.Done()
	}
	waitFor(t, "all 5 compactions", func() bool { return db.count() == 5 })
}

// TestCompactionsRunAfterOpen: with the gate in place the store still
// compacts: enough L0 tables get compacted away.
func TestCompactionsRunAfterOpen(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 8; i++ {
		putCommitted(t, s, fmt.Sprintf("k%d", i), "v")
		if err := s.DB().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a compaction", func() bool { return s.DB().Metrics().Compact.Count > 0 })
}
