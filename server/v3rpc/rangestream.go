package v3rpc

import (
	"context"
	"fmt"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

// KV.RangeStream is etcd 3.7's streamed Range: the same request, answered as
// a stream of RangeStreamResponse whose merged contents equal Range's
// response. The etcd API module we build on is 3.6's, which has neither the
// method nor its response type, so the KV service is registered from the
// hand-built description below and RangeStreamResponse is defined here,
// encoded exactly as etcd 3.7's message.

// RangeStreamResponse is etcd 3.7's etcdserverpb.RangeStreamResponse:
//
//	message RangeStreamResponse { RangeResponse range_response = 1; }
//
// Each response carries a disjoint, key-ordered slice of the kvs; header,
// more and count are set on the final one only.
type RangeStreamResponse struct {
	RangeResponse *pb.RangeResponse `protobuf:"bytes,1,opt,name=range_response,json=rangeResponse,proto3" json:"range_response,omitempty"`
}

// Reset clears m. With String and ProtoMessage it makes the type a (v1)
// proto.Message, so gRPC's default codec can carry it too.
func (m *RangeStreamResponse) Reset() { *m = RangeStreamResponse{} }

// String is a debugging form of m.
func (m *RangeStreamResponse) String() string {
	return fmt.Sprintf("range_response:<%v>", m.RangeResponse)
}

// ProtoMessage marks the type as a protobuf message.
func (*RangeStreamResponse) ProtoMessage() {}

// Size is the encoded size.
func (m *RangeStreamResponse) Size() int {
	if m == nil || m.RangeResponse == nil {
		return 0
	}
	n := m.RangeResponse.Size()
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

// MarshalToSizedBuffer encodes m into the end of buf, which is at least
// Size() long, as gogo's generated code does; it returns the bytes written.
func (m *RangeStreamResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	i := len(buf)
	if m.RangeResponse != nil {
		n, err := m.RangeResponse.MarshalToSizedBuffer(buf[:i])
		if err != nil {
			return 0, err
		}
		i -= n
		i -= protowire.SizeVarint(uint64(n))
		protowire.AppendVarint(buf[i:i], uint64(n))
		i--
		buf[i] = byte(protowire.EncodeTag(1, protowire.BytesType))
	}
	return len(buf) - i, nil
}

// Marshal returns the encoding of m.
func (m *RangeStreamResponse) Marshal() ([]byte, error) {
	buf := make([]byte, m.Size())
	n, err := m.MarshalToSizedBuffer(buf)
	return buf[:n], err
}

// Unmarshal merges the encoded message b into m; unknown fields are skipped.
func (m *RangeStreamResponse) Unmarshal(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if m.RangeResponse == nil {
				m.RangeResponse = &pb.RangeResponse{}
			}
			// NB: gogo's Unmarshal merges into the message, as protobuf
			// merges repeated occurrences of an embedded message.
			if err := m.RangeResponse.Unmarshal(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

var _ gogoMessage = (*RangeStreamResponse)(nil)

// kvService is what the KV service description dispatches to: etcd 3.6's
// KVServer plus RangeStream.
type kvService interface {
	pb.KVServer
	RangeStream(*pb.RangeRequest, grpc.ServerStream) error
}

var _ kvService = (*kvServer)(nil)

const kvServiceName = "etcdserverpb.KV"

// kvServiceDesc describes etcd 3.7's KV service: the five unary methods of
// the 3.6 API module's description and the server-streaming RangeStream. A
// service name is registered once, so it replaces pb.RegisterKVServer.
var kvServiceDesc = grpc.ServiceDesc{
	ServiceName: kvServiceName,
	HandlerType: (*kvService)(nil),
	Methods: []grpc.MethodDesc{
		unaryMethod("Range", kvService.Range),
		unaryMethod("Put", kvService.Put),
		unaryMethod("DeleteRange", kvService.DeleteRange),
		unaryMethod("Txn", kvService.Txn),
		unaryMethod("Compact", kvService.Compact),
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "RangeStream",
		Handler:       rangeStreamHandler,
		ServerStreams: true,
	}},
	Metadata: "rpc.proto",
}

// unaryMethod is one unary method of the KV service.
func unaryMethod[Req, Resp any](name string, call func(kvService, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	return rpcUnary(kvServiceName, name, call)
}

func rangeStreamHandler(srv any, stream grpc.ServerStream) error {
	r := new(pb.RangeRequest)
	if err := stream.RecvMsg(r); err != nil {
		return err
	}
	return srv.(kvService).RangeStream(r, stream)
}

// RangeStream's refusals, etcd 3.7's: an order other than ascending keys
// would need the whole range before the first key is sent, and etcd does not
// stream the revision filters either.
var (
	errStreamSort      = status.Error(codes.Unimplemented, "RangeStream does not support custom sort orders")
	errStreamRevFilter = status.Error(codes.Unimplemented, "RangeStream does not support revision filters")
)

func checkRangeStreamRequest(r *pb.RangeRequest) error {
	if err := checkRangeRequest(r); err != nil {
		return err
	}
	if r.SortOrder != pb.RangeRequest_NONE && (r.SortTarget != pb.RangeRequest_KEY || r.SortOrder != pb.RangeRequest_ASCEND) {
		return errStreamSort
	}
	if r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		return errStreamRevFilter
	}
	return nil
}

// firstPieceLimit is the key limit of the first piece, as etcd's.
const firstPieceLimit = 10

// RangeStream answers a RangeRequest piece by piece, with etcd 3.7's rules:
// the first piece reads up to 10 keys; each next piece doubles the limit
// while the previous piece's RangeResponse was under half of
// --max-request-bytes and halves it while it was over twice that, and never
// asks past the request's limit. Every piece is read from one point-in-time
// view taken when the stream starts (the header revision), whatever the
// request's revision, so the pieces are consistent even when writes and
// compactions happen meanwhile. The final piece carries the header, more and
// count (the keys in the whole range, as Range's count). Only one piece is
// in memory at a time.
func (k *kvServer) RangeStream(r *pb.RangeRequest, ss grpc.ServerStream) error {
	s := k.s
	if err := checkRangeStreamRequest(r); err != nil {
		return err
	}
	if err := s.guard.CheckTenantRate(r.Key); err != nil {
		return toGRPCError(err)
	}
	ctx := ss.Context()
	id, err := s.guard.Read(ctx, r)
	if err != nil {
		return toGRPCError(err)
	}
	// send authorizes again before a piece leaves when auth changed since
	// the last check (as Range does after its read), so a revoked reader
	// gets no further piece.
	send := func(resp *pb.RangeResponse) error {
		if id, err = s.recheck(ctx, id, r); err != nil {
			return err
		}
		if resp.Header != nil {
			s.fillHeader(resp.Header)
		}
		return ss.SendMsg(&RangeStreamResponse{RangeResponse: resp})
	}
	if !r.Serializable {
		if err := s.linearizableRead(ctx); err != nil {
			return toGRPCError(err)
		}
	}
	view := s.store.ReadPinned()
	defer view.End()
	if err := s.streamRange(ctx, view, r, send); err != nil {
		return toGRPCError(err)
	}
	return nil
}

// streamRange reads r from rv in pieces and sends each.
func (s *Server) streamRange(ctx context.Context, rv mvcc.ReadView, r *pb.RangeRequest, send func(*pb.RangeResponse) error) error {
	if r.CountOnly {
		resp, err := apply.Range(ctx, rv, r)
		if err != nil {
			return err
		}
		return send(&pb.RangeResponse{Header: &pb.ResponseHeader{Revision: resp.Header.Revision}, Count: resp.Count})
	}
	// NB: etcd answers a negative limit with the whole range in one piece;
	// we treat it as no limit and keep to bounded pieces (same merged answer).
	total := r.Limit
	if total <= 0 {
		total = math.MaxInt64
	}
	piece := *r // the request for one piece
	piece.Limit = min(firstPieceLimit, total)
	sent := int64(0)
	for {
		resp, err := apply.RangePiece(ctx, rv, &piece)
		if err != nil {
			return err
		}
		sent += int64(len(resp.Kvs))
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !resp.More || sent == total
		var next []byte
		if resp.More {
			last := resp.Kvs[len(resp.Kvs)-1].Key
			next = append(last[:len(last):len(last)], 0)
		}
		if done {
			out.Header = &pb.ResponseHeader{Revision: resp.Header.Revision}
			out.More = resp.More
			out.Count = sent
			if resp.More {
				rest, err := apply.Range(ctx, rv, &pb.RangeRequest{Key: next, RangeEnd: r.RangeEnd, Revision: r.Revision, CountOnly: true})
				if err != nil {
					return err
				}
				out.Count += rest.Count
			}
		}
		size := etcdPieceSize(resp, r.KeysOnly)
		if err := s.sendRangePiece(out, send); err != nil {
			return err
		}
		if done {
			return nil
		}
		piece.Key = next
		piece.Limit = min(nextPieceLimit(piece.Limit, size, rangePieceTarget(s.cfg.Limits)), total-sent)
	}
}

// nextPieceLimit is etcd's adjustChunkLimit: double below half the target
// size, halve above twice it, never below 1. The band between keeps the
// limit from oscillating.
func nextPieceLimit(limit int64, size, target int) int64 {
	switch {
	case size < target/2:
		limit *= 2
	case size > target*2:
		limit /= 2
	}
	return max(limit, 1)
}

// etcdPieceSize is the encoded size of a piece's RangeResponse as etcd
// measures it to pick the next limit: etcd 3.7 reads keys-only ranges from
// its in-memory index, which has no lease, so their leases do not count.
// (They are sent: metastore's keys_only keeps etcd 3.6's leases, as Range.)
func etcdPieceSize(resp *pb.RangeResponse, keysOnly bool) int {
	n := resp.Size()
	if !keysOnly {
		return n
	}
	for _, kv := range resp.Kvs {
		if kv.Lease != 0 {
			n -= leaseBytes(kv)
		}
	}
	return n
}

// leaseBytes is how much kv's lease adds to its encoding inside a message.
func leaseBytes(kv *mvccpb.KeyValue) int {
	with := kv.Size()
	without := with - 1 - protowire.SizeVarint(uint64(kv.Lease))
	return protowire.SizeVarint(uint64(with)) + with - protowire.SizeVarint(uint64(without)) - without
}
