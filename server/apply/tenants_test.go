package apply

import (
	"log/slog"
	"math/rand/v2"
	"strconv"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/mvcc"
)

type tenantFixture struct {
	t     *testing.T
	dir   string
	store *mvcc.Store
	a     *Applier
}

func openTenants(t *testing.T, dir string, tenants []Tenant) *tenantFixture {
	t.Helper()
	st, err := mvcc.Open(dir, mvcc.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(st, Options{Tenants: tenants})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return &tenantFixture{t: t, dir: dir, store: st, a: a}
}

func (f *tenantFixture) apply(r *Request) {
	f.t.Helper()
	b, err := f.store.NewBatch()
	if err != nil {
		f.t.Fatal(err)
	}
	res := f.a.Apply(b, r)
	if err := b.Commit(); err != nil {
		f.t.Fatal(err)
	}
	if res.Err != nil {
		f.t.Fatalf("apply %v: %v", r, res.Err)
	}
}

func (f *tenantFixture) want(name string, keys, bytes int64) {
	f.t.Helper()
	k, b, err := f.a.Usage(name)
	if err != nil || k != keys || b != bytes {
		f.t.Fatalf("%s usage = %d keys %d bytes (%v), want %d keys %d bytes", name, k, b, err, keys, bytes)
	}
}

func putReq(k, v string) *Request {
	return &Request{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}
}

func TestTenantUsage(t *testing.T) {
	dir := t.TempDir()
	tenants := []Tenant{{Name: "a", Prefix: []byte("/a/")}, {Name: "b", Prefix: []byte("/b/")}}
	f := openTenants(t, dir, tenants)
	f.apply(putReq("/a/x", "12345")) // 4+5
	f.apply(putReq("/a/y", "1"))     // 4+1
	f.apply(putReq("/c/z", "ignored"))
	f.want("a", 2, 14)
	f.want("b", 0, 0)
	f.apply(putReq("/a/x", "12")) // overwrite: -3
	f.want("a", 2, 11)
	if name, k, b := f.a.TenantUsage([]byte("/a/anything")); name != "a" || k != 2 || b != 11 {
		t.Fatalf("TenantUsage: %s %d %d", name, k, b)
	}
	// A txn: both tenants, puts and a delete; only the taken branch counts.
	f.apply(&Request{Txn: &pb.TxnRequest{
		Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("/b/1"), Value: []byte("v")}}},
			{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("/a/y")}}},
		},
		Failure: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("/b/2"), Value: []byte("v")}}},
		},
	}})
	f.want("a", 1, 6)
	f.want("b", 1, 5)
	// A delete of a whole range.
	f.apply(&Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("/"), RangeEnd: []byte{0}}})
	f.want("a", 0, 0)
	f.want("b", 0, 0)
	f.apply(putReq("/b/k", "vv"))
	f.store.Close()

	// The counts are persisted with the writes.
	f = openTenants(t, dir, tenants)
	f.want("b", 1, 6)

	// A tenant whose prefix changed, and a new one, are counted from the
	// store.
	f.apply(putReq("/c/z", "1234567"))
	f.store.Close()
	f = openTenants(t, dir, []Tenant{{Name: "b", Prefix: []byte("/")}, {Name: "new", Prefix: []byte("/c/")}})
	f.want("b", 2, 6+11)
	f.want("new", 1, 11)
	if _, _, err := f.a.Usage("a"); err != ErrTenantUnknown {
		t.Fatalf("removed tenant: %v", err)
	}
	f.store.Close()
}

// TestTenantUsageMatchesCount applies random writes and checks the counters
// against a fresh count of the store.
func TestTenantUsageMatchesCount(t *testing.T) {
	dir := t.TempDir()
	tenants := []Tenant{{Name: "t", Prefix: []byte("/t/")}}
	f := openTenants(t, dir, tenants)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		k := "/t/" + strconv.Itoa(rng.IntN(40))
		switch rng.IntN(4) {
		case 0:
			f.apply(&Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}})
		case 1:
			f.apply(&Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(k + "5")}})
		default:
			f.apply(putReq(k, string(make([]byte, rng.IntN(100)))))
		}
	}
	keys, byts, err := countPrefix(f.store, []byte("/t/"))
	if err != nil {
		t.Fatal(err)
	}
	f.want("t", keys, byts)
	f.store.Close()
}

// TestSetTenants: a reload keeps the counts of unchanged tenants (even
// ones the store could not recount cheaply), counts a new tenant and a
// moved prefix from the store through Loop.SetTenants, forgets a removed one (its
// record too), and the counts survive a restart.
func TestSetTenants(t *testing.T) {
	dir := t.TempDir()
	f := openTenants(t, dir, []Tenant{{Name: "a", Prefix: []byte("/a/")}, {Name: "gone", Prefix: []byte("/g/")}})
	l, err := NewLoop(f.store, f.a, LoopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	propose := func(r *Request) {
		t.Helper()
		if res, err := l.Propose(ctx, r); err != nil || res.Err != nil {
			t.Fatalf("propose: %v %v", err, res.Err)
		}
	}
	propose(putReq("/a/x", "12345")) // 9
	propose(putReq("/b/x", "1"))     // 5: no tenant yet
	propose(putReq("/g/x", "1"))
	// Mark a's counter so a recount would show: a kept tenant is not recounted.
	f.a.tenants.Load().of([]byte("/a/")).bytes.Add(1000)
	next := []Tenant{{Name: "a", Prefix: []byte("/a/")}, {Name: "b", Prefix: []byte("/b/")}}
	if err := l.SetTenants(ctx, next); err != nil {
		t.Fatal(err)
	}
	f.want("a", 1, 1009)
	f.want("b", 1, 5)
	if _, _, err := f.a.Usage("gone"); err != ErrTenantUnknown {
		t.Fatalf("removed tenant: %v", err)
	}
	if raw, _ := f.store.Meta(metaTenant("gone")); raw != nil {
		t.Fatal("the removed tenant's record is left")
	}
	propose(putReq("/b/y", "22")) // accounted from the next write on: 4+2
	f.want("b", 2, 11)
	// A moved prefix is recounted.
	moved := []Tenant{{Name: "a", Prefix: []byte("/a/")}, {Name: "b", Prefix: []byte("/g/")}}
	if err := l.SetTenants(ctx, moved); err != nil {
		t.Fatal(err)
	}
	f.want("b", 1, 5)
	l.Stop()
	f.store.Close()
	f = openTenants(t, dir, moved)
	defer f.store.Close()
	f.want("a", 1, 9) // as last persisted (the marker above never was)
	f.want("b", 1, 5)
}
