package mvcc

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// BenchmarkHubPublish is the hub's share of a put with no watcher: the
// applier publishes each committed batch (here 100 one-put revisions, 8 B
// keys, 256 B values, as make bench's put-100c) and the hub keeps them in
// its recent log. One op is one revision.
func BenchmarkHubPublish(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := NewHub(s, HubOptions{})
	const perBatch = 100
	val := make([]byte, 256)
	kvs := make([]mvccpb.KeyValue, perBatch)
	for i := range kvs {
		kvs[i] = mvccpb.KeyValue{Key: fmt.Appendf(nil, "%08d", i), Value: val, Version: 1}
	}
	revs := make([]RevisionEvents, perBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for rev := int64(1); rev <= int64(b.N); {
		n := 0
		for ; n < perBatch && rev <= int64(b.N); n, rev = n+1, rev+1 {
			kv := &kvs[n]
			kv.CreateRevision, kv.ModRevision = rev, rev
			// A fresh event slice per revision: the hub keeps it.
			revs[n] = RevisionEvents{Rev: rev, Events: []mvccpb.Event{{Type: mvccpb.PUT, Kv: kv}}}
		}
		h.Publish(revs[:n])
	}
}
