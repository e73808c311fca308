package cluster

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Log truncation of the snapshot tests: a snapshot every snapCount applied
// entries and a catch-up tail of snapCatchUp entries, so that a member a
// few hundred entries behind can only catch up by receiving a snapshot.
// etcd 3.6 compacts its in-memory log every 100 applied entries down to
// the tail whatever --snapshot-count says; the tail (default 5000) is what
// must be small.
const (
	snapCount   = 100
	snapCatchUp = 50
)

func snapConfig(kind string) Config {
	return Config{Kind: kind, SnapshotCount: snapCount, CatchUpEntries: snapCatchUp}
}

// snapshotReceiveMetric counts the snapshots a member received from a peer
// (etcd's rafthttp counter, labelled by sender).
const snapshotReceiveMetric = "etcd_network_snapshot_receive_success"

// metricSum returns the sum of every sample of metric name on m's
// /metrics: 0 when there is none (etcd shows a labelled counter only once
// a label value has been used).
func metricSum(m *Member, name string) (float64, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(m.ClientURL + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", m, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: /metrics: %s", m, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: metric line %q: %v", m, line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// snapshotsReceived returns how many snapshots m's current process has
// received.
func snapshotsReceived(t testing.TB, m *Member) float64 {
	t.Helper()
	n, err := metricSum(m, snapshotReceiveMetric)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// snapTally counts the snapshots members received across kills: a
// process' counter starts at zero, so each member is read just before it
// is killed, and every running member at the end.
type snapTally struct{ n float64 }

func (s *snapTally) beforeKill(m *Member) error {
	n, err := metricSum(m, snapshotReceiveMetric)
	s.n += n
	return err
}

func (s *snapTally) total(c *Cluster) (float64, error) {
	n := s.n
	for _, m := range c.Running() {
		v, err := metricSum(m, snapshotReceiveMetric)
		if err != nil {
			return 0, err
		}
		n += v
	}
	return n, nil
}

// truncation returns the --snapshot-count and --snapshot-catchup-entries
// the leader-kill tests run with: METASTORE_CLUSTER_SNAPSHOT_COUNT (the
// tail half of it), by default snapCount with METASTORE_SOAK (make
// soak-cluster: the log is truncated, so killed members come back through
// snapshots) and 0 otherwise (the servers' defaults: no truncation within
// a short test).
func truncation(t *testing.T) (count, catchUp int) {
	def := 0
	if soak() {
		def = snapCount
	}
	count = envInt(t, "METASTORE_CLUSTER_SNAPSHOT_COUNT", def)
	return count, count / 2
}

// snapSenders remembers when each member, as leader, last sent a
// snapshot. etcd stops truncating its log for 30s after sending one
// (releaseDelayAfterSnapshot, so that the receiver finds the entries that
// follow it): a round that needs a new snapshot is led by the member that
// sent one longest ago, or waits.
type snapSenders map[*Member]time.Time

const snapshotPause = 31 * time.Second

// lead makes the running member that sent a snapshot longest ago the
// leader (MoveLeader), waits until 31s have passed since it sent one, and
// returns it.
func (s snapSenders) lead(t *testing.T, c *Cluster) *Member {
	t.Helper()
	l, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	best := l
	for _, m := range c.Running() {
		if s[m].Before(s[best]) {
			best = m
		}
	}
	if best != l {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := best.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Client().MoveLeader(ctx, st.Header.MemberId); err != nil {
			t.Fatalf("moving the leadership from %s to %s: %v", l, best, err)
		}
		if l, err = c.WaitLeader(30 * time.Second); err != nil || l != best {
			t.Fatalf("after moving the leadership to %s the leader is %v (%v)", best, l, err)
		}
	}
	if last := s[best]; !last.IsZero() {
		time.Sleep(snapshotPause - time.Since(last))
	}
	return best
}

// sent records that the current leader has just sent a snapshot.
func (s snapSenders) sent(t *testing.T, c *Cluster) {
	t.Helper()
	l, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s[l] = time.Now()
}

// putAck is an acknowledged put.
type putAck struct {
	key, value string
	rev        int64
}

// putMany sends n puts over conc concurrent callers, the i-th to key
// prefix+(i mod keys) with value tag+i, and returns their acknowledgements
// (each put is its own Raft entry). It stops at the first failure.
func putMany(ctx context.Context, cli *clientv3.Client, prefix, tag string, n, keys, conc int) ([]putAck, error) {
	var next atomic.Int64
	var mu sync.Mutex
	acks := make([]putAck, 0, n)
	errc := make(chan error, conc)
	for w := 0; w < conc; w++ {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errc <- nil
					return
				}
				k, v := fmt.Sprintf("%s%06d", prefix, i%keys), fmt.Sprintf("%s%d", tag, i)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := cli.Put(cctx, k, v)
				cancel()
				if err != nil {
					errc <- fmt.Errorf("put %s: %w", k, err)
					return
				}
				mu.Lock()
				acks = append(acks, putAck{k, v, r.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	var first error
	for w := 0; w < conc; w++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			next.Store(int64(n)) // the others stop too
		}
	}
	return acks, first
}

// loadKeys writes n distinct keys prefix+i with random values of size
// bytes (random, so that neither store's compression makes the snapshot
// small), 100 puts to a txn (etcd's default --max-txn-ops is 128), 4 txns
// at a time.
func loadKeys(ctx context.Context, cli *clientv3.Client, prefix string, n, size int) error {
	const perTxn = 100
	var next atomic.Int64
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 16))
			raw := make([]byte, size)
			for {
				from := int(next.Add(perTxn)) - perTxn
				if from >= n {
					errc <- nil
					return
				}
				var ops []clientv3.Op
				for i := from; i < min(from+perTxn, n); i++ {
					for j := range raw {
						raw[j] = byte(rnd.Uint32())
					}
					val := base64.StdEncoding.EncodeToString(raw)[:size]
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%07d", prefix, i), val))
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := cli.Txn(cctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					errc <- fmt.Errorf("txn of keys %d…: %w", from, err)
					return
				}
			}
		}()
	}
	var first error
	for w := 0; w < 4; w++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			next.Store(int64(n))
		}
	}
	return first
}

