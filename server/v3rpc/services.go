package v3rpc

import (
	"context"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The service descriptions of etcd's Watch, Lease, Cluster, Maintenance and
// Auth services, written here rather than taken from the API module: its
// generated Register functions accept only a *grpc.Server, and the lean
// transport (server/serve/h2grpc) must be handed the same descriptions.
// Names and stream kinds are those of etcd's rpc.proto.

// Transport is what a gRPC transport needs from the services besides their
// registration: the codec, the interceptors and the message limits.
type Transport struct {
	Codec             encoding.CodecV2
	UnaryInterceptor  grpc.UnaryServerInterceptor
	StreamInterceptor grpc.StreamServerInterceptor
	MaxRecvMsgSize    int
	MaxSendMsgSize    int
	// DeferRead is Server.DeferRead on a cluster member, nil on a single
	// member (its reads never wait).
	DeferRead func(ctx context.Context, path string, msg []byte, run func(context.Context)) bool
}

// Transport returns the services' codec, interceptors and limits.
func (s *Server) Transport() Transport {
	t := Transport{
		Codec:             s.serverCodec(),
		UnaryInterceptor:  s.unaryInterceptor,
		StreamInterceptor: s.streamInterceptor,
		MaxRecvMsgSize:    s.cfg.Limits.MaxRequestBytes + grpcOverheadBytes,
		MaxSendMsgSize:    maxSendMsgSize(s.cfg.Limits),
	}
	if s.raft != nil {
		t.DeferRead = s.DeferRead
	}
	return t
}

// RegisterServices registers etcd's six services (KV with etcd 3.7's
// RangeStream) and gRPC health on r, a grpc.Server or the lean transport.
func (s *Server) RegisterServices(r grpc.ServiceRegistrar) {
	r.RegisterService(&kvServiceDesc, &kvServer{s: s})
	r.RegisterService(&maintenanceServiceDesc, &maintenanceServer{s: s})
	r.RegisterService(&clusterServiceDesc, &clusterServer{s: s})
	r.RegisterService(&authServiceDesc, &authServer{s: s})
	r.RegisterService(&watchServiceDesc, s.watch)
	r.RegisterService(&leaseServiceDesc, &leaseServer{s: s})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(r, hs)
}

// rpcUnary is one unary method of service svc on an implementation S.
func rpcUnary[S, Req, Resp any](svc, name string, call func(S, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	full := "/" + svc + "/" + name
	// bound is the info and handler for the implementation last seen: it
	// is the same on every call of a server, so a call allocates neither
	// (two allocations of the ~25 a Range costs the server).
	var bound atomic.Pointer[boundUnary]
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(Req)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return call(srv.(S), ctx, in)
			}
			b := bound.Load()
			if b == nil || b.info.Server != srv {
				impl := srv.(S)
				b = &boundUnary{
					info: grpc.UnaryServerInfo{FullMethod: full, Server: srv},
					handler: func(ctx context.Context, req any) (any, error) {
						return call(impl, ctx, req.(*Req))
					},
				}
				bound.Store(b)
			}
			return interceptor(ctx, in, &b.info, b.handler)
		},
	}
}

// boundUnary is a unary method's interceptor arguments for one
// implementation. Interceptors get a pointer to info; none may change it.
type boundUnary struct {
	info    grpc.UnaryServerInfo
	handler grpc.UnaryHandler
}

// typedStream gives a grpc.ServerStream the typed Send and Recv of a
// generated stream interface (pb.Watch_WatchServer and co.).
type typedStream[Req, Resp any] struct{ grpc.ServerStream }

func (t typedStream[Req, Resp]) Send(m *Resp) error { return t.ServerStream.SendMsg(m) }

func (t typedStream[Req, Resp]) Recv() (*Req, error) {
	m := new(Req)
	if err := t.ServerStream.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

const (
	watchServiceName       = "etcdserverpb.Watch"
	leaseServiceName       = "etcdserverpb.Lease"
	clusterServiceName     = "etcdserverpb.Cluster"
	maintenanceServiceName = "etcdserverpb.Maintenance"
	authServiceName        = "etcdserverpb.Auth"
)

var watchServiceDesc = grpc.ServiceDesc{
	ServiceName: watchServiceName,
	HandlerType: (*pb.WatchServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Watch", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error {
			return srv.(pb.WatchServer).Watch(typedStream[pb.WatchRequest, pb.WatchResponse]{st})
		},
	}},
	Metadata: "rpc.proto",
}

