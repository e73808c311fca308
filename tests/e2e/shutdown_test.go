package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestGracefulShutdownUnderLoad: SIGTERM while 8 clients write. The process
// exits 0 promptly; every acknowledged write is there after the restart,
// which is clean (no recovery warnings) and fast; the log shows the
// shutdown steps.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's shutdown")
	}
	t.Parallel()
	p := framework.StartMetastoreProcess(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := framework.NewClient(t, p.Endpoint)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k := fmt.Sprintf("w%d/%06d", w, i)
				c, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cli.Put(c, k, k)
				cancel()
				if err != nil {
					return // the server went away: stop this writer
				}
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	took := time.Since(start)
	wg.Wait()
	t.Logf("graceful shutdown under load took %v; %d writes acknowledged", took, len(acked))
	if took > 10*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	log := p.Log()
	for _, want := range []string{"shutting down", "metastore stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	restart := time.Now()
	p.Restart()
	t.Logf("restart took %v", time.Since(restart))
	cli2 := framework.NewClient(t, p.Endpoint)
	r, err := cli2.Get(ctx, "w", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range r.Kvs {
		have[string(kv.Key)] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Fatalf("acknowledged write %s lost across a graceful shutdown", k)
		}
	}
	if n := len(r.Kvs); n < len(acked) || n > len(acked)+8 {
		t.Errorf("%d keys after restart, %d acknowledged (at most one unacknowledged per writer may land)", n, len(acked))
	}
	if after := p.Log()[len(log):]; strings.Contains(after, "level=ERROR") || strings.Contains(after, "level=WARN") {
		t.Errorf("restart after a graceful shutdown logged problems:\n%s", after)
	}
}
