package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// Lease durability across restarts of the metastore binary. What a lease
// has left after a restart is documented in RATIONALE.md ("Leases after a
// restart"): the remaining TTL last persisted (at a graceful stop, after the
// restart grace, and every --lease-checkpoint-interval) plus the restart
// grace (2s by default), never the full TTL again; a lease nobody renews
// is not kept alive by restarts.

func leaseCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustGrant(t *testing.T, ctx context.Context, cli *clientv3.Client, ttl int64, keys ...string) clientv3.LeaseID {
	t.Helper()
	g, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
	}
	return g.ID
}

func timeToLive(t *testing.T, ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID) (ttl int64, keys []string) {
	t.Helper()
	r, err := cli.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range r.Keys {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return r.TTL, keys
}

func keyExists(t *testing.T, ctx context.Context, cli *clientv3.Client, key string) bool {
	t.Helper()
	r, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Kvs) == 1
}

func TestLeaseRestartGraceful(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's restart semantics (etcd grants the full TTL again)")
	}
	t.Parallel()
	ctx := leaseCtx(t)
	p := framework.StartMetastoreProcess(t, t.TempDir())
	cli := framework.NewClient(t, p.Endpoint)
	a := mustGrant(t, ctx, cli, 30, "a/2", "a/1")
	b := mustGrant(t, ctx, cli, 6, "b")
	c := mustGrant(t, ctx, cli, 60)
	time.Sleep(4 * time.Second)
	if err := p.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	p.Restart()
	cli = framework.NewClient(t, p.Endpoint)

	// a had 26s left at the stop: restored with those plus the 2s grace,
	// not its full 30s; its keys are still attached.
	ttl, keys := timeToLive(t, ctx, cli, a)
	if ttl < 22 || ttl > 27 {
		t.Errorf("lease a: TTL %d after restart, want its remaining ~26s + 2s grace (truncated), not the full 30s", ttl)
	}
	if !slices.Equal(keys, []string{"a/1", "a/2"}) {
		t.Errorf("lease a: keys %q after restart", keys)
	}
	if ttl, _ := timeToLive(t, ctx, cli, c); ttl < 53 || ttl > 57 {
		t.Errorf("lease c: TTL %d after restart, want ~56+2", ttl)
	}
	ls, err := cli.Leases(ctx)
	if err != nil || len(ls.Leases) != 3 {
		t.Fatalf("Leases after restart: %+v, %v", ls, err)
	}
	if r, err := cli.KeepAliveOnce(ctx, a); err != nil || r.TTL != 30 {
		t.Errorf("keep-alive after restart: %+v, %v", r, err)
	}
	if ttl, _ := timeToLive(t, ctx, cli, a); ttl != 29 {
		t.Errorf("lease a: TTL %d right after a keep-alive, want 29", ttl)
	}

	// b had ~2s left: it expires a few seconds after the restart, keys and all.
	deadline := time.Now().Add(15 * time.Second)
	for keyExists(t, ctx, cli, "b") {
		if time.Now().After(deadline) {
			t.Fatal("key of lease b still there 15s after the restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ttl, _ := timeToLive(t, ctx, cli, b); ttl != -1 {
		t.Errorf("lease b: TTL %d after expiry, want -1", ttl)
	}
}

func TestLeaseRestartAfterCrash(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's restart semantics")
	}
	t.Parallel()
	ctx := leaseCtx(t)
	p := framework.StartMetastoreProcess(t, t.TempDir(), "--lease-checkpoint-interval", "1s")
	cli := framework.NewClient(t, p.Endpoint)
	a := mustGrant(t, ctx, cli, 30, "a")
	kept := mustGrant(t, ctx, cli, 30, "k")
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := cli.KeepAlive(kctx, kept); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	p.Kill() // no final checkpoint: the last periodic one counts
	stop()
	p.Restart()
	cli = framework.NewClient(t, p.Endpoint)
	// Checkpointed at most a second before the kill with <= 25s left; the
	// restart adds the 2s grace.
	ttl, keys := timeToLive(t, ctx, cli, a)
	if ttl < 18 || ttl > 27 {
		t.Errorf("lease a: TTL %d after the crash, want its last checkpoint (<= 25s) + 2s grace", ttl)
	}
	if !slices.Equal(keys, []string{"a"}) {
		t.Errorf("lease a: keys %q", keys)
	}
	// A lease kept alive until the crash keeps most of its TTL.
	if ttl, keys := timeToLive(t, ctx, cli, kept); ttl < 20 || !slices.Equal(keys, []string{"k"}) {
		t.Errorf("kept-alive lease: TTL %d, keys %q after the crash", ttl, keys)
	}
}

// TestLeaseNotImmortal restarts the server every 2.5s, more often than the
// lease's 6s TTL and with a 2s grace each time. etcd would grant the full
// TTL again after each restart and keep the lease forever; here every run
// uses up part of the persisted remaining TTL and the lease expires.
func TestLeaseNotImmortal(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's restart semantics (etcd keeps such a lease alive)")
	}
	t.Parallel()
	ctx := leaseCtx(t)
	p := framework.StartMetastoreProcess(t, t.TempDir())
	cli := framework.NewClient(t, p.Endpoint)
	id := mustGrant(t, ctx, cli, 6, "d")
	for restart := 1; ; restart++ {
		time.Sleep(2500 * time.Millisecond)
		if err := p.Stop(); err != nil {
			t.Fatalf("graceful stop: %v", err)
		}
		p.Restart()
		cli = framework.NewClient(t, p.Endpoint)
		if ttl, _ := timeToLive(t, ctx, cli, id); ttl == -1 {
			t.Logf("lease gone after %d restarts", restart)
			break
		}
		if restart == 6 {
			t.Fatalf("lease with a 6s TTL still alive after %d restarts 2.5s apart", restart)
		}
	}
	// Revoked, so its key went with it.
	deadline := time.Now().Add(10 * time.Second)
	for keyExists(t, ctx, cli, "d") {
		if time.Now().After(deadline) {
			t.Fatal("key of the expired lease still there")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
