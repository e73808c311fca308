package v3rpc

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/apply"
)

// errTimeoutLeaderTransfer is etcd's ErrTimeoutLeaderTransfer, which its
// error table lacks: clients get it as Unknown with the message.
var errTimeoutLeaderTransfer = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")

// maintenanceServer implements etcd's Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

var _ pb.MaintenanceServer = (*maintenanceServer)(nil)

// Status needs an authenticated caller when auth is enabled, as etcd's.
func (m *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := m.s
	if err := s.requireUser(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	hdr := &pb.ResponseHeader{}
	s.fillHeader(hdr)
	size, inUse := s.dbSize()
	applied := s.loop.AppliedIndex()
	resp := &pb.StatusResponse{
		Header:           hdr,
		Version:          EtcdVersion,
		DbSize:           size,
		DbSizeInUse:      inUse,
		Leader:           s.ids.member,
		RaftIndex:        applied,
		RaftAppliedIndex: applied,
		RaftTerm:         s.ids.term,
		DbSizeQuota:      s.cfg.Limits.QuotaBackendBytes,
		// The storage version follows the cluster version (see
		// apply.Versions).
		StorageVersion: s.clusterVersion().String(),
		DowngradeInfo:  &pb.DowngradeInfo{},
	}
	if s.raft != nil {
		st := s.raft.Status()
		resp.Leader, resp.RaftTerm, resp.RaftIndex, resp.RaftAppliedIndex = st.Leader, st.Term, st.Commit, st.Applied
		if m := s.applier.Members().Member(s.ids.member); m != nil {
			resp.IsLearner = m.IsLearner
		}
		if st.Leader == 0 {
			// etcd's Status lists this when the member sees no leader.
			resp.Errors = append(resp.Errors, rpctypes.ErrGRPCNoLeader.Error())
		}
	}
	if vs := s.applier.Versions(); vs.DowngradeEnabled {
		resp.DowngradeInfo = &pb.DowngradeInfo{Enabled: true, TargetVersion: vs.DowngradeTarget}
	}
	for _, a := range s.applier.Alarms() {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

// Alarm lists alarms for any authenticated caller; changing them needs root
// (when auth is enabled), as in etcd.
func (m *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	res, err := m.s.proposeGuarded(ctx, &apply.Request{Alarm: r})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.AlarmResponse)
	m.s.fillHeader(out.Header)
	return out, nil
}

// Defragment compacts Pebble's whole key space. Unlike etcd's bbolt defrag it
// runs online: reads and writes go on while it works.
func (m *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	m.s.metrics.etcd.defragging.Add(1)
	defer m.s.metrics.etcd.defragging.Add(-1)
	start := time.Now()
	m.s.lg.Info("starting online defragmentation", "db-size", func() int64 { n, _ := m.s.dbSize(); return n }())
	if err := m.s.store.DB().Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return nil, toGRPCError(err)
	}
	took := time.Since(start)
	m.s.metrics.defragLatency.Observe(took.Seconds())
	m.s.metrics.etcd.defragSec.Observe(took.Seconds())
	// The quota sees the smaller database at once, as etcd's sees its
	// rewritten file, not at the next poll: a put right after a defrag and
	// an alarm disarm must fit (etcd's TestAlarm).
	m.s.MeasureSpace()
	m.s.lg.Info("finished online defragmentation", "took", took, "db-size", func() int64 { n, _ := m.s.dbSize(); return n }())
	// NB: etcd answers Defragment without a header.
	return &pb.DefragmentResponse{}, nil
}

// MoveLeader on a single member: it is already the leader, so moving to
// itself succeeds and any other target is not a member.
func (m *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if m.s.raft != nil {
		// etcd's MoveLeader: only the leader hands leadership over, to a
		// voting member, waiting at most the request timeout.
		if !m.s.raft.IsLeader() {
			return nil, rpctypes.ErrGRPCNotLeader
		}
		tctx, cancel := context.WithTimeout(ctx, m.s.requestTimeout())
		defer cancel()
		if err := m.s.raft.TransferLeadership(tctx, r.TargetID); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return nil, errTimeoutLeaderTransfer
			}
			return nil, toGRPCError(err)
		}
		hdr := &pb.ResponseHeader{}
		m.s.fillHeader(hdr)
		return &pb.MoveLeaderResponse{Header: hdr}, nil
	}
	if r.TargetID != m.s.ids.member {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	hdr := &pb.ResponseHeader{}
	m.s.fillHeader(hdr)
	return &pb.MoveLeaderResponse{Header: hdr}, nil
}

// dbSize reports the database's disk usage and the part of it holding live
// data, as etcd's dbSize and dbSizeInUse.
func (s *Server) dbSize() (size, inUse int64) {
	m := s.store.DB().Metrics()
	// NB: recycled WAL files and obsolete files awaiting deletion are space
	// Pebble reuses or frees, not growth; counting them would keep a store
	// over its quota after its data is deleted and defragmented.
	size = int64(m.DiskSpaceUsage() - m.WAL.ObsoletePhysicalSize - m.Table.Local.ObsoleteSize - m.BlobFiles.Local.ObsoleteSize)
	// NB: Pebble reports the current WAL at its size when it was opened
	// (often 0); WAL.Size is what the live WALs hold, the data not yet
	// flushed to tables. etcd's size counts a write once committed.
	if m.WAL.Size > m.WAL.PhysicalSize {
		size += int64(m.WAL.Size - m.WAL.PhysicalSize)
	}
	if live, err := s.store.DB().EstimateDiskUsage([]byte{0}, []byte{0xff}); err == nil {
		inUse = int64(live)
	}
	if s.raft != nil {
		// A cluster member's Raft log shares the database ('R'); etcd's
		// db size and quota do not count its WAL, so the flushed part of
		// the log is left out (its truncated tail waits for Pebble's
		// compactions to reclaim it).
		if logBytes, err := s.store.DB().EstimateDiskUsage([]byte{'R'}, []byte{'S'}); err == nil {
			size -= min(int64(logBytes), size)
			inUse -= min(int64(logBytes), inUse)
		}
	}
	if inUse > size || inUse == 0 {
		inUse = size
	}
	return size, inUse
}
