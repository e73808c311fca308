package apply

import (
	"errors"
	"log/slog"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
)

type authFixture struct {
	t     *testing.T
	store *mvcc.Store
	auth  *auth.Store
	a     *Applier
}

func newAuthFixture(t *testing.T) *authFixture {
	dir := t.TempDir()
	st, err := mvcc.Open(dir, mvcc.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	as, err := auth.Open(AuthReader(st), auth.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(st, Options{Auth: as})
	if err != nil {
		t.Fatal(err)
	}
	return &authFixture{t: t, store: st, auth: as, a: a}
}

// apply applies r alone in a committed batch.
func (f *authFixture) apply(r *Request) Result {
	f.t.Helper()
	b, err := f.store.NewBatch()
	if err != nil {
		f.t.Fatal(err)
	}
	res := f.a.Apply(b, r)
	if err := b.Commit(); err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *authFixture) mustApply(r *Request) Result {
	f.t.Helper()
	res := f.apply(r)
	if res.Err != nil {
		f.t.Fatalf("apply %v: %v", r, res.Err)
	}
	return res
}

func TestAuthAppliedAndReloaded(t *testing.T) {
	f := newAuthFixture(t)
	f.mustApply(&Request{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", Options: nil, HashedPassword: ""}})
	f.mustApply(&Request{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}})
	f.mustApply(&Request{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}})
	res := f.mustApply(&Request{AuthEnable: &pb.AuthEnableRequest{}})
	if h := res.Resp.(*pb.AuthEnableResponse).Header; h == nil || h.Revision != 1 {
		t.Errorf("AuthEnable header = %v, want revision 1", h)
	}
	st := f.mustApply(&Request{AuthStatus: &pb.AuthStatusRequest{}}).Resp.(*pb.AuthStatusResponse)
	if !st.Enabled || st.AuthRevision != 4 {
		t.Errorf("status = %v", st)
	}
	// A new auth store over the same data sees the same state.
	as2, err := auth.Open(AuthReader(f.store), auth.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	if e, r := as2.Status(); !e || r != 4 {
		t.Errorf("reloaded status = %v, %d", e, r)
	}
	if got, _ := as2.RoleList(nil); len(got.Roles) != 1 || got.Roles[0] != "r" {
		t.Errorf("reloaded roles = %v", got.Roles)
	}
	// Authenticate fixes the issuing revision and composes a simple token.
	res = f.mustApply(&Request{Header: &pb.RequestHeader{AuthRevision: 4}, Authenticate: &pb.InternalAuthenticateRequest{Name: "root", SimpleToken: "abc"}})
	if res.AuthRevision != 4 || res.Resp.(*pb.AuthenticateResponse).Token != "abc.1" {
		t.Errorf("Authenticate = %+v %v", res, res.Resp)
	}
}

// TestAuthStaleRequestsAreNotApplied: a request authorized at an auth
// revision that is no longer current is refused untouched, so that the
// server authorizes it again.
func TestAuthStaleRequestsAreNotApplied(t *testing.T) {
	f := newAuthFixture(t)
	put := func(hdr *pb.RequestHeader) Result {
		return f.apply(&Request{Header: hdr, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	}
	// Auth disabled: a request authorized with auth off applies.
	if res := put(&pb.RequestHeader{}); res.Err != nil {
		t.Fatal(res.Err)
	}
	f.mustApply(&Request{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root"}})
	f.mustApply(&Request{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}})
	f.mustApply(&Request{AuthEnable: &pb.AuthEnableRequest{}})
	rev := f.store.Rev()
	_, authRev := f.auth.Status()
	for _, c := range []struct {
		name string
		hdr  *pb.RequestHeader
	}{
		{"authorized while auth was off", &pb.RequestHeader{}},
		{"authorized at an older auth revision", &pb.RequestHeader{Username: "root", AuthRevision: authRev - 1}},
	} {
		if res := put(c.hdr); !errors.Is(res.Err, ErrAuthRetry) {
			t.Errorf("%s: %v, want ErrAuthRetry", c.name, res.Err)
		}
	}
	if f.store.Rev() != rev {
		t.Fatalf("a stale request was applied: revision %d -> %d", rev, f.store.Rev())
	}
	if res := put(&pb.RequestHeader{Username: "root", AuthRevision: authRev}); res.Err != nil {
		t.Errorf("current request: %v", res.Err)
	}
	// Internal requests (no header) and compactions are not subject to it.
	if res := put(nil); res.Err != nil {
		t.Errorf("internal request: %v", res.Err)
	}
	if res := f.apply(&Request{Header: &pb.RequestHeader{}, Compaction: &pb.CompactionRequest{Revision: 1}}); res.Err != nil {
		t.Errorf("compaction: %v", res.Err)
	}
}
