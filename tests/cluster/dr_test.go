package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestDisasterRecovery is etcd's disaster-recovery procedure end to end:
// `etcdctl snapshot save` from one member of a 3-member cluster under
// write load, the file restored into each of 3 new members with the
// cluster flags of `etcdutl snapshot restore` (`metastore snapshot
// restore` for metastore), the new members started with
// --initial-cluster-state new. The new cluster must hold every key at
// every revision the source held up to the snapshot (with the compaction
// and leases), list only the new members with the IDs etcd derives, and
// take writes. Sources and targets are both kinds: etcd → etcd proves the
// expectation.
func TestDisasterRecovery(t *testing.T) {
	pairs := [][2]string{{Etcd, Etcd}, {Etcd, Metastore}, {Metastore, Metastore}, {Metastore, Etcd}}
	if framework.OnlyEtcd() {
		pairs = pairs[:1]
	}
	for _, p := range pairs {
		t.Run(p[0]+"-to-"+p[1], func(t *testing.T) { disasterRecovery(t, p[0], p[1]) })
	}
}

const drPrefix = "/dr/"

func disasterRecovery(t *testing.T, from, to string) {
	src := Start(t, Config{Kind: from})
	cli := src.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Long leases, so that none expires during the test; keys are put
	// with them under load.
	var leases []clientv3.LeaseID
	for range 4 {
		l, err := cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l.ID)
	}
	var (
		wg     sync.WaitGroup
		writes atomic.Int64
		wctx   context.Context
		wstop  context.CancelFunc
	)
	wctx, wstop = context.WithCancel(ctx)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; wctx.Err() == nil; i++ {
				key := fmt.Sprintf("%sk%03d", drPrefix, rng.IntN(100))
				val := fmt.Sprintf("w%d-%d", w, i)
				var err error
				switch rng.IntN(10) {
				case 0:
					_, err = cli.Delete(wctx, key)
				case 1:
					_, err = cli.Put(wctx, key, val, clientv3.WithLease(leases[rng.IntN(len(leases))]))
				case 2:
					other := fmt.Sprintf("%st%03d", drPrefix, rng.IntN(100))
					_, err = cli.Txn(wctx).If(clientv3.Compare(clientv3.Version(key), ">", 1)).
						Then(clientv3.OpPut(key, val), clientv3.OpPut(other, val)).
						Else(clientv3.OpDelete(other)).Commit()
				default:
					_, err = cli.Put(wctx, key, val)
				}
				if err == nil {
					writes.Add(1)
				} else if wctx.Err() == nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	defer func() { wstop(); wg.Wait() }()
	waitWrites := func(n int64) {
		for writes.Load() < n && ctx.Err() == nil && !t.Failed() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitWrites(300)
	resp, err := cli.Get(ctx, "health")
	if err != nil {
		t.Fatal(err)
	}
	compacted := resp.Header.Revision - 100
	if _, err := cli.Compact(ctx, compacted); err != nil {
		t.Fatal(err)
	}
	waitWrites(600)
	file := filepath.Join(t.TempDir(), "backup.db")
	saver := src.Members[1]
	if res := framework.Etcdctl(t, saver.Endpoint, "", "snapshot", "save", file); res.ExitCode != 0 {
		t.Fatalf("etcdctl snapshot save: %s%s", res.Stdout, res.Stderr)
	}
	during := writes.Load()
	waitWrites(during + 100) // the load went on after the save
	wstop()
	wg.Wait()
	if t.Failed() {
		return
	}
	st, err := snapshot.NewV3(zap.NewNop()).Status(file)
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	rev := st.Revision
	t.Logf("%s: snapshot at revision %d (compacted %d), %d keys, %d bytes; %d writes acknowledged before the save ended", from, rev, compacted, st.TotalKey, st.TotalSize, during)
	if rev <= compacted+100 {
		t.Fatalf("snapshot revision %d, want past the compaction at %d and the writes after it", rev, compacted)
	}
	var srcIDs []uint64
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ml.Members {
		srcIDs = append(srcIDs, m.ID)
	}

	if _, err := src.WaitConverged(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	dst := restoreCluster(t, to, file)
	dcli := dst.Client(t)

	// The member list: the new members only, with etcd's IDs.
	urls := map[string][]string{}
	for _, m := range dst.Members {
		urls[m.Name] = []string{m.PeerURL}
	}
	um, err := types.NewURLsMap(initialClusterOf(dst))
	if err != nil {
		t.Fatal(err)
	}
	want, err := membership.NewClusterFromURLsMap(zap.NewNop(), dst.Token, um)
	if err != nil {
		t.Fatal(err)
	}
	ml, err = dcli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ml.Header.ClusterId != uint64(want.ID()) {
		t.Errorf("cluster ID %x, want %x (etcd's, from the new members)", ml.Header.ClusterId, uint64(want.ID()))
	}
	if len(ml.Members) != len(dst.Members) {
		t.Errorf("member list has %d members, want %d: %v", len(ml.Members), len(dst.Members), ml.Members)
	}
	for _, m := range ml.Members {
		wm := want.MemberByName(m.Name)
		if slices.Contains(srcIDs, m.ID) {
			t.Errorf("old member %x (%s) in the restored cluster", m.ID, m.Name)
		}
		if wm == nil || uint64(wm.ID) != m.ID || !slices.Equal(m.PeerURLs, urls[m.Name]) {
			t.Errorf("member %x %q %v, want %v", m.ID, m.Name, m.PeerURLs, wm)
		}
	}

	// Every key at every revision from the compaction to the snapshot's,
	// on every new member, as the source has it.
	srcM := src.Members[0].Client()
	for _, m := range dst.Members {
		compareHistory(t, srcM, m.Client(), m.String(), compacted, rev)
	}
	// Before the compaction: compacted on both.
	if _, err := dst.Members[0].Client().Get(ctx, drPrefix, clientv3.WithPrefix(), clientv3.WithRev(compacted-1)); err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Errorf("a read below the restored compaction: %v", err)
	}
	// The leases the keys hold at the snapshot exist, with their keys.
	gr, err := srcM.Get(ctx, drPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	held := map[clientv3.LeaseID][]string{}
	for _, kv := range gr.Kvs {
		if kv.Lease != 0 {
			held[clientv3.LeaseID(kv.Lease)] = append(held[clientv3.LeaseID(kv.Lease)], string(kv.Key))
		}
	}
	if len(held) == 0 {
		t.Fatal("no key holds a lease at the snapshot")
	}
	for id, keys := range held {
		ttl, err := dcli.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
		if err != nil || ttl.TTL <= 0 {
			t.Errorf("lease %x: %+v %v", id, ttl, err)
			continue
		}
		var got []string
		for _, k := range ttl.Keys {
			got = append(got, string(k))
		}
		slices.Sort(got)
		slices.Sort(keys)
		if !slices.Equal(got, keys) {
			t.Errorf("lease %x keys %v, want %v", id, got, keys)
		}
	}

	// The new cluster takes writes, after the snapshot's revision.
	for i := range 20 {
		pr, err := dcli.Put(ctx, fmt.Sprintf("%safter%d", drPrefix, i), "restored")
		if err != nil {
			t.Fatalf("put on the restored cluster: %v", err)
		}
		if i == 0 && pr.Header.Revision != rev+1 {
			t.Errorf("first write at revision %d, want %d", pr.Header.Revision, rev+1)
		}
	}
	if _, err := dst.WaitConverged(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func initialClusterOf(c *Cluster) string {
	var parts []string
	for _, m := range c.Members {
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	return strings.Join(parts, ",")
}

// restoreCluster restores file into the data directories of 3 new members
// of kind (with etcdutl for etcd, `metastore snapshot restore` for
// metastore, both with etcdutl's flags), starts them with
// --initial-cluster-state new and waits for a leader.
func restoreCluster(t *testing.T, kind, file string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Kind: kind, cfg: Config{Kind: kind, Size: 3, HeartbeatMs: 100, ElectionMs: 1000},
		Token: fmt.Sprintf("dr-%d", time.Now().UnixNano())}
	for i := range 3 {
		c.Members = append(c.Members, c.newMember(fmt.Sprintf("r%d", i)))
	}
	initial := initialClusterOf(c)
	for _, m := range c.Members {
		m.setArgs(initial, "new")
		switch kind {
		case Etcd:
			err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
				SnapshotPath: file, Name: m.Name, OutputDataDir: m.DataDir, PeerURLs: []string{m.PeerURL},
				InitialCluster: initial, InitialClusterToken: c.Token,
			})
			if err != nil {
				t.Fatalf("etcdutl snapshot restore into %s: %v", m, err)
			}
		case Metastore:
			out, err := exec.Command(Binary(t, Metastore), "snapshot", "restore", file, "--data-dir", m.DataDir,
				"--name", m.Name, "--initial-cluster", initial, "--initial-cluster-token", c.Token,
				"--initial-advertise-peer-urls", m.PeerURL).CombinedOutput()
			if err != nil {
				t.Fatalf("metastore snapshot restore into %s: %v\n%s", m, err, out)
			}
		}
	}
	for _, m := range c.Members {
		m.Start()
	}
	for _, m := range c.Members {
		if err := m.WaitReady(90 * time.Second); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	if _, err := c.WaitLeader(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// compareHistory compares every key under drPrefix at every revision in
// [from, to] between two members.
func compareHistory(t *testing.T, want, got *clientv3.Client, name string, from, to int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	problems := 0
	for rev := from; rev <= to && problems < 5; rev++ {
		w, err := want.Get(ctx, drPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable())
		if err != nil {
			t.Fatalf("source at %d: %v", rev, err)
		}
		g, err := got.Get(ctx, drPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable())
		if err != nil {
			t.Fatalf("%s at %d: %v", name, rev, err)
		}
		if d := diffKVs(w.Kvs, g.Kvs); d != "" {
			problems++
			t.Errorf("%s at revision %d: %s", name, rev, d)
		}
	}
}

func diffKVs(want, got []*mvccpb.KeyValue) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d keys, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if string(w.Key) != string(g.Key) || string(w.Value) != string(g.Value) || w.CreateRevision != g.CreateRevision ||
			w.ModRevision != g.ModRevision || w.Version != g.Version || w.Lease != g.Lease {
			return fmt.Sprintf("got %v, want %v", g, w)
		}
	}
	return ""
}
