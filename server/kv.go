package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/apply"
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
	if err := s.checkTenantRate(r.Key); err != nil {
		return nil, err
	}
	var resp *pb.RangeResponse
	err := s.readAuthorized(ctx, func(id identity) error {
		return s.authorizeKV(ctx, id, auth.OpRange, func(ar *auth.Request) {
			ar.Revision = r.Revision
			ar.Flags = rangeFlags(r)
			ar.Add(auth.PermRead, r.Key, r.RangeEnd)
		})
	}, func() error {
		// On one member every committed write is visible to a new read
		// view, so linearizable and serializable reads take the same path.
		tx, err := s.store.Read()
		if err != nil {
			return err
		}
		defer tx.End()
		resp, err = apply.Range(ctx, tx, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

func rangeFlags(r *pb.RangeRequest) uint8 {
	var f uint8
	if r.Serializable {
		f |= auth.FlagSerializable
	}
	if r.KeysOnly {
		f |= auth.FlagKeysOnly
	}
	if r.CountOnly {
		f |= auth.FlagCountOnly
	}
	return f
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
	if err := s.checkTenantRate(r.Key); err != nil {
		return nil, err
	}
	areq := &apply.Request{Put: r}
	res, err := s.proposeAuthorized(ctx, areq, func(id identity) error {
		if err := s.checkRequestSize(r.Size()); err != nil {
			return err
		}
		// As etcd's, a full database refuses puts before auth is consulted.
		if s.applier.HasAlarm(pb.AlarmType_NOSPACE) {
			return apply.ErrNoSpace
		}
		if err := s.authorizeKV(ctx, id, auth.OpPut, func(ar *auth.Request) {
			if r.PrevKv {
				ar.Flags = auth.FlagPrevKV
			}
			s.addPut(ar, id, r)
		}); err != nil {
			return err
		}
		areq.Put = r
		if hasAdmission(id) {
			// Admission starts from the client's request on every attempt.
			final, err := s.admitPut(ctx, id, r)
			if err != nil {
				return err
			}
			areq.Put = final
		}
		return s.checkQuota(ctx, areq.Put, nil)
	})
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
	if err := s.checkTenantRate(r.Key); err != nil {
		return nil, err
	}
	areq := &apply.Request{DeleteRange: r}
	res, err := s.proposeAuthorized(ctx, areq, func(id identity) error {
		if err := s.checkRequestSize(r.Size()); err != nil {
			return err
		}
		if err := s.authorizeKV(ctx, id, auth.OpDeleteRange, func(ar *auth.Request) {
			ar.Add(auth.PermWrite, r.Key, r.RangeEnd)
			if r.PrevKv {
				ar.Flags = auth.FlagPrevKV
				ar.Add(auth.PermRead, r.Key, r.RangeEnd)
			}
		}); err != nil || !hasAdmission(id) {
			return err
		}
		final, err := s.admitDeleteRange(ctx, id, r)
		areq.DeleteRange = final
		return err
	})
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
	if err := s.checkTenantRate(firstKey(r)); err != nil {
		return nil, err
	}
	authorize := func(id identity) error {
		return s.authorizeKV(ctx, id, auth.OpTxn, func(ar *auth.Request) { s.addTxn(ar, id, r) })
	}
	if apply.IsTxnReadOnly(r) {
		var resp *pb.TxnResponse
		err := s.readAuthorized(ctx, authorize, func() error {
			tx, err := s.store.Read()
			if err != nil {
				return err
			}
			defer tx.End()
			resp, err = s.applier.ReadOnlyTxn(ctx, tx, r)
			return err
		})
		if err != nil {
			return nil, err
		}
		s.fillHeader(resp.Header)
		return resp, nil
	}
	areq := &apply.Request{Txn: r}
	res, err := s.proposeAuthorized(ctx, areq, func(id identity) error {
		if err := s.checkRequestSize(r.Size()); err != nil {
			return err
		}
		if s.applier.HasAlarm(pb.AlarmType_NOSPACE) && apply.TxnHasPut(r) {
			return apply.ErrNoSpace
		}
		if err := authorize(id); err != nil {
			return err
		}
		areq.Txn = r
		if hasAdmission(id) {
			// Both branches are admitted up front, as one message.
			final, err := s.admitTxn(ctx, id, r)
			if err != nil {
				return err
			}
			areq.Txn = final
		}
		return s.checkQuota(ctx, nil, areq.Txn)
	})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.TxnResponse)
	s.fillHeader(out.Header)
	return out, nil
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
