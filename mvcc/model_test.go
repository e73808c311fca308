package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// model is the obvious in-memory MVCC: every version of every key.
type model struct {
	versions map[string][]mvccpb.KeyValue // per key, oldest first; Version 0 = tombstone
	rev      int64
}

func (m *model) latest(key string, rev int64) *mvccpb.KeyValue {
	vs := m.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ModRevision <= rev {
			if vs[i].Version == 0 {
				return nil
			}
			return &vs[i]
		}
	}
	return nil
}

func (m *model) rangeAt(key, end []byte, rev int64) []mvccpb.KeyValue {
	var out []mvccpb.KeyValue
	for k := range m.versions {
		kb := []byte(k)
		in := false
		switch {
		case end == nil:
			in = bytes.Equal(kb, key)
		case len(end) == 0:
			in = bytes.Compare(kb, key) >= 0
		default:
			in = bytes.Compare(kb, key) >= 0 && bytes.Compare(kb, end) < 0
		}
		if in {
			if kv := m.latest(k, rev); kv != nil {
				out = append(out, *kv)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}

// TestAgainstModel applies random puts, deletes and multi-op txns, compacts
// in small steps and reopens the store now and then; every read at every
// readable revision must match the model.
func TestAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runModel(t, seed) })
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed))
	fs := vfs.NewMem()
	opts := Options{FS: fs, CompactionBatch: 3}
	s, err := Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	m := &model{versions: map[string][]mvccpb.KeyValue{}, rev: 1}
	keys := []string{"a", "a\x00", "a\x00b", "ab", "b", "b\xff", "c", "\x00", "zz"}
	randKey := func() []byte { return []byte(keys[rng.IntN(len(keys))]) }
	ctx := context.Background()

	for step := 0; step < 400; step++ {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		// Several txns share one batch, as in group commit.
		for n := rng.IntN(3) + 1; n > 0; n-- {
			tx := b.Txn()
			written := map[string]bool{}
			rev := tx.Rev() + 1
			for ops := rng.IntN(3) + 1; ops > 0; ops-- {
				k := randKey()
				if written[string(k)] {
					continue // a txn writes a key at most once
				}
				if rng.IntN(3) > 0 {
					val := []byte(fmt.Sprint(step))
					_, gotPrev, err := tx.Put(k, val, int64(rng.IntN(3)))
					if err != nil {
						t.Fatal(err)
					}
					prev := m.latest(string(k), rev)
					if (gotPrev == nil) != (prev == nil) || gotPrev != nil && (gotPrev.ModRevision != prev.ModRevision ||
						gotPrev.CreateRevision != prev.CreateRevision || gotPrev.Version != prev.Version || gotPrev.Lease != prev.Lease || !bytes.Equal(gotPrev.Value, prev.Value)) {
						t.Fatalf("step %d: put %q: previous version %v, want %v", step, k, gotPrev, prev)
					}
					kv := mvccpb.KeyValue{Key: k, Value: val, ModRevision: rev, CreateRevision: rev, Version: 1, Lease: 0}
					if prev != nil {
						kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
					}
					written[string(k)] = true
					// Lease is what the store was given; read it back below.
					kv.Lease = tx.Changes()[len(tx.Changes())-1].Kv.Lease
					m.versions[string(k)] = append(m.versions[string(k)], kv)
				} else {
					end := []byte(nil)
					if rng.IntN(2) == 0 {
						end = randKey()
					}
					clash := false
					for _, kv := range m.rangeAt(k, end, rev) {
						clash = clash || written[string(kv.Key)]
					}
					if clash {
						continue // the server rejects a put and a delete of one key in a txn
					}
					deleted, err := tx.DeleteRange(k, end)
					if err != nil {
						t.Fatal(err)
					}
					for _, kv := range deleted {
						written[string(kv.Key)] = true
						m.versions[string(kv.Key)] = append(m.versions[string(kv.Key)], mvccpb.KeyValue{Key: kv.Key, ModRevision: rev})
					}
				}
			}
			if len(tx.Changes()) > 0 {
				m.rev = rev
			}
			tx.End()
		}
		if rng.IntN(10) == 0 && s.Rev() > 2 {
			target := s.CompactRev() + 1 + rng.Int64N(max(1, m.rev-s.CompactRev()))
			if target > m.rev {
				target = m.rev
			}
			if target > s.CompactRev() && target <= b.Rev() {
				// The removal runs in the background while the test reads on.
				if _, err := b.Compact(target); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if s.Rev() != m.rev {
			t.Fatalf("step %d: store rev %d, model rev %d", step, s.Rev(), m.rev)
		}
		live := 0
		for k := range m.versions {
			if m.latest(k, m.rev) != nil {
				live++
			}
		}
		if n := s.LiveKeys(); n != int64(live) {
			t.Fatalf("step %d: LiveKeys %d, model %d", step, n, live)
		}
		// Move versions out of the memtable now and then: Put's lookup of
		// the latest version then goes through tables and their filters.
		switch rng.IntN(20) {
		case 0, 1:
			if err := s.DB().Flush(); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := s.DB().Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(50) == 0 {
			s.Close()
			if s, err = Open("db", opts); err != nil {
				t.Fatal(err)
			}
		}
		// Check a few random reads at readable revisions.
		for i := 0; i < 5; i++ {
			lo := max(s.CompactRev(), 1)
			rev := lo + rng.Int64N(m.rev-lo+1)
			k := randKey()
			var end []byte
			switch rng.IntN(3) {
			case 1:
				end = randKey()
			case 2:
				end = []byte{}
			}
			rr, err := s.Range(ctx, k, end, RangeOptions{Rev: rev})
			if err != nil {
				t.Fatalf("step %d: range %q-%q @%d: %v", step, k, end, rev, err)
			}
			want := m.rangeAt(k, end, rev)
			if rr.Count != len(want) || len(rr.KVs) != len(want) {
				t.Fatalf("step %d: range %q-%q @%d: got %d kvs (count %d), want %d", step, k, end, rev, len(rr.KVs), rr.Count, len(want))
			}
			for j := range want {
				g, w := rr.KVs[j], want[j]
				if !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || g.ModRevision != w.ModRevision ||
					g.CreateRevision != w.CreateRevision || g.Version != w.Version || g.Lease != w.Lease {
					t.Fatalf("step %d: range @%d kv %d: got %v, want %v", step, rev, j, g, w)
				}
			}
		}
		if cr := s.CompactRev(); cr > 1 {
			if _, err := s.Range(ctx, []byte("a"), nil, RangeOptions{Rev: cr - 1}); err != ErrCompacted {
				t.Fatalf("read below compacted rev %d: %v", cr, err)
			}
		}
	}
}
