package v3rpc

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/metastore-dev/metastore/server/apply"
)

// metrics owns the server's Prometheus registry: a registry per Server (not
// the global default) so that two servers in one process, as in tests, each
// report their own numbers. Core packages expose plain numbers; the
// collectors here pull them at scrape time.
type metrics struct {
	reg *prometheus.Registry

	// gRPC, with go-grpc-prometheus's names, which etcd's dashboards use.
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
	msgRecv  *prometheus.CounterVec
	msgSent  *prometheus.CounterVec
	methods  sync.Map // full method → *methodMetrics
	// recent is a direct-mapped cache in front of methods: a hit costs a
	// string compare where the sync.Map costs a hash and a trie walk
	// (measured: 1.7% of the server's CPU on a serializable Range).
	recent [16]atomic.Pointer[methodMetrics]

	slowRequests  prometheus.Counter
	rateLimited   *prometheus.CounterVec
	connsRefused  prometheus.Counter
	panics        prometheus.Counter
	commitLatency prometheus.Histogram
	walFsync      prometheus.Histogram // Raft log syncs; a single member's synced batch commits
	applyLatency  prometheus.Histogram
	batchSize     prometheus.Histogram
	applyFailed   prometheus.CounterFunc
	loopFailed    atomic.Uint64                 // requests of failed loop batches
	raftFailed    atomic.Pointer[func() uint64] // a cluster member's failed proposals
	defragLatency prometheus.Histogram
	hashSec       prometheus.Histogram // Hash
	hashRevSec    prometheus.Histogram // HashKV, the RPC's and the corruption checks'
	leaseExpired  prometheus.Counter
	reloads       *prometheus.CounterVec
	reloadOK      prometheus.Gauge
	etcd          *etcdMetrics // metrics_etcd.go
}

