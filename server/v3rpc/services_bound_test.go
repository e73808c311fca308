package v3rpc

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

type boundImpl struct{ name string }

func (b *boundImpl) call(_ context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return &pb.RangeResponse{Count: int64(len(b.name) + len(r.Key))}, nil
}

// TestRPCUnaryBound: the interceptor sees the method and the implementation
// of each call, and its handler calls that implementation, also when two
// implementations take turns (the bound info and handler are rebuilt).
func TestRPCUnaryBound(t *testing.T) {
	desc := rpcUnary("svc", "M", (*boundImpl).call)
	a, b := &boundImpl{name: "a"}, &boundImpl{name: "bbb"}
	dec := func(v any) error { v.(*pb.RangeRequest).Key = []byte("k"); return nil }
	for i, impl := range []*boundImpl{a, a, b, a, b, b} {
		var seen *grpc.UnaryServerInfo
		ic := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen = info
			return h(ctx, req)
		}
		resp, err := desc.Handler(impl, context.Background(), dec, ic)
		if err != nil {
			t.Fatal(err)
		}
		if seen.FullMethod != "/svc/M" || seen.Server != impl {
			t.Errorf("call %d: interceptor saw %q on %v, want /svc/M on %v", i, seen.FullMethod, seen.Server, impl)
		}
		if got, want := resp.(*pb.RangeResponse).Count, int64(len(impl.name)+1); got != want {
			t.Errorf("call %d: handler reached the wrong implementation (count %d, want %d)", i, got, want)
		}
	}
}
