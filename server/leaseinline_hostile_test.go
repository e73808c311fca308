package server

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
)

// bytesMsgCodec sends and receives messages as the bytes given.
type bytesMsgCodec struct{}

func (bytesMsgCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (bytesMsgCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (bytesMsgCodec) Name() string { return "proto" }

// TestLeaseKeepAliveMalformed: a keep-alive stream whose message is not a
// LeaseKeepAliveRequest ends Internal, counted as such and with no message
// received, on the lean transport (answered on the reader) as on grpc-go's
// (the stream handler); the server goes on serving.
func TestLeaseKeepAliveMalformed(t *testing.T) {
	for _, tr := range []string{config.TransportLean, config.TransportGRPCGo} {
		t.Run(tr, func(t *testing.T) {
			ts := startTestServer(t, func(c *config.Config) { c.GRPC.Transport = tr })
			ctx := context.Background()
			desc := &grpc.StreamDesc{StreamName: "LeaseKeepAlive", ClientStreams: true, ServerStreams: true}
			for i, msg := range [][]byte{{0xff, 0xff}, {0x08}, {0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}} {
				cs, err := ts.conn.NewStream(ctx, desc, keepAlivePath, grpc.ForceCodec(bytesMsgCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				if err := cs.SendMsg(&msg); err != nil {
					t.Fatal(err)
				}
				var out []byte
				if err := cs.RecvMsg(&out); status.Code(err) != codes.Internal {
					t.Fatalf("message %d (% x): %v, want Internal", i, msg, err)
				}
			}
			labels := `grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"`
			// NB: grpc-go's server ends the stream as soon as RecvMsg
			// fails, so LeaseKeepAlive may see its context done first and
			// count the call Canceled (etcd's handler does the same); the
			// inline handler counts what the client got.
			if got := keepAliveMetric(t, ts, `grpc_server_handled_total{grpc_code="Internal",`+labels+"}"); tr == config.TransportLean && got != "3" {
				t.Errorf("handled Internal %s, want 3", got)
			}
			if got := keepAliveMetric(t, ts, "grpc_server_msg_received_total{"+labels+"}"); got != "none" && got != "0" {
				t.Errorf("messages received %s, want 0", got)
			}
			if got := keepAliveMetric(t, ts, "grpc_server_started_total{"+labels+"}"); got != fmt.Sprint(3) {
				t.Errorf("started %s, want 3", got)
			}
			if _, err := keepAliveOnce(ctx, pb.NewLeaseClient(ts.conn), 1); err != nil {
				t.Fatalf("a keep-alive after: %v", err)
			}
		})
	}
}
