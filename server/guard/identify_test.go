package guard

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
)

func newTestGuard(t testing.TB, configure func(*config.Config)) *Guard {
	t.Helper()
	store, err := mvcc.Open(t.TempDir(), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	as, err := auth.Open(apply.AuthReader(store), auth.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(as, auth.TokenOptions{TTL: time.Minute})
	t.Cleanup(tokens.Close)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	if configure != nil {
		configure(cfg)
	}
	g, err := New(Options{Config: cfg, Auth: as, Tokens: tokens, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// TestIdentifyOnce: the rate-limit check identifies the caller and hands
// the identity on in the context; the handler's checks reuse it while the
// auth state is the one it was found under, and identify afresh once it
// moved. With auth disabled every caller is anonymous without a look at
// the context.
func TestIdentifyOnce(t *testing.T) {
	g := newTestGuard(t, func(c *config.Config) { c.Limits.RateLimit = 1000 })
	ctx, err := g.CheckRate(context.Background(), "/etcdserverpb.KV/Range", KindUnary)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ctx.Value(identityKey{}).(Identity); !ok {
		t.Fatal("CheckRate did not hand the identity on")
	}
	planted := func(epoch uint64) context.Context {
		return context.WithValue(context.Background(), identityKey{}, Identity{User: "found-before", Epoch: epoch})
	}
	if id, err := g.Identify(planted(g.auth.Epoch())); err != nil || id.User != "" || id.AuthEnabled() {
		t.Errorf("auth disabled: Identify = %+v, %v; want the anonymous identity", id, err)
	}
	enableAuth(t, g)
	epoch := g.auth.Epoch()
	if id, err := g.Identify(planted(epoch)); err != nil || id.User != "found-before" {
		t.Errorf("same auth state: Identify = %+v, %v; want the identity found before", id, err)
	}
	if id, err := g.Identify(planted(epoch + 1)); err != nil || id.User != "" || !id.AuthEnabled() {
		t.Errorf("auth moved: Identify = %+v, %v; want a fresh identity", id, err)
	}
	// Without rate limits nothing is identified up front, and nothing
	// found in the context is trusted.
	g = newTestGuard(t, nil)
	if ctx, _ := g.CheckRate(context.Background(), "/etcdserverpb.KV/Range", KindUnary); ctx.Value(identityKey{}) != nil {
		t.Error("identified without rate limits")
	}
	enableAuth(t, g)
	if id, err := g.Identify(planted(g.auth.Epoch())); err != nil || id.User != "" {
		t.Errorf("no rate limits: Identify = %+v, %v; want a fresh identity", id, err)
	}
}

// enableAuth adds root with the root role and enables auth in g's store,
// through the applier as a member would.
func enableAuth(t *testing.T, g *Guard) {
	t.Helper()
	a, err := apply.New(g.store, apply.Options{Auth: g.auth})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*apply.Request{
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", Options: &authpb.UserAddOptions{NoPassword: true}}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}},
		{AuthEnable: &pb.AuthEnableRequest{}},
	} {
		b, err := g.store.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		res := a.Apply(b, r)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if res.Err != nil {
			t.Fatalf("apply %v: %v", r, res.Err)
		}
	}
	if enabled, _, _ := g.auth.State(); !enabled {
		t.Fatal("auth not enabled")
	}
}

// BenchmarkIdentify: a caller of a member without auth, in a context as
// deep as gRPC's for a unary call (a cancel and eight values).
func BenchmarkIdentify(b *testing.B) {
	g := newTestGuard(b, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type key int
	for i := range 8 {
		ctx = context.WithValue(ctx, key(i), i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Identify(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
