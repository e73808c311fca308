package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/guard"
)

// tlsPeer returns a context whose peer presented a verified certificate
// with common name cn.
func tlsPeer(ctx context.Context, cn string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}},
	}})
}

// TestIdentifyClientCertificate: under client-certificate auth the verified
// certificate's CN is the user when no token is sent; a token wins; requests
// through the gRPC gateway never use the CN; without client-cert auth the CN
// is ignored.
func TestIdentifyClientCertificate(t *testing.T) {
	s := newBenchServer(t)
	tokenCtx := enableAuth(t, s) // user "u"
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		certAuth bool
		ctx      context.Context
		want     string
	}{
		{"cert CN", true, tlsPeer(ctx, "root"), "root"},
		{"token wins over CN", true, tlsPeer(tokenCtx, "root"), "u"},
		{"gateway request", true, metadata.NewIncomingContext(tlsPeer(ctx, "root"), metadata.Pairs(guard.GatewayHeader, "x")), ""},
		{"no client-cert auth", false, tlsPeer(ctx, "root"), ""},
		{"no TLS", true, ctx, ""},
	} {
		s.cfg.Server.TLS.ClientCertAuth = c.certAuth
		id, err := s.guard.Identify(c.ctx)
		if err != nil || id.User != c.want {
			t.Errorf("%s: identify = %q, %v; want %q", c.name, id.User, err, c.want)
		}
	}
	// A CN user is authorized like any other: root may list users.
	s.cfg.Server.TLS.ClientCertAuth = true
	if _, err := s.rpc.Auth().UserList(tlsPeer(ctx, "root"), &pb.AuthUserListRequest{}); err != nil {
		t.Errorf("UserList as CN root: %v", err)
	}
	if _, err := s.rpc.Auth().UserList(tlsPeer(ctx, "nobody"), &pb.AuthUserListRequest{}); !errors.Is(err, rpctypes.ErrGRPCUserNotFound) {
		t.Errorf("UserList as CN of an unknown user: %v, want user not found", err)
	}
}

// TestWatchAuthorization: a watch as a user with READ on everything is
// allowed; without a token, with auth on, it is refused as user empty.
func TestWatchAuthorization(t *testing.T) {
	s := newBenchServer(t)
	ctx := enableAuth(t, s)
	if err := s.guard.AuthorizeWatch(ctx, []byte("any"), []byte{0}); err != nil {
		t.Errorf("watch as u on everything: %v", err)
	}
	if err := s.guard.AuthorizeWatch(context.Background(), []byte("k"), nil); !errors.Is(err, auth.ErrUserEmpty) {
		t.Errorf("watch without a token: %v", err)
	}
}
