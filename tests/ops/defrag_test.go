package ops

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestDefragmentUnderLoad: Defragment is an online Pebble compaction;
// reads and writes continue while it runs, none fails, and their latency
// stays bounded. It logs the latencies seen before and during it.
func TestDefragmentUnderLoad(t *testing.T) {
	t.Parallel()
	m := framework.StartMetastoreConfig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := m.Client(t)
	// Some data and garbage for the compaction to work on.
	val := strings.Repeat("v", 1024)
	for i := range 3000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k/%05d", i%1000), val); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := cli.Get(ctx, "k/00000")
	if _, err := cli.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}

	type sample struct {
		at   time.Time
		took time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		errs    atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				var err error
				if w%2 == 0 {
					_, err = cli.Put(ctx, fmt.Sprintf("k/%05d", (i*7+w)%1000), val)
				} else {
					_, err = cli.Get(ctx, "k/", clientv3.WithPrefix(), clientv3.WithLimit(10))
				}
				took := time.Since(start)
				if err != nil {
					errs.Add(1)
					t.Errorf("request during defragment: %v", err)
				}
				mu.Lock()
				samples = append(samples, sample{start, took})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	defragStart := time.Now()
	if _, err := cli.Defragment(ctx, m.Endpoint); err != nil {
		t.Fatalf("defragment: %v", err)
	}
	defragEnd := time.Now()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	var before, during []time.Duration
	for _, s := range samples {
		switch {
		case s.at.Before(defragStart):
			before = append(before, s.took)
		case s.at.Before(defragEnd):
			during = append(during, s.took)
		}
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return d[min(len(d)-1, int(float64(len(d))*p))]
	}
	t.Logf("defragment took %v; before: %d requests p50 %v p99 %v max %v; during: %d requests p50 %v p99 %v max %v",
		defragEnd.Sub(defragStart),
		len(before), pct(before, .5), pct(before, .99), pct(before, 1),
		len(during), pct(during, .5), pct(during, .99), pct(during, 1))
	if errs.Load() > 0 {
		t.Fatalf("%d requests failed during defragment", errs.Load())
	}
	if d := defragEnd.Sub(defragStart); d > 50*time.Millisecond && len(during) == 0 {
		t.Fatalf("no request completed during a %v defragment: it stopped the world", d)
	}
	if mx := pct(during, 1); mx > 2*time.Second {
		t.Fatalf("a request took %v during defragment", mx)
	}
}
