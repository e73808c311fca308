package server

import (
	"fmt"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkTransport compares the client port's two gRPC transports
// (grpc.transport) on etcd's `benchmark range` and `benchmark put` shapes:
// 100 callers on 10 connections, over loopback, client in-process. Compare
// cpu-ns/op (client and server together; the client is the same for both).
func BenchmarkTransport(b *testing.B) {
	for _, tr := range []string{config.TransportGRPCGo, config.TransportLean} {
		use := func(c *config.Config) { c.GRPC.Transport = tr }
		b.Run("transport="+tr+"/range-100c", func(b *testing.B) {
			conns, ctx := servingBenchServer(b, false, 10, use)
			key := []byte("bench-range-key")
			if _, err := pb.NewKVClient(conns[0]).Put(ctx, &pb.PutRequest{Key: key, Value: make([]byte, 256)}); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(max(1, 100/testingProcs()))
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b)()
			b.RunParallel(func(p *testing.PB) {
				kv := pb.NewKVClient(conns[next.Add(1)%int64(len(conns))])
				r := &pb.RangeRequest{Key: key, Serializable: true}
				for p.Next() {
					resp, err := kv.Range(ctx, r)
					if err != nil || len(resp.Kvs) != 1 {
						b.Fatal(err)
					}
				}
			})
		})
		b.Run("transport="+tr+"/put-100c", func(b *testing.B) {
			conns, ctx := servingBenchServer(b, false, 10, use)
			val := make([]byte, 256)
			var next, seq atomic.Int64
			b.SetParallelism(max(1, 100/testingProcs()))
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b)()
			b.RunParallel(func(p *testing.PB) {
				kv := pb.NewKVClient(conns[next.Add(1)%int64(len(conns))])
				for p.Next() {
					k := fmt.Appendf(nil, "%08d", seq.Add(1))
					if _, err := kv.Put(ctx, &pb.PutRequest{Key: k, Value: val}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
