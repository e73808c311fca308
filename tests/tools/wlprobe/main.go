// Command wlprobe is etcd's watch-latency workload (10 streams x 10
// watchers of one key over clientv3 on one connection, puts on another
// at a fixed rate) that also reports each event's time from its put's
// start, which etcd's tool does not: it separates "the event came late"
// from "the put's response came early".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	ep := flag.String("endpoint", "127.0.0.1:2379", "endpoint")
	puts := flag.Int("puts", 1000, "puts")
	rate := flag.Int("rate", 100, "puts per second")
	streams := flag.Int("streams", 10, "watch streams")
	per := flag.Int("watchers", 10, "watchers per stream")
	flag.Parse()
	cfg := clientv3.Config{Endpoints: []string{*ep}, DialTimeout: 5 * time.Second}
	wc, err := clientv3.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pc, err := clientv3.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key := "wlprobe-key"
	n := *streams * *per
	arrivals := make([][]time.Time, n)
	revs := make([][]int64, n)
	var wg sync.WaitGroup
	for s := range *streams {
		w := clientv3.NewWatcher(wc)
		for j := range *per {
			i := s**per + j
			ch := w.Watch(context.Background(), key)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for len(arrivals[i]) < *puts {
					r := <-ch
					now := time.Now()
					for _, ev := range r.Events {
						arrivals[i] = append(arrivals[i], now)
						revs[i] = append(revs[i], ev.Kv.ModRevision)
					}
				}
			}()
		}
	}
	time.Sleep(time.Second) // watchers created
	starts, ends := map[int64]time.Time{}, map[int64]time.Time{}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	for range *puts {
		<-tick.C
		st := time.Now()
		r, err := pc.Put(context.Background(), key, "0123456789abcdef0123456789abcdef")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		en := time.Now()
		starts[r.Header.Revision], ends[r.Header.Revision] = st, en
	}
	wg.Wait()
	var afterResp, fromStart, put []float64
	for i := range arrivals {
		for k, at := range arrivals[i] {
			rv := revs[i][k]
			afterResp = append(afterResp, max(0, at.Sub(ends[rv]).Seconds()*1e3))
			fromStart = append(fromStart, at.Sub(starts[rv]).Seconds()*1e3)
		}
	}
	for rv, s := range starts {
		put = append(put, ends[rv].Sub(s).Seconds()*1e3)
	}
	pr := func(name string, d []float64) {
		slices.Sort(d)
		at := func(q float64) float64 { return d[int(q*float64(len(d)-1))] }
		fmt.Printf("%s p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f\n", name, at(.5), at(.9), at(.99), at(.999))
	}
	pr("put", put)
	pr("event-after-response", afterResp)
	pr("event-from-put-start", fromStart)
}
