package server

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/apply"
)

// quotaCheckInterval is how often the database size is compared with the
// quota. Pebble's size changes in steps (flushes, compactions), so a short
// poll is as precise as a per-request check and keeps the write path free
// of it.
const quotaCheckInterval = 100 * time.Millisecond

// runQuota raises the NOSPACE alarm, through apply like an operator's
// Alarm request, when the database grows past the quota. From then on puts
// fail with ErrGRPCNoSpace while reads, deletes and compaction keep working;
// `etcdctl alarm disarm` clears it (and it is raised again if the database
// is still too large).
func (s *Server) runQuota(ctx context.Context) {
	t := time.NewTicker(quotaCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		size := s.rpc.MeasureSpace()
		if s.applier.HasAlarm(pb.AlarmType_NOSPACE) {
			continue
		}
		quota := s.rpc.QuotaBytes()
		if size <= quota {
			continue
		}
		s.lg.Warn("database space exceeded; raising NOSPACE alarm", "db-size", size, "quota-size", quota)
		res, err := s.proposer.Propose(ctx, &apply.Request{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: s.ids.Member, Alarm: pb.AlarmType_NOSPACE,
		}})
		if err == nil {
			err = res.Err
		}
		if err != nil && ctx.Err() == nil {
			s.lg.Error("raise NOSPACE alarm", "err", err)
		}
	}
}
