package compat

import (
	"context"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// authEnv adds, to a scenario's env, stubs over a plain gRPC connection:
// no clientv3 interceptors, so that an auth error is returned as is (clientv3
// would retry it and try to refresh its token).
type authEnv struct {
	*env
	conn  *grpc.ClientConn
	kv    pb.KVClient
	auth  pb.AuthClient
	maint pb.MaintenanceClient
	clus  pb.ClusterClient
}

func newAuthEnv(e *env) *authEnv {
	conn, err := grpc.NewClient(e.srv.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatalf("dial %s: %v", e.srv.Endpoint, err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return &authEnv{
		env: e, conn: conn,
		kv: pb.NewKVClient(conn), auth: pb.NewAuthClient(conn),
		maint: pb.NewMaintenanceClient(conn), clus: pb.NewClusterClient(conn),
	}
}

func (a *authEnv) run(name string, f func(a *authEnv)) {
	a.t.Helper()
	a.t.Run(name, func(t *testing.T) {
		sub := *a.env
		sub.t = t
		c := *a
		c.env = &sub
		f(&c)
	})
}

// withToken returns a context carrying token as etcd clients send it.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "token", token)
}

// caller is who makes a call: a name for the transcript and a token.
type caller struct{ name, token string }

var anon = caller{name: "anon"}

// do runs one recorded RPC as c. The label names the caller, not its
// token, so transcripts compare across servers; tokens in responses are
// blanked in the record.
func (a *authEnv) do(c caller, label string, f func(ctx context.Context) (any, error)) (any, error) {
	a.t.Helper()
	ctx, cancel := a.ctx()
	defer cancel()
	resp, err := f(withToken(ctx, c.token))
	rec := resp
	if ar, ok := resp.(*pb.AuthenticateResponse); ok && ar != nil {
		cp := *ar
		if cp.Token != "" {
			cp.Token = "<token>"
		}
		rec = &cp
	}
	a.record(fmt.Sprintf("[%s] %s", c.name, label), rec, err)
	return resp, err
}

// as authenticates name (unrecorded) and returns it as a caller.
func (a *authEnv) as(name, password string) caller {
	a.t.Helper()
	return caller{name: name, token: a.token(name, password)}
}

// token authenticates name (unrecorded) and returns its token.
func (a *authEnv) token(name, password string) string {
	a.t.Helper()
	ctx, cancel := a.ctx()
	defer cancel()
	resp, err := a.auth.Authenticate(ctx, &pb.AuthenticateRequest{Name: name, Password: password})
	if err != nil {
		a.t.Fatalf("Authenticate(%s): %v", name, err)
	}
	return resp.Token
}

// must fails the test on an unexpected error of a setup call.
func (a *authEnv) must(err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatalf("setup: %v", err)
	}
}

// setupRootAndEnable creates root (password "rootpw") with the root role
// and enables auth, recording every call; it returns root as a caller.
func (a *authEnv) setupRootAndEnable() caller {
	a.t.Helper()
	_, err := a.UserAdd(anon, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
	a.must(err)
	_, err = a.RoleAdd(anon, "root")
	a.must(err)
	_, err = a.UserGrantRole(anon, "root", "root")
	a.must(err)
	_, err = a.AuthEnable(anon)
	a.must(err)
	return a.as("root", "rootpw")
}

// Recorded RPCs.

func (a *authEnv) AuthEnable(c caller) (any, error) {
	return a.do(c, "AuthEnable", func(ctx context.Context) (any, error) { return a.auth.AuthEnable(ctx, &pb.AuthEnableRequest{}) })
}

func (a *authEnv) AuthDisable(c caller) (any, error) {
	return a.do(c, "AuthDisable", func(ctx context.Context) (any, error) { return a.auth.AuthDisable(ctx, &pb.AuthDisableRequest{}) })
}

func (a *authEnv) AuthStatus(c caller) (any, error) {
	return a.do(c, "AuthStatus", func(ctx context.Context) (any, error) { return a.auth.AuthStatus(ctx, &pb.AuthStatusRequest{}) })
}

func (a *authEnv) Authenticate(c caller, name, password string) (any, error) {
	return a.do(c, fmt.Sprintf("Authenticate(%s,%s)", name, password), func(ctx context.Context) (any, error) {
		return a.auth.Authenticate(ctx, &pb.AuthenticateRequest{Name: name, Password: password})
	})
}

func (a *authEnv) UserAdd(c caller, r *pb.AuthUserAddRequest) (any, error) {
	return a.do(c, fmt.Sprintf("UserAdd(%v)", r), func(ctx context.Context) (any, error) { return a.auth.UserAdd(ctx, r) })
}

func (a *authEnv) UserDelete(c caller, name string) (any, error) {
	return a.do(c, "UserDelete("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: name})
	})
}

