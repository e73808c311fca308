package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestWatchFragmentClientV3 is etcd's clientv3 testWatchFragment: ten
// revisions of 1 MiB values (10 MiB together, over --max-request-bytes),
// watched through clientv3 from revision 1, with and without fragment, and
// with and without a 1.5 MiB receive limit in the client.
//
// With fragment, both servers deliver the ten events as one logical
// response, sent in fragments that clientv3 merges. Without fragment, etcd
// sends one 10 MiB message, which a client with the receive limit fails
// on; metastore keeps responses to about 1 MiB (RATIONALE.md, "Watch
// responses without fragment stay small"), so both clients get every
// event, in more responses. That difference is asserted on each server.
func TestWatchFragmentClientV3(t *testing.T) {
	t.Parallel()
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{MaxRequestBytes: 3 << 19})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cli := srv.Client(t)
			errc := make(chan error, 10)
			for i := range 10 {
				go func() {
					_, err := cli.Put(ctx, fmt.Sprint("foo", i), strings.Repeat("a", 1<<20))
					errc <- err
				}()
			}
			for range 10 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			for _, tc := range []struct {
				fragment, recvLimit bool
			}{{false, false}, {false, true}, {true, false}, {true, true}} {
				t.Run(fmt.Sprintf("fragment=%v/recv-limit=%v", tc.fragment, tc.recvLimit), func(t *testing.T) {
					cfg := clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
					if tc.recvLimit {
						cfg.MaxCallRecvMsgSize = 3 << 19
					}
					c, err := clientv3.New(cfg)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(1)}
					if tc.fragment {
						opts = append(opts, clientv3.WithFragment())
					}
					wctx, wcancel := context.WithCancel(ctx)
					defer wcancel()
					wch := c.Watch(wctx, "foo", opts...)
					first := nextResp(t, wch)
					switch {
					case tc.fragment:
						// etcd's expectation, on both servers.
						if first.Err() != nil || len(first.Events) != 10 {
							t.Fatalf("first response: %d events, err %v; want the 10 events merged", len(first.Events), first.Err())
						}
					case b.Name == "etcd" && tc.recvLimit:
						want := "code = ResourceExhausted desc = grpc: received message larger than max ("
						if len(first.Events) != 0 || first.Err() == nil || !strings.Contains(first.Err().Error(), want) {
							t.Fatalf("first response: %d events, err %v; want %q", len(first.Events), first.Err(), want)
						}
					case b.Name == "etcd":
						if first.Err() != nil || len(first.Events) != 10 {
							t.Fatalf("first response: %d events, err %v; want 10 in one message", len(first.Events), first.Err())
						}
					default:
						// metastore without fragment: every event, none
						// over the receive limit, one 1 MiB event each.
						n := 0
						for wr := first; ; wr = nextResp(t, wch) {
							if wr.Err() != nil || len(wr.Events) != 1 {
								t.Fatalf("response %d: %d events, err %v; want one event each", n, len(wr.Events), wr.Err())
							}
							if n++; n == 10 {
								break
							}
						}
					}
				})
			}
		})
	}
}
