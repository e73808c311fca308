package mvcc

import (
	"context"

	"errors"
	"fmt"
	"sort"

	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/metastore-dev/metastore/etcdformat"
)

// hashHistory writes a history with overwrites, deletes and multi-key
// revisions: 40 revisions over 7 keys.
func hashHistory(t *testing.T, s *Store, value string) {
	t.Helper()
	for i := range 40 {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		k := []byte(fmt.Sprintf("k%d", i%7))
		switch {
		case i%5 == 4:
			if _, err := tx.DeleteRange(k, nil); err != nil {
				t.Fatal(err)
			}
		case i%9 == 8:
			for j := range 3 {
				if _, _, err := tx.Put([]byte(fmt.Sprintf("m%d", j)), []byte(value), 0); err != nil {
					t.Fatal(err)
				}
			}
		default:
			if _, _, err := tx.Put(k, []byte(fmt.Sprintf("%s-%d", value, i)), int64(i%3)); err != nil {
				t.Fatal(err)
			}
		}
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func compactAndWait(t *testing.T, s *Store, rev int64) {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.Compact(rev)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	<-done
}

// physicalHashKV is etcd's hashByRev written out literally over the
// versions physically stored (a completed compaction leaves what etcd's
// leaves, but for the tombstone at the compacted revision, which etcd skips
// anyway): the stored versions in revision order, each hashed unless it is
// above rev, or at or below the compacted revision and not in Keep(rev)
// (each key's newest version <= rev unless a tombstone) while Keep is not
// empty, or a tombstone at the compacted revision.
func physicalHashKV(t *testing.T, s *Store, rev, compactRev int64) uint32 {
	t.Helper()
	return physicalEtcdHash(t, s, rev, compactRev, false)
}

// physicalEtcdHash is physicalHashKV, or with atCompaction the hash etcd's
// scheduleCompaction takes when compacting at rev over the versions stored
// before (compactRev is then the previous compaction): the filter set is
// then the index's Compact(rev), which also holds a tombstone exactly at rev.
func physicalEtcdHash(t *testing.T, s *Store, rev, compactRev int64, atCompaction bool) uint32 {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	type stored struct {
		main, sub int64
		tomb      bool
		val       []byte
	}
	var all []stored
	keep := map[[2]int64]bool{}
	var prefix []byte
	done := false
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		rec, err := decodeVersionValue(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		r := versionKeyRev(k)
		newKey := string(versionKeyPrefix(k)) != string(prefix)
		if newKey {
			prefix = append(prefix[:0], versionKeyPrefix(k)...)
		}
		kv, err := recordToKV(k, rec)
		if err != nil {
			t.Fatal(err)
		}
		val, err := etcdformat.MarshalKV(nil, rec.tombstone, &kv)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, stored{r, rec.sub, rec.tombstone, val})
		// Keep(rev): the first (newest) version <= rev of each key.
		if newKey {
			done = false
		}
		if !done && r <= rev {
			done = true
			if !rec.tombstone || atCompaction && r == rev {
				keep[[2]int64{r, rec.sub}] = true
			}
		}
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].main < all[j].main || all[i].main == all[j].main && all[i].sub < all[j].sub
	})
	h := etcdformat.NewKVHasher()
	for _, v := range all {
		switch {
		case v.main > rev:
		case v.main <= compactRev && len(keep) > 0 && !keep[[2]int64{v.main, v.sub}]:
		case v.main == compactRev && v.tomb:
		default:
			h.Write(v.main, v.sub, v.tomb, v.val)
		}
	}
	return h.Sum32()
}

