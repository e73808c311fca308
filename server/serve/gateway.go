package serve

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/tmc/grpc-websocket-proxy/wsproxy"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
)

// gatewayPipeBytes is the buffer of each direction of the in-memory
// connection between the gateway and the gRPC server.
const gatewayPipeBytes = 1 << 20

// gateway is etcd's JSON gateway: grpc-gateway's REST mapping of the etcd
// API (go.etcd.io/etcd/api/v3/etcdserverpb/gw) in front of a gRPC client
// connection to this server. etcd dials its own client listener for it; we
// connect over an in-memory listener served by the plaintext gRPC server
// instead, so the gateway works the same on http://, https:// (with or
// without client-certificate auth) and any listener mix, and a request
// still passes every interceptor: limits, rate limits, auth, metrics.
//
// NB: proxied requests carry no TLS peer, so a client certificate's CN
// never authenticates a gateway request (etcd ignores it too: its gateway
// presents the server's own certificate; see gatewayCNCheck).
type gateway struct {
	lis  *bufconn.Listener
	conn *grpc.ClientConn
	// handler serves /v3/: websocket upgrades through wsproxy (streams
	// become websocket messages, as on etcd), everything else straight to
	// the grpc-gateway mux.
	handler http.Handler
}

// newGateway connects a gRPC client to an in-memory listener that Run
// serves with the plaintext gRPC server, and registers etcd's six services and its lock and election routes
// on a grpc-gateway mux with etcd's marshaler options.
func newGateway(lg *slog.Logger, codec encoding.CodecV2, routes []func(*gwruntime.ServeMux, *grpc.ClientConn) error) (*gateway, error) {
	lis := bufconn.Listen(gatewayPipeBytes)
	conn, err := grpc.NewClient("passthrough:///metastore-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(math.MaxInt32),
			// The generated marshalling code, not protobuf-go's reflection.
			grpc.ForceCodecV2(codec),
		),
	)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	// etcd's options: proto field names (key, range_end, create_revision),
	// zero values omitted, unknown request fields ignored.
	mux := gwruntime.NewServeMux(gwruntime.WithMarshalerOption(gwruntime.MIMEWildcard,
		&gwruntime.HTTPBodyMarshaler{Marshaler: &gwruntime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}}))
	// The context only bounds the registration; the handlers use each
	// request's own context.
	ctx := context.Background()
	for _, register := range []func(context.Context, *gwruntime.ServeMux, *grpc.ClientConn) error{
		etcdgw.RegisterKVHandler,
		etcdgw.RegisterWatchHandler,
		etcdgw.RegisterLeaseHandler,
		etcdgw.RegisterClusterHandler,
		etcdgw.RegisterMaintenanceHandler,
		etcdgw.RegisterAuthHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			conn.Close()
			lis.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	for _, register := range routes {
		if err := register(mux, conn); err != nil {
			conn.Close()
			lis.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	handler := wsproxy.WebsocketProxy(mux,
		// A websocket carries a stream; the gateway maps streams to POST.
		wsproxy.WithRequestMutator(func(_ *http.Request, out *http.Request) *http.Request {
			out.Method = http.MethodPost
			return out
		}),
		wsproxy.WithMaxRespBodyBufferSize(math.MaxInt32),
		wsproxy.WithLogger(wsLogger{lg.With("component", "gateway")}),
	)
	return &gateway{lis: lis, conn: conn, handler: handler}, nil
}

// serve runs g's gRPC side until srv stops.
func (g *gateway) serve(srv GRPCServer) error { return srv.Serve(g.lis) }

// close ends the client connection; the listener is closed by the gRPC
// server that serves it (or here, if it never did).
func (g *gateway) close() {
	g.conn.Close()
	g.lis.Close()
}

// wsLogger adapts slog to wsproxy's logger.
type wsLogger struct{ lg *slog.Logger }

func (l wsLogger) Warnln(args ...any)  { l.lg.Warn(fmt.Sprint(args...)) }
func (l wsLogger) Debugln(args ...any) { l.lg.Debug(fmt.Sprint(args...)) }
