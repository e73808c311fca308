package compat

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// eachBackend runs f against every backend on a fresh server, etcd first.
// These tests assert behaviour through clientv3 rather than compare
// transcripts: clientv3 hides the wire, and the ids it gets differ.
func eachBackend(t *testing.T, f func(t *testing.T, cli *clientv3.Client)) {
	t.Helper()
	t.Parallel()
	for _, b := range framework.Backends() {
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			f(t, srv.Client(t))
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the expectations do not hold on etcd; fix the test before comparing metastore")
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLeaseClientAPI(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		g, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		if g.ID <= 0 || g.TTL != 30 {
			t.Fatalf("Grant = %+v", g)
		}
		if _, err := cli.Put(ctx, "k", "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		ka, err := cli.KeepAliveOnce(ctx, g.ID)
		if err != nil || ka.ID != g.ID || ka.TTL != 30 {
			t.Fatalf("KeepAliveOnce = %+v, %v", ka, err)
		}
		ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
		if err != nil || ttl.TTL < 20 || ttl.TTL > 29 || ttl.GrantedTTL != 30 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "k" {
			t.Fatalf("TimeToLive = %+v, %v", ttl, err)
		}
		ls, err := cli.Leases(ctx)
		if err != nil || len(ls.Leases) != 1 || ls.Leases[0].ID != g.ID {
			t.Fatalf("Leases = %+v, %v", ls, err)
		}
		if _, err := cli.Revoke(ctx, g.ID); err != nil {
			t.Fatal(err)
		}
		// Errors are rpctypes' own values, as clients compare them.
		_, err = cli.KeepAliveOnce(ctx, g.ID)
		if err != rpctypes.ErrLeaseNotFound { //nolint:errorlint // identity is the point
			t.Errorf("KeepAliveOnce(revoked) err = %v, want rpctypes.ErrLeaseNotFound", err)
		}
		_, err = cli.Revoke(ctx, g.ID)
		if err != rpctypes.ErrLeaseNotFound { //nolint:errorlint
			t.Errorf("Revoke(revoked) err = %v, want rpctypes.ErrLeaseNotFound", err)
		}
		_, err = cli.Grant(ctx, 9000000001)
		if err != rpctypes.ErrLeaseTTLTooLarge { //nolint:errorlint
			t.Errorf("Grant(too large) err = %v, want rpctypes.ErrLeaseTTLTooLarge", err)
		}
		if r, err := cli.TimeToLive(ctx, g.ID); err != nil || r.TTL != -1 {
			t.Errorf("TimeToLive(revoked) = %+v, %v; want TTL -1", r, err)
		}
		if r, err := cli.Get(ctx, "k"); err != nil || len(r.Kvs) != 0 {
			t.Errorf("key of the revoked lease: %+v, %v", r, err)
		}
	})
}

// TestLeaseKeepAliveClient keeps a 2s lease alive with clientv3's KeepAlive
// for longer than its TTL, then lets it lapse.
func TestLeaseKeepAliveClient(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		g, err := cli.Grant(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "alive", "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		kctx, stop := context.WithCancel(ctx)
		ch, err := cli.KeepAlive(kctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for deadline := time.After(3500 * time.Millisecond); n >= 0; {
			select {
			case r, ok := <-ch:
				if !ok {
					t.Fatal("keep-alive channel closed while the lease is alive")
				}
				if r.TTL != 2 {
					t.Fatalf("keep-alive TTL %d", r.TTL)
				}
				n++
			case <-deadline:
				if n < 3 {
					t.Fatalf("only %d keep-alive responses in 3.5s", n)
				}
				n = -1
			}
		}
		if r, err := cli.Get(ctx, "alive"); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("kept-alive key: %+v, %v", r, err)
		}
		stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := cli.Get(ctx, "alive")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("key still there 10s after keep-alives stopped")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestConcurrencySession: a Session keeps its lease alive; closing it
// revokes the lease; an orphaned session's Done closes once the lease is
// revoked elsewhere.
func TestConcurrencySession(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "sess", "v", clientv3.WithLease(s.Lease())); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // longer than the TTL: kept alive
		if r, err := cli.Get(ctx, "sess"); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("session key after 3s: %+v, %v", r, err)
		}
		select {
		case <-s.Done():
			t.Fatal("session done while alive")
		default:
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if r, err := cli.Get(ctx, "sess"); err != nil || len(r.Kvs) != 0 {
			t.Fatalf("session key after Close: %+v, %v", r, err)
		}

		s2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Revoke(ctx, s2.Lease()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s2.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("session not done 10s after its lease was revoked")
		}
	})
}

