package server

import (
	"context"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// BenchmarkLeaseKeepAlive renews leases over real gRPC on loopback with 100
// concurrent callers on 10 connections: "once" is etcd's `benchmark
// lease-keepalive` (clientv3's KeepAliveOnce: a new LeaseKeepAlive stream
// per renewal), "stream" one long-lived stream per caller (clientv3's
// KeepAlive).
func BenchmarkLeaseKeepAlive(b *testing.B) {
	b.Run("once-100c", func(b *testing.B) { benchKeepAlive(b, false) })
	b.Run("stream-100c", func(b *testing.B) { benchKeepAlive(b, true) })
}

func benchKeepAlive(b *testing.B, longLived bool) {
	conns, ctx := servingBenchServer(b, false, 10)
	var next atomic.Int64
	b.SetParallelism(max(1, 100/testingProcs()))
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	b.RunParallel(func(p *testing.PB) {
		lc := pb.NewLeaseClient(conns[next.Add(1)%int64(len(conns))])
		g, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
		if err != nil {
			b.Error(err)
			return
		}
		req := &pb.LeaseKeepAliveRequest{ID: g.ID}
		var st pb.Lease_LeaseKeepAliveClient
		if longLived {
			if st, err = lc.LeaseKeepAlive(ctx); err != nil {
				b.Error(err)
				return
			}
			defer st.CloseSend()
		}
		for p.Next() {
			s, cancel := st, context.CancelFunc(func() {})
			if !longLived {
				var sctx context.Context
				sctx, cancel = context.WithCancel(ctx)
				if s, err = lc.LeaseKeepAlive(sctx); err != nil {
					cancel()
					b.Error(err)
					return
				}
			}
			if err := s.Send(req); err != nil {
				cancel()
				b.Error(err)
				return
			}
			resp, err := s.Recv()
			cancel()
			if err != nil || resp.TTL <= 0 {
				b.Errorf("keep-alive: %v, %v", resp, err)
				return
			}
		}
	})
}
