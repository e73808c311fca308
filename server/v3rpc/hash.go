package v3rpc

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Hash answers etcd's Hash: a CRC-32C of the whole stored state, for tests
// and debugging (see mvcc.Store.Hash).
func (m *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	h, rev, err := m.s.store.Hash(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.HashResponse{Header: &pb.ResponseHeader{Revision: rev}, Hash: h}
	m.s.fillHeader(resp.Header)
	return resp, nil
}

// HashKV answers etcd's HashKV: a hash of the key-value history up to
// r.Revision (0 = current), equal on every store with the same history and
// compaction. The numbers differ from etcd's, which hashes bbolt's encoding.
func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	h, rev, err := m.s.store.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.HashKVResponse{
		Header:          &pb.ResponseHeader{Revision: rev},
		Hash:            h.Hash,
		CompactRevision: h.CompactRevision,
		HashRevision:    h.Revision,
	}
	m.s.fillHeader(resp.Header)
	return resp, nil
}
