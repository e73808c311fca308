package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/server/config"
)

// clusterMember is one in-process member of a test cluster.
type clusterMember struct {
	name    string
	cfg     *config.Config
	s       *Server
	conn    *grpc.ClientConn
	kv      pb.KVClient
	lease   pb.LeaseClient
	cluster pb.ClusterClient
	maint   pb.MaintenanceClient
	cancel  context.CancelFunc
	done    chan error
}

// freePorts returns n loopback ports free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var out []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// clusterConfigs returns the configurations of an n-member cluster on
// loopback, with etcd's flags' settings and short timeouts.
func clusterConfigs(t *testing.T, n int) []*config.Config {
	t.Helper()
	ports := freePorts(t, n)
	var initial []string
	for i, p := range ports {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, p))
	}
	var out []*config.Config
	for i, p := range ports {
		cfg := config.Default()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.DataDir = t.TempDir()
		cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
		peer := fmt.Sprintf("http://127.0.0.1:%d", p)
		cfg.Server.ListenPeerURLs = []string{peer}
		cfg.Server.AdvertisePeerURLs = []string{peer}
		cfg.Cluster.InitialCluster = strings.Join(initial, ",")
		cfg.Cluster.InitialClusterToken = "test-cluster"
		cfg.Cluster.HeartbeatInterval = 20 * time.Millisecond
		cfg.Cluster.ElectionTimeout = 200 * time.Millisecond
		cfg.Lease.MinTTL = time.Second
		cfg.Auth.BcryptCost = 4
		out = append(out, cfg)
	}
	return out
}

func startMember(t *testing.T, cfg *config.Config) *clusterMember {
	t.Helper()
	var lg *slog.Logger
	if os.Getenv("MEMBER_LOG") != "" {
		lg = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("name", cfg.Name)
	}
	s, err := New(cfg, lg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	m := &clusterMember{name: cfg.Name, cfg: cfg, s: s, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- s.Run(ctx) }()
	m.conn, err = grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	m.kv, m.lease, m.cluster, m.maint = pb.NewKVClient(m.conn), pb.NewLeaseClient(m.conn), pb.NewClusterClient(m.conn), pb.NewMaintenanceClient(m.conn)
	t.Cleanup(func() { m.stop(t) })
	return m
}

func (m *clusterMember) stop(t *testing.T) {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop", m.name)
	}
	m.conn.Close()
}

func startCluster(t *testing.T, n int) []*clusterMember {
	t.Helper()
	var ms []*clusterMember
	for _, cfg := range clusterConfigs(t, n) {
		ms = append(ms, startMember(t, cfg))
	}
	return ms
}

// waitLeader waits until every running member sees the same leader and
// returns its index in ms.
func waitLeader(t *testing.T, ms []*clusterMember) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var lead uint64
		same := true
		for _, m := range ms {
			if m.cancel == nil {
				continue
			}
			l := m.s.node.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				same = false
				break
			}
			lead = l
		}
		if same && lead != 0 {
			for i, m := range ms {
				if m.cancel != nil && m.s.ids.Member == lead {
					return i
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no common leader")
	return -1
}

func put(t *testing.T, m *clusterMember, k, v string) *pb.PutResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)})
	if err != nil {
		t.Fatalf("put %s on %s: %v", k, m.name, err)
	}
	return resp
}

