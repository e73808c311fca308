package compat

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestAuthMatrix calls every RPC that etcd guards as each kind of caller
// (no token, a malformed token, an expired token, a user without the
// permission, root), with simple tokens and with JWTs, and requires
// metastore's answers (error code and message, or response) to equal etcd's.
func TestAuthMatrix(t *testing.T) {
	t.Run("simple", func(t *testing.T) {
		authMatrix(t, framework.Options{AuthTokenTTL: 2 * time.Second})
	})
	t.Run("jwt", func(t *testing.T) {
		dir := t.TempDir()
		pub, priv := writeECKeys(t, dir)
		authMatrix(t, framework.Options{AuthToken: "jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=ES256,ttl=2s"})
	})
}

// writeECKeys writes a fresh P-256 key pair as PEM files.
func writeECKeys(t *testing.T, dir string) (pubPath, privPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	privPath, pubPath = filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pubPath, privPath
}

// matrixRPC is one guarded call; errOnly records only its error (for
// responses that carry sizes or identities).
type matrixRPC struct {
	name    string
	errOnly bool
	call    func(a *authEnv, ctx context.Context, col string) (any, error)
}

func matrixRPCs() []matrixRPC {
	txn := func(cmp string, then, els []*pb.RequestOp) *pb.TxnRequest {
		r := &pb.TxnRequest{Success: then, Failure: els}
		if cmp != "" {
			r.Compare = []*pb.Compare{cmpVersion(cmp, pb.Compare_GREATER, 0)}
		}
		return r
	}
	kv := func(name string, f func(a *authEnv, ctx context.Context) (any, error)) matrixRPC {
		return matrixRPC{name: name, call: func(a *authEnv, ctx context.Context, _ string) (any, error) { return f(a, ctx) }}
	}
	return []matrixRPC{
		kv("Range k", func(a *authEnv, ctx context.Context) (any, error) { return a.kv.Range(ctx, rng("k", "")) }),
		kv("Range a/*", func(a *authEnv, ctx context.Context) (any, error) { return a.kv.Range(ctx, rng("a/", "a0")) }),
		kv("Range from a/", func(a *authEnv, ctx context.Context) (any, error) { return a.kv.Range(ctx, rng("a/", "\x00")) }),
		kv("Range serializable a/1", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a/1"), Serializable: true})
		}),
		kv("Put k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
		}),
		kv("Put a/1", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Put(ctx, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("v")})
		}),
		kv("Put w/1 prev_kv", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Put(ctx, &pb.PutRequest{Key: []byte("w/1"), Value: []byte("v"), PrevKv: true})
		}),
		kv("Put w/1", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Put(ctx, &pb.PutRequest{Key: []byte("w/1"), Value: []byte("v")})
		}),
		kv("DeleteRange k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k")})
		}),
		kv("DeleteRange a/* prev_kv", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("a/"), RangeEnd: []byte("a0"), PrevKv: true})
		}),
		kv("DeleteRange w/* prev_kv", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("w/"), RangeEnd: []byte("w0"), PrevKv: true})
		}),
		kv("Txn compare k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("k", []*pb.RequestOp{opPut("a/2", "x")}, nil))
		}),
		kv("Txn else put k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("a/1", []*pb.RequestOp{opPut("a/2", "x")}, []*pb.RequestOp{opPut("k", "x")}))
		}),
		kv("Txn within a/", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("a/1", []*pb.RequestOp{opPut("a/2", "x"), opRange(rng("a/", "a0"))},
				[]*pb.RequestOp{opDelete("a/3", ""), opTxn(txn("a/9", nil, []*pb.RequestOp{opPut("a/4", "y")}))}))
		}),
		kv("Txn nested put k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("", []*pb.RequestOp{opTxn(txn("", nil, []*pb.RequestOp{opPut("k", "y")}))}, nil))
		}),
		kv("Txn read-only k", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("", []*pb.RequestOp{opRange(rng("k", ""))}, nil))
		}),
		kv("Txn read-only a/", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Txn(ctx, txn("a/1", []*pb.RequestOp{opRange(rng("a/", "a0"))}, nil))
		}),
		kv("Txn empty", func(a *authEnv, ctx context.Context) (any, error) { return a.kv.Txn(ctx, &pb.TxnRequest{}) }),
		kv("Compact", func(a *authEnv, ctx context.Context) (any, error) {
			return a.kv.Compact(ctx, &pb.CompactionRequest{Revision: 2})
		}),
		{name: "Status", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.maint.Status(ctx, &pb.StatusRequest{})
		}},
		kv("Alarm GET", func(a *authEnv, ctx context.Context) (any, error) {
			return a.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		}),
		kv("Alarm DEACTIVATE", func(a *authEnv, ctx context.Context) (any, error) {
			return a.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, Alarm: pb.AlarmType_NOSPACE})
		}),
		{name: "Defragment", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.maint.Defragment(ctx, &pb.DefragmentRequest{})
		}},
		{name: "MoveLeader", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 12345})
		}},
		{name: "MemberList", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.clus.MemberList(ctx, &pb.MemberListRequest{})
		}},
		// Membership changes need root; an invalid peer URL is refused
		// before the permission check.
		{name: "MemberAdd no URLs", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.clus.MemberAdd(ctx, &pb.MemberAddRequest{IsLearner: true})
		}},
		{name: "MemberRemove unknown", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.clus.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: 12345})
		}},
		{name: "MemberUpdate unknown", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.clus.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: 12345, PeerURLs: []string{"http://10.0.0.1:2380"}})
		}},
		{name: "MemberPromote unknown", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.clus.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: 12345})
		}},
		{name: "Downgrade VALIDATE", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.maint.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_VALIDATE, Version: "3.5"})
		}},
		{name: "Downgrade CANCEL", errOnly: true, call: func(a *authEnv, ctx context.Context, _ string) (any, error) {
			return a.maint.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_CANCEL})
		}},
		kv("AuthStatus", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.AuthStatus(ctx, &pb.AuthStatusRequest{})
		}),
		kv("AuthEnable", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.AuthEnable(ctx, &pb.AuthEnableRequest{})
		}),
		kv("UserList", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.UserList(ctx, &pb.AuthUserListRequest{})
		}),
		kv("RoleList", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.RoleList(ctx, &pb.AuthRoleListRequest{})
		}),
		kv("UserGet alice", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.UserGet(ctx, &pb.AuthUserGetRequest{Name: "alice"})
		}),
		kv("UserGet root", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.UserGet(ctx, &pb.AuthUserGetRequest{Name: "root"})
		}),
		kv("RoleGet ra", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: "ra"})
		}),
		kv("RoleGet root", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: "root"})
		}),
		{name: "UserAdd", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "u-" + col, Password: "pw"})
		}},
		{name: "UserChangePassword", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.UserChangePassword(ctx, &pb.AuthUserChangePasswordRequest{Name: "u-" + col, Password: "pw2"})
		}},
		{name: "RoleAdd", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "r-" + col})
		}},
		{name: "RoleGrantPermission", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r-" + col,
				Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("x/"), RangeEnd: []byte("x0")}})
		}},
		{name: "UserGrantRole", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "u-" + col, Role: "r-" + col})
		}},
		{name: "UserRevokeRole", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.UserRevokeRole(ctx, &pb.AuthUserRevokeRoleRequest{Name: "u-" + col, Role: "r-" + col})
		}},
		{name: "RoleRevokePermission", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.RoleRevokePermission(ctx, &pb.AuthRoleRevokePermissionRequest{Role: "r-" + col, Key: []byte("x/"), RangeEnd: []byte("x0")})
		}},
		{name: "RoleDelete", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.RoleDelete(ctx, &pb.AuthRoleDeleteRequest{Role: "r-" + col})
		}},
		{name: "UserDelete", call: func(a *authEnv, ctx context.Context, col string) (any, error) {
			return a.auth.UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: "u-" + col})
		}},
		kv("Authenticate", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"})
		}),
		kv("AuthDisable", func(a *authEnv, ctx context.Context) (any, error) {
			return a.auth.AuthDisable(ctx, &pb.AuthDisableRequest{})
		}),
	}
}

