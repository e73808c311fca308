package cluster

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeaseLeaderKill: leases across a leader SIGKILL. A lease nobody
// keeps alive still expires (the new leader takes over expiry; its key
// goes on every member), and a lease kept alive through a follower's own
// connection survives the change with its key, its remaining TTL never
// above the granted one.
func TestLeaseLeaderKill(t *testing.T) {
	const ttl = 4
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			c := Start(t, Config{Kind: kind})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := c.WaitLeader(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			f := c.Followers(l)[0]
			cli := c.Client(t)
			idle, err := cli.Grant(ctx, ttl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(ctx, "lease/idle", "x", clientv3.WithLease(idle.ID)); err != nil {
				t.Fatal(err)
			}
			// Kept alive through the follower alone.
			kept, err := f.Client().Grant(ctx, ttl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Client().Put(ctx, "lease/kept", "x", clientv3.WithLease(kept.ID)); err != nil {
				t.Fatal(err)
			}
			kctx, kcancel := context.WithCancel(ctx)
			defer kcancel()
			ka, err := f.Client().KeepAlive(kctx, kept.ID)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for range ka {
				}
			}()
			killed := time.Now()
			l.Kill()
			if _, err := c.WaitLeader(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			l.Restart()
			if err := c.WaitHealthy(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			// The idle lease expires: its key is gone on every member.
			deadline := killed.Add(30 * time.Second)
			for {
				r, err := cli.Get(ctx, "lease/idle")
				if err == nil && len(r.Kvs) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("lease/idle (lease TTL %ds) still there %v after the leader was killed: %v %v", ttl, time.Since(killed), r, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			expired := time.Since(killed)
			// The kept lease outlives several TTLs.
			time.Sleep(max(0, 3*ttl*time.Second-time.Since(killed)))
			rev, err := c.WaitConverged(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range c.Members {
				r, err := m.Client().Get(ctx, "lease/", clientv3.WithPrefix(), clientv3.WithSerializable())
				if err != nil {
					t.Fatal(err)
				}
				if len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "lease/kept" || r.Kvs[0].Lease != int64(kept.ID) {
					t.Errorf("%s at revision %d: lease keys %v, want only lease/kept", m, rev, r.Kvs)
				}
			}
			for _, m := range c.Members {
				tl, err := m.Client().TimeToLive(ctx, idle.ID)
				if err != nil || tl.TTL != -1 {
					t.Errorf("%s: the expired lease's TimeToLive: %v %v, want TTL -1", m, tl, err)
				}
				tl, err = m.Client().TimeToLive(ctx, kept.ID)
				if err != nil || tl.TTL <= 0 || tl.TTL > ttl || tl.GrantedTTL != ttl {
					t.Errorf("%s: the kept lease's TimeToLive: %v %v, want 0 < TTL <= %d", m, tl, err, ttl)
				}
			}
			c.CheckRaces(t)
			t.Logf("%s: leader %s killed; the idle %ds lease expired %v later on every member; the lease kept alive through %s outlived %v",
				kind, l.Name, ttl, expired.Round(100*time.Millisecond), f.Name, time.Since(killed).Round(100*time.Millisecond))
		})
	}
}
