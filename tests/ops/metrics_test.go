package ops

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/tests/framework"
)

// scrape returns the value of the first /metrics sample whose name and
// labels start with prefix (e.g. `name{a="b"`), or -1.
func scrape(t *testing.T, endpoint, prefix string) float64 {
	t.Helper()
	body := metricsText(t, endpoint)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, ",") && !strings.HasPrefix(rest, "}") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return -1
}

func metricsText(t *testing.T, endpoint string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetrics: /metrics is the server's own registry (two servers in one
// process report their own numbers) with etcd's names for what etcd
// dashboards chart.
func TestMetrics(t *testing.T) {
	t.Parallel()
	a := framework.StartMetastoreConfig(t, nil)
	b := framework.StartMetastoreConfig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := a.Client(t)
	for i := range 5 {
		if _, err := cli.Put(ctx, "k"+strconv.Itoa(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Get(ctx, "missing-key"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, 3); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`: 5,
		`grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}`:              1,
		`grpc_server_handling_seconds_count{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`:       5,
		"etcd_debugging_mvcc_current_revision":        6,
		"etcd_debugging_mvcc_compact_revision":        3,
		"etcd_server_has_leader":                      1,
		"etcd_server_is_leader":                       1,
		"etcd_server_quota_backend_bytes":             2 << 30,
		"etcd_server_is_learner":                      0,
		`etcd_cluster_version{cluster_version="3.6"}`: 1,
	}
	for name, v := range want {
		if got := scrape(t, a.Endpoint, name); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	for _, name := range []string{
		"etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
		"etcd_disk_backend_commit_duration_seconds_count", "etcd_disk_wal_fsync_duration_seconds_count", "etcd_server_proposals_applied_total",
		"metastore_apply_batch_duration_seconds_count", "process_resident_memory_bytes", "go_goroutines",
	} {
		if got := scrape(t, a.Endpoint, name); got <= 0 {
			t.Errorf("%s = %v, want > 0", name, got)
		}
	}
	if got := scrape(t, b.Endpoint, `grpc_server_handled_total{grpc_code="OK",grpc_method="Put"`); got != -1 {
		t.Errorf("the second server reports the first one's puts: %v", got)
	}
	if got := scrape(t, b.Endpoint, "etcd_debugging_mvcc_current_revision"); got != 1 {
		t.Errorf("second server's revision %v, want 1", got)
	}
}
