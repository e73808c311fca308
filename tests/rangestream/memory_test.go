package rangestream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// envInt reads a positive integer from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// scrape reads the named gauges from a server's /metrics.
func scrape(endpoint string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if rest, ok := strings.CutPrefix(line, n+" "); ok {
				v, err := strconv.ParseFloat(rest, 64)
				if err != nil {
					return nil, err
				}
				out[n] = v
			}
		}
	}
	if len(out) != len(names) {
		return nil, fmt.Errorf("metrics: found %v of %v", out, names)
	}
	return out, sc.Err()
}

// TestRangeStreamMemory: a list far larger than the server's memory
// headroom is streamed to a slow reader while the server's Go heap is
// sampled: it must grow by a small fraction of the list, because only a
// chunk at a time is read and encoded. METASTORE_RANGESTREAM_KEYS and
// METASTORE_RANGESTREAM_VALUE size the list (default 40,000 × 2,500 bytes,
// 100 MB; `make test-rangestream-large` streams 200,000 keys, 500 MB).
func TestRangeStreamMemory(t *testing.T) {
	keys := envInt("METASTORE_RANGESTREAM_KEYS", 40000)
	valSize := envInt("METASTORE_RANGESTREAM_VALUE", 2500)
	total := int64(keys) * int64(valSize)
	// NB: with GOGC=25 the heap in use follows what is live (garbage is
	// collected at 25% growth rather than 100%), so retention shows.
	s := startMetastore(t, 0, "GOGC=25")
	c := s.client(t, "", "")

	start := time.Now()
	val := strings.Repeat("m", valSize)
	g, ctx := errgroup.WithContext(ctxT(t))
	g.SetLimit(8)
	const perTxn = 100 // 250 KB txns, under --max-request-bytes
	for i := 0; i < keys; i += perTxn {
		g.Go(func() error {
			var ops []clientv3.Op
			for j := i; j < min(i+perTxn, keys); j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/big/%08d", j), val))
			}
			_, err := c.Txn(ctx).Then(ops...).Commit()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d keys, %d MB, in %v", keys, total>>20, time.Since(start).Round(time.Millisecond))

	const heap, rss = "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"
	base, err := scrape(s.endpoint, heap, rss)
	if err != nil {
		t.Fatal(err)
	}
	var peakHeap, peakRSS atomic.Int64
	peakHeap.Store(int64(base[heap]))
	peakRSS.Store(int64(base[rss]))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if m, err := scrape(s.endpoint, heap, rss); err == nil {
				peakHeap.Store(max(peakHeap.Load(), int64(m[heap])))
				peakRSS.Store(max(peakRSS.Load(), int64(m[rss])))
			}
		}
	}()

	start = time.Now()
	stream, err := pb.NewKVClient(c.ActiveConnection()).RangeStream(ctxT(t), &pb.RangeRequest{Key: []byte("/registry/big/"), RangeEnd: []byte("/registry/big0")})
	if err != nil {
		t.Fatal(err)
	}
	var n, chunks, maxChunk int
	var count int64
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		chunks++
		n += len(m.RangeResponse.Kvs)
		maxChunk = max(maxChunk, len(m.RangeResponse.Kvs))
		if m.RangeResponse.Header != nil {
			count = m.RangeResponse.Count
		}
		if chunks%8 == 0 {
			time.Sleep(5 * time.Millisecond) // a slow reader: the server waits on flow control
		}
	}
	close(stop)
	wg.Wait()
	if n != keys || count != int64(keys) {
		t.Fatalf("streamed %d kvs, count %d; want %d", n, count, keys)
	}
	heapGrowth := peakHeap.Load() - int64(base[heap])
	rssGrowth := peakRSS.Load() - int64(base[rss])
	t.Logf("streamed %d MB in %d chunks (up to %d kvs) in %v; server heap in use %d MB before, peak +%d MB; RSS %d MB before, peak +%d MB",
		total>>20, chunks, maxChunk, time.Since(start).Round(time.Millisecond),
		int64(base[heap])>>20, heapGrowth>>20, int64(base[rss])>>20, rssGrowth>>20)
	if os.Getenv("METASTORE_RANGESTREAM_CONTRAST") != "" {
		// The same list with the unary Range, for comparison (not asserted).
		before, err := scrape(s.endpoint, heap)
		if err != nil {
			t.Fatal(err)
		}
		peakHeap.Store(int64(before[heap]))
		stop = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if m, err := scrape(s.endpoint, heap); err == nil {
					peakHeap.Store(max(peakHeap.Load(), int64(m[heap])))
				}
			}
		}()
		resp, err := c.Get(ctxT(t), "/registry/big/", clientv3.WithPrefix(), clientv3.WithLimit(int64(keys)+1))
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("unary Range of the same %d kvs: server heap in use %d MB before, peak +%d MB",
			len(resp.Kvs), int64(before[heap])>>20, (peakHeap.Load()-int64(before[heap]))>>20)
	}
	// A chunk is at most about twice --max-request-bytes (1.5 MiB); a few
	// are alive at once (read, encoded, queued). 64 MiB is ample and far
	// below the list.
	if limit := min(int64(64<<20), total/2); heapGrowth > limit {
		t.Errorf("server heap grew by %d MB while streaming %d MB (limit %d MB)", heapGrowth>>20, total>>20, limit>>20)
	}
}
