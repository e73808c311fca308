package main

import (
	"runtime"

	"github.com/metastore-dev/metastore/server"
	"github.com/metastore-dev/metastore/server/config"
)

// startAttrs is the configuration logged once at start: metastore's
// version, then the settings etcd dumps in its "starting an etcd server"
// line, under etcd's field names, so that tooling that reads etcd's
// start-up line (etcd's own e2e tests wait for `"snapshot-catchup-entries":N`
// there) finds them. Only settings metastore has are listed.
func startAttrs(cfg *config.Config) []any {
	cl := cfg.Cluster
	return []any{
		"version", version,
		"etcd-version", server.EtcdVersion,
		"git-sha", revision(),
		"go-version", runtime.Version(),
		"go-os", runtime.GOOS,
		"go-arch", runtime.GOARCH,
		"max-cpu-set", runtime.GOMAXPROCS(0),
		"max-cpu-available", runtime.NumCPU(),
		"name", cfg.Name,
		"data-dir", cfg.DataDir,
		"heartbeat-interval", cl.HeartbeatInterval,
		"election-timeout", cl.ElectionTimeout,
		"snapshot-count", cl.SnapshotCount,
		"snapshot-catchup-entries", cl.SnapshotCatchUpEntries,
		"initial-advertise-peer-urls", list(cfg.Server.AdvertisePeerURLs),
		"listen-peer-urls", list(cfg.Server.ListenPeerURLs),
		"advertise-client-urls", list(cfg.Server.AdvertiseClientURLs),
		"listen-client-urls", list(cfg.Server.ListenClientURLs),
		"listen-client-http-urls", list(cfg.Server.ListenClientHTTPURLs),
		"listen-metrics-urls", list(cfg.Server.ListenMetricsURLs),
		"initial-cluster", cl.InitialCluster,
		"initial-cluster-state", cl.InitialClusterState,
		"initial-cluster-token", cl.InitialClusterToken,
		"strict-reconfig-check", cl.StrictReconfigCheck,
		"max-learners", cl.MaxLearners,
		"quota-backend-bytes", cfg.Limits.QuotaBackendBytes,
		"max-request-bytes", cfg.Limits.MaxRequestBytes,
		"max-concurrent-streams", cfg.GRPC.MaxConcurrentStreams,
		"initial-corrupt-check", cl.InitialCorruptCheck,
		"corrupt-check-time-interval", cl.CorruptCheckTime,
		"compact-check-time-interval", cl.CompactHashCheckTime,
		"auto-compaction-mode", cfg.Maintenance.AutoCompactionMode,
		"auto-compaction-retention", cfg.Maintenance.AutoCompactionRetention,
	}
}

// list is v, written as [] rather than null when empty, as etcd writes it.
func list(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
