package v3rpc

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// TestGogoCodec: the codec's bytes are the standard protobuf encoding (what
// etcd's codec produces), both ways, large and small, and messages that are
// not etcd's go through gRPC's default codec.
func TestGogoCodec(t *testing.T) {
	c := newGogoCodec()
	big := bytes.Repeat([]byte("v"), 64<<10) // above the pooling threshold
	for _, m := range []protoadapt.MessageV1{
		&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte{0}, Limit: 3, Revision: -1, SortOrder: pb.RangeRequest_DESCEND},
		&pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 7, MemberId: 1 << 63}, Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), Value: big, Version: 2}}, Count: 1},
		&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("x")}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("b")}}}}},
		&pb.PutResponse{},
	} {
		want, err := proto.Marshal(protoadapt.MessageV2Of(m))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("%T: codec bytes differ from proto.Marshal", m)
		}
		got.Free()
		back := protoadapt.MessageV1Of(proto.Clone(protoadapt.MessageV2Of(m)))
		back.Reset()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(protoadapt.MessageV2Of(back), protoadapt.MessageV2Of(m)) {
			t.Errorf("%T: round trip = %v, want %v", m, back, m)
		}
	}
	h := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	data, err := c.Marshal(h)
	if err != nil {
		t.Fatalf("health message: %v", err)
	}
	var back healthpb.HealthCheckResponse
	if err := c.Unmarshal(data, &back); err != nil || back.Status != h.Status {
		t.Errorf("health round trip: %v %v", back.Status, err)
	}
}

// TestGogoCodecUnpooled: a watch response as sent encodes to the same bytes
// as the plain message, from a plain allocation.
func TestGogoCodecUnpooled(t *testing.T) {
	c := newGogoCodec()
	big := bytes.Repeat([]byte("v"), 64<<10)
	m := &wireWatchResponse{}
	m.hdr = pb.ResponseHeader{Revision: 9}
	m.WatchResponse = pb.WatchResponse{Header: &m.hdr, WatchId: 3, Events: []*mvccpb.Event{{Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: big}}}}
	want, err := m.WatchResponse.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got.Materialize(), want) {
		t.Fatalf("encoding differs from the message's own")
	}
	if _, ok := got[0].(mem.SliceBuffer); !ok {
		t.Errorf("buffer is %T, want a plain mem.SliceBuffer", got[0])
	}
}

// TestGogoCodecBytes: AppendMarshal appends the standard encoding after
// what the buffer holds, and UnmarshalBytes reads it back, for etcd's
// messages and for others (through the default codec).
func TestGogoCodecBytes(t *testing.T) {
	c := newGogoCodec()
	for _, m := range []protoadapt.MessageV1{
		&pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 7}, Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 64<<10)}}, Count: 1},
		&pb.PutResponse{},
		protoadapt.MessageV1Of(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}),
	} {
		want, err := proto.Marshal(protoadapt.MessageV2Of(m))
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte{1, 2, 3, 4, 5}
		got, err := c.AppendMarshal(append(make([]byte, 0, 8), prefix...), m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:5], prefix) || !bytes.Equal(got[5:], want) {
			t.Errorf("%T: AppendMarshal did not append proto.Marshal's bytes", m)
		}
		back := protoadapt.MessageV1Of(proto.Clone(protoadapt.MessageV2Of(m)))
		proto.Reset(protoadapt.MessageV2Of(back))
		if err := c.UnmarshalBytes(got[5:], back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(protoadapt.MessageV2Of(back), protoadapt.MessageV2Of(m)) {
			t.Errorf("%T: UnmarshalBytes did not give the message back", m)
		}
	}
	if err := c.UnmarshalBytes([]byte{0xff}, &pb.RangeRequest{}); err == nil {
		t.Error("UnmarshalBytes accepted a truncated message")
	}
}

// TestGogoCodecCountsWireBytes: both transports' paths through the codec
// (grpc-go's Marshal/Unmarshal, the lean transport's AppendMarshal/
// UnmarshalBytes) count etcd_network_client_grpc_*_bytes_total.
func TestGogoCodecCountsWireBytes(t *testing.T) {
	c := newGogoCodec()
	c.wire = &wireBytes{}
	msg := &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), Value: []byte("v"), ModRevision: 2}}}
	size := uint64(msg.Size())

	out, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(out, &pb.RangeResponse{}); err != nil {
		t.Fatal(err)
	}
	if got := [2]uint64{c.wire.sent.Load(), c.wire.received.Load()}; got != [2]uint64{size, size} {
		t.Fatalf("after Marshal and Unmarshal: sent, received = %v, want %d each", got, size)
	}
	b, err := c.AppendMarshal([]byte("prefix"), msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UnmarshalBytes(b[len("prefix"):], &pb.RangeResponse{}); err != nil {
		t.Fatal(err)
	}
	if got := [2]uint64{c.wire.sent.Load(), c.wire.received.Load()}; got != [2]uint64{2 * size, 2 * size} {
		t.Fatalf("after AppendMarshal and UnmarshalBytes: sent, received = %v, want %d each", got, 2*size)
	}
}
