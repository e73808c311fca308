package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// saveSnapshot streams m's snapshot into a file, as `etcdctl snapshot
// save` does (the last message is the SHA-256 trailer, kept in the file).
func saveSnapshot(t *testing.T, m *clusterMember) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := m.maint.Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(resp.Blob); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestRestoreSnapshotCluster: a snapshot of a 3-member cluster restored
// into 3 new members (etcdutl's flags) starts as a new cluster with the
// IDs etcd derives, the new members only, the data at every revision, the
// leases, and takes writes.
func TestRestoreSnapshotCluster(t *testing.T) {
	src := startCluster(t, 3)
	lead := waitLeader(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lease, err := src[lead].lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		put(t, src[i%3], fmt.Sprintf("k%d", i%7), fmt.Sprintf("v%d", i))
	}
	if _, err := src[lead].kv.Put(ctx, &pb.PutRequest{Key: []byte("leased"), Value: []byte("x"), Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := src[lead].kv.Compact(ctx, &pb.CompactionRequest{Revision: 5, Physical: true}); err != nil {
		t.Fatal(err)
	}
	file := saveSnapshot(t, src[lead])
	hashes := map[int64]uint32{}
	srcRev := int64(0)
	for rev := int64(5); ; rev++ {
		h, err := src[lead].maint.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
		if err != nil {
			break // past the current revision
		}
		hashes[rev], srcRev = h.Hash, rev
	}
	if srcRev < 20 {
		t.Fatalf("hashed up to revision %d only", srcRev)
	}
	srcCluster := src[0].s.ids.Cluster
	for _, m := range src {
		m.stop(t)
	}

	cfgs := clusterConfigs(t, 3)
	cfgs[0].Cluster.InitialClusterToken = "restored"
	for _, cfg := range cfgs {
		cfg.Cluster.InitialClusterToken = "restored"
		cfg.DataDir = filepath.Join(cfg.DataDir, "member")
		rev, err := RestoreSnapshotCluster(file, cfg.DataDir, RestoreOptions{}, RestoreCluster{
			Name: cfg.Name, InitialCluster: cfg.Cluster.InitialCluster, Token: "restored", AdvertisePeerURLs: cfg.Server.AdvertisePeerURLs,
		})
		if err != nil {
			t.Fatalf("restore %s: %v", cfg.Name, err)
		}
		if rev != srcRev {
			t.Fatalf("restored revision %d, want %d", rev, srcRev)
		}
	}
	var ms []*clusterMember
	var wantIDs []uint64
	for _, cfg := range cfgs {
		ms = append(ms, startMember(t, cfg))
		id, err := raftnode.MemberID(cfg.Server.AdvertisePeerURLs, "restored", nil)
		if err != nil {
			t.Fatal(err)
		}
		wantIDs = append(wantIDs, id)
	}
	lead = waitLeader(t, ms)
	for i, m := range ms {
		if m.s.ids.Member != wantIDs[i] || m.s.ids.Cluster != raftnode.ClusterID(wantIDs) {
			t.Fatalf("%s: IDs %+v, want member %x cluster %x", m.name, m.s.ids, wantIDs[i], raftnode.ClusterID(wantIDs))
		}
	}
	if ms[0].s.ids.Cluster == srcCluster {
		t.Fatal("the restored cluster kept the old cluster ID")
	}
	// The restored member records have names but no client URLs: each
	// member publishes its own once it runs.
	var ml *pb.MemberListResponse
	for deadline := time.Now().Add(15 * time.Second); ; {
		if ml, err = ms[1].cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: true}); err != nil {
			t.Fatal(err)
		}
		published := 0
		for _, m := range ml.Members {
			if len(m.ClientURLs) > 0 {
				published++
			}
		}
		if published == len(ml.Members) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members not published: %v", ml.Members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got []uint64
	for _, m := range ml.Members {
		got = append(got, m.ID)
		if !strings.HasPrefix(m.Name, "m") {
			t.Fatalf("member without its name: %+v", m)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(wantIDs))
	if !slices.Equal(got, want) {
		t.Fatalf("members %x, want %x", got, want)
	}
	for _, m := range ms {
		for rev, h := range hashes {
			hk, err := m.maint.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
			if err != nil {
				t.Fatalf("%s: hashkv at %d: %v", m.name, rev, err)
			}
			if hk.Hash != h || hk.CompactRevision != 5 {
				t.Fatalf("%s: hashkv at %d: %d (compacted %d), want %d (compacted 5)", m.name, rev, hk.Hash, hk.CompactRevision, h)
			}
		}
	}
	ttl, err := ms[lead].lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: lease.ID, Keys: true})
	if err != nil || ttl.TTL <= 0 || len(ttl.Keys) != 1 {
		t.Fatalf("restored lease: %+v %v", ttl, err)
	}
	resp := put(t, ms[(lead+1)%3], "after", "restore")
	if resp.Header.Revision != srcRev+1 {
		t.Fatalf("first write at revision %d, want %d", resp.Header.Revision, srcRev+1)
	}
	for _, m := range ms {
		deadline := time.Now().Add(10 * time.Second)
		for get(t, m, "after", true) != "restore" {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not apply the write", m.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Restart one: it comes back from its own log and state.
	ms[0].stop(t)
	ms[0] = startMember(t, cfgs[0])
	waitLeader(t, ms)
	if got := get(t, ms[0], "after", false); got != "restore" {
		t.Fatalf("after restart: %q", got)
	}
}

// TestRestoreSnapshotClusterFlags: etcdutl's checks of the cluster flags,
// made before anything is written.
func TestRestoreSnapshotClusterFlags(t *testing.T) {
	for _, tc := range []struct {
		rc   RestoreCluster
		want string
	}{
		{RestoreCluster{Name: "x", InitialCluster: "a=http://127.0.0.1:1,b=http://127.0.0.1:2"}, `couldn't find local name "x" in the initial cluster configuration`},
		{RestoreCluster{Name: "a", InitialCluster: "a=http://127.0.0.1:1,b=http://127.0.0.1:2", AdvertisePeerURLs: []string{"http://127.0.0.1:3"}}, "--initial-cluster has a=http://127.0.0.1:1 but missing from --initial-advertise-peer-urls=http://127.0.0.1:3"},
		{RestoreCluster{Name: "a", InitialCluster: "a=http://127.0.0.1:1,b=http://127.0.0.1:1"}, "duplicate url"},
		{RestoreCluster{Name: "a", InitialCluster: "a"}, "want name=peer-url"},
		{RestoreCluster{Name: "x"}, `couldn't find local name "x"`},
		{RestoreCluster{Name: "a", InitialCluster: "a=http://127.0.0.1:1", AdvertisePeerURLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}}, "--initial-advertise-peer-urls has http://127.0.0.1:2 but missing from --initial-cluster=a="},
	} {
		dir := filepath.Join(t.TempDir(), "d")
		_, err := RestoreSnapshotCluster(filepath.Join(t.TempDir(), "missing.db"), dir, RestoreOptions{}, tc.rc)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.rc, err, tc.want)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%+v: data directory created", tc.rc)
		}
	}
	// etcdutl's defaults: member "default" at http://localhost:2380.
	ms, self, _, err := RestoreCluster{}.members()
	if err != nil || len(ms) != 1 || ms[0].Name != "default" || ms[0].ID != self {
		t.Fatalf("defaults: %+v %x %v", ms, self, err)
	}
	want, _ := raftnode.MemberID([]string{"http://localhost:2380"}, "etcd-cluster", nil)
	if self != want {
		t.Fatalf("default member ID %x, want %x", self, want)
	}
}

