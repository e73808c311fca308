package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/metastore-dev/metastore/tests/framework"
)

// heapInuseMiB scrapes the server's Go heap in use from /metrics.
func heapInuseMiB(t *testing.T, endpoint string) int {
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
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("heap metric %q: %v", line, err)
			}
			return int(f) >> 20
		}
	}
	t.Fatal("no go_memstats_heap_inuse_bytes in /metrics")
	return 0
}

// committedTxn is one revision the writer of TestSlowWatchers made.
type committedTxn struct {
	rev  int64
	keys []string
	val  []byte
}

// TestSlowWatchers opens watch streams whose clients stop reading (their
// connections stop being read after the handshake) while a writer commits
// far more event bytes than the server could buffer sensibly. The server
// must stay up and keep serving other clients, its memory must stay
// bounded, and once the slow clients read again each watcher must receive
// exactly the committed history (every revision, whole and in order, with
// prev_kv), or be canceled for compaction as etcd would; this run does not
// compact, so it must catch up.
func TestSlowWatchers(t *testing.T) {
	t.Parallel()
	if framework.OnlyEtcd() {
		t.Skip("metastore only")
	}
	p := framework.StartMetastoreProcess(t, t.TempDir())
	goodConn := framework.NewClient(t, p.Endpoint).ActiveConnection()
	good := pb.NewKVClient(goodConn)
	servedWithin(t, good, 10*time.Second, "start")

	// Each revision puts keysPerTxn values of valSize under slow/; in all
	// txns*keysPerTxn*valSize bytes of events, twice that with prev_kv.
	const keysPerTxn, valSize = 16, 16 << 10
	txns := 128 // 32 MiB of values
	if soak() {
		txns = 1024 // 256 MiB
	}
	txns = envInt(t, "METASTORE_SLOW_WATCH_TXNS", txns)
	const streams = 4
	totalMiB := txns * keysPerTxn * valSize >> 20

	r0, err := good.Range(context.Background(), &pb.RangeRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0")})
	if err != nil {
		t.Fatal(err)
	}
	start := r0.Header.Revision + 1

	type slowClient struct {
		conn  *grpc.ClientConn
		stall *stallConn
		st    pb.Watch_WatchClient
	}
	var slow []*slowClient
	for i := 0; i < streams; i++ {
		sc := &slowClient{}
		conn, err := grpc.NewClient(p.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				sc.stall = &stallConn{Conn: c, budget: 64 << 10, release: make(chan struct{})}
				return sc.stall, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		sc.conn = conn
		st, err := pb.NewWatchClient(conn).Watch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// Half the streams ask for prev_kv (the server then holds twice the
		// bytes per event), one watches a single key of the range too.
		req := &pb.WatchCreateRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0"), StartRevision: start, PrevKv: i%2 == 0}
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil || !resp.Created {
			t.Fatalf("watch create: %v %v", resp, err)
		}
		sc.st = st
		slow = append(slow, sc)
		t.Cleanup(func() { sc.stall.Close(); conn.Close() })
	}
	rss0, heap0 := rssKiB(t, p.Pid()), heapInuseMiB(t, p.Endpoint)

	// The writer: one txn per revision, overwriting the same keys so that
	// every event after the first round has a prev_kv.
	var committed []committedTxn
	val := bytes.Repeat([]byte("v"), valSize)
	var peakRSS, peakHeap int
	var worst time.Duration
	begin := time.Now()
	for i := 0; i < txns; i++ {
		ops := make([]*pb.RequestOp, keysPerTxn)
		keys := make([]string, keysPerTxn)
		v := append([]byte(fmt.Sprintf("%06d-", i)), val...)
		for k := range ops {
			keys[k] = fmt.Sprintf("slow/%02d", k)
			ops[k] = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(keys[k]), Value: v}}}
		}
		r, err := good.Txn(context.Background(), &pb.TxnRequest{Success: ops})
		if err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
		committed = append(committed, committedTxn{rev: r.Header.Revision, keys: keys, val: v})
		if i%32 == 31 {
			t0 := time.Now()
			servedWithin(t, good, 5*time.Second, "during-writes")
			worst = max(worst, time.Since(t0))
			peakRSS, peakHeap = max(peakRSS, rssKiB(t, p.Pid())), max(peakHeap, heapInuseMiB(t, p.Endpoint))
		}
	}
	t.Logf("wrote %d MiB in %d revisions in %v to %d streams that do not read; slowest well-behaved put+get %v",
		totalMiB, txns, time.Since(begin).Round(time.Millisecond), streams, worst.Round(time.Millisecond))
	rss, heap := rssKiB(t, p.Pid()), heapInuseMiB(t, p.Endpoint)
	peakRSS, peakHeap = max(peakRSS, rss), max(peakHeap, heap)
	t.Logf("server memory: RSS %d MiB at start, peak %d MiB, %d MiB at the end; heap in use %d MiB at start, peak %d MiB, %d MiB at the end",
		rss0>>10, peakRSS>>10, rss>>10, heap0, peakHeap, heap)
	// Bound on the heap: the hub's recent events (64 MiB) and per stream
	// its queue (16 MiB), what its sender has taken (8 responses of about
	// 1 MiB) and gRPC's buffers, independent of how much is written (the
	// soak writes 8 times as much). Generous, and more so for RSS, which
	// the race detector multiplies.
	heapLimit := 64 + streams*48 + 64
	if grow := peakHeap - heap0; grow > heapLimit {
		t.Errorf("server heap grew by %d MiB with %d non-reading watch streams (limit %d MiB)", grow, streams, heapLimit)
	}
	rssLimit := 2 * heapLimit
	if framework.RaceEnabled() {
		rssLimit = 5 * heapLimit
	}
	if grow := peakRSS>>10 - rss0>>10; grow > rssLimit {
		t.Errorf("server RSS grew by %d MiB with %d non-reading watch streams (limit %d MiB)", grow, streams, rssLimit)
	}

	// The slow clients read again: each must get exactly the history.
	var wg sync.WaitGroup
	errs := make([]error, streams)
	last := committed[len(committed)-1].rev
	for i, sc := range slow {
		wg.Add(1)
		go func(i int, sc *slowClient) {
			defer wg.Done()
			sc.stall.Resume()
			errs[i] = readHistory(sc.st, committed, i%2 == 0, last)
		}(i, sc)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("slow watchers did not catch up within 5 minutes")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("slow stream %d: %v", i, err)
		}
	}
	t.Logf("%d slow streams caught up with all %d revisions once they read; server RSS now %d MiB, heap %d MiB",
		streams, txns, rssKiB(t, p.Pid())>>10, heapInuseMiB(t, p.Endpoint))
	servedWithin(t, good, 5*time.Second, "end")
	if !p.Running() {
		t.Fatal("server exited")
	}
	if strings.Contains(p.Log(), "panic") || strings.Contains(p.Log(), "WARNING: DATA RACE") {
		t.Errorf("server log reports a panic or a race:\n%s", p.Log())
	}
}

