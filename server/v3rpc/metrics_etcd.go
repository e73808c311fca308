package v3rpc

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// etcdMetrics are the series of etcd's basic set (the ones its
// TestNoMetricsMissing expects on every member) that metastore has a real
// counterpart for, with etcd's names, types, help strings, labels and
// buckets. Each is fed by the event etcd counts, where metastore has it;
// the ones that describe machinery metastore lacks are either zero because
// the event cannot happen here (and etcd's meaning still holds), or absent
// (tests/README.md lists them with the reason).
type etcdMetrics struct {
	healthOK, healthFailed prometheus.Counter
	promoted               prometheus.Counter
	defragSec              prometheus.Histogram
	defragging             atomic.Int64
	snapshotSec            prometheus.Histogram
	rangeSec               *prometheus.HistogramVec
	rangeBy                [2]atomic.Pointer[prometheus.Observer] // by success: false, true, made on first use
	clientRequests         *prometheus.CounterVec
	clientReqs             [2]sync.Map // client-api-version → counter, by type
	clientVers             atomic.Int64
	clientLast             [2]atomic.Pointer[versionCounter] // by type
	apply                  *applyMetrics
	snapDBSave             prometheus.Histogram
	wire                   wireBytes
}

// etcd's histogram buckets for these series.
var (
	defragBuckets   = prometheus.ExponentialBuckets(.1, 2, 13)
	snapshotBuckets = prometheus.ExponentialBuckets(.01, 2, 17)
	rangeBuckets    = prometheus.ExponentialBuckets(0.0001, 2, 20)
)

func newEtcdMetrics(reg *prometheus.Registry) *etcdMetrics {
	e := &etcdMetrics{
		healthOK: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_health_success", Help: "The total number of successful health checks",
		}),
		healthFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_health_failures", Help: "The total number of failed health checks",
		}),
		promoted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_learner_promote_successes", Help: "The total number of successful learner promotions while this member is leader.",
		}),
		defragSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "etcd_disk_backend_defrag_duration_seconds", Help: "The latency distribution of backend defragmentation.",
			Buckets: defragBuckets,
		}),
		snapshotSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "etcd_disk_backend_snapshot_duration_seconds", Help: "The latency distribution of backend snapshots.",
			Buckets: snapshotBuckets,
		}),
		clientRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcd_server_client_requests_total", Help: "The total number of client requests per client version.",
		}, []string{"type", "client_api_version"}),
	}
	e.rangeSec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "etcd_server_range_duration_seconds", Help: "The latency distributions of txn.Range",
		Buckets: rangeBuckets,
	}, []string{"success"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(e.healthOK, e.healthFailed, e.promoted, e.defragSec, e.snapshotSec, e.rangeSec, e.clientRequests,
		gauge("etcd_disk_defrag_inflight", "Whether or not defrag is active on the member. 1 means active, 0 means not.",
			func() float64 { return float64(min(e.defragging.Load(), 1)) }),
		gauge("os_fd_used", "The number of used file descriptors.", fdUsed),
		gauge("os_fd_limit", "The file descriptor limit.", fdLimit),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "etcd_server_go_version", Help: "Which Go version server is running with. 1 for 'server_go_version' label with current version.",
			ConstLabels: prometheus.Labels{"server_go_version": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	reg.MustRegister(notHereCollectors()...)
	e.apply = newApplyMetrics(reg)
	e.snapDBSave = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "etcd_snap_db_save_total_duration_seconds", Help: "The total latency distributions of v3 snapshot save",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 10),
	})
	reg.MustRegister(e.snapDBSave)
	reg.MustRegister(wireCollectors(&e.wire)...)
	return e
}

// notHereCollectors are etcd series about machinery that a metastore
// member does not run but that etcd's own member does not run either: an
// etcd server registers the gRPC proxy's cache and coalescing series and
// the v2 store's watch and expiry series, and they stay 0 there too (etcd
// 3.6 serves no v2 API and runs no proxy in the server). They report the
// same truth here: no such event has happened. Series whose etcd value
// counts something metastore does differently (the v2 store's membership
// writes, bbolt's commit phases) are left out instead.
func notHereCollectors() []prometheus.Collector {
	zero := func() float64 { return 0 }
	gauge := func(name, help string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, zero)
	}
	counter := func(name, help string) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, zero)
	}
	// etcd declares most of the proxy's as gauges; kept as declared.
	return []prometheus.Collector{
		gauge("etcd_grpc_proxy_cache_hits_total", "Total number of cache hits"),
		gauge("etcd_grpc_proxy_cache_keys_total", "Total number of keys/ranges cached"),
		gauge("etcd_grpc_proxy_cache_misses_total", "Total number of cache misses"),
		counter("etcd_grpc_proxy_events_coalescing_total", "Total number of events coalescing"),
		gauge("etcd_grpc_proxy_watchers_coalescing_total", "Total number of current watchers coalescing"),
		gauge("etcd_debugging_store_watchers", "Count of currently active watchers."),
		counter("etcd_debugging_store_expires_total", "Total number of expired keys."),
		counter("etcd_debugging_store_watch_requests_total", "Total number of incoming watch requests (new or reestablished)."),
	}
}