// TestRestoreSnapshotClusterBump: etcdutl's --bump-revision and
// --mark-compacted combine with the cluster flags: the restored members
// agree on the raised revision, compacted there, and continue after it.
func TestRestoreSnapshotClusterBump(t *testing.T) {
	single := config.Default()
	single.DataDir = t.TempDir()
	single.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	src := startMember(t, single)
	for i := range 5 {
		put(t, src, fmt.Sprintf("k%d", i), "v")
	}
	file := saveSnapshot(t, src)
	src.stop(t)

	cfgs := clusterConfigs(t, 3)
	var ms []*clusterMember
	for _, cfg := range cfgs {
		cfg.DataDir = filepath.Join(cfg.DataDir, "member")
		rev, err := RestoreSnapshotCluster(file, cfg.DataDir, RestoreOptions{BumpRevision: 1000, MarkCompacted: true}, RestoreCluster{
			Name: cfg.Name, InitialCluster: cfg.Cluster.InitialCluster, Token: cfg.Cluster.InitialClusterToken, AdvertisePeerURLs: cfg.Server.AdvertisePeerURLs,
		})
		if err != nil || rev != 1006 {
			t.Fatalf("restore %s: revision %d, %v", cfg.Name, rev, err)
		}
	}
	for _, cfg := range cfgs {
		ms = append(ms, startMember(t, cfg))
	}
	lead := waitLeader(t, ms)
	if resp := put(t, ms[lead], "after", "bump"); resp.Header.Revision != 1007 {
		t.Fatalf("first write at revision %d, want 1007", resp.Header.Revision)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range ms {
		if _, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k0"), Revision: 1005, Serializable: true}); err == nil || err.Error() != rpctypes.ErrGRPCCompacted.Error() {
			t.Fatalf("%s: read below the bumped compaction: %v", m.name, err)
		}
	}
	waitApplied(t, ms, "after", "bump")
}
