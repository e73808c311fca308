package policy_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/policies/policy"
	"github.com/metastore-dev/metastore/policies/policy/policytest"
	"github.com/metastore-dev/metastore/wasmhost"
)

// TestRequestMatchesHostEncoding decodes what wasmhost encodes: the SDK and
// the host agree on the ABI byte for byte.
func TestRequestMatchesHostEncoding(t *testing.T) {
	hreq := &wasmhost.Request{
		Op: policy.OpTxn, Flags: policy.FlagSerializable | policy.FlagPrevKV, Revision: -5,
		User: "alice", Roles: []string{"a", "", "ccc"}, Tenant: "team-a", TenantKeys: 12, TenantBytes: 1 << 40,
		Ranges: []wasmhost.Range{
			{Perm: policy.PermRead, Key: []byte("k"), End: []byte{0}},
			{Perm: policy.PermWrite, Key: []byte("/a/"), End: []byte("/a0")},
			{Perm: policy.PermWrite, Key: []byte{}},
		},
	}
	enc, err := wasmhost.AppendAdmission(nil, hreq, policy.AdmitTxn, []byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	preq := policytest.Request{
		Op: policy.OpTxn, Flags: policy.FlagSerializable | policy.FlagPrevKV, Revision: -5,
		User: "alice", Roles: []string{"a", "", "ccc"}, Tenant: "team-a", TenantKeys: 12, TenantBytes: 1 << 40,
		Ranges: []policy.Range{
			{Perm: policy.PermRead, Key: []byte("k"), End: []byte{0}},
			{Perm: policy.PermWrite, Key: []byte("/a/"), End: []byte("/a0")},
			{Perm: policy.PermWrite},
		},
	}
	if got := preq.EncodeAdmission(policy.AdmitTxn, []byte("msg")); !bytes.Equal(got, enc) {
		t.Fatalf("policytest encoding differs from the host's:\n%x\n%x", got, enc)
	}

	var seen *policy.Request
	var adm policy.Admission
	policy.HandleAdmit(func(r *policy.Request, a policy.Admission) policy.Result {
		seen, adm = r, a
		return policy.Allow()
	})
	defer policy.HandleAdmit(nil)
	if v, reason, _ := policy.RunAdmit(enc); v != policy.VerdictAllow {
		t.Fatalf("admit: %v %s", v, reason)
	}
	keys, byts := seen.TenantUsage()
	if seen.Op() != policy.OpTxn || seen.Flags() != hreq.Flags || seen.Revision() != -5 || string(seen.User()) != "alice" ||
		string(seen.Tenant()) != "team-a" || keys != 12 || byts != 1<<40 || len(seen.Roles()) != 3 ||
		string(seen.Roles()[2]) != "ccc" || !seen.HasRole("") || seen.HasRole("b") {
		t.Fatalf("decoded header wrong: %+v", seen)
	}
	rs := seen.Ranges()
	if len(rs) != 3 || !rs[0].IsFromKey() || string(rs[1].End) != "/a0" || !rs[2].IsSingleKey() || rs[1].Perm != policy.PermWrite {
		t.Fatalf("decoded ranges wrong: %+v", rs)
	}
	if adm.Kind != policy.AdmitTxn || string(adm.Message) != "msg" {
		t.Fatalf("admission %+v", adm)
	}
}

func TestMalformedRequests(t *testing.T) {
	policy.HandleAuthorize(func(*policy.Request) policy.Result { return policy.Allow() })
	defer policy.HandleAuthorize(nil)
	enc := policytest.Request{User: "u", Roles: []string{"r"}, Ranges: []policy.Range{{Key: []byte("k")}}}.Encode()
	for n := 0; n < len(enc); n++ {
		if v, _ := policy.RunAuthorize(enc[:n]); v != policy.VerdictDeny {
			t.Fatalf("truncated to %d bytes: %v", n, v)
		}
	}
	if v, _ := policy.RunAuthorize(enc); v != policy.VerdictAllow {
		t.Fatal(v)
	}
}

func TestNoHandler(t *testing.T) {
	if v, reason := policy.RunAuthorize(policytest.Request{}.Encode()); v != policy.VerdictDeny || reason == "" {
		t.Fatalf("%v %q", v, reason)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range [][2]string{{"a", "b"}, {"/a/", "/a0"}, {"a\xff", "b"}, {"\xff\xff", "\x00"}, {"", "\x00"}} {
		if got := policy.PrefixEnd([]byte(tc[0])); string(got) != tc[1] {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc[0], got, tc[1])
		}
	}
}

// TestRangeHelpersAgainstBruteForce checks Contains, Within and Overlaps
// against enumeration over a small alphabet.
func TestRangeHelpersAgainstBruteForce(t *testing.T) {
	alphabet := []byte{0x00, 'a', 'b', 0xfe, 0xff}
	var keys [][]byte
	var gen func(prefix []byte, depth int)
	gen = func(prefix []byte, depth int) {
		keys = append(keys, bytes.Clone(prefix))
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c), depth-1)
		}
	}
	gen(nil, 3)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() []byte { return keys[rng.IntN(len(keys))] }
	for i := 0; i < 3000; i++ {
		rg := policy.Range{Key: pick()}
		switch rng.IntN(3) {
		case 1:
			rg.End = []byte{0}
		case 2:
			rg.End = pick()
		}
		if len(rg.Key) == 0 && len(rg.End) == 0 {
			continue
		}
		prefix := pick()
		within, overlaps := true, false
		for _, k := range keys {
			if !rg.Contains(k) {
				continue
			}
			if bytes.HasPrefix(k, prefix) {
				overlaps = true
			} else {
				within = false
			}
		}
		// Enumeration stops at depth 3: a from-key or wide range also holds
		// longer keys, which can break "within" for a prefix with an end.
		if rg.IsFromKey() && !bytes.Equal(policy.PrefixEnd(prefix), []byte{0}) {
			within = false
		}
		if !rg.IsSingleKey() && !rg.IsFromKey() && bytes.Compare(rg.End, rg.Key) > 0 {
			// [Key, End) holds longer keys too: decide with the bound.
			pe := policy.PrefixEnd(prefix)
			within = bytes.Compare(rg.Key, prefix) >= 0 && (bytes.Equal(pe, []byte{0}) || bytes.Compare(rg.End, pe) <= 0)
		}
		if got := rg.Within(prefix); got != within {
			t.Fatalf("%q-%q Within(%q) = %v, want %v", rg.Key, rg.End, prefix, got, within)
		}
		if got := rg.Overlaps(prefix); got != overlaps {
			t.Fatalf("%q-%q Overlaps(%q) = %v, want %v", rg.Key, rg.End, prefix, got, overlaps)
		}
	}
}

