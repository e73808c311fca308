package v3rpc

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/guard"
)

// kvServer implements etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

var _ pb.KVServer = (*kvServer)(nil)

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	s := k.s
	if err := checkRangeRequest(r); err != nil {
		return nil, err
	}
	if err := s.guard.CheckTenantRate(r.Key); err != nil {
		return nil, toGRPCError(err)
	}
	id, err := s.guard.Read(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	// On one member every committed write is visible to a new read view;
	// a cluster member first catches up with the leader's commit index.
	if !r.Serializable {
		if err := s.linearizableRead(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	start := time.Now()
	tx, err := s.store.Read()
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := apply.Range(ctx, tx, r)
	tx.End()
	s.metrics.observeRange(time.Since(start), err)
	s.applier.MVCCStats().CountRange()
	if err != nil {
		return nil, toGRPCError(err)
	}
	if _, err := s.recheck(ctx, id, r); err != nil {
		return nil, err
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	s := k.s
	cost := quotaCostPut(r)
	if err := s.reserveSpace(ctx, cost); err != nil {
		return nil, err
	}
	defer s.quota.release(cost)
	if err := checkPutRequest(r); err != nil {
		return nil, err
	}
	if err := s.guard.CheckTenantRate(r.Key); err != nil {
		return nil, toGRPCError(err)
	}
	res, err := s.proposeGuarded(ctx, &apply.Request{Put: r})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.PutResponse)
	s.fillHeader(out.Header)
	return out, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	s := k.s
	if err := checkDeleteRequest(r); err != nil {
		return nil, err
	}
	if err := s.guard.CheckTenantRate(r.Key); err != nil {
		return nil, toGRPCError(err)
	}
	res, err := s.proposeGuarded(ctx, &apply.Request{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.DeleteRangeResponse)
	s.fillHeader(out.Header)
	return out, nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	s := k.s
	cost := quotaCostTxn(r)
	if err := s.reserveSpace(ctx, cost); err != nil {
		return nil, err
	}
	defer s.quota.release(cost)
	if err := checkTxnRequest(r, s.cfg.Limits.MaxTxnOps); err != nil {
		return nil, err
	}
	// Checked after the op count so a huge txn cannot make this quadratic.
	if _, _, err := checkIntervals(r.Success); err != nil {
		return nil, err
	}
	if _, _, err := checkIntervals(r.Failure); err != nil {
		return nil, err
	}
	if err := s.guard.CheckTenantRate(guard.FirstKey(r)); err != nil {
		return nil, toGRPCError(err)
	}
	if !apply.IsTxnReadOnly(r) {
		res, err := s.proposeGuarded(ctx, &apply.Request{Txn: r})
		if err != nil {
			return nil, err
		}
		out := res.Resp.(*pb.TxnResponse)
		s.fillHeader(out.Header)
		return out, nil
	}
	id, err := s.guard.Read(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	if !isTxnSerializable(r) {
		if err := s.linearizableRead(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	tx, err := s.store.Read()
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := s.applier.ReadOnlyTxn(ctx, tx, r)
	tx.End()
	if err != nil {
		return nil, toGRPCError(err)
	}
	if _, err := s.recheck(ctx, id, r); err != nil {
		return nil, err
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

// Compact needs the root role when auth is enabled, as in etcd.
func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := k.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
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
