package compat

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestRequestSize: requests over --max-request-bytes (1.5 MiB by default)
// fail with ErrRequestTooLarge and change nothing; far larger ones are
// refused by gRPC's receive limit (max-request-bytes + 512 KiB).
func TestRequestSize(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		big := strings.Repeat("x", 1024*1024)
		p := e.mustPut("one-mib", big)
		e.wantRev(p.Header, 2)
		_, err := e.Put(&pb.PutRequest{Key: []byte("too-large"), Value: []byte(strings.Repeat("y", 1600*1024))})
		e.wantErr(err, rpctypes.ErrGRPCRequestTooLarge)
		_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("t1", big[:800*1024]), opPut("t2", big[:800*1024])}})
		e.wantErr(err, rpctypes.ErrGRPCRequestTooLarge)
		_, err = e.Put(&pb.PutRequest{Key: []byte("far-too-large"), Value: []byte(strings.Repeat("z", 3*1024*1024))})
		if status.Code(err) != codes.ResourceExhausted {
			e.t.Errorf("3 MiB put: %v, want code ResourceExhausted", err)
		}
		r := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), KeysOnly: true})
		e.wantRev(r.Header, 2)
		e.wantKeys(r.Kvs, "one-mib")
	})
}
