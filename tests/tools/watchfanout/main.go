// Command watchfanout measures watch fan-out: many watchers on one prefix
// receive a number of puts, and it reports how long delivery took and how
// much memory the server used. It drives any etcd-compatible server through
// clientv3; scripts/bench-watch.sh runs it against etcd and metastore.
//
//	watchfanout --endpoints 127.0.0.1:2379 --pid 1234 --watchers 10000 --puts 1000
//
// Watchers are spread over --conns client connections and --streams gRPC
// watch streams (clientv3 puts the watches of one context on one stream).
// Puts are sent by --writers concurrent writers after every watcher is
// created. Delivery time runs from the first put to the moment every
// watcher has received every event. Server memory is the resident set
// size read from /proc/<pid>/status: before the watchers, after they are
// created, and the peak (VmHWM) at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "server endpoint")
	pid := flag.Int("pid", 0, "server process id, for memory (0: not measured)")
	watchers := flag.Int("watchers", 10000, "watchers on the prefix")
	streams := flag.Int("streams", 100, "watch streams to spread the watchers over")
	conns := flag.Int("conns", 10, "client connections to spread the streams over")
	puts := flag.Int("puts", 1000, "puts under the prefix")
	writers := flag.Int("writers", 10, "concurrent writers")
	valSize := flag.Int("val-size", 64, "value size in bytes")
	prefix := flag.String("prefix", "/fanout/", "watched prefix")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	clients := make([]*clientv3.Client, *conns)
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoints}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			fail(err)
		}
		defer c.Close()
		clients[i] = c
	}

	rssBefore := rss(*pid, "VmRSS")
	var received, responses atomic.Int64
	want := int64(*watchers) * int64(*puts)
	allDone := make(chan struct{})
	var doneOnce sync.Once
	var firstPut atomic.Int64
	var lastEvent atomic.Int64
	latencies := make([]time.Duration, 0, *watchers)
	var latMu sync.Mutex

	// Create the watchers, one stream at a time per client, waiting for
	// each watch to be established (clientv3's Watch returns once created).
	start := time.Now()
	var wg sync.WaitGroup
	perStream := (*watchers + *streams - 1) / *streams
	created := 0
	for s := 0; s < *streams && created < *watchers; s++ {
		n := min(perStream, *watchers-created)
		created += n
		cli := clients[s%len(clients)]
		// a distinct metadata value gives each group its own gRPC stream
		sctx := metadata.AppendToOutgoingContext(ctx, "fanout-stream", strconv.Itoa(s))
		for range n {
			wch := cli.Watch(sctx, *prefix, clientv3.WithPrefix())
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := 0
				for wr := range wch {
					got += len(wr.Events)
					responses.Add(1)
					if received.Add(int64(len(wr.Events))) == want {
						lastEvent.Store(time.Now().UnixNano())
						doneOnce.Do(func() { close(allDone) })
					}
					if got >= *puts {
						d := time.Duration(time.Now().UnixNano() - firstPut.Load())
						latMu.Lock()
						latencies = append(latencies, d)
						latMu.Unlock()
						return
					}
				}
			}()
		}
	}
	createTime := time.Since(start)
	time.Sleep(time.Second) // let the last creations settle before measuring
	rssWatching := rss(*pid, "VmRSS")

	value := strings.Repeat("v", *valSize)
	putc := make(chan int)
	var pw sync.WaitGroup
	firstPut.Store(time.Now().UnixNano())
	putStart := time.Now()
	for w := range *writers {
		pw.Add(1)
		go func() {
			defer pw.Done()
			cli := clients[w%len(clients)]
			for i := range putc {
				if _, err := cli.Put(ctx, fmt.Sprintf("%s%06d", *prefix, i), value); err != nil {
					fail(err)
				}
			}
		}()
	}
	for i := range *puts {
		putc <- i
	}
	close(putc)
	pw.Wait()
	putTime := time.Since(putStart)
	var peakDuring string
	select {
	case <-allDone:
	case <-ctx.Done():
		fail(fmt.Errorf("timed out: %d of %d events received", received.Load(), want))
	}
	wg.Wait()
	delivery := time.Duration(lastEvent.Load() - firstPut.Load())
	peakDuring = rss(*pid, "VmHWM")
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }

	fmt.Printf("watchers: %d on %d streams over %d connections, prefix %q\n", *watchers, min(*streams, *watchers), *conns, *prefix)
	fmt.Printf("puts: %d by %d writers, %d B values\n", *puts, *writers, *valSize)
	fmt.Printf("watch creation: %.3f s (%.0f watches/s)\n", createTime.Seconds(), float64(*watchers)/createTime.Seconds())
	fmt.Printf("puts took: %.3f s\n", putTime.Seconds())
	fmt.Printf("delivery: %.3f s (first put to last event), %.0f events/s\n", delivery.Seconds(), float64(want)/delivery.Seconds())
	fmt.Printf("responses: %d (%.1f events per response)\n", responses.Load(), float64(want)/float64(responses.Load()))
	fmt.Printf("per-watcher completion: p50 %.3f s, p99 %.3f s, max %.3f s\n", pct(0.5).Seconds(), pct(0.99).Seconds(), pct(1).Seconds())
	fmt.Printf("server rss: before %s, watching %s, peak %s\n", rssBefore, rssWatching, peakDuring)
}

// rss returns a memory line of /proc/<pid>/status, e.g. "123456 kB".
func rss(pid int, field string) string {
	if pid == 0 {
		return "n/a"
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "n/a"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 {
				kb, _ := strconv.Atoi(f[0])
				return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
			}
		}
	}
	return "n/a"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "watchfanout:", err)
	os.Exit(1)
}
