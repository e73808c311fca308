package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPartition cuts one member's peer traffic off (the proxies blackhole
// it both ways), first the leader's, then a follower's, while clients
// still reach every member. The minority must refuse writes and
// linearizable reads (etcd's errors, or the client's deadline), answer
// "no leader" to a request WithRequireLeader once it knows it has none and
// cancel a watch made WithRequireLeader, and
// keep serving serializable reads of its old state; the majority elects a
// leader if it lost it and goes on writing; after healing, the cut member
// catches up: same revision, same keys, same HashKV, and none of the
// writes tried on the minority ever appears.
func TestPartition(t *testing.T) {
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			c := Start(t, Config{Kind: kind, Proxy: true})
			l, err := c.WaitLeader(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			partitionPhase(t, c, l, "leader", 0)
			l, err = c.WaitLeader(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			partitionPhase(t, c, c.Followers(l)[0], "follower", 1)
			c.CheckRaces(t)
		})
	}
}

// minorityErr reports whether err is an answer a member cut off from the
// quorum may give a write or a linearizable read: etcd's no-leader and
// timeout errors, or the client's own deadline.
func minorityErr(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.DeadlineExceeded
}

func partitionPhase(t *testing.T, c *Cluster, cut *Member, role string, phase int) {
	t.Helper()
	var majority []*Member
	var eps []string
	for _, m := range c.Members {
		if m != cut {
			majority = append(majority, m)
			eps = append(eps, m.Endpoint)
		}
	}
	maj, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer maj.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := fmt.Sprintf("p%d/before", phase)
	if _, err := maj.Put(ctx, before, "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitConverged(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A watch on the member that requires a leader: canceled with "no
	// leader" once the member has lost it.
	rlWatchCtx, rlWatchCancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer rlWatchCancel()
	rlWatch := cut.Client().Watch(rlWatchCtx, before)

	c.Partition(cut)
	begin := time.Now()
	// The majority has (or elects) a leader among itself.
	newLeader, err := leaderAmong(majority, 30*time.Second)
	if err != nil {
		t.Fatalf("majority after cutting the %s %s off: %v", role, cut.Name, err)
	}
	elected := time.Since(begin)
	for i := 0; i < 20; i++ {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := maj.Put(wctx, fmt.Sprintf("p%d/majority/%02d", phase, i), "x")
		wcancel()
		if err != nil {
			t.Fatalf("majority write %d with the %s cut off: %v", i, role, err)
		}
	}
	lin, err := maj.Get(ctx, fmt.Sprintf("p%d/majority/", phase), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || lin.Count != 20 {
		t.Fatalf("majority linearizable read: %v, count %v", err, lin)
	}

	// The cut member: writes and linearizable reads fail.
	mc := cut.Client()
	var errs []string
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = mc.Put(wctx, fmt.Sprintf("p%d/minority/put", phase), "lost")
	wcancel()
	if err == nil || !minorityErr(err) {
		t.Fatalf("write on the cut-off %s %s: %v, want a no-leader or timeout error", role, cut.Name, err)
	}
	errs = append(errs, "put: "+err.Error())
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = mc.Get(rctx, before)
	rcancel()
	if err == nil || !minorityErr(err) {
		t.Fatalf("linearizable read on the cut-off %s %s: %v, want a no-leader or timeout error", role, cut.Name, err)
	}
	errs = append(errs, "get: "+err.Error())
	// Once it knows it has no leader, WithRequireLeader fails fast with
	// etcd's "no leader".
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cut.Status(sctx)
		scancel()
		if err == nil && st.Leader == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off %s %s still names a leader after 30s: %v %v", role, cut.Name, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rlctx, rlcancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
	t0 := time.Now()
	_, err = mc.Put(rlctx, fmt.Sprintf("p%d/minority/rl", phase), "lost")
	rlcancel()
	if !errors.Is(err, rpctypes.ErrNoLeader) {
		t.Fatalf("WithRequireLeader write on the cut-off %s: %v, want %v", role, err, rpctypes.ErrNoLeader)
	}
	errs = append(errs, fmt.Sprintf("put WithRequireLeader (%v): %v", time.Since(t0).Round(time.Millisecond), err))
	select {
	case wr, ok := <-rlWatch:
		if !ok || !errors.Is(wr.Err(), rpctypes.ErrNoLeader) {
			t.Fatalf("WithRequireLeader watch on the cut-off %s: %v (open %v), want %v", role, wr.Err(), ok, rpctypes.ErrNoLeader)
		}
		errs = append(errs, fmt.Sprintf("watch WithRequireLeader canceled %v after the cut: %v", time.Since(begin).Round(100*time.Millisecond), wr.Err()))
	case <-time.After(30 * time.Second):
		t.Fatalf("WithRequireLeader watch on the cut-off %s still open 30s after the cut", role)
	}
	// Serializable reads serve the old state.
	sr, err := mc.Get(ctx, fmt.Sprintf("p%d/", phase), clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("serializable read on the cut-off %s: %v", role, err)
	}
	if len(sr.Kvs) != 1 || string(sr.Kvs[0].Key) != before {
		t.Fatalf("serializable read on the cut-off %s: %d keys %v, want only %s", role, len(sr.Kvs), sr.Kvs, before)
	}

	c.Heal()
	rev, err := c.WaitConverged(60 * time.Second)
	if err != nil {
		t.Fatalf("after healing: %v", err)
	}
	if _, err := c.WaitLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members {
		r, err := m.Client().Get(ctx, fmt.Sprintf("p%d/", phase), clientv3.WithPrefix(), clientv3.WithSerializable())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) != 21 {
			t.Errorf("%s after healing: %d keys under p%d/, want 21 (the one before and the majority's 20, none of the minority's)", m, len(r.Kvs), phase)
		}
		for _, kv := range r.Kvs {
			if string(kv.Value) == "lost" {
				t.Errorf("%s: a write refused on the minority appeared: %s", m, kv.Key)
			}
		}
	}
	hs, _, err := c.HashKVs(time.Minute, rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h != hs[cut.Name] {
			t.Fatalf("HashKV at %d after healing differs: %v", rev, hs)
		}
	}
	t.Logf("%s cut off (%s): the majority had leader %s after %v and wrote 20 keys; the minority answered %q; healed, all at revision %d, HashKV %x",
		role, cut.Name, newLeader.Name, elected.Round(time.Millisecond), errs, rev, hs[cut.Name])
}

// leaderAmong waits until the members ms all name one leader among them.
func leaderAmong(ms []*Member, timeout time.Duration) (*Member, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		var leader uint64
		ids := map[uint64]*Member{}
		ok := true
		for _, m := range ms {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := m.Status(ctx)
			cancel()
			if err != nil {
				last, ok = err, false
				break
			}
			ids[st.Header.MemberId] = m
			if st.Leader == 0 || leader != 0 && st.Leader != leader {
				last, ok = fmt.Errorf("%s names leader %x (others %x)", m, st.Leader, leader), false
				break
			}
			leader = st.Leader
		}
		if ok && ids[leader] != nil {
			return ids[leader], nil
		}
		if ok {
			last = fmt.Errorf("leader %x is not among %v", leader, ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, last
}
