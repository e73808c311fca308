package server

import (
	"context"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/config"
)

// newBenchServer opens a server (not serving) on a temporary directory.
func newBenchServer(tb testing.TB) *Server {
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Auth.BcryptCost = 4
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
	as := &authServer{s: s}
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

func benchRange(b *testing.B, withAuth bool) {
	s := newBenchServer(b)
	ctx := context.Background()
	kv := &kvServer{s: s}
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
			id, err := s.identify(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.authorizeKV(ctx, id, auth.OpRange, func(ar *auth.Request) { ar.Add(auth.PermRead, r.Key, r.RangeEnd) }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
