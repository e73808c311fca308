package auth

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// memBackend is a Reader and Writer over a map, as the server's store
// metadata is.
type memBackend struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemBackend() *memBackend { return &memBackend{m: map[string][]byte{}} }

func (b *memBackend) Get(key string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[key], nil
}

func (b *memBackend) Scan(prefix string, fn func(string, []byte) error) error {
	b.mu.Lock()
	keys := slices.Sorted(maps.Keys(b.m))
	b.mu.Unlock()
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			v, _ := b.Get(k)
			if err := fn(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *memBackend) Put(key string, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[key] = slices.Clone(value)
	return nil
}

func (b *memBackend) Delete(key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
	return nil
}

// must returns v, panicking (failing the test) on err.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hashed returns a base64 bcrypt hash of pw at the minimum cost.
func hashed(t testing.TB, s *Store, pw string) string {
	return must(s.HashPassword(pw))
}

// setupStore makes root (with the root role) and alice (role ra:
// READWRITE on a/, READ on k) in a store over b, and enables auth.
func setupStore(t testing.TB, b *memBackend) *Store {
	t.Helper()
	s := must(Open(b, Options{BcryptCost: 4}))
	must(s.UserAdd(b, &pb.AuthUserAddRequest{Name: "root", HashedPassword: hashed(t, s, "rootpw")}))
	must(s.UserGrantRole(b, &pb.AuthUserGrantRoleRequest{User: "root", Role: RootRole}))
	must(s.UserAdd(b, &pb.AuthUserAddRequest{Name: "alice", HashedPassword: hashed(t, s, "alicepw")}))
	must(s.RoleAdd(b, &pb.AuthRoleAddRequest{Name: "ra"}))
	must(s.RoleGrantPermission(b, &pb.AuthRoleGrantPermissionRequest{Name: "ra", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("a/"), RangeEnd: []byte("a0")}}))
	must(s.RoleGrantPermission(b, &pb.AuthRoleGrantPermissionRequest{Name: "ra", Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("k")}}))
	must(s.UserGrantRole(b, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "ra"}))
	ok(t, s.AuthEnable(b))
	return s
}

func newTestStore(t testing.TB) *Store { return setupStore(t, newMemBackend()) }

func decide(s Authorizer, op Op, user string, perm Perm, key, end string) error {
	var r Request
	r.Reset(op, user)
	if op != policyabi.OpAdmin {
		r.Add(perm, []byte(key), []byte(end))
	}
	return Check(context.Background(), s, &r)
}

func TestStorePersistsAndReloads(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	enabled, rev := s.Status()
	if !enabled || rev != 8 {
		t.Fatalf("status = %v, %d; want true, 8", enabled, rev)
	}
	s2 := must(Open(b, Options{BcryptCost: 4}))
	if e2, r2 := s2.Status(); e2 != enabled || r2 != rev {
		t.Fatalf("reloaded status = %v, %d; want %v, %d", e2, r2, enabled, rev)
	}
	for _, st := range []*Store{s, s2} {
		if err := decide(st, policyabi.OpPut, "alice", policyabi.PermWrite, "a/1", ""); err != nil {
			t.Errorf("alice put a/1: %v", err)
		}
		if err := decide(st, policyabi.OpPut, "alice", policyabi.PermWrite, "k", ""); !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("alice put k: %v, want permission denied", err)
		}
		if err := decide(st, policyabi.OpAdmin, "root", 0, "", ""); err != nil {
			t.Errorf("root admin: %v", err)
		}
		if _, err := st.CheckPassword("alice", "alicepw"); err != nil {
			t.Errorf("alice password: %v", err)
		}
		if got := must(st.UserList(nil)).Users; !slices.Equal(got, []string{"alice", "root"}) {
			t.Errorf("users = %v", got)
		}
	}
	// Deletions persist too.
	must(s.RoleDelete(b, &pb.AuthRoleDeleteRequest{Role: "ra"}))
	must(s.UserDelete(b, &pb.AuthUserDeleteRequest{Name: "alice"}))
	ok(t, s.AuthDisable(b))
	s3 := must(Open(b, Options{BcryptCost: 4}))
	if e3, r3 := s3.Status(); e3 || r3 != 11 {
		t.Errorf("after deletes: status = %v, %d; want false, 11", e3, r3)
	}
	if got := must(s3.RoleList(nil)).Roles; len(got) != 0 {
		t.Errorf("roles = %v, want none", got)
	}
	if _, err := s3.UserGet(&pb.AuthUserGetRequest{Name: "alice"}); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("UserGet(alice) = %v", err)
	}
}

