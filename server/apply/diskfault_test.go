package apply

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/internal/faultfs"
	"github.com/metastore-dev/metastore/mvcc"
)

// TestLoopNeverAcknowledgesAFailedSync: when the group commit's fsync
// fails, every request of the batch gets ErrFailed, no event is published
// to watchers, and every later request is refused.
func TestLoopNeverAcknowledgesAFailedSync(t *testing.T) {
	ff := faultfs.New()
	s, err := mvcc.Open("db", mvcc.Options{FS: ff.FS()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Int64
	l, err := NewLoop(s, a, LoopOptions{OnCommit: func(evs []mvcc.RevisionEvents) { published.Add(int64(len(evs))) }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		l.Stop()
		s.Close()
	}()
	put := func(k string) Result {
		res, err := l.Propose(context.Background(), &Request{Put: &pb.PutRequest{Key: []byte(k), Value: []byte("v")}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := put("before"); res.Err != nil {
		t.Fatal(res.Err)
	}
	before, rev := published.Load(), s.Rev()

	ff.SyncFail.Store(true)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := put("during"); !errors.Is(res.Err, mvcc.ErrFailed) || res.Resp != nil {
				t.Errorf("put during a failing fsync: %+v, want ErrFailed and no response", res)
			}
		}()
	}
	wg.Wait()
	ff.SyncFail.Store(false)
	if res := put("after"); !errors.Is(res.Err, mvcc.ErrFailed) {
		t.Fatalf("put after the failure: %+v, want ErrFailed", res)
	}
	if published.Load() != before {
		t.Fatalf("%d revisions published to watchers from failed batches", published.Load()-before)
	}
	if s.Rev() != rev {
		t.Fatalf("revision moved from %d to %d without a durable commit", rev, s.Rev())
	}
}
