package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/config"
)

// TestMeasureSnapshotCatchUp loads a 3-member cluster with
// METASTORE_MEASURE_CATCHUP keys (100-byte values), adds a member and
// measures how long it takes to catch up (by snapshot) and the leader's
// put latency meanwhile, against the same load before. It fails if the
// member does not install a snapshot or the leader stops answering.
func TestMeasureSnapshotCatchUp(t *testing.T) {
	keys, _ := strconv.Atoi(os.Getenv("METASTORE_MEASURE_CATCHUP"))
	if keys == 0 {
		t.Skip("set METASTORE_MEASURE_CATCHUP=<keys> to measure")
	}
	// etcd's default timings; the log is truncated every 1000 entries (the
	// load is ~keys/128 entries), so the new member needs a snapshot.
	var ms []*clusterMember
	for _, c := range clusterConfigs(t, 3) {
		c.Cluster.HeartbeatInterval, c.Cluster.ElectionTimeout = 100*time.Millisecond, time.Second
		c.Cluster.SnapshotCount, c.Cluster.SnapshotCatchUpEntries = 1000, 500
		ms = append(ms, startMember(t, c))
	}
	lead := ms[waitLeader(t, ms)]
	waitPublished(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				base := next.Add(128) - 128
				if base >= int64(keys) {
					return
				}
				var ops []*pb.RequestOp
				for i := base; i < min(base+128, int64(keys)); i++ {
					v := make([]byte, 100)
					rand.Read(v)
					ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprintf("key/%09d", i)), Value: v}}})
				}
				if _, err := lead.kv.Txn(ctx, &pb.TxnRequest{Success: ops}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("loaded %d keys in %v (revision %d, applied index %d)", keys, time.Since(start).Round(time.Millisecond), lead.s.store.Rev(), lead.s.node.AppliedIndex())

	// A steady writer on the leader, 4 clients, recording put latencies.
	var (
		latMu  sync.Mutex
		phase  atomic.Int32 // 0 before the add, 1 during the catch-up, 2 after
		before []time.Duration
		during []time.Duration
		failed atomic.Int64
	)
	stop := make(chan struct{})
	var wwg sync.WaitGroup
	for w := range 4 {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := phase.Load()
				t0 := time.Now()
				if _, err := lead.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("load/%d/%d", w, i)), Value: []byte("v")}); err != nil {
					failed.Add(1)
					t.Logf("put: %v", err)
					continue
				}
				d := time.Since(t0)
				latMu.Lock()
				switch p {
				case 0:
					before = append(before, d)
				case 1:
					during = append(during, d)
				}
				latMu.Unlock()
			}
		}()
	}
	time.Sleep(5 * time.Second)

	peer := fmt.Sprintf("http://127.0.0.1:%d", freePorts(t, 1)[0])
	phase.Store(1)
	addStart := time.Now()
	if _, err := lead.cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{peer}}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name = "m3"
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Server.ListenPeerURLs, cfg.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.Cluster.InitialCluster = ms[0].cfg.Cluster.InitialCluster + ",m3=" + peer
	cfg.Cluster.InitialClusterState = "existing"
	cfg.Cluster.HeartbeatInterval, cfg.Cluster.ElectionTimeout = 100*time.Millisecond, time.Second
	cfg.Cluster.SnapshotCount, cfg.Cluster.SnapshotCatchUpEntries = 1000, 500
	joined := startMember(t, cfg)
	for joined.s.node.AppliedIndex() < lead.s.node.AppliedIndex() || joined.s.node.Metrics().SnapshotsInstalled == 0 {
		if time.Since(addStart) > 20*time.Minute {
			t.Fatal("the new member did not catch up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	caughtUp := time.Since(addStart)
	phase.Store(2)
	close(stop)
	wwg.Wait()
	nm := joined.s.node.Metrics()
	snapBytes := uint64(0)
	for id, m := range lead.s.peerTransport.Metrics() {
		if id == joined.s.ids.Member {
			snapBytes = m.SentBytes
		}
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(float64(len(s)-1)*p)]
	}
	t.Logf("new member caught up in %v (snapshot install %v, %.1f MiB sent to it)", caughtUp.Round(time.Millisecond),
		nm.SnapshotInstallTime.Round(time.Millisecond), float64(snapBytes)/(1<<20))
	t.Logf("leader put latency before: n=%d p50=%v p99=%v max=%v", len(before), pct(before, 0.5), pct(before, 0.99), pct(before, 1))
	t.Logf("leader put latency during: n=%d p50=%v p99=%v max=%v; %d puts failed", len(during), pct(during, 0.5), pct(during, 0.99), pct(during, 1), failed.Load())
	if len(during) == 0 {
		t.Fatal("no put completed during the catch-up")
	}
}