// checkSameState waits until every running member has applied the same
// revision, then requires that each holds the same keys (key, value,
// create and mod revision, version, lease: a serializable range of every
// key on the member alone) and the same HashKV at that revision. It
// returns the revision.
func checkSameState(t *testing.T, c *Cluster, what string) int64 {
	t.Helper()
	rev, err := c.WaitConverged(3 * time.Minute)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var first *Member
	var want []*mvccpb.KeyValue
	for _, m := range c.Running() {
		r, err := m.Client().Get(ctx, "", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("%s: %s: range of every key at %d: %v", what, m, rev, err)
		}
		if first == nil {
			first, want = m, r.Kvs
			continue
		}
		if len(r.Kvs) != len(want) {
			t.Fatalf("%s: %s holds %d keys at revision %d, %s %d", what, m, len(r.Kvs), rev, first, len(want))
		}
		for i, kv := range r.Kvs {
			w := want[i]
			if string(kv.Key) != string(w.Key) || string(kv.Value) != string(w.Value) || kv.CreateRevision != w.CreateRevision ||
				kv.ModRevision != w.ModRevision || kv.Version != w.Version || kv.Lease != w.Lease {
				t.Fatalf("%s: key %d differs at revision %d: %s has %q=%q (create %d, mod %d, version %d, lease %x), %s %q=%q (create %d, mod %d, version %d, lease %x)",
					what, i, rev, m, kv.Key, tailString(string(kv.Value), 40), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease,
					first, w.Key, tailString(string(w.Value), 40), w.CreateRevision, w.ModRevision, w.Version, w.Lease)
			}
		}
	}
	hs, _, err := c.HashKVs(2*time.Minute, rev)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, h := range hs {
		if h != hs[first.Name] {
			t.Fatalf("%s: HashKV at revision %d differs between members: %v", what, rev, hs)
		}
	}
	return rev
}

