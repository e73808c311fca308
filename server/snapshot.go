package server

import (
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// Raft snapshots on a cluster member: the staging directory, the keys that
// stay the member's own, the state rebuilt after an install, and etcd's
// snapshot metrics.

// raftSnapshotDir stages received snapshots, under the data directory (on
// Pebble's filesystem, so the ingest links the files); emptied at start.
const raftSnapshotDir = "raft-snapshots.tmp"

func (s *Server) openSnapshots(log *raftnode.LogStore) (*raftnode.SnapshotStore, error) {
	var local [][]byte
	for _, name := range v3rpc.LocalMetaNames() {
		local = append(local, mvcc.MetaKey(name))
	}
	return raftnode.NewSnapshotStore(log, raftnode.SnapshotStoreOptions{
		Dir:       filepath.Join(s.cfg.DataDir, raftSnapshotDir),
		LocalKeys: local,
		OnSaved:   s.metrics.ObserveSnapshotDBSave,
	})
}

// restoreDerived rebuilds what the member derives from the store after a
// snapshot replaced it, on the apply goroutine (the applier has reloaded
// members, versions, alarms, tenants and auth): the lessor's leases, and
// the watch hub, whose watchers catch up from the new store (those whose
// revision is compacted there are canceled, as etcd's).
func (s *Server) restoreDerived() error {
	stored := map[int64]bool{}
	minTTL := int64(s.cfg.Lease.MinTTL / time.Second)
	err := apply.LoadLeases(s.store, minTTL, func(id, ttl, remaining int64) {
		stored[id] = true
		if !s.lessor.Exists(id) {
			s.lessor.Restore(id, ttl, remaining)
		}
	})
	if err != nil {
		return err
	}
	for _, l := range s.lessor.Leases() {
		if !stored[l.ID] {
			s.lessor.Revoke(l.ID)
		}
	}
	s.hub.Resync()
	s.lg.Info("rebuilt state after a raft snapshot", "revision", s.store.Rev(), "leases", len(stored),
		"members", len(s.applier.Members().Members))
	return nil
}

// snapshotMetrics are etcd's etcd_network_snapshot_* series, with etcd's
// types, labels and buckets, fed by the peer transport's observer.
type snapshotMetrics struct {
	sendOK, sendFailed, recvOK, recvFailed *prometheus.CounterVec
	sendSeconds, recvSeconds               *prometheus.HistogramVec
	sendInflight, recvInflight             *prometheus.GaugeVec
}

func newSnapshotMetrics(reg prometheus.Registerer) *snapshotMetrics {
	counter := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	}
	histogram := func(name, help, label string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help,
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 14)}, []string{label})
	}
	gauge := func(name, help, label string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{label})
	}
	m := &snapshotMetrics{
		sendOK:       counter("etcd_network_snapshot_send_success", "Total number of successful snapshot sends", "To"),
		sendFailed:   counter("etcd_network_snapshot_send_failures", "Total number of snapshot send failures", "To"),
		sendSeconds:  histogram("etcd_network_snapshot_send_total_duration_seconds", "Total latency distributions of v3 snapshot sends", "To"),
		sendInflight: gauge("etcd_network_snapshot_send_inflights_total", "Total number of inflight snapshot sends", "To"),
		recvOK:       counter("etcd_network_snapshot_receive_success", "Total number of successful snapshot receives", "From"),
		recvFailed:   counter("etcd_network_snapshot_receive_failures", "Total number of snapshot receive failures", "From"),
		recvSeconds:  histogram("etcd_network_snapshot_receive_total_duration_seconds", "Total latency distributions of v3 snapshot receives", "From"),
		recvInflight: gauge("etcd_network_snapshot_receive_inflights_total", "Total number of inflight snapshot receives", "From"),
	}
	reg.MustRegister(m.sendOK, m.sendFailed, m.sendSeconds, m.sendInflight,
		m.recvOK, m.recvFailed, m.recvSeconds, m.recvInflight)
	return m
}

// SnapshotStarted implements raftnode.SnapshotObserver.
func (m *snapshotMetrics) SnapshotStarted(peer uint64, send bool) {
	if send {
		m.sendInflight.WithLabelValues(raftnode.FormatID(peer)).Inc()
	} else {
		m.recvInflight.WithLabelValues(raftnode.FormatID(peer)).Inc()
	}
}

// SnapshotEnded implements raftnode.SnapshotObserver. As etcd's, only
// successful transfers are timed.
func (m *snapshotMetrics) SnapshotEnded(peer uint64, send, ok bool, took time.Duration) {
	id := raftnode.FormatID(peer)
	switch {
	case send && ok:
		m.sendOK.WithLabelValues(id).Inc()
		m.sendSeconds.WithLabelValues(id).Observe(took.Seconds())
	case send:
		m.sendFailed.WithLabelValues(id).Inc()
	case ok:
		m.recvOK.WithLabelValues(id).Inc()
		m.recvSeconds.WithLabelValues(id).Observe(took.Seconds())
	default:
		m.recvFailed.WithLabelValues(id).Inc()
	}
	if send {
		m.sendInflight.WithLabelValues(id).Dec()
	} else {
		m.recvInflight.WithLabelValues(id).Dec()
	}
}
