package compat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// fmtClientResp renders a clientv3 WatchResponse for comparison.
func fmtClientResp(wr clientv3.WatchResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d created=%v canceled=%v compact=%d progress=%v err=%v", wr.Header.Revision, wr.Created, wr.Canceled,
		wr.CompactRevision, wr.IsProgressNotify(), wr.Err())
	for _, ev := range wr.Events {
		fmt.Fprintf(&b, "\n  %s %q=%q c=%d m=%d v=%d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.ModRevision, ev.Kv.Version)
		if ev.PrevKv != nil {
			fmt.Fprintf(&b, " prev=%q@%d", ev.PrevKv.Value, ev.PrevKv.ModRevision)
		}
		if ev.IsCreate() {
			b.WriteString(" (create)")
		}
	}
	return b.String()
}

func nextResp(t *testing.T, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case wr, ok := <-wch:
		if !ok {
			t.Fatalf("watch channel closed")
		}
		return wr
	case <-time.After(20 * time.Second):
		t.Fatalf("no watch response within 20s")
	}
	return clientv3.WatchResponse{}
}

// TestWatchClientV3 drives the watch API through clientv3 as applications
// use it, on etcd and metastore, and requires the same responses.
func TestWatchClientV3(t *testing.T) {
	t.Parallel()
	var outs [][]string
	for _, b := range framework.Backends() {
		var out []string
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			cli := srv.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rec := func(what string, wr clientv3.WatchResponse) {
				out = append(out, what+": "+fmtClientResp(wr))
			}
			for _, kv := range [][2]string{{"a", "1"}, {"a", "2"}, {"b", "1"}, {"ab", "1"}} { // 2..5
				if _, err := cli.Put(ctx, kv[0], kv[1]); err != nil {
					t.Fatal(err)
				}
			}

			wch := cli.Watch(ctx, "a", clientv3.WithRev(2), clientv3.WithPrevKV())
			rec("history with prev", nextResp(t, wch))

			pch := cli.Watch(ctx, "a", clientv3.WithPrefix(), clientv3.WithFilterDelete())
			if err := cli.RequestProgress(ctx); err != nil {
				t.Fatal(err)
			}
			// progress notifications are broadcast to every watcher of the stream
			rec("progress 1", nextResp(t, wch))
			rec("progress 2", nextResp(t, pch))

			if _, err := cli.Delete(ctx, "a"); err != nil { // 6
				t.Fatal(err)
			}
			if _, err := cli.Put(ctx, "abc", "1"); err != nil { // 7
				t.Fatal(err)
			}
			rec("delete", nextResp(t, wch))
			rec("prefix, deletes filtered", nextResp(t, pch))

			if _, err := cli.Compact(ctx, 4); err != nil {
				t.Fatal(err)
			}
			cch := cli.Watch(ctx, "a", clientv3.WithRev(3))
			wr := nextResp(t, cch)
			rec("compacted", wr)
			if !errors.Is(wr.Err(), rpctypes.ErrCompacted) || wr.Err() != rpctypes.ErrCompacted {
				t.Errorf("Err() = %v, want rpctypes.ErrCompacted", wr.Err())
			}
			if _, ok := <-cch; ok {
				t.Errorf("the watch channel stays open after compaction")
			}

			nch := cli.Watch(ctx, "a", clientv3.WithRev(-1))
			wr = nextResp(t, nch)
			rec("negative revision", wr)

			// kube-apiserver asks etcd for progress only from 3.4.31, 3.5.13
			// and 3.6 on; it learns the version from Status.
			st, err := cli.Status(ctx, srv.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(st.Version, "3.6.") {
				t.Errorf("Status.version = %q, want 3.6.x", st.Version)
			}
		})
		outs = append(outs, out)
	}
	if len(outs) == 2 {
		t.Run("same-responses", func(t *testing.T) {
			for i := range max(len(outs[0]), len(outs[1])) {
				var e, m string
				if i < len(outs[0]) {
					e = outs[0][i]
				}
				if i < len(outs[1]) {
					m = outs[1][i]
				}
				if e != m {
					t.Errorf("response %d:\n  etcd      %s\n  metastore %s", i, e, m)
				}
			}
		})
	}
}

// TestConcurrencyMutexElection runs client/v3/concurrency's Mutex and
// Election, which build on leases and watches.
func TestConcurrencyMutexElection(t *testing.T) {
	t.Parallel()
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			cli := srv.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := cli.Grant(ctx, 10); status.Code(err) == codes.Unimplemented {
				t.Skipf("%s has no leases yet (Mutex and Election need them)", b.Name)
			}
			s1, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
			if err != nil {
				t.Fatal(err)
			}
			defer s1.Close()
			s2, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()

			// Mutex: the second locker waits, by watching the first one's
			// key, until it is unlocked.
			m1, m2 := concurrency.NewMutex(s1, "/lock"), concurrency.NewMutex(s2, "/lock")
			if err := m1.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			locked := make(chan error, 1)
			go func() { locked <- m2.Lock(ctx) }()
			select {
			case err := <-locked:
				t.Fatalf("second Lock returned while the first holds it: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := m1.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-locked:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("second Lock did not get the lock after Unlock")
			}
			if err := m2.Unlock(ctx); err != nil {
				t.Fatal(err)
			}

			// Election: a follower campaigns, wins when the leader resigns,
			// and Observe reports both leaders in turn.
			e1, e2 := concurrency.NewElection(s1, "/election"), concurrency.NewElection(s2, "/election")
			if err := e1.Campaign(ctx, "one"); err != nil {
				t.Fatal(err)
			}
			octx, ocancel := context.WithCancel(ctx)
			defer ocancel()
			obs := e1.Observe(octx)
			if r := <-obs; string(r.Kvs[0].Value) != "one" {
				t.Fatalf("observed leader %q, want one", r.Kvs[0].Value)
			}
			won := make(chan error, 1)
			go func() { won <- e2.Campaign(ctx, "two") }()
			time.Sleep(200 * time.Millisecond)
			if err := e1.Resign(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-won; err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-obs:
				if string(r.Kvs[0].Value) != "two" {
					t.Fatalf("observed leader %q, want two", r.Kvs[0].Value)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Observe did not report the new leader")
			}
		})
	}
}