// TestSnapshotCatchUp: a follower is SIGKILLed, the other two write well
// past the snapshot count (puts, a lease revoked and one granted with a
// key, a user and a role, a compaction), and the follower is restarted on
// its old data. The leader no longer has the entries it missed, so it must
// receive a snapshot (its etcd_network_snapshot_receive_success counts
// one), and then hold what the others hold: the same revision, every key
// with its revisions and lease, the same HashKV; its own lease list and
// user list (served from its derived state) show the changes, a read below
// the compaction is refused as compacted, and it takes writes again. One
// round (10 with METASTORE_SOAK; METASTORE_CLUSTER_SNAP_ROUNDS), each
// killing the other follower of the moment; METASTORE_CLUSTER_SNAP_WRITES
// sets the puts a round (500).
func TestSnapshotCatchUp(t *testing.T) {
	writes := envInt(t, "METASTORE_CLUSTER_SNAP_WRITES", 5*snapCount)
	rounds := 1
	if soak() {
		rounds = 10
	}
	rounds = envInt(t, "METASTORE_CLUSTER_SNAP_ROUNDS", rounds)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			c := Start(t, snapConfig(kind))
			senders := snapSenders{}
			for r := 0; r < rounds; r++ {
				catchUpRound(t, c, senders, r, writes)
			}
			c.CheckRaces(t)
		})
	}
}