// TestProtoAgainstEtcd round-trips the admission messages through etcd's
// generated code both ways.
func TestProtoAgainstEtcd(t *testing.T) {
	put := &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 42, PrevKv: true, IgnoreLease: true}
	del := &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, PrevKv: true}
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{
			{Result: pb.Compare_GREATER, Target: pb.Compare_MOD, Key: []byte("k"), TargetUnion: &pb.Compare_ModRevision{ModRevision: 0}},
			{Target: pb.Compare_VALUE, Key: []byte("k"), RangeEnd: []byte("z"), TargetUnion: &pb.Compare_Value{Value: []byte("x")}},
			{Target: pb.Compare_LEASE, Key: []byte("k"), TargetUnion: &pb.Compare_Lease{Lease: 9}},
		},
		Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: put}},
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("r"), Limit: 3, Revision: 7, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD, Serializable: true, KeysOnly: true, CountOnly: true, MinModRevision: 1, MaxModRevision: 2, MinCreateRevision: 3, MaxCreateRevision: 4}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{}}},
		},
		Failure: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: del}},
			{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: put}}}}}},
		},
	}
	for _, m := range []interface {
		Marshal() ([]byte, error)
		Unmarshal([]byte) error
	}{put, del, txn} {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var again []byte
		var into interface{ Unmarshal([]byte) error }
		switch m.(type) {
		case *pb.PutRequest:
			p, err := policy.DecodePutRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			again, into = p.Marshal(nil), &pb.PutRequest{}
		case *pb.DeleteRangeRequest:
			d, err := policy.DecodeDeleteRangeRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			again, into = d.Marshal(nil), &pb.DeleteRangeRequest{}
		case *pb.TxnRequest:
			x, err := policy.DecodeTxnRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			again, into = x.Marshal(nil), &pb.TxnRequest{}
		}
		if !bytes.Equal(again, b) {
			t.Errorf("%T: re-encoding differs\n%x\n%x", m, again, b)
		}
		if err := into.Unmarshal(again); err != nil {
			t.Errorf("%T: etcd cannot read our encoding: %v", m, err)
		}
	}
}

func FuzzDecodeTxn(f *testing.F) {
	txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k")}}}}}
	b, _ := txn.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := policy.DecodeTxnRequest(b)
		if err != nil {
			return
		}
		// Whatever we decode, we can encode and decode again identically.
		enc := x.Marshal(nil)
		y, err := policy.DecodeTxnRequest(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(y.Marshal(nil), enc) {
			t.Fatal("not stable")
		}
	})
}

func FuzzRequest(f *testing.F) {
	f.Add(policytest.Request{User: "u", Roles: []string{"r"}, Ranges: []policy.Range{{Key: []byte("k")}}}.EncodeAdmission(policy.AdmitPut, []byte("x")))
	policy.HandleAdmit(func(r *policy.Request, a policy.Admission) policy.Result {
		for _, rg := range r.Ranges() {
			_ = rg.Within([]byte("/a/"))
		}
		_, _ = a.Put()
		return policy.Allow()
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		policy.RunAdmit(b)
		_, adm, err := wasmhost.DecodeRequest(b)
		if err == nil && adm == nil {
			return
		}
	})
}
