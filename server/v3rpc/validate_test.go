package v3rpc

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func putOp(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
}

func delOp(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func txnOp(then, els []*pb.RequestOp) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: then, Failure: els}}}
}

func TestCheckIntervals(t *testing.T) {
	tests := []struct {
		name string
		ops  []*pb.RequestOp
		dup  bool
	}{
		{"distinct puts", []*pb.RequestOp{putOp("a"), putOp("b")}, false},
		{"same put twice", []*pb.RequestOp{putOp("a"), putOp("a")}, true},
		{"put inside deleted range", []*pb.RequestOp{delOp("a", "c"), putOp("b")}, true},
		{"put at range end is outside", []*pb.RequestOp{delOp("a", "c"), putOp("c")}, false},
		{"put and single delete", []*pb.RequestOp{putOp("a"), delOp("a", "")}, true},
		{"overlapping deletes are fine", []*pb.RequestOp{delOp("a", "c"), delOp("b", "")}, false},
		// etcd compares "\x00" literally, so a from-key delete overlaps nothing.
		{"from-key delete overlaps nothing", []*pb.RequestOp{delOp("a", "\x00"), putOp("b")}, false},
		{"nested branches may share a key", []*pb.RequestOp{txnOp([]*pb.RequestOp{putOp("a")}, []*pb.RequestOp{putOp("a")})}, false},
		{"nested put clashes with outer put", []*pb.RequestOp{putOp("a"), txnOp([]*pb.RequestOp{putOp("a")}, nil)}, true},
		{"nested else put clashes with outer put", []*pb.RequestOp{putOp("a"), txnOp(nil, []*pb.RequestOp{putOp("a")})}, true},
		{"nested delete covers outer put", []*pb.RequestOp{putOp("b"), txnOp([]*pb.RequestOp{delOp("a", "c")}, nil)}, true},
		{"outer delete covers nested put", []*pb.RequestOp{delOp("a", "c"), txnOp([]*pb.RequestOp{putOp("b")}, nil)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := checkIntervals(tt.ops)
			if tt.dup && err != rpctypes.ErrGRPCDuplicateKey {
				t.Fatalf("err = %v, want ErrGRPCDuplicateKey", err)
			}
			if !tt.dup && err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
		})
	}
}

func TestCheckTxnRequestOps(t *testing.T) {
	ops := func(n int) []*pb.RequestOp {
		out := make([]*pb.RequestOp, n)
		for i := range out {
			out[i] = putOp(string(rune('a' + i%26)))
		}
		return out
	}
	if err := checkTxnRequest(&pb.TxnRequest{Success: ops(3)}, 3); err != nil {
		t.Fatalf("3 ops with limit 3: %v", err)
	}
	if err := checkTxnRequest(&pb.TxnRequest{Failure: ops(4)}, 3); err != rpctypes.ErrGRPCTooManyOps {
		t.Fatalf("4 ops with limit 3: %v", err)
	}
	// A nested txn gets the budget its parent left: 2 outer, so 1 inner.
	nested := &pb.TxnRequest{Success: append(ops(1), txnOp(ops(2), nil))}
	if err := checkTxnRequest(nested, 3); err != rpctypes.ErrGRPCTooManyOps {
		t.Fatalf("nested over budget: %v", err)
	}
	if err := checkTxnRequest(&pb.TxnRequest{Compare: []*pb.Compare{{}}}, 3); err != rpctypes.ErrGRPCEmptyKey {
		t.Fatalf("compare without key: %v", err)
	}
	if err := checkTxnRequest(&pb.TxnRequest{Success: []*pb.RequestOp{{}}}, 3); err != rpctypes.ErrGRPCKeyNotFound {
		t.Fatalf("empty op: %v", err)
	}
}
