package rangestream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
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
// 100 MB; under -race, where the server is many times slower, 5,000 ×
// 10,000 bytes, 50 MB; `make test-rangestream-large` streams 200,000 keys,
// 500 MB, without -race).
func TestRangeStreamMemory(t *testing.T) {
	defKeys, defVal := 40000, 2500
	if raceEnabled {
		defKeys, defVal = 5000, 10000
	}
	keys := envInt("METASTORE_RANGESTREAM_KEYS", defKeys)
	valSize := envInt("METASTORE_RANGESTREAM_VALUE", defVal)
	total := int64(keys) * int64(valSize)
	// NB: with GOGC=25 the heap in use follows what is live (garbage is
	// collected at 25% growth rather than 100%), so retention shows.
	// NB: the server is never a -race build here: in one, Pebble puts its
	// memtables and block cache on the Go heap in about half the processes
	// (chosen at random at start; C's malloc otherwise, as always without
	// -race), and reading flushed tables then grows the Go heap by up to
	// the block cache's size, which is bounded and not the stream's doing.
	s := startMetastoreBin(t, plainBin, 0, "GOGC=25")
	c := s.client(t, "", "")

	start := time.Now()
	val := strings.Repeat("m", valSize)
	g, ctx := errgroup.WithContext(ctxT(t))
	g.SetLimit(8)
	perTxn := min(100, max(1, (1<<20)/valSize)) // txns under --max-request-bytes and --max-txn-ops
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

	// The GC's heap goal is (live heap after the last GC) × (1 + GOGC/100):
	// its growth while streaming is what the server kept alive, whatever
	// garbage it made. Heap in use and RSS are logged for reference.
	stream := func() (n, chunks, maxChunk int, count int64) {
		st, err := pb.NewKVClient(c.ActiveConnection()).RangeStream(ctxT(t), &pb.RangeRequest{Key: []byte("/registry/big/"), RangeEnd: []byte("/registry/big0")})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
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
	}
	start = time.Now()
	var n, chunks, maxChunk int
	var count int64
	g0, peak := sample(t, s.endpoint, func() { n, chunks, maxChunk, count = stream() })
	if n != keys || count != int64(keys) {
		t.Fatalf("streamed %d kvs, count %d; want %d", n, count, keys)
	}
	live := int64((peak[nextGC] - g0[nextGC]) / 1.25)
	t.Logf("streamed %d MB in %d chunks (up to %d kvs) in %v, %v GCs: server live heap +%d MB (heap goal %d → %d MB), heap in use %d MB → peak %d MB, RSS %d MB → peak %d MB, block cache %d → %d MB",
		total>>20, chunks, maxChunk, time.Since(start).Round(time.Millisecond), peak[gcs]-g0[gcs], live>>20,
		int64(g0[nextGC])>>20, int64(peak[nextGC])>>20, int64(g0[heapInuse])>>20, int64(peak[heapInuse])>>20, int64(g0[rss])>>20, int64(peak[rss])>>20,
		int64(g0[blockCache])>>20, int64(peak[blockCache])>>20)
	if peak[gcs] == g0[gcs] {
		t.Fatal("no GC ran while streaming: the heap goal measured nothing")
	}
	// A chunk is about --max-request-bytes (1.5 MiB), at most about twice
	// that; a few are alive at once (read, encoded, queued).
	if limit := min(int64(32<<20), total/4); live > limit {
		t.Errorf("server live heap grew by %d MB while streaming %d MB (limit %d MB)", live>>20, total>>20, limit>>20)
	}
	if os.Getenv("METASTORE_RANGESTREAM_CONTRAST") != "" {
		// The same list with the unary Range, for comparison (not asserted).
		var got int
		g0, peak := sample(t, s.endpoint, func() {
			resp, err := c.Get(ctxT(t), "/registry/big/", clientv3.WithPrefix(), clientv3.WithLimit(int64(keys)+1))
			if err != nil {
				t.Fatal(err)
			}
			got = len(resp.Kvs)
		})
		t.Logf("unary Range of the same %d kvs: server live heap +%d MB, heap in use %d MB → peak %d MB",
			got, int64((peak[nextGC]-g0[nextGC])/1.25)>>20, int64(g0[heapInuse])>>20, int64(peak[heapInuse])>>20)
	}
}

const (
	heapInuse = "go_memstats_heap_inuse_bytes"
	nextGC    = "go_memstats_next_gc_bytes"
	rss       = "process_resident_memory_bytes"
	gcs       = "go_gc_duration_seconds_count"
	// blockCache is reported as a peak: the cache only grows while reading.
	blockCache = "metastore_pebble_block_cache_bytes"
)

// sample runs f while scraping the server's memory metrics every 20 ms; it
// returns the values before f and the peaks during it.
func sample(t *testing.T, endpoint string, f func()) (before, peak map[string]float64) {
	names := []string{heapInuse, nextGC, rss, gcs, blockCache}
	before, err := scrape(endpoint, names...)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	peak = maps.Clone(before)
	record := func() {
		m, err := scrape(endpoint, names...)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range m {
			peak[k] = max(peak[k], v)
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				record()
			}
		}
	}()
	f()
	close(stop)
	<-done
	record() // the GCs during f may have been counted only now
	return before, peak
}
