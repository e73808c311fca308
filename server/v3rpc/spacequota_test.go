package v3rpc

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestQuotaCost(t *testing.T) {
	put := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	get := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}}
	for _, tc := range []struct {
		name string
		txn  *pb.TxnRequest
		want int64
	}{
		{"read-only", &pb.TxnRequest{Success: []*pb.RequestOp{get}}, 0},
		{"success", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", "bb"), get}}, 256 + 3},
		{"costlier failure", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", "")}, Failure: []*pb.RequestOp{put("a", "b"), put("c", "dd")}}, 256 + 2 + 256 + 3},
		{"nested", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", ""), {Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
			Success: []*pb.RequestOp{put("x", "y")}, Failure: []*pb.RequestOp{put("long", "value!")},
		}}}}}, 256 + 1 + 256 + 10},
	} {
		if got := quotaCostTxn(tc.txn); got != tc.want {
			t.Errorf("%s: cost %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := quotaCostPut(&pb.PutRequest{Key: []byte("key"), Value: []byte("value"), Lease: 5}); got != 256+8 {
		t.Errorf("put cost %d, want %d", got, 256+8)
	}
}
