package apply

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// BenchmarkRangeOneKey is the read path of a Get: a view, one key, the
// response; what etcd's `benchmark range` exercises on the server.
func BenchmarkRangeOneKey(b *testing.B) {
	s, l := newLoop(b, LoopOptions{})
	if _, err := l.Propose(context.Background(), &Request{Put: &pb.PutRequest{Key: []byte("bench-range-key"), Value: make([]byte, 256)}}); err != nil {
		b.Fatal(err)
	}
	req := &pb.RangeRequest{Key: []byte("bench-range-key")}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			tx, err := s.Read()
			if err != nil {
				b.Fatal(err)
			}
			resp, err := Range(ctx, tx, req)
			tx.End()
			if err != nil || len(resp.Kvs) != 1 {
				b.Fatal(err)
			}
		}
	})
}
