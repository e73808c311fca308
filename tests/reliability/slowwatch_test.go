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
	txns, streams := 128, 2 // 32 MiB of values
	if soak() {
		txns, streams = 1024, 4 // 256 MiB
	}
	txns = envInt(t, "METASTORE_SLOW_WATCH_TXNS", txns)
	totalMiB := txns * keysPerTxn * valSize >> 20

	// write commits txns revisions from txn number first and samples the
	// server's memory and a well-behaved client's latency as it goes.
	type sample struct {
		peakRSS, peakHeap int // KiB, MiB
		worst             time.Duration
		took              time.Duration
	}
	write := func(first int) ([]committedTxn, sample) {
		var committed []committedTxn
		var s sample
		begin := time.Now()
		for i := first; i < first+txns; i++ {
			committed = append(committed, writeSlowTxn(t, good, i, keysPerTxn, valSize))
			if i%32 == 31 || i == first+txns-1 {
				t0 := time.Now()
				servedWithin(t, good, 5*time.Second, "during-writes")
				s.worst = max(s.worst, time.Since(t0))
				s.peakRSS, s.peakHeap = max(s.peakRSS, rssKiB(t, p.Pid())), max(s.peakHeap, heapInuseMiB(t, p.Endpoint))
			}
		}
		s.took = time.Since(begin)
		return committed, s
	}
	rss0, heap0 := rssKiB(t, p.Pid()), heapInuseMiB(t, p.Endpoint)
	// The baseline: the same writes with no watcher, for the memory the
	// writes themselves take (Pebble's memtables, and much more under the
	// race detector).
	_, base := write(0)
	t.Logf("baseline: wrote %d MiB in %d revisions in %v with no watcher; server RSS %d MiB at start, peak %d MiB; heap in use %d MiB at start, peak %d MiB",
		totalMiB, txns, base.took.Round(time.Millisecond), rss0>>10, base.peakRSS>>10, heap0, base.peakHeap)

	r0, err := good.Range(context.Background(), &pb.RangeRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0")})
	if err != nil {
		t.Fatal(err)
	}
	start := r0.Header.Revision + 1

	var slow []*slowWatch
	for i := 0; i < streams; i++ {
		// Half the streams ask for prev_kv: the server then holds twice
		// the bytes per event.
		slow = append(slow, stalledWatch(t, p.Endpoint, start, i%2 == 0))
	}
	committed, slowS := write(txns)
	t.Logf("wrote %d MiB in %d revisions in %v to %d streams that do not read; slowest well-behaved put+get %v; server RSS peak %d MiB, heap in use peak %d MiB",
		totalMiB, txns, slowS.took.Round(time.Millisecond), streams, slowS.worst.Round(time.Millisecond), slowS.peakRSS>>10, slowS.peakHeap)
	// Bound on what the stalled streams add to the baseline: the hub's
	// recent events (64 MiB) and per stream its queue (16 MiB), what its
	// sender has taken (8 responses of about 1 MiB) and gRPC's buffers,
	// independent of how much is written (the soak writes 8 times as
	// much). Generous, and more so for RSS, which the race detector
	// multiplies. (Before the hub bounded a stream's bytes, 256 MiB
	// written to 6 such streams took 715 MiB of heap.)
	heapLimit := 64 + streams*48 + 64
	if grow := slowS.peakHeap - base.peakHeap; grow > heapLimit {
		t.Errorf("server heap grew by %d MiB over the baseline with %d non-reading watch streams (limit %d MiB)", grow, streams, heapLimit)
	}
	rssLimit := 2 * heapLimit
	if framework.RaceEnabled() {
		rssLimit = 5 * heapLimit
	}
	if grow := slowS.peakRSS>>10 - base.peakRSS>>10; grow > rssLimit {
		t.Errorf("server RSS grew by %d MiB over the baseline with %d non-reading watch streams (limit %d MiB)", grow, streams, rssLimit)
	}

	// The slow clients read again: each must get exactly the history.
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for i, sc := range slow {
		wg.Add(1)
		go func(i int, sc *slowWatch) {
			defer wg.Done()
			sc.stall.Resume()
			n, compactRev, err := readHistory(sc.st, committed, i%2 == 0)
			switch {
			case err != nil:
				errs[i] = err
			case compactRev != 0:
				errs[i] = fmt.Errorf("canceled for compaction at %d after %d revisions, without a compaction", compactRev, n)
			}
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

	// A watcher that fell behind and whose next revision is then
	// compacted is canceled with the compacted revision once it reads, as
	// etcd cancels it: after exactly the committed revisions before it.
	t.Run("compacted while not reading", func(t *testing.T) {
		r, err := good.Range(context.Background(), &pb.RangeRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0")})
		if err != nil {
			t.Fatal(err)
		}
		// NB: without prev_kv, which the server leaves out of events at or
		// below the compacted revision when it sends them, as etcd does.
		sw := stalledWatch(t, p.Endpoint, r.Header.Revision+1, false)
		// 64 MiB in revisions of 1 MiB: far more than the stream's queue
		// bound (16 MiB), what its sender holds (about 8 MiB) and the
		// socket buffers, so the watcher must fall back to catching up.
		var more []committedTxn
		for i := 0; i < 64; i++ {
			more = append(more, writeSlowTxn(t, good, 2*txns+i, 64, valSize))
		}
		compactRev := more[len(more)-1].rev
		if _, err := good.Compact(context.Background(), &pb.CompactionRequest{Revision: compactRev}); err != nil {
			t.Fatal(err)
		}
		sw.stall.Resume()
		n, got, err := readHistory(sw.st, more, false)
		if err != nil {
			t.Fatal(err)
		}
		if got != compactRev {
			t.Fatalf("after %d of %d revisions: canceled with compact revision %d, want %d", n, len(more), got, compactRev)
		}
		if n == 0 || n == len(more) {
			t.Fatalf("%d of %d revisions before the cancellation: the watcher should have received its queue, and no more", n, len(more))
		}
		t.Logf("canceled with compact_revision %d after exactly the first %d of %d committed revisions", got, n, len(more))
	})
	servedWithin(t, good, 5*time.Second, "end")
	if !p.Running() {
		t.Fatal("server exited")
	}
	if strings.Contains(p.Log(), "panic") || strings.Contains(p.Log(), "WARNING: DATA RACE") {
		t.Errorf("server log reports a panic or a race:\n%s", p.Log())
	}
}

// slowWatch is a watch stream whose connection stops being read after the
// handshake and the created response, until its stall is resumed.
type slowWatch struct {
	stall *stallConn
	st    pb.Watch_WatchClient
}

// stalledWatch opens a watch on slow/ from start on its own connection,
// which stops being read once the watch is created.
func stalledWatch(t *testing.T, endpoint string, start int64, prevKV bool) *slowWatch {
	t.Helper()
	sw := &slowWatch{}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			sw.stall = &stallConn{Conn: c, budget: 64 << 10, release: make(chan struct{})}
			return sw.stall, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := pb.NewWatchClient(conn).Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.WatchCreateRequest{Key: []byte("slow/"), RangeEnd: []byte("slow0"), StartRevision: start, PrevKv: prevKV}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil || !resp.Created {
		t.Fatalf("watch create: %v %v", resp, err)
	}
	sw.st = st
	t.Cleanup(func() { sw.stall.Close(); conn.Close() })
	return sw
}

// writeSlowTxn commits txn i: one revision putting n values of size bytes
// to slow/00.., overwriting the same keys every time so that every event
// after the first round has a prev_kv.
func writeSlowTxn(t *testing.T, kv pb.KVClient, i, n, size int) committedTxn {
	t.Helper()
	ops := make([]*pb.RequestOp, n)
	keys := make([]string, n)
	v := append([]byte(fmt.Sprintf("%06d-", i)), bytes.Repeat([]byte("v"), size)...)
	for k := range ops {
		keys[k] = fmt.Sprintf("slow/%02d", k)
		ops[k] = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(keys[k]), Value: v}}}
	}
	r, err := kv.Txn(context.Background(), &pb.TxnRequest{Success: ops})
	if err != nil {
		t.Fatalf("txn %d: %v", i, err)
	}
	return committedTxn{rev: r.Header.Revision, keys: keys, val: v}
}

