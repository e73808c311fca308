package server

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/apply"
)

// defaultQuotaBytes is etcd's default --quota-backend-bytes (2 GiB).
const defaultQuotaBytes = 2 << 30

// quotaCheckInterval is how often the database size is compared with the
// quota. Pebble's size changes in steps (flushes, compactions), so a short
// poll is as precise as a per-request check and keeps the write path free
// of it.
const quotaCheckInterval = 100 * time.Millisecond

// quotaBytes is the effective quota: 0 in the configuration means etcd's
// default.
func (s *Server) quotaBytes() int64 {
	if q := s.cfg.Limits.QuotaBackendBytes; q > 0 {
		return q
	}
	return defaultQuotaBytes
}

func (s *Server) hasAlarm(t pb.AlarmType) bool {
	for _, a := range s.applier.Alarms() {
		if a.Alarm == t {
			return true
		}
	}
	return false
}

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
		size := s.measureSpace()
		if s.hasAlarm(pb.AlarmType_NOSPACE) {
			continue
		}
		quota := s.quotaBytes()
		if size <= quota {
			continue
		}
		s.lg.Warn("database space exceeded; raising NOSPACE alarm", "db-size", size, "quota-size", quota)
		_, err := s.propose(ctx, &apply.Request{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: s.ids.member, Alarm: pb.AlarmType_NOSPACE,
		}})
		if err != nil && ctx.Err() == nil {
			s.lg.Error("raise NOSPACE alarm", "err", err)
		}
	}
}
