package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkWatchPublish times the server's part of etcd's `benchmark
// watch-latency` alone: 10 streams of 10 watchers on one key, all on one
// client connection as the tool has them; each op publishes one revision
// (a put of that key) straight into the hub, as the applier does after
// the commit, and waits for its 100 events to reach the client. No put,
// no fsync: ns/op is publish to last event, sequential. It reports the
// time to the first and last event of a revision (p50, p99) and the
// process's CPU per op (server and client together).
func BenchmarkWatchPublish(b *testing.B) {
	for _, tr := range []string{config.TransportLean, config.TransportGRPCGo} {
		b.Run("transport="+tr, func(b *testing.B) {
			benchWatchPublish(b, func(c *config.Config) { c.GRPC.Transport = tr })
		})
	}
}

func benchWatchPublish(b *testing.B, configure func(*config.Config)) {
	const streams, perStream = 10, 10
	s := newBenchServer(b, configure)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	cc, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	key, val := []byte("watch-publish-key"), make([]byte, 32)

	var (
		mu      sync.Mutex
		rev     int64 // the revision being waited for
		got     int
		first   time.Time
		arrived = make(chan time.Time, 1)
	)
	wg := openWatchers(b, ctx, func(int) *grpc.ClientConn { return cc }, streams, perStream, key,
		func(now time.Time, evs []*mvccpb.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range evs {
				if ev.Kv.ModRevision != rev {
					continue
				}
				if got++; got == 1 {
					first = now
				}
				if got == streams*perStream {
					arrived <- now
				}
			}
		})

	next := s.hub.Rev() + 1
	var firsts, lasts []time.Duration
	b.ResetTimer()
	cpu := reportCPU(b)
	for range b.N {
		mu.Lock()
		rev, got = next, 0
		mu.Unlock()
		ev := mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: key, Value: val, CreateRevision: 2, ModRevision: next, Version: next - 1}}
		start := time.Now()
		s.hub.Publish([]mvcc.RevisionEvents{{Rev: next, Events: []mvccpb.Event{ev}}})
		last := <-arrived
		mu.Lock()
		firsts = append(firsts, first.Sub(start))
		mu.Unlock()
		lasts = append(lasts, last.Sub(start))
		next++
	}
	b.StopTimer()
	cpu()
	stop()
	wg.Wait()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
		b.ReportMetric(at(0.5), name+"-p50-us")
		b.ReportMetric(at(0.99), name+"-p99-us")
	}
	report("first", firsts)
	report("last", lasts)
}
