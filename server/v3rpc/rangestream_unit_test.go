package v3rpc

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// TestRangeStreamResponseEncoding: the hand-written encoding is protobuf's
// for `RangeResponse range_response = 1`, and decoding the concatenation of
// several responses merges them as proto.Merge does (what a client that
// merges the chunks gets).
func TestRangeStreamResponseEncoding(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 70<<10)
	msgs := []*RangeStreamResponse{
		{},
		{RangeResponse: &pb.RangeResponse{}},
		{RangeResponse: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{{Key: []byte("a"), Value: big, CreateRevision: 2, ModRevision: 3, Version: 1, Lease: 7}}}},
		{RangeResponse: &pb.RangeResponse{Header: &pb.ResponseHeader{ClusterId: 1 << 63, MemberId: 5, Revision: 300, RaftTerm: 2}, More: true, Count: 1 << 40,
			Kvs: []*mvccpb.KeyValue{{Key: []byte("b")}, {Key: []byte("c"), Value: []byte("x")}}}},
	}
	c := newGogoCodec()
	var all []byte
	merged := &pb.RangeResponse{}
	for _, m := range msgs {
		want, err := proto.Marshal(protoadapt.MessageV2Of(m))
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Marshal()
		if err != nil || !bytes.Equal(got, want) || m.Size() != len(want) {
			t.Fatalf("%v: Marshal = %x (size %d, %v), want %x", m, got, m.Size(), err, want)
		}
		wire, err := c.Marshal(m)
		if err != nil || !bytes.Equal(wire.Materialize(), want) {
			t.Fatalf("%v: codec bytes differ (%v)", m, err)
		}
		wire.Free()
		back := &RangeStreamResponse{}
		if err := back.Unmarshal(want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(protoadapt.MessageV2Of(back), protoadapt.MessageV2Of(m)) {
			t.Fatalf("round trip = %v, want %v", back, m)
		}
		all = append(all, want...)
		if m.RangeResponse != nil {
			proto.Merge(protoadapt.MessageV2Of(merged), protoadapt.MessageV2Of(m.RangeResponse))
		}
	}
	// An unknown field (a future addition) is skipped.
	all = protowire.AppendTag(all, 9, protowire.VarintType)
	all = protowire.AppendVarint(all, 12345)
	back := &RangeStreamResponse{}
	if err := back.Unmarshal(all); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(protoadapt.MessageV2Of(back.RangeResponse), protoadapt.MessageV2Of(merged)) {
		t.Fatalf("merged decode = %v, want %v", back.RangeResponse, merged)
	}
	if err := back.Unmarshal([]byte{0x0a, 0x05, 0x01}); err == nil {
		t.Fatal("truncated input decoded")
	}
}

// TestNextPieceLimit is etcd's adjustChunkLimit table.
func TestNextPieceLimit(t *testing.T) {
	for _, c := range []struct {
		limit       int64
		size, goal  int
		want        int64
		description string
	}{
		{10, 100, 1000, 20, "under half: double"},
		{10, 499, 1000, 20, "just under half"},
		{10, 500, 1000, 10, "half: keep"},
		{10, 2000, 1000, 10, "twice: keep"},
		{10, 2001, 1000, 5, "over twice: halve"},
		{1, 5000, 1000, 1, "never below one"},
		{3, 5000, 1000, 1, "3/2"},
	} {
		if got := nextPieceLimit(c.limit, c.size, c.goal); got != c.want {
			t.Errorf("%s: nextPieceLimit(%d, %d, %d) = %d, want %d", c.description, c.limit, c.size, c.goal, got, c.want)
		}
	}
}

// TestLeaseBytes: what a lease adds to a KeyValue inside a message.
func TestLeaseBytes(t *testing.T) {
	for _, kv := range []*mvccpb.KeyValue{
		{Key: []byte("k"), Lease: 1},
		{Key: []byte("k"), Lease: 1 << 62, ModRevision: 9},
		{Key: bytes.Repeat([]byte("k"), 124), Lease: 300}, // the length prefix shrinks a byte without it
	} {
		with := (&pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv}}).Size()
		c := *kv
		c.Lease = 0
		without := (&pb.RangeResponse{Kvs: []*mvccpb.KeyValue{&c}}).Size()
		if got := leaseBytes(kv); got != with-without {
			t.Errorf("leaseBytes(%v) = %d, want %d", kv, got, with-without)
		}
	}
}
