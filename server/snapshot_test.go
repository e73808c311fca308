package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// snapshotClusterConfigs are clusterConfigs truncating the log every count
// entries.
func snapshotClusterConfigs(t *testing.T, n int, count uint64) []*config.Config {
	cfgs := clusterConfigs(t, n)
	for _, c := range cfgs {
		c.Cluster.SnapshotCount, c.Cluster.SnapshotCatchUpEntries = count, count/2
	}
	return cfgs
}

// rangeAll reads every key (serializable: this member's own state).
func rangeAll(t *testing.T, m *clusterMember) *pb.RangeResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Serializable: true})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitCaughtUp waits until m has applied what the leader has.
func waitCaughtUp(t *testing.T, leader, m *clusterMember) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for m.s.node.AppliedIndex() < leader.s.node.AppliedIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("%s applied %d, the leader %d", m.name, m.s.node.AppliedIndex(), leader.s.node.AppliedIndex())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sameState checks that m holds the leader's keys and HashKV.
func sameState(t *testing.T, leader, m *clusterMember) {
	t.Helper()
	waitCaughtUp(t, leader, m)
	want, got := rangeAll(t, leader), rangeAll(t, m)
	if len(got.Kvs) != len(want.Kvs) || got.Header.Revision != want.Header.Revision {
		t.Fatalf("%s has %d keys at revision %d, the leader %d at %d", m.name, len(got.Kvs), got.Header.Revision, len(want.Kvs), want.Header.Revision)
	}
	for i := range want.Kvs {
		if want.Kvs[i].String() != got.Kvs[i].String() {
			t.Fatalf("%s: key %d is %v, the leader's %v", m.name, i, got.Kvs[i], want.Kvs[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hw, err := leader.maint.HashKV(ctx, &pb.HashKVRequest{Revision: want.Header.Revision})
	if err != nil {
		t.Fatal(err)
	}
	hg, err := m.maint.HashKV(ctx, &pb.HashKVRequest{Revision: want.Header.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if hg.Hash != hw.Hash || hg.CompactRevision != hw.CompactRevision {
		t.Fatalf("%s: HashKV %d (compacted %d), the leader's %d (compacted %d)", m.name, hg.Hash, hg.CompactRevision, hw.Hash, hw.CompactRevision)
	}
}

// TestClusterFollowerCatchesUpBySnapshot: a follower stopped while the
// others write, compact, grant and revoke leases and change auth past the
// snapshot count receives a snapshot on its return (not the log), then
// holds every key, the HashKV, the leases, the users and the members of
// the leader, and serves.
func TestClusterFollowerCatchesUpBySnapshot(t *testing.T) {
	cfgs := snapshotClusterConfigs(t, 3, 100)
	var ms []*clusterMember
	for _, c := range cfgs {
		ms = append(ms, startMember(t, c))
	}
	lead := waitLeader(t, ms)
	waitPublished(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old, err := ms[lead].lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms[lead].kv.Put(ctx, &pb.PutRequest{Key: []byte("leased-old"), Value: []byte("x"), Lease: old.ID}); err != nil {
		t.Fatal(err)
	}
	f := others(ms, lead)[0]
	waitCaughtUp(t, ms[lead], f)
	if !f.s.lessor.Exists(old.ID) {
		t.Fatal("the follower does not know the lease")
	}
	f.stop(t)

	l := ms[lead]
	for i := range 400 {
		put(t, l, fmt.Sprintf("k%03d", i), fmt.Sprint("v", i))
	}
	for i := range 50 {
		put(t, l, fmt.Sprintf("k%03d", i), "again")
	}
	if _, err := l.kv.Compact(ctx, &pb.CompactionRequest{Revision: l.s.store.Rev() - 20, Physical: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: old.ID}); err != nil {
		t.Fatal(err)
	}
	nl, err := l.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.kv.Put(ctx, &pb.PutRequest{Key: []byte("leased-new"), Value: []byte("y"), Lease: nl.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewAuthClient(l.conn).UserAdd(ctx, &pb.AuthUserAddRequest{Name: "snapuser", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.s.logStore.FirstIndex(); first <= f.s.node.AppliedIndex()+1 {
		t.Fatalf("the leader's log was not truncated past the follower (first index %d)", first)
	}

	f2 := startMember(t, f.cfg)
	for i, m := range ms {
		if m == f {
			ms[i] = f2
		}
	}
	sameState(t, l, f2)
	if n := f2.s.node.Metrics().SnapshotsInstalled; n == 0 {
		t.Fatal("the follower caught up without installing a snapshot")
	}
	if f2.s.lessor.Exists(old.ID) || !f2.s.lessor.Exists(nl.ID) {
		t.Fatalf("the follower's lessor after the snapshot: old %v, new %v", f2.s.lessor.Exists(old.ID), f2.s.lessor.Exists(nl.ID))
	}
	if _, err := f2.s.auth.UserGet(&pb.AuthUserGetRequest{Name: "snapuser"}); err != nil {
		t.Fatalf("the follower's auth after the snapshot: %v", err)
	}
	if got := len(f2.s.applier.Members().Members); got != 3 {
		t.Fatalf("the follower knows %d members", got)
	}
	// A watch from a compacted revision: etcd's compacted cancel.
	wc, err := pb.NewWatchClient(f2.conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 2}}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := wc.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.Canceled {
			if r.CompactRevision == 0 {
				t.Fatalf("watch canceled without the compacted revision: %+v", r)
			}
			break
		}
	}
	// It serves writes and goes on after a restart.
	put(t, f2, "after", "snapshot")
	f2.stop(t)
	f3 := startMember(t, f.cfg)
	for i, m := range ms {
		if m == f2 {
			ms[i] = f3
		}
	}
	put(t, ms[lead], "after2", "restart")
	sameState(t, ms[lead], f3)
	fams, err := l.s.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range fams {
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "To" && lp.GetValue() == raftnode.FormatID(f2.s.ids.Member) && (m.GetCounter().GetValue() > 0 || m.GetHistogram().GetSampleCount() > 0) {
					found[f.GetName()] = true
				}
			}
		}
	}
	for _, want := range []string{"etcd_network_snapshot_send_success", "etcd_network_snapshot_send_total_duration_seconds"} {
		if !found[want] {
			t.Errorf("the leader's metrics lack %s for the follower", want)
		}
	}
}

// TestClusterLearnerCatchesUpBySnapshot: a learner added to a loaded
// cluster whose log was truncated gets a snapshot, is promoted once caught
// up; --max-learners refuses a second learner.
func TestClusterLearnerCatchesUpBySnapshot(t *testing.T) {
	cfgs := snapshotClusterConfigs(t, 3, 100)
	var ms []*clusterMember
	for _, c := range cfgs {
		ms = append(ms, startMember(t, c))
	}
	lead := waitLeader(t, ms)
	waitPublished(t, ms)
	for i := range 300 {
		put(t, ms[lead], fmt.Sprintf("k%03d", i), fmt.Sprint("v", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePorts(t, 2)
	peer := fmt.Sprintf("http://127.0.0.1:%d", port[0])
	// etcd's strict reconfiguration check wants every peer connected for
	// 5 s: a cluster this young is "unhealthy" until then.
	var add *pb.MemberAddResponse
	var err error
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		add, err = ms[lead].cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{peer}, IsLearner: true})
		if err == nil {
			break
		}
		if err.Error() != rpctypes.ErrGRPCUnhealthy.Error() || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	_, err = ms[lead].cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{fmt.Sprintf("http://127.0.0.1:%d", port[1])}, IsLearner: true})
	if err == nil || err.Error() != rpctypes.ErrGRPCTooManyLearners.Error() {
		t.Fatalf("a second learner with --max-learners 1: %v, want %v", err, rpctypes.ErrGRPCTooManyLearners)
	}
	cfg := config.Default()
	cfg.Name = "m3"
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Server.ListenPeerURLs, cfg.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.Cluster.InitialCluster = ms[0].cfg.Cluster.InitialCluster + ",m3=" + peer
	cfg.Cluster.InitialClusterState = "existing"
	cfg.Cluster.HeartbeatInterval, cfg.Cluster.ElectionTimeout = 20*time.Millisecond, 200*time.Millisecond
	cfg.Cluster.SnapshotCount, cfg.Cluster.SnapshotCatchUpEntries = 100, 50
	joined := startMember(t, cfg)
	waitCaughtUp(t, ms[lead], joined)
	if joined.s.node.Metrics().SnapshotsInstalled == 0 {
		t.Fatal("the learner caught up without a snapshot")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := ms[lead].cluster.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: add.Member.ID})
		if err == nil {
			break
		}
		if err.Error() != rpctypes.ErrGRPCLearnerNotReady.Error() || time.Now().After(deadline) {
			t.Fatalf("promote: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sameState(t, ms[lead], joined)
	put(t, joined, "promoted", "yes")
	if got := get(t, ms[lead], "promoted", false); got != "yes" {
		t.Fatalf("write through the promoted member: %q", got)
	}
}