// readHistory reads a watch stream until it has every committed txn or is
// canceled for compaction, and requires the events to be exactly the
// committed txns up to there, each revision whole in one response, in
// order, with prev_kv when asked (every key of a txn after the first was
// written by the txn before). It returns how many revisions came and the
// compact revision of a cancellation (0 if none).
func readHistory(st pb.Watch_WatchClient, committed []committedTxn, prevKV bool) (int, int64, error) {
	next := 0
	for next < len(committed) {
		resp, err := st.Recv()
		if err != nil {
			return next, 0, fmt.Errorf("after %d of %d revisions: %w", next, len(committed), err)
		}
		if resp.Canceled {
			if resp.CompactRevision == 0 {
				return next, 0, fmt.Errorf("canceled after %d of %d revisions: %q", next, len(committed), resp.CancelReason)
			}
			if c := committed[next]; c.rev >= resp.CompactRevision {
				return next, 0, fmt.Errorf("canceled for compaction at %d, but revision %d was not compacted", resp.CompactRevision, c.rev)
			}
			return next, resp.CompactRevision, nil
		}
		evs := resp.Events
		for len(evs) > 0 {
			c := committed[next]
			if len(evs) < len(c.keys) {
				return next, 0, fmt.Errorf("revision %d split: %d events left in the response, %d committed", c.rev, len(evs), len(c.keys))
			}
			for k, key := range c.keys {
				ev := evs[k]
				if ev.Type != mvccpb.PUT || string(ev.Kv.Key) != key || ev.Kv.ModRevision != c.rev || !bytes.Equal(ev.Kv.Value, c.val) {
					return next, 0, fmt.Errorf("revision %d event %d: got %s %q@%d, want put %q@%d", c.rev, k, ev.Type, ev.Kv.Key, ev.Kv.ModRevision, key, c.rev)
				}
				if prevKV && next > 0 && (ev.PrevKv == nil || ev.PrevKv.ModRevision != committed[next-1].rev) {
					return next, 0, fmt.Errorf("revision %d event %d: prev_kv %v, want the value of revision %d", c.rev, k, ev.PrevKv, committed[next-1].rev)
				}
				if !prevKV && ev.PrevKv != nil {
					return next, 0, fmt.Errorf("revision %d event %d: prev_kv sent unasked", c.rev, k)
				}
			}
			evs = evs[len(c.keys):]
			next++
			if next == len(committed) && len(evs) > 0 {
				return next, 0, fmt.Errorf("%d events past the last committed revision %d", len(evs), c.rev)
			}
		}
	}
	return next, 0, nil
}
