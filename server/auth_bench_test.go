package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// newBenchServer opens a server (not serving) on a temporary directory.
func newBenchServer(tb testing.TB, configure ...func(*config.Config)) *Server {
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Auth.BcryptCost = 4
	for _, f := range configure {
		f(cfg)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.stop)
	return s
}

// enableAuth creates root and a user "u" with READWRITE on every key plus
// 100 unrelated prefixes, enables auth, and returns a context carrying u's
// token.
func enableAuth(tb testing.TB, s *Server) context.Context {
	ctx := context.Background()
	as := s.rpc.Auth()
	must := func(_ any, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(as.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "r"}))
	must(as.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}))
	must(as.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "u", Password: "p"}))
	must(as.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "r"}))
	for i := 0; i < 100; i++ {
		p := []byte{'/', byte('a' + i/26), byte('a' + i%26), '/'}
		must(as.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{PermType: authpb.READ, Key: p, RangeEnd: append(p[:3:3], '0')}}))
	}
	must(as.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte{0}, RangeEnd: []byte{0}}}))
	must(as.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"}))
	must(as.AuthEnable(ctx, &pb.AuthEnableRequest{}))
	resp, err := as.Authenticate(ctx, &pb.AuthenticateRequest{Name: "u", Password: "p"})
	if err != nil {
		tb.Fatal(err)
	}
	return metadata.NewIncomingContext(ctx, metadata.Pairs("token", resp.Token))
}

// withTenantIsolation configures the tenant-isolation Go policy first in
// the chain, matching every request, as scripts/bench-policy.sh does: for
// keys outside /tenants/ it answers no_opinion and RBAC decides, so every
// request pays the whole policy call.
func withTenantIsolation(tb testing.TB) func(*config.Config) {
	bin := wasmtest.GoPolicy(tb, "policies/tenantisolation")
	path := filepath.Join(tb.TempDir(), "tenantisolation.wasm")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	return func(c *config.Config) {
		c.Policies = []config.Policy{{Name: "tenant-isolation", Module: path, SHA256: hex.EncodeToString(sum[:]),
			Hooks: []string{"authorize"}, Settings: []byte(`{"root":"/tenants/"}`),
			// A benchmark measures cost; a descheduled thread must not time out.
			Limits: config.PolicyLimits{AuthorizeTimeout: time.Second}}}
		os.CopyFS(filepath.Join(c.DataDir, guard.WasmCacheDir), os.DirFS(wasmtest.CacheDir()))
	}
}

func benchRange(b *testing.B, withAuth bool, configure ...func(*config.Config)) {
	s := newBenchServer(b, configure...)
	ctx := context.Background()
	kv := s.rpc.KV()
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("bench-key"), Value: make([]byte, 256)}); err != nil {
		b.Fatal(err)
	}
	if withAuth {
		ctx = enableAuth(b, s)
	}
	r := &pb.RangeRequest{Key: []byte("bench-key")}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := kv.Range(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRange measures the KV Range handler (no gRPC) with auth off and
// on; the difference is what authentication and authorization cost a read.
func BenchmarkRange(b *testing.B) {
	b.Run("auth=off", func(b *testing.B) { benchRange(b, false) })
	b.Run("auth=on", func(b *testing.B) { benchRange(b, true) })
	b.Run("auth=on,policy=tenant-isolation", func(b *testing.B) { benchRange(b, true, withTenantIsolation(b)) })
}

// BenchmarkAuthorizeRange is identification plus the permission check of a
// Range, as the handler runs them.
func BenchmarkAuthorizeRange(b *testing.B) {
	s := newBenchServer(b)
	ctx := enableAuth(b, s)
	r := &pb.RangeRequest{Key: []byte("bench-key")}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			if _, err := s.guard.Read(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
