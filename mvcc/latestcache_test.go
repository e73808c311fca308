package mvcc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// modelKV is a key's newest live version as the test expects it.
type modelKV struct {
	value               string
	create, mod, ver, l int64
}

// TestLatestCacheMatchesModel: puts that take the previous version from
// latestCache (a cache small enough to rotate its generations every few
// keys) see exactly what a read of Pebble would: create revision, version,
// lease, absence after a delete, across aborted batches, flushes and
// compactions; a put asking for the previous value gets it; an omitted
// PrevKv is flagged on its revision.
func TestLatestCacheMatchesModel(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem(), LatestCacheBytes: 1200})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(19, 19))
	model := map[string]modelKV{}
	keys := make([]string, 24)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%02d", i)
	}
	keys[3] = "k\x00zero" // escaped in version keys
	omitted, rev := 0, s.Rev()
	for step := 0; step < 3000; step++ {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			b.Abort() // NB: else Close waits for the batch
			t.Fatalf(format, args...)
		}
		abort := rng.IntN(10) == 0
		staged := map[string]*modelKV{} // the batch's changes; nil: deleted
		look := func(k string) (modelKV, bool) {
			if v, ok := staged[k]; ok {
				if v == nil {
					return modelKV{}, false
				}
				return *v, true
			}
			v, ok := model[k]
			return v, ok
		}
		for range 1 + rng.IntN(4) {
			tx := b.Txn()
			k := keys[rng.IntN(len(keys))]
			wrev := tx.Rev() + 1
			if rng.IntN(5) == 0 {
				// delete one key or a small range
				end := []byte(nil)
				if rng.IntN(2) == 0 {
					end = []byte(k[:len(k)-1] + "\xff")
				}
				dels, err := tx.DeleteRange([]byte(k), end)
				if err != nil {
					fail("%v", err)
				}
				for _, kv := range dels {
					staged[string(kv.Key)] = nil
				}
			} else {
				val := fmt.Sprint(step)
				lease := int64(rng.IntN(3))
				wantValue := rng.IntN(4) == 0
				_, prev, err := tx.PutPrev([]byte(k), []byte(val), lease, wantValue)
				if err != nil {
					fail("%v", err)
				}
				old, had := look(k)
				switch {
				case !had && prev != nil:
					fail("step %d: put %s: prev %v, want none", step, k, prev)
				case had && prev == nil:
					fail("step %d: put %s: no prev, want %+v", step, k, old)
				case had:
					got := modelKV{string(prev.Value), prev.CreateRevision, prev.ModRevision, prev.Version, prev.Lease}
					want := old
					if !wantValue && prev.Value == nil {
						want.value = ""
					}
					if got != want {
						fail("step %d: put %s: prev %+v, want %+v", step, k, got, want)
					}
				}
				ev := tx.Changes()[len(tx.Changes())-1]
				if had && ev.PrevKv == nil {
					omitted++
					if !tx.prevOmitted {
						fail("step %d: put %s: PrevKv left out but not flagged", step, k)
					}
				}
				nv := modelKV{val, wrev, wrev, 1, lease}
				if had {
					nv.create, nv.ver = old.create, old.ver+1
				}
				staged[k] = &nv
			}
			tx.End()
		}
		if abort {
			b.Abort()
		} else {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			for k, v := range staged {
				if v == nil {
					delete(model, k)
				} else {
					model[k] = *v
				}
			}
		}
		switch rng.IntN(100) {
		case 0, 1, 2:
			if err := s.DB().Flush(); err != nil {
				t.Fatal(err)
			}
		case 3:
			if r := s.Rev(); r > rev {
				cb, err := s.NewBatch()
				if err != nil {
					t.Fatal(err)
				}
				done, err := cb.Compact(r)
				if err != nil {
					t.Fatal(err)
				}
				if err := cb.Commit(); err != nil {
					t.Fatal(err)
				}
				<-done
				rev = r
			}
		}
	}
	if omitted < 500 {
		t.Errorf("only %d puts took the cache", omitted)
	}
	rr, err := s.Range(context.Background(), []byte{0}, []byte{}, RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.KVs) != len(model) {
		t.Fatalf("%d keys, want %d", len(rr.KVs), len(model))
	}
	for _, kv := range rr.KVs {
		want := model[string(kv.Key)]
		got := modelKV{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease}
		if got != want {
			t.Errorf("%s: %+v, want %+v", kv.Key, got, want)
		}
	}
}

