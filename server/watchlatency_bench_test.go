package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
)

// BenchmarkWatchLatency is etcd's `benchmark watch-latency` in miniature,
// over real gRPC on loopback: 10 streams of 10 watchers on one key (on 10
// connections), one client putting that key at 100 puts/s; each op is one
// put. It reports what etcd's tool reports, the time from a put's response
// to each watcher's event (0 when the event came first), as p50/p99/max,
// and beside it the put's own latency and the time from the put's start
// to the event, which separate the commit from the event's way out.
func BenchmarkWatchLatency(b *testing.B) {
	const streams, perStream, putRate = 10, 10, 100
	conns, ctx := servingBenchServer(b, false, streams+1)
	key, val := []byte("watch-latency-key"), make([]byte, 32)
	type arrival struct {
		rev int64
		at  time.Time
	}
	var (
		mu       sync.Mutex
		arrivals []arrival
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg := openWatchers(b, wctx, func(i int) *grpc.ClientConn { return conns[i] }, streams, perStream, key,
		func(now time.Time, evs []*mvccpb.Event) {
			mu.Lock()
			for _, ev := range evs {
				arrivals = append(arrivals, arrival{ev.Kv.ModRevision, now})
			}
			mu.Unlock()
		})
	kv := pb.NewKVClient(conns[streams])
	lim := rate.NewLimiter(putRate, 1)
	starts := make(map[int64]time.Time, b.N)
	ends := make(map[int64]time.Time, b.N)
	b.ResetTimer()
	for range b.N {
		if err := lim.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		resp, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: val})
		if err != nil {
			b.Fatal(err)
		}
		end := time.Now()
		starts[resp.Header.Revision], ends[resp.Header.Revision] = start, end
	}
	want := b.N * streams * perStream
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(arrivals)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	if len(arrivals) < want {
		b.Fatalf("%d of %d events arrived", len(arrivals), want)
	}
	var afterResp, afterStart, put []time.Duration
	for _, a := range arrivals {
		end, ok := ends[a.rev]
		if !ok {
			b.Fatalf("event of revision %d that no put made", a.rev)
		}
		afterResp = append(afterResp, max(0, a.at.Sub(end)))
		afterStart = append(afterStart, a.at.Sub(starts[a.rev]))
	}
	for rev, end := range ends {
		put = append(put, end.Sub(starts[rev]))
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Microseconds()) / 1e3 }
		b.ReportMetric(at(0.5), name+"-p50-ms")
		b.ReportMetric(at(0.99), name+"-p99-ms")
		b.ReportMetric(at(1), name+"-max-ms")
	}
	report("event", afterResp)
	report("event-from-start", afterStart)
	report("put", put)
}

// openWatchers opens streams watch streams (the i-th on conn(i)) of
// perStream watchers of key each, as etcd's watch-latency tool sets them
// up, and returns once every watcher is created. Each stream's goroutine
// hands onEvents the events of each response with its arrival time; the
// returned group ends when ctx does.
func openWatchers(b *testing.B, ctx context.Context, conn func(i int) *grpc.ClientConn, streams, perStream int, key []byte, onEvents func(now time.Time, evs []*mvccpb.Event)) *sync.WaitGroup {
	b.Helper()
	var wg, ready sync.WaitGroup
	for i := range streams {
		ws, err := pb.NewWatchClient(conn(i)).Watch(ctx, grpc.WaitForReady(true))
		if err != nil {
			b.Fatal(err)
		}
		for range perStream {
			if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
				CreateRequest: &pb.WatchCreateRequest{Key: key}}}); err != nil {
				b.Fatal(err)
			}
		}
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			created := 0
			for {
				resp, err := ws.Recv()
				if err != nil {
					return
				}
				if resp.Created {
					if created++; created == perStream {
						ready.Done()
					}
					continue
				}
				onEvents(time.Now(), resp.Events)
			}
		}()
	}
	ready.Wait()
	return &wg
}
