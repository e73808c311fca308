package v3rpc

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Hash answers etcd's Hash: a CRC-32C of the whole stored state, for tests
// and debugging (see mvcc.Store.Hash).
func (m *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	start := time.Now()
	h, rev, err := m.s.store.Hash(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	m.s.metrics.hashSec.Observe(time.Since(start).Seconds())
	resp := &pb.HashResponse{Header: &pb.ResponseHeader{Revision: rev}, Hash: h}
	m.s.fillHeader(resp.Header)
	return resp, nil
}

// HashKV answers etcd's HashKV with etcd's algorithm (mvcc.Store.HashKV):
// equal to etcd's for the same history and compaction.
func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	start := time.Now()
	h, rev, err := m.s.store.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPCError(err)
	}
	m.s.metrics.ObserveHashKV(time.Since(start))
	resp := &pb.HashKVResponse{
		Header:          &pb.ResponseHeader{Revision: rev},
		Hash:            h.Hash,
		CompactRevision: h.CompactRevision,
		HashRevision:    h.Revision,
	}
	m.s.fillHeader(resp.Header)
	return resp, nil
}