// TestLatestCacheBounded: the cache holds about its bound, however many
// keys are written, and what it drops is read from Pebble again.
func TestLatestCacheBounded(t *testing.T) {
	c := latestCache{max: 64 << 10}
	key := make([]byte, 16)
	for i := range 100_000 {
		copy(key, fmt.Sprintf("%016d", i))
		c.set(uint64(i), key, latestEntry{mod: int64(i), version: 1})
	}
	n := len(c.cur.m) + len(c.prev.m)
	if held := n * (latestEntryBytes + len(key)); held > c.max {
		t.Fatalf("%d entries (%d B), bound %d B", n, held, c.max)
	}
	if _, ok := c.get(99_999, key); !ok {
		t.Fatal("the newest key is not held")
	}
	copy(key, fmt.Sprintf("%016d", 0))
	if _, ok := c.get(0, key); ok {
		t.Fatal("the oldest key is still held")
	}
	// A hash collision with another key answers nothing.
	copy(key, fmt.Sprintf("%016d", 12345678))
	if _, ok := c.get(99_999, key); ok {
		t.Fatal("another key's entry answered")
	}
}

// TestWatchPrevKVAfterOmittedPut: a watcher with prev_kv that arrives after
// a put left PrevKv out (no such watcher then) still gets the previous
// value, live or catching up (from the hub's memory up to the omitting
// revision, from Pebble after it); once it exists, puts keep PrevKv in
// their events.
func TestWatchPrevKVAfterOmittedPut(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	put := func(v string) {
		e.commit(func(tx *WriteTxn) {
			if _, _, err := tx.PutPrev([]byte("k"), []byte(v), 0, false); err != nil {
				t.Fatal(err)
			}
		})
	}
	put("v1") // rev 2
	put("v2") // rev 3: found in Pebble, the key enters the cache
	put("v3") // rev 4: from the cache
	if e.history[1].Events[0].PrevKv == nil || e.history[1].prevOmitted {
		t.Fatal("a put that read Pebble left PrevKv out")
	}
	if e.history[2].Events[0].PrevKv != nil || !e.history[2].prevOmitted {
		t.Fatal("a put without prev_kv watchers kept its PrevKv")
	}
	ws := e.h.NewStream()
	defer ws.Close()
	b, err := e.s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	if _, _, err := tx.PutPrev([]byte("k"), []byte("v4"), 0, false); err != nil { // rev 5
		b.Abort()
		t.Fatal(err)
	}
	tx.End()
	if b.Events()[0].Events[0].PrevKv != nil {
		b.Abort()
		t.Fatal("PrevKv kept")
	}
	// The watchers arrive between the put and its publication.
	for _, o := range []WatchOptions{
		{Key: []byte("k"), PrevKV: true},
		{Key: []byte("k"), StartRev: 4, PrevKV: true},
		{Key: []byte("k"), StartRev: 4},
		{Key: []byte("k"), StartRev: 2, PrevKV: true}, // from memory, then Pebble
	} {
		if _, err := ws.Watch(o); err != nil {
			b.Abort()
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	e.h.Publish(b.Events())
	wantResps(t, drain(t, ws), `
id=0 rev=4 created
id=1 rev=4 created
id=2 rev=4 created
id=3 rev=4 created
id=0 rev=5
  PUT "k"="v4" c=2 m=5 v=4 l=0 prev "k"="v3" c=2 m=4 v=3 l=0
id=1 rev=5
  PUT "k"="v3" c=2 m=4 v=3 l=0 prev "k"="v2" c=2 m=3 v=2 l=0
  PUT "k"="v4" c=2 m=5 v=4 l=0 prev "k"="v3" c=2 m=4 v=3 l=0
id=2 rev=5
  PUT "k"="v3" c=2 m=4 v=3 l=0 prev -
  PUT "k"="v4" c=2 m=5 v=4 l=0 prev -
id=3 rev=5
  PUT "k"="v1" c=2 m=2 v=1 l=0 prev -
  PUT "k"="v2" c=2 m=3 v=2 l=0 prev "k"="v1" c=2 m=2 v=1 l=0
  PUT "k"="v3" c=2 m=4 v=3 l=0 prev "k"="v2" c=2 m=3 v=2 l=0
  PUT "k"="v4" c=2 m=5 v=4 l=0 prev "k"="v3" c=2 m=4 v=3 l=0
`)
	put("v5") // rev 6: a prev_kv watcher exists
	if e.history[len(e.history)-1].Events[0].PrevKv == nil {
		t.Fatal("a put with a prev_kv watcher left PrevKv out")
	}
	wantResps(t, drain(t, ws), `
id=0 rev=6
  PUT "k"="v5" c=2 m=6 v=5 l=0 prev "k"="v4" c=2 m=5 v=4 l=0
id=1 rev=6
  PUT "k"="v5" c=2 m=6 v=5 l=0 prev "k"="v4" c=2 m=5 v=4 l=0
id=2 rev=6
  PUT "k"="v5" c=2 m=6 v=5 l=0 prev -
id=3 rev=6
  PUT "k"="v5" c=2 m=6 v=5 l=0 prev "k"="v4" c=2 m=5 v=4 l=0
`)
	ws.Close()
	if n := e.s.prevWatchers.Load(); n != 0 {
		t.Fatalf("%d prev_kv watchers counted after the stream closed", n)
	}
}