func authMatrix(t *testing.T, o framework.Options) {
	scenario(t, o, func(e *env) {
		a := newAuthEnv(e)
		a.setupRootAndEnable()
		// A fresh root token for each change: etcd voids JWTs at every auth
		// change (ErrAuthOldRevision).
		root := func() caller { return a.as("root", "rootpw") }
		_, err := a.UserAdd(root(), &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
		a.must(err)
		_, err = a.RoleAdd(root(), "ra")
		a.must(err)
		_, err = a.RoleGrant(root(), "ra", authpb.READWRITE, "a/", "a0")
		a.must(err)
		_, err = a.RoleGrant(root(), "ra", authpb.WRITE, "w/", "w0")
		a.must(err)
		_, err = a.UserGrantRole(root(), "alice", "ra")
		a.must(err)
		_, err = a.Put(root(), &pb.PutRequest{Key: []byte("a/1"), Value: []byte("1")})
		a.must(err)
		_, err = a.Put(root(), &pb.PutRequest{Key: []byte("k"), Value: []byte("1")})
		a.must(err)
		expired := a.token("alice", "alicepw")
		time.Sleep(3500 * time.Millisecond) // past the 2s TTL and etcd's 1s sweep

		callers := []struct {
			name  string
			token func() string
		}{
			{"no-token", func() string { return "" }},
			{"malformed-token", func() string { return "not-a-token" }},
			{"expired-token", func() string { return expired }},
			{"unprivileged", func() string { return a.token("alice", "alicepw") }},
			{"root", func() string { return a.token("root", "rootpw") }},
		}
		for _, rpc := range matrixRPCs() {
			for _, c := range callers {
				who := caller{name: c.name, token: c.token()}
				resp, err := a.do(who, rpc.name, func(ctx context.Context) (any, error) { return rpc.call(a, ctx, c.name) })
				if rpc.errOnly && err == nil {
					(*a.log)[len(*a.log)-1].resp = nil
				}
				_ = resp
			}
		}
	})
}
