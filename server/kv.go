package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/apply"
)

// kvServer implements etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

var _ pb.KVServer = (*kvServer)(nil)

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRangeRequest(r); err != nil {
		return nil, err
	}
	// On one member every committed write is visible to a new read view, so
	// linearizable and serializable reads take the same path.
	tx, err := k.s.store.Read()
	if err != nil {
		return nil, toGRPCError(err)
	}
	defer tx.End()
	resp, err := apply.Range(ctx, tx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPutRequest(r); err != nil {
		return nil, err
	}
	if err := k.s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	resp, err := k.s.propose(ctx, &apply.Request{Put: r})
	if err != nil {
		return nil, err
	}
	out := resp.Resp.(*pb.PutResponse)
	k.s.fillHeader(out.Header)
	return out, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDeleteRequest(r); err != nil {
		return nil, err
	}
	if err := k.s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	resp, err := k.s.propose(ctx, &apply.Request{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	out := resp.Resp.(*pb.DeleteRangeResponse)
	k.s.fillHeader(out.Header)
	return out, nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxnRequest(r, k.s.cfg.Limits.MaxTxnOps); err != nil {
		return nil, err
	}
	// Checked after the op count so a huge txn cannot make this quadratic.
	if _, _, err := checkIntervals(r.Success); err != nil {
		return nil, err
	}
	if _, _, err := checkIntervals(r.Failure); err != nil {
		return nil, err
	}
	if apply.IsTxnReadOnly(r) {
		tx, err := k.s.store.Read()
		if err != nil {
			return nil, toGRPCError(err)
		}
		defer tx.End()
		resp, err := k.s.applier.ReadOnlyTxn(ctx, tx, r)
		if err != nil {
			return nil, toGRPCError(err)
		}
		k.s.fillHeader(resp.Header)
		return resp, nil
	}
	if err := k.s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	resp, err := k.s.propose(ctx, &apply.Request{Txn: r})
	if err != nil {
		return nil, err
	}
	out := resp.Resp.(*pb.TxnResponse)
	k.s.fillHeader(out.Header)
	return out, nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	res, err := k.s.propose(ctx, &apply.Request{Compaction: r})
	if err != nil {
		return nil, err
	}
	if res.Compacted != nil {
		select {
		case <-res.Compacted:
		case <-ctx.Done():
			return nil, toGRPCError(ctx.Err())
		}
	}
	out := res.Resp.(*pb.CompactionResponse)
	k.s.fillHeader(out.Header)
	return out, nil
}

// checkRequestSize refuses writes larger than --max-request-bytes, as etcd
// refuses proposals larger than that.
func (s *Server) checkRequestSize(n int) error {
	if n > s.cfg.Limits.MaxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

// propose sends a mutation through the apply loop and maps its errors.
func (s *Server) propose(ctx context.Context, r *apply.Request) (apply.Result, error) {
	res, err := s.loop.Propose(ctx, r)
	if err != nil {
		return res, toGRPCError(err)
	}
	if res.Err != nil {
		return res, toGRPCError(res.Err)
	}
	return res, nil
}
