package v3rpc

import (
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

// fuzzSeeds are marshalled requests the fuzzers start from.
func fuzzSeedTxns() []*pb.TxnRequest {
	rng := func(k, end string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(end), Limit: 2, SortOrder: 1, SortTarget: 3}}}
	}
	return []*pb.TxnRequest{
		{},
		{Success: []*pb.RequestOp{putOp("a"), putOp("b")}},
		{Success: []*pb.RequestOp{putOp("a"), putOp("a")}},
		{Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_ModRevision{ModRevision: 0}}},
			Success: []*pb.RequestOp{delOp("a", "c"), rng("a", "\x00")}, Failure: []*pb.RequestOp{putOp("b")}},
		{Success: []*pb.RequestOp{txnOp([]*pb.RequestOp{putOp("x")}, []*pb.RequestOp{putOp("x"), delOp("y", "")})}},
		{Compare: []*pb.Compare{{Key: []byte("k"), RangeEnd: []byte("l"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: []byte("v")}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), IgnoreValue: true, PrevKv: true}}}}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 99}}}}},
	}
}

// isRPCError reports whether err is a gRPC status (what the edge checks
// return: etcd's rpctypes values) with a code other than Unknown.
func isRPCError(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() != codes.Unknown && st.Code() != codes.OK
}

// FuzzTxnValidation feeds arbitrary protobuf bytes as a TxnRequest
// through the edge checks (etcd's order: op counts, empty keys, sort
// options, duplicate keys) and then, if they pass, through Apply on a
// real store, as etcd's validationfuzz does: the checks never panic and
// refuse only with an rpctypes error, and a request they let through never
// panics the applier nor fails with anything but a domain error.
func FuzzTxnValidation(f *testing.F) {
	for _, r := range fuzzSeedTxns() {
		data, err := r.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	s, err := mvcc.Open("db", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	a, err := apply.New(s, apply.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.TxnRequest
		if err := r.Unmarshal(data); err != nil {
			return
		}
		err := checkTxnRequest(&r, 128)
		if err == nil {
			_, _, err = checkIntervals(r.Success)
		}
		if err == nil {
			_, _, err = checkIntervals(r.Failure)
		}
		if err != nil {
			if !isRPCError(err) {
				t.Fatalf("edge check refused with %v (%T), not an rpctypes error", err, err)
			}
			return
		}
		applyChecked(t, s, a, &apply.Request{Txn: &r})
	})
}

// FuzzRequestValidation does the same for single Range, Put and
// DeleteRange requests (the payload of a RequestOp).
func FuzzRequestValidation(f *testing.F) {
	for _, r := range fuzzSeedTxns() {
		for _, op := range append(r.Success, r.Failure...) {
			data, err := op.Marshal()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	s, err := mvcc.Open("db", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	a, err := apply.New(s, apply.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var op pb.RequestOp
		if err := op.Unmarshal(data); err != nil {
			return
		}
		var err error
		var req *apply.Request
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if err = checkRangeRequest(v.RequestRange); err == nil {
				tx, rerr := s.Read()
				if rerr != nil {
					t.Fatal(rerr)
				}
				_, rerr = apply.Range(context.Background(), tx, v.RequestRange)
				tx.End()
				checkDomainError(t, rerr)
			}
		case *pb.RequestOp_RequestPut:
			if err = checkPutRequest(v.RequestPut); err == nil {
				req = &apply.Request{Put: v.RequestPut}
			}
		case *pb.RequestOp_RequestDeleteRange:
			if err = checkDeleteRequest(v.RequestDeleteRange); err == nil {
				req = &apply.Request{DeleteRange: v.RequestDeleteRange}
			}
		default:
			return
		}
		if err != nil {
			if !isRPCError(err) {
				t.Fatalf("edge check refused with %v (%T), not an rpctypes error", err, err)
			}
			return
		}
		if req != nil {
			applyChecked(t, s, a, req)
		}
	})
}

// applyChecked applies r in a batch that is then discarded, and requires
// the outcome to be a response or a domain error.
func applyChecked(t *testing.T, s *mvcc.Store, a *apply.Applier, r *apply.Request) {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	res := a.Apply(b, r)
	if res.Err == nil && res.Resp == nil {
		t.Fatalf("Apply(%v) returned neither a response nor an error", r)
	}
	checkDomainError(t, res.Err)
}

func checkDomainError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, e := range grpcErrors {
		if errors.Is(err, e.err) {
			return
		}
	}
	t.Fatalf("error %v (%T) is not a domain error the edge maps", err, err)
}