func get(t *testing.T, m *clusterMember, k string, serializable bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte(k), Serializable: serializable})
	if err != nil {
		t.Fatalf("get %s on %s: %v", k, m.name, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func others(ms []*clusterMember, i int) []*clusterMember {
	var out []*clusterMember
	for j, m := range ms {
		if j != i && m.cancel != nil {
			out = append(out, m)
		}
	}
	return out
}

// TestClusterWritesReadsFailover: writes on a follower, linearizable reads
// on another, IDs and Status as etcd's, the leader stopped → a new one is
// elected and writes go on, the old leader restarts and catches up.
func TestClusterWritesReadsFailover(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	fs := others(ms, lead)

	// A watch on one follower sees a write made on the other.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	ws, err := pb.NewWatchClient(fs[1].conn).Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k1")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil { // created
		t.Fatal(err)
	}
	resp := put(t, fs[0], "k1", "v1")
	ev, err := ws.Recv()
	if err != nil || len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "v1" || ev.Events[0].Kv.ModRevision != resp.Header.Revision {
		t.Fatalf("watch on a follower: %v %v", ev, err)
	}
	// Linearizable on the other follower: it must see the write at once.
	if got := get(t, fs[1], "k1", false); got != "v1" {
		t.Fatalf("linearizable read on a follower after a write on another: %q", got)
	}
	// IDs: etcd's derivations, the same on every member.
	for _, m := range ms {
		if resp.Header.ClusterId != m.s.ids.Cluster {
			t.Fatalf("cluster IDs differ: %x vs %x", resp.Header.ClusterId, m.s.ids.Cluster)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := fs[1].maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != ms[lead].s.ids.Member || st.RaftTerm == 0 || st.RaftIndex == 0 || st.RaftAppliedIndex == 0 {
		t.Fatalf("status on a follower: %+v (leader %x)", st, ms[lead].s.ids.Member)
	}
	// Member list: every member published its name.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ml, err := fs[0].cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
		if err != nil {
			t.Fatal(err)
		}
		named := 0
		for _, m := range ml.Members {
			if m.Name != "" && len(m.ClientURLs) == 1 {
				named++
			}
		}
		if len(ml.Members) == 3 && named == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("member list: %v", ml.Members)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Peer traffic is exported under etcd's names.
	mfs, err := ms[lead].s.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sent float64
	for _, mf := range mfs {
		if mf.GetName() == "etcd_network_peer_sent_bytes_total" {
			for _, m := range mf.GetMetric() {
				sent += m.GetCounter().GetValue()
			}
		}
	}
	if sent == 0 {
		t.Fatal("etcd_network_peer_sent_bytes_total is 0 on the leader")
	}

	// Leader stops: the others elect one and writes continue.
	old := ms[lead]
	old.stop(t)
	lead2 := waitLeader(t, ms)
	if ms[lead2] == old {
		t.Fatal("stopped member still leads")
	}
	for i := range 20 {
		put(t, others(ms, lead2)[0], fmt.Sprintf("after/%d", i), "x")
	}
	// Restart the old leader on its data: it catches up from the log.
	ms[lead] = startMember(t, old.cfg)
	deadline = time.Now().Add(15 * time.Second)
	for get(t, ms[lead], "after/19", true) != "x" {
		if time.Now().After(deadline) {
			t.Fatal("restarted member did not catch up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := get(t, ms[lead], "k1", false); got != "v1" {
		t.Fatalf("restarted member lost k1: %q", got)
	}
	// Equal stores: the same revision and HashKV everywhere.
	waitLeader(t, ms)
	var hashes []uint32
	for _, m := range ms {
		get(t, m, "k1", false) // catch up
		h, err := m.maint.HashKV(ctx, &pb.HashKVRequest{})
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h.Hash)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("HashKV differs between members: %v", hashes)
	}
}

// TestClusterNoLeader: with a quorum gone, WithRequireLeader requests get
// etcd's no-leader error and linearizable reads fail; serializable reads
// are still answered.
func TestClusterNoLeader(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	put(t, ms[lead], "k", "v")
	survivor := others(ms, lead)[0]
	get(t, survivor, "k", false)
	// A watch that requires a leader ends with etcd's error once there is
	// none (etcd's monitorLeader).
	wctx, wcancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	defer wcancel()
	ws, err := pb.NewWatchClient(survivor.conn).Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m != survivor {
			m.stop(t)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for survivor.s.node.Leader() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("survivor still sees a leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		_, err := ws.Recv()
		if err == nil {
			continue
		}
		if err.Error() != rpctypes.ErrGRPCNoLeader.Error() {
			t.Fatalf("require-leader watch without a leader ended with %v, want %v", err, rpctypes.ErrGRPCNoLeader)
		}
		break
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	_, err = survivor.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	if err == nil || err.Error() != rpctypes.ErrGRPCNoLeader.Error() {
		t.Fatalf("require-leader range without a leader: %v, want %v", err, rpctypes.ErrGRPCNoLeader)
	}
	if got := get(t, survivor, "k", true); got != "v" {
		t.Fatalf("serializable read without a leader: %q", got)
	}
	tctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := survivor.kv.Range(tctx, &pb.RangeRequest{Key: []byte("k")}); err == nil {
		t.Fatal("linearizable read without a quorum succeeded")
	}
}

// TestClusterLeases: a lease granted on a follower is kept alive through
// it (forwarded to the leader), its TimeToLive comes from the leader, and
// only the leader expires leases: a lease nobody renews is revoked and its
// key deleted on every member.
func TestClusterLeases(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	f := others(ms, lead)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kept, err := f.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if kept.TTL != 1 {
		t.Fatalf("granted TTL %d", kept.TTL)
	}
	short, err := f.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv.Put(ctx, &pb.PutRequest{Key: []byte("kept"), Value: []byte("x"), Lease: kept.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv.Put(ctx, &pb.PutRequest{Key: []byte("short"), Value: []byte("x"), Lease: short.ID}); err != nil {
		t.Fatal(err)
	}
	ka, err := f.lease.LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Keep one alive through the follower for 3 TTLs; the other expires.
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: kept.ID}); err != nil {
			t.Fatal(err)
		}
		r, err := ka.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.TTL != 1 {
			t.Fatalf("keep-alive through a follower: TTL %d", r.TTL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range ms {
		if get(t, m, "short", false) != "" {
			t.Fatalf("%s still has the expired lease's key", m.name)
		}
		if get(t, m, "kept", false) != "x" {
			t.Fatalf("%s lost the kept lease's key", m.name)
		}
	}
	ttl, err := f.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: kept.ID, Keys: true})
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 1 || ttl.TTL < 0 || len(ttl.Keys) != 1 {
		t.Fatalf("TimeToLive on a follower: %+v", ttl)
	}
	ttl, err = f.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: short.ID})
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("TimeToLive of the expired lease: %+v %v", ttl, err)
	}
	// Followers never revoke: the expiry was proposed by the leader.
	for i, m := range ms {
		if got := m.s.expiredRevokes.Load(); (i == lead) != (got > 0) {
			t.Fatalf("%s (leader %v) revoked %v leases on expiry", m.name, i == lead, got)
		}
	}
}

// TestClusterMembership: a learner added with MemberAdd joins with
// --initial-cluster-state existing, replays the log, is promoted, moves
// leadership, and a removed member stops.
func TestClusterMembership(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	put(t, ms[lead], "before", "join")
	waitPublished(t, ms)
	waitConnected(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := freePorts(t, 1)[0]
	peer := fmt.Sprintf("http://127.0.0.1:%d", port)
	f := others(ms, lead)[0]
	add, err := f.cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{peer}, IsLearner: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(add.Members) != 4 || !add.Member.IsLearner {
		t.Fatalf("member add: %+v", add)
	}
	// Promotion before the learner started: etcd's error.
	if _, err := f.cluster.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: add.Member.ID}); err == nil || err.Error() != rpctypes.ErrGRPCLearnerNotReady.Error() {
		t.Fatalf("promote a learner that never started: %v, want %v", err, rpctypes.ErrGRPCLearnerNotReady)
	}
	cfg := config.Default()
	cfg.Name = "m3"
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Server.ListenPeerURLs, cfg.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.Cluster.InitialCluster = ms[0].cfg.Cluster.InitialCluster + ",m3=" + peer
	cfg.Cluster.InitialClusterState = "existing"
	cfg.Cluster.HeartbeatInterval, cfg.Cluster.ElectionTimeout = 20*time.Millisecond, 200*time.Millisecond
	joined := startMember(t, cfg)
	if joined.s.ids.Member != add.Member.ID || joined.s.ids.Cluster != ms[0].s.ids.Cluster {
		t.Fatalf("joined with IDs %+v, want member %x cluster %x", joined.s.ids, add.Member.ID, ms[0].s.ids.Cluster)
	}
	deadline := time.Now().Add(15 * time.Second)
	for get(t, joined, "before", true) != "join" {
		if time.Now().After(deadline) {
			t.Fatal("the new member did not replay the log")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A learner serves only Status and serializable reads (etcd's).
	if _, err := joined.kv.Range(ctx, &pb.RangeRequest{Key: []byte("before")}); err == nil || err.Error() != rpctypes.ErrGRPCNotSupportedForLearner.Error() {
		t.Fatalf("linearizable read on a learner: %v, want %v", err, rpctypes.ErrGRPCNotSupportedForLearner)
	}
	if st, err := joined.maint.Status(ctx, &pb.StatusRequest{}); err != nil || !st.IsLearner {
		t.Fatalf("status of a learner: %+v %v", st, err)
	}
	// Promote (from a follower: forwarded to the leader).
	for {
		_, err := f.cluster.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: add.Member.ID})
		if err == nil {
			break
		}
		if err.Error() != rpctypes.ErrGRPCLearnerNotReady.Error() || time.Now().After(deadline) {
			t.Fatalf("promote: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ms = append(ms, joined)
	// Update: a peer URL taken by another member is refused (etcd's
	// error); the member's own URLs are accepted.
	if _, err := f.cluster.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: joined.s.ids.Member, PeerURLs: ms[0].cfg.Server.AdvertisePeerURLs}); err == nil || err.Error() != rpctypes.ErrGRPCPeerURLExist.Error() {
		t.Fatalf("update to another member's URL: %v", err)
	}
	if _, err := f.cluster.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: joined.s.ids.Member, PeerURLs: []string{peer}}); err != nil {
		t.Fatalf("member update: %v", err)
	}
	// Move leadership to the new member; a follower is refused.
	lead = waitLeader(t, ms)
	if _, err := f.maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: joined.s.ids.Member}); f != ms[lead] && (err == nil || err.Error() != rpctypes.ErrGRPCNotLeader.Error()) {
		t.Fatalf("move-leader on a follower: %v, want %v", err, rpctypes.ErrGRPCNotLeader)
	}
	if _, err := ms[lead].maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 12345}); err == nil || err.Error() != rpctypes.ErrGRPCBadLeaderTransferee.Error() {
		t.Fatalf("move-leader to a stranger: %v", err)
	}
	if _, err := ms[lead].maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: joined.s.ids.Member}); err != nil {
		t.Fatalf("move-leader: %v", err)
	}
	if joined.s.node.Leader() != joined.s.ids.Member {
		t.Fatal("leadership did not move")
	}
	// Remove a member (through itself): it stops; the others go on.
	victim := others(ms, len(ms)-1)[0]
	waitPublished(t, others(ms, -1))
	waitConnected(t, ms)
	if _, err := victim.cluster.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: victim.s.ids.Member}); err != nil {
		t.Fatalf("member remove: %v", err)
	}
	select {
	case <-victim.done:
		victim.cancel = nil
		victim.conn.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	put(t, joined, "after", "remove")
	ml, err := joined.cluster.MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list after remove: %v %v", ml, err)
	}
}

