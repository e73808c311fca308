package mvcc

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

type exported struct {
	kv   mvccpb.KeyValue
	sub  int64
	tomb bool
}

func exportAll(t *testing.T, s *Store) ([]exported, int64, int64) {
	t.Helper()
	e, err := s.Export()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var out []exported
	err = e.Versions(context.Background(), func(kv *mvccpb.KeyValue, sub int64, tomb bool) error {
		c := *kv
		c.Key, c.Value = append([]byte(nil), kv.Key...), append([]byte(nil), kv.Value...)
		out = append(out, exported{c, sub, tomb})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, e.Rev(), e.CompactRev()
}

// TestExportConsistentUnderWrites: an export is one point in time: what a
// later export shows up to the first one's revision is exactly what the
// first one showed, whatever was committed meanwhile.
func TestExportConsistentUnderWrites(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hashHistory(t, s, "v")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b, err := s.NewBatch()
			if err != nil {
				t.Error(err)
				return
			}
			tx := b.Txn()
			tx.Put([]byte(fmt.Sprintf("w%d", i%5)), []byte("x"), 0)
			tx.Put([]byte(fmt.Sprintf("k%d", i%7)), []byte("y"), 0)
			tx.End()
			if err := b.Commit(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var firsts [][]exported
	var revs []int64
	for range 20 {
		vs, rev, _ := exportAll(t, s)
		for i, v := range vs {
			if v.kv.ModRevision > rev {
				t.Fatalf("export at %d holds revision %d", rev, v.kv.ModRevision)
			}
			if i > 0 && (vs[i-1].kv.ModRevision > v.kv.ModRevision || vs[i-1].kv.ModRevision == v.kv.ModRevision && vs[i-1].sub >= v.sub) {
				t.Fatalf("export not in revision order at %d", i)
			}
		}
		firsts, revs = append(firsts, vs), append(revs, rev)
	}
	close(stop)
	wg.Wait()
	all, _, _ := exportAll(t, s)
	for i, first := range firsts {
		var upTo []exported
		for _, v := range all {
			if v.kv.ModRevision <= revs[i] {
				upTo = append(upTo, v)
			}
		}
		if !reflect.DeepEqual(upTo, first) {
			t.Fatalf("export at %d: %d versions, later %d", revs[i], len(first), len(upTo))
		}
	}
}

// TestImportRoundTrip: an export imported into an empty store reads,
// hashes and exports the same; a non-empty store refuses an import.
func TestImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	src, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hashHistory(t, src, "v")
	compactAndWait(t, src, 17)
	hashHistory(t, src, "w")
	want, rev, compact := exportAll(t, src)

	dst, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	im, err := dst.Import(compact, compact)
	if err != nil {
		t.Fatal(err)
	}
	// In reverse: the importer does not rely on the order.
	for i := len(want) - 1; i >= 0; i-- {
		v := want[i]
		if err := im.Put(v.kv.Key, v.kv.ModRevision, v.sub, v.tomb, v.kv.CreateRevision, v.kv.Version, v.kv.Lease, v.kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Finish(0); err != nil {
		t.Fatal(err)
	}
	got, grev, gcompact := exportAll(t, dst)
	if !reflect.DeepEqual(got, want) || grev != rev || gcompact != compact {
		t.Fatalf("import: rev %d/%d compact %d/%d, versions equal %v", grev, rev, gcompact, compact, reflect.DeepEqual(got, want))
	}
	// (src answers its compaction revision from the hash it took then.)
	if h, _, err := dst.HashKV(ctx, compact); err != nil || h.Hash != physicalHashKV(t, dst, compact, compact) {
		t.Fatalf("imported HashKV at the compaction: %+v %v", h, err)
	}
	for r := compact + 1; r <= rev; r++ {
		a, _, err := src.HashKV(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := dst.HashKV(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Fatalf("rev %d: HashKV %+v after import, %+v before", r, b, a)
		}
	}
	for _, id := range []int64{1, 2} {
		r1, _ := src.Read()
		k1, _ := r1.LeaseKeys(id)
		r1.End()
		r2, _ := dst.Read()
		k2, _ := r2.LeaseKeys(id)
		r2.End()
		if len(k1) == 0 || !reflect.DeepEqual(k1, k2) {
			t.Fatalf("lease %d: keys %q after import, %q before", id, k2, k1)
		}
	}
	if n, m := dst.LiveKeys(), src.LiveKeys(); n != m || n == 0 {
		t.Fatalf("LiveKeys %d after import, %d before", n, m)
	}
	if _, err := dst.Import(-1, -1); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("import into a non-empty store: %v", err)
	}
}
