// Command leaseload grants many leases from one clientv3 client and keeps
// them all alive (one keep-alive stream, as any clientv3 application), so
// that scripts/bench-lease.sh can measure a server's memory with that many
// live leases. It prints "ready" once every lease is granted and kept
// alive, holds for --hold, then reports how many leases the server still
// lists and exits non-zero if any was lost.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	endpoint := flag.String("endpoints", "127.0.0.1:2379", "server endpoint")
	n := flag.Int("leases", 50000, "number of leases")
	ttl := flag.Int64("ttl", 30, "lease TTL in seconds")
	hold := flag.Duration("hold", 20*time.Second, "how long to keep the leases alive once granted")
	parallel := flag.Int("parallel", 64, "concurrent grants")
	flag.Parse()
	if err := run(*endpoint, *n, *ttl, *hold, *parallel); err != nil {
		fmt.Fprintln(os.Stderr, "leaseload:", err)
		os.Exit(1)
	}
}

func run(endpoint string, n int, ttl int64, hold time.Duration, parallel int) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	start := time.Now()
	var next, responses atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				g, err := cli.Grant(ctx, ttl)
				var ch <-chan *clientv3.LeaseKeepAliveResponse
				if err == nil {
					ch, err = cli.KeepAlive(ctx, g.ID)
				}
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
				go func() {
					for range ch {
						responses.Add(1)
					}
				}()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return fmt.Errorf("grant: %w", err)
	default:
	}
	fmt.Printf("granted %d leases in %v\nready\n", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(hold)
	lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
	defer lcancel()
	ls, err := cli.Leases(lctx)
	if err != nil {
		return err
	}
	fmt.Printf("alive after %v: %d leases; %d keep-alive responses\n", hold, len(ls.Leases), responses.Load())
	if len(ls.Leases) < n {
		return fmt.Errorf("%d of %d leases lost", n-len(ls.Leases), n)
	}
	return nil
}