// watchAvailable reports whether the server has a Watch service; the
// contended Mutex and Election paths wait for deletions with a watch.
func watchAvailable(t *testing.T, cli *clientv3.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), "\xff/watch-probe")
	if _, err := cli.Put(ctx, "\xff/watch-probe", "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-wch:
		if err := r.Err(); err != nil {
			return status.Code(err) != codes.Unimplemented
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// TestConcurrencyMutex: an uncontended lock and unlock; with Watch, two
// sessions contend and the waiter gets the lock when the holder's session
// ends (its lease revoked), as well as when it unlocks.
func TestConcurrencyMutex(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		s1, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		defer s1.Close()
		m1 := concurrency.NewMutex(s1, "/lock/")
		if err := m1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := cli.Get(ctx, m1.Key())
		if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease != int64(s1.Lease()) {
			t.Fatalf("lock key %q: %+v, %v", m1.Key(), r, err)
		}
		// TryLock from another session fails while held.
		s2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		m2 := concurrency.NewMutex(s2, "/lock/")
		if err := m2.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Fatalf("TryLock while held: %v", err)
		}
		if err := m1.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m2.TryLock(ctx); err != nil {
			t.Fatalf("TryLock after unlock: %v", err)
		}
		if err := m2.Unlock(ctx); err != nil {
			t.Fatal(err)
		}

		if !watchAvailable(t, cli) {
			t.Log("no Watch service: contended locking not tested")
			return
		}
		if err := m1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() { got <- m2.Lock(ctx) }()
		select {
		case err := <-got:
			t.Fatalf("second Lock returned %v while the lock is held", err)
		case <-time.After(500 * time.Millisecond):
		}
		// The holder's lease ends: its key goes, the waiter gets the lock.
		if _, err := cli.Revoke(ctx, s1.Lease()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiter did not get the lock after the holder's lease was revoked")
		}
	})
}

// TestConcurrencyElection: campaign, leader, proclaim, resign; with Watch,
// a second candidate becomes leader when the first resigns and an observer
// sees both.
func TestConcurrencyElection(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		s1, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		defer s1.Close()
		e1 := concurrency.NewElection(s1, "/election/")
		if err := e1.Campaign(ctx, "one"); err != nil {
			t.Fatal(err)
		}
		l, err := e1.Leader(ctx)
		if err != nil || string(l.Kvs[0].Value) != "one" || l.Kvs[0].Lease != int64(s1.Lease()) {
			t.Fatalf("Leader = %+v, %v", l, err)
		}
		if err := e1.Proclaim(ctx, "uno"); err != nil {
			t.Fatal(err)
		}
		if l, err := e1.Leader(ctx); err != nil || string(l.Kvs[0].Value) != "uno" {
			t.Fatalf("Leader after Proclaim = %+v, %v", l, err)
		}
		if err := e1.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e1.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
			t.Fatalf("Leader after Resign: %v", err)
		}

		if !watchAvailable(t, cli) {
			t.Log("no Watch service: contended election not tested")
			return
		}
		s2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		e2 := concurrency.NewElection(s2, "/election/")
		if err := e1.Campaign(ctx, "one"); err != nil {
			t.Fatal(err)
		}
		octx, ocancel := context.WithCancel(ctx)
		defer ocancel()
		obs := e1.Observe(octx)
		won := make(chan error, 1)
		go func() { won <- e2.Campaign(ctx, "two") }()
		select {
		case err := <-won:
			t.Fatalf("second candidate won (%v) while the first leads", err)
		case <-time.After(500 * time.Millisecond):
		}
		// The leader's session ends: its lease is revoked, the second wins.
		if _, err := cli.Revoke(ctx, s1.Lease()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-won:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("second candidate did not win after the leader's lease was revoked")
		}
		var seen []string
		for len(seen) < 2 {
			select {
			case r := <-obs:
				v := string(r.Kvs[0].Value)
				if len(seen) == 0 || seen[len(seen)-1] != v {
					seen = append(seen, v)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("observer saw %v, want [one two]", seen)
			}
		}
		if seen[0] != "one" || seen[1] != "two" {
			t.Fatalf("observer saw %v, want [one two]", seen)
		}
	})
}