// fdUsed counts the process's open file descriptors, as etcd's
// os_fd_used does (the entries of /proc/self/fd, less the one reading it).
func fdUsed() float64 {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0
	}
	return float64(len(names) - 1)
}

// fdLimit is the soft RLIMIT_NOFILE, etcd's os_fd_limit.
func fdLimit() float64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return float64(l.Cur)
}

// registerIdentityMetrics adds the series that name this member (etcd's
// etcd_server_id, the member ID in hex), its Raft node's read-index,
// heartbeat and snapshot-install series, the applier's apply durations
// and etcd_debugging_auth_revision.
func (s *Server) registerIdentityMetrics() {
	s.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "etcd_server_id", Help: "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
			ConstLabels: prometheus.Labels{"server_id": strconv.FormatUint(s.ids.member, 16)},
		}, func() float64 { return 1 }),
	)
	// A single member runs no ReadIndex rounds, installs no snapshot from
	// a leader and sends no heartbeats: its counts stay 0, as etcd's do.
	var raftMetrics func() raftnode.Metrics = func() raftnode.Metrics { return raftnode.Metrics{} }
	if s.raft != nil {
		raftMetrics = s.raft.Metrics
	}
	counter := func(name, help string, f func(raftnode.Metrics) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(raftMetrics())) })
	}
	s.metrics.reg.MustRegister(
		counter("etcd_server_read_indexes_failed_total", "The total number of failed read indexes seen.",
			func(m raftnode.Metrics) uint64 { return m.ReadIndexFailed }),
		counter("etcd_server_slow_read_indexes_total", "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
			func(m raftnode.Metrics) uint64 { return m.SlowReadIndexes }),
		counter("etcd_server_heartbeat_send_failures_total", "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
			func(m raftnode.Metrics) uint64 { return m.HeartbeatFailures }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "etcd_server_snapshot_apply_in_progress_total", Help: "1 if the server is applying the incoming snapshot. 0 if none.",
		}, func() float64 {
			if raftMetrics().InstallingSnapshot {
				return 1
			}
			return 0
		}),
	)
	// The Raft node's watchdog: a loop held in one stage past its
	// threshold (the log names the stage).
	for _, l := range []struct {
		name string
		get  func(raftnode.Metrics) raftnode.LoopStall
	}{
		{"ready", func(m raftnode.Metrics) raftnode.LoopStall { return m.ReadyLoop }},
		{"apply", func(m raftnode.Metrics) raftnode.LoopStall { return m.ApplyLoop }},
	} {
		labels := prometheus.Labels{"loop": l.name}
		s.metrics.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "metastore_raft_loop_stall_seconds", ConstLabels: labels,
				Help: "How long the Raft ready loop or apply goroutine has been held in one stage, once past the watchdog's threshold (5s); 0 while it makes progress.",
			}, func() float64 { return l.get(raftMetrics()).For.Seconds() }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "metastore_raft_loop_stalls_total", ConstLabels: labels,
				Help: "Stalls of the Raft ready loop or apply goroutine: a stage held past the watchdog's threshold (5s).",
			}, func() float64 { return float64(l.get(raftMetrics()).Stalls) }),
		)
	}
	s.applier.SetApplyObserver(s.metrics.etcd.apply.observe)
	s.metrics.reg.MustRegister(leaseTTLCollector{s.lessor}, knownPeersCollector{s}, activePeersCollector{s})
	cm := newCompactionMetrics()
	s.store.SetCompactionObserver(cm)
	s.metrics.reg.MustRegister(cm.collectors()...)
	// Pebble's write-ahead log holds every write, the Raft log's included
	// (a cluster member's log shares the database); etcd declares it a
	// gauge.
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "etcd_disk_wal_write_bytes_total", Help: "Total number of bytes written in WAL.",
	}, func() float64 { return float64(s.store.DB().Metrics().WAL.BytesWritten) }))
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "etcd_mvcc_db_open_read_transactions", Help: "The number of currently open read transactions",
	}, func() float64 { return float64(s.store.OpenReads()) }))
	if s.auth != nil {
		s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "etcd_debugging_auth_revision", Help: "The current revision of auth store.",
		}, func() float64 { return float64(s.auth.Revision()) }))
	}
}

// HealthChecked counts one /health answer (etcd's
// etcd_server_health_success and _failures).
func (m *metrics) HealthChecked(ok bool) {
	if ok {
		m.etcd.healthOK.Inc()
		return
	}
	m.etcd.healthFailed.Inc()
}