func (a *authEnv) UserChangePassword(c caller, name, password string) (any, error) {
	return a.do(c, "UserChangePassword("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.UserChangePassword(ctx, &pb.AuthUserChangePasswordRequest{Name: name, Password: password})
	})
}

func (a *authEnv) UserGrantRole(c caller, user, role string) (any, error) {
	return a.do(c, fmt.Sprintf("UserGrantRole(%s,%s)", user, role), func(ctx context.Context) (any, error) {
		return a.auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: user, Role: role})
	})
}

func (a *authEnv) UserRevokeRole(c caller, user, role string) (any, error) {
	return a.do(c, fmt.Sprintf("UserRevokeRole(%s,%s)", user, role), func(ctx context.Context) (any, error) {
		return a.auth.UserRevokeRole(ctx, &pb.AuthUserRevokeRoleRequest{Name: user, Role: role})
	})
}

func (a *authEnv) UserGet(c caller, name string) (any, error) {
	return a.do(c, "UserGet("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.UserGet(ctx, &pb.AuthUserGetRequest{Name: name})
	})
}

func (a *authEnv) UserList(c caller) (any, error) {
	return a.do(c, "UserList", func(ctx context.Context) (any, error) { return a.auth.UserList(ctx, &pb.AuthUserListRequest{}) })
}

func (a *authEnv) RoleAdd(c caller, name string) (any, error) {
	return a.do(c, "RoleAdd("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: name})
	})
}

func (a *authEnv) RoleGet(c caller, name string) (any, error) {
	return a.do(c, "RoleGet("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: name})
	})
}

func (a *authEnv) RoleList(c caller) (any, error) {
	return a.do(c, "RoleList", func(ctx context.Context) (any, error) { return a.auth.RoleList(ctx, &pb.AuthRoleListRequest{}) })
}

func (a *authEnv) RoleDelete(c caller, name string) (any, error) {
	return a.do(c, "RoleDelete("+name+")", func(ctx context.Context) (any, error) {
		return a.auth.RoleDelete(ctx, &pb.AuthRoleDeleteRequest{Role: name})
	})
}

func (a *authEnv) RoleGrant(c caller, role string, t authpb.Permission_Type, key, end string) (any, error) {
	r := &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: &authpb.Permission{PermType: t, Key: []byte(key)}}
	if end != "" {
		r.Perm.RangeEnd = []byte(end)
	}
	return a.do(c, fmt.Sprintf("RoleGrantPermission(%v)", r), func(ctx context.Context) (any, error) {
		return a.auth.RoleGrantPermission(ctx, r)
	})
}

func (a *authEnv) RoleRevoke(c caller, role, key, end string) (any, error) {
	r := &pb.AuthRoleRevokePermissionRequest{Role: role, Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return a.do(c, fmt.Sprintf("RoleRevokePermission(%v)", r), func(ctx context.Context) (any, error) {
		return a.auth.RoleRevokePermission(ctx, r)
	})
}

func (a *authEnv) Range(c caller, r *pb.RangeRequest) (any, error) {
	return a.do(c, fmt.Sprintf("Range(%v)", r), func(ctx context.Context) (any, error) { return a.kv.Range(ctx, r) })
}

func (a *authEnv) Put(c caller, r *pb.PutRequest) (any, error) {
	return a.do(c, fmt.Sprintf("Put(%v)", r), func(ctx context.Context) (any, error) { return a.kv.Put(ctx, r) })
}

func (a *authEnv) Delete(c caller, r *pb.DeleteRangeRequest) (any, error) {
	return a.do(c, fmt.Sprintf("DeleteRange(%v)", r), func(ctx context.Context) (any, error) { return a.kv.DeleteRange(ctx, r) })
}

func (a *authEnv) Txn(c caller, r *pb.TxnRequest) (any, error) {
	return a.do(c, fmt.Sprintf("Txn(%v)", r), func(ctx context.Context) (any, error) { return a.kv.Txn(ctx, r) })
}