// TestLeaseKeepAliveMany keeps N leases alive from one client (one
// keep-alive stream) for longer than their TTL and checks that none
// expires. etcd-io/etcd #11886 reports failures at 40–60k leases. N is
// METASTORE_LEASE_SCALE (default 5000, so `make test` stays fast under
// -race); `make test-lease-scale` runs it with 50,000 against metastore.
func TestLeaseKeepAliveMany(t *testing.T) {
	n := 5000
	if v := os.Getenv("METASTORE_LEASE_SCALE"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("METASTORE_LEASE_SCALE=%q", v)
		}
	}
	const ttl = 6
	backends := framework.Backends()
	if os.Getenv("METASTORE_LEASE_SCALE_ETCD") == "" && n > 5000 {
		backends = []framework.Backend{framework.MetastoreBackend} // etcd takes long to grant them
	}
	t.Parallel()
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			cli := srv.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()

			start := time.Now()
			ids := make([]clientv3.LeaseID, n)
			kctx, stop := context.WithCancel(ctx)
			defer stop()
			var responses atomic.Int64
			var next atomic.Int64
			var wg sync.WaitGroup
			errc := make(chan error, 1)
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(n) {
							return
						}
						g, err := cli.Grant(ctx, ttl)
						if err == nil {
							var ch <-chan *clientv3.LeaseKeepAliveResponse
							if ch, err = cli.KeepAlive(kctx, g.ID); err == nil {
								go func() {
									for range ch {
										responses.Add(1)
									}
								}()
							}
						}
						if err != nil {
							select {
							case errc <- err:
							default:
							}
							return
						}
						ids[i] = g.ID
					}
				}()
			}
			wg.Wait()
			select {
			case err := <-errc:
				t.Fatalf("grant: %v", err)
			default:
			}
			granted := time.Since(start)

			// Longer than the TTL, counted from the last grant: a lease the
			// client failed to keep alive would be gone.
			time.Sleep(ttl*time.Second + 3*time.Second)
			ls, err := cli.Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls.Leases) != n {
				t.Fatalf("%d of %d leases alive after %ds of keep-alives", len(ls.Leases), n, ttl+3)
			}
			for _, i := range []int{0, n / 2, n - 1} {
				r, err := cli.TimeToLive(ctx, ids[i])
				if err != nil || r.TTL <= 0 {
					t.Fatalf("lease %d: %+v, %v", i, r, err)
				}
			}
			t.Logf("%s: %d leases granted in %v; %d keep-alive responses in %ds",
				b.Name, n, granted.Round(time.Millisecond), responses.Load(), ttl+3)
			stop()
		})
	}
}

// TestLeaseWatchEvents: a watcher sees a lease's revocation, and its expiry,
// as one response holding a DELETE event for every attached key, all at one
// revision, in key order.
func TestLeaseWatchEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := testCtx(t)
		if !watchAvailable(t, cli) {
			t.Skip("no Watch service")
		}
		revoked, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		expiring, err := cli.Grant(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"lw/c", "lw/a", "lw/b"} {
			if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(revoked.ID)); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"lx/2", "lx/1"} {
			if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(expiring.ID)); err != nil {
				t.Fatal(err)
			}
		}
		wch := cli.Watch(ctx, "l", clientv3.WithPrefix(), clientv3.WithPrevKV())
		// Let the watch register before the changes.
		if _, err := cli.Put(ctx, "l-sync", "x"); err != nil {
			t.Fatal(err)
		}
		next := func() clientv3.WatchResponse {
			t.Helper()
			select {
			case r := <-wch:
				if err := r.Err(); err != nil {
					t.Fatal(err)
				}
				return r
			case <-time.After(15 * time.Second):
				t.Fatal("no watch response")
			}
			return clientv3.WatchResponse{}
		}
		if r := next(); len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "l-sync" {
			t.Fatalf("first response %+v", r.Events)
		}
		rr, err := cli.Revoke(ctx, revoked.ID)
		if err != nil {
			t.Fatal(err)
		}
		check := func(r clientv3.WatchResponse, rev int64, lease clientv3.LeaseID, keys ...string) {
			t.Helper()
			var got []string
			for _, ev := range r.Events {
				if ev.Type != clientv3.EventTypeDelete || ev.Kv.ModRevision != rev || ev.PrevKv == nil || ev.PrevKv.Lease != int64(lease) {
					t.Errorf("event %v: want a DELETE at revision %d of a key of lease %x", ev, rev, lease)
				}
				got = append(got, string(ev.Kv.Key))
			}
			if !slices.Equal(got, keys) {
				t.Errorf("deleted %q, want %q (one response, key order)", got, keys)
			}
		}
		check(next(), rr.Header.Revision, revoked.ID, "lw/a", "lw/b", "lw/c")
		r := next() // the expiry, about two seconds later
		if len(r.Events) > 0 {
			check(r, r.Events[0].Kv.ModRevision, expiring.ID, "lx/1", "lx/2")
		}
	})
}
