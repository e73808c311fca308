package server

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/metastore-dev/metastore/server/config"
)

// TestWatchStreamsOfOneConnection: watch streams of one connection are
// independent (a sender shared by a connection's streams, tried for
// issue 19, must keep them so). A stream whose
// client stops reading, its flow-control window long exhausted, holds up
// neither the others' events nor their control responses (progress,
// cancel); once it reads again it gets every event, in order; a watcher
// created from history on a busy connection catches up in order.
func TestWatchStreamsOfOneConnection(t *testing.T) {
	for _, tr := range []string{config.TransportLean, config.TransportGRPCGo} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			// A fixed 64 KiB stream window, which only reading replenishes.
			ts := startTestServer(t, func(c *config.Config) { c.GRPC.Transport = tr },
				grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<20))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			open := func(key string, prefix bool, start int64) pb.Watch_WatchClient {
				t.Helper()
				w, err := pb.NewWatchClient(ts.conn).Watch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				create(t, w, key, prefix, start)
				return w
			}
			slow := open("slow/", true, 0)
			fast := []pb.Watch_WatchClient{open("fast", false, 0), open("fast", false, 0), open("fast", false, 0)}

			big := bytes.Repeat([]byte("v"), 32<<10)
			const slowPuts, fastPuts = 40, 50 // 1.25 MiB to a 64 KiB window
			var slowRevs []int64
			for i := range slowPuts {
				r, err := ts.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "slow/%d", i), Value: big})
				if err != nil {
					t.Fatal(err)
				}
				slowRevs = append(slowRevs, r.Header.Revision)
			}
			var fastRevs []int64
			for i := range fastPuts {
				r, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("fast"), Value: fmt.Appendf(nil, "%d", i)})
				if err != nil {
					t.Fatal(err)
				}
				fastRevs = append(fastRevs, r.Header.Revision)
			}
			for i, w := range fast {
				if got := recvRevs(t, w, len(fastRevs)); fmt.Sprint(got) != fmt.Sprint(fastRevs) {
					t.Fatalf("fast stream %d: revisions %v, want %v", i, got, fastRevs)
				}
			}
			// Control responses go through too.
			if err := fast[0].Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
				t.Fatal(err)
			}
			if r, err := fast[0].Recv(); err != nil || r.WatchId != -1 || r.Header.Revision != fastRevs[len(fastRevs)-1] {
				t.Fatalf("progress: %v, %v", r, err)
			}
			if err := fast[1].Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 0}}}); err != nil {
				t.Fatal(err)
			}
			if r, err := fast[1].Recv(); err != nil || !r.Canceled || r.WatchId != 0 {
				t.Fatalf("cancel: %v, %v", r, err)
			}
			// A watcher from history on a stream of the busy connection.
			hist := open("slow/", true, slowRevs[0])
			if got := recvRevs(t, hist, slowPuts); fmt.Sprint(got) != fmt.Sprint(slowRevs) {
				t.Fatalf("from history: revisions %v, want %v", got, slowRevs)
			}
			// The slow client reads at last: everything, in order.
			if got := recvRevs(t, slow, slowPuts); fmt.Sprint(got) != fmt.Sprint(slowRevs) {
				t.Fatalf("slow stream: revisions %v, want %v", got, slowRevs)
			}
		})
	}
}

// create creates a watcher on w and waits for its created response.
func create(t *testing.T, w pb.Watch_WatchClient, key string, prefix bool, start int64) {
	t.Helper()
	r := &pb.WatchCreateRequest{Key: []byte(key), StartRevision: start}
	if prefix {
		r.RangeEnd = []byte(key[:len(key)-1] + string(key[len(key)-1]+1))
	}
	if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}}); err != nil {
		t.Fatal(err)
	}
	resp, err := w.Recv()
	if err != nil || !resp.Created {
		t.Fatalf("create: %v, %v", resp, err)
	}
}

// recvRevs receives events until it has n and returns their revisions.
func recvRevs(t *testing.T, w pb.Watch_WatchClient, n int) []int64 {
	t.Helper()
	var revs []int64
	for len(revs) < n {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(revs), err)
		}
		for _, ev := range r.Events {
			revs = append(revs, ev.Kv.ModRevision)
		}
	}
	return revs
}

// TestWatchStreamsOfOneConnectionConcurrent: many streams of one
// connection, events published concurrently by several writers: every
// stream gets every revision of its key, in order, none twice.
func TestWatchStreamsOfOneConnectionConcurrent(t *testing.T) {
	ts := startTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const streams, writers, perWriter = 20, 4, 100
	ws := make([]pb.Watch_WatchClient, streams)
	for i := range ws {
		w, err := pb.NewWatchClient(ts.conn).Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			create(t, w, fmt.Sprintf("k%d", j), false, 0)
		}
		ws[i] = w
	}
	errc := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range perWriter {
				if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k%d", (w+i)%3), Value: []byte("v")}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range ws {
		// Each revision is one put: 3 watchers see writers*perWriter
		// events in all, each watcher its key's in order.
		last := map[int64]int64{}
		n := 0
		for n < writers*perWriter {
			r, err := w.Recv()
			if err != nil {
				t.Fatalf("stream %d after %d events: %v", i, n, err)
			}
			for _, ev := range r.Events {
				if ev.Kv.ModRevision <= last[r.WatchId] {
					t.Fatalf("stream %d watcher %d: revision %d after %d", i, r.WatchId, ev.Kv.ModRevision, last[r.WatchId])
				}
				last[r.WatchId] = ev.Kv.ModRevision
				n++
			}
		}
	}
}
