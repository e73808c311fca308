package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
)

const keepAlivePath = "/etcdserverpb.Lease/LeaseKeepAlive"

// keepAliveOnce is clientv3's KeepAliveOnce: a stream, one request, one
// answer, the sending side closed and the stream canceled.
func keepAliveOnce(ctx context.Context, lc pb.LeaseClient, id int64) (*pb.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := lc.LeaseKeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	return resp, st.CloseSend()
}

// keepAliveMetric is the value of one series of the server's /metrics.
func keepAliveMetric(t *testing.T, ts *testServer, series string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+ts.s.ClientAddrs()[0]+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "none"
}

// TestLeaseKeepAliveInline: on a single member the lean transport answers
// LeaseKeepAlive streams on the connection's reader (v3rpc's InlineStream
// handler) as the stream handler would: a renewal per request, TTL 0 for
// an unknown lease, many requests on one stream, the response header, and
// the stream metrics.
func TestLeaseKeepAliveInline(t *testing.T) {
	ts := startTestServer(t, nil)
	if ts.s.rpc.InlineStream(keepAlivePath) == nil {
		t.Fatal("no inline LeaseKeepAlive on a single member")
	}
	if ts.s.rpc.InlineStream("/etcdserverpb.Watch/Watch") != nil {
		t.Fatal("Watch answered inline")
	}
	ctx := context.Background()
	lc := pb.NewLeaseClient(ts.conn)
	g, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
	if err != nil {
		t.Fatal(err)
	}
	const once = 20
	for range once {
		resp, err := keepAliveOnce(ctx, lc, g.ID)
		if err != nil || resp.ID != g.ID || resp.TTL != 30 || resp.Header.GetMemberId() == 0 || resp.Header.Revision == 0 {
			t.Fatalf("KeepAliveOnce = %v, %v", resp, err)
		}
	}
	if resp, err := keepAliveOnce(ctx, lc, g.ID+1); err != nil || resp.TTL != 0 || resp.ID != g.ID+1 {
		t.Fatalf("KeepAliveOnce of an unknown lease = %v, %v; want TTL 0", resp, err)
	}

	// A long-lived stream (clientv3's KeepAlive).
	st, err := lc.LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: g.ID}); err != nil {
			t.Fatal(err)
		}
		if resp, err := st.Recv(); err != nil || resp.TTL != 30 {
			t.Fatalf("request %d on one stream: %v, %v", i, resp, err)
		}
	}
	st.CloseSend()
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of a long-lived stream: %v", err)
	}

	labels := `grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"`
	if got, want := keepAliveMetric(t, ts, "grpc_server_started_total{"+labels+"}"), fmt.Sprint(once+2); got != want {
		t.Errorf("grpc_server_started_total %s, want %s", got, want)
	}
	if got, want := keepAliveMetric(t, ts, "grpc_server_msg_sent_total{"+labels+"}"), fmt.Sprint(once+1+200); got != want {
		t.Errorf("grpc_server_msg_sent_total %s, want %s", got, want)
	}
	if got := keepAliveMetric(t, ts, `grpc_server_handled_total{grpc_code="OK",`+labels+"}"); got == "none" {
		t.Errorf("no grpc_server_handled_total for OK keep-alive streams")
	}
}

// TestLeaseKeepAliveInlineWithPolicy: with a policy loaded a renewal is
// never answered on the reader (a policy's hook may wait); the transport
// hands it to a goroutine, and keep-alives still work.
func TestLeaseKeepAliveInlineWithPolicy(t *testing.T) {
	ts := startTestServer(t, withTenantIsolation(t))
	if !ts.s.guard.Policies() {
		t.Fatal("no policy loaded")
	}
	ctx := context.Background()
	lc := pb.NewLeaseClient(ts.conn)
	g, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := (&pb.LeaseKeepAliveRequest{ID: g.ID}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h := ts.s.rpc.InlineStream(keepAlivePath)
	if reply, ok, err := h.Message(ctx, msg, true); ok || reply != nil || err != nil {
		t.Fatalf("on the reader with a policy: %v, %v, %v; want it handed over", reply, ok, err)
	}
	if reply, ok, err := h.Message(ctx, msg, false); !ok || err != nil || reply.(*pb.LeaseKeepAliveResponse).TTL != 30 {
		t.Fatalf("off the reader: %v, %v, %v", reply, ok, err)
	}
	if resp, err := keepAliveOnce(ctx, lc, g.ID); err != nil || resp.TTL != 30 {
		t.Fatalf("KeepAliveOnce with a policy = %v, %v", resp, err)
	}
}

// TestLeaseKeepAliveInlineWithAuth: with auth enabled a renewal by a user
// whose check reads every key of the lease is handed off the reader; one
// by root (exempt, no keys read) and one without a user (refused at once)
// are answered on it, as the stream handler would answer them.
func TestLeaseKeepAliveInlineWithAuth(t *testing.T) {
	s := newBenchServer(t)
	g, err := s.rpc.Lease().LeaseGrant(context.Background(), &pb.LeaseGrantRequest{TTL: 30})
	if err != nil {
		t.Fatal(err)
	}
	userCtx := enableAuth(t, s)
	root, err := s.rpc.Auth().Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "root", Password: "r"})
	if err != nil {
		t.Fatal(err)
	}
	rootCtx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", root.Token))
	msg, err := (&pb.LeaseKeepAliveRequest{ID: g.ID}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h := s.rpc.InlineStream(keepAlivePath)
	if reply, ok, err := h.Message(userCtx, msg, true); ok || reply != nil || err != nil {
		t.Fatalf("user u on the reader: %v, %v, %v; want it handed over", reply, ok, err)
	}
	if reply, ok, err := h.Message(userCtx, msg, false); !ok || err != nil || reply.(*pb.LeaseKeepAliveResponse).TTL != 30 {
		t.Fatalf("user u off the reader: %v, %v, %v", reply, ok, err)
	}
	if reply, ok, err := h.Message(rootCtx, msg, true); !ok || err != nil || reply.(*pb.LeaseKeepAliveResponse).TTL != 30 {
		t.Fatalf("root on the reader: %v, %v, %v", reply, ok, err)
	}
	if _, ok, err := h.Message(context.Background(), msg, true); !ok || !errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
		t.Fatalf("no user on the reader: %v, %v; want ErrGRPCUserEmpty at once", ok, err)
	}
}
