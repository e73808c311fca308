package apply

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/goleak"

	"github.com/metastore-dev/metastore/mvcc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newLoop(t testing.TB, opts LoopOptions) (*mvcc.Store, *Loop) {
	t.Helper()
	s, err := mvcc.Open("db", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLoop(s, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Stop()
		s.Close()
	})
	return s, l
}

func TestLoopConcurrentPutsGetDistinctRevisions(t *testing.T) {
	var mu sync.Mutex
	var published []int64
	s, l := newLoop(t, LoopOptions{OnCommit: func(evs []mvcc.RevisionEvents) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			published = append(published, e.Rev)
		}
	}})
	const writers, each = 8, 50
	revs := make(chan int64, writers*each)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := l.Propose(context.Background(), &Request{Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("k%d-%d", w, i)), Value: []byte("v")}})
				if err != nil || res.Err != nil {
					t.Errorf("put: %v %v", err, res.Err)
					return
				}
				revs <- res.Resp.(*pb.PutResponse).Header.Revision
			}
		}()
	}
	wg.Wait()
	close(revs)
	seen := map[int64]bool{}
	for r := range revs {
		if seen[r] {
			t.Fatalf("revision %d acknowledged twice", r)
		}
		seen[r] = true
	}
	if len(seen) != writers*each || s.Rev() != writers*each+1 {
		t.Fatalf("%d distinct revisions, store at %d; want %d and %d", len(seen), s.Rev(), writers*each, writers*each+1)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, r := range published {
		if r != int64(i)+2 {
			t.Fatalf("published revisions out of order at %d: %v", i, published[:i+1])
		}
	}
	if l.AppliedIndex() != writers*each {
		t.Fatalf("applied index %d, want %d", l.AppliedIndex(), writers*each)
	}
}

func TestLoopFailedRequestLeavesNothing(t *testing.T) {
	s, l := newLoop(t, LoopOptions{})
	// The second put fails its check (ignore_value on a missing key); the txn
	// must leave no trace although it shares the batch with good requests.
	txn := &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true}}},
	}}
	res, err := l.Propose(context.Background(), &Request{Txn: txn})
	if err != nil || res.Err != ErrKeyNotFound {
		t.Fatalf("txn: %v %v, want ErrKeyNotFound", err, res.Err)
	}
	rr, err := s.Range(context.Background(), []byte("a"), nil, mvcc.RangeOptions{})
	if err != nil || rr.Count != 0 || s.Rev() != 1 {
		t.Fatalf("after failed txn: count %d rev %d err %v", rr.Count, s.Rev(), err)
	}
}

func TestLoopStop(t *testing.T) {
	_, l := newLoop(t, LoopOptions{})
	l.Stop()
	if _, err := l.Propose(context.Background(), &Request{Put: &pb.PutRequest{Key: []byte("a")}}); err != ErrStopped {
		t.Fatalf("propose after stop: %v", err)
	}
}

func BenchmarkLoopPut(b *testing.B) {
	_, l := newLoop(b, LoopOptions{})
	val := make([]byte, 256)
	b.ReportAllocs()
	b.SetParallelism(16)
	var n sync.Mutex
	i := 0
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			n.Lock()
			i++
			k := fmt.Appendf(nil, "key-%08d", i)
			n.Unlock()
			res, err := l.Propose(context.Background(), &Request{Put: &pb.PutRequest{Key: k, Value: val}})
			if err != nil || res.Err != nil {
				b.Fatal(err, res.Err)
			}
		}
	})
}

// BenchmarkPutOneClient is the single-client put: one request in flight,
// through the loop and, for comparison, applied and committed directly on
// the caller's goroutine. On an in-memory filesystem (no fsync) the
// difference is what the loop's goroutine hand-offs cost per request.
func BenchmarkPutOneClient(b *testing.B) {
	val := make([]byte, 256)
	put := func(i int) *Request {
		return &Request{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", i), Value: val}}
	}
	b.Run("loop", func(b *testing.B) {
		_, l := newLoop(b, LoopOptions{})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			res, err := l.Propose(context.Background(), put(i))
			if err != nil || res.Err != nil {
				b.Fatal(err, res.Err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		s, l := newLoop(b, LoopOptions{})
		l.Stop()
		a, err := New(s, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			bt, err := s.NewBatch()
			if err != nil {
				b.Fatal(err)
			}
			if res := a.Apply(bt, put(i)); res.Err != nil {
				b.Fatal(res.Err)
			}
			if err := bt.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
