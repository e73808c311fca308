package raftnode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// TestLogStoreMatchesMemoryStorage drives LogStore and raft's own
// MemoryStorage with the same random appends (with conflicting tails),
// hard states and compactions, reopening the LogStore from Pebble now and
// then, and compares every read.
func TestLogStoreMatchesMemoryStorage(t *testing.T) {
	for _, cacheBytes := range []int{-1, 300, 0} {
		t.Run(fmt.Sprintf("cache=%d", cacheBytes), func(t *testing.T) {
			fs := vfs.NewMem()
			open := func() (*pebble.DB, *LogStore) {
				db, err := pebble.Open("", &pebble.Options{FS: fs, Logger: quietPebble{}})
				if err != nil {
					t.Fatal(err)
				}
				ls, err := OpenLogStore(db, LogStoreOptions{CacheBytes: cacheBytes})
				if err != nil {
					t.Fatal(err)
				}
				return db, ls
			}
			db, ls := open()
			defer func() { db.Close() }()
			ms := raft.NewMemoryStorage()
			rng := rand.New(rand.NewPCG(1, uint64(cacheBytes+2)))
			term := uint64(1)
			for step := range 400 {
				first, _ := ms.FirstIndex()
				last, _ := ms.LastIndex()
				switch op := rng.IntN(10); {
				case op < 6: // append, maybe overwriting a tail
					at := last + 1
					if last >= first && rng.IntN(3) == 0 {
						at = first + uint64(rng.IntN(int(last-first+1)))
						term++
					}
					var ents []raftpb.Entry
					for i := range 1 + rng.IntN(5) {
						data := make([]byte, rng.IntN(40))
						for j := range data {
							data[j] = byte(rng.Uint32())
						}
						ents = append(ents, raftpb.Entry{Index: at + uint64(i), Term: term, Data: data})
					}
					hs := raftpb.HardState{Term: term, Commit: at - 1}
					if err := ls.Save(hs, ents, true); err != nil {
						t.Fatalf("step %d: save: %v", step, err)
					}
					if err := ms.Append(ents); err != nil {
						t.Fatal(err)
					}
					ms.SetHardState(hs)
				case op < 7 && last > first+2: // compact
					i := first + uint64(rng.IntN(int(last-first)))
					if err := ls.Compact(i); err != nil {
						t.Fatalf("step %d: compact %d: %v", step, i, err)
					}
					if err := ms.Compact(i); err != nil {
						t.Fatal(err)
					}
				case op < 8: // reopen from disk
					db.Close()
					db, ls = open()
				}
				compareStorage(t, step, ls, ms, rng)
			}
			if err := ls.Compact(0); !errors.Is(err, raft.ErrCompacted) {
				t.Fatalf("compact below the first index: %v", err)
			}
		})
	}
}

func compareStorage(t *testing.T, step int, ls *LogStore, ms *raft.MemoryStorage, rng *rand.Rand) {
	t.Helper()
	lf, _ := ls.FirstIndex()
	mf, _ := ms.FirstIndex()
	ll, _ := ls.LastIndex()
	ml, _ := ms.LastIndex()
	if lf != mf || ll != ml {
		t.Fatalf("step %d: [first,last] = [%d,%d], memory storage [%d,%d]", step, lf, ll, mf, ml)
	}
	lh, _, _ := ls.InitialState()
	mh, _, _ := ms.InitialState()
	if !reflect.DeepEqual(lh, mh) {
		t.Fatalf("step %d: hard state %v, want %v", step, lh, mh)
	}
	for i := mf - 1; i <= ml+1; i++ {
		lt, lerr := ls.Term(i)
		mt, merr := ms.Term(i)
		if lt != mt || !errors.Is(lerr, merr) && !(merr != nil && lerr != nil) {
			t.Fatalf("step %d: Term(%d) = %d, %v; want %d, %v", step, i, lt, lerr, mt, merr)
		}
	}
	if ml < mf {
		return
	}
	for range 5 {
		lo := mf + uint64(rng.IntN(int(ml-mf+1)))
		hi := lo + uint64(rng.IntN(int(ml-lo+2)))
		max := uint64(rng.IntN(200))
		if rng.IntN(3) == 0 {
			max = 1 << 62
		}
		le, lerr := ls.Entries(lo, hi, max)
		me, merr := ms.Entries(lo, hi, max)
		if lerr != nil || merr != nil {
			t.Fatalf("step %d: Entries(%d,%d,%d): %v / %v", step, lo, hi, max, lerr, merr)
		}
		if len(le) == 0 && len(me) == 0 {
			continue
		}
		if !reflect.DeepEqual(le, me) {
			t.Fatalf("step %d: Entries(%d,%d,%d) = %d entries, want %d", step, lo, hi, max, len(le), len(me))
		}
	}
	if _, err := ls.Entries(mf-1, ml, 1<<62); mf > 1 && !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("step %d: Entries below first: %v", step, err)
	}
}

