package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkOneMember compares the puts of a single member on the
// group-commit loop with those of a one-voter Raft group (the same member
// started with a peer URL): issue 15's ≥ 0.95× target.
func BenchmarkOneMember(b *testing.B) {
	for _, mode := range []string{"loop", "raft"} {
		b.Run("put-1c/"+mode, func(b *testing.B) { benchOneMemberPut(b, mode, 1) })
		b.Run("put-100c/"+mode, func(b *testing.B) { benchOneMemberPut(b, mode, 100) })
	}
}

func benchOneMemberPut(b *testing.B, mode string, clients int) {
	s := newBenchServer(b, func(c *config.Config) {
		if mode == "raft" {
			peer := fmt.Sprintf("http://127.0.0.1:%d", freePorts(b, 1)[0])
			c.Server.ListenPeerURLs, c.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
		}
	})
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	b.Cleanup(func() { cancel(); <-done })
	conns := make([]*grpc.ClientConn, min(10, clients))
	for i := range conns {
		c, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	ctx := context.Background()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := pb.NewKVClient(conns[0]).Put(wctx, &pb.PutRequest{Key: []byte("warm"), Value: []byte("x")}, grpc.WaitForReady(true)); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, 256)
	var next, seq atomic.Int64
	b.ReportAllocs()
	syncs0 := syncCount(b, s)
	b.ResetTimer()
	defer reportCPU(b)()
	defer func() { b.ReportMetric(float64(syncCount(b, s)-syncs0)/float64(b.N), "fsyncs/op") }()
	if clients == 1 {
		kv := pb.NewKVClient(conns[0])
		for i := 0; i < b.N; i++ {
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", i), Value: val}); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(max(1, clients/testingProcs()))
	b.RunParallel(func(p *testing.PB) {
		kv := pb.NewKVClient(conns[next.Add(1)%int64(len(conns))])
		for p.Next() {
			k := fmt.Appendf(nil, "%08d", seq.Add(1))
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: k, Value: val}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// syncCount is how many synced commits the member made: the loop's
// batches, or the Raft log's synced writes.
func syncCount(b *testing.B, s *Server) uint64 {
	mfs, err := s.metrics.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "etcd_disk_backend_commit_duration_seconds", "etcd_disk_wal_fsync_duration_seconds":
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