// waitPublished waits until every member has published its name (etcd's
// "started", which the reconfiguration checks count).
func waitPublished(t *testing.T, ms []*clusterMember) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		named := len(ms) * len(ms)
		for _, m := range ms {
			for _, x := range m.s.applier.Members().Members {
				if x.Name == "" {
					named--
				}
			}
		}
		if named == len(ms)*len(ms) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d members published", named, len(ms))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSingleNodeDataDirBecomesCluster: a data directory written by the
// single-node loop opens as a one-member Raft group at the loop's applied
// index, with its data, IDs and member; the other way round is refused.
func TestSingleNodeDataDirBecomesCluster(t *testing.T) {
	dir := t.TempDir()
	single := config.Default()
	single.DataDir = dir
	single.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	m := startMember(t, single)
	for i := range 5 {
		put(t, m, fmt.Sprintf("k%d", i), "single")
	}
	applied := m.s.proposer.AppliedIndex()
	ids := m.s.ids
	m.stop(t)

	cfg := clusterConfigs(t, 1)[0]
	cfg.DataDir = dir
	cfg.Name = single.Name
	cfg.Cluster.InitialCluster = ""
	m = startMember(t, cfg)
	if m.s.node == nil {
		t.Fatal("not started as a cluster member")
	}
	if m.s.ids.Member != ids.Member || m.s.ids.Cluster != ids.Cluster {
		t.Fatalf("IDs changed: %+v, were %+v", m.s.ids, ids)
	}
	waitLeader(t, []*clusterMember{m})
	if got := m.s.proposer.AppliedIndex(); got < applied {
		t.Fatalf("applied index %d went back from %d", got, applied)
	}
	if got := get(t, m, "k4", false); got != "single" {
		t.Fatalf("data lost: %q", got)
	}
	put(t, m, "k5", "raft")
	if got := m.s.proposer.AppliedIndex(); got <= applied {
		t.Fatalf("applied index %d did not continue from %d", got, applied)
	}

	// A member added now catches up although the log starts at the
	// adopted index: by a snapshot.
	actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer acancel()
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePorts(t, 1)[0])
	// The single node recorded its default peer URL: the new member must
	// reach the one it listens on.
	if _, err := m.cluster.MemberUpdate(actx, &pb.MemberUpdateRequest{ID: m.s.ids.Member, PeerURLs: cfg.Server.AdvertisePeerURLs}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.cluster.MemberAdd(actx, &pb.MemberAddRequest{PeerURLs: []string{peer}}); err != nil {
		t.Fatalf("member add on an adopted single node: %v", err)
	}
	jcfg := config.Default()
	jcfg.Name = "joined"
	jcfg.DataDir = t.TempDir()
	jcfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	jcfg.Server.ListenPeerURLs, jcfg.Server.AdvertisePeerURLs = []string{peer}, []string{peer}
	jcfg.Cluster.InitialCluster = fmt.Sprintf("%s=%s,joined=%s", cfg.Name, cfg.Server.AdvertisePeerURLs[0], peer)
	jcfg.Cluster.InitialClusterState = "existing"
	jcfg.Cluster.HeartbeatInterval, jcfg.Cluster.ElectionTimeout = 20*time.Millisecond, 200*time.Millisecond
	joined := startMember(t, jcfg)
	sameState(t, m, joined)
	if joined.s.node.Metrics().SnapshotsInstalled == 0 {
		t.Fatal("the new member caught up without a snapshot")
	}
	m.stop(t)

	// Reopened without cluster settings: refused, not silently diverged.
	if _, err := New(single, nil); err == nil || !strings.Contains(err.Error(), "belongs to a cluster member") {
		t.Fatalf("single member on a cluster member's data directory: %v", err)
	}
	// And with them again: a restart from log and state.
	m = startMember(t, cfg)
	// Two voters now: the leader may be either of them.
	waitLeader(t, []*clusterMember{m, joined})
	if got := get(t, m, "k5", false); got != "raft" {
		t.Fatalf("after restart: %q", got)
	}
}

