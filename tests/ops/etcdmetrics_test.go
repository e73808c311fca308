package ops

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// etcdBasicSeries are series of etcd's basic set (etcd's e2e
// TestNoMetricsMissing) that metastore exports: each must be on both
// servers with the same type, help and label names. The ones metastore
// leaves out are listed in tests/README.md with the reason.
var etcdBasicSeries = []string{
	"os_fd_used", "os_fd_limit",
	"promhttp_metric_handler_requests_in_flight", "promhttp_metric_handler_requests_total",
	"etcd_server_id", "etcd_server_go_version",
	"etcd_server_health_success", "etcd_server_health_failures",
	"etcd_server_learner_promote_successes",
	"etcd_server_heartbeat_send_failures_total",
	"etcd_server_read_indexes_failed_total", "etcd_server_slow_read_indexes_total",
	"etcd_server_snapshot_apply_in_progress_total",
	"etcd_server_slow_apply_total", "etcd_server_apply_duration_seconds",
	"etcd_server_range_duration_seconds", "etcd_server_client_requests_total",
	"etcd_server_quota_backend_bytes", "etcd_server_is_learner",
	"etcd_disk_backend_defrag_duration_seconds", "etcd_disk_defrag_inflight",
	"etcd_disk_backend_snapshot_duration_seconds",
	"etcd_debugging_auth_revision", "etcd_debugging_lease_ttl_total",
	"etcd_network_known_peers",
	"etcd_grpc_proxy_cache_hits_total", "etcd_grpc_proxy_cache_keys_total", "etcd_grpc_proxy_cache_misses_total",
	"etcd_grpc_proxy_events_coalescing_total", "etcd_grpc_proxy_watchers_coalescing_total",
	"etcd_debugging_store_watchers", "etcd_debugging_store_expires_total", "etcd_debugging_store_watch_requests_total",
	"etcd_mvcc_db_open_read_transactions",
	"etcd_disk_wal_write_bytes_total", "etcd_snap_db_save_total_duration_seconds",
	"etcd_network_client_grpc_sent_bytes_total", "etcd_network_client_grpc_received_bytes_total",
	"etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds", "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
	"etcd_debugging_mvcc_db_compaction_keys_total", "etcd_debugging_mvcc_db_compaction_last",
}

// TestEtcdBasicMetrics runs the same requests against an etcd process and
// a metastore process (the mvcc sequence, which grants a 60 s lease, and
// a /health check) and compares the series of etcdBasicSeries: type,
// help, label names, and how the ones fed by those requests moved.
func TestEtcdBasicMetrics(t *testing.T) {
	etcd := framework.StartEtcdProcess(t, t.TempDir())
	ms := framework.StartMetastoreProcess(t, t.TempDir())
	fams := map[string]map[string]*family{}
	before := map[string]map[string]*family{}
	ids := map[string]string{}
	for _, p := range []*framework.Process{etcd, ms} {
		before[p.Kind] = parseFamilies(t, metricsText(t, p.Endpoint))
		cli := framework.NewClient(t, p.Endpoint)
		mvccSequence(t, cli)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := cli.Status(ctx, p.Endpoint)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ids[p.Kind] = strconv.FormatUint(st.Header.MemberId, 16)
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + p.Endpoint + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		fams[p.Kind] = parseFamilies(t, metricsText(t, p.Endpoint))
	}
	for _, name := range etcdBasicSeries {
		e, m := fams["etcd"][name], fams["metastore"][name]
		switch {
		case e == nil:
			t.Errorf("%s: not exported by etcd", name)
			continue
		case m == nil:
			t.Errorf("%s: not exported by metastore", name)
			continue
		}
		if e.typ != m.typ || e.help != m.help {
			t.Errorf("%s: metastore %s %q, etcd %s %q", name, m.typ, m.help, e.typ, e.help)
		}
		if el, ml := e.labelNames(), m.labelNames(); !slices.Equal(el, ml) {
			t.Errorf("%s: labels %v on metastore, %v on etcd", name, ml, el)
		}
	}
	for _, kind := range []string{"etcd", "metastore"} {
		f, b := fams[kind], before[kind]
		grew := func(series string, labels map[string]string) float64 {
			return f[series].value(labels) - b[series].value(labels)
		}
		// Counted by these requests on both servers.
		if d := grew("etcd_server_health_success", nil); d != 1 {
			t.Errorf("%s: etcd_server_health_success grew by %v, want 1", kind, d)
		}
		if d := grew("etcd_debugging_lease_ttl_total_count", nil); d != 1 {
			t.Errorf("%s: lease TTL histogram count grew by %v, want 1", kind, d)
		}
		if d := grew("etcd_debugging_lease_ttl_total_bucket", map[string]string{"le": "32"}); d != 0 {
			t.Errorf("%s: a 60 s TTL counted at le=32 (%v)", kind, d)
		}
		if d := grew("etcd_debugging_lease_ttl_total_bucket", map[string]string{"le": "64"}); d != 1 {
			t.Errorf("%s: a 60 s TTL not counted at le=64 (%v)", kind, d)
		}
		if d := grew("etcd_server_apply_duration_seconds_count", map[string]string{"version": "v3", "op": "Put", "success": "true"}); d < 5 {
			t.Errorf("%s: apply duration of puts grew by %v, want at least 5", kind, d)
		}
		if d := grew("etcd_server_apply_duration_seconds_count", map[string]string{"version": "v3", "op": "LeaseGrant", "success": "true"}); d != 1 {
			t.Errorf("%s: apply duration of lease grants grew by %v, want 1", kind, d)
		}
		if d := grew("etcd_server_range_duration_seconds_count", map[string]string{"success": "true"}); d < 3 {
			t.Errorf("%s: range duration grew by %v, want at least 3", kind, d)
		}
		if d := grew("etcd_server_client_requests_total", map[string]string{"type": "unary"}); d < 10 {
			t.Errorf("%s: unary client requests grew by %v", kind, d)
		}
		if v := f["etcd_server_id"].value(map[string]string{"server_id": ids[kind]}); v != 1 {
			t.Errorf("%s: etcd_server_id{server_id=%q} = %v", kind, ids[kind], v)
		}
		if v := f["etcd_network_known_peers"].value(map[string]string{"Local": ids[kind], "Remote": ids[kind]}); v != 1 {
			t.Errorf("%s: etcd_network_known_peers of itself = %v", kind, v)
		}
		if used, limit := f["os_fd_used"].value(nil), f["os_fd_limit"].value(nil); used < 3 || limit < used {
			t.Errorf("%s: os_fd_used %v, os_fd_limit %v", kind, used, limit)
		}
		for _, name := range []string{"etcd_network_client_grpc_sent_bytes_total", "etcd_network_client_grpc_received_bytes_total", "etcd_disk_wal_write_bytes_total"} {
			if d := grew(name, nil); d < 100 {
				t.Errorf("%s: %s grew by %v", kind, name, d)
			}
		}
		// The physical compaction: done once, obsolete versions deleted.
		if d := grew("etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count", nil); d != 1 {
			t.Errorf("%s: compaction total duration count grew by %v, want 1", kind, d)
		}
		if d := grew("etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count", nil); d < 1 {
			t.Errorf("%s: compaction pauses grew by %v", kind, d)
		}
		if d := grew("etcd_debugging_mvcc_db_compaction_keys_total", nil); d < 5 {
			t.Errorf("%s: compacted keys grew by %v, want at least 5", kind, d)
		}
		if v := f["etcd_debugging_mvcc_db_compaction_last"].value(nil); v < float64(time.Now().Add(-time.Minute).Unix()) {
			t.Errorf("%s: etcd_debugging_mvcc_db_compaction_last %v", kind, v)
		}
		t.Logf("%s: compacted keys +%v", kind, grew("etcd_debugging_mvcc_db_compaction_keys_total", nil))
		if v := f["etcd_debugging_auth_revision"].value(nil); v < 1 {
			t.Errorf("%s: etcd_debugging_auth_revision %v", kind, v)
		}
	}
	// The client sends its API version; both label it alike.
	ev := fams["etcd"]["etcd_server_client_requests_total"].labelValues("client_api_version")
	mv := fams["metastore"]["etcd_server_client_requests_total"].labelValues("client_api_version")
	if !slices.Equal(ev, mv) {
		t.Errorf("client_api_version values: metastore %v, etcd %v", mv, ev)
	}
}