// catchUpRound is one kill, writes, restart and check of
// TestSnapshotCatchUp; round names its keys, lease keys, user and role.
func catchUpRound(t *testing.T, c *Cluster, senders snapSenders, round, writes int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := senders.lead(t, c)
	fs := c.Followers(l)
	f := fs[round%2]
	cli := c.ClientOf(t, l, fs[1-round%2])
	defer cli.Close()
	pre := fmt.Sprintf("s%d/", round)
	// What the follower sees before it dies: a lease with a key.
	old, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, pre+"old-lease", "x", clientv3.WithLease(old.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitConverged(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	f.Kill()

	if _, err := cli.Revoke(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	fresh, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, pre+"fresh-lease", "y", clientv3.WithLease(fresh.ID)); err != nil {
		t.Fatal(err)
	}
	user, role := fmt.Sprintf("snapuser%d", round), fmt.Sprintf("snaprole%d", round)
	if _, err := cli.UserAdd(ctx, user, "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RoleAdd(ctx, role); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		t.Fatal(err)
	}
	acks, err := putMany(ctx, cli, pre+"k", "v", writes, 200, 8)
	if err != nil {
		t.Fatal(err)
	}
	compactAt := acks[len(acks)-1].rev - 20
	if _, err := cli.Compact(ctx, compactAt, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := putMany(ctx, cli, pre+"after", "a", 20, 20, 4); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	f.Restart()
	rev := checkSameState(t, c, fmt.Sprintf("round %d, after restarting the follower %s", round, f))
	took := time.Since(t0)
	n := snapshotsReceived(t, f)
	if n < 1 {
		t.Fatalf("round %d: %s caught up %d puts without receiving a snapshot (%s = %v): the log was not truncated at --snapshot-count %d, --snapshot-catchup-entries %d",
			round, f, writes, snapshotReceiveMetric, n, snapCount, snapCatchUp)
	}

	// Derived state, read from the follower itself.
	fc := f.Client()
	ls, err := fc.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []clientv3.LeaseID
	for _, x := range ls.Leases {
		ids = append(ids, x.ID)
	}
	if !slices.Contains(ids, fresh.ID) || slices.Contains(ids, old.ID) {
		t.Errorf("round %d: %s lists leases %x, want %x (granted while it was down) and not %x (revoked while it was down)", round, f, ids, fresh.ID, old.ID)
	}
	us, err := fc.UserGet(ctx, user)
	if err != nil {
		t.Errorf("round %d: %s: user added while it was down: %v", round, f, err)
	} else if !slices.Equal(us.Roles, []string{role}) {
		t.Errorf("round %d: %s: %s has roles %v, want [%s]", round, f, user, us.Roles, role)
	}
	_, err = fc.Get(ctx, pre+"k000000", clientv3.WithRev(compactAt-1), clientv3.WithSerializable())
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("round %d: %s: serializable read at %d, below the compaction at %d: %v, want %v", round, f, compactAt-1, compactAt, err, rpctypes.ErrCompacted)
	}
	if _, err := fc.Put(ctx, pre+"through-follower", "z"); err != nil {
		t.Errorf("round %d: %s: write after catching up: %v", round, f, err)
	}
	if _, err := c.WaitConverged(time.Minute); err != nil {
		t.Error(err)
	}
	senders.sent(t, c)
	t.Logf("%s, round %d: follower %s down for %d puts (%d entries past the snapshot count %d), restarted: %v snapshot(s) received, same keys and HashKV at revision %d %v after the restart",
		c.Kind, round, f.Name, writes, writes-snapCount, snapCount, n, rev, took.Round(time.Millisecond))
}

// initialCluster is the --initial-cluster a member added by resp starts
// with (what `etcdctl member add` prints): every member's name and peer
// URLs, the new one named name.
func initialCluster(resp *clientv3.MemberAddResponse, name string) string {
	var parts []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// memberAdd adds a member (a learner if learner is set). Until the member
// that handles the request has been connected to a quorum for etcd's
// HealthInterval (5s), --strict-reconfig-check refuses with "unhealthy
// cluster": then it asks again.
func memberAdd(ctx context.Context, cli *clientv3.Client, peer string, learner bool) (*clientv3.MemberAddResponse, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var resp *clientv3.MemberAddResponse
		var err error
		if learner {
			resp, err = cli.MemberAddAsLearner(ctx, []string{peer})
		} else {
			resp, err = cli.MemberAdd(ctx, []string{peer})
		}
		if err == nil || !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline) {
			return resp, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// latencies are the durations of writes sent one after another.
type latencies []time.Duration

func (l latencies) String() string {
	if len(l) == 0 {
		return "no writes"
	}
	s := slices.Clone(l)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration {
		return s[min(len(s)-1, int(p*float64(len(s))))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("%d writes, p50 %v, p99 %v, max %v", len(s), q(0.5), q(0.99), s[len(s)-1].Round(100*time.Microsecond))
}

// writeWhile puts one key after another through cli until stop is closed
// and returns the latencies; any failed write fails the test.
func writeWhile(t *testing.T, cli *clientv3.Client, key string, stop <-chan struct{}) latencies {
	var lat latencies
	for i := 0; ; i++ {
		select {
		case <-stop:
			return lat
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		_, err := cli.Put(ctx, key, strconv.Itoa(i))
		cancel()
		if err != nil {
			t.Errorf("client write %d while a member catches up: %v", i, err)
			return lat
		}
		lat = append(lat, time.Since(t0))
	}
}

// catchUp starts the added member m and waits until it has applied the
// revision the cluster had when it started, while a client writes through
// the others one put at a time (none may fail). It returns how long the
// catch-up took and the latencies of those writes.
func catchUp(t *testing.T, c *Cluster, m *Member, cli *clientv3.Client) (time.Duration, latencies) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r, err := cli.Get(ctx, "health")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	target := r.Header.Revision
	stop := make(chan struct{})
	done := make(chan latencies)
	go func() { done <- writeWhile(t, cli, "n/during-catch-up", stop) }()
	t0 := time.Now()
	m.Start()
	if err := m.WaitReady(5 * time.Minute); err != nil {
		close(stop)
		<-done
		t.Fatalf("%s: %v", m, err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := m.Client().Get(ctx, "health", clientv3.WithSerializable())
		cancel()
		if err == nil && r.Header.Revision >= target {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			<-done
			t.Fatalf("%s has not reached revision %d after 5m: %v %v", m, target, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	close(stop)
	return took, <-done
}

// TestSnapshotNewMember: a cluster holding many keys (2,000 of 100 bytes;
// 100,000 with METASTORE_SOAK; METASTORE_CLUSTER_SNAP_KEYS) and a log
// truncated past its start gets a new voting member, then a learner. Each
// is started with --initial-cluster-state existing and must receive a
// snapshot and converge (same keys and HashKV on every member), while a
// client's writes through the others go on without failing (their
// latencies are logged next to a baseline). The learner's promotion before
// it has started is refused with etcd's ErrMemberLearnerNotReady (its log match
// is zero, so this does not depend on timing); once it has caught up it is
// promoted and counts as a voter.
func TestSnapshotNewMember(t *testing.T) {
	keys := 2000
	if soak() {
		keys = 100000
	}
	keys = envInt(t, "METASTORE_CLUSTER_SNAP_KEYS", keys)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			c := Start(t, snapConfig(kind))
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			cli := c.Client(t)
			t0 := time.Now()
			if err := loadKeys(ctx, cli, "n/k", keys, 100); err != nil {
				t.Fatal(err)
			}
			// Past the snapshot count and its tail: the log no longer starts
			// at the first entry.
			if _, err := putMany(ctx, cli, "n/tick", "t", 3*snapCount, 10, 8); err != nil {
				t.Fatal(err)
			}
			loaded := time.Since(t0)
			stop := make(chan struct{})
			time.AfterFunc(time.Second, func() { close(stop) })
			base := writeWhile(t, cli, "n/baseline", stop)

			peer := c.NewMemberURLs("m3")
			add, err := memberAdd(ctx, cli, peer, false)
			if err != nil {
				t.Fatal(err)
			}
			m3 := c.AddMember("m3", initialCluster(add, "m3"))
			took3, lat3 := catchUp(t, c, m3, cli)
			checkSameState(t, c, "after adding a member")
			if n := snapshotsReceived(t, m3); n < 1 {
				t.Fatalf("new member %s caught up without receiving a snapshot (%s = %v)", m3, snapshotReceiveMetric, n)
			}

			peer = c.NewMemberURLs("m4")
			add, err = memberAdd(ctx, cli, peer, true)
			if err != nil {
				t.Fatal(err)
			}
			id := add.Member.ID
			if _, err := cli.MemberPromote(ctx, id); !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
				t.Fatalf("promoting the learner before it started: %v, want %v", err, rpctypes.ErrMemberLearnerNotReady)
			}
			m4 := c.AddMember("m4", initialCluster(add, "m4"))
			took4, lat4 := catchUp(t, c, m4, cli)
			st, err := m4.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !st.IsLearner {
				t.Fatalf("%s reports IsLearner false before its promotion", m4)
			}
			if n := snapshotsReceived(t, m4); n < 1 {
				t.Fatalf("learner %s caught up without receiving a snapshot (%s = %v)", m4, snapshotReceiveMetric, n)
			}
			// Ready once its log is close enough to the leader's: only
			// ErrMemberLearnerNotReady may come before that.
			deadline := time.Now().Add(time.Minute)
			for {
				_, err := cli.MemberPromote(ctx, id)
				if err == nil {
					break
				}
				if !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || time.Now().After(deadline) {
					t.Fatalf("promoting the caught-up learner: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			ml, err := cli.MemberList(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ml.Members {
				if m.IsLearner {
					t.Errorf("member %s (%x) is still a learner after the promotion", m.Name, m.ID)
				}
			}
			if len(ml.Members) != 5 {
				t.Errorf("%d members listed, want 5", len(ml.Members))
			}
			rev := checkSameState(t, c, "after promoting the learner")
			c.CheckRaces(t)
			t.Logf("%s: %d keys loaded in %v; writes before the new members: %v", kind, keys, loaded.Round(time.Millisecond), base)
			t.Logf("%s: new member caught up in %v (writes meanwhile: %v); learner in %v (writes meanwhile: %v), promoted; 5 members equal at revision %d",
				kind, took3.Round(time.Millisecond), lat3, took4.Round(time.Millisecond), lat4, rev)
		})
	}
}

// TestSnapshotPartition: a follower's peer traffic is cut (the proxies of
// TestPartition) while the majority writes well past the snapshot count,
// then healed. The member, alive the whole time, must come back through a
// snapshot (its receive counter rises) and converge; a watch opened on it
// before the cut, from the revision after the last one it had, must then
// deliver exactly the majority's writes, each revision once and in order
// (the watchers resync after the snapshot replaces the store). One round
// (10 with METASTORE_SOAK; METASTORE_CLUSTER_SNAP_ROUNDS), each cutting
// the other follower of the moment.
func TestSnapshotPartition(t *testing.T) {
	writes := envInt(t, "METASTORE_CLUSTER_SNAP_WRITES", 5*snapCount)
	rounds := 1
	if soak() {
		rounds = 10
	}
	rounds = envInt(t, "METASTORE_CLUSTER_SNAP_ROUNDS", rounds)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			cfg := snapConfig(kind)
			cfg.Proxy = true
			c := Start(t, cfg)
			senders := snapSenders{}
			for r := 0; r < rounds; r++ {
				partitionRound(t, c, senders, r, writes)
			}
			c.CheckRaces(t)
		})
	}
}

// partitionRound is one cut, writes, heal and check of
// TestSnapshotPartition; round names its keys.
func partitionRound(t *testing.T, c *Cluster, senders snapSenders, round, writes int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := senders.lead(t, c)
	fs := c.Followers(l)
	cut := fs[round%2]
	maj := c.ClientOf(t, l, fs[1-round%2])
	defer maj.Close()
	pre := fmt.Sprintf("p%d/", round)
	if _, err := maj.Put(ctx, pre+"before", "1"); err != nil {
		t.Fatal(err)
	}
	rev0, err := c.WaitConverged(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cut.Client().Watch(wctx, pre, clientv3.WithPrefix(), clientv3.WithRev(rev0+1))
	var wmu sync.Mutex
	var events []*clientv3.Event
	var werr error
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for wr := range wch {
			wmu.Lock()
			if err := wr.Err(); err != nil && werr == nil {
				werr = err
			}
			events = append(events, wr.Events...)
			wmu.Unlock()
		}
	}()
	before := snapshotsReceived(t, cut)

	c.Partition(cut)
	acks, err := putMany(ctx, maj, pre+"k", "v", writes, 100, 8)
	if err != nil {
		t.Fatalf("majority writes with %s cut off: %v", cut, err)
	}
	del, err := maj.Delete(ctx, pre+"k000001")
	if err != nil || del.Deleted != 1 {
		t.Fatalf("majority delete: %v %v", del, err)
	}
	r, err := cut.Client().Get(ctx, pre, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Revision != rev0 {
		t.Fatalf("the cut-off %s applied up to revision %d, want %d: the partition leaked", cut, r.Header.Revision, rev0)
	}
	c.Heal()
	t0 := time.Now()
	rev := checkSameState(t, c, fmt.Sprintf("round %d, after healing", round))
	took := time.Since(t0)
	n := snapshotsReceived(t, cut) - before
	if n < 1 {
		t.Fatalf("%s came back from %d puts behind without receiving a snapshot (%s rose by %v)", cut, writes, snapshotReceiveMetric, n)
	}

	// The watch on the cut member: every revision after rev0, once,
	// in order, as the majority wrote it.
	want := map[int64]putAck{}
	for _, a := range acks {
		want[a.rev] = a
	}
	want[del.Header.Revision] = putAck{key: pre + "k000001", rev: del.Header.Revision}
	deadline := time.Now().Add(time.Minute)
	for {
		wmu.Lock()
		got, last, err := len(events), int64(0), werr
		if got > 0 {
			last = events[got-1].Kv.ModRevision
		}
		wmu.Unlock()
		if err != nil {
			t.Fatalf("watch on %s: %v", cut, err)
		}
		if last >= rev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch on %s opened at revision %d: %d events up to revision %d a minute after healing, want up to %d", cut, rev0+1, got, last, rev)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wcancel()
	<-watchDone
	if len(events) != int(rev-rev0) {
		t.Errorf("watch on %s: %d events for revisions %d..%d, want %d", cut, len(events), rev0+1, rev, rev-rev0)
	}
	bad := 0
	for i, e := range events {
		wr := rev0 + 1 + int64(i)
		w, ok := want[wr]
		isDel := w.value == ""
		if e.Kv.ModRevision != wr || !ok || string(e.Kv.Key) != w.key || string(e.Kv.Value) != w.value || (e.Type == mvccpb.DELETE) != isDel {
			if bad++; bad <= 5 {
				t.Errorf("watch on %s: event %d is %s %s=%q at revision %d, want revision %d: %+v", cut, i, e.Type, e.Kv.Key, e.Kv.Value, e.Kv.ModRevision, wr, w)
			}
		}
	}
	senders.sent(t, c)
	t.Logf("%s, round %d: %s cut off for %d puts and a delete, healed: %v snapshot(s) received, same keys and HashKV at revision %d after %v; its watch delivered revisions %d..%d in order",
		c.Kind, round, cut.Name, writes, n, rev, took.Round(time.Millisecond), rev0+1, rev)
}