// methodMetrics caches the label-bound children of one method so the hot
// path does no label hashing.
type methodMetrics struct {
	started  prometheus.Counter
	handling prometheus.Observer
	msgRecv  prometheus.Counter
	msgSent  prometheus.Counter
	// handled is filled per code on first use; read without a lock on
	// every request.
	handled [codes.Unauthenticated + 1]atomic.Pointer[prometheus.Counter]
	typ     string
	service string
	method  string
	full    string // "/service/method", the key
	parent  *metrics
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	grpcLabels := []string{"grpc_type", "grpc_service", "grpc_method"}
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
	}, grpcLabels)
	m.handled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure.",
	}, append(grpcLabels, "grpc_code"))
	m.handling = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "grpc_server_handling_seconds", Help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
		Buckets: prometheus.DefBuckets,
	}, grpcLabels)
	m.msgRecv = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
	}, grpcLabels)
	m.msgSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
	}, grpcLabels)
	m.slowRequests = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metastore_server_slow_requests_total", Help: "Requests slower than the slow-request threshold.",
	})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_server_rate_limited_total", Help: "Requests refused by a rate limit, by the bucket that refused: global, user, unary, stream (a stream or watch creation) or tenant.",
	}, []string{"scope"})
	m.connsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metastore_server_connections_refused_total", Help: "Client connections closed because the connection limit was reached.",
	})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metastore_server_handler_panics_total", Help: "Request handlers that panicked and were recovered.",
	})
	// etcd's name for the fsync'ed commit; dashboards chart it.
	m.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "etcd_disk_backend_commit_duration_seconds", Help: "The latency distributions of commit called by backend.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.walFsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "etcd_disk_wal_fsync_duration_seconds", Help: "The latency distributions of fsync called by WAL.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "metastore_apply_batch_duration_seconds", Help: "Time to apply one group-commit batch, before its commit.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "metastore_apply_batch_requests", Help: "Requests per group-commit batch.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.applyFailed = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "etcd_server_proposals_failed_total", Help: "The total number of failed proposals seen.",
	}, func() float64 {
		n := m.loopFailed.Load()
		if f := m.raftFailed.Load(); f != nil {
			n += (*f)()
		}
		return float64(n)
	})
	m.defragLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "metastore_defragment_duration_seconds", Help: "Duration of online defragmentation (Pebble manual compaction).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	// etcd's buckets: 10ms doubling to 163.84s.
	m.hashSec = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "etcd_mvcc_hash_duration_seconds", Help: "The latency distribution of storage hash operation.",
		Buckets: prometheus.ExponentialBuckets(.01, 2, 15),
	})
	m.hashRevSec = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "etcd_mvcc_hash_rev_duration_seconds", Help: "The latency distribution of storage hash by revision operation.",
		Buckets: prometheus.ExponentialBuckets(.01, 2, 15),
	})
	m.leaseExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "etcd_debugging_server_lease_expired_total", Help: "The total number of expired leases.",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_config_reloads_total", Help: "Reloads of the configuration (SIGHUP or a changed file), by result: ok, restart_required (applied, but settings that take a restart changed too) or failed (the previous configuration kept serving).",
	}, []string{"result"})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "metastore_config_last_reload_successful", Help: "1 if the last reload was applied, 0 if it was refused.",
	})
	m.reloadOK.Set(1)
	m.etcd = newEtcdMetrics(m.reg)
	m.reg.MustRegister(m.started, m.handled, m.handling, m.msgRecv, m.msgSent,
		m.slowRequests, m.rateLimited, m.connsRefused, m.panics,
		m.commitLatency, m.walFsync, m.applyLatency, m.batchSize, m.applyFailed, m.defragLatency, m.hashSec, m.hashRevSec, m.leaseExpired,
		m.reloads, m.reloadOK,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Values of the grpc_type label, as go-grpc-prometheus names them.
const (
	grpcUnary        = "unary"
	grpcServerStream = "server_stream"
	grpcBidiStream   = "bidi_stream"
)

// streamType is the grpc_type of a stream: etcd's streams are bidirectional
// but Snapshot and RangeStream, which only the server streams.
func streamType(info *grpc.StreamServerInfo) string {
	if info.IsClientStream {
		return grpcBidiStream
	}
	return grpcServerStream
}

// method returns the cached children for a full gRPC method name; typ is
// its grpc_type.
func (m *metrics) method(full, typ string) *methodMetrics {
	slot := &m.recent[0]
	if n := len(full); n > 0 {
		slot = &m.recent[(n*7+int(full[n-1]))%len(m.recent)]
	}
	if mm := slot.Load(); mm != nil && mm.full == full {
		return mm
	}
	mm := m.lookupMethod(full, typ)
	slot.Store(mm)
	return mm
}

// lookupMethod is method without the cache.
func (m *metrics) lookupMethod(full, typ string) *methodMetrics {
	if mm, ok := m.methods.Load(full); ok {
		return mm.(*methodMetrics)
	}
	service, method := "unknown", "unknown"
	if i := strings.LastIndexByte(full, '/'); i > 0 {
		service, method = strings.TrimPrefix(full[:i], "/"), full[i+1:]
	}
	mm := &methodMetrics{
		started:  m.started.WithLabelValues(typ, service, method),
		handling: m.handling.WithLabelValues(typ, service, method),
		msgRecv:  m.msgRecv.WithLabelValues(typ, service, method),
		msgSent:  m.msgSent.WithLabelValues(typ, service, method),
		typ:      typ, service: service, method: method, full: full, parent: m,
	}
	actual, _ := m.methods.LoadOrStore(full, mm)
	return actual.(*methodMetrics)
}

func (mm *methodMetrics) done(code codes.Code, took time.Duration) {
	if code > codes.Unauthenticated {
		code = codes.Unknown
	}
	c := mm.handledCounter(code)
	c.Inc()
	mm.handling.Observe(took.Seconds())
}

func (mm *methodMetrics) handledCounter(code codes.Code) prometheus.Counter {
	if c := mm.handled[code].Load(); c != nil {
		return *c
	}
	// WithLabelValues returns the same counter to concurrent first callers.
	c := mm.parent.handled.WithLabelValues(mm.typ, mm.service, mm.method, code.String())
	mm.handled[code].Store(&c)
	return c
}

// RegisterMetrics adds collectors to the server's registry. Services built
// on the server (watch, lease, auth, policies) call it from New to report
// their own numbers next to the server's.
func (s *Server) RegisterMetrics(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := s.metrics.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// registerStoreMetrics adds the pulled gauges: storage size and quota,
// revisions, leadership and the apply loop's progress, under etcd's names.
func (s *Server) registerStoreMetrics() {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	one := func() float64 { return 1 }
	applied := func() float64 { return float64(s.loop.AppliedIndex()) }
	hasLeader, isLeader, leaderChanges, committed := one, one, one, applied
	pendingProposals := func() float64 { return float64(pending(s.loop)) }
	isLearner := func() float64 { return 0 }
	if s.raft != nil {
		// A cluster member's come from its Raft node.
		b := func(v bool) float64 {
			if v {
				return 1
			}
			return 0
		}
		hasLeader = func() float64 { return b(s.raft.Metrics().HasLeader) }
		isLeader = func() float64 { return b(s.raft.Metrics().IsLeader) }
		leaderChanges = func() float64 { return float64(s.raft.Metrics().LeaderChanges) }
		committed = func() float64 { return float64(s.raft.Metrics().Committed) }
		pendingProposals = func() float64 { return float64(s.raft.Metrics().Pending) }
		isLearner = func() float64 {
			m := s.applier.Members().Member(s.ids.member)
			return b(m != nil && m.IsLearner)
		}
		failed := func() uint64 { return s.raft.Metrics().Failed }
		s.metrics.raftFailed.Store(&failed)
	}
	s.metrics.reg.MustRegister(
		gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.",
			func() float64 { size, _ := s.dbSize(); return float64(size) }),
		gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.",
			func() float64 { _, inUse := s.dbSize(); return float64(inUse) }),
		gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
			func() float64 { return float64(s.quotaBytes()) }),
		gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.",
			func() float64 { return float64(s.store.Rev()) }),
		gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
			func() float64 { return float64(max(s.store.CompactRev(), 0)) }),
		gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", hasLeader),
		gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", isLeader),
		counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.", leaderChanges),
		// Gauges despite the _total, as etcd declares them.
		gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", committed),
		gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", applied),
		gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.",
			pendingProposals),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "etcd_server_version", Help: "Which version is running. 1 for 'server_version' label with current version.",
			ConstLabels: prometheus.Labels{"server_version": EtcdVersion},
		}, one),
		gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", isLearner),
		clusterVersionCollector{s},
		s.alarmGauge(pb.AlarmType_NOSPACE),
		s.alarmGauge(pb.AlarmType_CORRUPT),
		newPebbleCollector(s.store.DB),
		mvccCounters(s.applier.MVCCStats()),
		// etcd's lease metrics.
		gauge("metastore_leases", "The number of live leases.", func() float64 { return float64(s.lessor.Len()) }),
		counter("etcd_debugging_lease_granted_total", "The total number of granted leases.",
			func() float64 { return float64(s.lessor.Stats().Granted) }),
		counter("etcd_debugging_lease_revoked_total", "The total number of revoked leases.",
			func() float64 { return float64(s.lessor.Stats().Revoked) }),
		counter("etcd_debugging_lease_renewed_total", "The number of renewed leases seen by the leader.",
			func() float64 { return float64(s.lessor.Stats().Renewed) }),
	)
	// etcd's live-key gauge, from the count the store keeps with every batch.
	s.metrics.reg.MustRegister(gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.",
		func() float64 { return float64(s.store.LiveKeys()) }))
}

