package server

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/server/config"
)

// servingBenchServer runs a server on a loopback port, optionally with auth
// enabled, and returns conns client connections to it and the context to
// call with (carrying a token when auth is on).
func servingBenchServer(b *testing.B, withAuth bool, conns int, configure ...func(*config.Config)) ([]*grpc.ClientConn, context.Context) {
	s := newBenchServer(b, configure...)
	ctx := context.Background()
	if withAuth {
		ctx = enableAuth(b, s)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	out := make([]*grpc.ClientConn, conns)
	for i := range out {
		c, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		out[i] = c
	}
	// The incoming metadata of enableAuth becomes outgoing for a client.
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(context.Background(), md)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := pb.NewKVClient(out[0]).Range(wctx, &pb.RangeRequest{Key: []byte("x")}, grpc.WaitForReady(true)); err != nil {
		b.Fatal(err)
	}
	return out, ctx
}

// BenchmarkGRPC is etcd's `benchmark range` and `benchmark put` in
// miniature, over real gRPC on loopback with the client in the same
// process: 100 concurrent callers on 10 connections ("100c", 256-byte
// values) and, for put, one caller ("1c").
func BenchmarkGRPC(b *testing.B) {
	for _, withAuth := range []bool{false, true} {
		name := "auth=off"
		if withAuth {
			name = "auth=on"
		}
		b.Run("range-100c/"+name, func(b *testing.B) { benchGRPCRange(b, withAuth, false) })
		b.Run("put-100c/"+name, func(b *testing.B) { benchGRPCPut(b, withAuth, 100) })
		b.Run("put-1c/"+name, func(b *testing.B) { benchGRPCPut(b, withAuth, 1) })
	}
}

// benchGRPCRange: 100 callers on 10 connections read one key.
func benchGRPCRange(b *testing.B, withAuth, serializable bool, configure ...func(*config.Config)) {
	conns, ctx := servingBenchServer(b, withAuth, 10, configure...)
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
		r := &pb.RangeRequest{Key: key, Serializable: serializable}
		for p.Next() {
			resp, err := kv.Range(ctx, r)
			if err != nil || len(resp.Kvs) != 1 {
				b.Fatal(err)
			}
		}
	})
}

// benchGRPCPut: clients callers on up to 10 connections write new keys.
func benchGRPCPut(b *testing.B, withAuth bool, clients int, configure ...func(*config.Config)) {
	nconns := min(10, clients)
	conns, ctx := servingBenchServer(b, withAuth, nconns, configure...)
	val := make([]byte, 256)
	var next, seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
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

// reportCPU adds the process's CPU time per operation (client and server
// together: user + system) to a benchmark's results. On a shared machine
// it is steadier than wall time, which other work's load moves.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// testingProcs is GOMAXPROCS, which RunParallel multiplies the parallelism by.
func testingProcs() int { return runtime.GOMAXPROCS(0) }
