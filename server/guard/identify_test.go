package guard

import (
	"context"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
)

func newTestGuard(t *testing.T, configure func(*config.Config)) *Guard {
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
// moved.
func TestIdentifyOnce(t *testing.T) {
	g := newTestGuard(t, func(c *config.Config) { c.Limits.RateLimit = 1000 })
	ctx, err := g.CheckRate(context.Background(), "/etcdserverpb.KV/Range", KindUnary)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ctx.Value(identityKey{}).(Identity); !ok {
		t.Fatal("CheckRate did not hand the identity on")
	}
	epoch := g.auth.Epoch()
	reused := context.WithValue(context.Background(), identityKey{}, Identity{User: "found-before", Epoch: epoch})
	if id, err := g.Identify(reused); err != nil || id.User != "found-before" {
		t.Errorf("same auth state: Identify = %+v, %v; want the identity found before", id, err)
	}
	stale := context.WithValue(context.Background(), identityKey{}, Identity{User: "found-before", Epoch: epoch + 1})
	if id, err := g.Identify(stale); err != nil || id.User != "" {
		t.Errorf("auth moved: Identify = %+v, %v; want a fresh identity", id, err)
	}
	// Without rate limits nothing is identified up front.
	g = newTestGuard(t, nil)
	if ctx, _ := g.CheckRate(context.Background(), "/etcdserverpb.KV/Range", KindUnary); ctx.Value(identityKey{}) != nil {
		t.Error("identified without rate limits")
	}
}