var leaseServiceDesc = grpc.ServiceDesc{
	ServiceName: leaseServiceName,
	HandlerType: (*pb.LeaseServer)(nil),
	Methods: []grpc.MethodDesc{
		rpcUnary(leaseServiceName, "LeaseGrant", pb.LeaseServer.LeaseGrant),
		rpcUnary(leaseServiceName, "LeaseRevoke", pb.LeaseServer.LeaseRevoke),
		rpcUnary(leaseServiceName, "LeaseTimeToLive", pb.LeaseServer.LeaseTimeToLive),
		rpcUnary(leaseServiceName, "LeaseLeases", pb.LeaseServer.LeaseLeases),
	},
	Streams: []grpc.StreamDesc{{
		StreamName: "LeaseKeepAlive", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error {
			return srv.(pb.LeaseServer).LeaseKeepAlive(typedStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]{st})
		},
	}},
	Metadata: "rpc.proto",
}

var clusterServiceDesc = grpc.ServiceDesc{
	ServiceName: clusterServiceName,
	HandlerType: (*pb.ClusterServer)(nil),
	Methods: []grpc.MethodDesc{
		rpcUnary(clusterServiceName, "MemberAdd", pb.ClusterServer.MemberAdd),
		rpcUnary(clusterServiceName, "MemberRemove", pb.ClusterServer.MemberRemove),
		rpcUnary(clusterServiceName, "MemberUpdate", pb.ClusterServer.MemberUpdate),
		rpcUnary(clusterServiceName, "MemberList", pb.ClusterServer.MemberList),
		rpcUnary(clusterServiceName, "MemberPromote", pb.ClusterServer.MemberPromote),
	},
	Metadata: "rpc.proto",
}

var maintenanceServiceDesc = grpc.ServiceDesc{
	ServiceName: maintenanceServiceName,
	HandlerType: (*pb.MaintenanceServer)(nil),
	Methods: []grpc.MethodDesc{
		rpcUnary(maintenanceServiceName, "Alarm", pb.MaintenanceServer.Alarm),
		rpcUnary(maintenanceServiceName, "Status", pb.MaintenanceServer.Status),
		rpcUnary(maintenanceServiceName, "Defragment", pb.MaintenanceServer.Defragment),
		rpcUnary(maintenanceServiceName, "Hash", pb.MaintenanceServer.Hash),
		rpcUnary(maintenanceServiceName, "HashKV", pb.MaintenanceServer.HashKV),
		rpcUnary(maintenanceServiceName, "MoveLeader", pb.MaintenanceServer.MoveLeader),
		rpcUnary(maintenanceServiceName, "Downgrade", pb.MaintenanceServer.Downgrade),
	},
	Streams: []grpc.StreamDesc{{
		StreamName: "Snapshot", ServerStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error {
			r := new(pb.SnapshotRequest)
			if err := st.RecvMsg(r); err != nil {
				return err
			}
			return srv.(pb.MaintenanceServer).Snapshot(r, typedStream[pb.SnapshotRequest, pb.SnapshotResponse]{st})
		},
	}},
	Metadata: "rpc.proto",
}

var authServiceDesc = grpc.ServiceDesc{
	ServiceName: authServiceName,
	HandlerType: (*pb.AuthServer)(nil),
	Methods: []grpc.MethodDesc{
		rpcUnary(authServiceName, "AuthEnable", pb.AuthServer.AuthEnable),
		rpcUnary(authServiceName, "AuthDisable", pb.AuthServer.AuthDisable),
		rpcUnary(authServiceName, "AuthStatus", pb.AuthServer.AuthStatus),
		rpcUnary(authServiceName, "Authenticate", pb.AuthServer.Authenticate),
		rpcUnary(authServiceName, "UserAdd", pb.AuthServer.UserAdd),
		rpcUnary(authServiceName, "UserGet", pb.AuthServer.UserGet),
		rpcUnary(authServiceName, "UserList", pb.AuthServer.UserList),
		rpcUnary(authServiceName, "UserDelete", pb.AuthServer.UserDelete),
		rpcUnary(authServiceName, "UserChangePassword", pb.AuthServer.UserChangePassword),
		rpcUnary(authServiceName, "UserGrantRole", pb.AuthServer.UserGrantRole),
		rpcUnary(authServiceName, "UserRevokeRole", pb.AuthServer.UserRevokeRole),
		rpcUnary(authServiceName, "RoleAdd", pb.AuthServer.RoleAdd),
		rpcUnary(authServiceName, "RoleGet", pb.AuthServer.RoleGet),
		rpcUnary(authServiceName, "RoleList", pb.AuthServer.RoleList),
		rpcUnary(authServiceName, "RoleDelete", pb.AuthServer.RoleDelete),
		rpcUnary(authServiceName, "RoleGrantPermission", pb.AuthServer.RoleGrantPermission),
		rpcUnary(authServiceName, "RoleRevokePermission", pb.AuthServer.RoleRevokePermission),
	},
	Metadata: "rpc.proto",
}
