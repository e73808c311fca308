package apply

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
)

// ErrAuthRetry is returned, with nothing applied, for a request authorized
// against an auth state that has changed since (its header's AuthRevision
// is no longer current while auth is on). The server authorizes it again and
// proposes it anew; clients never see this error.
var ErrAuthRetry = errors.New("apply: auth state changed since the request was authorized")

// errNoAuth is returned for auth requests when the applier has no store.
var errNoAuth = errors.New("apply: no auth store")

// AuthReader adapts the store's metadata to what auth.Open reads.
func AuthReader(s *mvcc.Store) auth.Reader { return metaReader{s} }

type metaReader struct{ s *mvcc.Store }

func (r metaReader) Get(key string) ([]byte, error) { return r.s.Meta(key) }
func (r metaReader) Scan(prefix string, fn func(string, []byte) error) error {
	return r.s.ScanMeta(prefix, fn)
}

// metaWriter persists auth mutations in the batch, as store metadata.
type metaWriter struct{ b *mvcc.Batch }

func (w metaWriter) Put(key string, value []byte) error { return w.b.SetMeta(key, value) }
func (w metaWriter) Delete(key string) error            { return w.b.DeleteMeta(key) }

var (
	_ auth.Reader = metaReader{}
	_ auth.Writer = metaWriter{}
)

// authStale reports whether r was authorized against an older auth state.
// Requests without a header (internal ones) and compactions, which need no
// permission, are never stale.
func (a *Applier) authStale(r *Request) bool {
	return r.Header != nil && r.Compaction == nil && a.auth != nil && a.auth.Stale(r.Header.AuthRevision)
}

// isAuth reports whether r is one of the Auth service's requests.
func isAuth(r *Request) bool {
	return r.Authenticate != nil || r.AuthEnable != nil || r.AuthDisable != nil || r.AuthStatus != nil ||
		r.AuthUserAdd != nil || r.AuthUserDelete != nil || r.AuthUserChangePassword != nil ||
		r.AuthUserGrantRole != nil || r.AuthUserGet != nil || r.AuthUserRevokeRole != nil ||
		r.AuthRoleAdd != nil || r.AuthRoleGrantPermission != nil || r.AuthRoleGet != nil ||
		r.AuthRoleRevokePermission != nil || r.AuthRoleDelete != nil || r.AuthUserList != nil ||
		r.AuthRoleList != nil
}

// applyAuth applies one Auth service request with etcd's semantics. Every
// response header carries the batch's revision; the server completes it.
func (a *Applier) applyAuth(b *mvcc.Batch, r *Request) Result {
	as := a.auth
	if as == nil {
		return Result{Err: errNoAuth}
	}
	w := metaWriter{b}
	hdr := func() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: b.Rev()} }
	switch {
	case r.Authenticate != nil:
		rev, err := as.Authenticate(r.Authenticate.Name)
		if err != nil {
			return Result{Err: err}
		}
		resp := &pb.AuthenticateResponse{Header: hdr()}
		if r.Authenticate.SimpleToken != "" {
			resp.Token = auth.SimpleToken(r.Authenticate.SimpleToken, b.Rev())
		}
		return Result{Resp: resp, AuthRevision: rev}
	case r.AuthEnable != nil:
		if err := as.AuthEnable(w); err != nil {
			return Result{Err: err}
		}
		return Result{Resp: &pb.AuthEnableResponse{Header: hdr()}}
	case r.AuthDisable != nil:
		if err := as.AuthDisable(w); err != nil {
			return Result{Err: err}
		}
		return Result{Resp: &pb.AuthDisableResponse{Header: hdr()}}
	case r.AuthStatus != nil:
		enabled, rev := as.Status()
		return Result{Resp: &pb.AuthStatusResponse{Header: hdr(), Enabled: enabled, AuthRevision: rev}}
	case r.AuthUserAdd != nil:
		resp, err := as.UserAdd(w, r.AuthUserAdd)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserDelete != nil:
		resp, err := as.UserDelete(w, r.AuthUserDelete)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserChangePassword != nil:
		resp, err := as.UserChangePassword(w, r.AuthUserChangePassword)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserGrantRole != nil:
		resp, err := as.UserGrantRole(w, r.AuthUserGrantRole)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserGet != nil:
		resp, err := as.UserGet(r.AuthUserGet)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserRevokeRole != nil:
		resp, err := as.UserRevokeRole(w, r.AuthUserRevokeRole)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleAdd != nil:
		resp, err := as.RoleAdd(w, r.AuthRoleAdd)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleGrantPermission != nil:
		resp, err := as.RoleGrantPermission(w, r.AuthRoleGrantPermission)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleGet != nil:
		resp, err := as.RoleGet(r.AuthRoleGet)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleRevokePermission != nil:
		resp, err := as.RoleRevokePermission(w, r.AuthRoleRevokePermission)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleDelete != nil:
		resp, err := as.RoleDelete(w, r.AuthRoleDelete)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthUserList != nil:
		resp, err := as.UserList(r.AuthUserList)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	case r.AuthRoleList != nil:
		resp, err := as.RoleList(r.AuthRoleList)
		if err != nil {
			return Result{Err: err}
		}
		resp.Header = hdr()
		return Result{Resp: resp}
	}
	return Result{Err: errNoAuth}
}
