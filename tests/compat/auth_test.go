package compat

import (
	"context"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// errNoPasswordUser is what etcd returns, unmapped, when a password is given
// for a user without one.
var errNoPasswordUser = status.Error(codes.Unknown, "auth: authentication failed, password was given for no password user")

// TestAuthManagement walks the Auth service through its etcd semantics:
// enabling, users, roles, permissions, who may read what, every error, and
// the auth revision after each change. The transcripts must be identical.
func TestAuthManagement(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		a := newAuthEnv(e)
		a.run("disabled", func(a *authEnv) {
			st, err := a.AuthStatus(anon)
			a.must(err)
			a.wantEqual("status", st, &pb.AuthStatusResponse{Header: st.(*pb.AuthStatusResponse).Header, AuthRevision: 1})
			_, err = a.Authenticate(anon, "root", "x")
			a.wantErr(err, rpctypes.ErrGRPCAuthNotEnabled)
			_, err = a.AuthEnable(anon)
			a.wantErr(err, rpctypes.ErrGRPCRootUserNotExist)
			_, err = a.UserAdd(anon, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
			a.must(err)
			_, err = a.AuthEnable(anon)
			a.wantErr(err, rpctypes.ErrGRPCRootRoleNotExist)
			// The root role needs no role record to be granted.
			_, err = a.UserGrantRole(anon, "root", "root")
			a.must(err)
			_, err = a.RoleGet(anon, "root")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			a.AuthStatus(anon)
			_, err = a.AuthDisable(anon) // a no-op: no revision change
			a.must(err)
			a.AuthStatus(anon)
			_, err = a.AuthEnable(anon)
			a.must(err)
		})
		root := a.as("root", "rootpw")
		a.run("enabled", func(a *authEnv) {
			_, err := a.AuthStatus(anon)
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			_, err = a.AuthEnable(anon)
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			_, err = a.AuthEnable(root) // already enabled: a no-op
			a.must(err)
			a.AuthStatus(root)
			_, err = a.Authenticate(anon, "root", "wrong")
			a.wantErr(err, rpctypes.ErrGRPCAuthFailed)
			_, err = a.Authenticate(anon, "nobody", "x")
			a.wantErr(err, rpctypes.ErrGRPCAuthFailed)
			_, err = a.Authenticate(anon, "root", "rootpw")
			a.must(err)
		})
		a.run("users", func(a *authEnv) {
			_, err := a.UserAdd(root, &pb.AuthUserAddRequest{Name: ""})
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
			a.must(err)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "alice", Password: "other"})
			a.wantErr(err, rpctypes.ErrGRPCUserAlreadyExist)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "bob", Password: "bobpw", Options: &authpb.UserAddOptions{}})
			a.must(err)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "carol", Options: &authpb.UserAddOptions{NoPassword: true}})
			a.must(err)
			_, err = a.Authenticate(anon, "carol", "")
			a.wantErr(err, errNoPasswordUser)
			a.UserAdd(root, &pb.AuthUserAddRequest{Name: "long", Password: strings.Repeat("x", 73)}) // past bcrypt's 72 bytes
			// A client-sent hash is ignored: the server hashes the password.
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "hp", Password: "hppw", HashedPassword: "bm90IGEgaGFzaA=="})
			a.must(err)
			_, err = a.Authenticate(anon, "hp", "hppw")
			a.must(err)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "nopw2", Password: "given", Options: &authpb.UserAddOptions{NoPassword: true}})
			a.must(err)
			_, err = a.Authenticate(anon, "nopw2", "given")
			a.wantErr(err, errNoPasswordUser)
			_, err = a.UserAdd(root, &pb.AuthUserAddRequest{Name: "dave", Password: ""})
			a.must(err)
			_, err = a.Authenticate(anon, "dave", "")
			a.must(err)
			a.UserList(root)
			a.UserGet(root, "alice")
			_, err = a.UserGet(root, "nobody")
			a.wantErr(err, rpctypes.ErrGRPCUserNotFound)
			_, err = a.UserDelete(root, "nobody")
			a.wantErr(err, rpctypes.ErrGRPCUserNotFound)
			_, err = a.UserDelete(root, "root")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.UserRevokeRole(root, "root", "root")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.UserDelete(root, "dave")
			a.must(err)
			_, err = a.UserChangePassword(root, "nobody", "x")
			a.wantErr(err, rpctypes.ErrGRPCUserNotFound)
			_, err = a.UserChangePassword(root, "bob", "bobpw2")
			a.must(err)
			_, err = a.Authenticate(anon, "bob", "bobpw")
			a.wantErr(err, rpctypes.ErrGRPCAuthFailed)
			_, err = a.Authenticate(anon, "bob", "bobpw2")
			a.must(err)
			_, err = a.UserChangePassword(root, "carol", "ignored") // no-password users keep none
			a.must(err)
			_, err = a.Authenticate(anon, "carol", "ignored")
			a.wantErr(err, errNoPasswordUser)
			a.AuthStatus(root)
		})
		a.run("roles", func(a *authEnv) {
			_, err := a.RoleAdd(root, "")
			a.wantErr(err, rpctypes.ErrGRPCRoleEmpty)
			_, err = a.RoleAdd(root, "r1")
			a.must(err)
			_, err = a.RoleAdd(root, "r1")
			a.wantErr(err, rpctypes.ErrGRPCRoleAlreadyExist)
			_, err = a.RoleAdd(root, "root")
			a.must(err)
			a.RoleGet(root, "root")
			_, err = a.do(root, "RoleGrantPermission(nil perm)", func(ctx context.Context) (any, error) {
				return a.auth.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r1"})
			})
			a.wantErr(err, rpctypes.ErrGRPCPermissionNotGiven)
			_, err = a.RoleGrant(root, "r1", authpb.READ, "b", "a")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.RoleGrant(root, "r1", authpb.READ, "", "a")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.RoleGrant(root, "r1", authpb.READ, "b", "b")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.RoleGrant(root, "nosuch", authpb.READ, "a", "")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			for _, g := range []struct {
				t        authpb.Permission_Type
				key, end string
			}{
				{authpb.READ, "k1", ""},
				{authpb.WRITE, "p/", "p0"},
				{authpb.READWRITE, "z", "\x00"},
				{authpb.WRITE, "k1", ""}, // same range: changes the type
				{authpb.READ, "k1", "k5"},
				{authpb.READ, "a", "c"},
				{authpb.WRITE, "k1", "k5"}, // NB: etcd only matches the first perm at the key
				{authpb.READ, "\x00", "\x00"},
			} {
				_, err = a.RoleGrant(root, "r1", g.t, g.key, g.end)
				a.must(err)
			}
			a.RoleGet(root, "r1")
			_, err = a.RoleRevoke(root, "r1", "k1", "k5")
			a.must(err)
			a.RoleGet(root, "r1")
			_, err = a.RoleRevoke(root, "r1", "k1", "k9")
			a.wantErr(err, rpctypes.ErrGRPCPermissionNotGranted)
			_, err = a.RoleRevoke(root, "nosuch", "k1", "")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			_, err = a.RoleRevoke(root, "r1", "\x00", "\x00")
			a.must(err)
			_, err = a.RoleGet(root, "nosuch")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			_, err = a.RoleDelete(root, "nosuch")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			_, err = a.RoleDelete(root, "root")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthMgmt)
			_, err = a.UserGrantRole(root, "alice", "r1")
			a.must(err)
			a.AuthStatus(root)
			_, err = a.UserGrantRole(root, "alice", "r1") // held already: no revision change
			a.must(err)
			a.AuthStatus(root)
			_, err = a.UserGrantRole(root, "alice", "nosuch")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotFound)
			_, err = a.UserGrantRole(root, "nobody", "r1")
			a.wantErr(err, rpctypes.ErrGRPCUserNotFound)
			_, err = a.UserRevokeRole(root, "alice", "nosuch")
			a.wantErr(err, rpctypes.ErrGRPCRoleNotGranted)
			_, err = a.UserRevokeRole(root, "nobody", "r1")
			a.wantErr(err, rpctypes.ErrGRPCUserNotFound)
			_, err = a.RoleAdd(root, "r2")
			a.must(err)
			_, err = a.UserGrantRole(root, "alice", "r2")
			a.must(err)
			_, err = a.UserGrantRole(root, "bob", "r2")
			a.must(err)
			a.UserGet(root, "alice")
			a.RoleList(root)
			a.AuthStatus(root)
		})
		alice := a.as("alice", "alicepw")
		a.run("non-root", func(a *authEnv) {
			a.UserGet(alice, "alice") // oneself
			_, err := a.UserGet(alice, "bob")
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			_, err = a.UserGet(alice, "nobody")
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			a.RoleGet(alice, "r1") // own role
			_, err = a.RoleGet(alice, "root")
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			for _, f := range []func(caller) (any, error){a.AuthStatus, a.UserList, a.RoleList, a.AuthDisable, a.AuthEnable} {
				_, err = f(alice)
				a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			}
			_, err = a.UserAdd(alice, &pb.AuthUserAddRequest{Name: "eve", Password: "x"})
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			_, err = a.RoleAdd(alice, "r9")
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			_, err = a.UserChangePassword(alice, "alice", "new") // not even one's own
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			_, err = a.UserGet(anon, "alice")
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			_, err = a.RoleGet(anon, "r1")
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			_, err = a.UserGet(caller{name: "bad-token", token: "garbage"}, "alice")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthToken)
		})
		a.run("kv", func(a *authEnv) {
			put := func(c caller, key string, prev bool) error {
				_, err := a.Put(c, &pb.PutRequest{Key: []byte(key), Value: []byte("v"), PrevKv: prev})
				return err
			}
			a.must(put(root, "k1", false))
			a.must(put(root, "k3", false))
			a.must(put(root, "p/1", false))
			a.must(put(alice, "k1", false))
			a.must(put(alice, "p/2", false))
			a.wantErr(put(alice, "p/3", true), rpctypes.ErrGRPCPermissionDenied) // prev_kv needs READ
			put(alice, "k1", true)
			a.must(put(alice, "zzz", true))
			a.wantErr(put(alice, "q", false), rpctypes.ErrGRPCPermissionDenied)
			a.wantErr(put(anon, "k1", false), rpctypes.ErrGRPCUserEmpty)
			a.wantErr(put(caller{name: "bad-token", token: "garbage.1"}, "k1", false), rpctypes.ErrGRPCInvalidAuthToken)
			for _, r := range []*pb.RangeRequest{
				rng("k1", ""), rng("k1", "k5"), rng("k1", "k6"), rng("a", "c"), rng("a", "c\x00"),
				rng("b", "a"), rng("z", "\x00"), rng("zz", "\x00"), rng("y", "\x00"), rng("p/", "p0"),
				rng("k0", ""), rng("\x00", "\x00"), rng("a", ""), rng("c", ""),
			} {
				a.Range(alice, r)
			}
			_, err := a.Range(anon, rng("k1", ""))
			a.wantErr(err, rpctypes.ErrGRPCUserEmpty)
			for _, d := range []*pb.DeleteRangeRequest{
				{Key: []byte("p/2")},
				{Key: []byte("p/"), RangeEnd: []byte("p0"), PrevKv: true},
				{Key: []byte("p/"), RangeEnd: []byte("p0")},
				{Key: []byte("zzz"), PrevKv: true},
				{Key: []byte("k1"), RangeEnd: []byte("k2")},
				{Key: []byte("q")},
			} {
				a.Delete(alice, d)
			}
			a.Delete(root, &pb.DeleteRangeRequest{Key: []byte("q")})
		})
		a.run("changes", func(a *authEnv) {
			// Revoking a role takes effect at once; alice's token stays valid.
			_, err := a.UserRevokeRole(root, "alice", "r1")
			a.must(err)
			_, err = a.Range(alice, rng("k1", ""))
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			_, err = a.UserGrantRole(root, "alice", "r1")
			a.must(err)
			a.Range(alice, rng("k1", ""))
			_, err = a.RoleRevoke(root, "r1", "k1", "")
			a.must(err)
			_, err = a.Put(alice, &pb.PutRequest{Key: []byte("k1")})
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			a.Range(alice, rng("k1", ""))
			// Deleting a role revokes it from its holders.
			_, err = a.RoleDelete(root, "r1")
			a.must(err)
			a.UserGet(root, "alice")
			_, err = a.Range(alice, rng("k1", ""))
			a.wantErr(err, rpctypes.ErrGRPCPermissionDenied)
			// A password change voids the user's tokens.
			bob := a.as("bob", "bobpw2")
			a.UserGet(bob, "bob")
			_, err = a.UserChangePassword(root, "bob", "bobpw3")
			a.must(err)
			_, err = a.UserGet(bob, "bob")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthToken)
			// So does deleting the user.
			bob = a.as("bob", "bobpw3")
			_, err = a.UserDelete(root, "bob")
			a.must(err)
			_, err = a.UserGet(bob, "bob")
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthToken)
			a.AuthStatus(root)
		})
		a.run("disable", func(a *authEnv) {
			_, err := a.AuthDisable(root)
			a.must(err)
			a.AuthStatus(anon)
			a.Range(anon, rng("k", "\x00"))
			a.Put(anon, &pb.PutRequest{Key: []byte("free"), Value: []byte("v")})
			// Any token, even garbage, is ignored while auth is off.
			a.Range(caller{name: "bad-token", token: "garbage"}, rng("free", ""))
			_, err = a.UserDelete(anon, "root") // allowed while disabled
			a.must(err)
			_, err = a.UserAdd(anon, &pb.AuthUserAddRequest{Name: "root", Password: "again"})
			a.must(err)
			_, err = a.UserGrantRole(anon, "root", "root")
			a.must(err)
			_, err = a.AuthEnable(anon)
			a.must(err)
			// Tokens from before the disable are void.
			_, err = a.UserList(root)
			a.wantErr(err, rpctypes.ErrGRPCInvalidAuthToken)
			root2 := a.as("root", "again")
			a.UserList(root2)
			a.AuthStatus(root2)
		})
	})
}