func TestHashKV(t *testing.T) {
	ctx := context.Background()
	open := func(fs vfs.FS) *Store {
		s, err := Open("db", Options{FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fsA, fsB, fsC := vfs.NewMem(), vfs.NewMem(), vfs.NewMem()
	a, b, c := open(fsA), open(fsB), open(fsC)
	hashHistory(t, a, "v")
	hashHistory(t, b, "v")
	hashHistory(t, c, "w")

	hashes := map[int64]uint32{}
	for rev := int64(1); rev <= a.Rev(); rev++ {
		ha, cur, err := a.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if cur != a.Rev() || ha.Revision != rev || ha.CompactRevision != -1 {
			t.Fatalf("rev %d: got %+v cur %d", rev, ha, cur)
		}
		hb, _, err := b.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if ha != hb {
			t.Fatalf("rev %d: same history, different hashes %+v %+v", rev, ha, hb)
		}
		hc, _, _ := c.HashKV(ctx, rev)
		if rev > 2 && hc.Hash == ha.Hash {
			t.Fatalf("rev %d: different values, same hash", rev)
		}
		if rev > 1 && ha.Hash == hashes[rev-1] {
			t.Fatalf("rev %d: hash did not change", rev)
		}
		hashes[rev] = ha.Hash
	}
	if h, _, _ := a.HashKV(ctx, 0); h.Hash != hashes[a.Rev()] || h.Revision != a.Rev() {
		t.Fatalf("rev 0 must hash the current revision: %+v", h)
	}
	if _, cur, err := a.HashKV(ctx, a.Rev()+1); !errors.Is(err, ErrFutureRev) || cur != a.Rev() {
		t.Fatalf("future rev: %v %d", err, cur)
	}

	// Compaction: after it completes, the stored versions are exactly the
	// logical selection; the hash survives a restart. At the compaction's
	// own revision HashKV answers, as etcd, with the hash taken while
	// compacting (against the previous compaction), until a restart.
	const at = 23
	atHash := physicalEtcdHash(t, a, at, -1, true)
	compactAndWait(t, a, at)
	if _, _, err := a.HashKV(ctx, at-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("below compaction: %v", err)
	}
	if h, _, err := a.HashKV(ctx, at); err != nil || h != (KVHash{Hash: atHash, CompactRevision: -1, Revision: at}) {
		t.Fatalf("at the compaction: %+v %v, want etcd's compaction hash %d", h, err, atHash)
	}
	after := map[int64]uint32{}
	for rev := int64(at + 1); rev <= a.Rev(); rev++ {
		h, _, err := a.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if h.CompactRevision != at {
			t.Fatalf("compact revision %d", h.CompactRevision)
		}
		if p := physicalHashKV(t, a, rev, at); p != h.Hash {
			t.Fatalf("rev %d: logical %d != physical %d", rev, h.Hash, p)
		}
		after[rev] = h.Hash
	}
	// A second compaction: its hash is against the first; the first's is
	// still answered though below the compacted revision.
	const at2 = at + 6
	at2Hash := physicalEtcdHash(t, a, at2, at, true)
	compactAndWait(t, a, at2)
	if h, _, err := a.HashKV(ctx, at2); err != nil || h != (KVHash{Hash: at2Hash, CompactRevision: at, Revision: at2}) {
		t.Fatalf("at the second compaction: %+v %v, want %d", h, err, at2Hash)
	}
	if h, _, err := a.HashKV(ctx, at); err != nil || h.Hash != atHash {
		t.Fatalf("the first compaction's hash: %+v %v", h, err)
	}
	if _, _, err := a.HashKV(ctx, at+1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("below the second compaction: %v", err)
	}
	a.Close()
	a = open(fsA)
	for rev := int64(at2); rev <= a.Rev(); rev++ {
		h, _, err := a.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if p := physicalHashKV(t, a, rev, at2); p != h.Hash || h.CompactRevision != at2 {
			t.Fatalf("rev %d after reopen: %+v, want %d (no compaction hashes kept)", rev, h, p)
		}
	}
	whole1, _, err := a.Hash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a = open(fsA)
	if whole2, _, _ := a.Hash(ctx); whole1 != whole2 {
		t.Fatalf("Hash changed across reopen: %d != %d", whole1, whole2)
	}
	for _, s := range []*Store{a, b, c} {
		s.Close()
	}
}

// TestHashKVNoLiveKey: with no key live at the hashed revision, etcd hashes
// every stored version at or below the compacted revision (its Keep set is
// empty and filters nothing).
func TestHashKVNoLiveKey(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
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
	step(func(tx *WriteTxn) { tx.Put([]byte("a"), []byte("1"), 0); tx.Put([]byte("b"), []byte("1"), 0) }) // 2
	step(func(tx *WriteTxn) { tx.Put([]byte("a"), []byte("2"), 0) })                                      // 3
	compactAndWait(t, s, 3)
	step(func(tx *WriteTxn) { tx.DeleteRange([]byte("a"), []byte("c")) }) // 4
	if h, _, err := s.HashKV(ctx, 4); err != nil || h.Hash != physicalHashKV(t, s, 4, 3) {
		t.Fatalf("rev 4: %+v %v, want etcd's %d", h, err, physicalHashKV(t, s, 4, 3))
	}
	if h, _, _ := s.HashKV(ctx, 4); h.Hash == physicalEtcdHash(t, s, 4, 3, true) {
		t.Fatal("the reference does not tell Keep from Compact here")
	}
	step(func(tx *WriteTxn) { tx.Put([]byte("c"), []byte("1"), 0) }) // 5
	step(func(tx *WriteTxn) { tx.DeleteRange([]byte("c"), nil) })    // 6
	// Compacting at a deletion: etcd's Compact set holds the tombstone.
	want := physicalEtcdHash(t, s, 6, 3, true)
	compactAndWait(t, s, 6)
	if h, _, err := s.HashKV(ctx, 6); err != nil || h.Hash != want || h.CompactRevision != 3 {
		t.Fatalf("compaction hash at a deletion: %+v %v, want %d", h, err, want)
	}
	s.Close()
	if s, err = Open("db", Options{FS: fs}); err != nil {
		t.Fatal(err)
	}
	for rev := int64(6); rev <= 6; rev++ {
		h, _, err := s.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if p := physicalHashKV(t, s, rev, 6); p != h.Hash {
			t.Fatalf("rev %d: %d != etcd's %d", rev, h.Hash, p)
		}
	}
}

// BenchmarkHashKV: HashKV over 50,000 revisions of 20,000 keys (100-byte
// values), half of them compacted, on disk.
func BenchmarkHashKV(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	val := make([]byte, 100)
	for i := 0; i < 50_000; i += 1000 {
		bt, err := s.NewBatch()
		if err != nil {
			b.Fatal(err)
		}
		for j := i; j < i+1000; j++ {
			tx := bt.Txn()
			if _, _, err := tx.Put([]byte(fmt.Sprintf("/registry/pods/ns/pod-%05d", (j*7919)%20_000)), val, 0); err != nil {
				b.Fatal(err)
			}
			tx.End()
		}
		if err := bt.CommitUnsynced(); err != nil {
			b.Fatal(err)
		}
	}
	bt, err := s.NewBatch()
	if err != nil {
		b.Fatal(err)
	}
	done, err := bt.Compact(25_000)
	if err != nil {
		b.Fatal(err)
	}
	if err := bt.Commit(); err != nil {
		b.Fatal(err)
	}
	<-done
	if err := s.db.Flush(); err != nil { // as a server's would be: in tables
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.HashKV(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
}
