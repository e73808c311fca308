package server

import (
	"context"
	"time"
)

// quotaCheckInterval is how often the database size is measured for the
// quota. Pebble's size changes in steps (flushes, compactions), so a short
// poll is as precise as a per-request measurement and keeps the write path
// free of it.
const quotaCheckInterval = 100 * time.Millisecond

// runQuota measures the database for the quota until ctx ends. The
// NOSPACE alarm itself is raised, as etcd's, by the first write that does
// not fit (v3rpc's request check), through apply like an operator's Alarm
// request; from then on puts fail with ErrGRPCNoSpace while reads, deletes
// and compaction keep working, until `etcdctl alarm disarm`. A disarmed
// alarm comes back with the next write that does not fit, not by itself
// (etcd's TestAuthAlarm lists no alarm right after a disarm while the
// database is still past the quota).
func (s *Server) runQuota(ctx context.Context) {
	t := time.NewTicker(quotaCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.rpc.MeasureSpace()
	}
}