func TestAuthorizeEtcdErrors(t *testing.T) {
	s := newTestStore(t)
	for _, c := range []struct {
		op       Op
		user     string
		perm     Perm
		key, end string
		want     error
		comment  string
	}{
		{policyabi.OpRange, "", policyabi.PermRead, "a/1", "", ErrUserEmpty, "no user"},
		{policyabi.OpRange, "nobody", policyabi.PermRead, "a/1", "", ErrPermissionDenied, "unknown user"},
		{policyabi.OpRange, "alice", policyabi.PermRead, "k", "", nil, "granted key"},
		{policyabi.OpPut, "alice", policyabi.PermWrite, "k", "", ErrPermissionDenied, "read-only key"},
		{policyabi.OpRange, "root", policyabi.PermRead, "anything", "\x00", nil, "root"},
		{policyabi.OpAdmin, "", 0, "", "", ErrUserEmpty, "admin without user"},
		{policyabi.OpAdmin, "nobody", 0, "", "", ErrUserNotFound, "admin unknown user"},
		{policyabi.OpAdmin, "alice", 0, "", "", ErrPermissionDenied, "admin non-root"},
	} {
		if err := decide(s, c.op, c.user, c.perm, c.key, c.end); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.comment, err, c.want)
		}
	}
	var empty Request
	empty.Reset(policyabi.OpTxn, "")
	if err := Check(context.Background(), s, &empty); err != nil {
		t.Errorf("an empty txn needs no user in etcd; got %v", err)
	}
}

func TestChain(t *testing.T) {
	s := newTestStore(t)
	fixed := func(d Decision, err error) Authorizer {
		return authorizerFunc(func() (Decision, error) { return d, err })
	}
	reason := errors.New("policy: frozen")
	for _, c := range []struct {
		name  string
		chain Chain
		user  string
		want  error
	}{
		{"rbac alone allows", Chain{s}, "alice", nil},
		{"no opinion falls through to rbac", Chain{fixed(NoOpinion, nil), s}, "alice", nil},
		{"deny first wins", Chain{fixed(Deny, reason), s}, "alice", reason},
		{"deny without reason", Chain{fixed(Deny, nil), s}, "alice", ErrPermissionDenied},
		{"allow first wins over rbac", Chain{fixed(Allow, nil), s}, "nobody", nil},
		{"all no opinion denies", Chain{fixed(NoOpinion, nil)}, "alice", ErrPermissionDenied},
		{"empty chain denies", Chain{}, "alice", ErrPermissionDenied},
	} {
		if err := decide(c.chain, policyabi.OpPut, c.user, policyabi.PermWrite, "a/1", ""); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

type authorizerFunc func() (Decision, error)

func (f authorizerFunc) Authorize(context.Context, *Request) (Decision, error) { return f() }

func TestDisabledAllowsEverything(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	ok(t, s.AuthDisable(b))
	if err := decide(s, policyabi.OpPut, "", policyabi.PermWrite, "x", ""); err != nil {
		t.Errorf("disabled: %v", err)
	}
	if err := s.IsAdmin(""); err != nil {
		t.Errorf("disabled admin: %v", err)
	}
	if _, err := s.CheckPassword("root", "rootpw"); !errors.Is(err, ErrAuthNotEnabled) {
		t.Errorf("CheckPassword while disabled: %v", err)
	}
}

func TestStale(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	_, rev := s.Status()
	if s.Stale(rev) {
		t.Error("current revision is stale")
	}
	if !s.Stale(0) {
		t.Error("a request authorized while auth was disabled is not stale now that it is enabled")
	}
	ok(t, s.AuthDisable(b))
	if s.Stale(rev) || s.Stale(0) {
		t.Error("nothing is stale while auth is disabled")
	}
	ok(t, s.AuthEnable(b))
	if !s.Stale(rev) {
		t.Error("a request authorized before a disable/enable cycle is not stale")
	}
}
