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

// snapshotCollector exports the transport's snapshot counters under
// etcd's names and labels (etcd_network_snapshot_*).
type snapshotCollector struct{ t *raftnode.PeerTransport }

var (
	snapSendSuccessDesc = prometheus.NewDesc("etcd_network_snapshot_send_success",
		"Total number of successful snapshot sends", []string{"To"}, nil)
	snapSendFailuresDesc = prometheus.NewDesc("etcd_network_snapshot_send_failures",
		"Total number of snapshot send failures", []string{"To"}, nil)
	snapSendSecondsDesc = prometheus.NewDesc("etcd_network_snapshot_send_total_duration_seconds",
		"Total latency distributions of v3 snapshot sends", []string{"To"}, nil)
	snapRecvSuccessDesc = prometheus.NewDesc("etcd_network_snapshot_receive_success",
		"Total number of successful snapshot receives", []string{"From"}, nil)
	snapRecvFailuresDesc = prometheus.NewDesc("etcd_network_snapshot_receive_failures",
		"Total number of snapshot receive failures", []string{"From"}, nil)
	snapRecvSecondsDesc = prometheus.NewDesc("etcd_network_snapshot_receive_total_duration_seconds",
		"Total latency distributions of v3 snapshot receives", []string{"From"}, nil)
	snapSendInflightDesc = prometheus.NewDesc("etcd_network_snapshot_send_inflights_total",
		"Total number of inflight snapshot sends", nil, nil)
	snapRecvInflightDesc = prometheus.NewDesc("etcd_network_snapshot_receive_inflights_total",
		"Total number of inflight snapshot receives", nil, nil)
)

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{snapSendSuccessDesc, snapSendFailuresDesc, snapSendSecondsDesc,
		snapRecvSuccessDesc, snapRecvFailuresDesc, snapRecvSecondsDesc, snapSendInflightDesc, snapRecvInflightDesc} {
		ch <- d
	}
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	byPeer, sending, receiving := c.t.SnapshotMetrics()
	for id, m := range byPeer {
		peer := raftnode.FormatID(id)
		if m.SendSuccess+m.SendFailures > 0 {
			ch <- prometheus.MustNewConstMetric(snapSendSuccessDesc, prometheus.CounterValue, float64(m.SendSuccess), peer)
			ch <- prometheus.MustNewConstMetric(snapSendFailuresDesc, prometheus.CounterValue, float64(m.SendFailures), peer)
			ch <- prometheus.MustNewConstMetric(snapSendSecondsDesc, prometheus.CounterValue, m.SendTime.Seconds(), peer)
		}
		if m.ReceiveSuccess+m.ReceiveFailures > 0 {
			ch <- prometheus.MustNewConstMetric(snapRecvSuccessDesc, prometheus.CounterValue, float64(m.ReceiveSuccess), peer)
			ch <- prometheus.MustNewConstMetric(snapRecvFailuresDesc, prometheus.CounterValue, float64(m.ReceiveFailures), peer)
			ch <- prometheus.MustNewConstMetric(snapRecvSecondsDesc, prometheus.CounterValue, m.ReceiveTime.Seconds(), peer)
		}
	}
	ch <- prometheus.MustNewConstMetric(snapSendInflightDesc, prometheus.GaugeValue, float64(sending))
	ch <- prometheus.MustNewConstMetric(snapRecvInflightDesc, prometheus.GaugeValue, float64(receiving))
}
