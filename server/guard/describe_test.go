package guard

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
)

// fakeLeases has lease 7 with keys /l1 and /l2; user "root" is exempt.
type fakeLeases struct{}

func (fakeLeases) LeaseKeys(id int64) [][]byte {
	if id == 7 {
		return [][]byte{[]byte("/l1"), []byte("/l2")}
	}
	return nil
}

func (fakeLeases) LeaseExempt(user string) bool { return user == "root" }

func describe(user string, req any, leases Leases) string {
	var ar auth.Request
	Describe(&ar, user, req, leases)
	var b strings.Builder
	fmt.Fprintf(&b, "op=%d flags=%d rev=%d", ar.Op, ar.Flags, ar.Revision)
	for _, r := range ar.Ranges {
		fmt.Fprintf(&b, " %d[%s,%q)", r.Perm, r.Key, r.End)
	}
	return b.String()
}

// TestDescribe pins how each request shape becomes auth ranges, in etcd's
// order (1 = READ, 2 = WRITE).
func TestDescribe(t *testing.T) {
	put := func(k string, lease int64, prev bool) *pb.PutRequest {
		return &pb.PutRequest{Key: []byte(k), Lease: lease, PrevKv: prev}
	}
	op := func(r any) *pb.RequestOp {
		switch r := r.(type) {
		case *pb.PutRequest:
			return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
		case *pb.DeleteRangeRequest:
			return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}
		case *pb.RangeRequest:
			return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
		case *pb.TxnRequest:
			return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
		}
		panic("op")
	}
	for _, c := range []struct {
		name, user string
		req        any
		leases     Leases
		want       string
	}{
		{"range with options", "u", &pb.RangeRequest{Key: []byte("/a"), RangeEnd: []byte("/b"), Revision: 3, Serializable: true, KeysOnly: true, CountOnly: true}, nil,
			`op=1 flags=7 rev=3 1[/a,"/b")`},
		{"put", "u", put("/k", 0, false), fakeLeases{}, `op=2 flags=0 rev=0 2[/k,"")`},
		{"put prev_kv", "u", put("/k", 0, true), fakeLeases{}, `op=2 flags=8 rev=0 2[/k,"") 1[/k,"")`},
		{"put to a lease with keys", "u", put("/k", 7, true), fakeLeases{}, `op=2 flags=8 rev=0 2[/k,"") 2[/l1,"") 2[/l2,"") 1[/k,"")`},
		{"put to a lease as root", "root", put("/k", 7, false), fakeLeases{}, `op=2 flags=0 rev=0 2[/k,"")`},
		{"put to a lease, no lessor", "u", put("/k", 7, false), nil, `op=2 flags=0 rev=0 2[/k,"")`},
		{"delete prev_kv", "u", &pb.DeleteRangeRequest{Key: []byte("/d"), RangeEnd: []byte{0}, PrevKv: true}, nil,
			`op=3 flags=8 rev=0 2[/d,"\x00") 1[/d,"\x00")`},
		{"nested txn", "u", &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("/c"), RangeEnd: []byte("/d")}},
			Success: []*pb.RequestOp{op(put("/p", 7, false)), op(&pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("/n")}},
				Success: []*pb.RequestOp{op(&pb.DeleteRangeRequest{Key: []byte("/x"), PrevKv: true})},
			})},
			Failure: []*pb.RequestOp{op(&pb.RangeRequest{Key: []byte("/r")})},
		}, fakeLeases{},
			`op=4 flags=0 rev=0 1[/c,"/d") 2[/p,"") 2[/l1,"") 2[/l2,"") 1[/n,"") 1[/x,"") 2[/x,"") 1[/r,"")`},
		{"lease revoke", "u", &pb.LeaseRevokeRequest{ID: 7}, fakeLeases{}, `op=6 flags=0 rev=0 2[/l1,"") 2[/l2,"")`},
		{"lease revoke as root", "root", &pb.LeaseRevokeRequest{ID: 7}, fakeLeases{}, `op=6 flags=0 rev=0`},
	} {
		if got := describe(c.user, c.req, c.leases); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

// TestDescribeAllocs: describing a small request into a reused
// auth.Request allocates nothing (the authorization hot path).
func TestDescribeAllocs(t *testing.T) {
	var ar auth.Request
	r := &pb.PutRequest{Key: []byte("/k"), PrevKv: true}
	if n := testing.AllocsPerRun(100, func() {
		Describe(&ar, "u", r, fakeLeases{})
		ar.Release()
	}); n != 0 {
		t.Errorf("Describe allocates %v times per put", n)
	}
}
