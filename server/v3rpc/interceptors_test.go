package v3rpc

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
)

// panickyHealth panics on Check for the service "boom".
type panickyHealth struct {
	healthpb.UnimplementedHealthServer
}

func (panickyHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if r.Service == "boom" {
		var m map[string]int
		m["x"] = 1 // a nil-map write: a real runtime panic
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPanicRecovery: a panicking handler answers Internal, its stack is
// logged, and the server keeps serving that and other requests.
func TestPanicRecovery(t *testing.T) {
	var logs lockedBuf
	cfg := config.Default()
	s := &Server{cfg: cfg, lg: slog.New(slog.NewTextHandler(&logs, nil)), metrics: newMetrics()}
	g := grpc.NewServer(grpc.ChainUnaryInterceptor(s.unaryInterceptor), grpc.ChainStreamInterceptor(s.streamInterceptor))
	healthpb.RegisterHealthServer(g, panickyHealth{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	for range 3 {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "boom"})
		if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "etcdserver: internal error" {
			t.Fatalf("panicking handler: %v", err)
		}
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("server stopped serving after a panic: %v", err)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "request handler panicked") || !strings.Contains(out, "assignment to entry in nil map") || !strings.Contains(out, "panickyHealth.Check") {
		t.Fatalf("panic not logged with its stack:\n%s", out)
	}
}
