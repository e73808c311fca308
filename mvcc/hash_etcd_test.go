package mvcc

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// etcd's own unit tests (server/storage/mvcc/hash_test.go, v3.6) assert
// HashKV values after a fixed write and compaction history; the same
// history here must give the same numbers. The history and the expected
// values are etcd's; the code is ours.

const etcdCompactionCycle = 71 // a prime, so compactions and keys do not align

// etcdPickKey is the key etcd's hash tests write at step i.
func etcdPickKey(i int64) string {
	switch {
	case i%(etcdCompactionCycle*2) == 30:
		return "zenek"
	case i%etcdCompactionCycle == 30:
		return "xavery"
	}
	return []string{"alice", "bob", "celine", "dominik", "eve", "frederica", "gorge"}[i%7]
}

type etcdHashHarness struct {
	t *testing.T
	s *Store
}

func (h etcdHashHarness) txn(f func(tx *WriteTxn) error) {
	h.t.Helper()
	b, err := h.s.NewBatch()
	if err != nil {
		h.t.Fatal(err)
	}
	tx := b.Txn()
	if err := f(tx); err != nil {
		h.t.Fatal(err)
	}
	tx.End()
	if err := b.Commit(); err != nil {
		h.t.Fatal(err)
	}
}

func (h etcdHashHarness) put(key, value string) {
	h.txn(func(tx *WriteTxn) error { _, _, err := tx.Put([]byte(key), []byte(value), 0); return err })
}

func (h etcdHashHarness) del(key string) {
	h.txn(func(tx *WriteTxn) error { _, err := tx.DeleteRange([]byte(key), nil); return err })
}

// compact compacts at rev; wait waits for the removal too.
func (h etcdHashHarness) compact(rev int64, wait bool) {
	h.t.Helper()
	b, err := h.s.NewBatch()
	if err != nil {
		h.t.Fatal(err)
	}
	done, err := b.Compact(rev)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		h.t.Fatal(err)
	}
	if wait {
		<-done
	}
}

// putKVs is etcd's: count+1 puts, steps rev..rev+count.
func (h etcdHashHarness) putKVs(rev, count int64) {
	for i := rev; i <= rev+count; i++ {
		h.put(etcdPickKey(i), fmt.Sprint(i))
	}
}

// hashThenCompact is etcd's testHashByRev: the hash at rev (0: current),
// then a compaction there, not waited for.
func (h etcdHashHarness) hashThenCompact(rev int64) KVHash {
	h.t.Helper()
	if rev == 0 {
		rev = h.s.Rev()
	}
	kh, _, err := h.s.HashKV(context.Background(), rev)
	if err != nil {
		h.t.Fatalf("HashKV(%d): %v", rev, err)
	}
	h.compact(rev, false)
	return kh
}

func newEtcdHashHarness(t *testing.T) etcdHashHarness {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return etcdHashHarness{t, s}
}

func TestHashKVEtcdValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		current bool // hash the current revision, not the middle of the cycle
		want    []KVHash
	}{
		{"TestHashByRevValue", false, []KVHash{
			{4082599214, -1, 35}, {2279933401, 35, 106}, {3284231217, 106, 177}, {126286495, 177, 248},
			{900108730, 248, 319}, {2475485232, 319, 390}, {1226296507, 390, 461}, {2503661030, 461, 532},
			{4155130747, 532, 603}, {106915399, 603, 674}, {406914006, 674, 745}, {1882211381, 745, 816},
			{806177088, 816, 887}, {664311366, 887, 958}, {1496914449, 958, 1029}, {2434525091, 1029, 1100},
			{3988652253, 1100, 1171}, {1122462288, 1171, 1242}, {724436716, 1242, 1883},
		}},
		{"TestHashByRevValueLastRevision", true, []KVHash{
			{1913897190, -1, 73}, {224860069, 73, 145}, {1565167519, 145, 217}, {1566261620, 217, 289},
			{2037173024, 289, 361}, {691659396, 361, 433}, {2713730748, 433, 505}, {3919322507, 505, 577},
			{769967540, 577, 649}, {2909194793, 649, 721}, {1576921157, 721, 793}, {4067701532, 793, 865},
			{2226384237, 865, 937}, {2923408134, 937, 1009}, {2680329256, 1009, 1081}, {1546717673, 1081, 1153},
			{2713657846, 1153, 1225}, {1046575299, 1225, 1297}, {2017735779, 1297, 2508},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newEtcdHashHarness(t)
			const total = 1210
			at := func(rev int64) int64 {
				if tc.current {
					return 0
				}
				return rev
			}
			var got []KVHash
			var rev int64
			for ; rev < total; rev += etcdCompactionCycle {
				h.putKVs(rev, etcdCompactionCycle)
				got = append(got, h.hashThenCompact(at(rev+etcdCompactionCycle/2)))
			}
			h.putKVs(rev, total)
			got = append(got, h.hashThenCompact(at(rev+total/2)))
			if len(got) != len(tc.want) {
				t.Fatalf("%d hashes, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("hash %d: %+v, etcd's %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestHashKVEtcdCompactionHash is etcd's TestCompactionHash: with deletes
// mixed in, the hash at a revision before compacting there equals the one
// answered after the compaction completed (the compaction's own hash).
func TestHashKVEtcdCompactionHash(t *testing.T) {
	h := newEtcdHashHarness(t)
	ctx := context.Background()
	cycle := func(start, stop int64) {
		for i := start; i <= stop; i++ {
			if i%67 == 0 {
				h.del(etcdPickKey(i + 83))
			} else {
				h.put(etcdPickKey(i), fmt.Sprint(i))
			}
		}
		before, _, err := h.s.HashKV(ctx, stop)
		if err != nil {
			t.Fatalf("HashKV(%d): %v", stop, err)
		}
		h.compact(stop, true)
		after, _, err := h.s.HashKV(ctx, stop)
		if err != nil {
			t.Fatalf("HashKV(%d) after compacting: %v", stop, err)
		}
		if before != after {
			t.Errorf("rev %d: %+v before compacting, %+v after", stop, before, after)
		}
	}
	const total = 1210
	var rev int64
	for ; rev < total; rev += etcdCompactionCycle {
		cycle(rev, rev+etcdCompactionCycle)
	}
	cycle(rev, rev+total)
}
