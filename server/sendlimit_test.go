package server

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// TestMaxSendMsgSize: with limits.max_send_msg_size set, a unary response
// over it fails with ResourceExhausted naming the limit, for that request
// only; RangeStream and watch fragments stay under it and deliver
// everything; a watch without fragment whose response is too large ends
// its stream with a clear ResourceExhausted.
func TestMaxSendMsgSize(t *testing.T) {
	const limit = 64 << 10
	ts := startTestServer(t, func(c *config.Config) { c.Limits.MaxSendMsgSize = limit })
	ts.putMany(t, "k", 200, 1000) // about 200 KiB in 2 revisions
	for i := range 50 {
		ts.put(t, "w"+strings.Repeat("x", i), string(bytes.Repeat([]byte("v"), 2000)), 0) // 50 revisions, ~100 KiB
	}
	ctx := context.Background()

	_, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_send_msg_size of 65536 bytes") {
		t.Fatalf("large Range: %v, want ResourceExhausted naming max_send_msg_size", err)
	}
	// The connection and other requests are unaffected.
	small, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10})
	if err != nil || len(small.Kvs) != 10 {
		t.Fatalf("small Range after a refused one: %v, %v", small, err)
	}

	chunks, err := ts.rangeStream(t, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil {
		t.Fatalf("RangeStream: %v", err)
	}
	for i, c := range chunks {
		if n := (&v3rpc.RangeStreamResponse{RangeResponse: c}).Size(); n > limit {
			t.Errorf("RangeStream piece %d is %d bytes, over the %d limit", i, n, limit)
		}
	}
	if m := mergeChunks(t, chunks); len(m.Kvs) != 200 || m.Count != 200 {
		t.Fatalf("RangeStream delivered %d kvs (count %d), want 200", len(m.Kvs), m.Count)
	}

	// A watch with fragment catches up from revision 1 in fragments under
	// the limit; the merged responses hold every event.
	wc := pb.NewWatchClient(ts.conn)
	recvAll := func(fragment bool, from int64, want int) (events int, maxSize int, err error) {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := wc.Watch(wctx)
		if err != nil {
			return 0, 0, err
		}
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: from, Fragment: fragment}}}); err != nil {
			return 0, 0, err
		}
		for events < want {
			r, err := st.Recv()
			if err != nil {
				return events, maxSize, err
			}
			maxSize = max(maxSize, r.Size())
			events += len(r.Events)
		}
		return events, maxSize, nil
	}
	n, size, err := recvAll(true, 1, 250)
	if err != nil || n != 250 {
		t.Fatalf("fragmented watch: %d events, %v; want 250", n, err)
	}
	if size > limit {
		t.Errorf("a watch fragment is %d bytes, over the %d limit", size, limit)
	}
	// Without fragment, responses of many small revisions are cut under the
	// limit too...
	n, size, err = recvAll(false, 4, 50)
	if err != nil || n != 50 || size > limit {
		t.Fatalf("unfragmented watch over small revisions: %d events, largest response %d bytes, %v", n, size, err)
	}
	// ...but a revision of 100 KiB (a txn) cannot be.
	_, _, err = recvAll(false, 1, 250)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_send_msg_size") {
		t.Fatalf("unfragmented watch over the limit: %v, want ResourceExhausted naming max_send_msg_size", err)
	}
	if _, err := ts.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("Range after the watch failed: %v", err)
	}
}
