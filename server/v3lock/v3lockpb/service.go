package v3lockpb

import (
	"context"

	"google.golang.org/grpc"
)

// Full service names, as etcd's generated code registers them.
const (
	LockServiceName     = "v3lockpb.Lock"
	ElectionServiceName = "v3electionpb.Election"
)

// LockServer is the server side of v3lockpb.Lock.
type LockServer interface {
	Lock(context.Context, *LockRequest) (*LockResponse, error)
	Unlock(context.Context, *UnlockRequest) (*UnlockResponse, error)
}

// ElectionServer is the server side of v3electionpb.Election.
type ElectionServer interface {
	Campaign(context.Context, *CampaignRequest) (*CampaignResponse, error)
	Proclaim(context.Context, *ProclaimRequest) (*ProclaimResponse, error)
	Leader(context.Context, *LeaderRequest) (*LeaderResponse, error)
	Observe(*LeaderRequest, ObserveServer) error
	Resign(context.Context, *ResignRequest) (*ResignResponse, error)
}

// ObserveServer is the server's side of one Observe stream.
type ObserveServer interface {
	Send(*LeaderResponse) error
	grpc.ServerStream
}

// unary builds a method handler that decodes a Req and calls f, through
// the server's interceptor if there is one.
func unary[S any, Req any, Resp any](full string, f func(S, context.Context, *Req) (*Resp, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return f(srv.(S), ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: full}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return f(srv.(S), ctx, req.(*Req))
		})
	}
}

var lockServiceDesc = grpc.ServiceDesc{
	ServiceName: LockServiceName,
	HandlerType: (*LockServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Lock", Handler: unary("/v3lockpb.Lock/Lock", LockServer.Lock)},
		{MethodName: "Unlock", Handler: unary("/v3lockpb.Lock/Unlock", LockServer.Unlock)},
	},
	Metadata: "v3lock.proto",
}

var electionServiceDesc = grpc.ServiceDesc{
	ServiceName: ElectionServiceName,
	HandlerType: (*ElectionServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Campaign", Handler: unary("/v3electionpb.Election/Campaign", ElectionServer.Campaign)},
		{MethodName: "Proclaim", Handler: unary("/v3electionpb.Election/Proclaim", ElectionServer.Proclaim)},
		{MethodName: "Leader", Handler: unary("/v3electionpb.Election/Leader", ElectionServer.Leader)},
		{MethodName: "Resign", Handler: unary("/v3electionpb.Election/Resign", ElectionServer.Resign)},
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Observe",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(LeaderRequest)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(ElectionServer).Observe(in, observeServer{stream})
		},
	}},
	Metadata: "v3election.proto",
}

type observeServer struct{ grpc.ServerStream }

func (s observeServer) Send(m *LeaderResponse) error { return s.ServerStream.SendMsg(m) }

// RegisterLockServer registers srv as the v3lockpb.Lock service.
func RegisterLockServer(r grpc.ServiceRegistrar, srv LockServer) {
	r.RegisterService(&lockServiceDesc, srv)
}

// RegisterElectionServer registers srv as the v3electionpb.Election service.
func RegisterElectionServer(r grpc.ServiceRegistrar, srv ElectionServer) {
	r.RegisterService(&electionServiceDesc, srv)
}

// LockClient calls v3lockpb.Lock over cc.
type LockClient struct{ cc grpc.ClientConnInterface }

// NewLockClient returns a client of the Lock service.
func NewLockClient(cc grpc.ClientConnInterface) LockClient { return LockClient{cc} }

// Lock calls Lock.
func (c LockClient) Lock(ctx context.Context, in *LockRequest, opts ...grpc.CallOption) (*LockResponse, error) {
	out := new(LockResponse)
	return out, c.cc.Invoke(ctx, "/v3lockpb.Lock/Lock", in, out, opts...)
}

// Unlock calls Unlock.
func (c LockClient) Unlock(ctx context.Context, in *UnlockRequest, opts ...grpc.CallOption) (*UnlockResponse, error) {
	out := new(UnlockResponse)
	return out, c.cc.Invoke(ctx, "/v3lockpb.Lock/Unlock", in, out, opts...)
}

// ElectionClient calls v3electionpb.Election over cc.
type ElectionClient struct{ cc grpc.ClientConnInterface }

// NewElectionClient returns a client of the Election service.
func NewElectionClient(cc grpc.ClientConnInterface) ElectionClient { return ElectionClient{cc} }

// Campaign calls Campaign.
func (c ElectionClient) Campaign(ctx context.Context, in *CampaignRequest, opts ...grpc.CallOption) (*CampaignResponse, error) {
	out := new(CampaignResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Campaign", in, out, opts...)
}

// Proclaim calls Proclaim.
func (c ElectionClient) Proclaim(ctx context.Context, in *ProclaimRequest, opts ...grpc.CallOption) (*ProclaimResponse, error) {
	out := new(ProclaimResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Proclaim", in, out, opts...)
}

// Leader calls Leader.
func (c ElectionClient) Leader(ctx context.Context, in *LeaderRequest, opts ...grpc.CallOption) (*LeaderResponse, error) {
	out := new(LeaderResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Leader", in, out, opts...)
}

// Resign calls Resign.
func (c ElectionClient) Resign(ctx context.Context, in *ResignRequest, opts ...grpc.CallOption) (*ResignResponse, error) {
	out := new(ResignResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Resign", in, out, opts...)
}

// Observe opens an Observe stream; each Recv returns the next leader.
func (c ElectionClient) Observe(ctx context.Context, in *LeaderRequest, opts ...grpc.CallOption) (*ObserveClient, error) {
	stream, err := c.cc.NewStream(ctx, &electionServiceDesc.Streams[0], "/v3electionpb.Election/Observe", opts...)
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(in); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return &ObserveClient{stream}, nil
}

// ObserveClient is the client's side of one Observe stream.
type ObserveClient struct{ grpc.ClientStream }

// Recv returns the next leader.
func (c *ObserveClient) Recv() (*LeaderResponse, error) {
	m := new(LeaderResponse)
	if err := c.ClientStream.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}