// readHistory reads a watch stream until revision last and requires the
// events to be exactly the committed txns, each revision whole in one
// response, in order, with prev_kv when asked (every key of a txn after
// the first was written by the txn before). A cancellation for compaction
// would be etcd's answer to a watcher that fell behind a compaction; this
// test does not compact, so any cancellation fails.
func readHistory(st pb.Watch_WatchClient, committed []committedTxn, prevKV bool, last int64) error {
	next := 0
	for next < len(committed) {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("after %d of %d revisions: %w", next, len(committed), err)
		}
		if resp.Canceled {
			return fmt.Errorf("canceled after %d of %d revisions (compact revision %d): %s", next, len(committed), resp.CompactRevision, resp.CancelReason)
		}
		evs := resp.Events
		for len(evs) > 0 {
			c := committed[next]
			if len(evs) < len(c.keys) {
				return fmt.Errorf("revision %d split: %d events left in the response, %d committed", c.rev, len(evs), len(c.keys))
			}
			for k, key := range c.keys {
				ev := evs[k]
				if ev.Type != mvccpb.PUT || string(ev.Kv.Key) != key || ev.Kv.ModRevision != c.rev || !bytes.Equal(ev.Kv.Value, c.val) {
					return fmt.Errorf("revision %d event %d: got %s %q@%d, want put %q@%d", c.rev, k, ev.Type, ev.Kv.Key, ev.Kv.ModRevision, key, c.rev)
				}
				if prevKV && next > 0 && (ev.PrevKv == nil || ev.PrevKv.ModRevision != committed[next-1].rev) {
					return fmt.Errorf("revision %d event %d: prev_kv %v, want the value of revision %d", c.rev, k, ev.PrevKv, committed[next-1].rev)
				}
				if !prevKV && ev.PrevKv != nil {
					return fmt.Errorf("revision %d event %d: prev_kv sent unasked", c.rev, k)
				}
			}
			evs = evs[len(c.keys):]
			next++
			if next == len(committed) && len(evs) > 0 {
				return fmt.Errorf("%d events past the last committed revision %d", len(evs), last)
			}
		}
	}
	return nil
}