// observeRange records one KV Range's read of the store, as etcd's
// etcd_server_range_duration_seconds times txn.Range.
func (m *metrics) observeRange(took time.Duration, err error) {
	i := 1
	if err != nil {
		i = 0
	}
	o := m.etcd.rangeBy[i].Load()
	if o == nil {
		c := m.etcd.rangeSec.WithLabelValues(strconv.FormatBool(i == 1))
		m.etcd.rangeBy[i].Store(&c)
		o = &c
	}
	(*o).Observe(float64(took.Microseconds()) / 1e6)
}

// firstIncomingValuer is a call context that reads its request metadata
// without copying it (the lean transport's, h2grpc): one allocation a
// request fewer than metadata.ValueFromIncomingContext.
type firstIncomingValuer interface {
	FirstIncomingValue(key string) (string, bool)
}

// clientRequest counts a client request by type (clientUnary or
// clientStream) and the client-api-version its client sent ("unknown"
// without one), as etcd's interceptors do (for every request with
// metadata, which every gRPC client sends). The children are cached by
// version: no label hashing per call.
func (m *metrics) clientRequest(ctx context.Context, typ int) {
	ver := "unknown"
	if fv, ok := ctx.(firstIncomingValuer); ok {
		if v, ok := fv.FirstIncomingValue(rpctypes.MetadataClientAPIVersionKey); ok {
			ver = v
		}
	} else if vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataClientAPIVersionKey); len(vs) > 0 {
		// NB: ValueFromIncomingContext copies one value; FromIncomingContext
		// would copy the whole metadata (five allocations a request).
		ver = vs[0]
	}
	// Clients of one server mostly send one version: the last one's
	// counter is checked first, without the map's interface conversion.
	last := &m.etcd.clientLast[typ]
	if l := last.Load(); l != nil && l.ver == ver {
		l.c.Inc()
		return
	}
	cache := &m.etcd.clientReqs[typ]
	if c, ok := cache.Load(ver); ok {
		c.(prometheus.Counter).Inc()
		last.Store(&versionCounter{ver, c.(prometheus.Counter)})
		return
	}
	// A label value must be UTF-8 (etcd refuses such a request; it is not
	// counted here); the cache stays bounded whatever clients send.
	if !utf8.ValidString(ver) {
		return
	}
	c := m.etcd.clientRequests.WithLabelValues([2]string{"unary", "stream"}[typ], ver)
	if n := m.etcd.clientVers.Add(1); n <= 256 {
		cache.Store(ver, c)
	}
	last.Store(&versionCounter{ver, c})
	c.Inc()
}

type versionCounter struct {
	ver string
	c   prometheus.Counter
}

// Request types of etcd_server_client_requests_total.
const (
	clientUnary  = 0
	clientStream = 1
)

// slowApply is etcd's default --warning-apply-duration: an applied
// request slower than this counts in etcd_server_slow_apply_total.
const slowApply = 100 * time.Millisecond

// applyMetrics are etcd_server_apply_duration_seconds and
// etcd_server_slow_apply_total, fed by the applier's observer. Children
// are made on first use, so that only observed series are exported, as
// etcd's are.
type applyMetrics struct {
	sec      *prometheus.HistogramVec
	slow     prometheus.Counter
	children [apply.NumOps][2]atomic.Pointer[prometheus.Observer] // by op, success
}

func newApplyMetrics(reg *prometheus.Registry) *applyMetrics {
	am := &applyMetrics{
		sec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "etcd_server_apply_duration_seconds", Help: "The latency distributions of v2 apply called by backend.",
			Buckets: rangeBuckets, // etcd's: 0.1ms doubling to 52s, as the range's
		}, []string{"version", "op", "success"}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_slow_apply_total", Help: "The total number of slow apply requests (likely overloaded from slow disk).",
		}),
	}
	reg.MustRegister(am.sec, am.slow)
	return am
}

func (am *applyMetrics) observe(op apply.Op, took time.Duration, success bool) {
	if op >= apply.NumOps {
		op = apply.OpUnknown
	}
	i := 0
	if success {
		i = 1
	}
	c := am.children[op][i].Load()
	if c == nil {
		o := am.sec.WithLabelValues("v3", op.String(), strconv.FormatBool(success))
		am.children[op][i].Store(&o)
		c = &o
	}
	(*c).Observe(float64(took.Microseconds()) / 1e6)
	if took > slowApply {
		am.slow.Inc()
	}
}

var leaseTTLDesc = prometheus.NewDesc("etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.", nil, nil)

// leaseTTLCollector reports the lessor's granted TTLs as etcd's histogram
// (upper bounds 1 s doubling to 2^23 s).
type leaseTTLCollector struct{ l *lease.Lessor }

