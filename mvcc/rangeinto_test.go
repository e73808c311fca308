package mvcc

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestRangeInto: a one-key read handed RangeOptions.Into returns it, with
// the KV in the storage it brought and nothing left of what it held
// before, on the cold path and the hot-key path alike.
func TestRangeInto(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putCommitted(t, s, "a", "1")
	putCommitted(t, s, "b", "2")
	var kvs [1]mvccpb.KeyValue
	// Reads enough to go through the hot-key set as well (hotkeys.go).
	for i := range 8 {
		into := &RangeResult{KVs: kvs[:0], Count: 7, Rev: 99}
		into.KVs = append(into.KVs, mvccpb.KeyValue{Key: []byte("stale")})[:0]
		rr, err := getKey(t, s, "a", RangeOptions{Into: into})
		if err != nil {
			t.Fatal(err)
		}
		if rr != into || len(rr.KVs) != 1 || &rr.KVs[0] != &kvs[0] {
			t.Fatalf("read %d: result %p (into %p) with %d KVs, want into's storage", i, rr, into, len(rr.KVs))
		}
		if string(rr.KVs[0].Key) != "a" || string(rr.KVs[0].Value) != "1" || rr.Count != 1 || rr.Rev != s.Rev() {
			t.Fatalf("read %d: %s=%s count %d rev %d, want a=1 count 1 rev %d", i, rr.KVs[0].Key, rr.KVs[0].Value, rr.Count, rr.Rev, s.Rev())
		}
	}
	into := &RangeResult{KVs: kvs[:0], Count: 7}
	rr, err := getKey(t, s, "missing", RangeOptions{Into: into})
	if err != nil || rr != into || len(rr.KVs) != 0 || rr.Count != 0 {
		t.Fatalf("missing key: %+v, %v; want an empty result in into", rr, err)
	}
	rr, err = getKey(t, s, "b", RangeOptions{Into: into, Count: true})
	if err != nil || rr != into || len(rr.KVs) != 0 || rr.Count != 1 {
		t.Fatalf("count only: %+v, %v; want count 1 and no KVs in into", rr, err)
	}
}
