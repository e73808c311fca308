package mvcc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
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

// physicalHashKV hashes every stored version at or below rev, with the same
// encoding as HashKV but no selection: after a completed compaction the
// physical data must be exactly HashKV's logical selection.
func physicalHashKV(t *testing.T, s *Store, rev int64) uint32 {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	h := crc32.New(castagnoli)
	for ok := it.First(); ok; ok = it.Next() {
		if versionKeyRev(it.Key()) > rev {
			continue
		}
		h.Write(it.Key())
		h.Write(binary.AppendUvarint(nil, uint64(len(it.Value()))))
		h.Write(it.Value())
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
	// logical selection; the hash survives a restart.
	const at = 23
	compactAndWait(t, a, at)
	if _, _, err := a.HashKV(ctx, at-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("below compaction: %v", err)
	}
	after := map[int64]uint32{}
	for rev := int64(at); rev <= a.Rev(); rev++ {
		h, _, err := a.HashKV(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if h.CompactRevision != at {
			t.Fatalf("compact revision %d", h.CompactRevision)
		}
		if p := physicalHashKV(t, a, rev); p != h.Hash {
			t.Fatalf("rev %d: logical %d != physical %d", rev, h.Hash, p)
		}
		after[rev] = h.Hash
	}
	a.Close()
	a = open(fsA)
	for rev, want := range after {
		if h, _, _ := a.HashKV(ctx, rev); h.Hash != want {
			t.Fatalf("rev %d after reopen: %d != %d", rev, h.Hash, want)
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
