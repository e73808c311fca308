package v3rpc

import (
	"bytes"
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
)

// TestSendRangePieceSplits: a piece over the limit is cut into messages of
// key-values under it, header, more and count on the last; a single
// key-value over the limit fails.
func TestSendRangePieceSplits(t *testing.T) {
	s := &Server{cfg: config.Default()}
	s.cfg.Limits.MaxSendMsgSize = 1000
	out := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 9}, Count: 40, More: true}
	for i := range 40 {
		out.Kvs = append(out.Kvs, &mvccpb.KeyValue{Key: []byte{byte(i)}, Value: bytes.Repeat([]byte("v"), 90)})
	}
	var got []*pb.RangeResponse
	send := func(r *pb.RangeResponse) error { got = append(got, r); return nil }
	if err := s.sendRangePiece(out, send); err != nil {
		t.Fatal(err)
	}
	var kvs int
	for i, r := range got {
		if n := (&RangeStreamResponse{RangeResponse: r}).Size(); n > 1000 {
			t.Errorf("message %d is %d bytes", i, n)
		}
		if i < len(got)-1 && (r.Header != nil || r.Count != 0 || r.More) {
			t.Errorf("message %d carries the header", i)
		}
		kvs += len(r.Kvs)
	}
	if last := got[len(got)-1]; kvs != 40 || last.Count != 40 || !last.More || last.Header.Revision != 9 || len(got) < 4 {
		t.Fatalf("split into %d messages with %d kvs, last %v", len(got), kvs, last)
	}
	big := &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{{Key: []byte("a"), Value: make([]byte, 2000)}}}
	if err := s.sendRangePiece(big, func(*pb.RangeResponse) error { return nil }); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a key-value over the limit: %v", err)
	}
	var sendErr = errors.New("gone")
	if err := s.sendRangePiece(out, func(*pb.RangeResponse) error { return sendErr }); !errors.Is(err, sendErr) {
		t.Fatalf("send error not returned: %v", err)
	}
}