// family is one metric family of the text exposition format.
type family struct {
	typ, help string
	samples   []sample
}

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// labelNames are the label names of the family's samples, sorted, without
// the histogram's le.
func (f *family) labelNames() []string {
	var out []string
	for _, s := range f.samples {
		for k := range s.labels {
			if k != "le" && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (f *family) labelValues(name string) []string {
	var out []string
	for _, s := range f.samples {
		if v, ok := s.labels[name]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// value sums the samples named as the family or a suffix of it (series
// names the full sample name) whose labels include want; 0 for none.
func (f *family) value(want map[string]string) float64 {
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, s := range f.samples {
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			sum += s.value
		}
	}
	return sum
}

// parseFamilies reads the text format: families by name, and each sample
// also under its own name (a histogram's _bucket, _sum and _count).
func parseFamilies(t *testing.T, text string) map[string]*family {
	t.Helper()
	out := map[string]*family{}
	get := func(name string) *family {
		if out[name] == nil {
			out[name] = &family{}
		}
		return out[name]
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.SplitN(line, " ", 4); len(f) >= 3 && f[0] == "#" {
			switch f[1] {
			case "TYPE":
				get(f[2]).typ = f[3]
			case "HELP":
				if len(f) == 4 {
					get(f[2]).help = f[3]
				}
			}
			continue
		}
		if line == "" {
			continue
		}
		s := parseSample(t, line)
		fam := s.name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(s.name, suffix); ok && out[base] != nil && out[base].typ == "histogram" {
				fam = base
				get(s.name).samples = append(get(s.name).samples, s)
			}
		}
		get(fam).samples = append(get(fam).samples, s)
	}
	return out
}

func parseSample(t *testing.T, line string) sample {
	t.Helper()
	s := sample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
		s.name = line[:i]
		rest = line[i+1:]
		for !strings.HasPrefix(rest, "}") {
			eq := strings.Index(rest, "=\"")
			if eq < 0 {
				t.Fatalf("metric line %q: bad labels", line)
			}
			k := rest[:eq]
			rest = rest[eq+2:]
			var v strings.Builder
			for rest != "" && rest[0] != '"' {
				if rest[0] == '\\' && len(rest) > 1 {
					rest = rest[1:]
				}
				v.WriteByte(rest[0])
				rest = rest[1:]
			}
			s.labels[k] = v.String()
			rest = strings.TrimPrefix(strings.TrimPrefix(rest, "\""), ",")
		}
		rest = strings.TrimSpace(rest[1:])
	} else {
		f := strings.Fields(line)
		s.name, rest = f[0], f[1]
	}
	v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
	if err != nil {
		t.Fatalf("metric line %q: %v", line, err)
	}
	s.value = v
	return s
}