func TestLogStoreRejectsHolesAndResets(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ls, err := OpenLogStore(db, LogStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Save(raftpb.HardState{}, []raftpb.Entry{{Index: 3, Term: 1}}, true); err == nil {
		t.Fatal("append leaving a hole was accepted")
	}
	if err := ls.ResetTo(100, 1); err != nil {
		t.Fatal(err)
	}
	if f, _ := ls.FirstIndex(); f != 101 {
		t.Fatalf("first index after ResetTo(100) = %d", f)
	}
	if tm, _ := ls.Term(100); tm != 1 {
		t.Fatalf("term at the reset point = %d", tm)
	}
	if hs := ls.HardState(); hs.Commit != 100 || hs.Term != 1 {
		t.Fatalf("hard state after reset %v", hs)
	}
	if err := ls.ResetTo(5, 1); !errors.Is(err, ErrLogNotEmpty) {
		t.Fatalf("second reset: %v", err)
	}
	if _, err := ls.Snapshot(); !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
		t.Fatalf("snapshot without a source: %v", err)
	}
	// The log keys stay under their prefix: nothing else in the database.
	it, _ := db.NewIter(nil)
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if it.Key()[0] != DefaultLogPrefix {
			t.Fatalf("key %q outside the log prefix", it.Key())
		}
	}
}

// A state machine ahead of the log's durable commit index (the commit-only
// HardState was lost) is tolerated; one ahead of the log itself is not.
func TestStartWithAppliedAheadOfCommit(t *testing.T) {
	for _, tc := range []struct {
		applied uint64
		ok      bool
	}{{3, true}, {4, false}} {
		// A log of its own per case: a started node may elect itself and
		// append an entry, which would put the next case's applied index
		// inside the log.
		db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietPebble{}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ls, _ := OpenLogStore(db, LogStoreOptions{})
		ents := []raftpb.Entry{{Index: 1, Term: 2}, {Index: 2, Term: 2}, {Index: 3, Term: 2}}
		if err := ls.Save(raftpb.HardState{Term: 2, Vote: 1, Commit: 1}, ents, true); err != nil {
			t.Fatal(err)
		}
		sm := &fixedSM{applied: tc.applied, cs: raftpb.ConfState{Voters: []uint64{1}}}
		cfg := testConfig()
		cfg.ID, cfg.Log, cfg.StateMachine = 1, ls, sm
		n, err := Start(cfg)
		if !tc.ok {
			if err == nil {
				n.Stop()
				t.Fatalf("applied %d beyond the log accepted", tc.applied)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if c := ls.HardState().Commit; c < 3 {
			t.Fatalf("commit %d after start, want >= 3", c)
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

type fixedSM struct {
	nopSM
	applied uint64
	cs      raftpb.ConfState
}

func (s *fixedSM) AppliedState() (uint64, raftpb.ConfState, error) { return s.applied, s.cs, nil }
