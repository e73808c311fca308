package v3rpc

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/apply"
)

// authServer implements etcd's Auth service.
type authServer struct {
	pb.UnimplementedAuthServer
	s *Server
}

var _ pb.AuthServer = (*authServer)(nil)

// admin applies an auth management request once the caller is root (any
// caller while auth is disabled).
func (a *authServer) admin(ctx context.Context, r *apply.Request) (any, error) {
	res, err := a.s.proposeGuarded(ctx, r)
	if err != nil {
		return nil, err
	}
	return res.Resp, nil
}

// ownRead is who besides root may read a part of the auth state, as etcd
// allows: the user itself (UserGet), the holders of a role (RoleGet).
type ownRead struct {
	user, role     string
	byUser, byRole bool
}

func (a *authServer) allows(o ownRead, user string) bool {
	return o.byUser && user == o.user || o.byRole && a.s.auth.HasRole(user, o.role)
}

// adminRead answers a read of the auth state once the caller may see it
// (root, or o). Reads are served from the in-memory state, which holds
// every applied change; they are checked again while auth moved.
func (a *authServer) adminRead(ctx context.Context, o ownRead) error {
	g := a.s.guard
	for {
		id, err := g.Identify(ctx)
		if err != nil {
			return toGRPCError(err)
		}
		if err := g.AuthorizeAdmin(ctx, id); err != nil && !a.allows(o, id.User) {
			return toGRPCError(err)
		}
		if !g.AuthMoved(id) {
			return nil
		}
	}
}

func (a *authServer) header() *pb.ResponseHeader {
	h := &pb.ResponseHeader{}
	a.s.fillHeader(h)
	return h
}

func (a *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthEnable: r})
	return done[*pb.AuthEnableResponse](a.s, resp, err)
}

func (a *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthDisable: r})
	return done[*pb.AuthDisableResponse](a.s, resp, err)
}

func (a *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	if err := a.adminRead(ctx, ownRead{}); err != nil {
		return nil, err
	}
	enabled, rev := a.s.auth.Status()
	return &pb.AuthStatusResponse{Header: a.header(), Enabled: enabled, AuthRevision: rev}, nil
}

// Authenticate checks the password on this goroutine (bcrypt, no lock held),
// then applies the authentication, which fixes the auth revision the token
// is issued at; if auth changed in between, it starts over, as etcd's.
func (a *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	s := a.s
	// As etcd's: the password is checked against auth state that has
	// caught up with the cluster.
	if err := s.linearizableRead(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	for {
		checkedRev, err := s.auth.CheckPassword(r.Name, r.Password)
		if err != nil {
			return nil, toGRPCError(err)
		}
		prefix := ""
		if s.tokens.Simple() {
			if prefix, err = auth.NewSimpleTokenPrefix(); err != nil {
				return nil, toGRPCError(err)
			}
		}
		// No password in the applied request: the check is done.
		req := &apply.Request{
			Header:       &pb.RequestHeader{AuthRevision: checkedRev},
			Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: prefix},
		}
		res, err := s.loop.Propose(ctx, req)
		if err != nil {
			return nil, toGRPCError(err)
		}
		if errors.Is(res.Err, apply.ErrAuthRetry) {
			continue
		}
		if res.Err != nil {
			return nil, toGRPCError(res.Err)
		}
		resp := res.Resp.(*pb.AuthenticateResponse)
		if s.raft != nil && s.tokens.Simple() {
			// A cluster member registers a simple token when it applies
			// the authentication (package server), so that every member
			// knows it, as etcd's.
			s.fillHeader(resp.Header)
			return resp, nil
		}
		tok, err := s.tokens.Issue(r.Name, res.AuthRevision, resp.Token)
		if auth.ErrTokenCollision(err) {
			continue
		}
		if err != nil {
			return nil, toGRPCError(err)
		}
		resp.Token = tok
		s.fillHeader(resp.Header)
		return resp, nil
	}
}

func (a *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	s := a.s
	// Hash once, after the caller is known to be allowed, and never put
	// the plain password in the applied request.
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if r.Options == nil || !r.Options.NoPassword {
		h, err := s.auth.HashPassword(r.Password)
		if err != nil {
			return nil, toGRPCError(err)
		}
		r.HashedPassword, r.Password = h, ""
	}
	res, err := s.proposeGuarded(ctx, &apply.Request{AuthUserAdd: r})
	if err != nil {
		return nil, err
	}
	return done[*pb.AuthUserAddResponse](s, res.Resp, nil)
}

func (a *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthUserDelete: r})
	return done[*pb.AuthUserDeleteResponse](a.s, resp, err)
}

func (a *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	s := a.s
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if r.Password != "" {
		h, err := s.auth.HashPassword(r.Password)
		if err != nil {
			return nil, toGRPCError(err)
		}
		r.HashedPassword, r.Password = h, ""
	}
	res, err := s.proposeGuarded(ctx, &apply.Request{AuthUserChangePassword: r})
	if err != nil {
		return nil, err
	}
	return done[*pb.AuthUserChangePasswordResponse](s, res.Resp, nil)
}

func (a *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthUserGrantRole: r})
	return done[*pb.AuthUserGrantRoleResponse](a.s, resp, err)
}

// UserGet is allowed to root and to the user itself.
func (a *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	if err := a.adminRead(ctx, ownRead{user: r.Name, byUser: true}); err != nil {
		return nil, err
	}
	resp, err := a.s.auth.UserGet(r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = a.header()
	return resp, nil
}

func (a *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	if err := a.adminRead(ctx, ownRead{}); err != nil {
		return nil, err
	}
	resp, err := a.s.auth.UserList(r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = a.header()
	return resp, nil
}

func (a *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthUserRevokeRole: r})
	return done[*pb.AuthUserRevokeRoleResponse](a.s, resp, err)
}

func (a *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthRoleAdd: r})
	return done[*pb.AuthRoleAddResponse](a.s, resp, err)
}

// RoleGet is allowed to root and to holders of the role.
func (a *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	if err := a.adminRead(ctx, ownRead{role: r.Role, byRole: true}); err != nil {
		return nil, err
	}
	resp, err := a.s.auth.RoleGet(r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = a.header()
	return resp, nil
}

func (a *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	if err := a.adminRead(ctx, ownRead{}); err != nil {
		return nil, err
	}
	resp, err := a.s.auth.RoleList(r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = a.header()
	return resp, nil
}

func (a *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthRoleDelete: r})
	return done[*pb.AuthRoleDeleteResponse](a.s, resp, err)
}

func (a *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthRoleGrantPermission: r})
	return done[*pb.AuthRoleGrantPermissionResponse](a.s, resp, err)
}

func (a *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	resp, err := a.admin(ctx, &apply.Request{AuthRoleRevokePermission: r})
	return done[*pb.AuthRoleRevokePermissionResponse](a.s, resp, err)
}

// headerGetter is every Auth response.
type headerGetter interface{ GetHeader() *pb.ResponseHeader }

// done completes an applied Auth response's header.
func done[T headerGetter](s *Server, resp any, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	out := resp.(T)
	s.fillHeader(out.GetHeader())
	return out, nil
}
