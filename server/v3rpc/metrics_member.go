package v3rpc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metastore-dev/metastore/server/apply"
)

// Metrics owns the member's Prometheus registry and its collectors (see
// metrics); the member feeds the ones its loops and transport observe
// through the methods below.
type Metrics = metrics

// NewMetrics returns a fresh registry with the member's collectors.
func NewMetrics() *Metrics { return newMetrics() }

// Registry is the member's Prometheus registry.
func (m *metrics) Registry() *prometheus.Registry { return m.reg }

// RateLimited counts requests refused by a rate limit, by scope.
func (m *metrics) RateLimited() *prometheus.CounterVec { return m.rateLimited }

// ConnRefused counts a connection refused by --max-connections.
func (m *metrics) ConnRefused() { m.connsRefused.Inc() }

// ObserveBatch records one group-commit batch of the apply loop.
func (m *metrics) ObserveBatch(st apply.BatchStats) { m.observeBatch(st) }

// Reloaded counts a configuration reload.
func (m *metrics) Reloaded(ok bool) { m.reloaded(ok) }

// ReloadedRestartRequired counts a reload that was applied while settings
// that take a restart changed too.
func (m *metrics) ReloadedRestartRequired() {
	m.reloads.WithLabelValues("restart_required").Inc()
	m.reloadOK.Set(1)
}

// LeaseExpired counts a lease revoked on expiry.
func (m *metrics) LeaseExpired() { m.leaseExpired.Inc() }

// ObserveBackendCommit records one commit of a cluster member's apply
// batch (etcd_disk_backend_commit_duration_seconds; its durability is the
// Raft log's synced save).
func (m *metrics) ObserveBackendCommit(d time.Duration) { m.commitLatency.Observe(d.Seconds()) }

// ObserveRaftSave records one write of a cluster member's Raft log (etcd's
// etcd_disk_wal_fsync_duration_seconds counts the synced ones).
func (m *metrics) ObserveRaftSave(d time.Duration, synced bool) {
	if synced {
		m.walFsync.Observe(d.Seconds())
	}
}

// ObserveHashKV records one HashKV computation (etcd's
// etcd_mvcc_hash_rev_duration_seconds: the RPC's and the corruption
// checks').
func (m *metrics) ObserveHashKV(d time.Duration) { m.hashRevSec.Observe(d.Seconds()) }

// ObserveSnapshotDBSave records how long a snapshot received from the
// leader took to be saved durably (etcd's
// etcd_snap_db_save_total_duration_seconds).
func (m *metrics) ObserveSnapshotDBSave(d time.Duration) { m.etcd.snapDBSave.Observe(d.Seconds()) }
