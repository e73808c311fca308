package server

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
)

func refusedBy(s *Server, scope string) float64 {
	return metricValue(s, "metastore_server_rate_limited_total", scope)
}

// createWatch sends a create request on st and returns its first response.
func createWatch(t *testing.T, st pb.Watch_WatchClient, key string) *pb.WatchResponse {
	t.Helper()
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStreamAndUnaryBuckets: the stream bucket refuses the watch creation
// after its burst (canceled with etcd's "too many requests") and a new
// keep-alive stream, while unary calls go on; the unary bucket refuses
// unary calls while watches are still created. Each refusal is counted
// under its bucket.
func TestStreamAndUnaryBuckets(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) {
		c.Limits.StreamRateLimit, c.Limits.StreamRateBurst = 1, 3
	})
	ctx := context.Background()
	wc := pb.NewWatchClient(ts.conn)
	st, err := wc.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if r := createWatch(t, st, "a"); !r.Created || r.Canceled {
			t.Fatalf("watch %d: %v", i, r)
		}
	}
	r := createWatch(t, st, "a")
	if !r.Created || !r.Canceled || r.CancelReason != rpctypes.ErrorDesc(rpctypes.ErrGRPCRequestTooManyRequests) {
		t.Fatalf("4th watch creation: %v, want canceled with %q", r, rpctypes.ErrorDesc(rpctypes.ErrGRPCRequestTooManyRequests))
	}
	// Unary traffic is not held back by the empty stream bucket.
	for i := range 20 {
		if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte{byte(i)}}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	// The stream's existing watchers still get events.
	if r, err := st.Recv(); err != nil || len(r.Events) == 0 {
		t.Fatalf("existing watcher: %v, %v", r, err)
	}
	ka, err := pb.NewLeaseClient(ts.conn).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ka.Recv(); !errors.Is(err, rpctypes.ErrGRPCRequestTooManyRequests) && !strings.Contains(errString(err), "too many requests") {
		t.Fatalf("keep-alive stream with an empty stream bucket: %v", err)
	}
	if got := refusedBy(ts.s, "stream"); got != 2 {
		t.Errorf("stream refusals counted %v, want 2", got)
	}
	if got := metricValue(ts.s, "metastore_server_rate_limit", "stream"); got != 1 {
		t.Errorf("metastore_server_rate_limit{scope=stream} = %v, want 1", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestUnaryBucket(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) {
		c.Limits.UnaryRateLimit, c.Limits.UnaryRateBurst = 1, 5
	})
	ctx := context.Background()
	var refused int
	for range 6 {
		if _, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")}); err != nil {
			if err.Error() != rpctypes.ErrGRPCRequestTooManyRequests.Error() {
				t.Fatalf("Range: %v, want %v", err, rpctypes.ErrGRPCRequestTooManyRequests)
			}
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d of 6 calls refused with a burst of 5, want 1", refused)
	}
	// Watches are created from the stream bucket (unlimited here).
	st, err := pb.NewWatchClient(ts.conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if r := createWatch(t, st, "a"); r.Canceled {
			t.Fatalf("watch refused: %v", r)
		}
	}
	if got := refusedBy(ts.s, "unary"); got != 1 {
		t.Errorf("unary refusals counted %v, want 1", got)
	}
}

// TestReloadLiveSettings: a reload applies rate limits, max_connections and
// the slow-request threshold at once and counts ok; a changed setting
// that takes a restart is not applied and the reload is counted as
// restart_required.
func TestReloadLiveSettings(t *testing.T) {
	ts := startTestServer(t, nil)
	s := ts.s
	ctx := context.Background()
	next := *s.cfg
	s.SetConfigReloader(func() (*config.Config, error) { c := next; return &c, nil })
	reloads := func(result string) float64 { return metricValue(s, "metastore_config_reloads_total", result) }

	next.Limits.UnaryRateLimit, next.Limits.UnaryRateBurst = 1, 2
	next.Limits.MaxConnections = 1
	next.Monitoring.SlowRequestThreshold = time.Nanosecond
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if reloads("ok") != 1 || reloads("restart_required") != 0 {
		t.Fatalf("reloads ok=%v restart_required=%v", reloads("ok"), reloads("restart_required"))
	}
	if s.live.slowThreshold() != time.Nanosecond {
		t.Errorf("slow threshold %v after reload", s.live.slowThreshold())
	}
	var refused bool
	for range 3 {
		if _, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")}); err != nil {
			refused = true
		}
	}
	if !refused {
		t.Fatal("the reloaded unary limit refused nothing")
	}
	if got := metricValue(s, "metastore_server_slow_requests_total", ""); got == 0 {
		t.Error("the reloaded slow-request threshold logged nothing")
	}
	// The open connection keeps its slot; a new one is over the reloaded
	// max_connections and closed at once.
	c, err := net.Dial("tcp", s.ClientAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a connection over the reloaded max_connections was served: %v", err)
	}
	c.Close()

	// max_txn_ops takes a restart: not applied, the reload says so.
	next.Limits.MaxTxnOps = 1000
	next.Limits.UnaryRateLimit = 0
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if reloads("restart_required") != 1 {
		t.Fatalf("reloads restart_required=%v, want 1", reloads("restart_required"))
	}
	if got := s.live.restart; len(got) != 1 || got[0] != "limits.max_txn_ops" {
		t.Fatalf("restart required for %v", got)
	}
	txn := &pb.TxnRequest{}
	for i := range 200 {
		txn.Success = append(txn.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte{byte(i)}}}})
	}
	if _, err := ts.kv.Txn(ctx, txn); err == nil || err.Error() != rpctypes.ErrGRPCTooManyOps.Error() {
		t.Fatalf("a txn of 200 ops after a reload to max_txn_ops 1000: %v, want %v (takes a restart)", err, rpctypes.ErrGRPCTooManyOps)
	}
	// ...while the rate limit in the same reload was applied.
	for i := range 10 {
		if _, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")}); err != nil {
			t.Fatalf("Range %d after the unary limit was removed: %v", i, err)
		}
	}
}

// metricValue reads a counter or gauge of s's registry: the sample of
// name whose one label has the value label ("" for none). 0 if absent.
func metricValue(s *Server, name, label string) float64 {
	mfs, err := s.metrics.Registry().Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// isTimeout reports a read that timed out (the connection stayed open).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFileWatchReloadsLiveSettings: the config-file watch that reloads
// policies applies a changed rate limit too, without SIGHUP.
func TestFileWatchReloadsLiveSettings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.yaml")
	write := func(yaml string) {
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("limits: {stream_rate_limit: 5}\n")
	args := []string{"--config-file", path, "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://127.0.0.1:0", "--policy-watch-interval", "20ms"}
	cfg, _, err := config.Load(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetConfigReloader(func() (*config.Config, error) { c, _, err := config.Load(args, nil); return c, err })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if got := metricValue(s, "metastore_server_rate_limit", "stream"); got != 5 {
		t.Fatalf("stream limit %v at start", got)
	}
	write("limits: {stream_rate_limit: 12, unary_rate_limit: 7}\n")
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(s, "metastore_server_rate_limit", "unary") != 7 || metricValue(s, "metastore_server_rate_limit", "stream") != 12 {
		if time.Now().After(deadline) {
			t.Fatal("the changed file was not applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := metricValue(s, "metastore_config_reloads_total", "ok"); got != 1 {
		t.Errorf("reloads ok = %v, want 1", got)
	}
}