// Describe implements prometheus.Collector.
func (c leaseTTLCollector) Describe(ch chan<- *prometheus.Desc) { ch <- leaseTTLDesc }

// Collect implements prometheus.Collector.
func (c leaseTTLCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.l.Stats().TTLs
	buckets := make(map[float64]uint64, lease.TTLBuckets)
	for i, n := range h.Cumulative {
		buckets[float64(uint64(1)<<i)] = n
	}
	ch <- prometheus.MustNewConstHistogram(leaseTTLDesc, h.Count, float64(h.Sum), buckets)
}

var knownPeersDesc = prometheus.NewDesc("etcd_network_known_peers", "The current number of known peers.", []string{"Local", "Remote"}, nil)

// knownPeersCollector is etcd's etcd_network_known_peers: 1 for each
// member of the membership (this one included), 0 for each removed one.
type knownPeersCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c knownPeersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- knownPeersDesc }

// Collect implements prometheus.Collector.
func (c knownPeersCollector) Collect(ch chan<- prometheus.Metric) {
	ms := c.s.applier.Members()
	local := strconv.FormatUint(c.s.ids.member, 16)
	for _, m := range ms.Members {
		ch <- prometheus.MustNewConstMetric(knownPeersDesc, prometheus.GaugeValue, 1, local, strconv.FormatUint(m.ID, 16))
	}
	for _, id := range ms.Removed {
		ch <- prometheus.MustNewConstMetric(knownPeersDesc, prometheus.GaugeValue, 0, local, strconv.FormatUint(id, 16))
	}
}

// compactionMetrics are etcd's etcd_debugging_mvcc_db_compaction_* series,
// fed by the store's compactor (mvcc.CompactionObserver): a step's pause
// is how long it held the store's write lock, as etcd's is how long a
// batch held the backend's; durations in whole milliseconds, as etcd
// records them.
type compactionMetrics struct {
	pauseMs, totalMs prometheus.Histogram
	keys             prometheus.Counter
	last             prometheus.Gauge
}

func newCompactionMetrics() *compactionMetrics {
	return &compactionMetrics{
		pauseMs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds", Help: "Bucketed histogram of db compaction pause duration.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		totalMs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds", Help: "Bucketed histogram of db compaction total duration.",
			Buckets: prometheus.ExponentialBuckets(100, 2, 14),
		}),
		keys: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_debugging_mvcc_db_compaction_keys_total", Help: "Total number of db keys compacted.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_debugging_mvcc_db_compaction_last", Help: "The unix time of the last db compaction. Resets to 0 on start.",
		}),
	}
}

func (c *compactionMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.pauseMs, c.totalMs, c.keys, c.last}
}

// CompactionStep implements mvcc.CompactionObserver.
func (c *compactionMetrics) CompactionStep(pause time.Duration, versions int) {
	c.pauseMs.Observe(float64(pause / time.Millisecond))
	c.keys.Add(float64(versions))
}

// CompactionDone implements mvcc.CompactionObserver.
func (c *compactionMetrics) CompactionDone(took time.Duration) {
	c.totalMs.Observe(float64(took / time.Millisecond))
	c.last.Set(float64(time.Now().Unix()))
}

// wireBytes counts the bytes of the messages the server's codec encodes
// and decodes, on either transport.
type wireBytes struct{ sent, received atomic.Uint64 }

// serverCodec is the codec of the server's transports: it counts the
// bytes of every message, as etcd's codec does.
func (s *Server) serverCodec() gogoCodec {
	c := newGogoCodec()
	c.wire = &s.metrics.etcd.wire
	return c
}

func wireCollectors(w *wireBytes) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "etcd_network_client_grpc_sent_bytes_total", Help: "The total number of bytes sent to grpc clients.",
		}, func() float64 { return float64(w.sent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "etcd_network_client_grpc_received_bytes_total", Help: "The total number of bytes received from grpc clients.",
		}, func() float64 { return float64(w.received.Load()) }),
	}
}

var activePeersDesc = prometheus.NewDesc("etcd_network_active_peers", "The current number of active peer connections.", []string{"Local", "Remote"}, nil)

// activePeersCollector is etcd's etcd_network_active_peers: for each other
// member, 1 while this member's connection to it is up, else 0. A single
// member has no peers and reports none, as etcd's.
type activePeersCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c activePeersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- activePeersDesc }

// Collect implements prometheus.Collector.
func (c activePeersCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.raft == nil || c.s.activeSince == nil {
		return
	}
	local := strconv.FormatUint(c.s.ids.member, 16)
	for _, m := range c.s.applier.Members().Members {
		if m.ID == c.s.ids.member {
			continue
		}
		v := 0.0
		if !c.s.activeSince(m.ID).IsZero() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(activePeersDesc, prometheus.GaugeValue, v, local, strconv.FormatUint(m.ID, 16))
	}
}
