package compat

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/tests/framework"
)

// watchMetricNames are etcd's watch metrics, in the order reported.
var watchMetricNames = []string{
	"etcd_debugging_mvcc_watch_stream_total",
	"etcd_debugging_mvcc_watcher_total",
	"etcd_debugging_mvcc_slow_watcher_total",
	"etcd_debugging_mvcc_pending_events_total",
	"etcd_debugging_mvcc_events_total",
}

// metricsPage is one scrape of /metrics on a client URL: the value, help
// and type of each unlabelled sample.
type metricsPage struct {
	value      map[string]float64
	help, kind map[string]string
}

func scrapeMetrics(t *testing.T, endpoint string) metricsPage {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + endpoint + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	p := metricsPage{value: map[string]float64{}, help: map[string]string{}, kind: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, help, _ := strings.Cut(rest, " ")
			p.help[name] = help
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, kind, _ := strings.Cut(rest, " ")
			p.kind[name] = kind
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			p.value[f[0]] = v
		}
	}
	return p
}

// TestWatchMetrics: etcd's watch metrics on /metrics of the client URL,
// with etcd's help and types, following etcd's clientv3 integration tests
// (TestV3WatchCancellation, TestV3WatchCloseCancelRace,
// TestWatchCancelAndCloseClient): watchers and streams go when canceled,
// events sent are counted, nothing stays pending once delivered, and no
// watcher stays slow once caught up or canceled for compaction.
//
// NB: not parallel. An in-process etcd reports to the process-wide
// Prometheus registry, so the other tests' etcds would move its numbers;
// every check is a difference from the first scrape.
func TestWatchMetrics(t *testing.T) {
	var logs [][]string
	for _, b := range framework.Backends() {
		var log []string
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			log = watchMetricsScenario(t, srv)
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd; fix the test before comparing metastore")
		}
		logs = append(logs, log)
	}
	if len(logs) == 2 {
		if d := cmp.Diff(logs[0], logs[1]); d != "" {
			t.Errorf("observations differ (-etcd +metastore):\n%s", d)
		}
	}
}

func watchMetricsScenario(t *testing.T, srv *framework.Server) []string {
	var log []string
	base := scrapeMetrics(t, srv.Endpoint)
	for _, name := range watchMetricNames {
		if _, ok := base.value[name]; !ok {
			t.Errorf("%s missing from /metrics", name)
		}
		log = append(log, fmt.Sprintf("%s: %s; %s", name, base.kind[name], base.help[name]))
	}
	// check waits until each metric is base+want (a cancellation reaches
	// the server asynchronously), then logs what it saw. A want of -1 is
	// not checked (how many events wait in a stalled stream's buffers is
	// the implementation's).
	check := func(step string, want ...float64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			p := scrapeMetrics(t, srv.Endpoint)
			got := make([]float64, len(want))
			for i := range want {
				if got[i] = -1; want[i] != -1 {
					got[i] = p.value[watchMetricNames[i]] - base.value[watchMetricNames[i]]
				}
			}
			if cmp.Equal(got, want) || time.Now().After(deadline) {
				if !cmp.Equal(got, want) {
					t.Errorf("%s: streams, watchers, slow, pending, events %v from the start, want %v", step, got, want)
				}
				log = append(log, fmt.Sprintf("%s: %v", step, got))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := srv.Client(t)
	for i := range 10 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	check("no watch yet", 0, 0, 0, 0, 0)

	// TestV3WatchCancellation: one watch kept, 1000 created and canceled.
	keepCtx, keepCancel := context.WithCancel(ctx)
	defer keepCancel()
	nextResp(t, cli.Watch(keepCtx, "/foo", clientv3.WithCreatedNotify()))
	check("one watch", 1, 1, 0, 0, 0)
	for range 1000 {
		wctx, wcancel := context.WithCancel(keepCtx)
		cli.Watch(wctx, "/foo")
		wcancel()
	}
	check("1000 watches canceled", 1, 1, 0, 0, 0)

	// TestWatchCancelAndCloseClient: watches on streams of their own.
	var cancels []context.CancelFunc
	for i := range 10 {
		mctx := metadata.NewOutgoingContext(ctx, metadata.Pairs("some-key", strconv.Itoa(i)))
		wctx, wcancel := context.WithCancel(mctx)
		cancels = append(cancels, wcancel)
		nextResp(t, cli.Watch(wctx, strconv.Itoa(i), clientv3.WithCreatedNotify()))
	}
	check("10 more streams", 11, 11, 0, 0, 0)
	for _, c := range cancels {
		c()
	}
	check("their watches canceled", 1, 1, 0, 0, 0)

	// History: ten events delivered, none left pending, no watcher slow.
	histCtx, histCancel := context.WithCancel(keepCtx)
	hist := cli.Watch(histCtx, "k", clientv3.WithPrefix(), clientv3.WithRev(2))
	for n := 0; n < 10; {
		n += len(nextResp(t, hist).Events)
	}
	check("history delivered", 1, 2, 0, 0, 10)
	if _, err := cli.Put(ctx, "k0", "v2"); err != nil {
		t.Fatal(err)
	}
	if wr := nextResp(t, hist); len(wr.Events) != 1 {
		t.Fatalf("live event: %+v", wr)
	}
	check("a live event", 1, 2, 0, 0, 11)
	histCancel()
	check("history watch canceled", 1, 1, 0, 0, 11)

	// A watch from a compacted revision: canceled by the server, then by
	// clientv3; it is neither slow nor counted afterwards.
	if _, err := cli.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if wr := nextResp(t, cli.Watch(keepCtx, "k", clientv3.WithPrefix(), clientv3.WithRev(2))); wr.CompactRevision != 5 {
		t.Fatalf("compacted watch: %+v", wr)
	}
	check("compacted watch canceled", 1, 1, 0, 0, 11)

	// A stream whose client stops reading: its watcher falls behind (etcd:
	// a victim once the stream's channel is full; metastore: lagging once
	// its queue is) and catches up when the client reads again.
	const stalledRevs, stalledValue = 500, 100 << 10
	rawCtx, rawCancel := context.WithCancel(ctx)
	defer rawCancel()
	// NB: etcd catches the victim up in one message of every revision it
	// missed (tens of MiB here).
	raw, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(rawCtx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("s/"), RangeEnd: []byte("s0"),
	}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := raw.Recv(); err != nil || !r.Created {
		t.Fatalf("raw watch: %v %v", r, err)
	}
	big := strings.Repeat("x", stalledValue)
	for i := range stalledRevs {
		if _, err := cli.Put(ctx, fmt.Sprintf("s/%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	check("a stalled stream", 2, 2, 1, -1, -1)
	for n := 0; n < stalledRevs; {
		r, err := raw.Recv()
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Events)
	}
	check("the stalled stream read", 2, 2, 0, 0, 11+stalledRevs)
	rawCancel()
	check("the stalled stream closed", 1, 1, 0, 0, 11+stalledRevs)

	// TestV3WatchCloseCancelRace: nothing left once the streams close.
	keepCancel()
	check("every watch canceled", 0, 0, 0, 0, 11+stalledRevs)
	return log
}
