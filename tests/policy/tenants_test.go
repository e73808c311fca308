package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/metastore-dev/metastore/server/config"
)

// TestTenantQuota: the server counts each tenant's keys and bytes and
// refuses a write that would pass its quota, naming the tenant; deletes
// free room; the counts survive a restart.
func TestTenantQuota(t *testing.T) {
	var dataDir string
	m := start(t, nil, func(c *config.Config) {
		dataDir = c.DataDir
		c.Tenants = []config.Tenant{
			{Name: "team-a", Prefix: "/tenants/team-a/", Quota: config.TenantQuota{MaxKeys: 2}},
			{Name: "team-b", Prefix: "/tenants/team-b/", Quota: config.TenantQuota{MaxBytes: 40}},
		}
	})
	c := m.Client(t)
	ctx := context.Background()
	for _, k := range []string{"/tenants/team-a/1", "/tenants/team-a/2"} {
		if _, err := c.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	// Overwriting an existing key adds no key.
	if _, err := c.Put(ctx, "/tenants/team-a/1", "w"); err != nil {
		t.Fatalf("overwrite at max_keys: %v", err)
	}
	_, err := c.Put(ctx, "/tenants/team-a/3", "v")
	wantCode(t, err, codes.ResourceExhausted, `etcdserver: tenant "team-a" quota exceeded: keys would be 3, max 2`)
	// A txn counts the puts of both branches.
	_, err = c.Txn(ctx).Then(clientv3.OpPut("/x", "1")).Else(clientv3.OpPut("/tenants/team-a/4", "v")).Commit()
	wantCode(t, err, codes.ResourceExhausted, `tenant "team-a"`)
	if _, err := c.Delete(ctx, "/tenants/team-a/2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/tenants/team-a/3", "v"); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	// Bytes: key plus value. 17+10 = 27 fits in 40; another 27 does not.
	if _, err := c.Put(ctx, "/tenants/team-b/1", "0123456789"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Put(ctx, "/tenants/team-b/2", "0123456789")
	wantCode(t, err, codes.ResourceExhausted, `etcdserver: tenant "team-b" quota exceeded: bytes would be 54, max 40`)
	// Outside every tenant: no quota.
	if _, err := c.Put(ctx, "/free", strings.Repeat("x", 100)); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}

	// After a restart the counts are the same.
	m2 := start(t, nil, func(c *config.Config) {
		c.DataDir = dataDir
		c.Tenants = m.Config.Tenants
	})
	c2 := m2.Client(t)
	_, err = c2.Put(ctx, "/tenants/team-a/5", "v")
	wantCode(t, err, codes.ResourceExhausted, `keys would be 3, max 2`)
}

// TestTenantRateLimit: a tenant's requests share a token bucket; past it
// they get etcd's too-many-requests error, other tenants are unaffected.
func TestTenantRateLimit(t *testing.T) {
	m := start(t, nil, func(c *config.Config) {
		c.Tenants = []config.Tenant{{Name: "slow", Prefix: "/slow/", RateLimit: config.TenantRateLimit{QPS: 0.5, Burst: 2}}}
	})
	c := m.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		if _, err := c.Get(ctx, "/slow/a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, "/slow/a", "1"); err != rpctypes.ErrTooManyRequests {
		t.Fatalf("over the rate: %v, want %v", err, rpctypes.ErrTooManyRequests)
	}
	if _, err := c.Put(ctx, "/fast/a", "1"); err != nil {
		t.Fatalf("another prefix: %v", err)
	}
	if body := scrape(t, m); !strings.Contains(body, `scope="tenant"`) {
		t.Error("rate-limit metric for tenants missing")
	}
}
