package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// TestMaxConnectionAgeWatchResumes: with grpc.max_connection_age the server
// sends each connection GOAWAY once it is old and closes it after the
// grace; a clientv3 watch on it is cut, resumes on the new connection
// from its next revision, and sees every revision written meanwhile
// exactly once and in order. The writes (on the same client) do not fail.
func TestMaxConnectionAgeWatchResumes(t *testing.T) {
	t.Parallel()
	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.GRPC.MaxConnectionAge, c.GRPC.MaxConnectionAgeGrace = time.Second, 300*time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := m.Client(t)
	start, err := cli.Put(ctx, "k/start", "")
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, "k/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	// Write for about four connection ages.
	var lastRev atomic.Int64
	writeErr := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		defer close(writeErr)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r, err := cli.Put(ctx, fmt.Sprintf("k/%05d", i), "v")
			if err != nil {
				writeErr <- fmt.Errorf("put %d: %w", i, err)
				return
			}
			lastRev.Store(r.Header.Revision)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(4 * time.Second)
	close(stop)
	if err := <-writeErr; err != nil {
		t.Fatalf("a write failed across connection ages: %v", err)
	}
	last := lastRev.Load()
	next := start.Header.Revision + 1
	for next <= last {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatalf("watch channel closed at revision %d", next)
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision != next {
					t.Fatalf("watch event at revision %d, want %d (lost or repeated across a reconnect)", ev.Kv.ModRevision, next)
				}
				next++
			}
		case <-ctx.Done():
			t.Fatalf("watch stalled at revision %d of %d", next, last)
		}
	}
	// The watch was cut and resumed: its stream was opened more than once.
	n := scrape(t, m.Endpoint, `grpc_server_started_total{grpc_method="Watch"`)
	if n < 2 {
		t.Errorf("%v Watch streams over four connection ages, want >= 2 (connections not recycled?)", n)
	}
	t.Logf("%d revisions watched on %v Watch streams across connection ages", last-start.Header.Revision, n)
}

// TestMaxConnectionIdle: a connection with no RPC for max_connection_idle
// is sent GOAWAY; the client dials a new one (counted by its dialer) and
// its calls keep working.
func TestMaxConnectionIdle(t *testing.T) {
	t.Parallel()
	m := framework.StartMetastoreConfig(t, func(c *config.Config) { c.GRPC.MaxConnectionIdle = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var dials atomic.Int64
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{m.Endpoint},
		Logger:    zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials before the connection was idle", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for dials.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("an idle connection stayed open past max_connection_idle (no new dial)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("get after the idle connection was closed: %v", err)
	}
}

// TestStreamRateLimitWatches: with limits.stream_rate_limit N (burst N),
// the N+1th watch created within a second is refused with etcd's "too many
// requests" (clientv3: rpctypes.ErrTooManyRequests), while unary traffic
// continues unrefused and the watches created keep working; a second later
// a watch can be created again.
func TestStreamRateLimitWatches(t *testing.T) {
	t.Parallel()
	const n = 5
	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Limits.StreamRateLimit, c.Limits.StreamRateBurst = n, n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := m.Client(t)

	// Unary traffic all along, on another client.
	unary := m.Client(t)
	var unaryOK atomic.Int64
	unaryErr := make(chan error, 1)
	stopUnary := make(chan struct{})
	go func() {
		defer close(unaryErr)
		for i := 0; ; i++ {
			select {
			case <-stopUnary:
				return
			default:
			}
			if _, err := unary.Put(ctx, "u", fmt.Sprint(i)); err != nil {
				unaryErr <- err
				return
			}
			if _, err := unary.Get(ctx, "u"); err != nil {
				unaryErr <- err
				return
			}
			unaryOK.Add(1)
		}
	}()

	// The refill is a token per 1/n s: an attempt whose creations took
	// longer than that proves nothing and is repeated once the bucket is
	// full again.
	var created []clientv3.WatchChan
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatal("could not create the watches within one refill period in 5 attempts")
		}
		time.Sleep(time.Second + 100*time.Millisecond) // a full bucket
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		began := time.Now()
		created = created[:0]
		var refusal clientv3.WatchResponse
		for i := range n + 1 {
			wch := cli.Watch(wctx, fmt.Sprintf("w%d", i), clientv3.WithCreatedNotify())
			wr := <-wch
			if i < n {
				if wr.Err() != nil || !wr.Created {
					t.Fatalf("attempt %d: watch %d of %d: %v (created %v)", attempt, i+1, n, wr.Err(), wr.Created)
				}
				created = append(created, wch)
				continue
			}
			refusal = wr
		}
		if time.Since(began) >= time.Second/n {
			wcancel()
			t.Logf("attempt %d took %v, longer than a refill; again", attempt, time.Since(began))
			continue
		}
		if !refusal.Canceled || !errors.Is(refusal.Err(), rpctypes.ErrTooManyRequests) {
			t.Fatalf("watch %d of a burst of %d: canceled=%v err=%v, want rpctypes.ErrTooManyRequests", n+1, n, refusal.Canceled, refusal.Err())
		}
		break
	}
	// The watches created keep working.
	for i, wch := range created {
		if _, err := cli.Put(ctx, fmt.Sprintf("w%d", i), "x"); err != nil {
			t.Fatal(err)
		}
		if wr := <-wch; wr.Err() != nil || len(wr.Events) != 1 {
			t.Fatalf("watch %d after the refusal: %v %v", i, wr.Err(), wr.Events)
		}
	}
	// A second later the bucket has refilled.
	time.Sleep(time.Second)
	wr := <-cli.Watch(ctx, "later", clientv3.WithCreatedNotify())
	if wr.Err() != nil || !wr.Created {
		t.Fatalf("watch after the refill: %v", wr.Err())
	}
	close(stopUnary)
	if err := <-unaryErr; err != nil {
		t.Fatalf("unary traffic failed while watch creations were refused: %v", err)
	}
	if unaryOK.Load() == 0 {
		t.Fatal("no unary traffic ran")
	}
	if v := scrape(t, m.Endpoint, `metastore_server_rate_limited_total{scope="stream"}`); v < 1 {
		t.Errorf("stream refusals metric %v, want >= 1", v)
	}
	if v := scrape(t, m.Endpoint, `metastore_server_rate_limited_total{scope="unary"}`); v > 0 {
		t.Errorf("unary refusals metric %v, want none", v)
	}
}
