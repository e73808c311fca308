package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// inprocCluster starts n metastore members in this process with etcd's
// clustering settings, and returns their configurations (to restart one)
// and the running members.
func inprocCluster(t *testing.T, n int) ([]*config.Config, []*framework.Metastore) {
	t.Helper()
	var initial []string
	peers, clients := make([]string, n), make([]string, n)
	for i := range n {
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", framework.StablePort(t))
		clients[i] = fmt.Sprintf("http://127.0.0.1:%d", framework.StablePort(t))
		initial = append(initial, fmt.Sprintf("m%d=%s", i, peers[i]))
	}
	var cfgs []*config.Config
	var ms []*framework.Metastore
	for i := range n {
		var cfg *config.Config
		ms = append(ms, framework.StartMetastoreConfig(t, func(c *config.Config) {
			c.Name = fmt.Sprintf("m%d", i)
			c.Server.ListenClientURLs = []string{clients[i]}
			c.Server.AdvertiseClientURLs = []string{clients[i]}
			c.Server.ListenPeerURLs, c.Server.AdvertisePeerURLs = []string{peers[i]}, []string{peers[i]}
			c.Cluster.InitialCluster = strings.Join(initial, ",")
			c.Cluster.HeartbeatInterval, c.Cluster.ElectionTimeout = 25*time.Millisecond, 250*time.Millisecond
			cfg = c
		}))
		cfgs = append(cfgs, cfg)
	}
	return cfgs, ms
}

func leaderOf(t *testing.T, cli *clientv3.Client, eps []string) (int, uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, ep := range eps {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i, st.Leader
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader")
	return -1, 0
}

// TestClusterClientV3 drives a 3-member metastore cluster with clientv3
// given all three endpoints: 8 writers through a leader stop and restart
// lose no acknowledged write, every member converges to the same revision
// and HashKV, keep-alives survive the leader change, and
// WithRequireLeader gets etcd's error once the quorum is gone.
func TestClusterClientV3(t *testing.T) {
	cfgs, ms := inprocCluster(t, 3)
	var eps []string
	for _, c := range cfgs {
		eps = append(eps, strings.TrimPrefix(c.Server.ListenClientURLs[0], "http://"))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	lead, _ := leaderOf(t, cli, eps)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lg, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "leased", "x", clientv3.WithLease(lg.ID)); err != nil {
		t.Fatal(err)
	}
	kach, err := cli.KeepAlive(ctx, lg.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range kach {
		}
	}()

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d/%d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cli.Put(pctx, k, "v")
				pcancel()
				if err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := ms[lead].Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	ms[lead] = framework.StartMetastoreConfig(t, func(c *config.Config) { *c = *cfgs[lead] })
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}

	// Every acknowledged write is on every member, at one revision.
	var revs []int64
	var hashes []uint32
	for _, ep := range eps {
		one, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := one.Get(ctx, "w", clientv3.WithPrefix()) // linearizable
		if err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
		got := map[string]bool{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = true
		}
		for k := range acked {
			if !got[k] {
				t.Fatalf("%s lost acknowledged write %s", ep, k)
			}
		}
		h, err := one.HashKV(ctx, ep, resp.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		revs, hashes = append(revs, resp.Header.Revision), append(hashes, h.Hash)
		one.Close()
	}
	if revs[0] != revs[1] || revs[1] != revs[2] || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("members differ: revisions %v, HashKV %v", revs, hashes)
	}
	// The lease was kept alive across the leader change.
	if resp, err := cli.Get(ctx, "leased"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leased key after the leader change: %v %v", resp, err)
	}

	// Quorum gone: WithRequireLeader fails with etcd's error.
	lead, _ = leaderOf(t, cli, eps)
	survivor := (lead + 1) % 3
	for i := range ms {
		if i != survivor {
			ms[i].Stop()
		}
	}
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[survivor]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	// NB: clientv3 retries Unavailable errors such as "no leader" until
	// the deadline (with etcd too), so the server's answer is read on the
	// client's connection directly, as etcd's TestGRPCRequireLeader does.
	kv := pb.NewKVClient(one.ActiveConnection())
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 2*time.Second)
		_, err := kv.Range(rctx, &pb.RangeRequest{Key: []byte("leased"), Serializable: true})
		rcancel()
		if errors.Is(rpctypes.Error(err), rpctypes.ErrNoLeader) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("require-leader get without a quorum: %v, want %v", err, rpctypes.ErrNoLeader)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
