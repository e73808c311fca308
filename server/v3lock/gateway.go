package v3lock

import (
	"context"
	"errors"
	"io"
	"net/http"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/runtime/protoiface"
	"google.golang.org/protobuf/runtime/protoimpl"

	cpb "github.com/metastore-dev/metastore/server/v3lock/v3lockpb"
)

// RegisterGateway adds etcd's v3lock and v3election gateway
// routes (their generated gw packages live in etcd's server module): each
// a POST of the request as JSON, answered like every other route, and
// /v3/election/observe as a stream of JSON objects.
func RegisterGateway(mux *gwruntime.ServeMux, conn *grpc.ClientConn) error {
	lock, election := cpb.NewLockClient(conn), cpb.NewElectionClient(conn)
	routes := []struct {
		path, method string
		h            gwCall
	}{
		{"/v3/lock/lock", "/v3lockpb.Lock/Lock", gwUnary(lock.Lock)},
		{"/v3/lock/unlock", "/v3lockpb.Lock/Unlock", gwUnary(lock.Unlock)},
		{"/v3/election/campaign", "/v3electionpb.Election/Campaign", gwUnary(election.Campaign)},
		{"/v3/election/proclaim", "/v3electionpb.Election/Proclaim", gwUnary(election.Proclaim)},
		{"/v3/election/leader", "/v3electionpb.Election/Leader", gwUnary(election.Leader)},
		{"/v3/election/observe", "/v3electionpb.Election/Observe", gwObserve(election)},
		{"/v3/election/resign", "/v3electionpb.Election/Resign", gwUnary(election.Resign)},
	}
	for _, r := range routes {
		if err := mux.HandlePath(http.MethodPost, r.path, gwAnnotated(mux, r.method, r.path, r.h)); err != nil {
			return err
		}
	}
	return nil
}

// gwCall is one route's work once the context carries the forwarded
// metadata.
type gwCall func(ctx context.Context, mux *gwruntime.ServeMux, in, out gwruntime.Marshaler, w http.ResponseWriter, req *http.Request)

// gwAnnotated does what every generated route does first: pick the
// marshalers and turn the HTTP request's headers into gRPC metadata
// (Authorization included) for method.
func gwAnnotated(mux *gwruntime.ServeMux, method, path string, call gwCall) gwruntime.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request, _ map[string]string) {
		ctx, cancel := context.WithCancel(req.Context())
		defer cancel()
		in, out := gwruntime.MarshalerForRequest(mux, req)
		actx, err := gwruntime.AnnotateContext(ctx, mux, req, method, gwruntime.WithHTTPPathPattern(path))
		if err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		call(actx, mux, in, out, w, req)
	}
}

// gwDecode reads the request body into m; an empty body is an empty
// request, a malformed one InvalidArgument.
func gwDecode(in gwruntime.Marshaler, req *http.Request, m protoiface.MessageV1) error {
	if err := in.NewDecoder(req.Body).Decode(protoimpl.X.ProtoMessageV2Of(m)); err != nil && !errors.Is(err, io.EOF) {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return nil
}

// gwUnary serves a unary method.
func gwUnary[Req, Resp any, PReq interface {
	*Req
	protoiface.MessageV1
}, PResp interface {
	*Resp
	protoiface.MessageV1
}](call func(context.Context, PReq, ...grpc.CallOption) (PResp, error)) gwCall {
	return func(ctx context.Context, mux *gwruntime.ServeMux, in, out gwruntime.Marshaler, w http.ResponseWriter, req *http.Request) {
		var md gwruntime.ServerMetadata
		r := PReq(new(Req))
		if err := gwDecode(in, req, r); err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		resp, err := call(ctx, r, grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
		ctx = gwruntime.NewServerMetadataContext(ctx, md)
		if err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		gwruntime.ForwardResponseMessage(ctx, mux, out, w, req, protoimpl.X.ProtoMessageV2Of(resp), mux.GetForwardResponseOptions()...)
	}
}

// gwObserve serves the Observe stream.
func gwObserve(c cpb.ElectionClient) gwCall {
	return func(ctx context.Context, mux *gwruntime.ServeMux, in, out gwruntime.Marshaler, w http.ResponseWriter, req *http.Request) {
		r := new(cpb.LeaderRequest)
		if err := gwDecode(in, req, r); err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		stream, err := c.Observe(ctx, r)
		if err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		var md gwruntime.ServerMetadata
		if md.HeaderMD, err = stream.Header(); err != nil {
			gwruntime.HTTPError(ctx, mux, out, w, req, err)
			return
		}
		ctx = gwruntime.NewServerMetadataContext(ctx, md)
		gwruntime.ForwardResponseStream(ctx, mux, out, w, req, func() (proto.Message, error) {
			m, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			return protoimpl.X.ProtoMessageV2Of(m), nil
		}, mux.GetForwardResponseOptions()...)
	}
}