// alarmGauge is 1 while an alarm of type t is active on any member.
func (s *Server) alarmGauge(t pb.AlarmType) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "metastore_alarms_active", Help: "Active alarms by type.", ConstLabels: prometheus.Labels{"alarm": t.String()},
	}, func() float64 {
		if s.applier.HasAlarm(t) {
			return 1
		}
		return 0
	})
}

// observeBatch records one apply-loop batch (on the loop goroutine).
func (m *metrics) observeBatch(st apply.BatchStats) {
	m.batchSize.Observe(float64(st.Requests))
	m.applyLatency.Observe(st.Apply.Seconds())
	if st.Err != nil {
		m.loopFailed.Add(uint64(st.Requests))
		return
	}
	m.commitLatency.Observe(st.Commit.Seconds())
	// A single member has no separate log: the batch's synced commit is
	// its WAL's fsync, which etcd's disk alerts chart under this name.
	m.walFsync.Observe(st.Commit.Seconds())
}

// pebbleCollector reports a few of Pebble's own numbers (compactions, read
// amplification, memtables, block cache) from one Metrics() call per scrape.
type pebbleCollector struct {
	db          func() *pebble.DB
	compactions *prometheus.Desc
	readAmp     *prometheus.Desc
	memtable    *prometheus.Desc
	flushes     *prometheus.Desc
	diskUsage   *prometheus.Desc
	blockCache  *prometheus.Desc
}

func newPebbleCollector(db func() *pebble.DB) *pebbleCollector {
	return &pebbleCollector{
		db:          db,
		compactions: prometheus.NewDesc("metastore_pebble_compactions_total", "Pebble compactions completed.", nil, nil),
		readAmp:     prometheus.NewDesc("metastore_pebble_read_amplification", "Pebble read amplification (sublevels and levels a read may visit).", nil, nil),
		memtable:    prometheus.NewDesc("metastore_pebble_memtable_bytes", "Bytes in Pebble memtables.", nil, nil),
		flushes:     prometheus.NewDesc("metastore_pebble_flushes_total", "Pebble memtable flushes.", nil, nil),
		diskUsage:   prometheus.NewDesc("metastore_pebble_disk_usage_bytes", "Bytes Pebble uses on disk (tables, WAL, manifests).", nil, nil),
		blockCache:  prometheus.NewDesc("metastore_pebble_block_cache_bytes", "Bytes in Pebble's block cache.", nil, nil),
	}
}

