package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkThreeMembers runs make bench-cluster's write and linearizable
// read shapes against a 3-member cluster in this process, with etcd's
// default heartbeat and election timeout: 100 clients on 10 connections
// spread over the members, so two thirds of the requests reach a
// follower. cpu-ns/op is the whole process (the clients included); each
// member's goroutines carry the pprof label member=m0…m2 and the clients'
// member=client, so a -cpuprofile splits leader and followers
// (go tool pprof -tagfocus member=m1).
func BenchmarkThreeMembers(b *testing.B) {
	b.Run("put-100c", func(b *testing.B) { benchThreeMembers(b, "put") })
	b.Run("txn-put-100c", func(b *testing.B) { benchThreeMembers(b, "txn-put") })
	b.Run("range-l-100c", func(b *testing.B) { benchThreeMembers(b, "range-l") })
	b.Run("range-s-100c", func(b *testing.B) { benchThreeMembers(b, "range-s") })
}

func benchThreeMembers(b *testing.B, op string) {
	ports := freePorts(b, 3)
	var initial []string
	for i, p := range ports {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, p))
	}
	var servers []*Server
	for i, p := range ports {
		cfg := config.Default()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.DataDir = b.TempDir()
		cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
		peer := fmt.Sprintf("http://127.0.0.1:%d", p)
		cfg.Server.ListenPeerURLs, cfg.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
		cfg.Cluster.InitialCluster = strings.Join(initial, ",")
		cfg.Cluster.InitialClusterToken = "bench-cluster"
		// Goroutines inherit the labels of the one that starts them.
		ctx, cancel := context.WithCancel(pprof.WithLabels(context.Background(), pprof.Labels("member", cfg.Name)))
		pprof.SetGoroutineLabels(ctx)
		s, err := New(cfg, slog.New(slog.DiscardHandler))
		pprof.SetGoroutineLabels(context.Background())
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go pprof.Do(ctx, pprof.Labels("member", cfg.Name), func(ctx context.Context) { done <- s.Run(ctx) })
		b.Cleanup(func() { cancel(); <-done })
		servers = append(servers, s)
	}
	conns := make([]*grpc.ClientConn, 10)
	for i := range conns {
		c, err := grpc.NewClient(servers[i%3].ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	for _, c := range conns[:3] {
		if _, err := pb.NewKVClient(c).Put(wctx, &pb.PutRequest{Key: []byte("bench-range-key"), Value: []byte("x")}, grpc.WaitForReady(true)); err != nil {
			b.Fatal(err)
		}
	}
	val := make([]byte, 256)
	var next, seq atomic.Int64
	b.ReportAllocs()
	var syncs0, rounds0 uint64
	for _, s := range servers {
		syncs0 += syncCount(b, s)
		rounds0 += s.node.Metrics().ReadIndexRounds
	}
	b.ResetTimer()
	defer reportCPU(b)()
	defer func() {
		var syncs, rounds uint64
		for _, s := range servers {
			syncs += syncCount(b, s)
			rounds += s.node.Metrics().ReadIndexRounds
		}
		b.ReportMetric(float64(syncs-syncs0)/float64(b.N), "fsyncs/op")
		b.ReportMetric(float64(rounds-rounds0)/float64(b.N), "readindex/op")
	}()
	b.SetParallelism(max(1, 100/testingProcs()))
	ctx := pprof.WithLabels(context.Background(), pprof.Labels("member", "client"))
	pprof.SetGoroutineLabels(ctx)
	defer pprof.SetGoroutineLabels(context.Background())
	b.RunParallel(func(p *testing.PB) {
		kv := pb.NewKVClient(conns[next.Add(1)%int64(len(conns))])
		for p.Next() {
			k := fmt.Appendf(nil, "%08d", seq.Add(1)%90000)
			var err error
			switch op {
			case "put":
				_, err = kv.Put(ctx, &pb.PutRequest{Key: k, Value: val})
			case "txn-put":
				_, err = kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: val}}}}})
			case "range-l":
				_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("bench-range-key")})
			case "range-s":
				_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("bench-range-key"), Serializable: true})
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