// TestClusterPeerAutoTLS: members configured from etcd's flags with https
// peer URLs, --peer-auto-tls and --peer-client-cert-auth replicate over
// TLS.
func TestClusterPeerAutoTLS(t *testing.T) {
	ports := freePorts(t, 3)
	var initial []string
	for i, p := range ports {
		initial = append(initial, fmt.Sprintf("m%d=https://127.0.0.1:%d", i, p))
	}
	var ms []*clusterMember
	for i, p := range ports {
		peer := fmt.Sprintf("https://127.0.0.1:%d", p)
		cfg, _, err := config.Load([]string{
			"--name", fmt.Sprintf("m%d", i), "--data-dir", t.TempDir(),
			"--listen-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "tls",
			"--heartbeat-interval", "20", "--election-timeout", "200",
			"--peer-auto-tls", "--peer-client-cert-auth",
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.PeerTLS.CertFile == "" {
			t.Fatal("--peer-auto-tls made no certificate")
		}
		ms = append(ms, startMember(t, cfg))
	}
	lead := waitLeader(t, ms)
	fs := others(ms, lead)
	put(t, fs[0], "tls", "yes")
	if got := get(t, fs[1], "tls", false); got != "yes" {
		t.Fatalf("read over TLS-replicated cluster: %q", got)
	}
}

// TestClusterSimpleToken: a simple token issued by one member is valid on
// the others (it is registered when the authentication is applied, on
// every member).
func TestClusterSimpleToken(t *testing.T) {
	ms := startCluster(t, 3)
	waitLeader(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := pb.NewAuthClient(ms[0].conn)
	if _, err := a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthEnable(ctx, &pb.AuthEnableRequest{}); err != nil {
		t.Fatal(err)
	}
	resp, err := pb.NewAuthClient(ms[1].conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		tctx := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, resp.Token)
		if _, err := m.kv.Put(tctx, &pb.PutRequest{Key: []byte("k"), Value: []byte(m.name)}); err != nil {
			t.Fatalf("token issued on m1 used on %s: %v", m.name, err)
		}
	}
	if _, err := ms[2].kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("anon")}); err == nil {
		t.Fatal("put without a token succeeded with auth enabled")
	}
}