func (c *pebbleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.compactions
	ch <- c.readAmp
	ch <- c.memtable
	ch <- c.flushes
	ch <- c.diskUsage
	ch <- c.blockCache
}

func (c *pebbleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.db().Metrics()
	ch <- prometheus.MustNewConstMetric(c.compactions, prometheus.CounterValue, float64(m.Compact.Count))
	ch <- prometheus.MustNewConstMetric(c.readAmp, prometheus.GaugeValue, float64(m.ReadAmp()))
	ch <- prometheus.MustNewConstMetric(c.memtable, prometheus.GaugeValue, float64(m.MemTable.Size))
	ch <- prometheus.MustNewConstMetric(c.flushes, prometheus.CounterValue, float64(m.Flush.Count))
	ch <- prometheus.MustNewConstMetric(c.diskUsage, prometheus.GaugeValue, float64(m.DiskSpaceUsage()))
	ch <- prometheus.MustNewConstMetric(c.blockCache, prometheus.GaugeValue, float64(m.BlockCache.Size))
}

// reloaded counts a reload of the configuration.
func (m *metrics) reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
		m.reloadOK.Set(1)
		return
	}
	m.reloads.WithLabelValues("failed").Inc()
	m.reloadOK.Set(0)
}

var clusterVersionDesc = prometheus.NewDesc("etcd_cluster_version",
	"Which version is running. 1 for 'cluster_version' label with current cluster version", []string{"cluster_version"}, nil)

// clusterVersionCollector reports etcd's etcd_cluster_version: 1 for the
// current cluster version ("major.minor"), which a downgrade changes.
type clusterVersionCollector struct{ s *Server }

var _ prometheus.Collector = clusterVersionCollector{}

// Describe implements prometheus.Collector.
func (c clusterVersionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- clusterVersionDesc }

// Collect implements prometheus.Collector.
func (c clusterVersionCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(clusterVersionDesc, prometheus.GaugeValue, 1, c.s.clusterVersion().cluster())
}

// pending is the proposals waiting to be applied, for a proposer that
// counts them.
func pending(p apply.Proposer) int {
	if q, ok := p.(interface{ Pending() int }); ok {
		return q.Pending()
	}
	return 0
}

// mvccCounters are etcd's mvcc operation series, with etcd's names, types
// and help (etcd declares the put size a gauge), pulled from the
// applier's counts (apply.MVCCStats says what is counted when).
func mvccCounters(st *apply.MVCCStats) prometheus.Collector {
	return mvccCollector{st}
}

var (
	mvccRangeDesc   = prometheus.NewDesc("etcd_mvcc_range_total", "Total number of ranges seen by this member.", nil, nil)
	mvccPutDesc     = prometheus.NewDesc("etcd_mvcc_put_total", "Total number of puts seen by this member.", nil, nil)
	mvccDeleteDesc  = prometheus.NewDesc("etcd_mvcc_delete_total", "Total number of deletes seen by this member.", nil, nil)
	mvccTxnDesc     = prometheus.NewDesc("etcd_mvcc_txn_total", "Total number of txns seen by this member.", nil, nil)
	mvccPutSizeDesc = prometheus.NewDesc("etcd_debugging_mvcc_total_put_size_in_bytes", "The total size of put kv pairs seen by this member.", nil, nil)
)

type mvccCollector struct{ st *apply.MVCCStats }

var _ prometheus.Collector = mvccCollector{}

// Describe implements prometheus.Collector.
func (c mvccCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mvccRangeDesc
	ch <- mvccPutDesc
	ch <- mvccDeleteDesc
	ch <- mvccTxnDesc
	ch <- mvccPutSizeDesc
}

// Collect implements prometheus.Collector: one read of the counts.
func (c mvccCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.st.Counts()
	ch <- prometheus.MustNewConstMetric(mvccRangeDesc, prometheus.CounterValue, float64(n.Ranges))
	ch <- prometheus.MustNewConstMetric(mvccPutDesc, prometheus.CounterValue, float64(n.Puts))
	ch <- prometheus.MustNewConstMetric(mvccDeleteDesc, prometheus.CounterValue, float64(n.Deletes))
	ch <- prometheus.MustNewConstMetric(mvccTxnDesc, prometheus.CounterValue, float64(n.Txns))
	ch <- prometheus.MustNewConstMetric(mvccPutSizeDesc, prometheus.GaugeValue, float64(n.PutBytes))
}
